"""values.schema.json: bad values stop an install with the value's path and what is wrong; the chart's own
checks (fail) say why a combination cannot work; the policies the chart ships are the packaged ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import pytest
import yaml

from bulwark.events import EventTypeRegistry
from tests.deploy.conftest import CHART, PRODUCTION, Rendered, name, render

SCHEMA = json.loads((CHART / "values.schema.json").read_text())


def _fails(chart: helm_python.Chart, values: dict[str, Any]) -> str:
    with pytest.raises(helm_python.HelmError) as info:
        render(chart, values)
    return str(info.value)


def test_schema_is_valid_draft7_and_accepts_both_values_files() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    validator = jsonschema.Draft7Validator(SCHEMA)
    for path in (CHART / "values.yaml", PRODUCTION):
        assert [e.message for e in validator.iter_errors(yaml.safe_load(path.read_text()))] == [], path.name


@pytest.mark.parametrize(("values", "message"), [
    # a typo in a key is not silently ignored
    ({"kafka": {"bootstapServers": "kafka:9092"}},
     "at '/kafka': additional properties 'bootstapServers' not allowed"),
    ({"kafka": {"bootstrapServers": "kafka"}},
     "at '/kafka/bootstrapServers': 'kafka' does not match pattern"),
    ({"kafka": {"partitions": 0}}, "at '/kafka/partitions': minimum: got 0, want 1"),
    ({"kafka": {"securityProtocol": "TLS"}}, "at '/kafka/securityProtocol'"),
    ({"redis": {"url": "redis.example:6379"}},
     "at '/redis/url': 'redis.example:6379' does not match pattern"),
    # an OTLP endpoint needs its scheme
    ({"otel": {"endpoint": "collector:4317"}}, "at '/otel/endpoint'"),
    ({"otel": {"sampleRatio": 1.5}}, "at '/otel/sampleRatio': maximum: got 1.5, want 1"),
    ({"keys": {"secretName": ""}}, "at '/keys/secretName'"),
    ({"services": {"inference": {"replicas": "two"}}},
     "at '/services/inference/replicas': got string, want integer"),
    ({"services": {"trainr": {"enabled": True}}}, "additional properties 'trainr' not allowed"),
    ({"podSecurityContext": {"runAsNonRoot": False}}, "at '/podSecurityContext/runAsNonRoot'"),
    ({"containerSecurityContext": {"allowPrivilegeEscalation": True}},
     "at '/containerSecurityContext/allowPrivilegeEscalation'"),
    ({"triton": {"gpu": {"enabled": "yes"}}}, "at '/triton/gpu/enabled': got string, want boolean"),
    ({"trainerJob": {"runId": "Run 1"}}, "at '/trainerJob/runId'"),
    ({"services": {"inference": {"env": {"BAD-NAME": "1"}}}},
     "at '/services/inference/env': additional properties 'BAD-NAME' not allowed"),
])
def test_bad_values_fail_with_schema_message(chart: helm_python.Chart, values: dict[str, Any],
                                             message: str) -> None:
    error = _fails(chart, values)
    assert "values don't meet the specifications of the schema" in error
    assert message in error


def test_bad_values_fail_lint_too() -> None:
    result = helm_python.lint(CHART, {"kafka": {"partitions": -1}}, strict=True, kube_version="v1.30.0")
    assert any("at '/kafka/partitions': minimum: got -1, want 1" in e for e in result["errors"])


@pytest.mark.parametrize(("values", "message"), [
    ({"services": {"ingest-anonymizer": {"autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 16,
                                                          "targetCPUUtilizationPercentage": 70}}}},
     "services.ingest-anonymizer.autoscaling.maxReplicas (16) exceeds kafka.partitions (12)"),
    ({"services": {"quantizer": {"replicas": 13}}},
     "services.quantizer.replicas (13) exceeds kafka.partitions (12)"),
    ({"services": {"updater": {"replicas": 2}}}, "services.updater.replicas must be 1"),
    ({"triton": {"replicas": 2}}, "triton.replicas must be 1"),
    ({"triton": {"enabled": False}}, "triton.external.grpcUrl is required when triton.enabled is false"),
    ({"services": {"inference": {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 3,
                                                  "targetCPUUtilizationPercentage": 70}}}},
     "services.inference.autoscaling.minReplicas (5) is above maxReplicas (3)"),
    ({"auth": {"required": True}},
     "services.console.clientToken.secretName is required when auth.required is true"),
])
def test_impossible_combinations_fail_with_reason(chart: helm_python.Chart, values: dict[str, Any],
                                                  message: str) -> None:
    assert message in _fails(chart, values)


def test_service_env_reaches_its_container(production_render: Rendered,
                                           production_values: dict[str, Any]) -> None:
    for service, cfg in production_values["services"].items():
        container = production_render.container(name(service))
        env = {e["name"]: e.get("value") for e in container["env"]}
        for key, value in cfg["env"].items():
            assert env[key] == str(value), (service, key)


def test_chart_anonymizer_policy_is_the_packaged_default() -> None:
    from services.ingest_anonymizer import policy

    packaged = (policy.__file__.rsplit("/", 1)[0] + "/policies/default.yaml")
    with open(packaged, encoding="utf-8") as fh:
        assert (CHART / "files/policies/anonymizer.yaml").read_text(encoding="utf-8") == fh.read(), \
            "copy services/ingest_anonymizer/policies/default.yaml to helm/bulwark/files/policies/"


def test_chart_guard_policy_is_the_code_defaults() -> None:
    from bulwark.guard.policy import GuardPolicy, load_guard_policy

    assert load_guard_policy(CHART / "files/policies/guard.yaml") == GuardPolicy()


@pytest.mark.parametrize("rendered_name", ["default_render", "production_render"])
def test_rendered_policies_load_and_validate(request: pytest.FixtureRequest, rendered_name: str,
                                             tmp_path: Path) -> None:
    from bulwark.guard.policy import load_guard_policy
    from services.ingest_anonymizer.policy import load_policy

    rendered: Rendered = request.getfixturevalue(rendered_name)
    data = rendered.get("ConfigMap", name("policies"))["data"]
    (tmp_path / "anonymizer.yaml").write_text(data["anonymizer.yaml"])
    (tmp_path / "guard.yaml").write_text(data["guard.yaml"])
    # The loaders the services run at start: a policy that would stop a pod fails here instead.
    load_policy(tmp_path / "anonymizer.yaml", EventTypeRegistry.default())
    guard = load_guard_policy(tmp_path / "guard.yaml")
    if rendered_name == "production_render":
        assert guard.gate.min_clean_accuracy == 0.85 and guard.online.rate_per_s == 500


def test_policy_change_rolls_the_pods_that_read_it(chart: helm_python.Chart) -> None:
    def checksums(rendered: Rendered) -> dict[str, str | None]:
        return {d["metadata"]["name"]: d["spec"]["template"]["metadata"].get("annotations", {})
                .get("checksum/policy-guard") for d in rendered.kind("Deployment")}

    before = checksums(render(chart))
    after = checksums(render(chart, {"policies": {"guard": "version: 3\n"}}))
    changed = {n for n in before if before[n] != after[n]}
    # The gate, the front door and the console (drift threshold) read the guard policy; the anonymizer's
    # pods stay as they are.
    assert changed == {name("robustness-guard"), name("inference"), name("console")}
