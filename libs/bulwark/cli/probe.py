"""`bulwark probe SERVICE`: is this container's instance of a service alive, or ready? For exec probes.

Kubernetes (exec liveness, readiness and startup probes) and Compose (healthchecks) run it inside the
service's own container. It reads that instance's heartbeat from Redis (`<prefix>:hb:<service>:<instance>`,
written by the service every `BULWARK_HEARTBEAT_INTERVAL_S` with a TTL) and exits 0 when the heartbeat is
fresh and the instance is not stopped or down; with `--ready`, only when it reports `running` (a degraded
instance, e.g. one retrying an unreachable broker, is alive but not ready). Exit 1 otherwise.

The instance is `BULWARK_INSTANCE_ID` when set (the Helm chart sets it to the pod name); else the newest
heartbeat of SERVICE whose host is this container's host name, since Compose replicas share one environment
and each container has its own host name.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import click
import redis

from bulwark.redis_keys import RedisKeys

# Statuses after which an instance will not come back by itself: the loop has left, or its probe says so.
_DEAD = frozenset({"stopped", "down"})


@dataclass(frozen=True)
class ProbeResult:
    """One probe's verdict, as printed."""

    ok: bool
    service: str
    instance: str
    status: str
    age_s: float | None
    detail: str

    def line(self) -> str:
        """`ok|fail service= instance= status= age_s= detail=` for a probe's log."""
        age = "-" if self.age_s is None else f"{self.age_s:.1f}"
        return (f"{'ok' if self.ok else 'fail'} service={self.service} instance={self.instance or '-'} "
                f"status={self.status} age_s={age} detail={self.detail!r}")


def judge(heartbeat: dict[str, str] | None, *, service: str, instance: str, now: float, max_age_s: float,
          ready: bool) -> ProbeResult:
    """The verdict on one heartbeat (None: none found): fresh, not stopped or down, and running if `ready`."""
    if heartbeat is None:
        return ProbeResult(False, service, instance, "missing", None,
                           "no heartbeat: expired or never written")
    instance = heartbeat.get("instance", instance)
    status = heartbeat.get("status", "unknown")
    try:
        age = now - float(heartbeat["at"])
    except (KeyError, ValueError):
        return ProbeResult(False, service, instance, status, None, "heartbeat has no valid 'at' time")
    if age > max_age_s:
        return ProbeResult(False, service, instance, status, age, f"stale: older than {max_age_s:g}s")
    detail = heartbeat.get("detail", "")
    if status in _DEAD:
        return ProbeResult(False, service, instance, status, age, detail or f"instance is {status}")
    if ready and status != "running":
        return ProbeResult(False, service, instance, status, age, detail or "not running yet")
    return ProbeResult(True, service, instance, status, age, "")


def _decode(raw: dict[Any, Any]) -> dict[str, str]:
    return {k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v
            for k, v in raw.items()}


def find_heartbeat(client: redis.Redis, keys: RedisKeys, service: str, *, instance: str | None,
                   host: str) -> dict[str, str] | None:
    """This instance's heartbeat: by instance id when given, else the newest of `service` from `host`."""
    if instance:
        return _decode(client.hgetall(keys.heartbeat(service, instance))) or None
    newest: dict[str, str] | None = None
    for key in client.scan_iter(match=keys.heartbeat(service, "*"), count=200):
        hb = _decode(client.hgetall(key))
        if hb.get("host") != host:
            continue
        # A restarted process in the same container writes a new instance id; the old one expires by TTL.
        if newest is None or float(hb.get("at", 0) or 0) > float(newest.get("at", 0) or 0):
            newest = hb
    return newest


@click.command()
@click.argument("service")
@click.option("--ready", is_flag=True,
              help="Also require status `running` (readiness); default: alive (liveness).")
@click.option("--max-age", "max_age_s", type=click.FloatRange(min=0.1), default=None,
              help="Oldest acceptable heartbeat in seconds (default BULWARK_HEARTBEAT_TTL_S).")
@click.option("--allow-redis-down", is_flag=True,
              help="Exit 0 when Redis cannot be reached (liveness: a Redis outage is no reason to restart).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def probe(service: str, ready: bool, max_age_s: float | None, allow_redis_down: bool, as_json: bool) -> None:
    """Exit 0 when this container's SERVICE instance has a fresh heartbeat (with --ready: and is running).

    Meant for exec probes and container healthchecks; exits 1 when the heartbeat is missing, stale, or
    says the instance is stopped or down.
    """
    from bulwark.cli.main import cli_settings
    from bulwark.redis_client import make_redis

    settings = cli_settings()
    instance = settings.instance_id if "instance_id" in settings.model_fields_set else None
    limit = max_age_s if max_age_s is not None else settings.heartbeat_ttl_s
    try:
        client = make_redis(settings, timeout_s=2)
        hb = find_heartbeat(client, RedisKeys(settings.redis_prefix), service, instance=instance,
                            host=socket.gethostname())
    except redis.RedisError as exc:
        result = ProbeResult(allow_redis_down, service, instance or "", "unknown", None,
                             f"Redis unreachable ({type(exc).__name__}); heartbeat not read")
    else:
        result = judge(hb, service=service, instance=instance or "", now=time.time(), max_age_s=limit,
                       ready=ready)
    click.echo(json.dumps(asdict(result)) if as_json else result.line())
    if not result.ok:
        sys.exit(1)


COMMANDS = [probe]
