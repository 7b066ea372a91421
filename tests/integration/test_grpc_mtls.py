"""Mutual TLS on a Bulwark gRPC server: the client certificate is the identity, and its scopes are checked.

The server is `build_server` with `TLSConfig` (what `BULWARK_GRPC_TLS_CERT`, `_KEY` and `_CLIENT_CA` give
every service) and the `AuthInterceptor` every service installs; certificates come from CAs made here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import grpc
import pytest

from bulwark.api.v1 import inference_pb2, inference_pb2_grpc
from bulwark.auth import AuthInterceptor, Credentials, current_identity
from bulwark.grpcx import TLSConfig, build_server
from bulwark.testing.certs import TestPKI, make_pki

SERVICE = "bulwark.api.v1.InferenceService"


class _WhoAmI(inference_pb2_grpc.InferenceServiceServicer):
    def Predict(self, request, context):  # noqa: N802 - gRPC method name
        identity = current_identity()
        return inference_pb2.PredictResponse(model=request.model, label=f"{identity.name}:{identity.method}")

    def PredictBatch(self, request, context):  # noqa: N802
        return inference_pb2.PredictBatchResponse()


@pytest.fixture(scope="module")
def pkis(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestPKI, TestPKI]:
    root = tmp_path_factory.mktemp("mtls")
    return make_pki(root, "ours"), make_pki(root, "foreign")


@pytest.fixture(scope="module")
def port(pkis: tuple[TestPKI, TestPKI]) -> Iterator[int]:
    ours, _ = pkis
    # The client certificate's common name is "bulwark-service": it may predict, not administer.
    creds = Credentials([], {"bulwark-service": ["predict"]})
    auth = AuthInterceptor(creds, {f"/{SERVICE}/Predict": "predict", f"/{SERVICE}/PredictBatch": "admin"},
                           required=True)
    srv = build_server(port=0, host="127.0.0.1", service_names=[SERVICE], interceptors=[auth],
                       register=[(inference_pb2_grpc.add_InferenceServiceServicer_to_server, _WhoAmI())],
                       tls=TLSConfig(ours.server_cert, ours.server_key, client_ca=ours.ca))
    srv.start()
    yield srv.port
    srv.stop(0)


def _stub(port: int, ca: Path, cert: Path | None = None, key: Path | None = None) -> inference_pb2_grpc.InferenceServiceStub:
    creds = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes(),
                                         private_key=key.read_bytes() if key else None,
                                         certificate_chain=cert.read_bytes() if cert else None)
    return inference_pb2_grpc.InferenceServiceStub(grpc.secure_channel(f"127.0.0.1:{port}", creds))


def test_a_client_certificate_from_the_trusted_ca_is_the_callers_identity(pkis, port: int) -> None:
    ours, _ = pkis
    resp = _stub(port, ours.ca, ours.client_cert, ours.client_key).Predict(
        inference_pb2.PredictRequest(model="fraud"), timeout=5)
    assert resp.label == "bulwark-service:mtls"


def test_a_method_outside_the_certificates_scopes_is_permission_denied_naming_the_scope(pkis, port: int) -> None:
    ours, _ = pkis
    with pytest.raises(grpc.RpcError) as err:
        _stub(port, ours.ca, ours.client_cert, ours.client_key).PredictBatch(
            inference_pb2.PredictBatchRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "admin" in err.value.details()


@pytest.mark.parametrize("client", ["no certificate", "certificate from another CA", "plaintext"])
def test_clients_without_a_trusted_certificate_never_reach_the_service(pkis, port: int, client: str) -> None:
    ours, foreign = pkis
    if client == "plaintext":
        stub = inference_pb2_grpc.InferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    elif client == "no certificate":
        stub = _stub(port, ours.ca)
    else:
        stub = _stub(port, ours.ca, foreign.client_cert, foreign.client_key)
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(inference_pb2.PredictRequest(model="fraud"), timeout=3)
    # The TLS handshake fails before any RPC exists: the client sees the server as unavailable.
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
