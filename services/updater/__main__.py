"""`python -m services.updater` (or `bulwark-updater`): rollouts, Triton's loaded versions, ModelAdmin."""

from __future__ import annotations

import os

from bulwark.api.v1 import admin_pb2_grpc
from bulwark.artifacts import ArtifactStore
from bulwark.auth import AuthInterceptor, load_credentials
from bulwark.bus.producer import EventProducer, make_producer
from bulwark.crypto import load_verifier
from bulwark.grpcx import build_server, server_tls
from bulwark.live import LiveReader
from bulwark.registry import ModelRegistry
from bulwark.runtime import ServiceRuntime, main_guard
from bulwark.settings import CommonSettings, load_settings
from bulwark.triton.client import TritonClient
from bulwark.triton.repository import ModelRepository
from bulwark.versions import VersionCatalog
from services.updater.admin import SERVICE_NAME, ModelAdminServicer
from services.updater.forgetting import ForgettingEnforcer
from services.updater.handler import UpdaterHandler
from services.updater.rollout import RolloutController
from services.updater.settings import UpdaterSettings
from services.updater.signals import SERVICE, SignalStore

METHOD_SCOPES = {f"/{SERVICE_NAME}/{m}": "admin" for m in ("ListModels", "ListVersions", "GetStatus", "Promote",
                                                             "Rollback", "Pause", "Resume")}


@main_guard
def main() -> None:
    """Consume validated versions, inference records and labels; serve ModelAdmin; tick rollouts."""
    # Loading a version into Triton happens inside one handler call: give it time.
    os.environ.setdefault("BULWARK_BUS_MAX_POLL_INTERVAL_MS", "600000")
    # Rollback decisions read inference.log: fetch as soon as records arrive, not after half a second.
    os.environ.setdefault("BULWARK_BUS_FETCH_MAX_WAIT_MS", "100")
    settings = load_settings(CommonSettings)
    own = load_settings(UpdaterSettings)
    rt = ServiceRuntime(SERVICE, settings)
    verifier = load_verifier(settings.keys_path)
    registry = ModelRegistry(rt.redis, rt.keys)
    signals = SignalStore(rt.redis, rt.keys)
    triton = TritonClient(settings.triton_grpc_url)
    controller = RolloutController(own, rt.redis, rt.keys, registry, triton,
                                   ModelRepository(settings.model_repository_path, verifier),
                                   VersionCatalog(registry, verifier), verifier, signals)
    producer = EventProducer(make_producer(settings, client_id="updater-admin"))
    auth = AuthInterceptor(load_credentials(settings.keys_path), METHOD_SCOPES, required=settings.auth_required)
    server = build_server(port=own.port, host=own.host, service_names=[SERVICE_NAME],
                          register=[(admin_pb2_grpc.add_ModelAdminServicer_to_server,
                                     ModelAdminServicer(settings, controller, producer))],
                          tls=server_tls(settings), interceptors=[auth])
    rt.stats.extra["grpc_port"] = str(server.port)
    rt.set_health_probe(lambda: "running" if triton.server_ready() else "degraded")
    forgetting = ForgettingEnforcer(own, controller, ArtifactStore(settings.artifacts_path, verifier=verifier))
    handler = UpdaterHandler(settings, own, controller, signals, LiveReader(rt.redis, rt.keys, ttl_s=0.5),
                             forgetting=forgetting)
    rt.ensure_topics()
    try:
        rt.run(loop=rt.consumer_loop(handler), server=server)
    finally:
        producer.close()


if __name__ == "__main__":
    main()
