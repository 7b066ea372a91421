"""Security properties of the rendered chart: non-root pods, no API tokens, keys only from Secrets and only
where used, real probes, resources, and NetworkPolicies that leave the front door as the one way in."""

from __future__ import annotations

from typing import Any

import helm_python
import pytest

from bulwark.stack.catalog import CATALOG
from tests.deploy.conftest import RELEASE, Rendered, name, render

# Which key files each workload may read (libs/bulwark/crypto, services/*/__main__.py): the anonymizer alone
# holds the field and pseudonym rings; only the trainer, quantizer and gate can sign; Triton and the
# explainer unwrap artifacts (kek); tokens.json only where a gRPC API checks credentials, and in the console,
# which checks a person's token before forwarding a change (its own token is BULWARK_CLIENT_TOKEN).
KEYS = {
    "ingest-anonymizer": {"field.json", "pseudonym.json", "dlq.json"},
    "trainer": {"kek.json", "signing.key", "verify.json", "dlq.json"},
    "quantizer": {"kek.json", "signing.key", "verify.json", "dlq.json"},
    "robustness-guard": {"kek.json", "signing.key", "verify.json", "dlq.json"},
    "updater": {"verify.json", "dlq.json", "tokens.json"},
    "inference": {"verify.json", "tokens.json"},
    "explainer": {"kek.json", "verify.json", "dlq.json", "tokens.json"},
    "console": {"verify.json", "tokens.json"},
    "triton": {"kek.json", "verify.json"},
}
GRPC_HEALTH_NAMES = {"updater": "bulwark.api.v1.ModelAdmin", "inference": "bulwark.api.v1.InferenceService",
                     "explainer": "bulwark.api.v1.ExplainService"}


def _component(obj_or_pod_labels: dict[str, Any]) -> str:
    return obj_or_pod_labels["app.kubernetes.io/component"]


