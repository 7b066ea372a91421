"""Up, degraded or down: infrastructure checks, heartbeats, gRPC health, lag and latency baselines.

Evidence, from the strongest: the part's own health check (broker metadata, Redis PING, Triton
ready, grpc.health.v1); a heartbeat's process gone on this host (no need to wait for the TTL); the
heartbeat expired (down); the heartbeat's own status; consumer lag; latency against the service's own
history (`RedisKeys.heartbeat_history`, written by every heartbeat). A part is named down only on
direct evidence; when Redis is down the services' heartbeats cannot be read and they are "unknown".
"""

from __future__ import annotations

import os
import socket
import statistics
import time
from typing import Any, Sequence

from bulwark.doctor.model import DEGRADED, DOWN, UNKNOWN, UP, Diagnosis, InstanceState, PartState
from bulwark.doctor.settings import DoctorSettings
from bulwark.health import read_heartbeats
from bulwark.redis_client import make_redis
from bulwark.redis_keys import RedisKeys
from bulwark.settings import CommonSettings
from bulwark.stack import catalog
from bulwark.stack.parts import http_ok, kafka_ready

INFRASTRUCTURE = ("kafka", "redis", "triton")


def diagnose(settings: CommonSettings, *, doctor: DoctorSettings | None = None, probe: bool = False,
             services: Sequence[str] | None = None, infrastructure: Sequence[str] = INFRASTRUCTURE,
             spans: bool = True) -> Diagnosis:
    """Check every part (and run a probe when asked); `services` defaults to the whole catalog; `spans`
    reads the newest exported spans for error spans per service."""
    doctor = doctor or DoctorSettings()
    expected = tuple(catalog.names() if services is None else services)
    started = time.perf_counter()
    parts = check_infrastructure(settings, doctor, infrastructure)
    redis_up = next((p.state == UP for p in parts if p.part == "redis"), True)
    parts += check_services(settings, doctor, expected, redis_up=redis_up)
    if spans and next((p.state == UP for p in parts if p.part == "kafka"), False):
        _error_spans(settings, doctor, parts)
    result = None
    if probe:
        from bulwark.doctor.probe import run_probe

        result = run_probe(settings, doctor, parts)
    return Diagnosis(time.time(), parts, result, round(time.perf_counter() - started, 3))


# ------------------------------------------------------------------------------------------ infrastructure
def check_infrastructure(settings: CommonSettings, doctor: DoctorSettings,
                         which: Sequence[str] = INFRASTRUCTURE) -> list[PartState]:
    """The broker, Redis and Triton, each checked with its own protocol, with the time it took."""
    out = []
    for name in which:
        t0 = time.perf_counter()
        state, detail = {"kafka": _kafka, "redis": _redis, "triton": _triton}[name](settings, doctor)
        ms = round((time.perf_counter() - t0) * 1000, 1)
        out.append(PartState(name, "infrastructure", state, detail, {"check_ms": ms}))
    return out


def _kafka(settings: CommonSettings, _: DoctorSettings) -> tuple[str, str]:
    bootstrap = settings.kafka_bootstrap_servers
    if kafka_ready(bootstrap):
        return UP, f"{bootstrap} answers metadata requests"
    return DOWN, f"{bootstrap} does not answer (connection refused or no metadata)"


def _redis(settings: CommonSettings, doctor: DoctorSettings) -> tuple[str, str]:
    where = settings.redis_url.split("@")[-1]
    try:
        make_redis(settings, timeout_s=doctor.check_timeout_s).ping()
        return UP, f"{where} answers PING"
    except Exception as exc:  # noqa: BLE001 - any failure to answer is the finding
        return DOWN, f"{where} does not answer PING ({type(exc).__name__})"


def _triton(settings: CommonSettings, doctor: DoctorSettings) -> tuple[str, str]:
    base = f"http://{settings.triton_http_url}/v2/health"
    if not http_ok(f"{base}/live", timeout=doctor.check_timeout_s):
        return DOWN, f"{settings.triton_http_url} does not answer /v2/health/live"
    if not http_ok(f"{base}/ready", timeout=doctor.check_timeout_s):
        return DEGRADED, f"{settings.triton_http_url} is live but not ready (a model loading or unloading?)"
    return UP, f"{settings.triton_http_url} live and ready"


