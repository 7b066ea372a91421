"""`bulwark demo`: the platform's story on the running local stack, step by step.

Each step says what it does, waits for the platform to do it (with a deadline), and shows the evidence.
A step that cannot complete stops the demo with the reason and where to look.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Callable, TypeVar

import click

from bulwark.cli.output import table

T = TypeVar("T")


def _step(title: str) -> None:
    click.echo(click.style(f"\n== {title}", bold=True), err=True)


def _wait(what: str, check: Callable[[], object], timeout_s: float) -> object:
    deadline = time.monotonic() + timeout_s
    with click.progressbar(length=int(timeout_s), label=f"waiting for {what}", file=sys.stderr) as bar:
        last = 0
        while time.monotonic() < deadline:
            result = check()
            if result:
                bar.update(int(timeout_s) - last)
                return result
            time.sleep(1)
            now = int(timeout_s - (deadline - time.monotonic()))
            bar.update(now - last)
            last = now
    raise click.ClickException(f"timed out waiting for {what}; see `bulwark status` and the logs under var/stack/logs")


def _settled(read: Callable[[], T], ready: Callable[[T], bool], timeout_s: float = 30.0) -> T:
    """`read()` until `ready(result)` or `timeout_s` has passed; the last result either way (a part still
    settling is shown as it is, not waited on for ever)."""
    deadline = time.monotonic() + timeout_s
    result = read()
    while not ready(result) and time.monotonic() < deadline:
        time.sleep(0.5)
        result = read()
    return result


@click.command()
@click.option("--events", type=click.IntRange(100), default=3000, show_default=True, help="Events to produce.")
@click.option("--model", default="fraud", show_default=True, help="The model the stack's trainer trains.")
def demo(events: int, model: str) -> None:
    """Walk through the platform on the running local stack (`make demo` starts it first)."""
    from bulwark.cli.main import cli_settings
    from bulwark.stack.health import infrastructure, services

    settings = cli_settings()
    _step("1. every part of the stack is up")
    # Triton reports "live, not ready" while it loads the repository's models; give it a moment.
    parts = _settled(lambda: infrastructure(settings), lambda ps: all(p.state != "degraded" for p in ps))
    table([p.to_dict() for p in parts], ["part", "state", "detail"], colour_column="state")
    if any(p.state == "down" for p in parts):
        raise click.ClickException("an infrastructure part is down; run `make demo` (it starts the stack)")
    _wait("services' heartbeats", lambda: all(p.state != "down" for p in services(settings)), 300)
    # A service's first heartbeat says "starting"; give them a moment to run before showing the table.
    rows = _settled(lambda: services(settings), lambda ps: all(p.state == "up" for p in ps))
    table([p.to_dict() for p in rows], ["part", "state", "instances", "detail"], colour_column="state")

    _step(f"2. a producer publishes {events} payment events with personal data to {settings.topics.events_raw}")
    subprocess.run([sys.executable, "-m", "bulwark.cli.main", "produce", "--count", str(events), "--rate", "0"],
                   check=True)

    from bulwark.redis_client import make_redis
    from bulwark.redis_keys import RedisKeys
    from bulwark.registry import ModelRegistry

    client = make_redis(settings)
    keys = RedisKeys(settings.redis_prefix)
    registry = ModelRegistry(client, keys)
    before = set(registry.versions(model))

    _step(f"3. the trainer trains a new version of '{model}' from the clean events (a training request)")
    from bulwark.cli.train import request_training

    time.sleep(3)  # let the anonymizer's first clean events land before the trainer reads its window
    request_training(settings, model, "manual", "demo", "bulwark demo")
    new = _wait("a new version in the registry", lambda: sorted(set(registry.versions(model)) - before), 300)
    version = int(new[-1])

    from bulwark.live import read_live

    live_before = read_live(client, keys, model)
    _step(f"4. v{version} goes through quantizer, robustness gate and updater")
    seen: list[str] = []
    traffic = None
    if live_before is not None and live_before.live_version:
        # A later version rolls out against the live one (shadow, then a canary share of clients) and is
        # judged on live traffic: a stand-in client population sends it some while the demo waits.
        click.echo(f"   v{live_before.live_version} is live: clients send traffic so the updater can compare the two",
                   err=True)
        traffic = _Traffic(settings, model).start()

    def progressed() -> object:
        entry = registry.get(model, version, missing_ok=True) or {}
        state = str(entry.get("state", ""))
        if state and (not seen or seen[-1] != state):
            seen.append(state)
            click.echo(f"   v{version}: {state}", err=True)
        return state in ("live", "rejected", "retired")

    try:
        _wait(f"v{version} to be deployed (or refused)", progressed, 600)
    finally:
        if traffic is not None:
            traffic.stop()
    entry = registry.get(model, version) or {}
    metrics = entry.get("metrics") or {}
    table([{"version": version, "state": entry.get("state", ""), "path": " > ".join(seen),
            "accuracy": f"{metrics.get('accuracy', float('nan')):.3f}", "auroc": f"{metrics.get('auroc', float('nan')):.3f}",
            "served form": (entry.get("quantization") or {}).get("form") or "fp32", "trigger": entry.get("reason", "")}])
    if entry.get("state") != "live":
        if live_before is None or not live_before.live_version:
            raise click.ClickException(f"v{version} ended {entry.get('state')}: {entry.get('reason', '')}; "
                                       "`bulwark models versions` has the reports")
        # Refusing or rolling back a version is the platform working: the live one keeps serving.
        click.echo(f"   v{version} ended {entry.get('state')} ({entry.get('reason', '')}); v{live_before.live_version} "
                   "stays live", err=True)
    if traffic is not None:
        click.echo(f"   rollout traffic: {traffic.sent} predictions, {traffic.failed} failed", err=True)

    _step("5. a gRPC client asks the front door for predictions (guard, cache, Triton)")
    rows, request_ids = _predict(settings, model)
    table(rows, ["request", "label", "p(fraud)", "guard", "cached", "ms"])

    _step("6. the explainer says which inputs drove the first prediction (by its request id)")
    table(_explain(settings, model, request_ids[0]), ["feature", "attribution"])
    click.echo("\nnext: `bulwark status`, `bulwark models list`, `bulwark dlq list`; `make down` stops the stack",
               err=True)


class _Traffic:
    """Predictions from 40 client keys at about 40 per second, in a thread, until stopped."""

    def __init__(self, settings, model: str) -> None:  # noqa: ANN001
        import threading

        self._settings, self._model = settings, model
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-traffic", daemon=True)
        self.sent = self.failed = 0

    def start(self) -> "_Traffic":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        import grpc

        from bulwark.api.v1 import inference_pb2, inference_pb2_grpc
        from bulwark.grpc_client import call, channel, to_values
        from bulwark.reference import CATEGORICAL_FIELDS, FLAG_FIELDS, NUMERIC_FIELDS, ReferenceGenerator

        stub = inference_pb2_grpc.InferenceServiceStub(channel(self._settings, self._settings.inference_url))
        fields = NUMERIC_FIELDS + CATEGORICAL_FIELDS + FLAG_FIELDS
        for i, event in enumerate(ReferenceGenerator(seed=7).events(1_000_000)):
            if self._stop.wait(0.025):
                return
            try:
                call(stub.Predict, inference_pb2.PredictRequest(
                    model=self._model, client_key=f"demo-client-{i % 40}",
                    features=to_values({k: event.payload[k] for k in fields})), self._settings, timeout=2)
                self.sent += 1
            except grpc.RpcError:
                self.failed += 1


def _predict(settings, model: str) -> tuple[list[dict[str, object]], list[str]]:  # noqa: ANN001
    """Five reference transactions through the front door, the first one twice (the second is cached)."""
    from bulwark.api.v1 import inference_pb2, inference_pb2_grpc
    from bulwark.grpc_client import call, channel, to_values
    from bulwark.reference import CATEGORICAL_FIELDS, FLAG_FIELDS, NUMERIC_FIELDS, ReferenceGenerator

    stub = inference_pb2_grpc.InferenceServiceStub(channel(settings, settings.inference_url))
    fields = NUMERIC_FIELDS + CATEGORICAL_FIELDS + FLAG_FIELDS
    payloads = [{k: e.payload[k] for k in fields} for e in ReferenceGenerator(seed=2026).events(5)]
    rows, ids = [], []
    for payload in [payloads[0], *payloads]:
        t = time.perf_counter()
        resp = call(stub.Predict, inference_pb2.PredictRequest(model=model, features=to_values(payload),
                                                               client_key="demo"), settings)
        ms = (time.perf_counter() - t) * 1000
        ids.append(resp.request_id)
        p = dict(zip(resp.classes, resp.probabilities)).get("fraud", 0.0)
        rows.append({"request": resp.request_id[:12], "label": resp.label, "p(fraud)": f"{p:.3f}",
                     "guard": resp.guard.action, "cached": resp.cached, "ms": f"{ms:.1f}"})
    return rows, ids


def _explain(settings, model: str, request_id: str) -> list[dict[str, object]]:  # noqa: ANN001
    """The explainer's attributions for a logged request, largest first."""
    import grpc

    from bulwark.api.v1 import explain_pb2, explain_pb2_grpc
    from bulwark.grpc_client import call, channel

    stub = explain_pb2_grpc.ExplainServiceStub(channel(settings, settings.explainer_url))
    deadline = time.monotonic() + 30
    while True:  # the request reaches the explainer through inference.log, a moment after the prediction
        try:
            resp = call(stub.Explain, explain_pb2.ExplainRequest(model=model, request_id=request_id), settings)
            break
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                raise click.ClickException(f"the explainer answered {exc.code().name}: {exc.details()}") from None
            time.sleep(1)
    top = sorted(resp.attributions, key=lambda a: -abs(a.value))[:6]
    return [{"feature": a.feature, "attribution": f"{a.value:+.3f}"} for a in top]


COMMANDS = [demo]
