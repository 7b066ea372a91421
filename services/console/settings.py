"""The console's own settings (`BULWARK_CONSOLE_*`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from bulwark.settings import ServiceSettings


class ConsoleSettings(ServiceSettings):
    """console: the operator's web page (HTTP) and the JSON API behind it."""

    model_config = SettingsConfigDict(env_prefix="BULWARK_CONSOLE_", frozen=True, extra="ignore",
                                      use_attribute_docstrings=True)

    host: str = "127.0.0.1"
    """Address the HTTP server binds (0.0.0.0 in a container)."""
    port: int = Field(8080, ge=0, le=65535)
    """HTTP port of the page and its JSON API (0 picks a free one)."""
    refresh_s: float = Field(2.0, gt=0, le=300)
    """How often the page asks for fresh figures."""
    alerts_kept: int = Field(500, ge=10, le=100_000)
    """Newest alerts kept in memory for the timeline (read incrementally from the alerts topic)."""
    grpc_timeout_s: float = Field(10.0, gt=0, le=120)
    """Deadline of each call to ModelAdmin and ExplainService."""
    spans: bool = False
    """The chain picture also reads exported spans for error counts (slower on a busy spans topic)."""
