"""`make demo`'s local stack under supervisord: one log per process under `<home>/stack/logs/`.

`up()` decides what to start (an infrastructure part is skipped when its variable points at a running one:
KAFKA_BOOTSTRAP_SERVERS, REDIS_URL, TRITON_GRPC_URL; Redis is also reused when one answers on
127.0.0.1:6379), writes `supervisord.conf` and `stack.env`, starts supervisord, then starts each part in
order and waits for its own readiness check, creates the topics, and starts the services. `down()` shuts
supervisord down, which stops exactly what it started.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from bulwark.crypto.keyset import init_keys
from bulwark.stack import catalog
from bulwark.stack.parts import (
    PartError,
    PartSpec,
    SeaweedPorts,
    TritonPorts,
    port_open,
    redis_ready,
    redis_spec,
    seaweedfs_spec,
    tansu_spec,
    triton_spec,
    venv_bin,
)

DEFAULT_KAFKA_PORT = 9092
DEFAULT_REDIS_PORT = 6379
DEFAULT_TRITON = TritonPorts(http=8000, grpc=8001, metrics=8002)
SEAWEED_BASE_PORT = 18330


@dataclass
class StackLayout:
    """Where the local stack keeps its files."""

    home: Path

    @property
    def dir(self) -> Path:
        """The stack's own folder."""
        return self.home / "stack"

    @property
    def conf(self) -> Path:
        """supervisord's configuration."""
        return self.dir / "supervisord.conf"

    @property
    def env_file(self) -> Path:
        """KEY=value lines every process and the CLI read: where the parts are."""
        return self.dir / "stack.env"

    @property
    def logs(self) -> Path:
        """One log per process."""
        return self.dir / "logs"

    @property
    def sock(self) -> Path:
        """supervisord's control socket."""
        return self.dir / "supervisord.sock"

    @property
    def pidfile(self) -> Path:
        """supervisord's pid file."""
        return self.dir / "supervisord.pid"


@dataclass
class Plan:
    """What `up()` starts and the endpoints every process is given."""

    parts: list[PartSpec] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    # Part name -> endpoint, for parts the stack uses but did not start, and for those it starts.
    external: dict[str, str] = field(default_factory=dict)
    managed: dict[str, str] = field(default_factory=dict)


