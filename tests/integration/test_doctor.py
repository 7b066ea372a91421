"""The doctor against real parts: stop a part (SIGKILL), and `diagnose` names it down and the probe names
the hop where its canary stopped, within 15 s; a configured delay reads as degraded; a restart reads as
healthy again with the backlog drained and nothing lost. Traces connect across hops and carry no personal
value.

The fast tests run the anonymizer and the trainer (the data chain); the slow ones run all seven services
with a live model in Triton and stop each service and each infrastructure part in turn.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pytest

from bulwark.doctor import Diagnosis, DoctorSettings, diagnose, trace_report
from bulwark.doctor.model import DOWN, UP
from bulwark.events.envelope import derived_id
from bulwark.reference import PERSONAL_FIELDS, ReferenceGenerator
from bulwark.testing.services import ServiceProcess, collect, distinct, settings_from_env
from bulwark.testing.stack import TestStack, topic_env
from tests.integration.helpers import publish

DATA_SERVICES = (("services.ingest_anonymizer", "ingest-anonymizer"), ("services.trainer", "trainer"))
DOCTOR = DoctorSettings(probe_timeout_s=5.0, check_timeout_s=1.0)
# Scenario timings gathered by the tests of this module, reported when the module's tests are done.
TIMINGS: dict[str, tuple[bool, float]] = {}


@pytest.fixture(scope="module", autouse=True)
def _report_timings(pytestconfig: pytest.Config) -> Iterator[None]:
    yield
    if TIMINGS:
        _say(pytestconfig, "\n".join(f"doctor-timing {name}: named={ok} seconds={s:.1f}"
                                     for name, (ok, s) in TIMINGS.items()))


def _say(config: pytest.Config, text: str) -> None:
    """Write to the terminal past pytest's output capture."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    if capture is None:
        reporter.write_line(text)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(text)


class Chain:
    """Service processes on one stack with their own topics, Redis prefix and trace files."""

    def __init__(self, stack: TestStack, logs: Path, home: Path, *, triton: bool = False, keep: bool = False) -> None:
        self.stack = stack
        self.keep = keep  # processes outlive each test (the per-test `kill_all`); the fixture stops them
        self.logs = logs
        self.env = {**stack.env(triton=triton), **topic_env(stack.topics()),
                    "BULWARK_REDIS_PREFIX": f"d{uuid.uuid4().hex[:8]}", "BULWARK_HOME": str(home),
                    "BULWARK_TRACES_SINK": "file", "BULWARK_TRACES_SAMPLE_RATIO": "1.0",
                    "BULWARK_TRAINER_MIN_LABELED": "1000000", "OTEL_METRIC_EXPORT_INTERVAL": "1000"}
        if not triton:
            # No Triton in this chain: point at a port nothing serves so no other stack's Triton answers.
            self.env["TRITON_HTTP_URL"] = self.env["TRITON_GRPC_URL"] = "127.0.0.1:9"
        self.procs: dict[str, ServiceProcess] = {}
        self.settings = settings_from_env(self.env)

    def start(self, module: str, service: str, *, extra: dict[str, str] | None = None,
              wait: bool = True) -> ServiceProcess:
        proc = ServiceProcess(module, service, {**self.env, **(extra or {})}, self.logs,
                              instance=f"{service}-{uuid.uuid4().hex[:4]}")
        self.procs[service] = proc
        proc.start(wait=wait, timeout_s=120)
        return proc.detach() if self.keep else proc

    def diagnose(self, *, probe: bool = True, services: tuple[str, ...], infra: tuple[str, ...]) -> Diagnosis:
        return diagnose(self.settings, doctor=DOCTOR, probe=probe, services=services, infrastructure=infra,
                        spans=False)




