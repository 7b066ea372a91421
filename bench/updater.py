"""Updater speed on real parts, with the default rollout policy:

- time from a `models.validated` event to the first request a client gets answered by the canary (target
  < 10 s for the MLP family): placing the version in Triton's repository, loading it, warming it up, the
  shadow stage, then routing;
  the rows below it say when the shadow and canary stages started (the updater's `models.deployed` events);
- time from a regression crossing its bound to the rollback (target < 5 s): the crossing is the log timestamp
  of the inference.log record after which the updater's own rule (`rollout.assess`, on the counts its
  `SignalStore` keeps) first finds a bound broken, replaying the records from the rollout's start in time
  order; the rollback is the `model.deployed` event's timestamp. The row names the bound that fired.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import grpc

from _common import Row, progress, save
from _models import new_context, train_version
from bulwark.api.v1 import inference_pb2, inference_pb2_grpc
from bulwark.bus.reader import read_topic
from bulwark.events import Envelope
from bulwark.redis_client import make_redis
from bulwark.redis_keys import RedisKeys
from bulwark.reference import ReferenceGenerator
from bulwark.testing.services import ServiceProcess
from bulwark.testing.stack import TestStack, topic_env
from services.updater.rollout import assess
from services.updater.settings import UpdaterSettings
from services.updater.signals import SignalStore
from tests.integration.helpers import clean_events, publish
from tests.integration.test_inference import features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.parse_args()
    policy = UpdaterSettings()
    with tempfile.TemporaryDirectory() as tmp:
        stack = TestStack(Path(tmp))
        procs: list[ServiceProcess] = []
        try:
            settings = new_context(stack, triton=True, home=Path(tmp) / "home")
            prefix = settings.redis_prefix
            topics = {f"topic_{k}": v for k, v in vars(settings.topics).items()}
            model = "bench-upd"
            progress("training a good version and an inverted (worse) one")
            good = train_version(stack, settings, model=model, seed=3, events=4000)
            inverted = clean_events(stack, settings, 3000, seed=4, labeled_fraction=1.0)
            for e in inverted:
                e.payload["is_fraud"] = not e.payload["is_fraud"]
            other = new_context(stack, home=Path(tmp) / "home", redis_prefix=prefix)
            publish(other, other.topics.events_clean, inverted)
            worse = train_version(stack, other, model=model, publish_events=False)
            better = train_version(stack, settings, model=model, publish_events=False, hidden=[64, 32])
            env = {**stack.env(triton=True), **topic_env(topics), "BULWARK_REDIS_PREFIX": prefix,
                   "BULWARK_HOME": str(Path(tmp) / "home")}
            logs = Path(tmp) / "logs"
            front = ServiceProcess("services.inference", "inference",
                                   {**env, "BULWARK_INFERENCE_PORT": "0", "BULWARK_INFERENCE_CACHE_TTL_S": "0"}, logs).start()
            updater = ServiceProcess("services.updater", "updater", {**env, "BULWARK_UPDATER_PORT": "0"}, logs).start()
            procs += [front, updater]
            port = int(make_redis(settings).hget(RedisKeys(prefix).heartbeat("inference", front.instance), "x_grpc_port"))
            stub = inference_pb2_grpc.InferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))

            def validated(version: int) -> float:
                publish(settings, settings.topics.models_validated, [Envelope(
                    type="model.validated", source="bench", subject=model, payload={
                        "model": model, "version": version, "passed": True, "reasons": ["bench"],
                        "report": {"path": "-", "digest": "-"}})])
                return time.time()

            served: list[tuple[float, int]] = []
            stop = threading.Event()
            payloads = [e.payload for e in ReferenceGenerator(seed=8).events(300)]

            def load() -> None:
                i = 0
                while not stop.is_set():
                    try:
                        r = stub.Predict(inference_pb2.PredictRequest(model=model, features=features(payloads[i % 300]),
                                                                      client_key=f"c{i % 101}"), timeout=5)
                        served.append((time.time(), r.version))
                    except grpc.RpcError:
                        pass
                    i += 1
                    time.sleep(0.005)

            progress("first version (goes live directly)")
            validated(good.version)
            while not any(v == good.version for _, v in served[-5:]):
                if not served:
                    try:
                        stub.Predict(inference_pb2.PredictRequest(model=model, features=features(payloads[0])), timeout=2)
                        served.append((time.time(), good.version))
                    except grpc.RpcError:
                        time.sleep(0.2)
                        continue
                time.sleep(0.2)
            thread = threading.Thread(target=load, daemon=True)
            thread.start()
            progress("a better version: time to canary traffic")
            t0 = validated(better.version)
            deadline = time.time() + 120
            while not any(v == better.version and t >= t0 for t, v in served) and time.time() < deadline:
                time.sleep(0.05)
            to_canary = min(t for t, v in served if v == better.version and t >= t0) - t0
            # Where that time went: the updater's own events for the version, by their timestamps.
            stages = {e.payload["action"]: rec.timestamp / 1000 - t0 for rec, e in
                      read_topic(settings, settings.topics.models_deployed, idle_ms=200)
                      if e and e.payload["version"] == better.version}
            progress("waiting for its promotion, then a worse version: time from regression to rollback")
            while not (served and served[-1][1] == better.version):
                time.sleep(0.2)
            t1 = validated(worse.version)
            rollback: tuple[float, str] | None = None
            while rollback is None and time.time() < t1 + 120:
                deployed = [(rec.timestamp / 1000, e.payload) for rec, e in
                            read_topic(settings, settings.topics.models_deployed, idle_ms=200)
                            if e and e.payload["version"] == worse.version]
                rollback = next(((ts, p["reason"]) for ts, p in deployed if p["action"] == "rollback"), None)
                time.sleep(0.5)
            stop.set()
            thread.join()
            crossed = None
            if rollback is not None:
                # When did the evidence first break a bound? Replay the logged records from the rollout's
                # start through the updater's own counting and rule (on scratch keys), in the order the
                # updater reads them: log order (one model's records share a partition). Shadow copies are
                # logged from several threads, so log order is not quite time order; the evidence was all
                # there at the latest timestamp among the records replayed when the bound breaks.
                started = min(ts for ts, p in deployed if ts >= t1)
                replay = SignalStore(make_redis(settings), RedisKeys(f"{prefix}-replay"))
                records = [(rec.timestamp / 1000, e.payload) for rec, e in
                           read_topic(settings, settings.topics.inference_log)
                           if e and e.type == "inference.record" and rec.timestamp / 1000 >= started]
                evidence_at = started
                for ts, p in records:
                    evidence_at = max(evidence_at, ts)
                    replay.observe(p, 1)
                    if assess(policy, replay.read(model, worse.version, 1),
                              replay.read(model, better.version, 1)).regression:
                        crossed = evidence_at
                        break
            to_rollback = (rollback[0] - crossed) if (rollback and crossed) else float("nan")
            bound = rollback[1].removeprefix("regression: ").split(" ")[0] if rollback else "none"
        finally:
            for p in procs:
                p.terminate()
            stack.stop()
    nan = float("nan")
    rows = [
        Row("updater", "models.validated -> first canary answer", to_canary, "s", "",
            "< 10", to_canary < 10),
        Row("updater", "  validated -> shadow starts (placed, loaded, warmed in Triton)",
            stages.get("shadow", nan), "s", "for information"),
        Row("updater", "  validated -> canary starts (the shadow held its bounds)",
            stages.get("canary", nan), "s", f"shadow stage >= {policy.shadow_s:g} s"),
        Row("updater", "regression crosses its bound -> rollback", to_rollback, "s", f"bound: {bound}", "< 5",
            to_rollback < 5),
    ]
    save("updater", rows, {"policy": policy.model_dump()})


if __name__ == "__main__":
    main()