def _workloads(rendered: Rendered) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(component, pod template metadata, pod spec) of every Deployment and Job."""
    return [(_component(o["spec"]["template"]["metadata"]["labels"]), o["spec"]["template"]["metadata"],
             o["spec"]["template"]["spec"]) for o in rendered.objects if o["kind"] in ("Deployment", "Job")]


def test_pods_run_as_non_root(any_render: Rendered) -> None:
    for component, _, pod in _workloads(any_render):
        ctx = pod["securityContext"]
        assert ctx["runAsNonRoot"] is True, component
        assert ctx["runAsUser"] != 0 and ctx["runAsGroup"] != 0, component
        assert ctx["seccompProfile"]["type"] == "RuntimeDefault", component
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), component
        assert not [v for v in pod["volumes"] if "hostPath" in v], component
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, component
            assert sc.get("privileged", False) is False, component
            assert sc["readOnlyRootFilesystem"] is True, component
            assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), component


def test_service_accounts_mount_no_token(any_render: Rendered) -> None:
    accounts = {sa["metadata"]["name"]: sa for sa in any_render.kind("ServiceAccount")}
    for component, _, pod in _workloads(any_render):
        assert pod["automountServiceAccountToken"] is False, component
        # Its own account, never `default`, and that account mounts no token either.
        assert accounts[pod["serviceAccountName"]]["automountServiceAccountToken"] is False, component
    # No Role or binding: no Bulwark pod may call the Kubernetes API.
    assert not [o for o in any_render.objects if o["kind"].endswith(("Role", "RoleBinding"))]


def test_keys_only_from_secret_and_only_where_used(any_render: Rendered) -> None:
    # The chart renders no Secret: key material is never a value.
    assert any_render.kind("Secret") == []
    for component, _, pod in _workloads(any_render):
        keys = next(v for v in pod["volumes"] if v["name"] == "keys")
        sources = keys["projected"]["sources"]
        assert {s["secret"]["name"] for s in sources} == {"bulwark-keys"}
        files = {item["key"] for s in sources for item in s["secret"]["items"]}
        expected = KEYS["trainer" if component == "trainer-job" else component]
        assert files == expected, component
        optional = {item["key"] for s in sources if s["secret"].get("optional")
                    for item in s["secret"]["items"]}
        assert optional <= {"tokens.json"}, component  # a missing ring fails the mount, not silently
        assert keys["projected"]["defaultMode"] == 0o440
        mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "keys")
        assert mount["readOnly"] is True


def test_passwords_from_secret_refs_never_literals(production_render: Rendered) -> None:
    for component, _, pod in _workloads(production_render):
        env = {e["name"]: e for e in pod["containers"][0].get("env", [])}
        if component == "triton":
            continue
        kafka = env["BULWARK_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]
        redis = env["BULWARK_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert kafka == {"name": "kafka-sasl", "key": "password"}
        assert redis == {"name": "redis-auth", "key": "password"}
        assert not [e for e in env.values() if "PASSWORD" in e["name"] and "value" in e], component
    for cm in production_render.kind("ConfigMap"):
        for key, value in cm["data"].items():
            assert "PASSWORD" not in key and "PRIVATE KEY" not in value, (cm["metadata"]["name"], key)


def test_probes_use_real_health(default_render: Rendered) -> None:
    for entry in CATALOG:
        container = default_render.container(name(entry.name))
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert probe in container, (entry.name, probe)
        if entry.http_port:
            # The console: HTTP on its own port, at a route its app really serves (no Redis or broker needed).
            from services.console.app import build_app

            routes = {getattr(r, "path", None) for r in build_app(None).routes}  # type: ignore[arg-type]
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                get = container[probe]["httpGet"]
                assert get["port"] == "http" and get["path"] in routes, (entry.name, probe)
            assert {"name": "http", "containerPort": entry.http_port, "protocol": "TCP"} in container["ports"]
        elif entry.grpc_port:
            # grpc.health.v1: liveness asks about the server, readiness about the service itself (NOT_SERVING
            # while its dependencies, e.g. Triton for the front door, are down).
            assert container["livenessProbe"]["grpc"] == {"port": entry.grpc_port, "service": ""}
            assert container["readinessProbe"]["grpc"] == {"port": entry.grpc_port,
                                                           "service": GRPC_HEALTH_NAMES[entry.name]}
        else:
            assert container["livenessProbe"]["exec"]["command"] == \
                ["bulwark", "probe", entry.name, "--allow-redis-down"]
            assert container["readinessProbe"]["exec"]["command"] == \
                ["bulwark", "probe", entry.name, "--ready"]
    triton = default_render.container(name("triton"))
    assert triton["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"


def test_probes_with_grpc_tls_read_the_heartbeat(production_render: Rendered) -> None:
    # The kubelet's gRPC probe speaks plaintext only: with TLS on, the heartbeat answers instead.
    for entry in (e for e in CATALOG if e.grpc_port):
        container = production_render.container(name(entry.name))
        assert container["readinessProbe"]["exec"]["command"] == ["bulwark", "probe", entry.name, "--ready"]
        assert "grpc" not in container["livenessProbe"]


def test_probe_commands_name_a_real_cli_command_and_heartbeat_service(any_render: Rendered) -> None:
    from bulwark.cli.main import cli

    services = {e.name for e in CATALOG}
    for _, _, pod in _workloads(any_render):
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            command = pod["containers"][0].get(probe, {}).get("exec", {}).get("command")
            if not command:
                continue
            assert command[:2] == ["bulwark", "probe"] and "probe" in cli.commands
            assert command[2] in services
            params = {opt for p in cli.commands["probe"].params for opt in p.opts}
            assert set(command[3:]) <= params


def test_every_container_has_requests_and_memory_limit(any_render: Rendered) -> None:
    for component, _, pod in _workloads(any_render):
        for c in pod["containers"]:
            res = c["resources"]
            assert {"cpu", "memory"} <= set(res["requests"]), component
            assert "memory" in res["limits"], component


def _policies(rendered: Rendered) -> dict[str, dict[str, Any]]:
    return {p["metadata"]["name"].removeprefix(f"{RELEASE}-bulwark-"): p
            for p in rendered.kind("NetworkPolicy")}


def test_network_default_deny_covers_every_pod(any_render: Rendered) -> None:
    deny = _policies(any_render)["default-deny"]["spec"]
    assert deny["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny and "egress" not in deny
    for component, meta, _ in _workloads(any_render):
        assert deny["podSelector"]["matchLabels"].items() <= meta["labels"].items(), component


def test_network_only_front_door_reachable_from_outside(default_render: Rendered) -> None:
    policies = _policies(default_render)
    release_pods = {"app.kubernetes.io/name": "bulwark", "app.kubernetes.io/instance": RELEASE}
    ingress_by_component = {}
    for key, p in policies.items():
        if "Ingress" in p["spec"]["policyTypes"] and p["spec"].get("ingress"):
            labels = p["spec"]["podSelector"]["matchLabels"]
            ingress_by_component[labels.get("app.kubernetes.io/component")] = p["spec"]["ingress"]
    # The front door: its gRPC port, from anywhere by default.
    assert ingress_by_component["inference"] == [{"ports": [{"port": "grpc", "protocol": "TCP"}]}]
    # ModelAdmin and ExplainService: only from this release's pods.
    for internal in ("updater", "explainer"):
        (rule,) = ingress_by_component[internal]
        assert rule["from"] == [{"podSelector": {"matchLabels": release_pods}}]
    # The console: its HTTP port, only from pods of the release's namespace.
    assert ingress_by_component["console"] == [{"ports": [{"port": "http", "protocol": "TCP"}],
                                                "from": [{"podSelector": {}}]}]
    # Triton: only from the front door and the updater; its HTTP port (health) also from the console.
    rule, health = ingress_by_component["triton"]
    sources = {p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in rule["from"]}
    assert sources == {"inference", "updater"}
    assert health["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert [p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in health["from"]] == ["console"]
    # Nothing else admits any traffic.
    assert set(ingress_by_component) == {"inference", "updater", "explainer", "triton", "console"}


def test_network_egress_limited_to_infrastructure(production_render: Rendered,
                                                  production_values: dict[str, Any]) -> None:
    rules = _policies(production_render)["egress"]["spec"]["egress"]
    ports = [sorted(p["port"] for p in r.get("ports", [])) for r in rules]
    assert [53, 53] in ports
    assert production_values["kafka"]["networkPolicy"]["ports"] in ports
    assert production_values["redis"]["networkPolicy"]["ports"] in ports
    kafka_rule = next(r for r in rules if [p["port"] for p in r.get("ports", [])] == [9093])
    assert kafka_rule["to"] == production_values["kafka"]["networkPolicy"]["egressTo"]
    # Every rule is bounded by ports or by destination (this release's pods): no open egress.
    assert all(r.get("ports") or r.get("to") for r in rules)


def test_network_front_door_sources_by_value(production_render: Rendered,
                                             production_values: dict[str, Any]) -> None:
    (rule,) = _policies(production_render)["inference-ingress"]["spec"]["ingress"]
    assert rule["from"] == production_values["networkPolicy"]["frontDoorFrom"]


def test_console_internal_by_default_exposed_only_by_value(default_render: Rendered,
                                                           production_render: Rendered,
                                                           production_values: dict[str, Any]) -> None:
    # A ClusterIP Service and no Ingress by default; the production values add peers and an Ingress.
    svc = default_render.get("Service", name("console"))["spec"]
    assert svc["type"] == "ClusterIP" and [(p["port"], p["targetPort"]) for p in svc["ports"]] == [(8080, "http")]
    assert default_render.kind("Ingress") == []
    (rule,) = _policies(production_render)["console-ingress"]["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {}}] + production_values["networkPolicy"]["consoleFrom"]
    (ingress,) = production_render.kind("Ingress")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": name("console"), "port": {"name": "http"}}
    assert ingress["spec"]["tls"][0]["secretName"] == "bulwark-console-tls"


def test_console_client_token_from_secret_ref(default_render: Rendered, production_render: Rendered) -> None:
    env = {e["name"]: e for e in production_render.container(name("console"))["env"]}
    assert env["BULWARK_CLIENT_TOKEN"] == {"name": "BULWARK_CLIENT_TOKEN", "valueFrom": {
        "secretKeyRef": {"name": "bulwark-console-token", "key": "token"}}}
    assert not [e for e in env.values() if "TOKEN" in e["name"] and "value" in e]
    # No auth by default: no token, and none leaks into any other pod.
    assert "BULWARK_CLIENT_TOKEN" not in {e["name"] for e in default_render.container(name("console"))["env"]}
    for workload, pod in production_render.pod_specs():
        if workload != name("console"):
            assert "BULWARK_CLIENT_TOKEN" not in {e["name"] for e in pod["containers"][0].get("env", [])}


def test_network_in_cluster_kafka_redis_admit_only_services(chart: helm_python.Chart) -> None:
    selector = {"app.kubernetes.io/name": "kafka"}
    rendered = render(chart, {
        "kafka": {"networkPolicy": {"ports": [9092], "egressTo": [], "podSelector": selector}},
        "redis": {"networkPolicy": {"ports": [6379], "egressTo": [], "podSelector": {"app": "redis"}}},
    })
    policies = _policies(rendered)
    for part, sel in (("kafka", selector), ("redis", {"app": "redis"})):
        spec = policies[f"{part}-ingress"]["spec"]
        assert spec["podSelector"]["matchLabels"] == sel
        clients, peers = spec["ingress"]
        expressions = {e["key"]: e for e in clients["from"][0]["podSelector"]["matchExpressions"]}
        assert expressions["app.kubernetes.io/instance"]["values"] == [RELEASE]
        assert expressions["app.kubernetes.io/component"] == \
            {"key": "app.kubernetes.io/component", "operator": "NotIn", "values": ["triton"]}
        assert peers["from"] == [{"podSelector": {"matchLabels": sel}}]


def test_network_policies_off_by_value(chart: helm_python.Chart) -> None:
    assert render(chart, {"networkPolicy": {"enabled": False}}).kind("NetworkPolicy") == []


@pytest.mark.parametrize("component", ["inference", "updater", "explainer"])
def test_grpc_tls_mounts_secret_and_sets_paths(production_render: Rendered, component: str) -> None:
    pod = production_render.pod(name(component))
    volume = next(v for v in pod["volumes"] if v["name"] == "grpc-tls")
    assert volume["secret"]["secretName"] == "bulwark-grpc-tls"
    env = production_render.get("ConfigMap", name("env"))["data"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "grpc-tls")
    assert env["BULWARK_GRPC_TLS_CERT"] == f"{mount['mountPath']}/tls.crt"
    assert env["BULWARK_AUTH_REQUIRED"] == "true"
