"""Bench helpers: a real trained (and optionally quantized) model version on a private stack, made by the
services' own code paths (anonymizer handler, trainer pipeline, quantizer handler)."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `tests.integration.helpers`

from tests.integration.helpers import quantize, train_version, trained_event  # noqa: E402

__all__ = ["clean_stamps", "new_context", "quantize", "reference_data", "train_version", "trained_event"]


def new_context(stack, **overrides):  # noqa: ANN001, ANN201
    """Settings with private topics and a private Redis prefix on `stack`."""
    topics = stack.topics(partitions=2)
    overrides.setdefault("redis_prefix", "bn" + uuid.uuid4().hex[:8])
    return stack.settings(**topics, **overrides)


def reference_data(n: int):  # noqa: ANN201
    """Reference events split and encoded as the trainer does: (spec, x_train, y_train, x_val, y_val)."""
    import numpy as np

    from bulwark.features import REFERENCE_FEATURES, FeatureSpec
    from bulwark.reference import ReferenceGenerator
    from services.trainer.dataset import in_validation

    events = list(ReferenceGenerator(seed=101, labeled_fraction=1.0).events(n))
    train = [e.payload for e in events if not in_validation(e.id, 0.2)]
    val = [e.payload for e in events if in_validation(e.id, 0.2)]
    spec = FeatureSpec.fit(train, REFERENCE_FEATURES)
    y = lambda rs: np.array([int(r["is_fraud"]) for r in rs], dtype=np.int64)  # noqa: E731
    return spec, spec.encode(train), y(train), spec.encode(val), y(val)


def clean_stamps(settings, topic: str, n: int, what: str) -> list[int]:  # noqa: ANN001
    """Sorted broker timestamps (ms) of the distinct clean events on `topic`; at least `n` of them, or an error
    that says `what` run fell short."""
    from bulwark.bus.reader import read_topic

    stamps: dict[str, int] = {}
    for rec, event in read_topic(settings, topic, idle_ms=1000):
        if event is not None:
            stamps.setdefault(event.id, rec.timestamp)
    if len(stamps) < n:
        raise RuntimeError(f"only {len(stamps)} distinct clean events of {n} ({what})")
    return sorted(stamps.values())
