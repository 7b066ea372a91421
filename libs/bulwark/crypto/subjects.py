"""Per-subject field encryption, so one person can be forgotten by deleting one key (crypto-shredding).

Each subject (a pseudonymous token, never the clear id) gets its own random 256-bit data key. The data key is
stored in Redis wrapped (AES-GCM) under the `field` key ring's active key and bound to the subject token;
field values are sealed under the data key, bound to (event type, field, subject). `forget()` deletes the
wrapped data key: every value ever sealed for that subject, in any topic, backup or cache, can no longer
be opened by anyone. Rotating the `field` ring wraps new subject keys under the new key; existing wraps
still open under the old key id, and `rewrap_all()` moves them to the active one without touching data.

Sealed values read `enc:v1:subject:<base64url(nonce ‖ ciphertext ‖ tag)>`.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from typing import Iterable

import redis
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bulwark.crypto.aead import PREFIX, open_bytes, parse_token, seal_bytes
from bulwark.crypto.keys import KeyRing, b64e
from bulwark.errors import CryptoError, UnavailableError
from bulwark.redis_keys import RedisKeys

SUBJECT_KID = "subject"


class SubjectForgottenError(CryptoError):
    """The subject's key is gone: forgotten (or never created here)."""

    def __init__(self, subject: str) -> None:
        super().__init__(f"subject {subject} has no key: it was forgotten (crypto-shredded) or never seen; "
                         "its encrypted fields cannot be decrypted")
        self.subject = subject


def field_aad(event_type: str, field: str, subject: str) -> bytes:
    """Associated data binding a sealed field to its event type, field and subject."""
    return f"{event_type}|{field}|{subject}".encode()


