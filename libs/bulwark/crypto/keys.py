"""Key rings: named sets of secret keys with an active key id, read from a file or an env variable.

A key ring is JSON: `{"active": "k2", "keys": {"k1": "<base64>", "k2": "<base64>"}}`. New data uses the
active key; old data names its key id, so rotation (add a key, make it active) never loses old data.

Each ring lives in `<keys_dir>/<name>.json`, or in the environment as `BULWARK_KEYRING_<NAME>` holding the
same JSON (how a Kubernetes Secret reaches a pod). Only the processes that need a ring are given it.
Keys are never hard-coded, never logged: `KeyRing` prints as its ids only.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from bulwark.errors import BulwarkError, Reason

# The rings Bulwark uses, and who needs each (Helm mounts each only where listed).
RING_FIELD = "field"            # AES-256-GCM: wraps per-subject keys for field encryption (anonymizer, reveal)
RING_PSEUDONYM = "pseudonym"    # HMAC-SHA256: pseudonymous tokens (anonymizer)
RING_DLQ = "dlq"                # AES-256-GCM: encrypts rejected payloads in the DLQ (every consumer)
RING_KEK = "kek"                # AES-256: wraps artifact data keys (trainer, quantizer, gate, updater, Triton)
RINGS = (RING_FIELD, RING_PSEUDONYM, RING_DLQ, RING_KEK)


class KeyMaterialError(BulwarkError):
    """A key ring or key is missing or malformed; the message says how to create it."""

    def __init__(self, message: str) -> None:
        super().__init__(Reason.FAILED_PRECONDITION, message)


def b64e(data: bytes) -> str:
    """URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64d(text: str) -> bytes:
    """Inverse of `b64e` (padding optional)."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class KeyRing:
    """Secret keys by id, with the id new data is protected under."""

    name: str
    active: str
    keys: dict[str, bytes] = field(repr=False)

    def __post_init__(self) -> None:
        if self.active not in self.keys:
            raise KeyMaterialError(f"key ring {self.name!r}: active key id {self.active!r} is not among its keys")

    def key(self, key_id: str) -> bytes:
        """The key with id `key_id`."""
        try:
            return self.keys[key_id]
        except KeyError:
            raise KeyMaterialError(f"key ring {self.name!r} has no key {key_id!r} (known: {sorted(self.keys)})") from None

    @property
    def active_key(self) -> bytes:
        """The key new data is protected under."""
        return self.keys[self.active]

    def rotated(self) -> KeyRing:
        """A copy with a fresh key added and made active; old keys stay for old data."""
        new_id = _next_id(self.name, self.keys)
        return KeyRing(self.name, new_id, {**self.keys, new_id: secrets.token_bytes(32)})

    def to_json(self) -> str:
        """The ring's JSON form (secret: write it only to a 0600 file or a Secret)."""
        return json.dumps({"active": self.active, "keys": {k: b64e(v) for k, v in self.keys.items()}}, indent=2)

    @classmethod
    def from_json(cls, name: str, text: str) -> KeyRing:
        """Parse the JSON form; a malformed ring names what is wrong."""
        try:
            doc = json.loads(text)
            keys = {str(k): b64d(v) for k, v in doc["keys"].items()}
            active = str(doc["active"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise KeyMaterialError(f"key ring {name!r} is malformed ({type(exc).__name__}); "
                            "expected {\"active\": id, \"keys\": {id: base64}}") from None
        for kid, key in keys.items():
            if len(key) != 32:
                raise KeyMaterialError(f"key ring {name!r}: key {kid!r} is {len(key)} bytes; keys are 32 bytes")
        return cls(name, active, keys)

    @classmethod
    def generate(cls, name: str) -> KeyRing:
        """A new ring with one random 256-bit key."""
        kid = _next_id(name, {})
        return cls(name, kid, {kid: secrets.token_bytes(32)})


def _next_id(name: str, existing: dict[str, bytes]) -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d")
    n = len(existing) + 1
    while f"{name[:3]}{n}-{stamp}" in existing:
        n += 1
    return f"{name[:3]}{n}-{stamp}"


def ring_env_var(name: str) -> str:
    """The environment variable that may hold ring `name`."""
    return f"BULWARK_KEYRING_{name.upper()}"


def load_ring(name: str, keys_dir: Path) -> KeyRing:
    """Ring `name` from `BULWARK_KEYRING_<NAME>` or `<keys_dir>/<name>.json`."""
    env = os.environ.get(ring_env_var(name))
    if env:
        return KeyRing.from_json(name, env)
    path = keys_dir / f"{name}.json"
    if not path.exists():
        raise KeyMaterialError(f"key ring {name!r} not found: set {ring_env_var(name)} or create {path} "
                        f"(run `bulwark keys init --dir {keys_dir}`)")
    return KeyRing.from_json(name, path.read_text())


def save_ring(ring: KeyRing, keys_dir: Path) -> Path:
    """Write ring to `<keys_dir>/<name>.json`, readable by the owner only, atomically."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    path = keys_dir / f"{ring.name}.json"
    tmp = path.with_suffix(".json.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(ring.to_json())
    os.replace(tmp, path)
    return path