# ------------------------------------------------------------------------------------------ services
def check_services(settings: CommonSettings, doctor: DoctorSettings, expected: Sequence[str], *,
                   redis_up: bool = True) -> list[PartState]:
    """Each expected service (and any other that beats) from its instances."""
    if not redis_up:
        return [PartState(s, "service", UNKNOWN, "Redis is down: heartbeats cannot be read") for s in expected]
    client = make_redis(settings, timeout_s=doctor.check_timeout_s)
    keys = RedisKeys(settings.redis_prefix)
    try:
        beats = read_heartbeats(client, keys)
    except Exception as exc:  # noqa: BLE001
        return [PartState(s, "service", UNKNOWN, f"heartbeats unreadable ({type(exc).__name__})") for s in expected]
    by_service: dict[str, list[dict[str, str]]] = {}
    for hb in beats:
        by_service.setdefault(hb.get("service", "?"), []).append(hb)
    out = []
    for name in list(expected) + sorted(set(by_service) - set(expected)):
        out.append(_service_state(settings, doctor, client, keys, name, by_service.get(name, [])))
    return out


def _vanished(client: Any, keys: RedisKeys, service: str, live: set[str], forget_after_s: float) -> dict[str, float]:
    """Instances that beat within `forget_after_s` and whose heartbeat expired without a graceful stop (which
    removes them from `heartbeat_instances`): instance -> its last beat (unix s)."""
    try:
        members = client.zrangebyscore(keys.heartbeat_instances(service), time.time() - forget_after_s, "+inf",
                                       withscores=True)
    except Exception:  # noqa: BLE001 - without the list only live heartbeats are judged
        return {}
    out = {}
    for member, score in members:
        name = member.decode() if isinstance(member, bytes) else member
        if name not in live:
            out[name] = float(score)
    return out


def _replaced(last_beat: float, beats: list[dict[str, str]], states: dict[str, str]) -> bool:
    """True when an instance that is up started after `last_beat`: the failed one was replaced (a restart, a
    new pod), so the service has its instances back."""
    return any(states.get(hb.get("instance", "")) == UP and float(hb.get("started_at", "0") or 0) > last_beat
               for hb in beats)


def _service_state(settings: CommonSettings, doctor: DoctorSettings, client: Any, keys: RedisKeys, name: str,
                   beats: list[dict[str, str]]) -> PartState:
    baseline = _baseline(client, keys, name) if beats else None
    instances = [_instance_state(settings, doctor, hb, baseline) for hb in beats]
    first = {i.instance: i.state for i in instances}
    gone = {i: at for i, at in _vanished(client, keys, name, set(first), doctor.forget_after_s).items()
            if not _replaced(at, beats, first)}
    if not beats:
        detail = "no heartbeat: no instance is running (or all expired)"
        if gone:
            last = max(gone.values())
            detail = f"no heartbeat: the last of {len(gone)} instance(s) beat {time.time() - last:.1f}s ago " \
                     "and did not stop gracefully (crashed, frozen or cut off from Redis)"
        return PartState(name, "service", DOWN, detail, {"instances": 0},
                         [InstanceState(i, DOWN, "heartbeat expired", {"last_beat_s_ago": round(time.time() - at, 1)})
                          for i, at in sorted(gone.items())])
    # A failed instance that a newer one replaced is history, not a missing instance.
    instances = [i for i, hb in zip(instances, beats)
                 if i.state != DOWN or not _replaced(float(hb.get("at", "0") or 0), beats, first)]
    instances += [InstanceState(i, DOWN, f"heartbeat expired ({time.time() - at:.1f}s since its last beat) "
                                "without a graceful stop: crashed, frozen or cut off from Redis",
                                {"last_beat_s_ago": round(time.time() - at, 1)}) for i, at in sorted(gone.items())]
    states = [i.state for i in instances]
    if all(s == DOWN for s in states):
        state = DOWN
    elif all(s == UP for s in states):
        state = UP
    else:
        state = DEGRADED
    worst = next((i for i in instances if i.state == state), instances[0])
    handled = sum(int(hb.get("handled", "0") or 0) for hb in beats)
    evidence: dict[str, Any] = {"instances": len(instances), "up": states.count(UP), "handled": handled,
                                "baseline_ms": baseline[0] if baseline else None}
    if state == UP:
        detail = f"{len(instances)} instance(s) up, handled={handled}"
    else:
        detail = f"{worst.instance}: {worst.detail}" if len(instances) > 1 else worst.detail
        if state == DEGRADED and len(instances) > 1:
            detail = f"{states.count(UP)}/{len(instances)} instances up; {detail}"
    return PartState(name, "service", state, detail, evidence, instances)


