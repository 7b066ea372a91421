"""Settings: defaults, conventional variable names, and errors that name the variable to fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from bulwark.errors import SettingsError
from bulwark.settings import CommonSettings, ServiceSettings, describe, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith(("BULWARK_", "KAFKA_", "REDIS_", "TRITON_")):
            monkeypatch.delenv(key)


def test_defaults_and_topic_names() -> None:
    s = load_settings(CommonSettings)
    assert s.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert s.topics.events_raw == "events.raw" and s.topics.events_dlq == "events.dlq"
    assert s.keys_path == Path("var/keys")


def test_conventional_and_prefixed_names_both_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("REDIS_URL", "redis://r:6379/1")
    monkeypatch.setenv("BULWARK_TOPIC_EVENTS_RAW", "raw.v2")
    s = load_settings(CommonSettings)
    assert s.kafka_bootstrap_servers == "k1:9092,k2:9092"
    assert s.redis_url == "redis://r:6379/1"
    assert s.topics.events_raw == "raw.v2"


@pytest.mark.parametrize(
    ("var", "value", "fragment"),
    [
        ("BULWARK_KAFKA_PARTITIONS", "many", "BULWARK_KAFKA_PARTITIONS"),
        ("BULWARK_KAFKA_PARTITIONS", "0", "greater than or equal to 1"),
        ("KAFKA_SECURITY_PROTOCOL", "TLS", "BULWARK_KAFKA_SECURITY_PROTOCOL"),
        ("BULWARK_REDIS_PREFIX", "Has Spaces", "BULWARK_REDIS_PREFIX"),
        ("BULWARK_MAX_EVENT_BYTES", "12", "BULWARK_MAX_EVENT_BYTES"),
    ],
)
def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, var: str, value: str, fragment: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as info:
        load_settings(CommonSettings)
    assert fragment in info.value.message


def test_secret_values_are_masked_in_errors_and_descriptions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_PASSWORD", "hunter2")
    s = load_settings(CommonSettings)
    assert "hunter2" not in str(describe(s)) and "hunter2" not in repr(s)
    assert s.redis_password is not None and s.redis_password.get_secret_value() == "hunter2"


def test_service_settings_use_their_own_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    class DemoSettings(ServiceSettings):
        model_config = SettingsConfigDict(env_prefix="BULWARK_DEMO_", frozen=True)
        batch: int = Field(8, ge=1)
        """Batch size."""

    monkeypatch.setenv("BULWARK_DEMO_BATCH", "-3")
    with pytest.raises(SettingsError, match="BULWARK_DEMO_BATCH"):
        load_settings(DemoSettings)
    monkeypatch.setenv("BULWARK_DEMO_BATCH", "32")
    assert load_settings(DemoSettings).batch == 32


def test_settings_are_frozen() -> None:
    s = load_settings(CommonSettings)
    with pytest.raises(Exception):
        s.redis_url = "redis://elsewhere"  # type: ignore[misc]


def test_configuration_reference_is_fresh() -> None:
    from pathlib import Path

    from bulwark.cli.config import markdown

    doc = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
    assert doc.read_text() == markdown(), "docs/configuration.md is stale: run `bulwark config --markdown > docs/configuration.md`"
