"""`python -m services.trainer [--workers N]` (or `bulwark-trainer`): run the trainer service."""

from __future__ import annotations

import argparse
import logging
import os

from bulwark.runtime import ServiceRuntime, main_guard
from bulwark.settings import CommonSettings, load_settings
from services.trainer.handler import TrainerHandler
from services.trainer.pipeline import SERVICE, TrainingPipeline, artifact_store
from services.trainer.settings import TrainerSettings

log = logging.getLogger("services.trainer")


@main_guard
def main() -> None:
    """Consume clean events and training requests; train when triggered."""
    parser = argparse.ArgumentParser(prog="bulwark-trainer", description=__doc__)
    parser.add_argument("--workers", type=int, default=None, help="training processes (torch.distributed, gloo)")
    args = parser.parse_args()
    # Training runs inside one handler call: give it time before the group moves its partitions away.
    os.environ.setdefault("BULWARK_BUS_MAX_POLL_INTERVAL_MS", "3600000")
    settings = load_settings(CommonSettings)
    own = load_settings(TrainerSettings)
    rt = ServiceRuntime(SERVICE, settings)
    store = artifact_store(settings)
    store.clean_partial()  # a crashed writer's half-written folders never get published

    def progress(message: str) -> None:
        log.info("%s", message)
        rt.stats.extra["activity"] = message

    pipeline = TrainingPipeline(settings, own, rt.redis, store, workers=args.workers, progress=progress)
    rt.ensure_topics()
    rt.run(loop=rt.consumer_loop(TrainerHandler(settings, own, pipeline, rt.redis, rt.stats)))


if __name__ == "__main__":
    main()
