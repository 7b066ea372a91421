"""Client channels to Bulwark's own gRPC APIs (the CLI, the console, the doctor's probe), with TLS and the
bearer token from settings."""

from __future__ import annotations

from typing import Any

import grpc

from bulwark.settings import CommonSettings


def channel(settings: CommonSettings, target: str) -> grpc.Channel:
    """A channel to `target`: TLS when a CA is configured, plaintext otherwise."""
    if settings.client_tls_ca:
        creds = grpc.ssl_channel_credentials(root_certificates=settings.client_tls_ca.read_bytes())
        return grpc.secure_channel(target, creds)
    return grpc.insecure_channel(target)


def metadata(settings: CommonSettings) -> list[tuple[str, str]]:
    """Call metadata carrying the bearer token, if one is configured."""
    if settings.client_token is None:
        return []
    return [("authorization", f"Bearer {settings.client_token.get_secret_value()}")]


def call(fn: Any, request: Any, settings: CommonSettings, *, timeout: float = 10.0) -> Any:
    """Invoke a stub method with the token and a deadline."""
    return fn(request, timeout=timeout, metadata=metadata(settings))


def to_values(record: dict[str, Any]) -> dict[str, Any]:
    """A record's fields as `common_pb2.Value`s (bool: flag, number: number, text: category)."""
    from bulwark.api.v1 import common_pb2

    out = {}
    for name, value in record.items():
        if isinstance(value, bool):
            out[name] = common_pb2.Value(flag=value)
        elif isinstance(value, (int, float)):
            out[name] = common_pb2.Value(number=float(value))
        elif isinstance(value, str):
            out[name] = common_pb2.Value(category=value)
    return out
