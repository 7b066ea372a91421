"""Subject keys fetched for a whole batch (`SubjectKeyStore.prefetch`), against the real Redis: the keys it
loads or creates are the ones every instance uses, and `cipher()` then needs no round trip of its own."""

from __future__ import annotations

import uuid

import pytest
import redis

from bulwark.crypto.keys import KeyRing
from bulwark.crypto.subjects import SubjectCipher, SubjectForgottenError, SubjectKeyStore
from bulwark.errors import UnavailableError
from bulwark.redis_client import make_redis
from bulwark.redis_keys import RedisKeys
from bulwark.testing.stack import TestStack

pytestmark = pytest.mark.integration


def _calls(client: redis.Redis, command: str) -> int:
    return int(client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


def test_prefetch_loads_known_and_creates_new_subject_keys_in_two_round_trips(stack: TestStack) -> None:
    prefix = "sp" + uuid.uuid4().hex[:8]
    client, keys = make_redis(stack.settings(redis_prefix=prefix)), RedisKeys(prefix)
    ring = KeyRing.generate("field")
    other = SubjectCipher(SubjectKeyStore(client, keys, ring))
    # Another instance already met "known" and sealed a value under its key.
    sealed = other.encrypt("known", "payment.transaction.clean", "email", b"a@example.com")

    store = SubjectKeyStore(client, keys, ring)
    subjects = ["known", *(f"new-{i}" for i in range(20)), "known"]
    gets, mgets, sets = _calls(client, "get"), _calls(client, "mget"), _calls(client, "set")
    store.prefetch(subjects)
    assert _calls(client, "mget") - mgets == 1
    assert _calls(client, "set") - sets == 20  # one SET NX per new subject, in one pipeline
    mine = SubjectCipher(store)
    after = _calls(client, "get")
    values = {s: mine.encrypt(s, "payment.transaction.clean", "email", s.encode()) for s in subjects}
    assert _calls(client, "get") == after, "cipher() went to Redis for a prefetched subject"
    assert after - gets <= 1  # at most the forget-epoch check
    # The keys are the shared ones: the first instance opens what this one sealed, and the reverse.
    assert mine.decrypt("known", "payment.transaction.clean", "email", sealed) == b"a@example.com"
    for s, token in values.items():
        assert other.decrypt(s, "payment.transaction.clean", "email", token) == s.encode()


def test_prefetch_keeps_the_first_writer_key_and_forgetting_still_wins(stack: TestStack) -> None:
    prefix = "sp" + uuid.uuid4().hex[:8]
    client, keys = make_redis(stack.settings(redis_prefix=prefix)), RedisKeys(prefix)
    ring = KeyRing.generate("field")
    first, second = SubjectKeyStore(client, keys, ring), SubjectKeyStore(client, keys, ring)
    first.prefetch(["s1"])
    second.prefetch(["s1"])  # finds the key the first created: one key per subject, whoever came first
    token = SubjectCipher(first).encrypt("s1", "t", "f", b"value")
    assert SubjectCipher(second).decrypt("s1", "t", "f", token) == b"value"
    second.forget("s1")
    with pytest.raises(SubjectForgottenError):
        SubjectCipher(second).decrypt("s1", "t", "f", token)
    # A fresh instance's prefetch after the forget makes a new key: the old value stays unreadable.
    third = SubjectKeyStore(client, keys, ring)
    third.prefetch(["s1"])
    with pytest.raises(Exception, match="authentication"):
        SubjectCipher(third).decrypt("s1", "t", "f", token)


def test_prefetch_with_redis_unreachable_says_so() -> None:
    store = SubjectKeyStore(redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2),
                            RedisKeys("sp"), KeyRing.generate("field"))
    with pytest.raises(UnavailableError, match="Redis unreachable"):
        store.prefetch(["s1"])
