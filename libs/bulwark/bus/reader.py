"""Reading a whole topic outside any consumer group (the CLI, the doctor, the trainer's dataset builder).

The reader assigns every partition and reads from the beginning (or given offsets) until the topic has
been quiet for `idle_ms`. It does not trust end offsets: Tansu reports the base offset of the last batch
plus one as the end, so "caught up" is judged by records, the same way on Tansu and on Apache Kafka.
"""

from __future__ import annotations

import time
from typing import Any, Iterator

from kafka import KafkaConsumer, TopicPartition

from bulwark.bus.client import kafka_client_config
from bulwark.events import DecodeError, Envelope, EventTypeRegistry, decode
from bulwark.settings import CommonSettings


def read_topic(settings: CommonSettings, topic: str, *, idle_ms: int = 1500, max_wait_s: float = 120.0,
               start: dict[int, int] | None = None, registry: EventTypeRegistry | None = None,
               validate: bool = False) -> Iterator[tuple[Any, Envelope | None]]:
    """Yield (record, envelope) for each record; envelope is None when the record does not decode.

    `validate` checks payload schemas too (off by default: readers of a topic trust its writer).
    """
    registry = registry or EventTypeRegistry.default()
    consumer = KafkaConsumer(**kafka_client_config(settings, client_id="bulwark-reader"), group_id=None,
                             enable_auto_commit=False, allow_auto_create_topics=False,
                             max_partition_fetch_bytes=max(2 * settings.max_event_bytes, 1_048_576))
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return
        consumer.assign(tps)
        begins = consumer.beginning_offsets(tps)
        ends = consumer.end_offsets(tps)
        first: dict[TopicPartition, int] = {}
        for tp in tps:
            first[tp] = start[tp.partition] if start and tp.partition in start else begins[tp]
            consumer.seek(tp, first[tp])
        # Read at least up to the reported end of every partition, then until quiet: the reported end can
        # trail the true end (Tansu), never lead it.
        pending = {tp for tp in tps if ends[tp] > first[tp]}
        deadline = time.monotonic() + max_wait_s
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=200, max_records=2000)
            if not batch:
                if not pending and (time.monotonic() - quiet_since) * 1000 >= idle_ms:
                    return
                continue
            quiet_since = time.monotonic()
            for tp in sorted(batch, key=lambda p: p.partition):
                for rec in batch[tp]:
                    yield rec, _decode(rec.value, registry, settings.max_event_bytes, validate)
                if batch[tp][-1].offset + 1 >= ends[tp]:
                    pending.discard(tp)
    finally:
        consumer.close()


def _decode(value: bytes | None, registry: EventTypeRegistry, max_bytes: int, validate: bool) -> Envelope | None:
    if not validate:
        import orjson

        try:
            doc = orjson.loads(value or b"")
            return Envelope(id=doc["id"], type=doc["type"], schema_version=doc["schema_version"], time=doc["time"],
                            source=doc["source"], subject=doc.get("subject"), payload=doc["payload"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None
    try:
        return decode(value, registry, max_bytes=max_bytes)
    except DecodeError:
        return None
