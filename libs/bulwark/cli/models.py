"""`bulwark models ...`: versions, rollouts, and people's decisions about them (through ModelAdmin)."""

from __future__ import annotations

import click
import grpc
from google.protobuf.json_format import MessageToDict

from bulwark.cli.output import emit, fail


def _stub():  # noqa: ANN202
    from bulwark.api.v1 import admin_pb2_grpc
    from bulwark.cli.main import cli_settings
    from bulwark.grpc_client import channel

    settings = cli_settings()
    return admin_pb2_grpc.ModelAdminStub(channel(settings, settings.admin_url)), settings


def _call(method: str, request):  # noqa: ANN001, ANN202
    from bulwark.grpc_client import call

    stub, settings = _stub()
    try:
        return call(getattr(stub, method), request, settings)
    except grpc.RpcError as exc:
        hint = {grpc.StatusCode.UNAVAILABLE: f" (is the updater running at {settings.admin_url}? `bulwark status`)",
                grpc.StatusCode.UNAUTHENTICATED: " (set BULWARK_TOKEN to a token with the admin scope)"}
        fail(f"{exc.code().name}: {exc.details()}{hint.get(exc.code(), '')}", code=2)


@click.group()
def models() -> None:
    """Model versions and rollouts."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def models_list(as_json: bool) -> None:
    """Every model with its live version and rollout stage."""
    from bulwark.api.v1 import admin_pb2

    resp = _call("ListModels", admin_pb2.ListModelsRequest())
    rows = [{"model": m.model, "live": m.live_version or "-", "versions": m.versions, "rollout": m.rollout_stage}
            for m in resp.models]
    emit(rows, as_json=as_json, columns=["model", "live", "versions", "rollout"])


@models.command("versions")
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def models_versions(model: str, as_json: bool) -> None:
    """Every version of MODEL: state, metrics, the quantizer's and the gate's reports, signature status, the
    DP epsilon spent, and the forgotten subjects it still carries with the deadline by which it is gone."""
    from bulwark.api.v1 import admin_pb2

    resp = _call("ListVersions", admin_pb2.ListVersionsRequest(model=model))
    rows = [{"version": v.version, "state": v.state, "family": v.family,
             "accuracy": round(v.metrics.get("accuracy", 0.0), 4), "auroc": round(v.metrics.get("auroc", 0.0), 4),
             "signature": "ok" if v.signature_ok else "FAILED", "quantization": v.quantization.split(":")[0],
             "gate": v.gate[:60], "epsilon": v.card.get("privacy.epsilon_spent", "-"),
             "forgotten_subjects": v.forgotten_subjects, "gone_by": v.forget_deadline or "-"} for v in resp.versions]
    emit([MessageToDict(v) for v in resp.versions] if as_json else rows, as_json=as_json, rows=rows,
         colour_column="state")


@models.command("status")
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def models_status(model: str, as_json: bool) -> None:
    """The live version, the rollout in progress with candidate and live signals, and what Triton has loaded."""
    from bulwark.api.v1 import admin_pb2

    s = _call("GetStatus", admin_pb2.GetStatusRequest(model=model))
    r = s.rollout
    rows = [{"model": s.model, "live": s.live_version or "-", "candidate": r.candidate_version or "-",
             "stage": r.stage, "share": r.share, "loaded": ",".join(map(str, s.loaded_versions)) or "-",
             "decision": r.decision or r.reason}]
    if r.candidate_version:
        for who, sig in (("candidate", r.candidate), ("live", r.live)):
            rows.append({"model": f"  {who}", "live": f"req={sig.requests}", "candidate": f"err={sig.error_rate:.3f}",
                         "stage": f"p99={sig.latency_p99_ms:.1f}ms", "share": f"agree={sig.agreement:.3f}",
                         "loaded": f"flags={sig.guard_flag_rate:.3f}", "decision": f"acc={sig.accuracy:.3f} (n={sig.labeled})"})
    emit(MessageToDict(s), as_json=as_json, rows=rows, columns=["model", "live", "candidate", "stage", "share",
                                                                 "loaded", "decision"])


def _change(method: str):  # noqa: ANN202
    @click.argument("model")
    @click.option("--version", type=int, default=0, help="Version to act on (default: the rollout's candidate).")
    @click.option("--reason", required=True, help="Why; recorded with your name on models.deployed and audit.")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def command(model: str, version: int, reason: str, as_json: bool) -> None:
        from bulwark.api.v1 import admin_pb2

        s = _call(method, admin_pb2.ChangeRequest(model=model, version=version, reason=reason))
        row = {"model": s.model, "live": s.live_version or "-", "stage": s.rollout.stage,
               "candidate": s.rollout.candidate_version or "-", "loaded": ",".join(map(str, s.loaded_versions))}
        emit(MessageToDict(s), as_json=as_json, rows=[row])
    return command


for _name, _method, _help in (("promote", "Promote", "Make the candidate (or --version) live now."),
                              ("rollback", "Rollback", "Stop the rollout, or restore the previous live version."),
                              ("pause", "Pause", "Freeze the rollout's traffic shares."),
                              ("resume", "Resume", "Continue a paused rollout.")):
    models.command(_name, help=_help)(_change(_method))

COMMANDS = [models]
