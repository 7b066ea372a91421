"""The updater's consistency check against a real Triton, when a live version cannot be loaded at all.

A registry left by another checkout (artifacts gone, signed with other keys) must not crash-loop the updater:
that would stop every other model's rollouts, and the new version that would replace the broken one.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from bulwark.crypto import load_verifier
from bulwark.live import LiveState, read_live, write_live
from bulwark.redis_client import make_redis
from bulwark.redis_keys import RedisKeys
from bulwark.registry import ModelRegistry
from bulwark.testing.stack import TestStack
from bulwark.triton.client import TritonClient
from bulwark.triton.repository import ModelRepository
from bulwark.versions import VersionCatalog
from services.updater.rollout import RolloutController
from services.updater.settings import UpdaterSettings
from services.updater.signals import SignalStore

pytestmark = pytest.mark.integration


def test_a_live_version_triton_cannot_load_is_alerted_once_and_the_check_goes_on(stack: TestStack,
                                                                                  tmp_path: Path) -> None:
    prefix = "uc" + uuid.uuid4().hex[:8]
    settings = stack.settings(triton=True, redis_prefix=prefix, home=tmp_path)
    client, keys = make_redis(settings), RedisKeys(prefix)
    registry = ModelRegistry(client, keys)
    verifier = load_verifier(stack.keys_dir)
    controller = RolloutController(UpdaterSettings(), client, keys, registry,
                                   TritonClient(stack.triton.spec.endpoints["grpc"]),
                                   ModelRepository(stack.model_repository, verifier),
                                   VersionCatalog(registry, verifier), verifier, SignalStore(client, keys))
    model = "ghost-" + uuid.uuid4().hex[:6]
    # Live state says v1 serves, but no artifact of it exists in Triton's repository.
    registry.record(model, 1, state="live")
    write_live(client, keys, LiveState(model=model, live_version=1, stage="none", loaded=[1]))

    alerts = controller.ensure_consistent()  # raised before, and the process manager restarted it forever
    assert [a.payload["kind"] for a in alerts] == ["updater.unservable"]
    assert alerts[0].payload["model"] == model and alerts[0].payload["version"] == "1"
    summary = alerts[0].payload["summary"]
    assert f"{model} v1 cannot be loaded into Triton" in summary and "(INTERNAL): " in summary  # Triton's reason
    assert controller.ensure_consistent() == []  # once per model and versions, not on every check
    state = read_live(client, keys, model)
    assert state is not None and state.live_version == 1  # nothing was rolled back: there is nothing to roll to
