"""Fuzzing budget: a short run by default (part of `make test`), longer with BULWARK_FUZZ_EXAMPLES."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("BULWARK_FUZZ_EXAMPLES", "0") or 0)


def budget(default: int) -> settings:
    """Hypothesis settings for a target: `default` examples, or BULWARK_FUZZ_EXAMPLES when set; no per-example
    deadline (a slow example is not a failure; a hang is caught by the test timeout)."""
    return settings(max_examples=EXAMPLES or default, deadline=None, derandomize=not EXAMPLES,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])
