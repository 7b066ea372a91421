"""Redis security as the platform configures it: TLS with a generated CA, client certificates and AUTH,
against a real redis-server (Debian's is built with TLS)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from typing import Iterator

import pytest
import redis

from bulwark.redis_client import make_redis, ping
from bulwark.errors import UnavailableError
from bulwark.redis_keys import RedisKeys
from bulwark.registry import ModelRegistry
from bulwark.settings import CommonSettings
from bulwark.stack.parts import free_port
from bulwark.testing.certs import TestPKI, make_pki

pytestmark = pytest.mark.integration
PASSWORD = "tls-test-" + "x" * 24


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, TestPKI, TestPKI]]:
    server_bin = shutil.which("redis-server")
    if server_bin is None:
        pytest.fail("redis-server is not installed: `make system-deps` installs it")
    root = tmp_path_factory.mktemp("redis-tls")
    pki, other = make_pki(root, "a", server_name="redis"), make_pki(root, "b", server_name="redis")
    port = free_port()
    proc = subprocess.Popen([server_bin, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                             "--tls-cert-file", str(pki.server_cert), "--tls-key-file", str(pki.server_key),
                             "--tls-ca-cert-file", str(pki.ca), "--tls-auth-clients", "yes",
                             "--requirepass", PASSWORD, "--save", "", "--appendonly", "no", "--dir", str(root)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"redis-server with TLS did not start: {proc.stdout.read().decode()[-500:]}")  # type: ignore[union-attr]
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    yield port, pki, other
    proc.kill()
    proc.wait()


def settings(port: int, pki: TestPKI | None, *, password: str | None = PASSWORD,
             scheme: str = "rediss") -> CommonSettings:
    fields: dict[str, object] = {"redis_url": f"{scheme}://127.0.0.1:{port}/0", "redis_prefix": "tls"}
    if password is not None:
        fields["redis_password"] = password
    if pki is not None:
        fields.update(redis_tls_ca=pki.ca, redis_tls_cert=pki.client_cert, redis_tls_key=pki.client_key)
    return CommonSettings(**fields)


def test_tls_with_client_certificate_and_password_carries_platform_state(tls_redis) -> None:  # noqa: ANN001
    port, pki, _ = tls_redis
    client = make_redis(settings(port, pki))
    ping(client)
    registry = ModelRegistry(client, RedisKeys("tls"))
    version = registry.next_version("fraud")
    registry.record("fraud", version, family="mlp")
    assert registry.get("fraud", version)["family"] == "mlp"


@pytest.mark.parametrize("case", ["plaintext", "no password", "wrong password", "CA of another PKI"])
def test_anything_less_is_refused_with_a_clear_error(tls_redis, case: str) -> None:  # noqa: ANN001
    port, pki, other = tls_redis
    cfg = {"plaintext": settings(port, None, scheme="redis"),
           "no password": settings(port, pki, password=None),
           "wrong password": settings(port, pki, password="not-the-password"),
           "CA of another PKI": settings(port, other)}[case]
    client = make_redis(cfg, timeout_s=1.0)
    with pytest.raises(UnavailableError) as err:
        ping(client)
    assert "Redis is unreachable" in err.value.message and "REDIS_URL" in err.value.message
    # and the password never appears in what a person is shown
    assert PASSWORD not in err.value.message and "not-the-password" not in err.value.message
    with pytest.raises(redis.RedisError):
        client.set("tls:probe", b"1")
