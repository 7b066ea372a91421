"""The chart renders and lints with the real Helm engine, and every manifest is a valid Kubernetes object.

Kubernetes schemas: kubernetes-validate's bundled OpenAPI schemas, strict (unknown fields fail), for the
oldest version the chart supports (Chart.yaml kubeVersion >= 1.27) and the newest one bundled.
"""

from __future__ import annotations

from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from bulwark.stack.catalog import CATALOG
from tests.deploy.conftest import CHART, PRODUCTION, Rendered, name, render

KUBE_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())


def _lint(values: dict[str, Any] | None, kube_version: str) -> dict[str, Any]:
    return helm_python.lint(CHART, values, strict=True, kube_version=f"v{kube_version}")


@pytest.mark.parametrize("values_file", ["default", "production"])
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_lint_values_file_no_warnings(values_file: str, kube_version: str) -> None:
    values = yaml.safe_load(PRODUCTION.read_text()) if values_file == "production" else None
    result = _lint(values, kube_version)
    assert result["errors"] == []
    # Severity 1 is INFO (only "icon is recommended"); 2 and up are warnings and errors.
    assert [m for m in result["messages"] if m["severity"] >= 2] == []


def test_render_every_manifest_valid_for_kubernetes(any_render: Rendered) -> None:
    problems = []
    for obj in any_render.objects:
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = "/".join(str(p) for p in exc.absolute_path)
                what = f"{obj['kind']}/{obj['metadata']['name']}"
                problems.append(f"{what} k8s {version} at {where}: {exc.message}")
    assert problems == []


def test_render_optional_parts_valid_for_kubernetes(chart: helm_python.Chart) -> None:
    # Everything the defaults leave off: TLS everywhere, SASL, external Triton, Kafka/Redis pod policies.
    def claim(existing: str) -> dict[str, Any]:
        return {"existingClaim": existing, "accessModes": ["ReadWriteMany"], "size": "1Gi"}

    def pods(labels: dict[str, str], port: int) -> dict[str, Any]:
        return {"ports": [port], "egressTo": [], "podSelector": labels}

    rendered = render(chart, {
        "grpcTls": {"secretName": "grpc-tls", "requireClientCertificates": True},
        "kafka": {"securityProtocol": "SSL", "tls": {"secretName": "kafka-tls", "clientCertificate": True},
                  "networkPolicy": pods({"app.kubernetes.io/name": "kafka"}, 9092)},
        "redis": {"tls": {"secretName": "redis-tls", "clientCertificate": True},
                  "networkPolicy": pods({"app": "redis"}, 6379)},
        "triton": {"enabled": False, "external": {"grpcUrl": "triton.ml:8001", "httpUrl": "triton.ml:8000"}},
        "storage": {"shared": claim("artifacts"), "modelRepository": claim("repo")},
        "trainerJob": {"enabled": True},
    })
    for obj in rendered.objects:
        kubernetes_validate.validate(obj, KUBE_VERSIONS[0], strict=True)
    assert not rendered.has("Deployment", name("triton"))
    assert not rendered.kind("PersistentVolumeClaim")
    env = rendered.get("ConfigMap", name("env"))["data"]
    assert env["TRITON_GRPC_URL"] == "triton.ml:8001"
    assert env["BULWARK_KAFKA_SSL_CERTFILE"] == "/run/bulwark/kafka-tls/tls.crt"


def test_render_default_one_deployment_per_service_and_triton(default_render: Rendered) -> None:
    deployments = {d["metadata"]["name"] for d in default_render.kind("Deployment")}
    assert deployments == {name(s.name) for s in CATALOG} | {name("triton")}


def test_render_deployments_match_stack_catalog(default_render: Rendered) -> None:
    # The chart's catalog (_helpers.tpl) and libs/bulwark/stack/catalog.py name the same modules and ports.
    for entry in CATALOG:
        container = default_render.container(name(entry.name))
        assert container["command"] == ["python", "-m", entry.module]
        ports = [p["containerPort"] for p in container.get("ports", [])]
        assert ports == [p for p in (entry.grpc_port, entry.http_port) if p]


def test_render_services_select_their_pods(any_render: Rendered) -> None:
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
            for d in any_render.kind("Deployment")}
    for svc in any_render.kind("Service"):
        selector = svc["spec"]["selector"]
        if svc["spec"].get("clusterIP") == "None":
            continue  # the training Job's headless Service selects Job pods
        matched = [n for n, labels in pods.items() if selector.items() <= labels.items()]
        assert matched == [svc["metadata"]["name"]], svc["metadata"]["name"]


