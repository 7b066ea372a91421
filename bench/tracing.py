"""Tracing overhead: the anonymizer's end-to-end throughput with tracing off and on, in one run.

Each run pre-fills a private raw topic, starts the real service (`python -m services.ingest_anonymizer`),
and times it from its first clean record to its last by the records' CreateTimes, as bench/anonymizer.py
does. Three settings, interleaved (off, on, full, off, on, full, ...) so drift on a shared machine hits all
alike; each round's runs are compared with that round's `off` run, and the overhead printed is the median
over rounds (with the range beside it), since a single pair on two shared cores can move by 15 points:

- off: no span recorded (`BULWARK_TRACES_SINK=none`, sample ratio 0), the baseline;
- on: the default, parent-based 10% sampling, spans exported OTLP-encoded to the `otlp_spans` topic, gRPC
  and Redis instrumentations on (as every service runs them);
- full: every event traced and exported (ratio 1.0), the worst case.

Target (issue 10): overhead of tracing on < 10% of the off throughput.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from _common import Row, progress, save
from _models import clean_stamps
from anonymizer import SERVICE, Wiring, _produce_all
from bulwark.redis_client import make_redis
from bulwark.redis_keys import RedisKeys
from bulwark.reference import ReferenceGenerator
from bulwark.testing.stack import TestStack

MODES = {
    "off": {"BULWARK_TRACES_SINK": "none", "BULWARK_TRACES_SAMPLE_RATIO": "0"},
    "on": {"BULWARK_TRACES_SINK": "kafka", "BULWARK_TRACES_SAMPLE_RATIO": "0.1"},
    "full": {"BULWARK_TRACES_SINK": "kafka", "BULWARK_TRACES_SAMPLE_RATIO": "1.0"},
}


def run(stack: TestStack, events: list, mode: str) -> float:
    """End-to-end events/s of one service process under `mode`."""
    w = Wiring(stack, mode)
    w.env.update(MODES[mode])
    _produce_all(w.settings, w.raw, events)
    svc = w.anonymizer()
    client = make_redis(w.settings)
    n = len(events)
    try:
        svc.start()
        key = RedisKeys(w.prefix).heartbeat(SERVICE, svc.instance)
        deadline = time.monotonic() + 120 + n / 200
        while sum(int(v or 0) for v in client.hmget(key, "handled", "dead_lettered")) < n:
            if time.monotonic() > deadline or not svc.alive:
                raise RuntimeError(f"the anonymizer did not finish ({mode}):\n{svc.tail()}")
            time.sleep(0.5)
    finally:
        if svc.alive:
            svc.terminate()
    times = clean_stamps(w.settings, w.clean, n, mode)
    return (len(times) - 1) / ((times[-1] - times[0]) / 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000, help="events per run")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each mode, interleaved")
    parser.add_argument("--quick", action="store_true", help="small numbers, for a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.events, args.rounds = 3_000, 1
    events = list(ReferenceGenerator(seed=42).events(args.events))
    rates: dict[str, list[float]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        stack = TestStack(Path(tmp))
        try:
            stack.settings(redis_prefix="t" + uuid.uuid4().hex[:8])
            for r in range(args.rounds):
                for mode in MODES:
                    progress(f"round {r + 1}/{args.rounds}: tracing {mode}, {args.events} events")
                    rates[mode].append(run(stack, events, mode))
                    progress(f"  {rates[mode][-1]:,.0f} events/s")
        finally:
            stack.stop()
    median = {m: statistics.median(v) for m, v in rates.items()}
    pairs = {m: sorted(100 * (1 - a / b) for a, b in zip(rates[m], rates["off"])) for m in ("on", "full")}
    overhead = {m: statistics.median(v) for m, v in pairs.items()}
    spread = {m: f"tracing off, same round; rounds {v[0]:.1f} to {v[-1]:.1f}" for m, v in pairs.items()}
    rows = [
        Row("tracing", "anonymizer end to end, tracing off (median)", median["off"], "events/s", "baseline"),
        Row("tracing", "anonymizer end to end, tracing on (10% sampled, median)", median["on"], "events/s"),
        Row("tracing", "overhead, tracing on (median of rounds)", overhead["on"], "%", spread["on"], "< 10%",
            overhead["on"] < 10),
        Row("tracing", "anonymizer end to end, every event traced (median)", median["full"], "events/s"),
        Row("tracing", "overhead, every event traced (median of rounds)", overhead["full"], "%",
            spread["full"], "for information"),
    ]
    save("tracing", rows, {"events": args.events, "rounds": args.rounds, "rates": rates, "modes": MODES})


if __name__ == "__main__":
    main()
