"""Canary events: synthetic probes the doctor sends through the chain to find the first hop that is stuck.

A canary (`doctor.canary`) carries its route, a list of (topic, service) hops. The consumer loop of every
service that reads a canary marks it handled (the idempotence mark in Redis is the doctor's evidence) and
never passes it to a handler, so no model, dataset or report ever contains one. The service named on the
route for the topic it came from forwards it, same id, to the next hop's topic. Canaries carry no personal
data: only the probe id, the route and the time sent.
"""

from __future__ import annotations

from typing import Any

from bulwark.bus.producer import Output
from bulwark.events import Envelope

CANARY_TYPE = "doctor.canary"
CANARY_SOURCE = "doctor"


def canary_event(probe_id: str, route: list[dict[str, str]], sent_at: float) -> Envelope:
    """A canary for `route`; its id is the probe id, kept on every hop."""
    return Envelope(id=probe_id, type=CANARY_TYPE, source=CANARY_SOURCE, subject=probe_id,
                    payload={"probe_id": probe_id, "route": route, "sent_at": sent_at})


def canary_outputs(event: Envelope, topic: str, service: str) -> list[Output]:
    """What the loop of `service`, reading `event` from `topic`, forwards: the next hop, or nothing."""
    route: list[dict[str, Any]] = event.payload.get("route") or []
    for i, hop in enumerate(route[:-1]):
        if hop.get("topic") == topic and hop.get("service") == service:
            nxt = route[i + 1]
            forwarded = Envelope(id=event.id, type=CANARY_TYPE, source=service, subject=event.subject,
                                 payload=event.payload)
            return [Output(str(nxt["topic"]), forwarded, key=event.id.encode())]
    return []
