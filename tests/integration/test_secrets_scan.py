"""No key, token or password in what a running stack produces.

A small real flow, with every secret Bulwark handles in play: a Redis that demands a password (AUTH), a Kafka
SASL password in the environment, the stack's key rings (the front door, Triton and the trainer all load
keys), bearer tokens issued with `bulwark keys token`. The trainer runs in this process (its log records are
captured at DEBUG), the front door runs as its own process at DEBUG with credentials required and spans sent
to the `otlp_spans` topic, and clients call it with good tokens, a token of the wrong scope, a forged token,
the good token under a wrong scheme or mistyped, and no token at all.

Then everything produced is scanned for every secret in every form it could take (raw bytes, base64,
base64url, hex, and the first characters of each, so a truncated leak is caught too): every log file of the
test and of the session's parts, the front door's spans, every record (value, key, headers) on every topic
of the flow, every gRPC error (status details, trailing metadata), what Redis holds under the flow's prefix,
the output of `bulwark keys list`, `bulwark keys tokens` and `bulwark config`, and the Helm chart rendered
with every secret-bearing option on.

The scan must be able to fail: a canary string sent through the same real paths (a model name the front
door echoes in its NOT_FOUND message; a request id that reaches `inference.log` and the front door's spans) and one planted in the Helm
values must be found where it went, and the scanner must find each real secret when it is planted in text or
binary.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterable, Iterator

import grpc
import pytest

from bulwark.api.v1 import common_pb2, inference_pb2, inference_pb2_grpc
from bulwark.bus.reader import read_topic
from bulwark.redis_client import make_redis
from bulwark.redis_keys import RedisKeys
from bulwark.reference import ReferenceGenerator
from bulwark.stack.parts import PartSpec, free_port, redis_binary, redis_spec
from bulwark.stack.procs import ManagedProcess
from bulwark.testing.services import REPO_ROOT, ServiceProcess
from bulwark.testing.stack import TestStack, topic_env
from tests.integration.helpers import deploy, train_version

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # about 2 minutes: a whole flow with every secret in play
PUBLIC_KEY_FILES = {"verify.json"}  # Ed25519 verify keys are public by design: they are not secrets


# ---------------------------------------------------------------------------------------- the scanner
def _forms(name: str, raw: bytes | None = None, text: str | None = None) -> list[tuple[str, bytes]]:
    """Every form a secret could leak in: raw bytes, base64 (padded or not, standard or URL alphabet), hex, the
    text itself, and the first characters of each (a truncated leak is still a leak)."""
    out: list[tuple[str, bytes]] = []
    if raw is not None:
        out.append((f"{name} (raw bytes)", raw))
        if len(raw) >= 24:
            out.append((f"{name} (first 16 raw bytes)", raw[:16]))
        for label, enc in (("base64", base64.b64encode(raw)), ("base64url", base64.urlsafe_b64encode(raw)),
                           ("hex", raw.hex().encode())):
            enc = enc.rstrip(b"=")
            out.append((f"{name} ({label})", enc))
            if len(enc) >= 32:
                out.append((f"{name} (first 20 chars, {label})", enc[:20]))
    if text is not None:
        out.append((name, text.encode()))
        if len(text) >= 32:
            out.append((f"{name} (first 20 chars)", text[:20].encode()))
    # No needle shorter than 12 bytes: it could turn up by chance.
    return [(n, b) for n, b in out if len(b) >= 12]


def _b64decode(value: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except ValueError:
        return None


class SecretScanner:
    """Needles for every secret; `find` names the secrets present in a blob."""

    def __init__(self) -> None:
        self.needles: list[tuple[str, bytes]] = []

    def add_raw(self, name: str, raw: bytes) -> None:
        self.needles += _forms(name, raw=raw)

    def add_text(self, name: str, text: str) -> None:
        self.needles += _forms(name, text=text)

    def add_key_dir(self, keys: Path) -> int:
        """Every key file: its whole text, and each key in it decoded to bytes and re-encoded every way."""
        files = 0
        for path in sorted(p for p in keys.iterdir() if p.is_file() and p.name not in PUBLIC_KEY_FILES):
            files += 1
            body = path.read_bytes()
            if path.suffix == ".json":
                for where, value in _strings(json.loads(body)):
                    if len(value) < 16:
                        continue
                    raw = (bytes.fromhex(value) if re.fullmatch(r"(?:[0-9a-f]{2})+", value)
                           else _b64decode(value))
                    if raw is not None and len(raw) >= 16:
                        self.add_raw(f"{path.name}:{where}", raw)
                    self.add_text(f"{path.name}:{where}", value)
            elif b"PRIVATE KEY" in body:
                der = base64.b64decode(b"".join(body.splitlines()[1:-1]))
                self.add_raw(f"{path.name} (DER)", der)
                self.add_raw(f"{path.name} (Ed25519 seed)", der[-32:])
            else:
                self.add_raw(path.name, body)
        return files

    def find(self, blob: bytes) -> set[str]:
        lower = blob.lower()
        return {name for name, needle in self.needles if needle in blob or needle.lower() in lower}


def _strings(doc: object, where: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _strings(v, f"{where}.{k}" if where else str(k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _strings(v, f"{where}[{i}]")
    elif isinstance(doc, str):
        yield where, doc


@dataclasses.dataclass
class Corpus:
    """Everything the flow produced, by where it came from."""

    blobs: dict[str, bytes] = dataclasses.field(default_factory=dict)

    def add(self, where: str, blob: bytes | str) -> None:
        self.blobs[where] = blob.encode() if isinstance(blob, str) else blob

    def scan(self, scanner: SecretScanner) -> dict[str, set[str]]:
        return {where: hits for where, blob in self.blobs.items() if (hits := scanner.find(blob))}

    def count(self, prefix: str) -> int:
        return sum(1 for w in self.blobs if w.startswith(prefix))


# ---------------------------------------------------------------------------------------- the flow
def features(payload: dict) -> dict[str, common_pb2.Value]:
    out = {k: common_pb2.Value(number=float(payload[k])) for k in
           ("amount", "avg_amount_30d", "distance_from_home_km", "account_age_days", "txn_count_24h", "hour_of_day")}
    out.update({k: common_pb2.Value(flag=bool(payload[k])) for k in ("card_present", "device_new")})
    out.update({k: common_pb2.Value(category=str(payload[k])) for k in ("currency", "merchant_category", "country")})
    return out


def password_redis(root: Path, password: str) -> ManagedProcess:
    """A redis-server of this test's own that demands AUTH; the password is in a 0600 config file, not argv."""
    root.mkdir(parents=True, exist_ok=True)
    conf = root / "redis.conf"
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"requirepass {password}\n")
    port = free_port()
    base = redis_spec(port, root / "data")

    def ready() -> bool:
        import redis

        try:
            return bool(redis.Redis(port=port, password=password, socket_timeout=1).ping())
        except (redis.RedisError, OSError):
            return False

    spec = dataclasses.replace(base, argv=[str(redis_binary()), str(conf), *base.argv[1:]], ready=ready)
    assert isinstance(spec, PartSpec)
    return ManagedProcess(spec, root / "logs").start()


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "bulwark.cli.main", *args], env=env, capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc


