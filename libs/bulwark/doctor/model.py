"""What the doctor reports: plain dataclasses, each with `to_dict()` for JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

UP, DEGRADED, DOWN, UNKNOWN = "up", "degraded", "down", "unknown"


@dataclass
class InstanceState:
    """One service instance, from its heartbeat and, where it serves gRPC, its health check."""

    instance: str
    state: str
    detail: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class PartState:
    """An infrastructure part or a service: its state, one line why, and the evidence behind it."""

    part: str
    kind: str
    state: str
    detail: str
    evidence: dict[str, Any] = field(default_factory=dict)
    instances: list[InstanceState] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)


@dataclass
class HopResult:
    """One hop of a probe or a trace: did the canary (or event) reach it, when, and what was seen."""

    hop: str
    seen: bool | None
    ms: float | None = None
    detail: str = ""


@dataclass
class ProbeResult:
    """A probe: the canary's hops in chain order and the first that did not see it (None: all did)."""

    probe_id: str
    stopped_at: str | None
    hops: list[HopResult]
    took_s: float

    @property
    def ok(self) -> bool:
        """True when every hop saw the canary."""
        return self.stopped_at is None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return {**asdict(self), "ok": self.ok}


@dataclass
class Diagnosis:
    """Everything `bulwark doctor` found in one run."""

    at: float
    parts: list[PartState]
    probe: ProbeResult | None
    took_s: float

    @property
    def down(self) -> list[str]:
        """Names of the parts that are down."""
        return [p.part for p in self.parts if p.state == DOWN]

    @property
    def degraded(self) -> list[str]:
        """Names of the parts that are degraded."""
        return [p.part for p in self.parts if p.state == DEGRADED]

    @property
    def healthy(self) -> bool:
        """Nothing down or unknown, and the probe (if any) went through."""
        return (all(p.state in (UP, DEGRADED) for p in self.parts)
                and (self.probe is None or self.probe.ok))

    def part(self, name: str) -> PartState:
        """The state of one part by name (KeyError when not checked)."""
        for p in self.parts:
            if p.part == name:
                return p
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return {"at": self.at, "took_s": self.took_s, "healthy": self.healthy, "down": self.down,
                "degraded": self.degraded, "parts": [p.to_dict() for p in self.parts],
                "probe": self.probe.to_dict() if self.probe else None}


@dataclass
class TraceReport:
    """Where one event (or trace) went: the hops reached in chain order, and where it stopped."""

    query: str
    trace_ids: list[str]
    hops: list[HopResult]
    last_hop: str | None
    stopped_at: str | None
    complete: bool
    detail: str
    spans: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)
