"""The console's HTTP face: the page, its static assets (Plotly served from the installed `plotly` package),
and the JSON API the page reads. Every asset is served from here: the page makes no request elsewhere, and
its Content-Security-Policy says so to the browser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Header, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field

from bulwark.errors import BulwarkError, NotFoundError
from services.console.sources import ConsoleError, ConsoleSources

STATIC = Path(__file__).parent / "static"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
       "connect-src 'self'; font-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


def plotly_js() -> Path:
    """plotly.min.js as bundled in the installed `plotly` Python package."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


class ChangeBody(BaseModel):
    """A person's change to a rollout."""

    reason: str = Field("", max_length=512)
    """Why; required, recorded on models.deployed and the audit topic with the person's identity."""
    version: int = Field(0, ge=0)
    """The version to act on (0: the rollout's candidate, or the live version)."""


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    if not authorization.lower().startswith("bearer "):
        raise ConsoleError(401, "the Authorization header must read `Bearer <token>`")
    return authorization[7:].strip() or None


def build_app(sources: ConsoleSources) -> FastAPI:
    """The FastAPI application over `sources`."""
    app = FastAPI(title="Bulwark console", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")

    @app.exception_handler(ConsoleError)
    def _console_error(_: Request, exc: ConsoleError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(NotFoundError)
    def _not_found(_: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=404)

    @app.exception_handler(BulwarkError)
    def _bulwark_error(_: Request, exc: BulwarkError) -> JSONResponse:
        # Infrastructure unreachable (Redis, the broker): the page shows it and keeps refreshing.
        return JSONResponse({"error": exc.message, "retryable": exc.retryable}, status_code=503)

    @app.middleware("http")
    async def _headers(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        if request.url.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/static/plotly.min.js", include_in_schema=False)
    def plotly_asset() -> FileResponse:
        return FileResponse(plotly_js(), media_type="text/javascript")

    @app.get("/static/{name}", include_in_schema=False)
    def asset(name: str) -> FileResponse:
        path = STATIC / name
        if name not in {"console.js", "console.css"} or not path.exists():
            raise ConsoleError(404, "no such asset")
        return FileResponse(path, media_type="text/javascript" if name.endswith(".js") else "text/css")

    @app.get("/api/config")
    def config() -> dict[str, Any]:
        """What the page needs to start: its refresh period."""
        return {"refresh_s": sources.own.refresh_s}

    @app.get("/api/chain")
    def chain() -> dict[str, Any]:
        """Every part up, degraded or down (the doctor's verdict), with rates and lag on the arrows."""
        return sources.chain()

    @app.get("/api/trace/{ident}")
    def trace(ident: str) -> dict[str, Any]:
        """Where an event or trace went, and where it stopped, with the evidence."""
        return sources.trace(ident)

    @app.get("/api/models")
    def models() -> list[dict[str, Any]]:
        """Every model with its live version and rollout stage."""
        return sources.models()

    @app.get("/api/models/{model}")
    def model(model: str) -> dict[str, Any]:
        """One model's versions, reports, signatures, rollout and signals."""
        return sources.model(model)

    @app.post("/api/models/{model}/{action}")
    def change(model: str, action: str, body: ChangeBody,
               authorization: str | None = Header(default=None)) -> dict[str, Any]:
        """Pause, resume, promote or roll back; needs `Authorization: Bearer <admin token>` and a reason."""
        return sources.change(model, action, body.reason, _bearer(authorization), body.version)

    @app.get("/api/drift/{model}")
    def drift(model: str) -> dict[str, Any]:
        """PSI per feature over the drift windows, with the threshold."""
        return sources.drift(model)

    @app.get("/api/alerts")
    def alerts() -> list[dict[str, Any]]:
        """Alerts, oldest first."""
        return sources.alert_rows()

    @app.get("/api/explain/{model}/{request_id}")
    def explain(model: str, request_id: str) -> dict[str, Any]:
        """Attributions for the prediction logged under `request_id`."""
        return sources.explain(model, request_id)

    return app
