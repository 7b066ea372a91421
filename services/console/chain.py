"""The chain picture's model: nodes in chain order with their state, and arrows with event rates and lag.

The states come from the doctor's diagnosis (`bulwark.doctor.diagnose`); rates are the change of each
consumer's `handled` count between two diagnoses, so the first picture after a start has no rates yet.
Lag is the heartbeat's consumer lag, approximate on Tansu (its end offsets trail the true end).
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from bulwark.doctor.model import UNKNOWN

# Node name -> (label, x, y). The data and model chain runs left to right on y=1; the request path turns
# down through Triton to the front door; the broker and Redis sit under the chain, the explainer beside
# the front door.
LAYOUT: dict[str, tuple[str, float, float]] = {
    "producers": ("producers", 0, 1),
    "ingest-anonymizer": ("anonymizer", 1, 1),
    "trainer": ("trainer", 2, 1),
    "quantizer": ("quantizer", 3, 1),
    "robustness-guard": ("guard", 4, 1),
    "updater": ("updater", 5, 1),
    "triton": ("Triton", 6, 1),
    "inference": ("front door", 7, 1),
    "explainer": ("explainer", 7, 0),
    "console": ("console", 6, 0),
    "kafka": ("broker", 1.5, 0),
    "redis": ("Redis", 3.5, 0),
}

# (from, to, what travels, whose consumption the rate and lag describe).
EDGES: tuple[tuple[str, str, str, str | None], ...] = (
    ("producers", "ingest-anonymizer", "events.raw", "ingest-anonymizer"),
    ("ingest-anonymizer", "trainer", "events.clean", "trainer"),
    ("trainer", "quantizer", "models.trained", "quantizer"),
    ("quantizer", "robustness-guard", "models.quantized", "robustness-guard"),
    ("robustness-guard", "updater", "models.validated", "updater"),
    ("updater", "triton", "model control", None),
    ("triton", "inference", "KServe v2 gRPC", None),
    ("inference", "explainer", "inference.log", "explainer"),
)


@dataclass
class Node:
    """A box of the picture."""

    name: str
    label: str
    x: float
    y: float
    state: str
    detail: str
    kind: str


@dataclass
class Edge:
    """An arrow: what travels on it, and how fast its consumer takes it."""

    source: str
    target: str
    carries: str
    rate: float | None
    lag: int | None


class RateMeter:
    """Events per second per service, from the growth of its `handled` count between two observations."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def observe(self, service: str, handled: int, at: float) -> float | None:
        """Record `handled` at time `at`; the rate since the previous observation (None for the first, or when the
        count went down: a restarted instance starts counting again)."""
        with self._lock:
            prev = self._last.get(service)
            self._last[service] = (at, handled)
        if prev is None or at <= prev[0] or handled < prev[1]:
            return None
        return round((handled - prev[1]) / (at - prev[0]), 2)


def _lag(part: dict[str, Any]) -> int | None:
    lags = []
    for inst in part.get("instances", []):
        raw = (inst.get("evidence") or {}).get("lag")
        try:
            value = int(raw)
        except (TypeError, ValueError):
            continue
        if value >= 0:
            lags.append(value)
    return sum(lags) if lags else None


def build_chain(diagnosis: dict[str, Any], meter: RateMeter, *, now: float | None = None) -> dict[str, Any]:
    """The picture's nodes and edges from a diagnosis (`Diagnosis.to_dict()`)."""
    now = time.time() if now is None else now
    parts = {p["part"]: p for p in diagnosis.get("parts", [])}
    rates: dict[str, float | None] = {}
    for name, part in parts.items():
        if part.get("kind") == "service":
            handled = (part.get("evidence") or {}).get("handled")
            rates[name] = meter.observe(name, int(handled), now) if handled is not None else None
    nodes = []
    for name, (label, x, y) in LAYOUT.items():
        part = parts.get(name)
        if name == "producers":
            nodes.append(Node(name, label, x, y, UNKNOWN, "outside the platform: any Kafka client", "external"))
        elif part is None:
            nodes.append(Node(name, label, x, y, UNKNOWN, "not checked", "service"))
        else:
            nodes.append(Node(name, label, x, y, part["state"], part.get("detail", ""), part.get("kind", "")))
    edges = [Edge(a, b, carries, rates.get(who) if who else None, _lag(parts[who]) if who in parts else None)
             for a, b, carries, who in EDGES]
    extra = [p for n, p in parts.items() if n not in LAYOUT]
    return {"at": diagnosis.get("at"), "took_s": diagnosis.get("took_s"), "down": diagnosis.get("down", []),
            "degraded": diagnosis.get("degraded", []), "nodes": [asdict(n) for n in nodes],
            "edges": [asdict(e) for e in edges],
            "other": [{"name": p["part"], "state": p["state"], "detail": p.get("detail", "")} for p in extra]}
