"""The gRPC adapter: proto messages in and out of the data plane; deadlines from the call."""

from __future__ import annotations

from typing import Any, Iterator

import grpc

from bulwark.api.v1 import common_pb2, inference_pb2, inference_pb2_grpc
from bulwark.auth import current_identity
from bulwark.errors import BulwarkError, InvalidArgumentError, Reason
from bulwark.grpcx import item_error, remaining_s
from services.inference.dataplane import InferenceDataPlane, PredictInput, PredictOutput

SERVICE_NAME = "bulwark.api.v1.InferenceService"


def _value(v: common_pb2.Value, name: str) -> Any:
    kind = v.WhichOneof("kind")
    if kind is None:
        raise InvalidArgumentError(f"features.{name}: empty value; set number, category or flag")
    return getattr(v, kind)


def to_input(req: inference_pb2.PredictRequest) -> PredictInput:
    """A PredictRequest as the data plane's input."""
    if req.version < 0:
        raise InvalidArgumentError("version: must be a positive number, or empty for the live version")
    return PredictInput(model=req.model, version=int(req.version) if req.version else None,
                        features={k: _value(v, k) for k, v in req.features.items()}, text=req.text,
                        request_id=req.request_id, client_key=req.client_key)


def to_response(out: PredictOutput) -> inference_pb2.PredictResponse:
    """The data plane's answer as a PredictResponse."""
    return inference_pb2.PredictResponse(
        request_id=out.request_id, model=out.model, version=out.version, label=out.label,
        score=out.probabilities[-1], probabilities=out.probabilities, classes=out.classes, cached=out.cached,
        guard=inference_pb2.GuardVerdict(action=out.guard.action, ood_score=out.guard.ood_score,
                                         adversarial_score=out.guard.adversarial_score, reasons=out.guard.reasons))


def error_item(exc: BulwarkError, request_id: str = "") -> inference_pb2.PredictResponse:
    """A batch or stream item that failed."""
    return inference_pb2.PredictResponse(request_id=request_id, error=item_error(exc))


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    """InferenceService over the data plane."""

    def __init__(self, plane: InferenceDataPlane) -> None:
        self._plane = plane

    def _deadline(self, context: grpc.ServicerContext) -> float:
        return remaining_s(context, self._plane.own.default_deadline_s, 0.005)

    def Predict(self, request: inference_pb2.PredictRequest, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """One prediction."""
        out = self._plane.predict(to_input(request), deadline_s=self._deadline(context),
                                  identity=current_identity().name)
        return to_response(out)

    def PredictBatch(self, request: inference_pb2.PredictBatchRequest, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Many predictions; each item answers or carries its own error."""
        if len(request.items) > self._plane.own.max_batch_items:
            raise BulwarkError(Reason.RESOURCE_EXHAUSTED, f"{len(request.items)} items exceed the limit of "
                               f"{self._plane.own.max_batch_items} per PredictBatch; split the batch")
        inputs: list[PredictInput | BulwarkError] = []
        for item in request.items:
            try:
                inputs.append(to_input(item))
            except BulwarkError as exc:
                inputs.append(exc)
        valid = [i for i in inputs if isinstance(i, PredictInput)]
        answers = iter(self._plane.predict_many(valid, deadline_s=self._deadline(context),
                                                identity=current_identity().name))
        items = []
        for item, raw in zip(inputs, request.items):
            result = item if isinstance(item, BulwarkError) else next(answers)
            items.append(error_item(result, raw.request_id) if isinstance(result, BulwarkError) else to_response(result))
        return inference_pb2.PredictBatchResponse(items=items)

    def PredictStream(self, request_iterator: Iterator[inference_pb2.PredictRequest],  # noqa: N802
                      context: grpc.ServicerContext) -> Iterator[inference_pb2.PredictResponse]:
        """One response per request, in order; a bad item answers with its error and the stream goes on."""
        identity = current_identity().name
        for req in request_iterator:
            try:
                yield to_response(self._plane.predict(to_input(req), deadline_s=self._plane.own.default_deadline_s,
                                                      identity=identity))
            except BulwarkError as exc:
                yield error_item(exc, req.request_id)
