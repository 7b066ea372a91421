"""`python -m services.trainer.job`: train once and exit (a Kubernetes Job, or torchrun for several workers).

    torchrun --nproc-per-node 2 -m services.trainer.job --reason manual
    # or, as an indexed Job: each pod sets RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT and runs the same command

Every rank builds the same training set (same data, same seed) and trains its shard; rank 0 publishes the
artifact and the `models.trained` event. The trigger id makes a re-run of the same Job publish nothing new.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import uuid

import torch.distributed as dist

from bulwark.bus.producer import EventProducer, make_producer
from bulwark.health import ServiceStats
from bulwark.logs import setup_logging
from bulwark.redis_client import make_redis
from bulwark.runtime import main_guard
from bulwark.settings import CommonSettings, load_settings
from services.trainer.handler import TrainerHandler
from services.trainer.pipeline import TrainingPipeline, TrainRequest, artifact_store
from services.trainer.settings import TrainerSettings

log = logging.getLogger("services.trainer.job")


@main_guard
def main() -> None:
    """Train one version; exit 0 when published (or already published), 3 when the data cannot make a model."""
    parser = argparse.ArgumentParser(prog="python -m services.trainer.job", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reason", default="manual", choices=["manual", "schedule", "drift", "forget", "bootstrap"])
    parser.add_argument("--requested-by", default=os.environ.get("BULWARK_ACTOR", "trainer-job"))
    parser.add_argument("--trigger-id", default=None, help="idempotence key (default: the Job's name or a new id)")
    parser.add_argument("--workers", type=int, default=None, help="local workers when not under torchrun")
    args = parser.parse_args()
    settings = load_settings(CommonSettings)
    own = load_settings(TrainerSettings)
    setup_logging(settings.log_level, service="trainer-job")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("gloo")  # RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT from torchrun or the Job
    trigger = args.trigger_id or os.environ.get("JOB_NAME") or f"job-{uuid.uuid4()}"
    client = make_redis(settings)
    pipeline = TrainingPipeline(settings, own, client, artifact_store(settings), workers=args.workers,
                                progress=lambda m: log.info("%s", m))
    handler = TrainerHandler(settings, own, pipeline, client, ServiceStats())
    req = TrainRequest(trigger, args.reason, args.requested_by)
    try:
        outputs = list(handler.train_now(trigger, req))  # the same publication path as the service
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if not outputs:
        return  # a non-zero rank: rank 0 publishes
    producer = EventProducer(make_producer(settings, client_id="trainer-job"))
    for out in outputs:
        producer.send(out)
    producer.flush()
    producer.close()
    kinds = [o.event.type for o in outputs]
    print(json.dumps({"trigger": trigger, "published": kinds, "payload": outputs[0].event.payload}, default=str))
    if "alert" in kinds:
        sys.exit(3)


if __name__ == "__main__":
    main()
