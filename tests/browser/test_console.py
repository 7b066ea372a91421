"""The console in a real browser (headless Debian Chromium, Playwright) against real parts: the broker, Redis,
Triton, and the services as processes (front door, explainer, updater, guard, anonymizer, console).

One platform for the module: two versions of a model trained by the trainer's own pipeline, the first promoted
by the updater, the second in canary under a steady client. The tests then read the page as a person would.
Screenshots of each view go to tests/artifacts/console/ (ignored by git); with BULWARK_UPDATE_SCREENSHOTS=1
they replace the ones the docs show, docs/img/console-*.png.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import grpc
import pytest

from bulwark.api.v1 import admin_pb2, admin_pb2_grpc, explain_pb2, explain_pb2_grpc, inference_pb2, inference_pb2_grpc
from bulwark.auth import Credentials
from bulwark.bus.reader import read_topic
from bulwark.events import Envelope
from bulwark.redis_client import make_redis
from bulwark.redis_keys import RedisKeys
from bulwark.reference import DriftSpec, ReferenceGenerator
from bulwark.stack.parts import free_port
from bulwark.testing.services import ServiceProcess, collect
from bulwark.testing.stack import TestStack, topic_env
from tests.integration.helpers import publish, train_version
from tests.integration.test_inference import features

pytestmark = [pytest.mark.integration, pytest.mark.slow]
_ROOT = Path(__file__).resolve().parents[2]
# A test run never dirties the tree: the docs' pictures change only when asked.
IMG = _ROOT / "docs" / "img" if os.environ.get("BULWARK_UPDATE_SCREENSHOTS") == "1" else _ROOT / "tests" / "artifacts" / "console"
REFRESH_S = 1.0
HEARTBEAT_TTL_S = 3.0  # TestStack.env(): the doctor names a silent instance down by then at the latest


class Platform:
    """Two versions, the services as processes, a console, and tokens (an admin person, the console's reader)."""

    def __init__(self, stack: TestStack, tmp: Path, logs: Path) -> None:
        self.stack = stack
        self.model = "con-" + uuid.uuid4().hex[:6]
        self.topics = stack.topics(partitions=2)
        self.prefix = "co" + uuid.uuid4().hex[:8]
        self.home = tmp / "home"
        self.logs = logs
        self.settings = stack.settings(triton=True, redis_prefix=self.prefix, home=self.home, **self.topics)
        self.keys = RedisKeys(self.prefix)
        self.redis = make_redis(self.settings)
        creds = Credentials()
        self.admin_token = creds.add_token("alice", ["admin"])
        # The console reads ModelAdmin and ExplainService with its own token; changes carry the person's.
        self.console_token = creds.add_token("console", ["admin", "explain"])
        policy = tmp / "guard.yaml"
        policy.write_text("drift:\n  window: 50\n  psi_threshold: 0.25\n")
        self.base = {**stack.env(triton=True), **topic_env(self.topics), "BULWARK_REDIS_PREFIX": self.prefix,
                     "BULWARK_HOME": str(self.home), "BULWARK_TOKENS": creds.to_json(),
                     "BULWARK_GUARD_POLICY": str(policy)}
        self.v1 = train_version(stack, self.settings, model=self.model, seed=31, events=3000)
        self.v2 = train_version(stack, self.settings, model=self.model, publish_events=False, hidden=[64, 32])
        self.explainer_port, self.admin_port = free_port(), free_port()
        svc = {
            "front": ("services.inference", "inference", {"BULWARK_INFERENCE_PORT": "0",
                                                         "BULWARK_INFERENCE_CACHE_TTL_S": "0"}),
            "explainer": ("services.explainer", "explainer", {"BULWARK_EXPLAINER_PORT": str(self.explainer_port),
                                                             "BULWARK_EXPLAINER_SAMPLE_SHARE": "0"}),
            "updater": ("services.updater", "updater", {
                "BULWARK_UPDATER_PORT": str(self.admin_port), "BULWARK_AUTH_REQUIRED": "true",
                "BULWARK_UPDATER_SHADOW_S": "1", "BULWARK_UPDATER_CANARY_S": "3600",
                "BULWARK_UPDATER_SHADOW_MIN_COMPARED": "10", "BULWARK_UPDATER_CANARY_MIN_REQUESTS": "10",
                "BULWARK_UPDATER_MIN_SIGNAL_REQUESTS": "10",
                # The canary must last until the test acts: on a loaded machine p99 swings far (seen: 288 vs
                # 69 ms), and the updater's own bounds are tested in tests/integration/test_updater.py.
                "BULWARK_UPDATER_MAX_P99_RATIO": "1000", "BULWARK_UPDATER_MIN_AGREEMENT": "0.5"}),
            "guard": ("services.robustness_guard", "robustness-guard", {}),
            "anonymizer": ("services.ingest_anonymizer", "ingest-anonymizer", {}),
            "console": ("services.console", "console", {
                "BULWARK_CONSOLE_PORT": "0", "BULWARK_CONSOLE_REFRESH_S": str(REFRESH_S),
                "BULWARK_EXPLAINER_URL": f"127.0.0.1:{self.explainer_port}",
                "BULWARK_ADMIN_URL": f"127.0.0.1:{self.admin_port}", "BULWARK_CLIENT_TOKEN": self.console_token}),
        }
        self.procs: dict[str, ServiceProcess] = {}
        try:
            for name, (module, service, env) in svc.items():
                group = {"BULWARK_BUS_GROUP_ID": stack.group(service)}
                self.procs[name] = ServiceProcess(module, service, {**self.base, **group, **env}, logs).start(wait=False)
            for p in self.procs.values():
                p.wait_running(180)
        except Exception:
            self.close()
            raise
        self.front_channel = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port(self.procs['front'])}")
        self.inference = inference_pb2_grpc.InferenceServiceStub(self.front_channel)
        self.admin = admin_pb2_grpc.ModelAdminStub(grpc.insecure_channel(f"127.0.0.1:{self.admin_port}"))
        self.explain = explain_pb2_grpc.ExplainServiceStub(grpc.insecure_channel(f"127.0.0.1:{self.explainer_port}"))
        self.url = f"http://127.0.0.1:{self._hb(self.procs['console'], 'x_http_port')}/"

    def _hb(self, svc: ServiceProcess, field: str) -> str:
        return self.redis.hget(self.keys.heartbeat(svc.service, svc.instance), field).decode()

    def grpc_port(self, svc: ServiceProcess) -> int:
        """The gRPC port a service process bound."""
        return int(self._hb(svc, "x_grpc_port"))

    @property
    def md(self) -> list[tuple[str, str]]:
        """Call metadata with the admin person's token."""
        return [("authorization", f"Bearer {self.admin_token}")]

    def validated(self, version: int) -> None:
        """Publish the gate's verdict for a version (the gate itself is tested on its own)."""
        e = Envelope(type="model.validated", source="test", subject=self.model, payload={
            "model": self.model, "version": version, "passed": True, "reasons": ["test"],
            "report": {"path": "-", "digest": "-"}})
        publish(self.settings, self.settings.topics.models_validated, [e])

    def wait_status(self, until, timeout_s: float = 120) -> Any:  # noqa: ANN001
        """Poll ModelAdmin until `until(status)` holds."""
        deadline = time.monotonic() + timeout_s
        status = None
        while time.monotonic() < deadline:
            try:
                status = self.admin.GetStatus(admin_pb2.GetStatusRequest(model=self.model), timeout=5, metadata=self.md)
                if until(status):
                    return status
            except grpc.RpcError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"rollout never reached the expected state; last: {status}")

    def close(self) -> None:
        """Stop every process of the module."""
        for p in self.procs.values():
            p.kill()


