"""gRPC server plumbing every Bulwark server shares: health, reflection, error mapping, TLS.

- `grpc.health.v1` reports SERVING / NOT_SERVING per service (and "" for the whole server);
- reflection lets a client that knows nothing of our protos list and call the services;
- every call is timed in `rpc.server.duration`, by service, method and status code;
- one interceptor turns `BulwarkError` into its status code (see `errors.GRPC_STATUS`) and any other
  exception into INTERNAL with a fixed message (the details go to the log without values);
- optional TLS, with client certificates required for mutual TLS.
"""

from __future__ import annotations

import logging
import time
import traceback
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry import metrics

from bulwark.errors import GRPC_STATUS, BulwarkError
from bulwark.meters import LATENCY_BUCKETS_MS
from bulwark.redis_client import OUTAGES, outage

log = logging.getLogger(__name__)


def _abort(context: grpc.ServicerContext, exc: BaseException, method: str) -> None:
    if isinstance(exc, OUTAGES):
        exc = outage(method, exc)
    if isinstance(exc, BulwarkError):
        context.abort(exc.grpc_status, f"{exc.reason.value}: {exc.message}")
    log.error("unhandled error method=%s exception=%s\n%s", method, type(exc).__name__,
              "".join(traceback.format_tb(exc.__traceback__)))
    context.abort(grpc.StatusCode.INTERNAL, "INTERNAL: the server failed on this request; it has been logged")


class ErrorInterceptor(grpc.ServerInterceptor):
    """Maps exceptions raised by servicers to gRPC statuses with actionable messages."""

    def intercept_service(self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        method = details.method

        def unary(fn: Callable[..., Any]) -> Callable[..., Any]:
            def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
                try:
                    return fn(request, context)
                except grpc.RpcError:
                    raise
                except Exception as exc:  # noqa: BLE001 - every error becomes a status
                    if _is_abort(exc):
                        raise
                    _abort(context, exc, method)
            return wrapped

        def streaming(fn: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
            def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                try:
                    yield from fn(request, context)
                except grpc.RpcError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    if _is_abort(exc):
                        raise
                    _abort(context, exc, method)
            return wrapped

        return rewrap_handler(handler, unary, streaming)


# A method handler's kinds: the attribute holding its behaviour, the factory that rebuilds it, and whether it
# streams responses out (a generator, wrapped as one).
_HANDLER_KINDS = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler, False),
    ("unary_stream", grpc.unary_stream_rpc_method_handler, True),
    ("stream_unary", grpc.stream_unary_rpc_method_handler, False),
    ("stream_stream", grpc.stream_stream_rpc_method_handler, True),
)


def rewrap_handler(handler: grpc.RpcMethodHandler, unary: Callable[[Any], Any],
                   streaming: Callable[[Any], Any]) -> grpc.RpcMethodHandler:
    """`handler` with its behaviour wrapped (for a server interceptor): `unary` for calls answering once,
    `streaming` for calls streaming out."""
    for kind, rebuild, streams_out in _HANDLER_KINDS:
        behaviour = getattr(handler, kind)
        if behaviour:
            wrapped = (streaming if streams_out else unary)(behaviour)
            return rebuild(wrapped, handler.request_deserializer, handler.response_serializer)
    return handler