class SubjectKeyStore:
    """Subject data keys in Redis, wrapped by the `field` ring; unwrapped keys cached briefly in memory.

    The cache holds at most `cache_size` keys for `cache_ttl_s` seconds and is cleared whenever any subject
    is forgotten (a forget epoch counter in Redis, checked at most once a second), so a forgotten key does
    not outlive its deletion here by more than about a second.
    """

    def __init__(self, client: redis.Redis, keys: RedisKeys, ring: KeyRing, *, cache_size: int = 50_000,
                 cache_ttl_s: float = 60.0) -> None:
        self._redis = client
        self._keys = keys
        self._ring = ring
        self._cache: OrderedDict[str, tuple[AESGCM, float]] = OrderedDict()
        self._cache_size = cache_size
        self._cache_ttl = cache_ttl_s
        self._epoch: bytes | None = None
        self._epoch_checked = 0.0

    def _epoch_key(self) -> str:
        return self._keys.state("subjects", "forget-epoch")

    def _check_epoch(self) -> None:
        now = time.monotonic()
        if now - self._epoch_checked < 1.0:
            return
        self._epoch_checked = now
        epoch = self._redis.get(self._epoch_key())
        if epoch != self._epoch:
            self._cache.clear()
            self._epoch = epoch

    def cipher(self, subject: str, *, create: bool) -> AESGCM:
        """The subject's data key as an AESGCM object; created (if `create`) on first use."""
        try:
            self._check_epoch()
            hit = self._cache.get(subject)
            if hit is not None and hit[1] > time.monotonic():
                self._cache.move_to_end(subject)
                return hit[0]
            dek = self._load(subject)
            if dek is None:
                if not create:
                    raise SubjectForgottenError(subject)
                dek = self._create(subject)
        except redis.RedisError as exc:
            raise UnavailableError(f"Redis unreachable for subject keys ({type(exc).__name__})") from None
        return self._remember(subject, dek)

    def prefetch(self, subjects: Iterable[str]) -> None:
        """Load, or create, the keys of many subjects in at most two round trips (one MGET, one pipeline of
        SET NX), so that `cipher()` finds them cached: a batch of events costs two round trips instead of
        one or two per subject seen for the first time. A subject whose creation lost a race to another
        instance is left for `cipher()`, which loads the winner's key."""
        if self._cache_size == 0:
            return  # nothing would be kept for cipher() to find
        try:
            self._check_epoch()
            now = time.monotonic()
            todo = [s for s in dict.fromkeys(subjects)
                    if (hit := self._cache.get(s)) is None or hit[1] <= now]
            if not todo:
                return
            stored = self._redis.mget([self._keys.subject_key(s) for s in todo])
            new: dict[str, tuple[bytes, bytes]] = {}
            for subject, value in zip(todo, stored):
                if value is None:
                    new[subject] = self._wrap(subject)
                else:
                    self._remember(subject, self._unwrap(subject, value))
            if new:
                pipe = self._redis.pipeline(transaction=False)
                for subject, (_, wrapped) in new.items():
                    pipe.set(self._keys.subject_key(subject), wrapped, nx=True)
                for (subject, (dek, _)), created in zip(new.items(), pipe.execute()):
                    if created:
                        self._remember(subject, dek)
        except redis.RedisError as exc:
            raise UnavailableError(f"Redis unreachable for subject keys ({type(exc).__name__})") from None

    def _remember(self, subject: str, dek: bytes) -> AESGCM:
        aes = AESGCM(dek)
        self._cache[subject] = (aes, time.monotonic() + self._cache_ttl)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return aes

    def _load(self, subject: str) -> bytes | None:
        stored = self._redis.get(self._keys.subject_key(subject))
        return None if stored is None else self._unwrap(subject, stored)

    def _unwrap(self, subject: str, stored: bytes) -> bytes:
        kid, _, sealed = stored.partition(b":")
        return open_bytes(self._ring.key(kid.decode()), sealed, subject.encode())

    def _wrap(self, subject: str) -> tuple[bytes, bytes]:
        """A new data key, and its stored form (wrapped under the ring's active key, bound to the subject)."""
        dek = os.urandom(32)
        wrapped = seal_bytes(self._ring.active_key, dek, subject.encode())
        return dek, self._ring.active.encode() + b":" + wrapped

    def _create(self, subject: str) -> bytes:
        dek, stored = self._wrap(subject)
        # Two instances may meet the same new subject at once: the first write wins, both use it.
        if not self._redis.set(self._keys.subject_key(subject), stored, nx=True):
            existing = self._load(subject)
            if existing is None:
                raise UnavailableError("subject key vanished while being created; retrying")
            return existing
        return dek

    def forget(self, subject: str) -> bool:
        """Delete the subject's key and record the subject as forgotten. True if a key existed."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(self._keys.subject_key(subject))
        pipe.sadd(self._keys.forgotten(), subject)
        pipe.incr(self._epoch_key())
        deleted, _, _ = pipe.execute()
        self._cache.pop(subject, None)
        return bool(deleted)

    def is_forgotten(self, subject: str) -> bool:
        """True when `forget()` was called for this subject."""
        return bool(self._redis.sismember(self._keys.forgotten(), subject))

    def rewrap_all(self) -> int:
        """Re-wrap every subject key under the ring's active key (after a rotation); returns how many moved."""
        moved = 0
        prefix = self._keys.subject_key("")
        for key in self._redis.scan_iter(match=prefix + "*", count=1000):
            subject = key.decode()[len(prefix):]
            stored = self._redis.get(key)
            if stored is None or stored.startswith(self._ring.active.encode() + b":"):
                continue
            dek = self._load(subject)
            if dek is None:
                continue
            new = self._ring.active.encode() + b":" + seal_bytes(self._ring.active_key, dek, subject.encode())
            # Only replace what we read: a concurrent forget must win.
            with self._redis.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(key)
                    if pipe.get(key) != stored:
                        continue
                    pipe.multi()
                    pipe.set(key, new)
                    pipe.execute()
                    moved += 1
                except redis.WatchError:
                    continue
        return moved


class SubjectCipher:
    """Seals and opens field values under their subject's data key."""

    def __init__(self, store: SubjectKeyStore) -> None:
        self._store = store

    def prefetch(self, subjects: Iterable[str]) -> None:
        """Have the keys of many subjects ready (see `SubjectKeyStore.prefetch`)."""
        self._store.prefetch(subjects)

    def encrypt(self, subject: str, event_type: str, field: str, plaintext: bytes) -> str:
        """`enc:v1:subject:<b64>` for `plaintext`, bound to (event type, field, subject)."""
        aes = self._store.cipher(subject, create=True)
        nonce = os.urandom(12)
        sealed = nonce + aes.encrypt(nonce, plaintext, field_aad(event_type, field, subject))
        return f"{PREFIX}{SUBJECT_KID}:{b64e(sealed)}"

    def decrypt(self, subject: str, event_type: str, field: str, token: str) -> bytes:
        """Open a value sealed by `encrypt`; a forgotten subject raises `SubjectForgottenError`."""
        kid, sealed = parse_token(token)
        if kid != SUBJECT_KID:
            raise CryptoError(f"value is sealed under key {kid!r}, not a subject key")
        aes = self._store.cipher(subject, create=False)
        try:
            return aes.decrypt(sealed[:12], sealed[12:], field_aad(event_type, field, subject))
        except Exception:  # cryptography raises InvalidTag
            raise CryptoError("value failed authentication: wrong subject, field or event type, or tampered") from None
