"""Envelope encoding and strict decoding: each bad input names its reason and stage."""

from __future__ import annotations

import orjson
import pytest

from bulwark.errors import Reason
from bulwark.events import DecodeError, Envelope, EventTypeRegistry, decode, derived_id

REG = EventTypeRegistry.default()
ALERT = {"kind": "test.kind", "severity": "info", "service": "svc", "summary": "something happened"}


def _alert(**over: object) -> Envelope:
    return Envelope(type="alert", payload={**ALERT, **over}, source="test", subject="subj-1")


def test_envelope_round_trip_keeps_every_field() -> None:
    e = _alert()
    back = decode(e.encode(), REG, max_bytes=10_000)
    assert back == e
    assert back.key == b"subj-1"


def test_derived_ids_are_stable_and_distinct_per_index() -> None:
    e = _alert()
    a = e.derive("alert", ALERT, source="svc", index=0)
    assert a.id == e.derive("alert", ALERT, source="svc", index=0).id == derived_id(e.id, "svc", "0")
    assert a.id != e.derive("alert", ALERT, source="svc", index=1).id
    assert a.id != e.derive("alert", ALERT, source="other", index=0).id


@pytest.mark.parametrize(
    ("value", "reason", "stage", "fragment"),
    [
        (b"\xff\xfe{", Reason.NOT_UTF8, "decode", "UTF-8"),
        (b"{oops", Reason.NOT_JSON, "decode", "JSON"),
        (b"[1, 2]", Reason.SCHEMA_VIOLATION, "envelope", "JSON object"),
        (b'{"id": "x"}', Reason.SCHEMA_VIOLATION, "envelope", "missing required field(s) type"),
        (_alert().encode().replace(b'"alert"', b'"no.such"'), Reason.UNKNOWN_EVENT_TYPE, "schema", "no.such"),
        (_alert().encode().replace(b'"schema_version":1', b'"schema_version":3'),
         Reason.UNSUPPORTED_SCHEMA_VERSION, "schema", "supported: [1]"),
        (_alert().encode().replace(b'"severity":"info",', b""), Reason.SCHEMA_VIOLATION, "schema", "severity"),
        (_alert(severity=7).encode(), Reason.SCHEMA_VIOLATION, "schema", "payload.severity: wrong type"),
        (_alert(summary="x" * 5000).encode(), Reason.PAYLOAD_TOO_LARGE, "size", "limit is 4096"),
        (None, Reason.NOT_JSON, "decode", "tombstone"),
    ],
)
def test_decode_bad_input_names_reason_and_stage(value: bytes | None, reason: Reason, stage: str, fragment: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode(value, REG, max_bytes=4096)
    assert info.value.reason == reason
    assert info.value.stage == stage
    assert fragment in info.value.message
    assert not info.value.retryable


def test_decode_error_message_never_contains_the_value() -> None:
    secret = "alice@example.com"
    doc = orjson.loads(_alert().encode())
    doc["payload"]["severity"] = secret  # wrong value in an enum field
    with pytest.raises(DecodeError) as info:
        decode(orjson.dumps(doc), REG, max_bytes=10_000)
    assert secret not in info.value.message


def test_registry_refuses_duplicate_and_badly_named_schemas() -> None:
    reg = EventTypeRegistry()
    reg.register("a.b", 1, {"type": "object"})
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a.b", 1, {"type": "object"})
    with pytest.raises(ValueError, match="must be named"):
        reg.register_file("bad-name.json", {})