class RpcMetrics(grpc.ServerInterceptor):
    """`rpc.server.duration` (histogram, ms) of every call, with the OpenTelemetry RPC attributes:
    `rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code`. Outermost, so calls refused by
    authentication are timed too; a stream is timed until its last message."""

    def __init__(self, meter: metrics.Meter | None = None) -> None:
        meter = meter or metrics.get_meter("bulwark.grpc")
        self._duration = meter.create_histogram(
            "rpc.server.duration", unit="ms", description="Duration of inbound gRPC calls",
            explicit_bucket_boundaries_advisory=list(LATENCY_BUCKETS_MS))

    def intercept_service(self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        service, _, name = details.method.lstrip("/").rpartition("/")
        base = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}

        def done(started: float, context: grpc.ServicerContext, ended: grpc.StatusCode) -> None:
            # A status the call set (an abort, or an error the ErrorInterceptor mapped) wins over its ending.
            code = context.code() or ended
            if code is grpc.StatusCode.UNKNOWN and not context.is_active():
                # It failed because the client went away: it cancelled, or its deadline passed.
                left = context.time_remaining()
                late = left is not None and left <= 0
                code = grpc.StatusCode.DEADLINE_EXCEEDED if late else grpc.StatusCode.CANCELLED
            self._duration.record((time.perf_counter() - started) * 1000,
                                  {**base, "rpc.grpc.status_code": code.value[0]})

        def unary(fn: Callable[..., Any]) -> Callable[..., Any]:
            def timed(request: Any, context: grpc.ServicerContext) -> Any:
                started, ended = time.perf_counter(), grpc.StatusCode.UNKNOWN
                try:
                    out = fn(request, context)
                    ended = grpc.StatusCode.OK
                    return out
                finally:
                    done(started, context, ended)
            return timed

        def streaming(fn: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
            def timed(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                started, ended = time.perf_counter(), grpc.StatusCode.UNKNOWN
                try:
                    yield from fn(request, context)
                    ended = grpc.StatusCode.OK
                finally:
                    done(started, context, ended)
            return timed

        return rewrap_handler(handler, unary, streaming)


def _is_abort(exc: BaseException) -> bool:
    # context.abort() sets the status and then raises a bare `Exception()`; let it through untouched.
    return type(exc) is Exception and not exc.args


@dataclass(frozen=True)
class TLSConfig:
    """Server TLS: certificate and key, and a CA to require client certificates (mutual TLS)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def credentials(self) -> grpc.ServerCredentials:
        """gRPC server credentials for this config."""
        ca = self.client_ca.read_bytes() if self.client_ca else None
        return grpc.ssl_server_credentials([(self.key.read_bytes(), self.cert.read_bytes())],
                                           root_certificates=ca, require_client_auth=ca is not None)


@dataclass
class GrpcServer:
    """A started-or-not gRPC server with its health servicer and bound port."""

    server: grpc.Server
    health: health.HealthServicer
    port: int
    services: Sequence[str]

    def start(self) -> None:
        """Start serving and mark every service SERVING."""
        self.server.start()
        self.set_serving(True)

    def set_serving(self, serving: bool, service: str | None = None) -> None:
        """Report SERVING or NOT_SERVING for one service, or for all and the server."""
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ([service] if service else ["", *self.services]):
            self.health.set(name, status)

    def stop(self, grace: float | None = 5) -> Any:
        """Stop accepting calls; in-flight calls get `grace` seconds. Returns an event set when stopped."""
        self.set_serving(False)
        return self.server.stop(grace)


def server_tls(settings: Any) -> TLSConfig | None:
    """The TLS configuration from settings (None: plaintext)."""
    if settings.grpc_tls_cert and settings.grpc_tls_key:
        return TLSConfig(settings.grpc_tls_cert, settings.grpc_tls_key, settings.grpc_tls_client_ca)
    return None


def build_server(*, port: int, host: str = "0.0.0.0",
                 register: Iterable[tuple[Callable[[Any, grpc.Server], None], Any]],
                 service_names: Sequence[str], max_workers: int = 16, tls: TLSConfig | None = None,
                 interceptors: Sequence[grpc.ServerInterceptor] = (),
                 options: Sequence[tuple[str, Any]] = (), meter: metrics.Meter | None = None) -> GrpcServer:
    """A gRPC server with `register`ed servicers, health checking, reflection and error mapping.

    `register` holds pairs of (add_XServicer_to_server, servicer); `service_names` are their full names
    (e.g. "bulwark.api.v1.InferenceService"). Port 0 picks a free port (see `.port`). Calls are timed on
    `meter` (default: the service's global meter provider).
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        interceptors=[RpcMetrics(meter), *interceptors, ErrorInterceptor()],
        options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 16 * 1024 * 1024), *options],
    )
    for add, servicer in register:
        add(servicer, server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection([*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    address = f"{host}:{port}"
    bound = server.add_secure_port(address, tls.credentials()) if tls else server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"cannot bind gRPC server to {address}: port in use or not allowed")
    srv = GrpcServer(server, health_servicer, bound, list(service_names))
    for name in ["", *service_names]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    return srv


def item_error(exc: BulwarkError) -> Any:
    """A failed item of a batch or stream, as `common_pb2.ItemError` (reason, message, gRPC code number)."""
    from bulwark.api.v1 import common_pb2

    return common_pb2.ItemError(reason=exc.reason.value, message=exc.message, code=GRPC_STATUS[exc.reason].value[0])


def remaining_s(context: grpc.ServicerContext, default_s: float, margin_s: float = 0.005) -> float:
    """Seconds left of the caller's deadline, less a margin to answer in; `default_s` when none was sent."""
    remaining = context.time_remaining()
    return default_s if remaining is None else max(remaining - margin_s, 0.0)
