"""Generating and rotating the local key set (`bulwark keys ...`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bulwark.crypto.keys import RING_KEK, RINGS, KeyRing, load_ring, save_ring
from bulwark.crypto.signing import SIGNING_FILE, VERIFY_FILE, Signer, Verifier, load_verifier


@dataclass(frozen=True)
class KeyInfo:
    """One key as `bulwark keys list` shows it: ids only, never material."""

    ring: str
    key_id: str
    active: bool


def init_keys(keys_dir: Path, *, force: bool = False) -> list[Path]:
    """Create every ring and a signing key in `keys_dir`; existing files are kept unless `force`."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(keys_dir, 0o700)
    written: list[Path] = []
    for name in RINGS:
        if force or not (keys_dir / f"{name}.json").exists():
            written.append(save_ring(KeyRing.generate(name), keys_dir))
    if force or not (keys_dir / SIGNING_FILE).exists():
        signer = Signer.generate()
        written.append(_write_secret(keys_dir / SIGNING_FILE, signer.private_pem()))
        trusted = {} if force or not (keys_dir / VERIFY_FILE).exists() else dict(
            Verifier.decode_keys((keys_dir / VERIFY_FILE).read_text()))
        trusted[signer.key_id] = signer.public_key
        (keys_dir / VERIFY_FILE).write_text(Verifier.encode_keys(trusted))
        written.append(keys_dir / VERIFY_FILE)
    return written


def rotate(keys_dir: Path, ring: str) -> str:
    """Add a fresh key to `ring` (or `signing`) and make it active; returns the new key id."""
    if ring == "signing":
        signer = Signer.generate()
        trusted = dict(load_verifier(keys_dir)._keys)  # keep old public keys: old artifacts still verify
        trusted[signer.key_id] = signer.public_key
        _write_secret(keys_dir / SIGNING_FILE, signer.private_pem())
        (keys_dir / VERIFY_FILE).write_text(Verifier.encode_keys(trusted))
        return signer.key_id
    new = load_ring(ring, keys_dir).rotated()
    save_ring(new, keys_dir)
    return new.active


def rewrap_artifacts(store_root: Path, keys_dir: Path, old: KeyRing) -> int:
    """Re-wrap every artifact's data key in `store_root` under the `kek` ring's active key and re-sign it
    (weights untouched); `old` is the ring before rotation. Returns how many artifacts moved."""
    from bulwark.artifacts import STAGES, ArtifactStore

    new = load_ring(RING_KEK, keys_dir)
    signer = Signer.from_pem((keys_dir / SIGNING_FILE).read_bytes())
    store = ArtifactStore(store_root, verifier=load_verifier(keys_dir), kek=KeyRing(RING_KEK, old.active,
                                                                                  {**old.keys, **new.keys}))
    moved = 0
    for model_dir in sorted(p for p in store_root.iterdir() if p.is_dir()) if store_root.exists() else []:
        for version in store.versions(model_dir.name):
            for stage in STAGES:
                if (store.path(model_dir.name, version, stage) / "manifest.json").exists():
                    store.rewrap(model_dir.name, version, stage, new, signer)
                    moved += 1
    return moved


def list_keys(keys_dir: Path) -> list[KeyInfo]:
    """Every key id in `keys_dir` with its ring and whether it is active."""
    out: list[KeyInfo] = []
    for name in RINGS:
        if (keys_dir / f"{name}.json").exists():
            ring = load_ring(name, keys_dir)
            out += [KeyInfo(name, kid, kid == ring.active) for kid in sorted(ring.keys)]
    if (keys_dir / VERIFY_FILE).exists():
        active = Signer.from_pem((keys_dir / SIGNING_FILE).read_bytes()).key_id if (
            keys_dir / SIGNING_FILE).exists() else None
        out += [KeyInfo("signing", kid, kid == active) for kid in load_verifier(keys_dir).key_ids]
    return out


def _write_secret(path: Path, data: bytes) -> Path:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
    return path
