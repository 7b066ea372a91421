"""AES-256-GCM encryption with key ids, for fields, dead letters and wrapped keys.

A sealed value is self-describing: `enc:v1:<key id>:<base64url(nonce ‖ ciphertext ‖ tag)>`, so a value
encrypted under an old key still opens after the ring rotates. Associated data binds a ciphertext to
where it belongs (event type and field, say): moved elsewhere it fails to open.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bulwark.crypto.keys import KeyRing, b64d, b64e
from bulwark.errors import CryptoError

PREFIX = "enc:v1:"
_NONCE = 12


def seal_bytes(key: bytes, plaintext: bytes, aad: bytes | None = None) -> bytes:
    """nonce ‖ ciphertext ‖ tag under `key`."""
    nonce = os.urandom(_NONCE)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_bytes(key: bytes, sealed: bytes, aad: bytes | None = None) -> bytes:
    """Inverse of `seal_bytes`; a wrong key or any flipped bit raises `CryptoError`."""
    if len(sealed) < _NONCE + 16:
        raise CryptoError("ciphertext is truncated")
    try:
        return AESGCM(key).decrypt(sealed[:_NONCE], sealed[_NONCE:], aad)
    except InvalidTag:
        raise CryptoError("ciphertext failed authentication: wrong key, wrong context, or tampered data") from None


class FieldCipher:
    """Encrypts values under a key ring's active key; decrypts under whichever key they name."""

    def __init__(self, ring: KeyRing) -> None:
        self._ring = ring

    @property
    def ring(self) -> KeyRing:
        """The key ring in use."""
        return self._ring

    def encrypt(self, plaintext: bytes, aad: bytes | None = None) -> str:
        """`enc:v1:<kid>:<b64>` under the active key."""
        return f"{PREFIX}{self._ring.active}:{b64e(seal_bytes(self._ring.active_key, plaintext, aad))}"

    def decrypt(self, token: str, aad: bytes | None = None) -> bytes:
        """Open a value made by `encrypt`, whichever ring key it names."""
        key_id, sealed = parse_token(token)
        return open_bytes(self._ring.key(key_id), sealed, aad)


def parse_token(token: str) -> tuple[str, bytes]:
    """Split `enc:v1:<kid>:<b64>` into key id and sealed bytes."""
    if not token.startswith(PREFIX):
        raise CryptoError("not an encrypted value (expected the enc:v1: prefix)")
    try:
        key_id, body = token[len(PREFIX):].split(":", 1)
        return key_id, b64d(body)
    except ValueError:
        raise CryptoError("encrypted value is malformed") from None


def is_sealed(value: object) -> bool:
    """True for a string made by `FieldCipher.encrypt`."""
    return isinstance(value, str) and value.startswith(PREFIX)
