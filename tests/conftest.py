"""Session fixtures: the real parts (broker, Redis, Triton) started on free ports, once per session."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from bulwark.testing.services import kill_all
from bulwark.testing.stack import TestStack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestStack]:
    """The session's real parts; each starts the first time a test touches it."""
    s = TestStack(tmp_path_factory.mktemp("stack"))
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def _no_orphan_services() -> Iterator[None]:
    """Whatever happens in a test, the service processes it started do not outlive it."""
    yield
    kill_all()


@pytest.fixture
def logs_dir(tmp_path: Path) -> Path:
    """A folder for the logs of the service processes a test starts."""
    d = tmp_path / "logs"
    d.mkdir()
    return d
