"""Helpers shared by integration tests: genuine clean events without running the anonymizer service."""

from __future__ import annotations

from typing import Any, Iterable

from kafka import KafkaProducer

from bulwark.bus import Context
from bulwark.bus.client import kafka_client_config
from bulwark.crypto import Pseudonymizer, load_ring
from bulwark.crypto.keys import RING_FIELD, RING_PSEUDONYM
from bulwark.crypto.subjects import SubjectCipher, SubjectKeyStore
from bulwark.events import Envelope, EventTypeRegistry
from bulwark.redis_client import make_redis
from bulwark.redis_keys import RedisKeys
from bulwark.reference import ReferenceGenerator
from bulwark.settings import CommonSettings
from bulwark.testing.stack import TestStack
from bulwark.tracing import inject_headers
from services.ingest_anonymizer.handler import AnonymizerHandler
from services.ingest_anonymizer.policy import DEFAULT_POLICY, load_policy


def anonymize(stack: TestStack, settings: CommonSettings, raw: Iterable[Envelope]) -> list[Envelope]:
    """Clean events made by the anonymizer's own handler, in this process, with the stack's keys."""
    registry = EventTypeRegistry.default()
    client = make_redis(settings)
    store = SubjectKeyStore(client, RedisKeys(settings.redis_prefix), load_ring(RING_FIELD, stack.keys_dir))
    handler = AnonymizerHandler(settings, load_policy(DEFAULT_POLICY, registry), registry,
                                Pseudonymizer(load_ring(RING_PSEUDONYM, stack.keys_dir)), SubjectCipher(store))
    ctx = Context("events.raw", 0, 0, None, [], "test", settings, client, RedisKeys(settings.redis_prefix))
    return [out.event for e in raw for out in handler.handle(e, ctx)]


def clean_events(stack: TestStack, settings: CommonSettings, n: int, seed: int, **generator: Any) -> list[Envelope]:
    """`n` reference events, anonymized."""
    return anonymize(stack, settings, ReferenceGenerator(seed=seed, **generator).events(n))


def publish(settings: CommonSettings, topic: str, events: Iterable[Envelope]) -> int:
    """Produce events to a topic with trace headers; returns how many."""
    producer = KafkaProducer(**kafka_client_config(settings, client_id="test-publish"), linger_ms=5,
                             batch_size=256 * 1024)
    n = 0
    for e in events:
        producer.send(topic, e.encode(), key=e.key, headers=inject_headers([("bulwark-envelope", b"1")]))
        n += 1
    producer.flush()
    producer.close()
    return n
