"""Where the console's figures come from: the doctor, the registry and live state in Redis, ModelAdmin and
ExplainService over gRPC, the guard's drift windows in Redis, and the alerts and models.deployed topics.

Reads need no credential from the person at the page; the console calls the APIs with its own client token
(`BULWARK_CLIENT_TOKEN`, scopes admin for reads and explain). A change (pause, promote, roll back) needs
the person's own token with the admin scope: the console checks it against the platform's credentials and
forwards it to ModelAdmin, which checks it again, records the reason, and names that person in the audit.
"""

from __future__ import annotations

import collections
import threading
from typing import Any, Callable

import grpc
from google.protobuf.json_format import MessageToDict

from bulwark.auth import load_credentials
from bulwark.bus.reader import read_topic
from bulwark.crypto import load_verifier
from bulwark.doctor import DoctorSettings, diagnose, trace_report
from bulwark.errors import BulwarkError, NotFoundError
from bulwark.grpc_client import channel
from bulwark.guard.policy import load_guard_policy
from bulwark.guard.settings import GuardSettings
from bulwark.live import as_dict, read_live
from bulwark.redis_client import make_redis
from bulwark.redis_keys import RedisKeys
from bulwark.registry import ModelRegistry
from bulwark.settings import CommonSettings
from bulwark.versions import VersionCatalog
from services.console import views
from services.console.chain import RateMeter, build_chain
from services.console.settings import ConsoleSettings

GUARD = "robustness-guard"
ACTIONS = {"pause": "Pause", "resume": "Resume", "promote": "Promote", "rollback": "Rollback"}


