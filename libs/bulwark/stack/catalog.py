"""The services the platform runs, in chain order: one entry each, read by the stack, status and doctor."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceEntry:
    """A service: the module `python -m` runs, its gRPC and HTTP ports in the local demo (0: none)."""

    name: str
    module: str
    grpc_port: int = 0
    http_port: int = 0

    @property
    def script(self) -> str:
        """Its console script."""
        return f"bulwark-{self.name}"


# Chain order: data in, models out, requests served. Ports are the local demo's defaults.
CATALOG: tuple[ServiceEntry, ...] = (
    ServiceEntry("ingest-anonymizer", "services.ingest_anonymizer"),
    ServiceEntry("trainer", "services.trainer"),
    ServiceEntry("quantizer", "services.quantizer"),
    ServiceEntry("robustness-guard", "services.robustness_guard"),
    ServiceEntry("updater", "services.updater", grpc_port=50053),
    ServiceEntry("inference", "services.inference", grpc_port=50051),
    ServiceEntry("explainer", "services.explainer", grpc_port=50052),
    ServiceEntry("console", "services.console", http_port=8080),
)


def names() -> tuple[str, ...]:
    """Every service name, in chain order."""
    return tuple(s.name for s in CATALOG)
