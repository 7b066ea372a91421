"""A thin client over tritonclient's gRPC API with Bulwark's error mapping and deadlines.

Triton down answers UNAVAILABLE at once (no waiting for the channel); a slow Triton is cut at the caller's
deadline (DEADLINE_EXCEEDED); an unknown or unloaded version is NOT_FOUND naming the model and version.
"""

from __future__ import annotations

import threading
from typing import Any, Sequence

import numpy as np
import tritonclient.grpc as tg
from opentelemetry import propagate
from opentelemetry.instrumentation.utils import suppress_instrumentation
from tritonclient.utils import InferenceServerException

from bulwark.errors import BulwarkError, NotFoundError, Reason, UnavailableError
from bulwark.families.base import TensorSpec

_NP = {"TYPE_FP32": (np.float32, "FP32"), "TYPE_FP16": (np.float16, "FP16"), "TYPE_INT64": (np.int64, "INT64"),
       "TYPE_INT32": (np.int32, "INT32")}


def _map_error(exc: InferenceServerException, url: str, model: str, version: int | None) -> BulwarkError:
    status = (exc.status() or "").upper()
    text = exc.message() or ""
    where = f"{model} v{version}" if version else model
    if "UNAVAILABLE" in status or "failed to connect" in text.lower() or "connection refused" in text.lower():
        return UnavailableError(f"Triton is unreachable at {url}; it may be restarting, retry shortly")
    if "DEADLINE_EXCEEDED" in status or "deadline" in text.lower():
        return BulwarkError(Reason.DEADLINE_EXCEEDED, f"Triton did not answer for {where} within the deadline")
    if "NOT_FOUND" in status or "unknown model" in text.lower() or "unavailable model" in text.lower() \
            or "is not ready" in text.lower() or "is not found" in text.lower():
        return NotFoundError(f"{where} is not loaded in Triton")
    if "INVALID_ARGUMENT" in status:
        return BulwarkError(Reason.INVALID_ARGUMENT, f"Triton refused the input for {where}: {text[:200]}")
    # A model-control failure (no version: load, unload, index) keeps Triton's words, which name the file or
    # setting at fault, for the operator; an inference failure reaches clients, who get no server paths.
    detail = f": {text[:200]}" if text and version is None else ""
    code = status.rsplit(".", 1)[-1] or "error"
    return BulwarkError(Reason.INTERNAL, f"Triton failed on {where} ({code}){detail}", retryable=False)


class TritonClient:
    """Inference and model control against one Triton; safe to share between threads.

    One tritonclient client (one channel) serves every thread: its calls other than streaming are
    thread-safe, and gRPC multiplexes concurrent calls over the one connection.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._shared: tg.InferenceServerClient | None = None

    @property
    def _client(self) -> tg.InferenceServerClient:
        if self._shared is None:
            with self._lock:
                if self._shared is None:
                    self._shared = tg.InferenceServerClient(self.url)
        return self._shared

    def infer(self, model: str, version: int, inputs: Sequence[np.ndarray], in_specs: Sequence[TensorSpec],
              out_specs: Sequence[TensorSpec], *, timeout_s: float) -> list[np.ndarray]:
        """Run one (possibly batched) request; returns every requested output, in order."""
        tensors = []
        for array, spec in zip(inputs, in_specs):
            dtype, triton_type = _NP[spec.dtype]
            t = tg.InferInput(spec.name, list(array.shape), triton_type)
            t.set_data_from_numpy(np.ascontiguousarray(array, dtype=dtype))
            tensors.append(t)
        # The caller's span times this call; the gRPC client instrumentation would only add a second span for
        # it (and its per-call cost on the front door's answer path). The trace context still goes to Triton,
        # for a Triton with its own OpenTelemetry tracing on.
        headers: dict[str, str] = {}
        propagate.inject(headers)
        try:
            with suppress_instrumentation():
                result = self._client.infer(model, tensors, model_version=str(version),
                                            outputs=[tg.InferRequestedOutput(s.name) for s in out_specs],
                                            client_timeout=max(timeout_s, 0.001), headers=headers or None)
        except InferenceServerException as exc:
            raise _map_error(exc, self.url, model, version) from None
        return [result.as_numpy(s.name) for s in out_specs]

    def _call(self, fn: str, *args: Any, model: str = "", **kwargs: Any) -> Any:
        try:
            return getattr(self._client, fn)(*args, **kwargs)
        except InferenceServerException as exc:
            raise _map_error(exc, self.url, model or "server", None) from None

    def server_ready(self) -> bool:
        """True when Triton answers and is ready."""
        try:
            return bool(self._client.is_server_ready(client_timeout=2))
        except InferenceServerException:
            return False

    def model_ready(self, model: str, version: int) -> bool:
        """True when that version is loaded and ready."""
        try:
            return bool(self._client.is_model_ready(model, str(version), client_timeout=2))
        except InferenceServerException:
            return False

    def load(self, model: str, *, timeout_s: float = 120) -> None:
        """Load (or reload) a model per its config.pbtxt; Triton keeps unchanged versions serving."""
        self._call("load_model", model, model=model, client_timeout=timeout_s)

    def unload(self, model: str, *, timeout_s: float = 60) -> None:
        """Unload every version of a model."""
        self._call("unload_model", model, model=model, client_timeout=timeout_s)

    def index(self) -> list[dict[str, Any]]:
        """The repository index: each model version and its state."""
        idx = self._call("get_model_repository_index", as_json=True)
        return list(idx.get("models", []))

    def loaded_versions(self, model: str) -> list[int]:
        """Versions of `model` Triton reports READY."""
        return sorted(int(m["version"]) for m in self.index()
                      if m.get("name") == model and m.get("state") == "READY" and m.get("version"))
