"""`python -m services.inference` (or `bulwark-inference`): the gRPC front door to Triton."""

from __future__ import annotations

from bulwark.api.v1 import inference_pb2_grpc
from bulwark.auth import AuthInterceptor, load_credentials
from bulwark.bus.producer import LazyEventProducer, Output
from bulwark.crypto import load_verifier
from bulwark.grpcx import build_server, server_tls
from bulwark.live import LiveReader
from bulwark.registry import ModelRegistry
from bulwark.runtime import ServiceRuntime, main_guard
from bulwark.settings import CommonSettings, load_settings
from bulwark.triton.client import TritonClient
from bulwark.versions import VersionCatalog
from bulwark.guard.extraction import ExtractionDefence
from bulwark.guard.online import OnlineGuard
from bulwark.guard.policy import load_guard_policy
from bulwark.guard.settings import GuardSettings
from services.inference.alerts import FlagAlerts
from services.inference.dataplane import SERVICE, InferenceDataPlane
from services.inference.meters import DoorMeters
from services.inference.servicer import SERVICE_NAME, InferenceServicer
from services.inference.settings import InferenceSettings

METHOD_SCOPES = {f"/{SERVICE_NAME}/{m}": "predict" for m in ("Predict", "PredictBatch", "PredictStream")}


@main_guard
def main() -> None:
    """Serve InferenceService until SIGTERM; health follows Triton's readiness."""
    settings = load_settings(CommonSettings)
    own = load_settings(InferenceSettings)
    rt = ServiceRuntime(SERVICE, settings)
    triton = TritonClient(settings.triton_grpc_url)
    catalog = VersionCatalog(ModelRegistry(rt.redis, rt.keys), load_verifier(settings.keys_path))
    producer = LazyEventProducer(settings, client_id="inference-log")
    guard_settings = load_settings(GuardSettings)
    guard = extraction = None
    if guard_settings.online:
        policy = load_guard_policy(guard_settings.policy)
        flags = FlagAlerts(settings, producer, interval_s=guard_settings.alert_interval_s)
        guard = OnlineGuard(policy.online, rt.redis, rt.keys,
                            ModelRegistry(rt.redis, rt.keys), load_verifier(settings.keys_path), on_flag=flags)
        if policy.extraction.enabled:
            extraction = ExtractionDefence(policy.extraction, rt.redis, rt.keys, on_alert=lambda e: producer.send_nowait(
                Output(settings.topics.alerts, e)))
    live = LiveReader(rt.redis, rt.keys, ttl_s=own.live_cache_s)
    plane = InferenceDataPlane(settings, own, rt.redis, triton, catalog, live, producer, guard, extraction,
                               DoorMeters(SERVICE, settings.instance_id, rt.stats))
    auth = AuthInterceptor(load_credentials(settings.keys_path), METHOD_SCOPES, required=settings.auth_required)
    server = build_server(port=own.port, host=own.host, service_names=[SERVICE_NAME], max_workers=own.threads,
                          register=[(inference_pb2_grpc.add_InferenceServiceServicer_to_server,
                                     InferenceServicer(plane))], tls=server_tls(settings), interceptors=[auth])
    rt.stats.extra["grpc_port"] = str(server.port)

    def probe() -> str:
        # Serving needs Triton: the gRPC health check and the heartbeat both say so when it is down.
        ready = triton.server_ready()
        server.set_serving(ready, SERVICE_NAME)
        rt.stats.detail = "" if ready else f"Triton at {settings.triton_grpc_url} is not ready"
        return "running" if ready else "degraded"

    rt.set_health_probe(probe)
    try:
        rt.run(server=server)
    finally:
        plane.close()
        producer.close()


if __name__ == "__main__":
    main()
