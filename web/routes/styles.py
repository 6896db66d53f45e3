"""Style comparison: one photo re-drawn in several styles (presets or re-drawing models) and
laid side by side on one contact sheet with the scores, as `retouch preview --styles` draws
it. The work runs in this process, on a worker thread, one comparison at a time."""

from __future__ import annotations

import base64
import secrets
import shutil
import threading
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from retouch.web import uploads
from retouch.web.checks import check_runnable, steps_unavailable, weights_unavailable
from retouch.web.deps import SettingsDep
from retouch.web.schemas import STYLE_PREVIEW_BODY, ErrorOut, StyleOut, StylePreviewOut
from retouch.web.uploads import UploadError

router = APIRouter(tags=["styles"])

FORM = uploads.Form(files=("file",), texts=("styles", "max_side", "overrides"), single=True)
MIN_STYLES = 2
MAX_STYLES = 6
MAX_SIDE = 512
MAX_SIDE_RANGE = (64, 1024)
# One comparison at a time in this server: it runs the networks in this process, and two at
# once would only share the same cores (and memory) at half the speed each.
PREVIEW_LOCK = threading.Lock()
BUSY = (
    "another style comparison is running on this server (one at a time); try again when it "
    "has finished"
)


@router.get("/styles", response_model=list[StyleOut])
def styles() -> list[dict[str, Any]]:
    """What can be compared: the presets whose recipe re-draws the picture (restyle,
    stylize), then the re-drawing models, each saying whether it can run here and, if not,
    why. (POST /api/styles/preview also takes any other preset.)"""
    from retouch.lib.models.specs import get_spec, names
    from retouch.lib.ops.registry import registry
    from retouch.lib.quality.preview import style_variants
    from retouch.lib.recipe import load_preset, preset_names

    out = []
    for name in preset_names():
        recipe = load_preset(name)
        if any(registry().get(step.op).redraws for step in recipe.steps):
            out.append(_style(name, "preset", recipe.description, recipe))
    for name in names(purpose="restyle"):
        recipe = style_variants(name)[0].recipe
        out.append(_style(name, "model", get_spec(name).description, recipe))
    return out


def _style(name: str, kind: str, description: str, recipe: Any) -> dict[str, Any]:
    from retouch.lib.models import fetch

    missing = fetch.missing_weights(recipe.models())
    why = weights_unavailable(missing) or steps_unavailable(recipe)
    return {
        "name": name,
        "kind": kind,
        "description": description,
        "available": why is None,
        "unavailable": why,
        "weights": missing,
    }


@router.post(
    "/styles/preview",
    response_model=StylePreviewOut,
    openapi_extra=STYLE_PREVIEW_BODY,
    responses={429: {"model": ErrorOut, "description": "Another comparison is running"}},
)
async def preview_styles(request: Request, current: SettingsDep) -> dict[str, Any]:
    """Re-draw one photo in 2 to 6 styles and answer with the contact sheet (the photo, then
    one column per style) and each style's score. Styles are presets or re-drawing models
    (GET /api/styles); no overrides are taken. The photo is reduced to ``max_side`` first,
    so the scores describe that copy. A second comparison while one runs gets 429."""
    folder = current.home / "web" / "styles"
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / f".preview-{secrets.token_hex(8)}"
    staging.mkdir()
    locked = False
    try:
        upload = await uploads.receive(
            request.headers.get("content-type"),
            request.headers.get("content-length"),
            request.stream(),
            staging,
            FORM.limits(current),
            FORM,
        )
        if (upload.fields.get("overrides") or "").strip():
            raise HTTPException(
                400,
                "overrides: not taken here: each style runs as the server defines it (use "
                "`retouch preview --styles ... --set ...` to compare changed settings)",
            )
        wanted = parse_styles(upload.fields.get("styles"))
        max_side = parse_max_side(upload.fields.get("max_side"))
        if not upload.files:
            raise UploadError(400, "no image: send one photo in the 'file' field")
        locked = PREVIEW_LOCK.acquire(blocking=False)
        if not locked:
            raise HTTPException(429, BUSY, headers={"Retry-After": "5"})
        variants = await run_in_threadpool(check_styles, wanted)
        names = await run_in_threadpool(uploads.check_upload, upload, staging, current.pixel_limit)
        return await run_in_threadpool(
            _render, staging, names[0], variants, max_side, current.device
        )
    except UploadError as exc:
        raise HTTPException(exc.status, exc.message) from None
    except ClientDisconnect:
        raise HTTPException(400, "the upload was cut off before its end") from None
    finally:
        if locked:
            PREVIEW_LOCK.release()
        shutil.rmtree(staging, ignore_errors=True)


