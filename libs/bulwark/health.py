"""Heartbeats: each service instance says, every few seconds, that it is alive and how it is doing.

A heartbeat is a Redis hash with a TTL (`<prefix>:hb:<service>:<instance>`): service, instance, pid,
status, the last event handled and when, counts, consumer lag, and the latency of its recent work. A
heartbeat that expired means the instance is down; `bulwark status` and `bulwark doctor` read them all.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Callable

import redis

from bulwark.redis_keys import RedisKeys
from bulwark.tracing import background_thread

log = logging.getLogger(__name__)

HISTORY_SAMPLES = 200
"""Latency samples kept per service (`RedisKeys.heartbeat_history`) for the doctor's baseline."""


@dataclass
class ServiceStats:
    """What an instance reports; updated by the consumer loop or the gRPC server, read by the heartbeat."""

    status: str = "starting"
    handled: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    retries: int = 0
    errors: int = 0
    last_event_id: str = ""
    last_event_at: float = 0.0
    last_poll_at: float = 0.0
    lag: int = -1
    latency_ms_ewma: float = 0.0
    dwell_p50_ms: float = 0.0
    """Median time an event spent in this instance, from the poll that returned it to its outputs being
    handed to the producer (its own work and the batch ahead of it), over the last 10 s (`DwellWindow`)."""
    dwell_p99_ms: float = 0.0
    """99th percentile of the same."""
    detail: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def observe_latency(self, ms: float) -> None:
        """Fold one latency sample into the moving average."""
        self.latency_ms_ewma = ms if self.latency_ms_ewma == 0 else 0.9 * self.latency_ms_ewma + 0.1 * ms


class DwellWindow:
    """Per-event dwell times of the last `span_s` seconds (at most the last `max_events`); percentiles
    refreshed into `ServiceStats` at most once a second, so the per-event cost is one append."""

    def __init__(self, stats: ServiceStats, span_s: float = 10.0, refresh_s: float = 1.0,
                 max_events: int = 8192) -> None:
        self._stats = stats
        self.span_s = span_s
        self._refresh_s = refresh_s
        self._samples: deque[tuple[float, float]] = deque(maxlen=max_events)
        self._refreshed = 0.0

    def add(self, now: float, ms: float) -> None:
        """One event left the instance at `now` (a monotonic clock) after `ms` inside it."""
        self._samples.append((now, ms))

    def refresh(self, now: float) -> None:
        """Drop samples older than the span and, once a second, publish p50 and p99."""
        if now - self._refreshed < self._refresh_s:
            return
        self._refreshed = now
        while self._samples and self._samples[0][0] < now - self.span_s:
            self._samples.popleft()
        if self._samples:
            ms = sorted(m for _, m in self._samples)
            self._stats.dwell_p50_ms = round(ms[len(ms) // 2], 3)
            self._stats.dwell_p99_ms = round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 3)


class Heartbeat:
    """Writes `stats` to Redis every `interval_s` with a TTL, on a daemon thread."""

    def __init__(self, client: redis.Redis, keys: RedisKeys, service: str, instance: str, stats: ServiceStats,
                 *, interval_s: float, ttl_s: float, probe: Callable[[], str] | None = None) -> None:
        self._redis = client
        self._key = keys.heartbeat(service, instance)
        self._service = service
        self._instance = instance
        self._stats = stats
        self._interval = interval_s
        self._ttl_ms = int(ttl_s * 1000)
        self._probe = probe
        self._started = time.time()
        self._history = keys.heartbeat_history(service)
        self._instances = keys.heartbeat_instances(service)
        self._sampled_at = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=background_thread(self._run), name=f"heartbeat-{service}",
                                        daemon=True)

    def start(self) -> Heartbeat:
        """Begin beating (the first beat is written before this returns)."""
        self.beat()
        self._thread.start()
        return self

    def beat(self) -> None:
        """Write one heartbeat now; Redis being down is logged, never raised."""
        # The probe runs first: it may set the stats' detail, which must describe this beat's status.
        status, failed = None, ""
        if self._probe is not None:
            try:
                status = self._probe()
            except Exception as exc:  # a failing probe is itself the news
                status, failed = "degraded", f"health probe failed: {type(exc).__name__}"
        fields = {k: str(v) for k, v in asdict(self._stats).items() if k != "extra"}
        fields.update({f"x_{k}": v for k, v in self._stats.extra.items()})
        if status is not None:
            fields["status"] = status
        if failed:
            fields["detail"] = failed
        fields.update(service=self._service, instance=self._instance, pid=str(os.getpid()),
                      host=socket.gethostname(), started_at=str(self._started), at=str(time.time()))
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.hset(self._key, mapping=fields)
            pipe.pexpire(self._key, self._ttl_ms)
            # Which instances have beaten lately: an expired heartbeat not removed by `stop` is a crash.
            pipe.zadd(self._instances, {self._instance: float(fields["at"])})
            pipe.zremrangebyscore(self._instances, 0, float(fields["at"]) - 86_400)
            pipe.expire(self._instances, 86_400)
            if self._stats.last_event_at > self._sampled_at and self._stats.latency_ms_ewma > 0:
                # One latency sample per beat with new work: the doctor's per-service baseline.
                self._sampled_at = self._stats.last_event_at
                pipe.lpush(self._history, f"{self._stats.latency_ms_ewma:.3f}")
                pipe.ltrim(self._history, 0, HISTORY_SAMPLES - 1)
                pipe.expire(self._history, 86_400)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("heartbeat not written service=%s error=%s", self._service, type(exc).__name__)

    def stop(self, *, remove: bool = True) -> None:
        """Stop beating; remove the heartbeat so the instance shows as stopped, not crashed."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self._interval + 1)
        if remove:
            try:
                self._redis.delete(self._key)
                self._redis.zrem(self._instances, self._instance)
            except redis.RedisError:
                pass

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.beat()


def read_heartbeats(client: redis.Redis, keys: RedisKeys) -> list[dict[str, str]]:
    """Every live heartbeat as a dict of strings, with `age_s` added."""
    out = []
    now = time.time()
    for key in client.scan_iter(match=keys.heartbeat_pattern(), count=500):
        raw = client.hgetall(key)
        if not raw:
            continue
        hb = {k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v
              for k, v in raw.items()}
        hb["age_s"] = f"{now - float(hb.get('at', now)):.1f}"
        out.append(hb)
    return sorted(out, key=lambda h: (h.get("service", ""), h.get("instance", "")))
