"""`bulwark probe`: the exec probe behind the chart's and Compose's health checks (a fake Redis client)."""

from __future__ import annotations

import json
import socket
import time
from typing import Any, Iterator

import pytest
import redis
from click.testing import CliRunner

from bulwark.cli import probe as probe_module
from bulwark.cli.main import cli
from bulwark.cli.probe import judge
from bulwark.redis_keys import RedisKeys

NOW = 1_000_000.0


class _FakeRedis:
    """hgetall and scan_iter over a dict of hashes (bytes, as redis-py returns them)."""

    def __init__(self, hashes: dict[str, dict[str, str]] | None = None, *, down: bool = False) -> None:
        self.hashes = {k: {f.encode(): v.encode() for f, v in h.items()} for k, h in (hashes or {}).items()}
        self.down = down

    def hgetall(self, key: str | bytes) -> dict[bytes, bytes]:
        if self.down:
            raise redis.ConnectionError("refused")
        return self.hashes.get(key.decode() if isinstance(key, bytes) else key, {})

    def scan_iter(self, match: str, count: int) -> Iterator[bytes]:
        if self.down:
            raise redis.ConnectionError("refused")
        prefix = match.rstrip("*")
        return iter(k.encode() for k in self.hashes if k.startswith(prefix))


def _beat(status: str = "running", age: float = 1.0, host: str = "pod-a", instance: str = "pod-a",
          **extra: str) -> dict[str, str]:
    return {"service": "trainer", "instance": instance, "host": host, "status": status,
            "at": str(time.time() - age), **extra}


@pytest.mark.parametrize(("heartbeat", "ready", "ok"), [
    (None, False, False),                                    # expired or never written
    ({"status": "running", "at": str(NOW - 1)}, True, True),
    ({"status": "running", "at": str(NOW - 11)}, False, False),  # older than max age
    ({"status": "degraded", "at": str(NOW - 1)}, False, True),   # alive: retrying is no reason to restart
    ({"status": "degraded", "at": str(NOW - 1)}, True, False),   # but not ready
    ({"status": "starting", "at": str(NOW - 1)}, True, False),
    ({"status": "stopped", "at": str(NOW - 1)}, False, False),   # the loop has left
    ({"status": "down", "at": str(NOW - 1)}, False, False),
    ({"status": "running"}, False, False),                       # no time: cannot be judged fresh
])
def test_judge_heartbeat_verdicts(heartbeat: dict[str, str] | None, ready: bool, ok: bool) -> None:
    result = judge(heartbeat, service="trainer", instance="i", now=NOW, max_age_s=10, ready=ready)
    assert result.ok is ok
    assert result.detail or ok


def test_judge_reports_service_detail_when_not_ready() -> None:
    hb = {"status": "degraded", "at": str(NOW), "detail": "UNAVAILABLE: poll failed"}
    result = judge(hb, service="s", instance="i", now=NOW, max_age_s=10, ready=True)
    assert result.detail == "UNAVAILABLE: poll failed"


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Any:
    """Invoke `bulwark probe ...` against a fake Redis; returns (exit code, stdout)."""
    monkeypatch.setenv("BULWARK_HOME", str(tmp_path))  # no local stack.env leaks in
    monkeypatch.delenv("BULWARK_INSTANCE_ID", raising=False)
    monkeypatch.delenv("BULWARK_REDIS_PREFIX", raising=False)

    def invoke(fake: _FakeRedis, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
        monkeypatch.setattr("bulwark.redis_client.make_redis", lambda settings, **kw: fake)
        result = CliRunner().invoke(cli, ["probe", *args], env=env or {})
        return result.exit_code, result.output

    return invoke


def test_probe_instance_from_env_fresh_exits_0(run: Any) -> None:
    key = RedisKeys().heartbeat("trainer", "bw-trainer-7d9f")
    code, out = run(_FakeRedis({key: _beat(instance="bw-trainer-7d9f")}), "trainer", "--ready",
                    env={"BULWARK_INSTANCE_ID": "bw-trainer-7d9f"})
    assert code == 0, out
    assert out.startswith("ok service=trainer instance=bw-trainer-7d9f status=running")


def test_probe_other_pods_heartbeat_does_not_count(run: Any) -> None:
    key = RedisKeys().heartbeat("trainer", "bw-trainer-other")
    code, out = run(_FakeRedis({key: _beat(instance="bw-trainer-other")}), "trainer",
                    env={"BULWARK_INSTANCE_ID": "bw-trainer-7d9f"})
    assert code == 1 and "status=missing" in out


def test_probe_without_instance_id_matches_this_host(run: Any) -> None:
    keys = RedisKeys()
    here = socket.gethostname()
    fake = _FakeRedis({
        keys.heartbeat("trainer", "elsewhere-1"): _beat(host="another-container", instance="elsewhere-1"),
        keys.heartbeat("trainer", f"{here}-7"): _beat(host=here, instance=f"{here}-7", age=30.0),
        keys.heartbeat("trainer", f"{here}-9"): _beat(host=here, instance=f"{here}-9", age=0.5),
    })
    code, out = run(fake, "trainer", "--json")
    doc = json.loads(out)
    # The newest beat from this container (a restarted process writes a new instance id).
    assert code == 0 and doc["ok"] is True and doc["instance"] == f"{here}-9"


def test_probe_stale_heartbeat_exits_1(run: Any) -> None:
    key = RedisKeys().heartbeat("trainer", "p")
    fake = _FakeRedis({key: _beat(instance="p", age=30.0)})
    code, out = run(fake, "trainer", env={"BULWARK_INSTANCE_ID": "p"})
    assert code == 1 and "stale" in out


def test_probe_max_age_option_overrides_ttl(run: Any) -> None:
    key = RedisKeys().heartbeat("trainer", "p")
    fake = _FakeRedis({key: _beat(instance="p", age=5.0)})
    assert run(fake, "trainer", "--max-age", "3", env={"BULWARK_INSTANCE_ID": "p"})[0] == 1
    assert run(fake, "trainer", env={"BULWARK_INSTANCE_ID": "p", "BULWARK_HEARTBEAT_TTL_S": "10"})[0] == 0


def test_probe_ready_needs_running(run: Any) -> None:
    key = RedisKeys().heartbeat("trainer", "p")
    fake = _FakeRedis({key: _beat(instance="p", status="degraded", detail="UNAVAILABLE: poll failed")})
    assert run(fake, "trainer", env={"BULWARK_INSTANCE_ID": "p"})[0] == 0
    code, out = run(fake, "trainer", "--ready", env={"BULWARK_INSTANCE_ID": "p"})
    assert code == 1 and "poll failed" in out


def test_probe_redis_down_fails_unless_allowed(run: Any) -> None:
    down = _FakeRedis(down=True)
    code, out = run(down, "trainer", env={"BULWARK_INSTANCE_ID": "p"})
    assert code == 1 and "Redis unreachable" in out
    code, out = run(down, "trainer", "--allow-redis-down", env={"BULWARK_INSTANCE_ID": "p"})
    assert code == 0 and out.startswith("ok ")


def test_probe_uses_configured_key_prefix(run: Any) -> None:
    key = RedisKeys("platform2").heartbeat("trainer", "p")
    fake = _FakeRedis({key: _beat(instance="p")})
    assert run(fake, "trainer", env={"BULWARK_INSTANCE_ID": "p"})[0] == 1
    assert run(fake, "trainer", env={"BULWARK_INSTANCE_ID": "p", "BULWARK_REDIS_PREFIX": "platform2"})[0] == 0


def test_probe_module_registered_once() -> None:
    assert cli.commands["probe"] is probe_module.probe