def plan(layout: StackLayout, environ: dict[str, str] | None = None) -> Plan:
    """Decide which parts to start and which external ones to use."""
    environ = dict(os.environ if environ is None else environ)
    p = Plan()
    home = layout.home.resolve()
    p.env.update(BULWARK_HOME=str(home), BULWARK_KEYS_DIR=str(home / "keys"))

    if environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        p.external["kafka"] = environ["KAFKA_BOOTSTRAP_SERVERS"]
        p.env["KAFKA_BOOTSTRAP_SERVERS"] = environ["KAFKA_BOOTSTRAP_SERVERS"]
    else:
        _require_free("Kafka", DEFAULT_KAFKA_PORT, "set KAFKA_BOOTSTRAP_SERVERS to use a running broker")
        sw = seaweedfs_spec(home / "stack" / "s3", SeaweedPorts.from_base(SEAWEED_BASE_PORT))
        p.parts += [sw, tansu_spec(DEFAULT_KAFKA_PORT, s3_endpoint=sw.endpoints["s3"])]
        p.env["KAFKA_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{DEFAULT_KAFKA_PORT}"
        p.managed.update(seaweedfs=sw.endpoints["s3"], kafka=p.env["KAFKA_BOOTSTRAP_SERVERS"])

    if environ.get("REDIS_URL"):
        if not redis_ready(environ["REDIS_URL"]):
            raise PartError(f"REDIS_URL={_mask(environ['REDIS_URL'])} does not answer PING; start that Redis or "
                            "unset REDIS_URL to let the stack start its own")
        p.external["redis"] = _mask(environ["REDIS_URL"])
        p.env["REDIS_URL"] = environ["REDIS_URL"]
    elif redis_ready(f"redis://127.0.0.1:{DEFAULT_REDIS_PORT}/0"):
        p.external["redis"] = f"redis://127.0.0.1:{DEFAULT_REDIS_PORT}/0 (already running)"
        p.env["REDIS_URL"] = f"redis://127.0.0.1:{DEFAULT_REDIS_PORT}/0"
    else:
        spec = redis_spec(DEFAULT_REDIS_PORT, home / "stack" / "redis")
        p.parts.append(spec)
        p.env["REDIS_URL"] = spec.endpoints["url"]
        p.managed["redis"] = spec.endpoints["url"]

    if environ.get("TRITON_GRPC_URL"):
        p.external["triton"] = environ["TRITON_GRPC_URL"]
        p.env["TRITON_GRPC_URL"] = environ["TRITON_GRPC_URL"]
        if environ.get("TRITON_HTTP_URL"):
            p.env["TRITON_HTTP_URL"] = environ["TRITON_HTTP_URL"]
    else:
        for port in (DEFAULT_TRITON.http, DEFAULT_TRITON.grpc, DEFAULT_TRITON.metrics):
            _require_free("Triton", port, "set TRITON_GRPC_URL and TRITON_HTTP_URL to use a running Triton")
        # Triton's Python backend decrypts artifacts in memory: it needs the key-encryption key.
        spec = triton_spec(home / "model-repository", DEFAULT_TRITON, extra_env={"BULWARK_KEYS_DIR": str(home / "keys")})
        p.parts.append(spec)
        p.env.update(TRITON_GRPC_URL=spec.endpoints["grpc"], TRITON_HTTP_URL=spec.endpoints["http"])
        p.managed["triton"] = spec.endpoints["grpc"]
    return p


def _require_free(what: str, port: int, hint: str) -> None:
    if port_open("127.0.0.1", port):
        raise PartError(f"port {port} for the local {what} is taken by another process; stop it or {hint}")


def _mask(url: str) -> str:
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def _quote(value: str) -> str:
    # supervisord's environment= syntax: double-quoted, % doubled.
    return '"' + value.replace("%", "%%").replace('"', '\\"') + '"'


def render_conf(layout: StackLayout, pl: Plan) -> str:
    """supervisord.conf for the plan: infrastructure parts and every service, none started automatically."""
    lines = [
        "; Written by `bulwark stack up`; regenerated on every start.",
        "[unix_http_server]", f"file={layout.sock}", "chmod=0700", "",
        "[supervisord]", f"logfile={layout.logs / 'supervisord.log'}", f"pidfile={layout.pidfile}",
        f"childlogdir={layout.logs}", "nodaemon=false", "minfds=4096", "",
        "[rpcinterface:supervisor]", "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "", "[supervisorctl]", f"serverurl=unix://{layout.sock}", "",
    ]

    def program(name: str, argv: list[str], env: dict[str, str], stop_s: float) -> None:
        lines.extend([
            f"[program:{name}]",
            "command=" + " ".join(shlex.quote(a).replace("%", "%%") for a in argv),
            "environment=" + ",".join(f"{k}={_quote(v)}" for k, v in env.items()),
            f"directory={Path.cwd()}",
            "autostart=false", "autorestart=true", "startsecs=1", "startretries=10",
            "stopsignal=TERM", f"stopwaitsecs={int(stop_s) + 2}", "stopasgroup=true", "killasgroup=true",
            f"stdout_logfile={layout.logs / (name + '.log')}", "redirect_stderr=true",
            "stdout_logfile_maxbytes=20MB", "stdout_logfile_backups=2", "",
        ])

    for part in pl.parts:
        # supervisord cannot remove an inherited variable; `env -u` does.
        unset = [a for var in part.unset_env for a in ("-u", var)]
        argv = ["env", *unset, *part.argv] if unset else part.argv
        program(part.name, argv, dict(part.env), part.stop_timeout_s)
    service_env = {**pl.env, "PYTHONUNBUFFERED": "1", "BULWARK_TRACES_SINK": os.environ.get("BULWARK_TRACES_SINK", "auto")}
    for svc in catalog.CATALOG:
        env = dict(service_env)
        env["BULWARK_INSTANCE_ID"] = f"{svc.name}-local"
        program(svc.name, [str(venv_bin() / "python"), "-m", svc.module], env, 15)
    return "\n".join(lines)


def write_env(layout: StackLayout, pl: Plan) -> None:
    """Write stack.env (read by the CLI when these variables are unset)."""
    layout.env_file.write_text("".join(f"{k}={v}\n" for k, v in sorted(pl.env.items())))


def load_env_file(home: Path) -> dict[str, str]:
    """The variables of a running stack's stack.env (empty when there is none)."""
    path = StackLayout(home).env_file
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def ctl(layout: StackLayout, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run supervisorctl against this stack."""
    return subprocess.run([str(venv_bin() / "supervisorctl"), "-c", str(layout.conf), *args],
                          capture_output=True, text=True, check=check, timeout=120)


def running(layout: StackLayout) -> bool:
    """True when this stack's supervisord answers."""
    return layout.sock.exists() and ctl(layout, "pid", check=False).returncode == 0


def up(layout: StackLayout, *, services: bool = True, progress: Callable[[str], None] = print) -> Plan:
    """Start the stack (idempotent: a running stack is left as it is and its plan returned)."""
    layout.logs.mkdir(parents=True, exist_ok=True)
    if running(layout):
        progress("stack already running; `make down` stops it")
        pl = Plan(env=load_env_file(layout.home))
        return pl
    pl = plan(layout)
    written = init_keys(layout.home / "keys")
    if written:
        progress(f"generated local keys in {layout.home / 'keys'}")
    layout.conf.write_text(render_conf(layout, pl))
    write_env(layout, pl)
    subprocess.run([str(venv_bin() / "supervisord"), "-c", str(layout.conf)], check=True, timeout=60)
    _wait(lambda: running(layout), 20, "supervisord did not start; see " + str(layout.logs / "supervisord.log"))
    for part in pl.parts:
        progress(f"starting {part.name} ...")
        started = time.monotonic()
        ctl(layout, "start", part.name, check=False)
        _wait(part.ready, part.ready_timeout_s,
              f"{part.name} not ready after {part.ready_timeout_s:.0f}s; see {layout.logs / (part.name + '.log')}")
        progress(f"  {part.name} ready in {time.monotonic() - started:.1f}s")
    _create_topics(pl)
    if services:
        for svc in catalog.CATALOG:
            ctl(layout, "start", svc.name, check=False)
            progress(f"started {svc.name}")
    return pl


def _create_topics(pl: Plan) -> None:
    # Same code path as `bulwark topics create`, in a child so it reads the stack's variables.
    env = {**os.environ, **pl.env}
    subprocess.run([str(venv_bin() / "bulwark"), "topics", "create"], env=env, check=True, timeout=120,
                   stdout=subprocess.DEVNULL)


def down(layout: StackLayout, *, progress: Callable[[str], None] = print) -> bool:
    """Stop every process the stack started, and supervisord itself. False when nothing was running."""
    if not running(layout):
        return False
    ctl(layout, "stop", "all", check=False)
    ctl(layout, "shutdown", check=False)
    _wait(lambda: not layout.pidfile.exists(), 60, "supervisord did not exit; see its log")
    progress("stack stopped")
    return True


def _wait(check: Callable[[], bool], timeout_s: float, message: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise PartError(message)
