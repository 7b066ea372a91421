"""Keyed pseudonymous tokens: HMAC-SHA256 of a value, stable per key.

The same value under the same key always gives the same token, so joins and per-customer features still
work on anonymized data; without the key, a token cannot be reversed or recomputed from a guess.
Tokens carry the key id (`tok_<kid>_<digest>`): after a rotation, old and new tokens are told apart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from bulwark.crypto.keys import KeyRing


class Pseudonymizer:
    """Maps values to keyed tokens with the ring's active key."""

    def __init__(self, ring: KeyRing, *, digest_chars: int = 20) -> None:
        self._ring = ring
        self._key = ring.active_key
        self._kid = ring.active
        self._chars = digest_chars

    def token(self, value: str, *, domain: str = "") -> str:
        """`tok_<kid>_<base32 digest>` for `value`; `domain` separates token spaces (email vs phone)."""
        mac = hmac.new(self._key, f"{domain}\x1f{value}".encode(), hashlib.sha256).digest()
        return f"tok_{self._kid}_{base64.b32encode(mac).decode().lower()[: self._chars]}"

    def bucket(self, value: str, buckets: int, *, domain: str = "") -> int:
        """A stable bucket id in [0, buckets) for `value`, from the same keyed HMAC."""
        mac = hmac.new(self._key, f"{domain}\x1f{value}".encode(), hashlib.sha256).digest()
        return int.from_bytes(mac[:8], "big") % buckets