class ConsoleError(Exception):
    """A request the console cannot answer: an HTTP status and a message for the page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class TopicTail:
    """The newest records of one topic, read incrementally (each call reads only what arrived since the last)."""

    def __init__(self, settings: CommonSettings, topic: str, keep: int,
                 shape: Callable[[Any, Any], dict[str, Any] | None]) -> None:
        self._settings = settings
        self._topic = topic
        self._shape = shape
        self._rows: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep)
        self._next: dict[int, int] = {}
        self._lock = threading.Lock()

    def rows(self) -> list[dict[str, Any]]:
        """Every kept row, oldest first, after reading what is new."""
        with self._lock:
            for rec, env in read_topic(self._settings, self._topic, idle_ms=150, max_wait_s=5.0,
                                       start=dict(self._next)):
                self._next[rec.partition] = rec.offset + 1
                if env is not None and (row := self._shape(rec, env)) is not None:
                    self._rows.append(row)
            return sorted(self._rows, key=lambda r: str(r.get("at")))


class ConsoleSources:
    """Every read and change the JSON API offers, over the platform's real parts."""

    def __init__(self, settings: CommonSettings, own: ConsoleSettings, *, doctor: DoctorSettings | None = None,
                 guard: GuardSettings | None = None) -> None:
        self.settings = settings
        self.own = own
        self.doctor = doctor or DoctorSettings()
        self.redis = make_redis(settings)
        self.keys = RedisKeys(settings.redis_prefix)
        self.registry = ModelRegistry(self.redis, self.keys)
        self.meter = RateMeter()
        self._guard_policy = load_guard_policy((guard or GuardSettings()).policy)
        self._catalog: VersionCatalog | None = None
        topics = settings.topics
        self.alerts = TopicTail(settings, topics.alerts, own.alerts_kept, lambda rec, env: views.alert_row(
            env.payload, at=env.time, event_id=env.id) if env.type == "alert" else None)
        self.deployed = TopicTail(settings, topics.models_deployed, own.alerts_kept,
                                  lambda rec, env: {"at": env.time, "payload": env.payload})

    # ------------------------------------------------------------------ chain and traces
    def chain(self) -> dict[str, Any]:
        """The chain picture: every part's state from the doctor, with rates and lag on the arrows."""
        d = diagnose(self.settings, doctor=self.doctor, spans=self.own.spans)
        return build_chain(d.to_dict(), self.meter)

    def trace(self, ident: str) -> dict[str, Any]:
        """Where an event (event id) or trace (trace id) went and where it stopped."""
        ident = ident.strip()
        if not ident or len(ident) > 128:
            raise ConsoleError(400, "give an event id or a 32-hex trace id (at most 128 characters)")
        return views.trace_view(trace_report(self.settings, ident, doctor=self.doctor).to_dict())

    # ------------------------------------------------------------------ models
    def _admin(self, token: str | None = None):  # noqa: ANN202
        from bulwark.api.v1 import admin_pb2_grpc

        ch = channel(self.settings, self.settings.admin_url)
        secret = token if token is not None else (
            self.settings.client_token.get_secret_value() if self.settings.client_token else None)
        md = [("authorization", f"Bearer {secret}")] if secret else []
        return ch, admin_pb2_grpc.ModelAdminStub(ch), md

    def _admin_read(self, method: str, request: Any) -> dict[str, Any] | None:
        ch, stub, md = self._admin()
        try:
            return MessageToDict(getattr(stub, method)(request, timeout=self.own.grpc_timeout_s, metadata=md))
        except grpc.RpcError:
            return None  # the updater down or refusing: the view says where its figures came from
        finally:
            ch.close()

    def models(self) -> list[dict[str, Any]]:
        """Every model with its live version and rollout stage (from the registry and live state in Redis)."""
        out = []
        for model in self.registry.models():
            live = read_live(self.redis, self.keys, model)
            out.append({"model": model, "versions": len(self.registry.versions(model)),
                        "live_version": live.live_version if live else None,
                        "candidate": live.candidate if live else None, "stage": live.stage if live else "none"})
        return out

    def model(self, model: str) -> dict[str, Any]:
        """One model: versions with lineage, metrics, reports and signature status; the rollout with canary
        against live signals; its newest rollout changes."""
        from bulwark.api.v1 import admin_pb2

        entries = self.registry.entries(model)
        if not entries:
            raise ConsoleError(404, f"no model {model!r}")
        listed = self._admin_read("ListVersions", admin_pb2.ListVersionsRequest(model=model))
        by_version = {int(v.get("version", 0)): v for v in (listed or {}).get("versions", [])}
        status = self._admin_read("GetStatus", admin_pb2.GetStatusRequest(model=model))
        live = read_live(self.redis, self.keys, model)
        changes = views.deployments(((r["at"], r["payload"]) for r in self.deployed.rows()), model)
        return {"model": model, "admin_reachable": listed is not None,
                "versions": [views.version_row(e, by_version.get(int(e["version"])) if listed is not None else None)
                             for e in entries],
                "rollout": views.rollout_view(status, as_dict(live) if live else None), "changes": changes}

    def change(self, model: str, action: str, reason: str, token: str | None, version: int = 0) -> dict[str, Any]:
        """Pause, resume, promote or roll back through ModelAdmin with the person's own admin token."""
        from bulwark.api.v1 import admin_pb2

        if action not in ACTIONS:
            raise ConsoleError(400, f"action must be one of {', '.join(ACTIONS)}")
        if not token:
            raise ConsoleError(401, "changes need an admin credential: paste a token with the admin scope")
        identity = load_credentials(self.settings.keys_path).by_token(token)
        if identity is None:
            raise ConsoleError(401, "the token is not valid (revoked or mistyped)")
        if "admin" not in identity.scopes:
            raise ConsoleError(403, f"{identity.name} lacks the admin scope")
        if len(reason.strip()) < 3:
            raise ConsoleError(400, "say why: a reason is required and recorded with your name")
        ch, stub, md = self._admin(token)
        try:
            reply = getattr(stub, ACTIONS[action])(admin_pb2.ChangeRequest(model=model, version=version, reason=reason),
                                                   timeout=self.own.grpc_timeout_s, metadata=md)
        except grpc.RpcError as exc:
            code = {grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.NOT_FOUND: 404,
                    grpc.StatusCode.FAILED_PRECONDITION: 409, grpc.StatusCode.UNAUTHENTICATED: 401,
                    grpc.StatusCode.PERMISSION_DENIED: 403}.get(exc.code(), 502)
            raise ConsoleError(code, f"ModelAdmin {exc.code().name}: {exc.details()}") from None
        finally:
            ch.close()
        return {"by": identity.name, "action": action, "status": MessageToDict(reply)}

    # ------------------------------------------------------------------ drift and alerts
    def _versions(self) -> VersionCatalog:
        if self._catalog is None:
            self._catalog = VersionCatalog(self.registry, load_verifier(self.settings.keys_path))
        return self._catalog

    def drift(self, model: str) -> dict[str, Any]:
        """PSI per feature of the live version: the windows that drifted and the open window so far."""
        live = read_live(self.redis, self.keys, model)
        version = live.live_version if live else None
        counts = fields = None
        if version is not None:
            raw = self.redis.hgetall(self.keys.state(GUARD, f"drift:{model}:{version}"))
            counts = {k.decode(): int(v) for k, v in raw.items()}
            try:
                fields = (self._versions().get(model, version).profile or {}).get("fields") or {}
            except (BulwarkError, OSError, KeyError):
                fields = None  # an artifact that does not verify has no trusted profile to compare with
        policy = self._guard_policy.drift
        return views.drift_view(model, version, policy.psi_threshold, policy.window, self.alerts.rows(), counts, fields)

    def alert_rows(self) -> list[dict[str, Any]]:
        """The alerts timeline, oldest first."""
        return self.alerts.rows()

    # ------------------------------------------------------------------ explanations
    def explain(self, model: str, request_id: str) -> dict[str, Any]:
        """ExplainService's attributions for a logged prediction, by its request id."""
        from bulwark.api.v1 import explain_pb2, explain_pb2_grpc

        if not model or not request_id or len(request_id) > 128:
            raise ConsoleError(400, "give a model and a request id (at most 128 characters)")
        ch = channel(self.settings, self.settings.explainer_url)
        token = self.settings.client_token
        md = [("authorization", f"Bearer {token.get_secret_value()}")] if token else []
        try:
            resp = explain_pb2_grpc.ExplainServiceStub(ch).Explain(
                explain_pb2.ExplainRequest(model=model, request_id=request_id), timeout=self.own.grpc_timeout_s,
                metadata=md)
        except grpc.RpcError as exc:
            code = {grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.INVALID_ARGUMENT: 400}.get(exc.code(), 502)
            raise ConsoleError(code, f"ExplainService {exc.code().name}: {exc.details()}") from None
        finally:
            ch.close()
        return views.explanation_view(MessageToDict(resp, always_print_fields_with_no_presence=True))


def not_found(exc: NotFoundError) -> ConsoleError:
    """A registry NotFoundError as a 404."""
    return ConsoleError(404, exc.message)
