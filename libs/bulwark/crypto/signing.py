"""Ed25519 signatures over artifacts and reports.

The signing key lives in `<keys_dir>/signing.key` (PEM, PKCS#8) or `BULWARK_SIGNING_KEY` (the PEM text);
only the trainer, quantizer and gate hold it. Every loader verifies with the public keys in
`<keys_dir>/verify.json` (`{key_id: base64 raw public key}`) or `BULWARK_VERIFY_KEYS` (the same JSON),
so a retired signing key can still verify what it signed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bulwark.crypto.keys import KeyMaterialError, b64d, b64e
from bulwark.errors import SignatureError

SIGNING_FILE = "signing.key"
VERIFY_FILE = "verify.json"


def key_id_of(public: Ed25519PublicKey) -> str:
    """A short id derived from the public key itself, so ids never collide by accident."""
    import hashlib

    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed" + hashlib.sha256(raw).hexdigest()[:12]


@dataclass(frozen=True)
class Signer:
    """Signs bytes with an Ed25519 private key; the signature names the key id."""

    key_id: str
    _key: Ed25519PrivateKey

    def sign(self, data: bytes) -> str:
        """Base64url signature of `data`."""
        return b64e(self._key.sign(data))

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The matching public key."""
        return self._key.public_key()

    def __repr__(self) -> str:
        return f"Signer(key_id={self.key_id!r})"

    @classmethod
    def generate(cls) -> Signer:
        """A fresh random signing key."""
        key = Ed25519PrivateKey.generate()
        return cls(key_id_of(key.public_key()), key)

    def private_pem(self) -> bytes:
        """PKCS#8 PEM of the private key (secret)."""
        return self._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())

    @classmethod
    def from_pem(cls, pem: bytes) -> Signer:
        """Load a PKCS#8 PEM Ed25519 private key."""
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyMaterialError("signing key must be an Ed25519 private key")
        return cls(key_id_of(key.public_key()), key)


class Verifier:
    """Verifies signatures against a set of trusted public keys, by key id."""

    def __init__(self, keys: dict[str, Ed25519PublicKey]) -> None:
        if not keys:
            raise KeyMaterialError("no verify keys configured: set BULWARK_VERIFY_KEYS or create verify.json "
                            "(run `bulwark keys init`)")
        self._keys = dict(keys)

    @property
    def key_ids(self) -> list[str]:
        """Trusted key ids."""
        return sorted(self._keys)

    def verify(self, data: bytes, signature: str, key_id: str) -> None:
        """Raise `SignatureError` unless `signature` over `data` is valid under trusted key `key_id`."""
        key = self._keys.get(key_id)
        if key is None:
            raise SignatureError(f"signed by untrusted key {key_id!r}; trusted: {self.key_ids}")
        try:
            key.verify(b64d(signature), data)
        except (InvalidSignature, ValueError):
            raise SignatureError(f"signature by {key_id!r} does not match the content (tampered or corrupt)") from None

    @staticmethod
    def encode_keys(keys: dict[str, Ed25519PublicKey]) -> str:
        """JSON form of public keys."""
        return json.dumps({kid: b64e(k.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
                           for kid, k in keys.items()}, indent=2)

    @staticmethod
    def decode_keys(text: str) -> dict[str, Ed25519PublicKey]:
        """Parse the JSON form of public keys."""
        try:
            return {kid: Ed25519PublicKey.from_public_bytes(b64d(v)) for kid, v in json.loads(text).items()}
        except (ValueError, AttributeError, TypeError):
            raise KeyMaterialError("verify keys are malformed; expected {key_id: base64 raw Ed25519 public key}") from None


def load_signer(keys_dir: Path) -> Signer:
    """The signing key from `BULWARK_SIGNING_KEY` or `<keys_dir>/signing.key`."""
    env = os.environ.get("BULWARK_SIGNING_KEY")
    if env:
        return Signer.from_pem(env.encode())
    path = keys_dir / SIGNING_FILE
    if not path.exists():
        raise KeyMaterialError(f"no signing key: set BULWARK_SIGNING_KEY or create {path} (run `bulwark keys init`)")
    return Signer.from_pem(path.read_bytes())


def load_verifier(keys_dir: Path) -> Verifier:
    """Trusted public keys from `BULWARK_VERIFY_KEYS` or `<keys_dir>/verify.json`."""
    env = os.environ.get("BULWARK_VERIFY_KEYS")
    if env:
        return Verifier(Verifier.decode_keys(env))
    path = keys_dir / VERIFY_FILE
    if not path.exists():
        raise KeyMaterialError(f"no verify keys: set BULWARK_VERIFY_KEYS or create {path} (run `bulwark keys init`)")
    return Verifier(Verifier.decode_keys(path.read_text()))
