"""The page, the server's health and the presets a batch can use."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from retouch.web.checks import marked_schema, preset_unavailable
from retouch.web.schemas import HealthOut, PresetOut

# Served without the token: the page asks for it, and health is for monitors.
public = APIRouter()
router = APIRouter()


def server_version() -> str:
    try:
        return metadata.version("retouch")
    except metadata.PackageNotFoundError:
        return "0+unknown"


@public.get("/", include_in_schema=False)
def index(request: Request) -> Response:
    static: Path = request.app.state.static_dir
    page = static / "index.html"
    if page.is_file():
        return FileResponse(page, media_type="text/html")
    return HTMLResponse(
        "<!doctype html><meta charset=utf-8><title>retouch web</title>"
        "<p>retouch web is running; its page is not installed. "
        'The API is described at <a href="/openapi.json">/openapi.json</a>.</p>'
    )


@public.get("/api/health", response_model=HealthOut, tags=["server"])
def health() -> dict[str, Any]:
    """Liveness and version (no token needed)."""
    return {"ok": True, "version": server_version()}


@router.get("/presets", response_model=list[PresetOut], tags=["recipes"])
def presets() -> list[dict[str, Any]]:
    """Every preset with its steps, their parameters and each operation's params schema
    (a form can be generated from it)."""
    from retouch.lib.models import fetch
    from retouch.lib.ops.registry import registry
    from retouch.lib.recipe import load_preset, preset_names

    out = []
    for name in preset_names():
        recipe = load_preset(name)
        steps = [
            {
                "op": step.op,
                "params": step.parsed().model_dump(mode="json"),
                "schema": marked_schema(registry().get(step.op).Params.model_json_schema()),
            }
            for step in recipe.steps
        ]
        missing = fetch.missing_weights(recipe.models())
        why = preset_unavailable(recipe, missing)
        out.append(
            {
                "name": name,
                "description": recipe.description,
                "steps": steps,
                "export": recipe.export.model_dump(mode="json"),
                "available": why is None,
                "unavailable": why,
                "weights": missing,
            }
        )
    return out
