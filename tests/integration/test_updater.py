"""The updater end to end on real parts: Triton, the front door, Kafka and Redis.

A worse version's canary is rolled back automatically and a better one is promoted, while a client keeps
calling the front door and no request fails; a version whose signature fails is refused with an alert.
(The robustness gate is tested on its own; here validated events are published directly, so a version the
gate would reject can still exercise the updater's own regression checks.)
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

import grpc
import pytest

from bulwark.api.v1 import admin_pb2, admin_pb2_grpc, inference_pb2, inference_pb2_grpc
from bulwark.bus.reader import read_topic
from bulwark.events import Envelope
from bulwark.redis_client import make_redis
from bulwark.redis_keys import RedisKeys
from bulwark.reference import ReferenceGenerator
from bulwark.registry import ModelRegistry
from bulwark.testing.services import ServiceProcess, collect
from bulwark.testing.stack import TestStack, topic_env
from tests.integration.helpers import clean_events, publish, train_version
from tests.integration.test_inference import features

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class Platform:
    """Three trained versions (good, inverted, good), the front door and the updater."""

    def __init__(self, stack: TestStack, tmp: Path, logs: Path) -> None:
        self.stack = stack
        self.model = "upd-" + uuid.uuid4().hex[:6]
        self.topics = stack.topics(partitions=2)
        self.prefix = "up" + uuid.uuid4().hex[:8]
        self.home = tmp / "home"
        self.settings = stack.settings(triton=True, redis_prefix=self.prefix, home=self.home, **self.topics)
        base = {**stack.env(triton=True), **topic_env(self.topics), "BULWARK_REDIS_PREFIX": self.prefix,
                "BULWARK_HOME": str(self.home)}
        self.good = train_version(stack, self.settings, model=self.model, seed=21, events=4000)
        # A worse version: trained on inverted labels, it disagrees with the live one almost always.
        inverted = clean_events(stack, self.settings, 3000, seed=22, labeled_fraction=1.0)
        for e in inverted:
            e.payload["is_fraud"] = not e.payload["is_fraud"]
        topics2 = stack.topics(partitions=2)
        s2 = stack.settings(triton=True, redis_prefix=self.prefix, home=self.home, **topics2)
        publish(s2, s2.topics.events_clean, inverted)
        self.worse = train_version(stack, s2, model=self.model, publish_events=False)
        self.better = train_version(stack, self.settings, model=self.model, publish_events=False, hidden=[64, 32])
        self.front = ServiceProcess("services.inference", "inference",
                                    {**base, "BULWARK_INFERENCE_PORT": "0", "BULWARK_INFERENCE_CACHE_TTL_S": "0"},
                                    logs).start()
        self.updater = ServiceProcess("services.updater", "updater", {
            **base, "BULWARK_UPDATER_PORT": "0", "BULWARK_UPDATER_SHADOW_S": "1", "BULWARK_UPDATER_CANARY_S": "3",
            "BULWARK_UPDATER_SHADOW_MIN_COMPARED": "10", "BULWARK_UPDATER_CANARY_MIN_REQUESTS": "10",
            "BULWARK_UPDATER_MIN_SIGNAL_REQUESTS": "10"}, logs).start()
        self.inference = inference_pb2_grpc.InferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{self._port(self.front)}"))
        self.admin = admin_pb2_grpc.ModelAdminStub(grpc.insecure_channel(f"127.0.0.1:{self._port(self.updater)}"))
        self.registry = ModelRegistry(make_redis(self.settings), RedisKeys(self.prefix))

    def _port(self, svc: ServiceProcess) -> int:
        return int(make_redis(self.settings).hget(RedisKeys(self.prefix).heartbeat(svc.service, svc.instance),
                                                  "x_grpc_port"))

    def validated(self, version: int) -> float:
        e = Envelope(type="model.validated", source="test", subject=self.model, payload={
            "model": self.model, "version": version, "passed": True, "reasons": ["test"],
            "report": {"path": "-", "digest": "-"}})
        publish(self.settings, self.settings.topics.models_validated, [e])
        return time.monotonic()

    def deployed(self, until, timeout_s: float = 90) -> list[dict]:  # noqa: ANN001
        events = collect(self.settings, self.settings.topics.models_deployed,
                         until=lambda ev: until([e.payload for e in ev]), timeout_s=timeout_s, idle_ms=300)
        return [e.payload for e in events]


class Load:
    """A steady client: many client keys, every failure kept."""

    def __init__(self, platform: Platform) -> None:
        self.p = platform
        self.errors: list[str] = []
        self.versions: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._payloads = [e.payload for e in ReferenceGenerator(seed=99).events(200)]

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            payload = self._payloads[i % len(self._payloads)]
            try:
                r = self.p.inference.Predict(inference_pb2.PredictRequest(
                    model=self.p.model, features=features(payload), client_key=f"client-{i % 97}",
                    request_id=f"{payload['transaction_id']}-{i}"), timeout=5)
                self.versions[r.version] = self.versions.get(r.version, 0) + 1
            except grpc.RpcError as exc:
                self.errors.append(f"{exc.code().name}: {exc.details()}")
            i += 1
            time.sleep(0.01)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def platform(stack: TestStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    p = Platform(stack, tmp_path_factory.mktemp("updater"), tmp_path_factory.mktemp("updater-logs"))
    yield p
    p.front.terminate()
    p.updater.terminate()


@pytest.fixture(autouse=True)
def _keep_module_services() -> Iterator[None]:
    from bulwark.testing import services

    started = list(services._STARTED)
    yield
    services._STARTED[:] = [s for s in services._STARTED if s not in started]


def test_first_version_goes_live_then_a_worse_canary_rolls_back_and_a_better_one_is_promoted(platform: Platform) -> None:
    p = platform
    p.validated(p.good.version)
    p.deployed(lambda ev: any(e["action"] == "promote" for e in ev))
    assert p.admin.GetStatus(admin_pb2.GetStatusRequest(model=p.model), timeout=5).live_version == p.good.version
    with Load(p) as load:
        time.sleep(1)
        p.validated(p.worse.version)
        events = p.deployed(lambda ev: any(e["action"] == "rollback" for e in ev))
        rollback = next(e for e in events if e["action"] == "rollback")
        assert rollback["version"] == p.worse.version and "agreement" in rollback["reason"]
        assert rollback["live_version"] == p.good.version and rollback["by"] == "updater"
        p.validated(p.better.version)
        events = p.deployed(lambda ev: any(e["action"] == "promote" and e["version"] == p.better.version for e in ev))
        time.sleep(1)
    actions = [(e["action"], e["version"]) for e in events]
    assert ("shadow", p.better.version) in actions and ("canary", p.better.version) in actions
    assert load.errors == []  # no failed request through the rollback and the promotion
    assert load.versions.get(p.better.version, 0) > 0
    reg = p.registry
    assert reg.get(p.model, p.worse.version)["state"] == "rejected"
    assert reg.get(p.model, p.better.version)["state"] == "live"
    assert reg.get(p.model, p.good.version)["state"] == "retired"


def test_admin_changes_need_a_reason_and_are_audited(platform: Platform) -> None:
    p = platform
    with pytest.raises(grpc.RpcError) as info:
        p.admin.Rollback(admin_pb2.ChangeRequest(model=p.model, reason=""), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "reason" in info.value.details()
    status = p.admin.Rollback(admin_pb2.ChangeRequest(model=p.model, reason="test: restore the previous version"),
                              timeout=30)
    assert status.live_version == p.good.version
    audit = [e.payload for _, e in read_topic(p.settings, p.settings.topics.audit) if e]
    assert any(a["action"] == "models.rollback" and a["reason"].startswith("test:") for a in audit)
    listed = p.admin.ListVersions(admin_pb2.ListVersionsRequest(model=p.model), timeout=10)
    assert {v.version for v in listed.versions} >= {p.good.version, p.worse.version, p.better.version}
    assert all(v.signature_ok for v in listed.versions)


def test_a_version_whose_signature_fails_is_refused_with_an_alert(platform: Platform, tmp_path: Path) -> None:
    p = platform
    bad = train_version(p.stack, p.settings, model=p.model, publish_events=False, seed=33)
    manifest = Path(p.registry.get(p.model, bad.version)["artifact"]) / "manifest.json"
    manifest.write_bytes(manifest.read_bytes().replace(b'"mlp"', b'"mlP"'))
    p.validated(bad.version)
    alerts = collect(p.settings, p.settings.topics.alerts,
                     until=lambda ev: any(e.payload["kind"] == "updater.refused" for e in ev), timeout_s=60)
    refused = next(e.payload for e in alerts if e.payload["kind"] == "updater.refused")
    assert str(bad.version) == refused["version"] and "signature" in refused["summary"]
    assert p.registry.get(p.model, bad.version)["state"] == "rejected"
