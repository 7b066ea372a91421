"""Events: the versioned envelope, its schemas, and strict decoding."""

from bulwark.events.envelope import (
    ENVELOPE_VERSION,
    DecodeError,
    Envelope,
    decode,
    derived_id,
    utc_now,
)
from bulwark.events.registry import EventTypeRegistry

__all__ = ["ENVELOPE_VERSION", "DecodeError", "Envelope", "EventTypeRegistry", "decode", "derived_id", "utc_now"]
