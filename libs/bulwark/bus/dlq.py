"""Dead letters: a rejected record's reason and origin in clear, its bytes encrypted.

The DLQ is read by operators and the doctor, so it must not become a leak: the original value and key are
sealed with the `dlq` key ring (AES-GCM, bound to the source topic/partition/offset); reason, stage,
service and source position travel in clear, in the payload and in headers. Never payload text in a
header. The dead-letter id is derived from the source position (or the event id), so re-rejecting a
redelivered record adds no visible duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bulwark import topics as t
from bulwark.crypto.aead import FieldCipher
from bulwark.errors import BulwarkError
from bulwark.events import Envelope, derived_id

DLQ_EVENT_TYPE = "dlq.record"


@dataclass(frozen=True)
class SourceRecord:
    """Where a rejected record came from, and its raw bytes."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None


def dead_letter_id(src: SourceRecord, event_id: str | None) -> str:
    """Stable id of the dead letter for `src` (by event id when the record decoded far enough)."""
    if event_id:
        return derived_id("dlq", event_id)
    return derived_id("dlq", src.topic, str(src.partition), str(src.offset))


def _aad(src: SourceRecord) -> bytes:
    return f"dlq|{src.topic}|{src.partition}|{src.offset}".encode()


def build_dead_letter(src: SourceRecord, error: BulwarkError, *, stage: str, service: str, cipher: FieldCipher,
                      exception: str, event_id: str | None = None, event_type: str | None = None,
                      ) -> tuple[Envelope, list[tuple[str, bytes]]]:
    """The dead-letter event and its headers for a rejected record."""
    aad = _aad(src)
    payload: dict[str, Any] = {
        "reason": error.reason.value,
        "message": error.message[:2048],
        "stage": stage,
        "service": service,
        "exception": exception,
        "event_id": event_id,
        "event_type": event_type,
        "source": {"topic": src.topic, "partition": src.partition, "offset": src.offset,
                   "timestamp_ms": src.timestamp_ms},
        "original": {
            "key_id": cipher.ring.active,
            "ciphertext": cipher.encrypt(src.value or b"", aad),
            "key_ciphertext": cipher.encrypt(src.key, aad) if src.key is not None else None,
            "size": len(src.value or b""),
        },
    }
    event = Envelope(type=DLQ_EVENT_TYPE, payload=payload, source=service, id=dead_letter_id(src, event_id))
    headers = [
        (t.H_DLQ_REASON, error.reason.value.encode()),
        (t.H_DLQ_STAGE, stage.encode()),
        (t.H_DLQ_SERVICE, service.encode()),
        (t.H_DLQ_SOURCE_TOPIC, src.topic.encode()),
        (t.H_DLQ_SOURCE_PARTITION, str(src.partition).encode()),
        (t.H_DLQ_SOURCE_OFFSET, str(src.offset).encode()),
        (t.H_DLQ_EXCEPTION, exception.encode()),
    ]
    return event, headers


def open_dead_letter(payload: dict[str, Any], cipher: FieldCipher) -> tuple[bytes | None, bytes]:
    """(key, value) of the original record; needs the `dlq` key ring (an audited operator action)."""
    src = payload["source"]
    aad = _aad(SourceRecord(src["topic"], src["partition"], src["offset"], None, None, None))
    original = payload["original"]
    value = cipher.decrypt(original["ciphertext"], aad)
    key = cipher.decrypt(original["key_ciphertext"], aad) if original.get("key_ciphertext") else None
    return key, value


__all__ = ["DLQ_EVENT_TYPE", "SourceRecord", "build_dead_letter", "dead_letter_id", "open_dead_letter"]
