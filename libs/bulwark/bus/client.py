"""Kafka client configuration from settings (bootstrap servers, TLS, SASL), shared by every client."""

from __future__ import annotations

from typing import Any

from bulwark.settings import CommonSettings


def kafka_client_config(settings: CommonSettings, *, client_id: str) -> dict[str, Any]:
    """Keyword arguments for any kafka-python client (producer, consumer, admin)."""
    cfg: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers.split(","),
        "client_id": client_id,
        "security_protocol": settings.kafka_security_protocol,
        "request_timeout_ms": 30_000,
        "reconnect_backoff_max_ms": 2_000,
    }
    if settings.kafka_security_protocol.startswith("SASL"):
        cfg["sasl_mechanism"] = settings.kafka_sasl_mechanism or "PLAIN"
        cfg["sasl_plain_username"] = settings.kafka_sasl_username
        if settings.kafka_sasl_password is not None:
            cfg["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        if settings.kafka_ssl_cafile:
            cfg["ssl_cafile"] = str(settings.kafka_ssl_cafile)
        if settings.kafka_ssl_certfile:
            cfg["ssl_certfile"] = str(settings.kafka_ssl_certfile)
        if settings.kafka_ssl_keyfile:
            cfg["ssl_keyfile"] = str(settings.kafka_ssl_keyfile)
    return cfg
