"""`bulwark keys ...`: generate, list (ids only) and rotate the platform's keys."""

from __future__ import annotations

from pathlib import Path

import click

from bulwark.cli.output import emit
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
def keys_rotate(ring: str, keys_dir: str | None) -> None:
    """Add a fresh key to RING and make it active; old keys stay, so old data still opens."""
    from bulwark.crypto.keyset import rotate

    click.echo(f"{ring}: new active key {rotate(_dir(keys_dir), ring)}")


COMMANDS = [keys]
