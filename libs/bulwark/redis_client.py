"""The one Redis client factory: URL, password and TLS from settings, timeouts that fail fast.

A Redis that cannot be reached raises `UnavailableError` quickly (short socket timeouts), so consumers
retry with back-off and the doctor reports Redis down, instead of a process hanging.
"""

from __future__ import annotations

import redis

from bulwark.errors import UnavailableError
from bulwark.settings import CommonSettings

# Redis out of reach (connection refused or reset, a timeout, a restarted server still loading its data): the
# errors that say a dependency is down, not that a request or an event is wrong. Code that talks to Redis
# raises `UnavailableError` for them; where a raw one still escapes, the consumer loop retries the batch and
# the gRPC layer answers UNAVAILABLE, through `outage`.
OUTAGES = (redis.ConnectionError, redis.TimeoutError)


def outage(who: str, exc: BaseException) -> UnavailableError:
    """The `UnavailableError` for a raw Redis outage `exc` met by `who`."""
    return UnavailableError(f"{who}: Redis unreachable ({type(exc).__name__}); retry with backoff")


def make_redis(settings: CommonSettings, *, timeout_s: float = 2.0, decode: bool = False) -> redis.Redis:
    """A Redis client for `settings.redis_url` (password and TLS options applied)."""
    kwargs: dict[str, object] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "health_check_interval": 30,
        "decode_responses": decode,
        "retry_on_timeout": False,
    }
    if settings.redis_password is not None:
        kwargs["password"] = settings.redis_password.get_secret_value()
    if settings.redis_url.startswith("rediss://"):
        if settings.redis_tls_ca:
            kwargs["ssl_ca_certs"] = str(settings.redis_tls_ca)
        if settings.redis_tls_cert:
            kwargs["ssl_certfile"] = str(settings.redis_tls_cert)
        if settings.redis_tls_key:
            kwargs["ssl_keyfile"] = str(settings.redis_tls_key)
    return redis.Redis.from_url(settings.redis_url, **kwargs)


def ping(client: redis.Redis) -> None:
    """Raise `UnavailableError` unless Redis answers."""
    try:
        client.ping()
    except redis.RedisError as exc:
        raise UnavailableError(f"Redis is unreachable ({type(exc).__name__}); check REDIS_URL and that "
                               "redis-server is running") from None
