"""Is each part up? The infrastructure checks and service heartbeats `bulwark status` shows.

The doctor builds on the same checks and adds traces, lag and baselines; this module answers only
"up, degraded or down, and why" for each part, quickly (every check has a short timeout).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from bulwark.health import read_heartbeats
from bulwark.redis_client import make_redis
from bulwark.redis_keys import RedisKeys
from bulwark.settings import CommonSettings
from bulwark.stack import catalog
from bulwark.stack.parts import http_ok, kafka_ready, redis_ready


@dataclass
class PartHealth:
    """One part's state as `bulwark status` prints it."""

    part: str
    kind: str
    state: str
    instances: int
    detail: str

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON output."""
        return asdict(self)


def infrastructure(settings: CommonSettings) -> list[PartHealth]:
    """Broker, Redis and Triton, each up or down with the address checked."""
    out = []
    started = time.perf_counter()
    up = kafka_ready(settings.kafka_bootstrap_servers)
    out.append(PartHealth("kafka", "infrastructure", "up" if up else "down", 1 if up else 0,
                          f"{settings.kafka_bootstrap_servers} ({(time.perf_counter() - started) * 1000:.0f} ms)"))
    redis_url = settings.redis_url
    up = redis_ready(redis_url) if settings.redis_password is None else _redis_auth_ready(settings)
    out.append(PartHealth("redis", "infrastructure", "up" if up else "down", 1 if up else 0,
                          redis_url.split("@")[-1]))
    live = http_ok(f"http://{settings.triton_http_url}/v2/health/live")
    ready = live and http_ok(f"http://{settings.triton_http_url}/v2/health/ready")
    state = "up" if ready else ("degraded" if live else "down")
    out.append(PartHealth("triton", "infrastructure", state, 1 if live else 0,
                          f"{settings.triton_grpc_url}" + ("" if ready or not live else " (live, not ready)")))
    return out


def _redis_auth_ready(settings: CommonSettings) -> bool:
    try:
        return bool(make_redis(settings, timeout_s=1).ping())
    except Exception:  # noqa: BLE001 - any failure means not ready
        return False


def services(settings: CommonSettings, *, expected: tuple[str, ...] | None = None) -> list[PartHealth]:
    """Each service's state from its instances' heartbeats (down when none is fresh)."""
    expected = catalog.names() if expected is None else expected
    try:
        beats = read_heartbeats(make_redis(settings, timeout_s=1), RedisKeys(settings.redis_prefix))
    except Exception:  # noqa: BLE001 - Redis down: heartbeats unknown
        return [PartHealth(s, "service", "unknown", 0, "Redis is down: heartbeats cannot be read") for s in expected]
    by_service: dict[str, list[dict[str, str]]] = {}
    for hb in beats:
        by_service.setdefault(hb["service"], []).append(hb)
    out = []
    for name in list(expected) + sorted(set(by_service) - set(expected)):
        hbs = by_service.get(name, [])
        if not hbs:
            out.append(PartHealth(name, "service", "down", 0, "no heartbeat"))
            continue
        states = [h.get("status", "unknown") for h in hbs]
        state = "up" if all(s == "running" for s in states) else (
            "degraded" if any(s in ("running", "degraded", "starting") for s in states) else "down")
        details = [h.get("detail", "") for h in hbs if h.get("detail")]
        if not details and "starting" in states:  # its first heartbeat, before its loop or server runs
            details = [f"{states.count('starting')} of {len(states)} instance(s) starting"]
        handled = sum(int(h.get("handled", "0")) for h in hbs)
        out.append(PartHealth(name, "service", state, len(hbs),
                              "; ".join(details) or f"handled={handled} lag={_lag(hbs)}{_dwell(hbs)}"))
    return out


def _dwell(hbs: list[dict[str, str]]) -> str:
    """The slowest instance's p99 dwell (poll -> outputs sent), when its events are flowing."""
    worst = max((float(h.get("dwell_p99_ms", "0") or 0) for h in hbs), default=0.0)
    return f" dwell_p99={worst:.1f}ms" if worst > 0 else ""


def _lag(hbs: list[dict[str, str]]) -> str:
    lags = [int(h.get("lag", "-1")) for h in hbs if int(h.get("lag", "-1")) >= 0]
    return str(sum(lags)) if lags else "-"
