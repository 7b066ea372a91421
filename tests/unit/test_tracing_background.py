"""Background threads make no library spans; the threads that serve requests still do."""

from __future__ import annotations

import threading

from opentelemetry.instrumentation.utils import is_instrumentation_enabled

from bulwark.tracing import background_thread


def _enabled_in_thread(target_of) -> bool:  # noqa: ANN001
    seen: dict[str, bool] = {}

    def body() -> None:
        seen["enabled"] = is_instrumentation_enabled()

    thread = threading.Thread(target=target_of(body))
    thread.start()
    thread.join(5)
    return seen["enabled"]


def test_background_thread_quiets_the_instrumentations_the_redis_and_grpc_wrappers_check() -> None:
    assert _enabled_in_thread(background_thread) is False


def test_a_plain_thread_and_the_caller_stay_instrumented() -> None:
    assert _enabled_in_thread(lambda body: body) is True
    assert is_instrumentation_enabled() is True
