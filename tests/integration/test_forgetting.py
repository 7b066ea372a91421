"""Forgetting reaches the models, end to end on the local stack: `bulwark forget` a subject, and the
trainer, quantizer, gate and updater (all real service processes) replace every version trained on it,
deploy the replacement in Triton, and purge the old versions and their artifacts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import grpc
import pytest

from bulwark.api.v1 import admin_pb2, admin_pb2_grpc
from bulwark.bus.reader import read_topic
from bulwark.live import read_live
from bulwark.redis_client import make_redis
from bulwark.redis_keys import RedisKeys
from bulwark.registry import ModelRegistry
from bulwark.testing.services import ServiceProcess
from bulwark.testing.stack import TestStack, topic_env
from bulwark.triton.client import TritonClient
from services.trainer.pipeline import artifact_store
from tests.integration.helpers import clean_events, deploy, publish, train_version

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_forget_replaces_deploys_and_purges_every_version_trained_on_the_subject(stack: TestStack, tmp_path: Path,
                                                                                  logs_dir: Path) -> None:
    model, prefix, home = "fg-" + uuid.uuid4().hex[:6], "fg" + uuid.uuid4().hex[:8], tmp_path / "home"
    topics = stack.topics(partitions=2)
    settings = stack.settings(triton=True, redis_prefix=prefix, home=home, **topics)
    env = {**stack.env(triton=True), **topic_env(topics), "BULWARK_REDIS_PREFIX": prefix, "BULWARK_HOME": str(home)}
    client, keys = make_redis(settings), RedisKeys(prefix)
    registry = ModelRegistry(client, keys)
    events = clean_events(stack, settings, 3000, seed=51, labeled_fraction=1.0)
    publish(settings, settings.topics.events_clean, events)
    subject, n_events = Counter(e.subject for e in events).most_common(1)[0]
    # v1 is live in Triton; v2 is stored, never deployed. Both trained on the subject.
    v1 = train_version(stack, settings, model=model, publish_events=False)
    v2 = train_version(stack, settings, model=model, publish_events=False, hidden=[32, 32])
    deploy(stack, settings, model, [v1.version], live=v1.version)
    registry.set_state(model, v1.version, "live", by="test", reason="bootstrap")
    triton = TritonClient(stack.triton.spec.endpoints["grpc"])

    services = [
        ServiceProcess("services.trainer", "trainer", {
            **env, "BULWARK_BUS_GROUP_ID": stack.group("trainer"), "BULWARK_TRAINER_MODEL": model,
            "BULWARK_TRAINER_TRIGGER_EVERY": "0", "BULWARK_TRAINER_MIN_LABELED": "200",
            "BULWARK_TRAINER_MAX_EPOCHS": "25", "BULWARK_TRAINER_PATIENCE": "4"}, logs_dir),
        ServiceProcess("services.quantizer", "quantizer", {
            **env, "BULWARK_BUS_GROUP_ID": stack.group("quantizer"), "BULWARK_QUANTIZER_LATENCY_REPEATS": "10",
            "BULWARK_QUANTIZER_EVAL_RECORDS": "500"}, logs_dir),
        ServiceProcess("services.robustness_guard", "robustness-guard", {
            **env, "BULWARK_BUS_GROUP_ID": stack.group("guard")}, logs_dir),
        ServiceProcess("services.updater", "updater", {
            **env, "BULWARK_BUS_GROUP_ID": stack.group("updater"), "BULWARK_UPDATER_PORT": "0",
            "BULWARK_UPDATER_SHADOW_S": "0", "BULWARK_UPDATER_CANARY_S": "1", "BULWARK_UPDATER_CANARY_MIN_REQUESTS": "0",
            "BULWARK_UPDATER_FORGET_CHECK_S": "1", "BULWARK_UPDATER_FORGET_DEADLINE_S": "600"}, logs_dir),
    ]
    for svc in services:
        svc.start()
    try:
        started = time.time()
        out = subprocess.run([sys.executable, "-m", "bulwark.cli.main", "forget", subject, "--token", "--reason",
                              "erasure request ER-7", "--json"], env={**os.environ, **env, "BULWARK_ACTOR": "dpo"},
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert f"{model} v{v1.version}" in out.stdout and f"{model} v{v2.version}" in out.stdout
        deadline = time.monotonic() + 420
        while time.monotonic() < deadline:
            state = read_live(client, keys, model)
            purged = all((registry.get(model, v.version) or {}).get("purged_at") for v in (v1, v2))
            if state and state.live_version not in (v1.version, v2.version) and purged:
                break
            time.sleep(1)
        else:
            pytest.fail(f"no replacement live and old versions purged in time: {read_live(client, keys, model)}")
        replacement = state.live_version
        port = int(client.hget(keys.heartbeat("updater", services[3].instance), "x_grpc_port"))
        admin = admin_pb2_grpc.ModelAdminStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        listed = {v.version: v for v in admin.ListVersions(admin_pb2.ListVersionsRequest(model=model), timeout=10).versions}
    finally:
        for svc in services:
            svc.terminate()
    elapsed = time.time() - started
    # The replacement: asked for with reason forget, trained without the subject's events, live in Triton.
    requests = [e.payload for _, e in read_topic(settings, settings.topics.training_requests) if e]
    assert [r["reason"] for r in requests] == ["forget"] and requests[0]["requested_by"] == "updater"
    new = artifact_store(settings).open(model, replacement, "trained")
    manifest = new.json("dataset.json")
    assert manifest["excluded_forgotten"] == n_events and manifest["forgotten_in_force"] == 1
    assert subject not in new.json("subjects.json")
    assert triton.model_ready(model, replacement)
    assert registry.get(model, replacement)["state"] == "live" and elapsed < 600
    # The old versions: unloaded, out of the model repository, artifacts (and their wrapped keys) deleted.
    for old in (v1.version, v2.version):
        assert not triton.model_ready(model, old)
        assert not (settings.artifacts_path / model / str(old)).exists()
        assert not (stack.model_repository / model / str(old)).exists()
        assert not (stack.model_repository / model / f"retired-{old}").exists()
        entry = registry.get(model, old)
        assert entry["state"] == "retired" and entry["carried_forgotten"] == 1
        assert not client.exists(keys.model_subjects(model, str(old)))
        assert listed[old].forgotten_subjects == 0 and listed[old].forget_deadline.startswith("purged ")
    assert listed[replacement].forgotten_subjects == 0 and listed[replacement].forget_deadline == ""
