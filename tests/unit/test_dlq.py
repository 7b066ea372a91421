"""Dead letters: reason and origin in clear, original bytes sealed, stable ids."""

from __future__ import annotations

import orjson

from bulwark.bus.dlq import SourceRecord, build_dead_letter, open_dead_letter
from bulwark.crypto import FieldCipher, KeyRing
from bulwark.errors import BulwarkError, Reason
from bulwark.events import EventTypeRegistry

SRC = SourceRecord("events.raw", 3, 1042, 1_700_000_000_000, b"customer-77", b'{"email": "bob@example.com"}')


def test_dead_letter_seals_value_and_key_and_reopens_with_the_key() -> None:
    cipher = FieldCipher(KeyRing.generate("dlq"))
    event, headers = build_dead_letter(SRC, BulwarkError(Reason.NOT_JSON, "value is not a JSON document"),
                                       stage="decode", service="anon", cipher=cipher, exception="DecodeError")
    wire = event.encode()
    assert b"bob@example.com" not in wire and b"customer-77" not in wire
    assert all(b"bob" not in v and b"customer" not in v for _, v in headers)
    EventTypeRegistry.default().validate_payload("dlq.record", 1, orjson.loads(wire)["payload"])
    key, value = open_dead_letter(event.payload, cipher)
    assert (key, value) == (SRC.key, SRC.value)


def test_dead_letter_id_is_stable_for_the_same_source_or_event() -> None:
    cipher = FieldCipher(KeyRing.generate("dlq"))
    err = BulwarkError(Reason.SCHEMA_VIOLATION, "payload: missing required field(s) amount")
    a, _ = build_dead_letter(SRC, err, stage="schema", service="s", cipher=cipher, exception="E")
    b, _ = build_dead_letter(SRC, err, stage="schema", service="s", cipher=cipher, exception="E")
    assert a.id == b.id
    c, _ = build_dead_letter(SRC, err, stage="schema", service="s", cipher=cipher, exception="E", event_id="ev-1")
    d, _ = build_dead_letter(SourceRecord("events.raw", 0, 1, None, None, b"x"), err, stage="schema", service="s",
                             cipher=cipher, exception="E", event_id="ev-1")
    assert c.id == d.id != a.id  # the same event redelivered elsewhere is still one dead letter
