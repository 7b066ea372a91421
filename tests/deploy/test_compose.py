"""docker-compose.yml (and the GPU override) against the Compose specification, offline, plus what the
platform needs from it: every service from the one Dockerfile, non-root, health checks, depends_on order.

The schema is the Compose specification's JSON schema as vendored by PyPI `check-jsonschema` 0.39.0
(`check_jsonschema/builtin_schemas/vendor/compose-spec.json`, copied from
https://raw.githubusercontent.com/compose-spec/compose-spec/master/schema/compose-spec.json; sha256
d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64 in that release).
"""

from __future__ import annotations

import importlib.resources
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from bulwark import topics
from bulwark.stack.catalog import CATALOG
from tests.deploy.conftest import ROOT

COMPOSE = ROOT / "docker-compose.yml"
GPU_OVERRIDE = ROOT / "deploy" / "compose.gpu.yaml"
DOCKERFILE = ROOT / "Dockerfile"
INFRA = {"kafka", "redis", "jaeger", "otel-collector", "triton"}
ONE_SHOT = {"keys-init", "topics-init"}


@lru_cache(maxsize=1)
def _schema() -> dict[str, Any]:
    files = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads((files / "compose-spec.json").read_text(encoding="utf-8"))


def _violations(doc: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(_schema())
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker-compose.yml with YAML anchors and merge keys resolved, as Compose reads it."""
    return yaml.safe_load(COMPOSE.read_text())


def _stages() -> dict[str, str]:
    """Dockerfile stage name -> the image it starts FROM."""
    pattern = re.compile(r"^FROM\s+(\S+)\s+AS\s+(\S+)", re.M)
    return {m.group(2): m.group(1) for m in pattern.finditer(DOCKERFILE.read_text())}


@pytest.mark.parametrize("path", [COMPOSE, GPU_OVERRIDE], ids=lambda p: p.name)
def test_compose_file_valid_against_compose_spec(path: Path) -> None:
    assert _violations(yaml.safe_load(path.read_text())) == []


def test_compose_spec_check_catches_a_bad_file(compose: dict[str, Any]) -> None:
    # The validator is live: a misspelt key and a wrong type are reported.
    broken = json.loads(json.dumps(compose))
    broken["services"]["redis"]["healthcheck"]["retrys"] = 3
    broken["services"]["kafka"]["depends_on"] = "redis"
    problems = _violations(broken)
    assert any("retrys" in p for p in problems)
    assert any(p.startswith("services/kafka/depends_on") for p in problems)


def test_compose_runs_every_catalog_service_from_one_image(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {s.name for s in CATALOG} | INFRA | ONE_SHOT == set(services)
    for entry in CATALOG:
        svc = services[entry.name]
        assert svc["command"] == [entry.module]  # the image's entrypoint is `python -m`
        assert svc["build"] == {"context": ".", "target": "runtime",
                                "args": {"TORCH_VARIANT": "${BULWARK_TORCH_VARIANT:-cpu}"}}
        assert svc["image"] == "${BULWARK_IMAGE:-bulwark:latest}"
    assert set(_stages()) >= {"build", "runtime", "triton-deps", "triton"}
    assert services["triton"]["build"]["target"] == "triton"


def test_compose_bulwark_containers_non_root_read_only(compose: dict[str, Any]) -> None:
    for key in [s.name for s in CATALOG] + sorted(ONE_SHOT) + ["triton"]:
        svc = compose["services"][key]
        assert svc["user"] == "10001:10001", key
        assert svc["cap_drop"] == ["ALL"], key
        assert "no-new-privileges:true" in svc["security_opt"], key
        if key != "triton":
            assert svc["read_only"] is True, key


def test_compose_healthchecks_and_depends_on_conditions(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for key in ("kafka", "redis", "triton"):
        assert services[key]["healthcheck"]["test"], key
    for entry in CATALOG:
        test = services[entry.name]["healthcheck"]["test"]
        if entry.http_port:
            # The console's HTTP API answers for itself, on its port, inside the container.
            assert test[:3] == ["CMD", "python", "-c"]
            assert f"http://127.0.0.1:{entry.http_port}/api/" in test[3]
            assert services[entry.name]["environment"]["BULWARK_CONSOLE_PORT"] == str(entry.http_port)
            assert services[entry.name]["environment"]["BULWARK_CONSOLE_HOST"] == "0.0.0.0"
            # Published on the host's loopback only: the front door stays the one port for other machines.
            assert services[entry.name]["ports"] == [f"127.0.0.1:{entry.http_port}:{entry.http_port}"]
        else:
            assert test == ["CMD", "bulwark", "probe", entry.name, "--ready"]
    for key, svc in services.items():
        for dep, cond in svc.get("depends_on", {}).items():
            assert dep in services, (key, dep)
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], (key, dep)
            if cond["condition"] == "service_completed_successfully":
                assert dep in ONE_SHOT, (key, dep)
    for entry in CATALOG:
        deps = services[entry.name]["depends_on"]
        assert deps["kafka"] == deps["redis"] == {"condition": "service_healthy"}
        assert deps["topics-init"] == deps["keys-init"] == {"condition": "service_completed_successfully"}
    for key in ("inference", "updater"):
        assert services[key]["depends_on"]["triton"] == {"condition": "service_healthy"}


def test_compose_depends_on_has_no_cycle(compose: dict[str, Any]) -> None:
    graph = {k: set(v.get("depends_on", {})) for k, v in compose["services"].items()}
    done: set[str] = set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, " -> ".join(path + (node,))
        if node not in done:
            for dep in graph[node]:
                visit(dep, path + (node,))
            done.add(node)

    for node in graph:
        visit(node, ())


def test_compose_kafka_is_apache_kraft(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft: no ZooKeeper
    assert env["KAFKA_LOG_DIRS"] == "/var/lib/kafka/data"
    assert "kafka-data:/var/lib/kafka/data" in kafka["volumes"]
    import base64

    # A KRaft cluster id is the base64url form of 16 bytes.
    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16
    shared = compose["x-bulwark-env"]
    assert shared["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]


def test_compose_volumes_shared_where_the_chart_shares_them(compose: dict[str, Any]) -> None:
    services = compose["services"]

    def mounts(key: str) -> dict[str, str]:
        return {v.split(":")[0]: v for v in services[key].get("volumes", [])}

    assert mounts("updater")["model-repository"] == "model-repository:/var/lib/bulwark/model-repository"
    assert mounts("triton")["model-repository"] == "model-repository:/models:ro"
    assert "/models" in services["triton"]["command"][1]
    for key in ("trainer", "quantizer", "robustness-guard"):
        assert mounts(key)["shared"] == "shared:/var/lib/bulwark/shared", key
    for key in ("updater", "inference", "explainer"):
        assert mounts(key)["shared"] == "shared:/var/lib/bulwark/shared:ro", key
    for entry in CATALOG:
        assert mounts(entry.name)["keys"] == "keys:/run/bulwark/keys:ro", entry.name


def test_compose_otel_collector_config_exports_traces_and_metrics(compose: dict[str, Any]) -> None:
    collector = compose["services"]["otel-collector"]
    source = collector["volumes"][0].split(":")[0]
    config = yaml.safe_load((ROOT / source).read_text())
    # Every service exports traces and metrics over OTLP: each signal needs a pipeline, or the receiver
    # answers its exports UNIMPLEMENTED.
    for signal in ("traces", "metrics"):
        pipeline = config["service"]["pipelines"][signal]
        assert pipeline["receivers"] == ["otlp"]
        assert set(pipeline["exporters"]) <= set(config["exporters"])
        assert set(pipeline["processors"]) <= set(config["processors"])
    port = config["exporters"]["prometheus"]["endpoint"].rsplit(":", 1)[1]
    assert f"{port}:{port}" in collector["ports"]
    assert config["exporters"]["kafka"]["traces"] == {"topic": topics.OTLP_SPANS, "encoding": "otlp_proto"}
    assert config["exporters"]["otlp/jaeger"]["endpoint"].startswith("jaeger:")
    assert compose["x-bulwark-env"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4317"


def test_dockerfile_non_root_cpu_default_gpu_arg() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG TORCH_VARIANT=cpu$", text, re.M)
    assert 'download.pytorch.org/whl/${TORCH_VARIANT}' in text
    # The last USER of each final stage is a numeric non-root user.
    for stage in ("runtime", "triton"):
        body = text.split(f" AS {stage}\n", 1)[1].split("\nFROM ", 1)[0]
        users = re.findall(r"^USER\s+(\S+)", body, re.M)
        assert users and users[-1].split(":")[0] == "10001", stage
    assert _stages()["triton"] == "${TRITON_IMAGE}" and "nvcr.io/nvidia/tritonserver:" in text