def _baseline(client: Any, keys: RedisKeys, service: str) -> tuple[float, int] | None:
    try:
        raw = client.lrange(keys.heartbeat_history(service), 0, -1)
    except Exception:  # noqa: BLE001 - no baseline is a weaker check, not a failure
        return None
    samples = [float(x) for x in raw]
    return (round(statistics.median(samples), 3), len(samples)) if samples else None


def _instance_state(settings: CommonSettings, doctor: DoctorSettings, hb: dict[str, str],
                    baseline: tuple[float, int] | None) -> InstanceState:
    name = hb.get("instance", "?")
    evidence: dict[str, Any] = {k: hb.get(k) for k in ("pid", "host", "status", "age_s", "handled", "errors",
                                                     "dead_lettered", "retries", "lag", "latency_ms_ewma")}
    # Same host: a dead process is known now, not when its heartbeat expires.
    if hb.get("host") == socket.gethostname() and hb.get("pid", "").isdigit() and not _pid_alive(int(hb["pid"])):
        return InstanceState(name, DOWN, f"process {hb['pid']} is gone (heartbeat {hb.get('age_s')}s old)", evidence)
    age = float(hb.get("age_s", "0") or 0)
    interval = settings.heartbeat_interval_s
    if age > max(3 * interval, interval + 2):
        return InstanceState(name, DOWN, f"heartbeat stale ({age:.1f}s old, written every {interval:g}s): "
                             "process stopped or partitioned", evidence)
    port = hb.get("x_grpc_port")
    if port:
        evidence["grpc_port"] = int(port)
        ok, why = _grpc_health(settings, doctor, hb.get("host", "127.0.0.1"), int(port))
        evidence["grpc_health"] = why
        if not ok:
            return InstanceState(name, DOWN if "unreachable" in why else DEGRADED, f"gRPC health: {why}", evidence)
    status = hb.get("status", "unknown")
    if status == "degraded":
        return InstanceState(name, DEGRADED, hb.get("detail") or "reports degraded", evidence)
    if status not in ("running", "starting"):
        return InstanceState(name, DEGRADED, f"reports {status}", evidence)
    lag = int(hb.get("lag", "-1") or -1)
    if lag > doctor.max_lag:
        return InstanceState(name, DEGRADED, f"consumer lag {lag} > {doctor.max_lag} (approximate on Tansu)", evidence)
    latency = float(hb.get("latency_ms_ewma", "0") or 0)
    if baseline and baseline[1] >= doctor.baseline_min_samples and latency > max(
            doctor.latency_factor * baseline[0], baseline[0] + doctor.latency_margin_ms):
        return InstanceState(name, DEGRADED, f"slow: {latency:.0f} ms per event against its baseline of "
                             f"{baseline[0]:.1f} ms", evidence)
    return InstanceState(name, UP, "running", evidence)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed, not yet reaped by its parent) is not running either.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return True


def _grpc_health(settings: CommonSettings, doctor: DoctorSettings, host: str, port: int) -> tuple[bool, str]:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from bulwark.grpc_client import channel

    target_host = "127.0.0.1" if host == socket.gethostname() else host
    ch = channel(settings, f"{target_host}:{port}")
    try:
        reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""),
                                                      timeout=doctor.check_timeout_s)
        serving = reply.status == health_pb2.HealthCheckResponse.SERVING
        return serving, "SERVING" if serving else health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    except grpc.RpcError as exc:
        code = exc.code()
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return False, f"unreachable at {target_host}:{port} ({code.name})"
        return False, code.name
    finally:
        ch.close()


def _error_spans(settings: CommonSettings, doctor: DoctorSettings, parts: list[PartState]) -> None:
    """Count error spans of the last five minutes per service; mostly-failing work degrades a service."""
    from bulwark.doctor.traces import read_spans

    since = (time.time() - 300) * 1e9
    recent = [s for s in read_spans(settings, doctor) if s["end_ns"] >= since]
    for part in parts:
        if part.kind != "service":
            continue
        mine = [s for s in recent if s["service"] == part.part]
        errors = sum(1 for s in mine if s["status"] == "error")
        part.evidence["spans_5m"] = len(mine)
        part.evidence["error_spans_5m"] = errors
        if part.state == UP and errors >= 5 and errors * 2 > len(mine):
            part.state = DEGRADED
            part.detail = f"{errors} of its {len(mine)} spans in the last 5 min are errors"
