"""Audit events: who did what, to what, when, why, with what outcome (topic `audit`).

Every admin action and every re-identification is audited. Audit events name ids and reasons, never the
personal value that was revealed.
"""

from __future__ import annotations

import getpass
import os
from typing import Any

from bulwark.bus.producer import EventProducer, Output, make_producer
from bulwark.events import Envelope
from bulwark.settings import CommonSettings

AUDIT_TYPE = "audit"


def current_actor() -> str:
    """The person or workload acting: BULWARK_ACTOR, else the login name."""
    return os.environ.get("BULWARK_ACTOR") or getpass.getuser()


def audit_event(*, actor: str, action: str, target: str, reason: str, outcome: str, source: str,
                details: dict[str, Any] | None = None) -> Envelope:
    """An audit envelope (validated by `audit.v1.json` when consumed)."""
    return Envelope(type=AUDIT_TYPE, source=source, subject=target, payload={
        "actor": actor, "action": action, "target": target, "reason": reason, "outcome": outcome,
        "details": details or {},
    })


def publish_audit(settings: CommonSettings, event: Envelope, producer: EventProducer | None = None) -> None:
    """Publish one audit event and wait for the broker's acknowledgement."""
    own = producer is None
    producer = producer or EventProducer(make_producer(settings, client_id="bulwark-audit"))
    try:
        producer.send(Output(settings.topics.audit, event))
        producer.flush()
    finally:
        if own:
            producer.close()
