"""Helpers shared by integration tests: genuine clean events without running the anonymizer service."""

from __future__ import annotations

from typing import Any, Iterable

from kafka import KafkaProducer

from bulwark.bus import Context
from bulwark.bus.client import kafka_client_config
from bulwark.crypto import Pseudonymizer, load_ring
from bulwark.crypto.keys import RING_FIELD, RING_PSEUDONYM
from bulwark.crypto.subjects import SubjectCipher, SubjectKeyStore
from bulwark.events import Envelope, EventTypeRegistry
from bulwark.redis_client import make_redis
from bulwark.redis_keys import RedisKeys
from bulwark.reference import ReferenceGenerator
from bulwark.settings import CommonSettings
from bulwark.testing.stack import TestStack
from bulwark.tracing import inject_headers
from services.ingest_anonymizer.handler import AnonymizerHandler
from services.ingest_anonymizer.policy import DEFAULT_POLICY, load_policy


def anonymize(stack: TestStack, settings: CommonSettings, raw: Iterable[Envelope]) -> list[Envelope]:
    """Clean events made by the anonymizer's own handler, in this process, with the stack's keys."""
    registry = EventTypeRegistry.default()
    client = make_redis(settings)
    store = SubjectKeyStore(client, RedisKeys(settings.redis_prefix), load_ring(RING_FIELD, stack.keys_dir))
    handler = AnonymizerHandler(settings, load_policy(DEFAULT_POLICY, registry), registry,
                                Pseudonymizer(load_ring(RING_PSEUDONYM, stack.keys_dir)), SubjectCipher(store))
    ctx = Context("events.raw", 0, 0, None, [], "test", settings, client, RedisKeys(settings.redis_prefix))
    return [out.event for e in raw for out in handler.handle(e, ctx)]


def clean_events(stack: TestStack, settings: CommonSettings, n: int, seed: int, **generator: Any) -> list[Envelope]:
    """`n` reference events, anonymized."""
    return anonymize(stack, settings, ReferenceGenerator(seed=seed, **generator).events(n))


def publish(settings: CommonSettings, topic: str, events: Iterable[Envelope]) -> int:
    """Produce events to a topic with trace headers; returns how many."""
    producer = KafkaProducer(**kafka_client_config(settings, client_id="test-publish"), linger_ms=5,
                             batch_size=256 * 1024)
    n = 0
    for e in events:
        producer.send(topic, e.encode(), key=e.key, headers=inject_headers([("bulwark-envelope", b"1")]))
        n += 1
    producer.flush()
    producer.close()
    return n


def train_version(stack: TestStack, settings: CommonSettings, *, model: str, events: int = 3000, seed: int = 1,
                  family: str = "mlp", publish_events: bool = True, **trainer: Any):  # noqa: ANN201
    """Publish clean events and train one version in this process with the trainer's own pipeline."""
    import uuid

    from services.trainer.pipeline import TrainingPipeline, TrainRequest, artifact_store
    from services.trainer.settings import TrainerSettings

    if publish_events:
        publish(settings, settings.topics.events_clean, clean_events(stack, settings, events, seed=seed,
                                                                     labeled_fraction=1.0))
    own = TrainerSettings(model=model, family=family, min_labeled=200, max_epochs=trainer.pop("max_epochs", 25),
                          patience=trainer.pop("patience", 4), **trainer)
    pipeline = TrainingPipeline(settings, own, make_redis(settings), artifact_store(settings))
    return pipeline.run(TrainRequest(f"test-{uuid.uuid4()}", "manual", "test"))


def deploy(stack: TestStack, settings: CommonSettings, model: str, versions: list[int], *, live: int,
           candidate: int | None = None, stage: str = "none", share: float = 0.0) -> None:
    """Place versions in Triton's repository, load them, and set the live state (what the updater does)."""
    from bulwark.crypto import load_verifier
    from bulwark.live import LiveState, write_live
    from bulwark.registry import ModelRegistry
    from bulwark.triton.client import TritonClient
    from bulwark.triton.repository import ModelRepository
    from bulwark.versions import VersionCatalog

    client = make_redis(settings)
    keys = RedisKeys(settings.redis_prefix)
    catalog = VersionCatalog(ModelRegistry(client, keys), load_verifier(stack.keys_dir))
    repo = ModelRepository(stack.model_repository, load_verifier(stack.keys_dir))
    for v in versions:
        served = catalog.get(model, v)
        repo.place(served.folder, served.inputs, served.outputs)
    triton = TritonClient(stack.triton.spec.endpoints["grpc"])
    triton.load(model)
    for v in versions:
        assert triton.model_ready(model, v), f"{model} v{v} did not load in Triton"
    write_live(client, keys, LiveState(model=model, live_version=live, candidate=candidate, stage=stage,
                                       share=share, loaded=list(versions)))


def trained_event(outcome: Any) -> Envelope:
    """The `model.trained` event the trainer publishes for an outcome of `train_version`."""
    return Envelope(type="model.trained", source="trainer", subject=outcome.model, payload={
        "model": outcome.model, "version": outcome.version, "family": outcome.family, "parent": None,
        "artifact": {"path": str(outcome.path), "digest": outcome.digest, "stage": "trained"},
        "metrics": {k: v for k, v in outcome.metrics.items() if isinstance(v, (int, float))},
        "dataset": outcome.dataset, "reason": "manual", "requested_by": "test"})


def quantize(settings: CommonSettings, trained: Envelope, own: Any = None) -> Envelope:
    """Run the quantizer's own handler in this process on a `model.trained` event (with `own`, a
    QuantizerSettings, or the defaults); returns its output event."""
    from bulwark.health import ServiceStats
    from bulwark.registry import ModelRegistry
    from services.quantizer.handler import QuantizerHandler
    from services.quantizer.settings import QuantizerSettings
    from services.trainer.pipeline import artifact_store

    client = make_redis(settings)
    handler = QuantizerHandler(settings, own or QuantizerSettings(), artifact_store(settings),
                               ModelRegistry(client, RedisKeys(settings.redis_prefix)), ServiceStats())
    ctx = Context(settings.topics.models_trained, 0, 0, None, [], "test", settings, client,
                  RedisKeys(settings.redis_prefix))
    [out] = handler.handle(trained, ctx)
    return out.event


def reference_split(n: int, *, seed: int):  # noqa: ANN201
    """Reference events split and encoded as the trainer does: (spec, x_train, y_train, x_val, y_val)."""
    import numpy as np

    from bulwark.features import REFERENCE_FEATURES, FeatureSpec
    from bulwark.reference import ReferenceGenerator
    from services.trainer.dataset import in_validation

    events = list(ReferenceGenerator(seed=seed, labeled_fraction=1.0).events(n))
    train = [e.payload for e in events if not in_validation(e.id, 0.2)]
    val = [e.payload for e in events if in_validation(e.id, 0.2)]
    spec = FeatureSpec.fit(train, REFERENCE_FEATURES)
    y = lambda rs: np.array([int(r["is_fraud"]) for r in rs], dtype=np.int64)  # noqa: E731
    return spec, spec.encode(train), y(train), spec.encode(val), y(val)
