"""Service processes for tests: start `python -m <module>` against a `TestStack`, know when it is up
(its heartbeat says running), kill it, stop it gracefully; and read what it produced."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable

from bulwark.bus.reader import read_topic
from bulwark.events import Envelope
from bulwark.redis_client import make_redis
from bulwark.redis_keys import RedisKeys
from bulwark.settings import CommonSettings

REPO_ROOT = Path(__file__).resolve().parents[3]


_STARTED: list["ServiceProcess"] = []


def kill_all() -> None:
    """SIGKILL every service process a test started and left running (test teardown)."""
    while _STARTED:
        _STARTED.pop().kill()


class ServiceProcess:
    """One service instance as a child process with its own log file."""

    __test__ = False

    def __init__(self, module: str, service: str, env: dict[str, str], log_dir: Path, *,
                 instance: str | None = None) -> None:
        self.module = module
        self.service = service
        self.instance = instance or f"{service}-{uuid.uuid4().hex[:6]}"
        self.env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **env, "BULWARK_INSTANCE_ID": self.instance}
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{self.instance}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, wait: bool = True, timeout_s: float = 60) -> ServiceProcess:
        """Start, and (by default) wait until the instance's heartbeat reports running."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", self.module], env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO_ROOT)
        _STARTED.append(self)
        if wait:
            self.wait_running(timeout_s)
        return self

    def wait_running(self, timeout_s: float = 60) -> None:
        """Block until the heartbeat says running; fail with the log's tail if the process exits."""
        client = make_redis(settings_from_env(self.env))
        key = RedisKeys(self.env.get("BULWARK_REDIS_PREFIX", "bulwark")).heartbeat(self.service, self.instance)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.service} exited with {self.proc.returncode}:\n{self.tail()}")
            status = client.hget(key, "status")
            if status == b"running":
                return
            time.sleep(0.1)
        raise TimeoutError(f"{self.service} not running after {timeout_s}s:\n{self.tail()}")

    def detach(self) -> ServiceProcess:
        """Leave this process out of the per-test `kill_all` (a wider-scoped fixture then stops it itself)."""
        if self in _STARTED:
            _STARTED.remove(self)
        return self

    def kill(self) -> None:
        """SIGKILL: no chance to commit or clean up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def terminate(self, timeout_s: float = 30) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout_s)

    def wait_exit(self, timeout_s: float = 60) -> int:
        """Wait for the process to exit by itself; returns the exit code."""
        assert self.proc is not None
        return self.proc.wait(timeout=timeout_s)

    @property
    def alive(self) -> bool:
        """True while running."""
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 40) -> str:
        """The end of the log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def settings_from_env(env: dict[str, str]) -> CommonSettings:
    """Common settings as a process started with `env` would read them (this process's environment is restored)."""
    saved = dict(os.environ)
    try:
        os.environ.update(env)
        return CommonSettings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def collect(settings: CommonSettings, topic: str, *, until: Callable[[list[Envelope]], bool],
            timeout_s: float = 60, idle_ms: int = 500) -> list[Envelope]:
    """Re-read `topic` until `until(events)` holds or the timeout passes; returns every event read."""
    deadline = time.monotonic() + timeout_s
    events: list[Envelope] = []
    while time.monotonic() < deadline:
        events = [e for _, e in read_topic(settings, topic, idle_ms=idle_ms) if e is not None]
        if until(events):
            return events
        time.sleep(0.3)
    return events


def distinct(events: list[Envelope]) -> dict[str, Envelope]:
    """Events de-duplicated by id, as a consumer that de-duplicates sees them."""
    return {e.id: e for e in events}
