"""Redis security as the platform configures it: TLS with a generated CA, client certificates and AUTH,
against a real redis-server (Debian's is built with TLS)."""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bulwark.redis_client import make_redis, ping
from bulwark.errors import UnavailableError
from bulwark.redis_keys import RedisKeys
from bulwark.registry import ModelRegistry
from bulwark.settings import CommonSettings

pytestmark = pytest.mark.integration
PASSWORD = "tls-test-" + "x" * 24


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> tuple[Path, Path]:
    key_path, cert_path = path.with_suffix(".key"), path.with_suffix(".crt")
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def _issue(name: str, key, issuer_name: x509.Name, issuer_key, *, ca: bool = False,  # noqa: ANN001
           san: list[x509.GeneralName] | None = None) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .issuer_name(issuer_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(hours=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(root: Path, tag: str) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    import ipaddress

    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"bulwark test CA {tag}")])
    ca = _issue(f"bulwark test CA {tag}", ca_key, ca_name, ca_key, ca=True)
    _, ca_crt = _write(root / f"ca-{tag}", ca_key, ca)
    server_key = _key()
    server = _issue("redis", server_key, ca_name, ca_key,
                    san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
    server_key_path, server_crt = _write(root / f"server-{tag}", server_key, server)
    client_key = _key()
    client = _issue("bulwark-service", client_key, ca_name, ca_key)
    client_key_path, client_crt = _write(root / f"client-{tag}", client_key, client)
    return {"ca": ca_crt, "server_cert": server_crt, "server_key": server_key_path,
            "client_cert": client_crt, "client_key": client_key_path}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, dict[str, Path], dict[str, Path]]]:
    server_bin = shutil.which("redis-server")
    if server_bin is None:
        pytest.fail("redis-server is not installed: `make system-deps` installs it")
    root = tmp_path_factory.mktemp("redis-tls")
    pki, other = make_pki(root, "a"), make_pki(root, "b")
    port = _free_port()
    proc = subprocess.Popen([server_bin, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                             "--tls-cert-file", str(pki["server_cert"]), "--tls-key-file", str(pki["server_key"]),
                             "--tls-ca-cert-file", str(pki["ca"]), "--tls-auth-clients", "yes",
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


def settings(port: int, pki: dict[str, Path] | None, *, password: str | None = PASSWORD,
             scheme: str = "rediss") -> CommonSettings:
    fields: dict[str, object] = {"redis_url": f"{scheme}://127.0.0.1:{port}/0", "redis_prefix": "tls"}
    if password is not None:
        fields["redis_password"] = password
    if pki is not None:
        fields.update(redis_tls_ca=pki["ca"], redis_tls_cert=pki["client_cert"], redis_tls_key=pki["client_key"])
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
