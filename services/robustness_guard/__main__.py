"""`python -m services.robustness_guard` (or `bulwark-robustness-guard`): the gate and the drift watcher."""

from __future__ import annotations

from bulwark.artifacts import ArtifactStore
from bulwark.crypto import load_ring, load_signer, load_verifier
from bulwark.crypto.keys import RING_KEK
from bulwark.guard.policy import load_guard_policy
from bulwark.guard.settings import GuardSettings
from bulwark.registry import ModelRegistry
from bulwark.runtime import ServiceRuntime, main_guard
from bulwark.settings import CommonSettings, load_settings
from bulwark.versions import VersionCatalog
from services.robustness_guard.drift import SERVICE, DriftMonitor
from services.robustness_guard.gate import Gate
from services.robustness_guard.handler import GuardHandler


@main_guard
def main() -> None:
    """Consume quantized candidates and inference records until SIGTERM."""
    settings = load_settings(CommonSettings)
    own = load_settings(GuardSettings)
    policy = load_guard_policy(own.policy)
    rt = ServiceRuntime(SERVICE, settings)
    keys = settings.keys_path
    store = ArtifactStore(settings.artifacts_path, verifier=load_verifier(keys), kek=load_ring(RING_KEK, keys),
                          signer=load_signer(keys))
    registry = ModelRegistry(rt.redis, rt.keys)
    drift = DriftMonitor(settings, policy.drift, rt.redis, VersionCatalog(registry, load_verifier(keys)))
    rt.ensure_topics()
    rt.run(loop=rt.consumer_loop(GuardHandler(settings, Gate(policy, store), drift, registry)))


if __name__ == "__main__":
    main()
