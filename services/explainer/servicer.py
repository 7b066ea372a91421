"""The gRPC adapter: proto messages in and out of the data plane; deadlines from the call."""

from __future__ import annotations

from typing import Any

import grpc

from bulwark.api.v1 import common_pb2, explain_pb2, explain_pb2_grpc
from bulwark.errors import BulwarkError, InvalidArgumentError, Reason
from bulwark.grpcx import item_error, remaining_s
from services.explainer.dataplane import ExplainerDataPlane, ExplainInput, ExplainOutput

SERVICE_NAME = "bulwark.api.v1.ExplainService"


def _value(v: common_pb2.Value, name: str) -> Any:
    kind = v.WhichOneof("kind")
    if kind is None:
        raise InvalidArgumentError(f"features.{name}: empty value; set number, category or flag")
    return getattr(v, kind)


def to_input(req: explain_pb2.ExplainRequest) -> ExplainInput:
    """An ExplainRequest as the data plane's input."""
    if req.version < 0:
        raise InvalidArgumentError("version: must be a positive number, or empty for the live version")
    if len(req.request_id) > 128:
        raise InvalidArgumentError("request_id: at most 128 characters")
    return ExplainInput(model=req.model, version=int(req.version) or None,
                        features={k: _value(v, k) for k, v in req.features.items()}, text=req.text,
                        request_id=req.request_id, method=req.method, steps=int(req.steps), target=req.target)


def to_response(out: ExplainOutput) -> explain_pb2.ExplainResponse:
    """The data plane's answer as an ExplainResponse."""
    c = out.convergence
    return explain_pb2.ExplainResponse(
        model=out.model, version=out.version, method=out.method, target=out.target,
        attributions=[explain_pb2.Attribution(feature=f, value=v) for f, v in out.attributions],
        baseline=out.baseline, output=out.output, baseline_output=out.baseline_output,
        convergence=explain_pb2.Convergence(delta=c.delta, relative_delta=c.relative_delta, converged=c.converged,
                                            steps=c.steps),
        cached=out.cached, request_id=out.request_id, baseline_kind=out.baseline_kind, model_form=out.model_form,
        artifact_digest=out.artifact_digest, family=out.family)


def error_item(exc: BulwarkError, request_id: str = "") -> explain_pb2.ExplainResponse:
    """A batch item that failed."""
    return explain_pb2.ExplainResponse(request_id=request_id, error=item_error(exc))


class ExplainServicer(explain_pb2_grpc.ExplainServiceServicer):
    """ExplainService over the data plane."""

    def __init__(self, plane: ExplainerDataPlane) -> None:
        self._plane = plane

    def _deadline(self, context: grpc.ServicerContext) -> float:
        return remaining_s(context, self._plane.own.default_deadline_s, 0.01)

    def Explain(self, request: explain_pb2.ExplainRequest, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Attributions for one input, or for the prediction logged under a request id."""
        return to_response(self._plane.explain(to_input(request), deadline_s=self._deadline(context)))

    def ExplainBatch(self, request: explain_pb2.ExplainBatchRequest, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Attributions for many inputs; each item answers or carries its own error."""
        limit = self._plane.own.max_batch_items
        if len(request.items) > limit:
            raise BulwarkError(Reason.RESOURCE_EXHAUSTED, f"{len(request.items)} items exceed the limit of {limit} "
                               "per ExplainBatch (BULWARK_EXPLAINER_MAX_BATCH_ITEMS); split the batch")
        inputs: list[ExplainInput | BulwarkError] = []
        for item in request.items:
            try:
                inputs.append(to_input(item))
            except BulwarkError as exc:
                inputs.append(exc)
        valid = [i for i in inputs if isinstance(i, ExplainInput)]
        answers = iter(self._plane.explain_many(valid, deadline_s=self._deadline(context)))
        items = []
        for item, raw in zip(inputs, request.items):
            result = item if isinstance(item, BulwarkError) else next(answers)
            if isinstance(result, BulwarkError):
                items.append(error_item(result, raw.request_id))
            else:
                items.append(to_response(result))
        return explain_pb2.ExplainBatchResponse(items=items)