class Load:
    """A steady client on drifted traffic (amounts x2.5), so the guard's windows see a shift."""

    def __init__(self, p: Platform) -> None:
        self.p = p
        self.errors = 0
        self.ok = 0
        self._stop = threading.Event()
        gen = ReferenceGenerator(seed=77, drift=DriftSpec(amount_factor=2.5, distance_factor=2.0))
        self._payloads = [e.payload for e in gen.events(300)]
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            payload = self._payloads[i % len(self._payloads)]
            try:
                self.p.inference.Predict(inference_pb2.PredictRequest(
                    model=self.p.model, features=features(payload), client_key=f"client-{i % 53}",
                    request_id=f"load-{i}"), timeout=5)
                self.ok += 1
            except grpc.RpcError:
                self.errors += 1
            i += 1
            time.sleep(0.02)

    def start(self) -> Load:
        """Begin calling."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop calling."""
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def platform(stack: TestStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """The module's platform, with v1 live and v2 in canary under load."""
    p = Platform(stack, tmp_path_factory.mktemp("console"), tmp_path_factory.mktemp("console-logs"))
    load = None
    try:
        p.validated(p.v1.version)
        p.wait_status(lambda s: s.live_version == p.v1.version)
        load = Load(p).start()
        p.validated(p.v2.version)
        p.wait_status(lambda s: s.rollout.stage == "canary" and s.rollout.candidate.requests >= 10, timeout_s=300)
        p.load = load  # type: ignore[attr-defined]
        yield p
    finally:
        if load is not None:
            load.stop()
        p.close()


@pytest.fixture(autouse=True)
def _keep_module_services() -> Iterator[None]:
    # The module's processes outlive each test (the session-wide orphan killer runs after every test).
    from bulwark.testing import services

    started = list(services._STARTED)
    yield
    services._STARTED[:] = [s for s in services._STARTED if s not in started]


class Page:
    """A browser page on the console, recording console errors and every request it makes."""

    def __init__(self, browser: Any, url: str) -> None:
        self.context = browser.new_context(viewport={"width": 1400, "height": 900})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.url = url

    def open(self, view: str) -> Any:
        """Go to a view and wait for its first data."""
        self.page.goto(self.url + "#" + view)
        self.wait("document.getElementById('updated').textContent.startsWith('updated')")
        return self.page

    def wait(self, expression: str, timeout_s: float = 30) -> None:
        """Poll until a JavaScript expression is true. Polled from here: Playwright's own wait_for_function
        evaluates strings, which the page's Content-Security-Policy (no 'unsafe-eval') rightly refuses."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.page.evaluate(f"() => Boolean({expression})"):
                return
            time.sleep(0.1)
        raise AssertionError(f"not true after {timeout_s}s: {expression}")

    def plot(self, element: str) -> Any:
        """The Plotly traces of a chart, as the page holds them."""
        return self.page.evaluate(f"() => (document.getElementById({element!r}).data || []).map(t => "
                                  "({x: t.x, y: t.y, customdata: t.customdata, name: t.name}))")

    def shot(self, name: str) -> None:
        """Save a screenshot of the whole page as console-<name>.png under IMG."""
        IMG.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(IMG / f"console-{name}.png"), full_page=True)

    def close(self) -> None:
        """Close the page's context."""
        self.context.close()


@pytest.fixture
def page(browser: Any, platform: Platform) -> Iterator[Page]:
    """A fresh page on the console."""
    p = Page(browser, platform.url)
    yield p
    p.close()


def _part_state(page: Page, part: str) -> str:
    return page.page.evaluate(f"() => document.querySelector('#parts-table tr[data-part=\"{part}\"] td.state')"
                              "?.textContent || ''")


def test_chain_page_loads_with_no_console_errors_and_asks_nothing_outside(platform: Platform, page: Page) -> None:
    page.open("chain")
    page.wait("document.querySelector('#parts-table tr[data-part=\"updater\"]') !== null")
    [nodes] = page.plot("chain-plot")
    states = {c[0]: c[1] for c in nodes["customdata"]}
    for part in ("kafka", "redis", "triton", "inference", "explainer", "updater", "ingest-anonymizer", "console"):
        assert states[part] == "up", (part, states)
    assert states["trainer"] == "down"  # not started in this module: no heartbeat
    time.sleep(2.5 * REFRESH_S)  # a few live refreshes, for the rates on the arrows
    page.shot("chain")
    assert page.errors == []
    origin = platform.url.rstrip("/")
    assert page.requests and all(u.startswith(origin) for u in page.requests), set(page.requests)


def test_event_lookup_shows_the_doctors_hops_and_where_it_stopped(platform: Platform, page: Page) -> None:
    from bulwark.doctor import trace_report
    from bulwark.events import derived_id

    [event] = list(ReferenceGenerator(seed=5150).events(1))
    publish(platform.settings, platform.settings.topics.events_raw, [event])
    # The anonymizer marks the raw id; the updater (labels) marks the clean id derived from it.
    marks = [platform.keys.idempotence("ingest-anonymizer", event.id),
             platform.keys.idempotence("updater", derived_id(event.id, "ingest-anonymizer", "0"))]
    deadline = time.monotonic() + 60
    while not all(platform.redis.get(m) for m in marks) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert platform.redis.get(marks[0]) is not None, platform.procs["anonymizer"].tail()
    page.open("trace")
    page.page.fill("#trace-id", event.id)
    page.page.click("#trace-form button")
    page.page.wait_for_selector("#trace-table tr[data-hop='ingest-anonymizer']", timeout=60_000)
    expected = trace_report(platform.settings, event.id)
    rows = page.page.eval_on_selector_all("#trace-table tbody tr", "rs => rs.map(r => [r.dataset.hop, "
                                          "r.children[1].textContent, r.className])")
    assert rows == [[h.hop, "yes" if h.seen else "NO", "stopped" if h.hop == expected.stopped_at else ""]
                    for h in expected.hops]
    assert rows[0][:2] == ["ingest-anonymizer", "yes"]
    assert page.page.text_content("#trace-detail") == expected.detail
    assert "idempotence mark" in page.page.text_content("#trace-table tr[data-hop='ingest-anonymizer']")
    body = page.page.text_content("body")
    for personal in ("customer_id", "name", "email", "card_number"):
        value = str(event.payload.get(personal) or "")
        assert len(value) < 6 or value not in body  # only pseudonymous ids reach the page
    page.shot("trace")


def test_killed_service_shows_down_within_the_doctors_time_and_recovers(platform: Platform, page: Page) -> None:
    page.open("chain")
    page.wait("document.querySelector('#parts-table tr[data-part=\"ingest-anonymizer\"]') !== null")
    assert _part_state(page, "ingest-anonymizer") == "up"
    old = platform.procs["anonymizer"]
    old.kill()
    killed = time.monotonic()
    page.wait("document.querySelector('#parts-table tr[data-part=\"ingest-anonymizer\"] td.state')"
                                ".textContent === 'down'", 30)
    took = time.monotonic() - killed
    assert took <= HEARTBEAT_TTL_S + 2 * REFRESH_S + 1.5, took
    assert "ingest-anonymizer" in page.page.text_content("#chain-verdict")
    page.shot("chain-down")
    new = ServiceProcess(old.module, old.service, {k: v for k, v in old.env.items() if k != "BULWARK_INSTANCE_ID"},
                         platform.logs).start()
    platform.procs["anonymizer"] = new
    page.wait("document.querySelector('#parts-table tr[data-part=\"ingest-anonymizer\"] td.state')"
                                ".textContent === 'up'", 60)


def test_models_view_shows_canary_against_live_and_a_rollback_as_it_happens(platform: Platform, page: Page) -> None:
    p = platform
    page.open("models")
    page.wait("document.getElementById('rollout-stage')?.textContent === 'canary'")
    assert page.page.text_content("#candidate-version") == f"v{p.v2.version}"
    bars = page.plot("signals-plot")
    assert [b["name"] for b in bars] == [f"canary v{p.v2.version}", f"live v{p.v1.version}"]
    rows = page.page.eval_on_selector_all("#versions-table tbody tr", "rs => rs.map(r => [r.dataset.version, "
                                          "r.querySelector('.vstate').textContent, r.lastElementChild.textContent])")
    assert sorted(rows) == sorted([[str(p.v1.version), "live", "ok"], [str(p.v2.version), "canary", "ok"]])
    time.sleep(2 * REFRESH_S)  # a few points on the signals-over-time chart
    page.shot("models")
    # Read-only without a credential: the buttons stay disabled, and the API refuses a change.
    assert page.page.is_disabled("button[data-action='pause']")
    refused = page.page.evaluate(f"async () => (await fetch('/api/models/{p.model}/pause', {{method: 'POST', "
                                 "headers: {'Content-Type': 'application/json'}, body: JSON.stringify({reason: 'x y z'})}))"
                                 ".status")
    assert refused == 401
    deadline = time.monotonic() + 10
    while not page.errors and time.monotonic() < deadline:
        page.page.wait_for_timeout(100)
    assert page.errors and "401" in page.errors.pop()  # the browser logs the refused call just made: expected, not a fault
    # Pause through the page with the admin token; it asks for a reason.
    page.page.fill("#admin-token", p.admin_token)
    page.page.click("button[data-action='pause']")
    assert page.page.is_visible("#reason-form")
    page.page.fill("#reason", "console test: hold the canary")
    page.page.click("#reason-submit")
    page.wait("document.getElementById('rollout-stage')?.textContent === 'paused'")
    assert "alice" in page.page.text_content("#admin-result")
    # A rollback made elsewhere (the CLI's path) shows on the open page by its own refresh.
    p.admin.Rollback(admin_pb2.ChangeRequest(model=p.model, reason="console test: roll back"), timeout=30,
                     metadata=p.md)
    page.page.wait_for_selector("#changes-table tr[data-action='rollback']", timeout=20_000)
    page.wait("document.getElementById('rollout-stage')?.textContent === 'none'")
    assert page.page.text_content("#live-version") == f"v{p.v1.version}"
    row = page.page.text_content("#changes-table tr[data-action='rollback']")
    assert "alice" in row and "console test: roll back" in row
    # The console reads the registry, then the rollout, in two Redis calls: one answer can hold the registry
    # from just before the rollback and the rollout from just after it (stage none, v2 still canary).
    page.wait(f"document.querySelector(\"#versions-table tr[data-version='{p.v2.version}'] .vstate\")"
              "?.textContent === 'rejected'", timeout_s=3 * REFRESH_S + 5)
    deployed = [e.payload for _, e in read_topic(p.settings, p.settings.topics.models_deployed) if e]
    assert any(d["action"] == "pause" and d["by"] == "alice" for d in deployed)
    page.shot("models-rolled-back")
    assert page.errors == []


def test_explanation_chart_matches_the_explainers_numbers(platform: Platform, page: Page) -> None:
    p = platform
    rid = "known-" + uuid.uuid4().hex[:8]
    payload = next(iter(ReferenceGenerator(seed=909).events(1))).payload
    p.inference.Predict(inference_pb2.PredictRequest(model=p.model, features=features(payload), client_key="k-1",
                                                     request_id=rid), timeout=10)
    deadline = time.monotonic() + 60
    truth = None
    while truth is None and time.monotonic() < deadline:
        try:
            truth = p.explain.Explain(explain_pb2.ExplainRequest(model=p.model, request_id=rid), timeout=30)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND, exc.details()
            time.sleep(0.3)
    assert truth is not None, "the explainer never kept the logged request"
    page.open("explain")
    page.page.select_option("#explain-model", p.model)
    page.page.fill("#explain-id", rid)
    page.page.click("#explain-form button")
    page.wait("(document.getElementById('explain-plot').data || []).length === 1")
    [bars] = page.plot("explain-plot")
    shown = dict(zip(bars["y"], bars["x"]))
    expected = {a.feature: a.value for a in truth.attributions}
    assert set(shown) == set(expected)
    for feature, value in expected.items():
        assert shown[feature] == pytest.approx(value, rel=1e-6, abs=1e-9)
    assert f"v{truth.version}" in page.page.text_content("#explain-detail")
    page.shot("explain")
    assert page.errors == []


def test_drift_per_feature_with_threshold_and_alerts_timeline(platform: Platform, page: Page) -> None:
    p = platform
    # The drifted load closes windows of 50 records; the guard alerts on the ones past the threshold.
    live = str(p.v1.version)  # the view shows the live version's windows

    def drifted(e: Envelope) -> bool:
        return e.payload["kind"] == "drift.detected" and e.payload["version"] == live

    alerts = collect(p.settings, p.settings.topics.alerts, until=lambda ev: any(map(drifted, ev)), timeout_s=120)
    drift = next(e.payload for e in alerts if drifted(e))
    page.open("drift")
    page.page.select_option("#drift-model", p.model)
    page.wait("(document.getElementById('drift-windows-plot').data || []).length > 0")
    lines = {t["name"]: t for t in page.plot("drift-windows-plot")}
    window = f"w{drift['evidence']['window']}"
    for feature, value in drift["evidence"]["psi"].items():
        i = lines[feature]["x"].index(window)
        assert lines[feature]["y"][i] == pytest.approx(value, abs=1e-4)
    threshold = page.page.evaluate("() => document.getElementById('drift-current-plot').layout.shapes[0].y0")
    assert threshold == 0.25
    page.shot("drift")
    page.open("alerts")
    page.page.wait_for_selector("#alerts-table tr[data-kind='drift.detected']")
    [points] = page.plot("alerts-plot")
    assert "robustness-guard" in points["y"]
    page.shot("alerts")
    assert page.errors == []
