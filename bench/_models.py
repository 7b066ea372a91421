"""Bench helpers: a real trained (and optionally quantized) model version on a private stack, made by the
services' own code paths (anonymizer handler, trainer pipeline, quantizer handler)."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `tests.integration.helpers`

from tests.integration.helpers import quantize, reference_split, train_version, trained_event  # noqa: E402

__all__ = ["clean_stamps", "new_context", "quantize", "reference_data", "train_version", "trained_event"]


def new_context(stack, **overrides):  # noqa: ANN001, ANN201
    """Settings with private topics and a private Redis prefix on `stack`."""
    topics = stack.topics(partitions=2)
    overrides.setdefault("redis_prefix", "bn" + uuid.uuid4().hex[:8])
    return stack.settings(**topics, **overrides)


def reference_data(n: int):  # noqa: ANN201
    """Reference events split and encoded as the trainer does: (spec, x_train, y_train, x_val, y_val)."""
    return reference_split(n, seed=101)


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
