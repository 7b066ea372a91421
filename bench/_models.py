"""Bench helpers: a real trained (and optionally quantized) model version on a private stack, made by the
services' own code paths (anonymizer handler, trainer pipeline, quantizer handler)."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `tests.integration.helpers`

from tests.integration.helpers import quantize, train_version, trained_event  # noqa: E402

__all__ = ["new_context", "quantize", "train_version", "trained_event"]


def new_context(stack, **overrides):  # noqa: ANN001, ANN201
    """Settings with private topics and a private Redis prefix on `stack`."""
    topics = stack.topics(partitions=2)
    overrides.setdefault("redis_prefix", "bn" + uuid.uuid4().hex[:8])
    return stack.settings(**topics, **overrides)
