"""A throwaway PKI for TLS tests: a CA, a server certificate for 127.0.0.1 and a client certificate.

Keys are ECDSA P-256, certificates live one hour, files are PEM (keys unencrypted PKCS#8), so any TLS
stack (OpenSSL in redis-server, Python's `ssl` under kafka-python and redis-py) reads them as they are.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class TestPKI:
    """Paths of one generated PKI's PEM files."""

    __test__ = False  # not a pytest test class

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> tuple[Path, Path]:
    key_path, cert_path = path.with_suffix(".key"), path.with_suffix(".crt")
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def _issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
           issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool = False,
           san: list[x509.GeneralName] | None = None,
           usage: list[x509.ObjectIdentifier] | None = None) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(hours=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(root: Path, tag: str, *, server_name: str = "bulwark-test-server") -> TestPKI:
    """A CA, a server certificate valid for 127.0.0.1 and localhost, and a client certificate, all signed
    by the CA and written under `root` with `tag` in their names (two PKIs can share a folder)."""
    root.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_name = _name(f"bulwark test CA {tag}")
    ca = _issue(f"bulwark test CA {tag}", ca_key, ca_name, ca_key, ca=True)
    _, ca_crt = _write(root / f"ca-{tag}", ca_key, ca)
    server_key = _key()
    server = _issue(server_name, server_key, ca_name, ca_key,
                    san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
                    usage=[ExtendedKeyUsageOID.SERVER_AUTH])
    server_key_path, server_crt = _write(root / f"server-{tag}", server_key, server)
    client_key = _key()
    client = _issue("bulwark-service", client_key, ca_name, ca_key, usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
    client_key_path, client_crt = _write(root / f"client-{tag}", client_key, client)
    return TestPKI(ca=ca_crt, server_cert=server_crt, server_key=server_key_path,
                   client_cert=client_crt, client_key=client_key_path)
