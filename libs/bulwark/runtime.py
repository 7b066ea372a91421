"""What every service process does around its own logic: settings, logs, tracing, Redis, heartbeat,
topics, signals; then it runs a consumer loop, a gRPC server, or both, until SIGTERM.

A service's `__main__` reads its settings, builds its handler or servicer, and hands them to
`ServiceRuntime.run()`; nothing else differs between services.
"""

from __future__ import annotations

import gc
import logging
import signal
import sys
import threading
from typing import Callable, NoReturn

from bulwark.bus.admin import ensure_topics
from bulwark.bus.loop import BusSettings, ConsumerLoop, FaultSettings, Handler
from bulwark.crypto import FieldCipher, load_ring
from bulwark.crypto.keys import RING_DLQ
from bulwark.errors import BulwarkError
from bulwark.events import EventTypeRegistry
from bulwark.health import Heartbeat, ServiceStats
from bulwark.logs import setup_logging
from bulwark.redis_client import make_redis
from bulwark.redis_keys import RedisKeys
from bulwark.settings import CommonSettings, load_settings
from bulwark.meters import MeteredStats, setup_metrics
from bulwark.tracing import instrument_libraries, setup_tracing

log = logging.getLogger(__name__)


class ServiceRuntime:
    """Shared plumbing of one service process."""

    def __init__(self, name: str, settings: CommonSettings, *, registry: EventTypeRegistry | None = None) -> None:
        self.name = name
        self.settings = settings
        setup_logging(settings.log_level, service=name)
        self.tracer_provider = setup_tracing(name, settings)
        instrument_libraries()
        self.redis = make_redis(settings)
        self.keys = RedisKeys(settings.redis_prefix)
        self.stats: ServiceStats = MeteredStats()
        self.meter_provider = setup_metrics(name, settings, self.stats)
        self.registry = registry or EventTypeRegistry.default()
        self._stop = threading.Event()
        self._heartbeat: Heartbeat | None = None
        self._health_probe: Callable[[], str] | None = None

    def set_health_probe(self, probe: Callable[[], str]) -> None:
        """A function returning "running", "degraded" or "down" that the heartbeat reports."""
        self._health_probe = probe

    def consumer_loop(self, handler: Handler) -> ConsumerLoop:
        """A consumer loop for `handler`, with this process's settings, keys and stats."""
        return ConsumerLoop(
            handler, self.settings, self.redis, registry=self.registry,
            dlq_cipher=FieldCipher(load_ring(RING_DLQ, self.settings.keys_path)),
            bus=load_settings(BusSettings), faults=load_settings(FaultSettings), stats=self.stats,
        )

    def ensure_topics(self) -> None:
        """Create any of the platform's topics that are missing (idempotent)."""
        ensure_topics(self.settings)

    def run(self, *, loop: ConsumerLoop | None = None, server: object | None = None) -> None:
        """Run until SIGTERM/SIGINT: the consumer loop in this thread, the gRPC server beside it."""
        self._heartbeat = Heartbeat(self.redis, self.keys, self.name, self.settings.instance_id, self.stats,
                                    interval_s=self.settings.heartbeat_interval_s,
                                    ttl_s=self.settings.heartbeat_ttl_s, probe=self._health_probe).start()

        def _on_signal(*_: object) -> None:
            self._stop.set()
            if loop is not None:
                loop.stop()

        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
        # What start-up built (modules, settings, clients, policies, models) lives as long as the process.
        # Frozen, it is out of the cycle collector's walks: a full collection on the anonymizer took 15-40 ms
        # with it, a pause in which no event moved (the paced latency bench's worst stalls). Reference
        # counting still frees frozen objects; only cycles among them would stay.
        gc.collect()
        gc.freeze()
        try:
            if server is not None:
                server.start()  # type: ignore[attr-defined]
                self.stats.status = "running"
            if loop is not None:
                loop.run()
            else:
                self._stop.wait()
        finally:
            if server is not None:
                server.stop(grace=5).wait()  # type: ignore[attr-defined]
            self._heartbeat.stop()
            self.tracer_provider.shutdown()
            self.meter_provider.shutdown()
            log.info("stopped service=%s", self.name)


def main_guard(fn: Callable[[], None]) -> Callable[[], NoReturn]:
    """Wrap a service `main()`: a startup `BulwarkError` prints its message and exits 2, no traceback."""

    def wrapper() -> NoReturn:
        try:
            fn()
        except BulwarkError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            sys.exit(2)
        sys.exit(0)

    return wrapper
