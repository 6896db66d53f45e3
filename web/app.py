"""The FastAPI app of ``retouch web``: the page, the REST API and the downloads.

Everything is served locally (no CDN): FastAPI's /docs and /redoc pages load their scripts
from a CDN, so they are off; the schema itself is at /openapi.json.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from retouch.lib.settings import get_settings
from retouch.web.deps import require_token
from retouch.web.routes import batches, metrics, results, server, styles
from retouch.web.runner import Runner
from retouch.web.schemas import ERRORS
from retouch.web.security import Guard

STATIC_DIR = Path(__file__).parent / "static"


async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """A request the schema refuses, as one ``detail`` line naming each field."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body") or "request"
        parts.append(f"{loc}: {err.get('msg')}")
    return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)


def create_app(
    *,
    token: str | None = None,
    runner: Runner | None = None,
    prefect_api_url: str | None = None,
    static_dir: Path | None = None,
) -> FastAPI:
    """The app. ``token`` defaults to RETOUCH_WEB_TOKEN; ``runner`` to one over
    ``$RETOUCH_HOME/web/batches`` whose jobs use ``prefect_api_url`` (default: the current
    Prefect settings' API URL)."""
    settings = get_settings()
    token = token if token is not None else settings.web_token
    supervisor = runner or Runner.from_settings(settings, prefect_api_url)
    static = static_dir or STATIC_DIR

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(supervisor.start)
        try:
            yield
        finally:
            await run_in_threadpool(supervisor.stop)

    app = FastAPI(
        title="retouch web",
        version=server.server_version(),
        description="Batch photo enhancement: upload images, follow each one, download results.",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.state.runner = supervisor
    app.state.token = token
    app.state.static_dir = static
    app.add_middleware(Guard, token=token)
    app.exception_handler(RequestValidationError)(_invalid)
    app.include_router(server.public)
    app.include_router(metrics.router)  # /metrics, for Prometheus (token as the API)
    if static.is_dir():
        app.mount("/static", StaticFiles(directory=static), name="static")
    for module in (server, batches, results, styles):
        app.include_router(
            module.router, prefix="/api", dependencies=[Depends(require_token)], responses=ERRORS
        )
    return app
