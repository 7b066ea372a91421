"""`python -m services.quantizer` (or `bulwark-quantizer`): run the quantizer service."""

from __future__ import annotations

import logging
import os

from bulwark.artifacts import ArtifactStore
from bulwark.crypto import load_ring, load_signer, load_verifier
from bulwark.crypto.keys import RING_KEK
from bulwark.registry import ModelRegistry
from bulwark.runtime import ServiceRuntime, main_guard
from bulwark.settings import CommonSettings, load_settings
from services.quantizer.handler import SERVICE, QuantizerHandler
from services.quantizer.pipeline import Quantizer
from services.quantizer.settings import QuantizerSettings

log = logging.getLogger("services.quantizer")


@main_guard
def main() -> None:
    """Load settings and keys (verify, unwrap, sign), then consume models.trained until SIGTERM."""
    # Compressing and timing a transformer takes minutes inside one handler call: give the group that long.
    os.environ.setdefault("BULWARK_BUS_MAX_POLL_INTERVAL_MS", "3600000")
    settings = load_settings(CommonSettings)
    own = load_settings(QuantizerSettings)
    rt = ServiceRuntime(SERVICE, settings)
    keys = settings.keys_path
    store = ArtifactStore(settings.artifacts_path, verifier=load_verifier(keys), kek=load_ring(RING_KEK, keys),
                          signer=load_signer(keys))
    store.clean_partial()  # a crashed writer's half-written folders never get published

    def progress(message: str) -> None:
        log.info("%s", message)
        rt.stats.extra["activity"] = message

    handler = QuantizerHandler(settings, own, store, ModelRegistry(rt.redis, rt.keys), rt.stats,
                               Quantizer(own, progress=progress))
    rt.ensure_topics()
    rt.run(loop=rt.consumer_loop(handler))


if __name__ == "__main__":
    main()