def parse_styles(text: str | None) -> list[str]:
    """The ``styles`` field: 2..6 distinct names, comma separated (HTTP 400 otherwise)."""
    wanted = [s.strip() for s in (text or "").split(",") if s.strip()]
    if len(wanted) < MIN_STYLES or len(wanted) > MAX_STYLES:
        raise HTTPException(
            400,
            f"styles: {len(wanted)} given; compare {MIN_STYLES} to {MAX_STYLES} presets or "
            "re-drawing models, comma separated (GET /api/styles lists them)",
        )
    twice = sorted({s for s in wanted if wanted.count(s) > 1})
    if twice:
        raise HTTPException(400, f"styles: {', '.join(map(repr, twice))} named more than once")
    return wanted


def parse_max_side(text: str | None) -> int:
    low, high = MAX_SIDE_RANGE
    if text is None or not text.strip():
        return MAX_SIDE
    try:
        value = int(text.strip())
    except ValueError:
        value = 0
    if not low <= value <= high:
        raise HTTPException(400, f"max_side: {text!r}; give a whole number from {low} to {high}")
    return value


def check_styles(wanted: list[str]) -> list[Any]:
    """The sheet's columns, each refused (HTTP 400) when it is no preset or re-drawing model
    (naming the valid ones) or cannot run on this server (naming what is missing)."""
    from retouch.lib.errors import RetouchError
    from retouch.lib.quality.preview import style_variants

    try:
        variants = style_variants(",".join(wanted))
    except RetouchError as exc:
        raise HTTPException(400, str(exc).replace("--styles: ", "styles: ", 1)) from None
    for variant in variants:
        check_runnable(variant.recipe, f"style {variant.label!r}")
    return variants


def _render(
    staging: Path, name: str, variants: list[Any], max_side: int, device: str
) -> dict[str, Any]:
    """Run the comparison on the uploaded photo ``name`` (its sheet written in ``staging``)."""
    from retouch.lib.errors import RetouchError
    from retouch.lib.models.device import device_for
    from retouch.lib.quality.preview import run_preview

    try:
        device = device_for(device)
    except RetouchError as exc:
        raise HTTPException(400, f"cannot run on this server: {exc}") from None
    sheet = staging / "sheet.png"
    try:
        result = run_preview(
            str(staging / "input" / name),
            variants,
            str(sheet),
            sample_size=1,
            device=device,
            max_side=max_side,
        )
    except RetouchError as exc:
        raise HTTPException(422, f"{name}: {exc}") from None
    best = result.best()
    return {
        "image": name,
        "styles": result.variants,
        "sheet": "data:image/png;base64," + base64.b64encode(sheet.read_bytes()).decode("ascii"),
        "cells": [
            {
                "style": c.variant,
                "score": c.score,
                "score_before": c.score_before,
                "verdict": c.verdict,
                "problems": c.problems,
                "error": c.error,
                "seconds": c.seconds,
            }
            for c in result.cells
            if c.variant in result.variants
        ],
        "best": best[0] if best else None,
        "max_side": max_side,
        "seconds": round(result.seconds, 2),
    }