def until(check: Callable[[], Diagnosis | None], timeout_s: float) -> tuple[Diagnosis | None, float]:
    """Run `check` until it returns a diagnosis (not None) or the time is up; returns it and the seconds."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        found = check()
        if found is not None:
            return found, time.monotonic() - started
    return None, time.monotonic() - started


def named_down(chain: Chain, part: str, hop: str, services: tuple[str, ...], infra: tuple[str, ...],
               false_downs: set[str] | None = None):  # noqa: ANN201
    """A check for `until`: the diagnosis that names `part` down and the probe stopped at `hop`. A healthy
    part named down fails at once, or is added to `false_downs` when that is given (the table's column)."""
    def check() -> Diagnosis | None:
        d = chain.diagnose(services=services, infra=infra)
        healthy_named_down = [p for p in d.down if p != part]
        if false_downs is not None:
            false_downs.update(healthy_named_down)
        else:
            assert not healthy_named_down, f"healthy parts named down: {healthy_named_down}\n{d.to_dict()}"
        if part in d.down and d.probe is not None and d.probe.stopped_at == hop:
            return d
        time.sleep(0.2)
        return None
    return check


def healthy(chain: Chain, services: tuple[str, ...], infra: tuple[str, ...]) -> Callable[[], Diagnosis | None]:
    """A check for `until`: every part up and the probe through."""
    def check() -> Diagnosis | None:
        d = chain.diagnose(services=services, infra=infra)
        if d.healthy and not d.degraded:
            return d
        time.sleep(0.3)
        return None
    return check


@pytest.fixture
def data_chain(stack: TestStack, logs_dir: Path, tmp_path: Path) -> Iterator[Chain]:
    """The anonymizer and the trainer, running and seen healthy by the doctor."""
    chain = Chain(stack, logs_dir, tmp_path / "home")
    for module, service in DATA_SERVICES:
        chain.start(module, service)
    d, _ = until(healthy(chain, ("ingest-anonymizer", "trainer"), ("kafka", "redis")), 60)
    assert d is not None, "the data chain never read healthy"
    yield chain


# ----------------------------------------------------------------------------------------------- fast
@pytest.fixture(scope="class")
def shared_chain(stack: TestStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    """One data chain for the tests of a class (started once, stopped after the class)."""
    root = tmp_path_factory.mktemp("doctor-shared")
    chain = Chain(stack, root / "logs", root / "home", keep=True)
    try:
        for module, service in DATA_SERVICES:
            chain.start(module, service)
        d, _ = until(healthy(chain, ("ingest-anonymizer", "trainer"), ("kafka", "redis")), 60)
        assert d is not None, "the data chain never read healthy"
        yield chain
    finally:
        for proc in chain.procs.values():
            proc.kill()


class TestDataChain:
    """The fast tests share one data chain (started once for the class, stopped after it), in order: those
    that only read it, then those that stop a part and end by seeing it healthy again."""

    def test_doctor_healthy_chain_probe_sees_every_hop(self, shared_chain: Chain) -> None:
        d = shared_chain.diagnose(services=("ingest-anonymizer", "trainer"), infra=("kafka", "redis"))
        assert d.healthy and d.down == [], d.to_dict()
        assert [h.hop for h in d.probe.hops] == ["kafka", "redis", "ingest-anonymizer", "trainer"]
        assert all(h.seen for h in d.probe.hops)
        json.dumps(d.to_dict())  # plain data, for the CLI and the console

    def test_doctor_trace_follows_event_across_hops_without_personal_values(self, shared_chain: Chain) -> None:
        raw = list(ReferenceGenerator(seed=11).events(5))
        publish(shared_chain.settings, shared_chain.settings.topics.events_raw, raw)
        report = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            report = trace_report(shared_chain.settings, raw[0].id, doctor=DOCTOR)
            # Complete by the idempotence marks alone, and its spans exported (batched, a few seconds behind).
            if report.complete and report.trace_ids:
                break
            time.sleep(0.5)
        assert report is not None and report.complete, report
        assert [h.hop for h in report.hops] == ["producer", "ingest-anonymizer", "trainer"] or \
            [h.hop for h in report.hops][-2:] == ["ingest-anonymizer", "trainer"]
        assert len(report.trace_ids) == 1
        # The same trace, asked for by trace id.
        by_trace = trace_report(shared_chain.settings, report.trace_ids[0], doctor=DOCTOR)
        assert by_trace.last_hop == "trainer"
        # No exported span holds a personal value of the events it traced.
        exported = "".join(p.read_text() for p in (Path(shared_chain.env["BULWARK_HOME"]) / "traces").glob("*.jsonl"))
        assert exported
        personal = [str(e.payload[f]) for e in raw for f in PERSONAL_FIELDS if len(str(e.payload.get(f) or "")) >= 6]
        assert personal and not [v for v in personal if v in exported]

    def test_doctor_metrics_exported_locally(self, shared_chain: Chain) -> None:
        publish(shared_chain.settings, shared_chain.settings.topics.events_raw, ReferenceGenerator(seed=5).events(10))
        path = Path(shared_chain.env["BULWARK_HOME"]) / "metrics" / "ingest-anonymizer.jsonl"
        names: set[str] = set()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not {"bulwark.events.handled", "bulwark.event.duration"} <= names:
            if path.exists():
                for line in path.read_text().splitlines():
                    for rm in json.loads(line)["resourceMetrics"]:
                        for sm in rm["scopeMetrics"]:
                            names |= {m["name"] for m in sm["metrics"]}
            time.sleep(0.5)
        assert {"bulwark.events.handled", "bulwark.events.errors", "bulwark.consumer.lag",
                "bulwark.event.duration"} <= names, names

    def test_doctor_anonymizer_killed_named_down_then_restart_drains_backlog(self, shared_chain: Chain) -> None:
        services, infra = ("ingest-anonymizer", "trainer"), ("kafka", "redis")
        shared_chain.procs["ingest-anonymizer"].kill()
        d, took = until(named_down(shared_chain, "ingest-anonymizer", "ingest-anonymizer", services, infra), 15)
        TIMINGS["ingest-anonymizer (fast)"] = (d is not None, took)
        assert d is not None, f"anonymizer not named down within 15 s ({took:.1f}s)"
        assert d.part("trainer").state == UP
        # Events produced while it is down wait in the topic; after the restart all of them come out.
        raw = list(ReferenceGenerator(seed=7).events(40))
        publish(shared_chain.settings, shared_chain.settings.topics.events_raw, raw)
        shared_chain.start(*DATA_SERVICES[0])
        d, took = until(healthy(shared_chain, services, infra), 30)
        assert d is not None, "not healthy again after the restart"
        # Each comes out under the id the anonymizer derives from it (the topic also holds earlier tests').
        want = {derived_id(e.id, "ingest-anonymizer", "0") for e in raw}
        out = collect(shared_chain.settings, shared_chain.settings.topics.events_clean,
                      until=lambda evs: want <= set(distinct(evs)), timeout_s=30)
        assert want <= set(distinct(out)), f"{len(want - set(distinct(out)))} of 40 events missing"

    def test_doctor_redis_killed_named_down(self, stack: TestStack, shared_chain: Chain) -> None:
        """Redis is the one infrastructure part the fast tests stop (the session's broker stays up). Last in the
        class: it wipes Redis (no persistence), and the chain must read healthy again after it."""
        services, infra = ("ingest-anonymizer", "trainer"), ("kafka", "redis")
        stack.redis.kill()
        try:
            d, took = until(named_down(shared_chain, "redis", "redis", services, infra), 15)
            TIMINGS["redis (fast)"] = (d is not None, took)
            assert d is not None, f"Redis not named down within 15 s ({took:.1f}s)"
            assert all(d.part(s).state == "unknown" for s in services)
        finally:
            stack.redis.start()
        d, _ = until(healthy(shared_chain, services, infra), 30)
        assert d is not None, "not healthy again after Redis restarted"



@pytest.mark.slow
def test_doctor_delay_reads_degraded(data_chain: Chain) -> None:
    services, infra = ("ingest-anonymizer", "trainer"), ("kafka", "redis")
    # A baseline of healthy latency first: a few probes' worth of events.
    for i in range(8):
        publish(data_chain.settings, data_chain.settings.topics.events_raw, ReferenceGenerator(seed=30 + i).events(5))
        time.sleep(data_chain.settings.heartbeat_interval_s * 1.5)
    data_chain.procs["ingest-anonymizer"].terminate()
    data_chain.start(*DATA_SERVICES[0], extra={"BULWARK_FAULT_DELAY_MS": "1500"})

    last: list[Diagnosis] = []

    def degraded() -> Diagnosis | None:
        d = data_chain.diagnose(services=services, infra=infra)
        assert not d.down, d.to_dict()
        last[:] = [d]
        return d if "ingest-anonymizer" in d.degraded else None

    d, took = until(degraded, 30)
    assert d is not None, f"a 1.5 s delay per event never read as degraded: {last[0].part('ingest-anonymizer')}"
    assert "baseline" in d.part("ingest-anonymizer").detail
    assert d.part("trainer").state == UP


@pytest.mark.slow
def test_doctor_trace_of_a_stopped_chain_names_the_next_hop(data_chain: Chain) -> None:
    data_chain.procs["trainer"].kill()
    raw = list(ReferenceGenerator(seed=12).events(1))
    publish(data_chain.settings, data_chain.settings.topics.events_raw, raw)
    report = None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        report = trace_report(data_chain.settings, raw[0].id, doctor=DOCTOR)
        if report.last_hop == "ingest-anonymizer":
            break
        time.sleep(0.5)
    assert report is not None and report.last_hop == "ingest-anonymizer" and report.stopped_at == "trainer", report
    assert not report.complete


# ----------------------------------------------------------------------------------------------- slow
ALL = ("ingest-anonymizer", "trainer", "quantizer", "robustness-guard", "updater", "inference", "explainer")
INFRA = ("kafka", "redis", "triton")
MODULES = {"ingest-anonymizer": "services.ingest_anonymizer", "trainer": "services.trainer",
           "quantizer": "services.quantizer", "robustness-guard": "services.robustness_guard",
           "updater": "services.updater", "inference": "services.inference", "explainer": "services.explainer"}


@pytest.fixture(scope="module")
def full_chain(stack: TestStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    """All seven services with a live model in Triton, each on a free gRPC port."""
    from tests.integration.helpers import deploy, train_version

    root = tmp_path_factory.mktemp("doctor-full")
    chain = Chain(stack, root / "logs", root / "home", triton=True)
    for svc in ("updater", "inference", "explainer"):
        chain.env[f"BULWARK_{svc.upper()}_PORT"] = "0"
    model = f"m{uuid.uuid4().hex[:6]}"
    outcome = train_version(stack, chain.settings, model=model, events=1500, max_epochs=5)
    deploy(stack, chain.settings, model, [outcome.version], live=outcome.version)
    chain.model = model  # type: ignore[attr-defined]
    for svc in ALL:
        chain.start(MODULES[svc], svc)
    d, _ = until(healthy(chain, ALL, INFRA), 120)
    assert d is not None, "the full chain never read healthy"
    yield chain
    for proc in chain.procs.values():
        proc.kill()


def _restart_part(stack: TestStack, part: str, model: str) -> None:
    getattr(stack, part).start()
    if part == "triton":
        # Explicit model control: a restarted Triton serves nothing until the model is loaded again.
        from bulwark.triton.client import TritonClient

        TritonClient(stack.triton.spec.endpoints["grpc"]).load(model)


# Each row: the part stopped, and the hop where the probe must stop.
SCENARIOS = [(s, s) for s in ALL] + [("kafka", "kafka"), ("redis", "redis"), ("triton", "triton")]


@dataclass
class Scenario:
    """One row of the fault-injection table."""

    part: str
    named: bool = False
    seconds: float = 0.0
    false_downs: set[str] = field(default_factory=set)
    recovered: bool = False
    drained: bool = False
    note: str = ""

    @property
    def ok(self) -> bool:
        """Named in time, nothing healthy named down, healthy again, backlog drained."""
        return self.named and not self.false_downs and self.recovered and self.drained


def _run_scenario(stack: TestStack, chain: Chain, part: str, hop: str) -> Scenario:
    """SIGKILL `part`, time until the doctor names it down with the probe stopped at `hop`, restart it, and
    check the chain reads healthy again and the events produced meanwhile were all handled."""
    row = Scenario(part)
    raw = list(ReferenceGenerator(seed=sum(map(ord, part))).events(20))
    if part == "redis":
        # The session's redis-server runs without persistence; a production Redis keeps its data (AOF) over
        # a crash. Snapshot it now so the restart finds the registry and live state, as a persistent one would.
        from bulwark.redis_client import make_redis

        make_redis(chain.settings).save()
    if part in INFRA:
        getattr(stack, part).kill()
    else:
        chain.procs[part].kill()
    try:
        d, row.seconds = until(named_down(chain, part, hop, ALL, INFRA, row.false_downs), 15)
        row.named = d is not None
        if d is None:
            last = chain.diagnose(services=ALL, infra=INFRA)
            row.note = f"down={last.down} probe stopped at {last.probe.stopped_at if last.probe else None}"
        if part != "kafka":
            publish(chain.settings, chain.settings.topics.events_raw, raw)
    finally:
        if part in INFRA:
            _restart_part(stack, part, getattr(chain, "model", ""))
        else:
            chain.start(MODULES[part], part)
    if part == "kafka":
        publish(chain.settings, chain.settings.topics.events_raw, raw)
    d, took = until(healthy(chain, ALL, INFRA), 90)
    row.recovered = d is not None
    if d is None:
        last = chain.diagnose(services=ALL, infra=INFRA)
        row.note += f" not healthy: down={last.down} degraded={last.degraded} " \
                    f"probe={last.probe.stopped_at if last.probe else None}"
    # Nothing lost: every event produced during the outage was handled by the anonymizer after it.
    from bulwark.redis_client import make_redis
    from bulwark.redis_keys import RedisKeys

    client, keys = make_redis(chain.settings), RedisKeys(chain.settings.redis_prefix)
    ids = [e.id for e in raw]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        marks = client.mget([keys.idempotence("ingest-anonymizer", i) for i in ids])
        if all(m is not None for m in marks):
            row.drained = True
            break
        time.sleep(0.5)
    if not row.drained:
        row.note += f" {sum(m is None for m in marks)} of {len(ids)} events not handled"
    return row


def _table(rows: list[Scenario]) -> str:
    lines = ["| part stopped (SIGKILL) | named down, probe stopped there | seconds to name | healthy parts "
             "named down | healthy again, backlog drained |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.part} | {'y' if r.named else 'n'} | {r.seconds:.1f} | "
                     f"{', '.join(sorted(r.false_downs)) or 'none'} | {'y' if r.recovered and r.drained else 'n'}"
                     f"{' (' + r.note.strip() + ')' if r.note else ''} |")
    named = [r.seconds for r in rows if r.named]
    lines.append(f"\n{sum(r.named for r in rows)} of {len(rows)} named correctly; median time to name "
                 f"{statistics.median(named) if named else float('nan'):.1f} s (max {max(named, default=0):.1f} s); "
                 f"healthy parts named down: {sum(len(r.false_downs) for r in rows)}")
    return "\n".join(lines)


@pytest.mark.slow
@pytest.mark.timeout(1200)  # the full chain's start (a training run, seven services) and ten scenarios
def test_doctor_each_part_killed_named_down_and_recovers(stack: TestStack, full_chain: Chain,
                                                          pytestconfig: pytest.Config) -> None:
    """The ten scenarios in turn on one running stack; the table goes to the terminal and to
    `$BULWARK_DOCTOR_SCENARIOS_OUT` (Markdown) when set."""
    rows = [_run_scenario(stack, full_chain, part, hop) for part, hop in SCENARIOS]
    table = _table(rows)
    out = os.environ.get("BULWARK_DOCTOR_SCENARIOS_OUT")
    if out:
        Path(out).write_text(table + "\n")
    _say(pytestconfig, "\n" + table)
    for r in rows:
        TIMINGS[r.part] = (r.named, r.seconds)
    assert all(r.ok for r in rows), table
    assert statistics.median(r.seconds for r in rows) < 10, table
    # The probe's canary predictions were traced through the front door: the guard, the cache and Triton are
    # spans of the same trace as the gRPC server span.
    from bulwark.doctor.traces import read_spans

    spans = [s for s in read_spans(full_chain.settings, DOCTOR) if s["service"] == "inference"]
    by_trace: dict[str, set[str]] = {}
    for s in spans:
        by_trace.setdefault(s["trace_id"], set()).add(s["name"])
    assert any({"guard before", "cache lookup", "triton infer"} <= names and any("Predict" in n for n in names)
               for names in by_trace.values()), sorted({s["name"] for s in spans})


@pytest.mark.slow
def test_doctor_partitioned_group_member_degrades_not_down(data_chain: Chain) -> None:
    """One of two anonymizer instances frozen (SIGSTOP: no heartbeats to Redis or the group): the instance is
    down, the service degraded, and the probe still goes through on the other member."""
    services, infra = ("ingest-anonymizer", "trainer"), ("kafka", "redis")
    frozen = data_chain.procs["ingest-anonymizer"]
    data_chain.start(*DATA_SERVICES[0])
    assert frozen.proc is not None
    frozen.proc.send_signal(signal.SIGSTOP)
    try:
        def split() -> Diagnosis | None:
            d = data_chain.diagnose(services=services, infra=infra)
            part = d.part("ingest-anonymizer")
            if part.state == "degraded" and any(i.state == DOWN for i in part.instances) and d.probe.ok:
                return d
            time.sleep(0.3)
            return None

        d, took = until(split, 30)
        TIMINGS["partitioned member"] = (d is not None, took)
        assert d is not None, "a frozen group member never read as one instance down, service degraded"
    finally:
        frozen.proc.send_signal(signal.SIGCONT)
    d, _ = until(healthy(data_chain, services, infra), 30)
    assert d is not None


@pytest.mark.slow
def test_doctor_full_broker_restart_reads_healthy_with_nothing_lost(stack: TestStack, data_chain: Chain) -> None:
    """A graceful stop and start of the whole broker (S3 storage) with the data chain running: the doctor
    names only the broker down while it is stopped; after the start it reads healthy again and every event
    produced before and after the restart comes out of the anonymizer once."""
    services, infra = ("ingest-anonymizer", "trainer"), ("kafka", "redis")
    before = list(ReferenceGenerator(seed=41).events(30))
    publish(data_chain.settings, data_chain.settings.topics.events_raw, before)
    stack.kafka.stop()
    try:
        d = data_chain.diagnose(services=services, infra=infra)
        assert d.down == ["kafka"] and d.probe is not None and d.probe.stopped_at == "kafka", d.to_dict()
    finally:
        stack.kafka.start()
    after = list(ReferenceGenerator(seed=42).events(30))
    publish(data_chain.settings, data_chain.settings.topics.events_raw, after)
    d, took = until(healthy(data_chain, services, infra), 60)
    TIMINGS["broker restart (to healthy again)"] = (d is not None, took)
    assert d is not None, "not healthy again after the broker restart"
    out = collect(data_chain.settings, data_chain.settings.topics.events_clean,
                  until=lambda evs: len([e for e in distinct(evs).values() if e.type != "doctor.canary"]) >= 60,
                  timeout_s=60)
    assert len([e for e in distinct(out).values() if e.type != "doctor.canary"]) == 60


def test_status_says_a_service_is_starting_until_its_first_running_heartbeat(stack: TestStack) -> None:
    from bulwark.health import Heartbeat, ServiceStats
    from bulwark.redis_client import make_redis
    from bulwark.redis_keys import RedisKeys
    from bulwark.stack.health import services

    prefix = "st" + uuid.uuid4().hex[:8]
    settings = stack.settings(redis_prefix=prefix)
    stats = ServiceStats()  # a fresh process: "starting" until its loop or server runs
    beat = Heartbeat(make_redis(settings), RedisKeys(prefix), "explainer", "explainer-1", stats,
                     interval_s=60, ttl_s=60)
    beat.beat()
    [part] = services(settings, expected=("explainer",))
    assert (part.state, part.detail) == ("degraded", "1 of 1 instance(s) starting")
    stats.status = "running"
    beat.beat()
    [part] = services(settings, expected=("explainer",))
    assert part.state == "up" and part.detail == "handled=0 lag=-"


def test_heartbeat_detail_describes_the_same_beats_probe(stack: TestStack) -> None:
    # The front door's probe sets the detail ("Triton ... is not ready") and clears it when Triton is back:
    # each beat must carry the detail of its own probe, not the one before.
    from bulwark.health import Heartbeat, ServiceStats
    from bulwark.redis_client import make_redis
    from bulwark.redis_keys import RedisKeys
    from bulwark.stack.health import services

    prefix = "hb" + uuid.uuid4().hex[:8]
    settings = stack.settings(redis_prefix=prefix)
    stats, ready = ServiceStats(), [False]

    def probe() -> str:
        stats.detail = "" if ready[0] else "Triton is not ready"
        return "running" if ready[0] else "degraded"

    beat = Heartbeat(make_redis(settings), RedisKeys(prefix), "inference", "inference-1", stats,
                     interval_s=60, ttl_s=60, probe=probe)
    beat.beat()
    [part] = services(settings, expected=("inference",))
    assert (part.state, part.detail) == ("degraded", "Triton is not ready")
    ready[0] = True
    beat.beat()
    [part] = services(settings, expected=("inference",))
    assert (part.state, part.detail) == ("up", "handled=0 lag=-")
