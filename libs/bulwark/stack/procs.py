"""Running parts as child processes: the test fixtures' runner (no process manager needed).

Each part runs in its own process group with its output in one log file; `start()` returns once the part's
own readiness check passes, `stop()` sends SIGTERM and, after the part's grace period, SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from bulwark.stack.parts import PartError, PartSpec


class ManagedProcess:
    """One running part."""

    def __init__(self, spec: PartSpec, log_dir: Path) -> None:
        self.spec = spec
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{spec.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, wait: bool = True) -> ManagedProcess:
        """Start the part (and wait for readiness unless `wait` is false)."""
        env = {k: v for k, v in os.environ.items() if k not in self.spec.unset_env}
        env.update(self.spec.env)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.spec.argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.spec.cwd, start_new_session=True)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self) -> None:
        """Block until the readiness check passes; raise with the log's tail if the part dies or times out."""
        deadline = time.monotonic() + self.spec.ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise PartError(f"{self.spec.name} exited with {self.proc.returncode} while starting; "
                                f"log {self.log_path}:\n{self.tail()}")
            if self.spec.ready():
                return
            time.sleep(0.1)
        raise PartError(f"{self.spec.name} not ready after {self.spec.ready_timeout_s:.0f}s; log {self.log_path}:\n"
                        f"{self.tail()}")

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        """Send `sig` to the part's whole process group."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """SIGKILL, and reap."""
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after the grace period."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=self.spec.stop_timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def restart(self) -> None:
        """Stop, then start and wait for readiness."""
        self.stop()
        self.start()

    def tail(self, lines: int = 30) -> str:
        """The last lines of the part's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
