"""Who is calling, and may they? Bearer tokens and mTLS client certificates with scopes, for every gRPC API.

Credentials live in `<keys_dir>/tokens.json` (or `BULWARK_TOKENS`, the same JSON):

    {"tokens": [{"id": "tk-…", "sha256": "<hex of the token>", "identity": "payments-api", "scopes": ["predict"]}],
     "certificates": {"payments-api": ["predict"]}}

Only token hashes are stored; `bulwark keys token` prints a new token once. With mutual TLS, a client
certificate's common name is the identity and `certificates` gives its scopes.

When credentials are required (`BULWARK_AUTH_REQUIRED`), a call without any is UNAUTHENTICATED and a call
whose identity lacks the method's scope is PERMISSION_DENIED; both messages say what is needed. Health
checks and reflection never need credentials.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import grpc

from bulwark.crypto.keys import KeyMaterialError
from bulwark.grpcx import rewrap_handler

SCOPES = ("predict", "explain", "admin", "reveal")
TOKENS_FILE = "tokens.json"
ANONYMOUS = "anonymous"
_OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")

_identity: contextvars.ContextVar["Identity"] = contextvars.ContextVar("bulwark_identity")


@dataclass(frozen=True)
class Identity:
    """The authenticated caller: a name, its scopes, and how it proved itself."""

    name: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    method: str = "none"


def current_identity() -> Identity:
    """The identity of the call being handled (anonymous outside an authenticated call)."""
    return _identity.get(Identity(ANONYMOUS))


@dataclass
class Credentials:
    """Token hashes and certificate identities with their scopes."""

    tokens: list[dict[str, Any]] = field(default_factory=list)
    certificates: dict[str, list[str]] = field(default_factory=dict)

    def by_token(self, token: str) -> Identity | None:
        """The identity a bearer token belongs to (constant-time comparison of hashes)."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        for t in self.tokens:
            if hmac.compare_digest(digest, t["sha256"]):
                return Identity(t["identity"], frozenset(t["scopes"]), "token")
        return None

    def by_certificate(self, common_name: str) -> Identity | None:
        """The identity of a verified client certificate's common name."""
        scopes = self.certificates.get(common_name)
        return Identity(common_name, frozenset(scopes), "mtls") if scopes is not None else None

    def add_token(self, identity: str, scopes: list[str]) -> str:
        """Create a token for `identity`; returns it (only its hash is kept)."""
        bad = sorted(set(scopes) - set(SCOPES))
        if bad:
            raise KeyMaterialError(f"unknown scope(s) {bad}; scopes are {', '.join(SCOPES)}")
        token = "bwk_" + secrets.token_urlsafe(32)
        self.tokens.append({"id": "tk-" + secrets.token_hex(4), "sha256": hashlib.sha256(token.encode()).hexdigest(),
                            "identity": identity, "scopes": sorted(set(scopes))})
        return token

    def to_json(self) -> str:
        """The file form."""
        return json.dumps({"tokens": self.tokens, "certificates": self.certificates}, indent=2)


def load_credentials(keys_dir: Path) -> Credentials:
    """Credentials from `BULWARK_TOKENS` or `<keys_dir>/tokens.json` (empty when neither exists)."""
    text = os.environ.get("BULWARK_TOKENS")
    path = keys_dir / TOKENS_FILE
    if not text and path.exists():
        text = path.read_text()
    if not text:
        return Credentials()
    try:
        doc = json.loads(text)
        return Credentials(list(doc.get("tokens", [])), dict(doc.get("certificates", {})))
    except (ValueError, AttributeError):
        raise KeyMaterialError("credentials are malformed: expected {\"tokens\": [...], \"certificates\": {...}}") from None


def save_credentials(creds: Credentials, keys_dir: Path) -> Path:
    """Write tokens.json, readable by the owner only."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    path = keys_dir / TOKENS_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(creds.to_json())
    os.replace(tmp, path)
    return path


def _peer_common_name(context: grpc.ServicerContext) -> str | None:
    auth = context.auth_context() or {}
    names = auth.get("x509_common_name") or []
    return names[0].decode() if names else None


class AuthInterceptor(grpc.ServerInterceptor):
    """Authenticates each call and checks the method's scope; the identity is available to servicers."""

    def __init__(self, creds: Credentials, method_scopes: Mapping[str, str], *, required: bool) -> None:
        self._creds = creds
        self._scopes = dict(method_scopes)
        self._required = required

    def _identify(self, context: grpc.ServicerContext) -> Identity | None:
        metadata = dict(context.invocation_metadata() or ())
        header = metadata.get("authorization", "")
        if header:
            if not header.lower().startswith("bearer "):
                context.abort(grpc.StatusCode.UNAUTHENTICATED,
                              "UNAUTHENTICATED: the authorization header must read `Bearer <token>`")
            identity = self._creds.by_token(header[7:].strip())
            if identity is None:
                context.abort(grpc.StatusCode.UNAUTHENTICATED,
                              "UNAUTHENTICATED: the bearer token is not valid (revoked or mistyped); ask the "
                              "platform team for a new one (`bulwark keys token`)")
            return identity
        cn = _peer_common_name(context)
        return self._creds.by_certificate(cn) if cn else None

    def check(self, context: grpc.ServicerContext, method: str) -> Identity:
        """Authenticate a call to `method` and check its scope; aborts the call when not allowed."""
        scope = self._scopes.get(method)
        identity = self._identify(context)
        if identity is None:
            if self._required:
                context.abort(grpc.StatusCode.UNAUTHENTICATED,
                              f"UNAUTHENTICATED: {method} needs credentials with scope {scope!r}: send "
                              "`authorization: Bearer <token>` or a client certificate")
            return Identity(ANONYMOUS)
        if scope and scope not in identity.scopes and self._required:
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"PERMISSION_DENIED: {identity.name} lacks scope {scope!r}, which {method} needs; "
                          f"it has {sorted(identity.scopes) or 'none'}")
        return identity

    def intercept_service(self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        method = details.method
        if handler is None or method.startswith(_OPEN_PREFIXES):
            return handler

        def unary(fn: Callable[..., Any]) -> Callable[..., Any]:
            def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
                token = _identity.set(self.check(context, method))
                try:
                    return fn(request, context)
                finally:
                    _identity.reset(token)
            return wrapped

        def streaming(fn: Callable[..., Any]) -> Callable[..., Any]:
            # A stream is authenticated once, when it opens.
            def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
                token = _identity.set(self.check(context, method))
                try:
                    yield from fn(request, context)
                finally:
                    _identity.reset(token)
            return wrapped

        return rewrap_handler(handler, unary, streaming)