def rpc_error_text(exc: grpc.RpcError) -> str:
    trailing = exc.trailing_metadata() or ()
    return "\n".join([str(exc.code()), exc.details() or "", exc.debug_error_string() or "",
                      *[f"{k}: {v!r}" for k, v in trailing]])


def raw_records(settings, topic: str) -> Iterable[bytes]:  # noqa: ANN001
    for rec, _ in read_topic(settings, topic, idle_ms=400, max_wait_s=30):
        yield b"\n".join([rec.key or b"", rec.value or b"", *[k.encode() + b"=" + (v or b"") for k, v in rec.headers]])


def helm_renders(canary: str) -> dict[str, bytes]:
    """The chart rendered (the deploy tests' helper) with its defaults, with production values, with every
    secret-bearing option on, and once with a canary password an operator wrongly put in the Redis URL."""
    import helm_python
    import yaml

    from tests.deploy.conftest import CHART, PRODUCTION, render

    every_secret = {
        "kafka": {"securityProtocol": "SASL_SSL", "sasl": {"mechanism": "SCRAM-SHA-512", "username": "bulwark",
                                                           "passwordSecret": {"name": "kafka-sasl"}},
                  "tls": {"secretName": "kafka-tls", "clientCertificate": True}},
        "redis": {"url": "rediss://redis:6380/0", "passwordSecret": {"name": "redis-auth"},
                  "tls": {"secretName": "redis-tls", "clientCertificate": True}},
        "auth": {"required": True}, "grpcTls": {"secretName": "grpc-tls", "requireClientCertificates": True},
        "services": {"console": {"clientToken": {"secretName": "console-token"}}},
    }
    out = {}
    with helm_python.Chart.load(CHART) as chart:
        for name, values in (("default", {}), ("production", yaml.safe_load(PRODUCTION.read_text())),
                             ("every secret option", every_secret),
                             ("canary", {"redis": {"url": f"redis://:{canary}@redis:6379/0"}})):
            out[f"helm render, {name}"] = json.dumps(render(chart, values).objects).encode()
    return out


