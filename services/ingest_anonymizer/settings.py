"""The anonymizer's own settings (`BULWARK_ANONYMIZER_*`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from bulwark.settings import ServiceSettings
from services.ingest_anonymizer.policy import DEFAULT_POLICY


class AnonymizerSettings(ServiceSettings):
    """ingest-anonymizer: which policy, and how long subject keys stay cached in memory."""

    model_config = SettingsConfigDict(env_prefix="BULWARK_ANONYMIZER_", frozen=True, extra="ignore",
                                      use_attribute_docstrings=True)

    policy: Path | None = None
    """The anonymization policy file (YAML), validated at start; default: the packaged policies/default.yaml."""
    subject_key_cache_size: int = Field(50_000, ge=0)
    """Unwrapped subject keys kept in memory (0: none; every event reads Redis)."""
    subject_key_cache_ttl_s: float = Field(60.0, ge=0)
    """How long a cached subject key is used before it is read again; a forget clears the cache within ~1 s."""

    @property
    def policy_path(self) -> Path:
        """The policy file in use."""
        return self.policy or DEFAULT_POLICY
