"""Fixtures for the deployment tests: the chart rendered by the real Helm engine (helm-python-sdk), offline.

No cluster and no Docker engine: Helm renders and lints in-process; manifests are checked against the
Kubernetes OpenAPI schemas bundled in kubernetes-validate; compose files against the Compose specification.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import helm_python
import kubernetes_validate.utils
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "bulwark"
PRODUCTION = CHART / "values-production.yaml"
RELEASE = "bw"
NAMESPACE = "bulwark"



@pytest.fixture(scope="session", autouse=True)
def _kubernetes_schemas_read_once() -> Iterator[None]:
    """kubernetes-validate parses its ~1 MB definitions file on every call; read each schema file once."""
    original = kubernetes_validate.utils.schema_contents
    kubernetes_validate.utils.schema_contents = functools.lru_cache(maxsize=None)(original)
    yield
    kubernetes_validate.utils.schema_contents = original


@dataclass
class Rendered:
    """Every object one `helm template` produced, with lookups by kind and name."""

    objects: list[dict[str, Any]]

    def kind(self, kind: str) -> list[dict[str, Any]]:
        """All objects of `kind`."""
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        """The object of `kind` named `name` (fails the test when there is none)."""
        found = [o for o in self.kind(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
        return found[0]

    def has(self, kind: str, name: str) -> bool:
        """Whether an object of `kind` named `name` was rendered."""
        return any(o["metadata"]["name"] == name for o in self.kind(kind))

    def pod(self, deployment: str) -> dict[str, Any]:
        """The pod spec of Deployment `deployment`."""
        return self.get("Deployment", deployment)["spec"]["template"]["spec"]

    def container(self, deployment: str) -> dict[str, Any]:
        """The (only) container of Deployment `deployment`."""
        return self.pod(deployment)["containers"][0]

    def pod_specs(self) -> list[tuple[str, dict[str, Any]]]:
        """(workload name, pod spec) for every Deployment and Job."""
        return [(o["metadata"]["name"], o["spec"]["template"]["spec"])
                for o in self.objects if o["kind"] in ("Deployment", "Job")]


def name(component: str) -> str:
    """The rendered name of a component in the test release."""
    return f"{RELEASE}-bulwark-{component}"


@pytest.fixture(scope="session")
def chart() -> Iterator[helm_python.Chart]:
    """The chart, loaded once."""
    with helm_python.Chart.load(CHART) as c:
        yield c


@pytest.fixture(scope="session")
def production_values() -> dict[str, Any]:
    """values-production.yaml as a dict."""
    return yaml.safe_load(PRODUCTION.read_text())


def render(chart: helm_python.Chart, values: dict[str, Any] | None = None) -> Rendered:
    """Render with `values` over the chart's defaults; parse every document."""
    out = chart.render(values=values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects = [doc for path, text in out.items() if not path.endswith("NOTES.txt")
               for doc in yaml.safe_load_all(text) if doc]
    return Rendered(objects)


@pytest.fixture(scope="session")
def default_render(chart: helm_python.Chart) -> Rendered:
    """The chart with its default values."""
    return render(chart)


@pytest.fixture(scope="session")
def production_render(chart: helm_python.Chart, production_values: dict[str, Any]) -> Rendered:
    """The chart with values-production.yaml."""
    return render(chart, production_values)


@pytest.fixture(scope="session", params=["default", "production"])
def any_render(request: pytest.FixtureRequest) -> Rendered:
    """Each of the two renders in turn."""
    return request.getfixturevalue(f"{request.param}_render")
