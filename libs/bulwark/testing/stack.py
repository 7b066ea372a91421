"""Real parts for tests: a Tansu broker on SeaweedFS S3, redis-server, tritonserver, on free ports.

Parts start on first use and stop at the end of the session; readiness is each part's own health check.
Every test gets its own topics and consumer groups (`topic()`, `group()`), so tests never see each other's
records, and a broker shared by the session stays cheap.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from bulwark.bus.admin import ensure_topics
from bulwark.crypto.keyset import init_keys
from bulwark.settings import CommonSettings, load_settings
from bulwark.stack.parts import (
    SeaweedPorts,
    TritonPorts,
    free_port,
    redis_spec,
    seaweedfs_spec,
    tansu_spec,
    triton_spec,
)
from bulwark.stack.procs import ManagedProcess


class TestStack:
    """The session's real parts; each started on first use."""

    __test__ = False  # not a pytest test class

    def __init__(self, root: Path, *, kafka_storage: str = "s3") -> None:
        if kafka_storage not in ("s3", "memory"):
            raise ValueError(f"kafka_storage must be 's3' or 'memory', not {kafka_storage!r}")
        self.root = root
        self.kafka_storage = kafka_storage
        self.logs = root / "logs"
        self.keys_dir = root / "keys"
        init_keys(self.keys_dir)
        self._s3: ManagedProcess | None = None
        self._kafka: ManagedProcess | None = None
        self._redis: ManagedProcess | None = None
        self._triton: ManagedProcess | None = None
        self._kafka_port = free_port()
        self._redis_port = free_port()
        self._triton_ports = TritonPorts.free()

    # ------------------------------------------------------------------ parts
    @property
    def kafka(self) -> ManagedProcess:
        """The broker: Tansu with S3 storage (a restart keeps topics and committed offsets), or with memory
        storage when asked (`kafka_storage="memory"`: faster writes, lost on restart)."""
        if self._kafka is None:
            endpoint = None
            if self.kafka_storage == "s3":
                self._s3 = ManagedProcess(seaweedfs_spec(self.root / "s3", SeaweedPorts.free()), self.logs).start()
                endpoint = self._s3.spec.endpoints["s3"]
            spec = tansu_spec(self._kafka_port, s3_endpoint=endpoint)
            self._kafka = ManagedProcess(spec, self.logs).start()
        return self._kafka

    @property
    def redis(self) -> ManagedProcess:
        """A redis-server of this session's own."""
        if self._redis is None:
            self._redis = ManagedProcess(redis_spec(self._redis_port, self.root / "redis"), self.logs).start()
        return self._redis

    @property
    def triton(self) -> ManagedProcess:
        """tritonserver (CPU, Python backend, explicit model control) over `<root>/model-repository`."""
        if self._triton is None:
            spec = triton_spec(self.model_repository, self._triton_ports, extra_env=self._triton_env())
            self._triton = ManagedProcess(spec, self.logs).start()
        return self._triton

    def _triton_env(self) -> dict[str, str]:
        # Models decrypt artifacts in memory at load: they need the key-encryption key and verify keys.
        return {"BULWARK_KEYS_DIR": str(self.keys_dir)}

    @property
    def model_repository(self) -> Path:
        """Triton's model repository folder."""
        return self.root / "model-repository"

    @property
    def bootstrap(self) -> str:
        """Kafka bootstrap servers."""
        return self.kafka.spec.endpoints["bootstrap"]

    @property
    def redis_url(self) -> str:
        """Redis URL."""
        return self.redis.spec.endpoints["url"]

    # ------------------------------------------------------------------ helpers
    def env(self, *, triton: bool = False) -> dict[str, str]:
        """Environment variables pointing a service process at this stack."""
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "REDIS_URL": self.redis_url,
            "BULWARK_HOME": str(self.root / "home"),
            "BULWARK_KEYS_DIR": str(self.keys_dir),
            "BULWARK_MODEL_REPOSITORY": str(self.model_repository),
            "BULWARK_KAFKA_SESSION_TIMEOUT_MS": "3000",
            "BULWARK_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
            "BULWARK_TRACES_SINK": "none",
            "BULWARK_HEARTBEAT_INTERVAL_S": "0.5",
            "BULWARK_HEARTBEAT_TTL_S": "3",
            "PYTHONUNBUFFERED": "1",
        }
        if triton:
            env["TRITON_GRPC_URL"] = self.triton.spec.endpoints["grpc"]
            env["TRITON_HTTP_URL"] = self.triton.spec.endpoints["http"]
        return env

    def settings(self, *, triton: bool = False, **overrides: Any) -> CommonSettings:
        """CommonSettings for in-process use against this stack (environment left untouched)."""
        saved = dict(os.environ)
        try:
            os.environ.update(self.env(triton=triton))
            return load_settings(CommonSettings, **overrides)
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def topic(self, prefix: str = "t", *, partitions: int = 2) -> str:
        """A new topic no other test uses."""
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        ensure_topics(self.settings(), [name], partitions=partitions)
        return name

    def topics(self, *, partitions: int = 2) -> dict[str, str]:
        """A full set of the platform's topic names for one test, created, as BULWARK_TOPIC_* overrides."""
        suffix = uuid.uuid4().hex[:8]
        names = {f"topic_{f}": f"{n}-{suffix}" for f, n in _topic_fields().items()}
        ensure_topics(self.settings(), list(names.values()), partitions=partitions)
        return names

    @staticmethod
    def group(prefix: str = "g") -> str:
        """A consumer group id no other test uses (Tansu never re-assigns a group whose first join failed)."""
        return f"{prefix}-{uuid.uuid4().hex[:10]}"

    def stop(self) -> None:
        """Stop every part that was started."""
        for part in (self._triton, self._kafka, self._s3, self._redis):
            if part is not None:
                part.stop()


def _topic_fields() -> dict[str, str]:
    from bulwark.topics import Topics

    return {name: value for name, value in vars(Topics()).items()}


def topic_env(names: dict[str, str]) -> dict[str, str]:
    """BULWARK_TOPIC_* variables for the names `TestStack.topics()` returned."""
    return {f"BULWARK_{k.upper()}": v for k, v in names.items()}