def test_render_grpc_services_exposed_with_their_ports(default_render: Rendered) -> None:
    for entry in (e for e in CATALOG if e.grpc_port):
        svc = default_render.get("Service", name(entry.name))
        assert [(p["port"], p["appProtocol"]) for p in svc["spec"]["ports"]] == [(entry.grpc_port, "grpc")]
    triton = default_render.get("Service", name("triton"))
    ports = {p["name"]: p["port"] for p in triton["spec"]["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}


def test_render_hpas_target_front_door_and_anonymizer(production_render: Rendered) -> None:
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in production_render.kind("HorizontalPodAutoscaler")}
    assert set(hpas) == {name("inference"), name("ingest-anonymizer")}
    for target, hpa in hpas.items():
        deployment = production_render.get("Deployment", target)
        # The HPA owns the replica count: a `replicas` in the Deployment would fight it on every upgrade.
        assert "replicas" not in deployment["spec"]
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


def test_render_pdbs_cover_every_deployment(any_render: Rendered) -> None:
    pdbs = any_render.kind("PodDisruptionBudget")
    for deployment in any_render.kind("Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [p for p in pdbs if p["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(covering) == 1, deployment["metadata"]["name"]
        assert covering[0]["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_render_production_pdb_min_available_wins(production_render: Rendered) -> None:
    spec = production_render.get("PodDisruptionBudget", name("inference"))["spec"]
    assert spec["minAvailable"] == 2 and "maxUnavailable" not in spec


def test_render_external_kafka_redis_and_otel_by_value(default_render: Rendered, production_render: Rendered,
                                                         production_values: dict[str, Any]) -> None:
    default_env = default_render.get("ConfigMap", name("env"))["data"]
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in default_env  # spans go to the otlp_spans topic
    env = production_render.get("ConfigMap", name("env"))["data"]
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == production_values["kafka"]["bootstrapServers"]
    assert env["BULWARK_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["REDIS_URL"] == production_values["redis"]["url"]
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == production_values["otel"]["endpoint"]
    assert env["BULWARK_KAFKA_PARTITIONS"] == str(production_values["kafka"]["partitions"])
    # No broker or Redis of our own: Kafka and Redis are the operators' clusters.
    images = [c["image"] for _, spec in production_render.pod_specs() for c in spec["containers"]]
    assert not [i for i in images if "kafka" in i or "redis" in i]


def test_render_env_names_are_real_settings(any_render: Rendered) -> None:
    from bulwark.cli.config import rows

    known = {v.strip() for row in rows() for v in row["variable"].split("|")}
    # Set for other programs than Bulwark's settings: OTel SDK, Hugging Face, torchrun, Triton's model.py.
    foreign = {"HF_HUB_OFFLINE", "HOME", "NODE_RANK", "JOB_NAME", "BULWARK_TRITON_TORCH_THREADS"}
    names = set(any_render.get("ConfigMap", name("env"))["data"])
    for _, spec in any_render.pod_specs():
        for container in spec["containers"]:
            names |= {e["name"] for e in container.get("env", [])}
    unknown = sorted(n for n in names if n not in known and n not in foreign and not n.startswith("OTEL_"))
    assert unknown == []


def test_render_triton_gpu_only_by_value(default_render: Rendered, production_render: Rendered) -> None:
    def limits(rendered: Rendered) -> dict[str, Any]:
        pod = rendered.pod(name("triton"))
        return pod["containers"][0]["resources"].get("limits", {})

    assert "nvidia.com/gpu" not in limits(default_render)
    assert limits(production_render)["nvidia.com/gpu"] == 1
    pod = production_render.pod(name("triton"))
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_render_model_repository_written_by_updater_read_by_triton(default_render: Rendered) -> None:
    def mount(component: str, volume: str) -> tuple[dict[str, Any], str]:
        pod = default_render.pod(name(component))
        claim = next(v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if v["name"] == volume)
        return next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume), claim

    triton_mount, triton_claim = mount("triton", "model-repository")
    updater_mount, updater_claim = mount("updater", "model-repository")
    assert triton_claim == updater_claim == name("model-repository")
    assert triton_mount["readOnly"] is True and not updater_mount.get("readOnly", False)
    args = default_render.container(name("triton"))["args"]
    assert f"--model-repository={triton_mount['mountPath']}" in args
    assert "--model-control-mode=explicit" in args
    env = default_render.get("ConfigMap", name("env"))["data"]
    assert env["BULWARK_MODEL_REPOSITORY"] == updater_mount["mountPath"]


def test_render_artifact_store_path_same_in_every_pod(default_render: Rendered) -> None:
    # The registry stores absolute artifact paths, so every pod must mount the shared volume at one place.
    env = default_render.get("ConfigMap", name("env"))["data"]
    paths = set()
    for workload, spec in default_render.pod_specs():
        for m in spec["containers"][0].get("volumeMounts", []):
            if m["name"] == "shared":
                paths.add(m["mountPath"])
    assert len(paths) == 1
    assert env["BULWARK_ARTIFACT_STORE"].startswith(paths.pop() + "/")


def test_render_trainer_job_indexed_with_rendezvous(production_render: Rendered,
                                                    production_values: dict[str, Any]) -> None:
    job_values = production_values["trainerJob"]
    job = production_render.kind("Job")[0]
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == job_values["nodes"]
    pod = spec["template"]["spec"]
    headless = production_render.get("Service", pod["subdomain"])
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    command = pod["containers"][0]["command"]
    job_name = job["metadata"]["name"]
    assert command[0] == "torchrun"
    assert f"--master-addr={job_name}-0.{pod['subdomain']}" in command  # pod 0's stable host name
    assert f"--nnodes={job_values['nodes']}" in command
    assert f"--nproc-per-node={job_values['procsPerNode']}" in command
    assert "--node-rank=$(NODE_RANK)" in command
    assert command[command.index("-m") + 1] == "services.trainer.job"
    assert f"--trigger-id={job_name}" in command  # re-running the same Job publishes nothing new
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    assert pod["restartPolicy"] == "Never"


def test_render_default_has_no_trainer_job(default_render: Rendered) -> None:
    assert default_render.kind("Job") == []