@pytest.fixture(scope="module")
def flow(stack: TestStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("secrets")
    logs = root / "logs"
    logs.mkdir()
    redis_password = secrets.token_urlsafe(24)
    sasl_password = secrets.token_urlsafe(24)
    canary = "canary" + secrets.token_hex(12)
    redis_part = password_redis(root / "redis", redis_password)
    keys = root / "keys"
    shutil.copytree(stack.keys_dir, keys)  # the same rings Triton holds, plus this flow's tokens

    topics = stack.topics(partitions=1)
    prefix = "sc" + uuid.uuid4().hex[:8]
    redis_url = redis_part.spec.endpoints["url"]
    settings = stack.settings(triton=True, redis_prefix=prefix, home=root / "home", redis_url=redis_url,
                              redis_password=redis_password, keys_dir=keys, **topics)
    env = {**stack.env(triton=True), **topic_env(topics), "BULWARK_REDIS_PREFIX": prefix,
           "BULWARK_HOME": str(root / "home"), "BULWARK_INFERENCE_PORT": "0", "REDIS_URL": redis_url,
           "REDIS_PASSWORD": redis_password, "BULWARK_KAFKA_SASL_USERNAME": "bulwark",
           "BULWARK_KAFKA_SASL_PASSWORD": sasl_password, "BULWARK_KEYS_DIR": str(keys),
           "BULWARK_AUTH_REQUIRED": "true", "BULWARK_TRACES_SINK": "kafka", "BULWARK_TRACES_SAMPLE_RATIO": "1.0",
           "BULWARK_LOG_LEVEL": "DEBUG"}
    cli_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **env}

    # Tokens through the real CLI: printed once (that output is the one place a token may appear).
    tokens = {}
    for ident, scope in (("payments-api", "predict"), ("dashboards", "explain"), ("ops", "admin")):
        issued = cli(cli_env, "keys", "token", ident, "--scope", scope, "--dir", str(keys))
        found = re.findall(r"bwk_[A-Za-z0-9_\-]+", issued.stdout)
        assert len(found) == 1, issued.stdout
        tokens[ident] = found[0]
        (logs / f"cli-keys-token-{ident}.stderr").write_text(issued.stderr)

    # The trainer, in this process, its log records at DEBUG into a file of this test's.
    handler = logging.FileHandler(logs / "in-process.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root_logger = logging.getLogger()
    old_level = root_logger.level
    root_logger.addHandler(handler)
    root_logger.setLevel(logging.DEBUG)
    try:
        model = "fraud-" + uuid.uuid4().hex[:6]
        v1 = train_version(stack, settings, model=model, events=1200, seed=21, max_epochs=8)
        deploy(stack, settings, model, [v1.version], live=v1.version)
    finally:
        root_logger.removeHandler(handler)
        root_logger.setLevel(old_level)
        handler.close()

    svc = ServiceProcess("services.inference", "inference", env, logs).start()
    port = make_redis(settings).hget(RedisKeys(prefix).heartbeat("inference", svc.instance), "x_grpc_port")
    channel = grpc.insecure_channel(f"127.0.0.1:{int(port)}")
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    payloads = [e.payload for e in ReferenceGenerator(seed=88).events(12)]
    req = inference_pb2.PredictRequest(model=model, features=features(payloads[0]))
    good = tokens["payments-api"]
    errors: list[tuple[str, str, grpc.StatusCode]] = []

    def expect_error(label: str, call) -> None:  # noqa: ANN001
        with pytest.raises(grpc.RpcError) as info:
            call()
        errors.append((label, rpc_error_text(info.value), info.value.code()))

    auth = lambda token: [("authorization", f"Bearer {token}")]  # noqa: E731
    expect_error("no token", lambda: stub.Predict(req, timeout=10))
    expect_error("wrong scope", lambda: stub.Predict(req, timeout=10, metadata=auth(tokens["dashboards"])))
    expect_error("admin token on predict", lambda: stub.Predict(req, timeout=10, metadata=auth(tokens["ops"])))
    expect_error("forged", lambda: stub.Predict(req, timeout=10, metadata=auth("bwk_" + secrets.token_urlsafe(32))))
    expect_error("wrong scheme", lambda: stub.Predict(req, timeout=10, metadata=[("authorization", f"Token {good}")]))
    expect_error("bare token", lambda: stub.Predict(req, timeout=10, metadata=[("authorization", good)]))
    expect_error("mistyped", lambda: stub.Predict(req, timeout=10, metadata=auth(good[:-1] + "Z")))
    expect_error("token with junk", lambda: stub.Predict(req, timeout=10, metadata=auth(good + " junk")))
    expect_error("token in the wrong header", lambda: stub.Predict(req, timeout=10,
                                                                   metadata=[("x-api-key", good)]))
    expect_error("stream without a token", lambda: list(stub.PredictStream(iter([req]), timeout=10)))
    bad = inference_pb2.PredictRequest(model=model)
    expect_error("invalid request", lambda: stub.Predict(bad, timeout=10, metadata=auth(good)))
    expect_error("canary model", lambda: stub.Predict(
        inference_pb2.PredictRequest(model=canary, features=features(payloads[1])), timeout=10, metadata=auth(good)))

    answered = []
    for i, p in enumerate(payloads[2:8]):
        answered.append(stub.Predict(inference_pb2.PredictRequest(
            model=model, features=features(p), client_key=f"shop-{i}",
            request_id=canary if i == 0 else f"r{i}"), timeout=10, metadata=auth(good)))
    batch = stub.PredictBatch(inference_pb2.PredictBatchRequest(items=[
        inference_pb2.PredictRequest(model=model, features=features(p)) for p in payloads[8:]] + [bad]),
        timeout=10, metadata=auth(good))
    streamed = list(stub.PredictStream(iter([req, bad]), timeout=10, metadata=auth(good)))
    channel.close()
    assert svc.terminate() == 0  # a clean stop flushes the span exporter and the producer

    corpus = Corpus()
    for label, text, _ in errors:
        corpus.add(f"grpc error: {label}", text)
    for i, item in enumerate([*batch.items, *streamed]):
        if item.error.reason:
            corpus.add(f"grpc item error {i}", item.error.SerializeToString() + item.error.message.encode())
    for name, args in (("keys list", ("keys", "list", "--dir", str(keys))),
                       ("keys tokens", ("keys", "tokens", "--dir", str(keys))), ("config", ("config",))):
        out = cli(cli_env, *args)
        corpus.add(f"cli: bulwark {name}", out.stdout + out.stderr)
    time.sleep(0.5)
    for folder in (logs, root / "redis" / "logs", stack.logs):
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                corpus.add(f"log file {path}", path.read_bytes())
    spans = list(raw_records(settings, topics["topic_otlp_spans"]))
    for i, blob in enumerate(spans):
        corpus.add(f"span record {i}", blob)
    for field, topic in topics.items():
        if field == "topic_otlp_spans":
            continue
        for i, blob in enumerate(raw_records(settings, topic)):
            corpus.add(f"event {topic}#{i}", blob)
    client = make_redis(settings)
    for key in client.scan_iter(match=f"{prefix}*", count=500):
        kind = client.type(key).decode()
        value = {"string": lambda: client.get(key), "hash": lambda: client.hgetall(key),
                 "list": lambda: client.lrange(key, 0, -1), "set": lambda: client.smembers(key),
                 "zset": lambda: client.zrange(key, 0, -1, withscores=True)}.get(kind, lambda: b"")()
        corpus.add(f"redis {key.decode()}", key + b"\n" + repr(value).encode())
    for where, blob in helm_renders(canary).items():
        corpus.add(where, blob)

    scanner = SecretScanner()
    key_files = scanner.add_key_dir(keys)
    for ident, token in tokens.items():
        scanner.add_text(f"token of {ident}", token)
        scanner.add_text(f"token of {ident} (without prefix)", token.removeprefix("bwk_"))
    scanner.add_text("Redis password", redis_password)
    scanner.add_text("Kafka SASL password", sasl_password)
    yield {"corpus": corpus, "scanner": scanner, "canary": canary, "key_files": key_files, "tokens": tokens,
           "errors": errors, "answered": answered, "spans": spans, "redis_password": redis_password, "keys": keys}
    redis_part.stop()


def test_no_key_token_or_password_in_logs_spans_events_errors_redis_or_helm(flow: dict) -> None:
    corpus, scanner = flow["corpus"], flow["scanner"]
    # The flow really ran and the scan really read something from every channel.
    assert flow["key_files"] >= 6  # field, pseudonym, dlq, kek rings, signing.key, tokens.json
    assert len(flow["answered"]) == 6 and all(a.label for a in flow["answered"])
    codes = {label: code for label, _, code in flow["errors"]}
    assert codes["no token"] == codes["forged"] == codes["mistyped"] == grpc.StatusCode.UNAUTHENTICATED
    assert codes["wrong scope"] == grpc.StatusCode.PERMISSION_DENIED
    assert corpus.count("log file") >= 4 and corpus.count("span record") >= 1 and corpus.count("event ") >= 8
    assert corpus.count("grpc error") == 12 and corpus.count("redis ") >= 3 and corpus.count("helm render") == 4
    assert any(b"inference" in b for w, b in corpus.blobs.items() if w.startswith("log file") and "inference-" in w)
    leaks = corpus.scan(scanner)
    assert leaks == {}, "secrets found:\n" + "\n".join(f"{w}: {sorted(h)}" for w, h in sorted(leaks.items()))


def test_the_scan_finds_a_canary_sent_through_the_same_paths(flow: dict) -> None:
    corpus, canary = flow["corpus"], flow["canary"]
    scanner = SecretScanner()
    scanner.add_text("canary", canary)
    found = corpus.scan(scanner)
    assert "grpc error: canary model" in found  # the NOT_FOUND message names the model asked for
    assert any(w.startswith("event ") and "inference" in w for w in found)  # the request id, in inference.log
    assert "helm render, canary" in found and "helm render, default" not in found
    assert any(w.startswith("span record") for w in found)  # the request id is a span attribute


def test_the_scanner_finds_each_real_secret_when_planted(flow: dict) -> None:
    scanner: SecretScanner = flow["scanner"]
    ring = json.loads((flow["keys"] / "kek.json").read_text())
    kek = _b64decode(ring["keys"][ring["active"]])
    assert kek is not None and len(kek) == 32
    assert "kek.json:keys." + ring["active"] in " ".join(scanner.find(b"x" + kek + b"y"))  # in a binary record
    assert scanner.find(f"INFO unwrap key={kek.hex().upper()}".encode())  # hex, upper case, in a log line
    assert scanner.find(f"key={base64.b64encode(kek).decode()[:22]}...".encode())  # truncated base64
    token = flow["tokens"]["payments-api"]
    assert scanner.find(f"details: bad token {token[:24]}".encode())
    assert scanner.find(f"redis://:{flow['redis_password']}@redis:6379".encode())
    # Planted in the middle of the front door's real log, the scan still finds it.
    log = next(b for w, b in flow["corpus"].blobs.items() if w.startswith("log file") and "/inference-" in w)
    assert scanner.find(log[:len(log) // 2] + f"authorization: Bearer {token}\n".encode() + log[len(log) // 2:])
    seed = [n for n in scanner.find(_signing_seed(flow["keys"])) if "seed" in n]
    assert seed, "the signing key's seed is not among the needles"
    assert scanner.find(b"an ordinary log line with an id kek1-20261123 and a digest " + b"0" * 64) == set()


def _signing_seed(keys: Path) -> bytes:
    body = (keys / "signing.key").read_bytes()
    return base64.b64decode(b"".join(body.splitlines()[1:-1]))[-32:]
