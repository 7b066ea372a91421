"""Keyed pseudonymous tokens: HMAC-SHA256 of a value, stable per key.

The same value under the same key always gives the same token, so joins and per-customer features still
work on anonymized data; without the key, a token cannot be reversed or recomputed from a guess.
Tokens carry the key id (`tok_<kid>_<digest>`): after a rotation, old and new tokens are told apart.
"""

from __future__ import annotations

import base64
import functools
import hmac

from bulwark.crypto.keys import KeyRing


class Pseudonymizer:
    """Maps values to keyed tokens with the ring's active key."""

    def __init__(self, ring: KeyRing, *, digest_chars: int = 20, cache_size: int = 65_536) -> None:
        self._ring = ring
        self._key = ring.active_key
        self._kid = ring.active
        self._chars = digest_chars
        # Base32 turns each 5 bytes into 8 characters: encode only the whole groups the token shows (the
        # anonymizer makes several tokens per event; the rest of the digest is never seen).
        self._bytes = min(32, -(-digest_chars // 8) * 5)
        # Customers come back, and one event asks for its subject's token twice (record key and field):
        # recent tokens are remembered, in this process's memory only, beside the raw events it already holds.
        self._memo = functools.lru_cache(maxsize=cache_size)(self._compute) if cache_size else self._compute

    def token(self, value: str, *, domain: str = "") -> str:
        """`tok_<kid>_<base32 digest>` for `value`; `domain` separates token spaces (email vs phone)."""
        return self._memo(value, domain)

    def _compute(self, value: str, domain: str) -> str:
        mac = hmac.digest(self._key, f"{domain}\x1f{value}".encode(), "sha256")
        return f"tok_{self._kid}_{base64.b32encode(mac[:self._bytes]).decode().lower()[: self._chars]}"

    def bucket(self, value: str, buckets: int, *, domain: str = "") -> int:
        """A stable bucket id in [0, buckets) for `value`, from the same keyed HMAC."""
        mac = hmac.digest(self._key, f"{domain}\x1f{value}".encode(), "sha256")
        return int.from_bytes(mac[:8], "big") % buckets
