"""`bulwark keys ...`: generate, list (ids only) and rotate the platform's keys."""

from __future__ import annotations

from pathlib import Path

import click

from bulwark.cli.output import emit
from bulwark.auth import SCOPES
from bulwark.crypto.keys import RINGS


def _dir(path: str | None) -> Path:
    from bulwark.cli.main import cli_settings

    return Path(path) if path else cli_settings().keys_path


@click.group()
def keys() -> None:
    """Key material: field encryption, pseudonym tokens, dead letters, artifact wrapping, signing."""


@keys.command("init")
@click.option("--dir", "keys_dir", default=None, help="Key folder (default BULWARK_KEYS_DIR or <home>/keys).")
@click.option("--force", is_flag=True, help="Replace existing keys (data under the old ones becomes unreadable).")
def keys_init(keys_dir: str | None, force: bool) -> None:
    """Generate a local key set for the demo (files readable by the owner only)."""
    from bulwark.crypto.keyset import init_keys

    folder = _dir(keys_dir)
    written = init_keys(folder, force=force)
    click.echo(f"{len(written)} key file(s) written to {folder}" if written else f"keys already present in {folder}")


@keys.command("list")
@click.option("--dir", "keys_dir", default=None, help="Key folder.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def keys_list(keys_dir: str | None, as_json: bool) -> None:
    """Every key id with its ring and whether it is active (never the key material)."""
    from bulwark.crypto.keyset import list_keys

    rows = [{"ring": k.ring, "key_id": k.key_id, "active": k.active} for k in list_keys(_dir(keys_dir))]
    emit(rows, as_json=as_json)


@keys.command("rotate")
@click.argument("ring", type=click.Choice([*RINGS, "signing"]))
@click.option("--dir", "keys_dir", default=None, help="Key folder.")
@click.option("--rewrap/--no-rewrap", default=True,
              help="For kek: re-wrap every artifact's data key under the new key (weights are not re-encrypted).")
@click.option("--store", default=None, help="Artifact store folder (default BULWARK_ARTIFACT_STORE or <home>/artifacts).")
def keys_rotate(ring: str, keys_dir: str | None, rewrap: bool, store: str | None) -> None:
    """Add a fresh key to RING and make it active; old keys stay, so old data still opens."""
    from bulwark.crypto.keys import RING_KEK, load_ring
    from bulwark.crypto.keyset import rewrap_artifacts, rotate

    folder = _dir(keys_dir)
    old = load_ring(RING_KEK, folder) if ring == RING_KEK else None
    click.echo(f"{ring}: new active key {rotate(folder, ring)}")
    if old is not None and rewrap:
        from bulwark.cli.main import cli_settings

        root = Path(store) if store else cli_settings().artifacts_path
        click.echo(f"kek: {rewrap_artifacts(root, folder, old)} artifact(s) re-wrapped in {root}")


@keys.command("token")
@click.argument("identity")
@click.option("--scope", "scopes", multiple=True, required=True, type=click.Choice(list(SCOPES)),
              help="A scope the token grants (repeat for several).")
@click.option("--dir", "keys_dir", default=None, help="Key folder (tokens.json lives there).")
def keys_token(identity: str, scopes: tuple[str, ...], keys_dir: str | None) -> None:
    """Issue a bearer token for IDENTITY; it is printed once, only its hash is stored."""
    from bulwark.auth import load_credentials, save_credentials

    folder = _dir(keys_dir)
    creds = load_credentials(folder)
    token = creds.add_token(identity, list(scopes))
    save_credentials(creds, folder)
    click.echo(token)
    click.echo(f"token {creds.tokens[-1]['id']} for {identity} ({', '.join(sorted(set(scopes)))}): shown once, "
               "store it now", err=True)


@keys.command("tokens")
@click.option("--dir", "keys_dir", default=None, help="Key folder.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def keys_tokens(keys_dir: str | None, as_json: bool) -> None:
    """Issued tokens: id, identity and scopes (never the token or its hash)."""
    from bulwark.auth import load_credentials

    rows = [{"id": t["id"], "identity": t["identity"], "scopes": ",".join(t["scopes"])}
            for t in load_credentials(_dir(keys_dir)).tokens]
    emit(rows, as_json=as_json)


COMMANDS = [keys]
