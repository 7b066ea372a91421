"""`python -m services.explainer` (or `bulwark-explainer`): ExplainService over gRPC, and the inference.log
consumer that keeps logged inputs and publishes global importance."""

from __future__ import annotations

import logging

import torch

from bulwark.api.v1 import explain_pb2_grpc
from bulwark.auth import AuthInterceptor, load_credentials
from bulwark.crypto import load_ring, load_verifier
from bulwark.crypto.keys import RING_KEK
from bulwark.errors import BulwarkError
from bulwark.grpcx import build_server, server_tls
from bulwark.live import LiveReader
from bulwark.registry import ModelRegistry
from bulwark.runtime import ServiceRuntime, main_guard
from bulwark.settings import CommonSettings, load_settings
from services.explainer.dataplane import SERVICE, ExplainerDataPlane
from services.explainer.models import VersionLoader
from services.explainer.servicer import SERVICE_NAME, ExplainServicer
from services.explainer.settings import ExplainerSettings
from services.explainer.summaries import SummaryHandler

log = logging.getLogger("services.explainer")
METHOD_SCOPES = {f"/{SERVICE_NAME}/{m}": "explain" for m in ("Explain", "ExplainBatch")}


@main_guard
def main() -> None:
    """Serve ExplainService until SIGTERM; with summaries on, consume inference.log beside it."""
    settings = load_settings(CommonSettings)
    own = load_settings(ExplainerSettings)
    torch.set_num_threads(own.torch_threads)
    rt = ServiceRuntime(SERVICE, settings)
    keys = settings.keys_path
    loader = VersionLoader(ModelRegistry(rt.redis, rt.keys), load_verifier(keys), load_ring(RING_KEK, keys),
                           max_versions=own.max_loaded_versions)
    plane = ExplainerDataPlane(settings, own, rt.redis, loader, LiveReader(rt.redis, rt.keys, ttl_s=own.live_cache_s))
    auth = AuthInterceptor(load_credentials(keys), METHOD_SCOPES, required=settings.auth_required)
    server = build_server(port=own.port, host=own.host, service_names=[SERVICE_NAME], max_workers=own.threads,
                          register=[(explain_pb2_grpc.add_ExplainServiceServicer_to_server, ExplainServicer(plane))],
                          tls=server_tls(settings), interceptors=[auth])
    rt.stats.extra["grpc_port"] = str(server.port)
    loop = None
    if own.summaries:
        try:
            rt.ensure_topics()
        except BulwarkError as exc:
            # Explanations over gRPC need no broker: serve them, and let the loop retry Kafka with back-off.
            log.warning("topics not checked reason=%s message=%s", exc.reason.value, exc.message)
        loop = rt.consumer_loop(SummaryHandler(settings, own, plane, rt.redis, rt.stats))
    rt.run(loop=loop, server=server)


if __name__ == "__main__":
    main()
