"""Batches: created from an upload or from URIs, listed, polled, regenerated, cancelled."""

from __future__ import annotations

import gzip
import json
import secrets
import shutil
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from retouch.lib.recipe import DEFAULT_PRESET
from retouch.web import uploads
from retouch.web.batches import new_batch_id, now_iso
from retouch.web.checks import check_recipe, check_sources, check_uri, parse_overrides
from retouch.web.deps import RunnerDep, SettingsDep, batch_or_404, snapshot
from retouch.web.runner import Runner
from retouch.web.schemas import (
    MULTIPART_BODY,
    BatchOut,
    BatchSummaryOut,
    RegenerateIn,
    UrisIn,
)
from retouch.web.uploads import UploadError

router = APIRouter(tags=["batches"])
GZIP_FROM_BYTES = 32 * 1024


def _queued(runner: Runner, folder: Path, recipe: Any, **info: Any) -> dict[str, Any]:
    """Register the prepared batch folder, queue its run, and answer with the batch."""
    batch_id = folder.name
    info = {
        "id": batch_id,
        "created": now_iso(),
        **info,
        "steps": [step.op for step in recipe.steps],
    }
    runner.add(folder, info)
    return snapshot(runner, batch_id)


@router.post("/batches", status_code=201, response_model=BatchOut, openapi_extra=MULTIPART_BODY)
async def create_batch(request: Request, runner: RunnerDep, current: SettingsDep) -> dict[str, Any]:
    """Upload images and videos (and masks) as a new batch. Nothing starts unless every
    file is a usable image or video within the limits; a refusal names the file and the
    reason."""
    limits = uploads.Limits.from_settings(current)
    runner.root.mkdir(parents=True, exist_ok=True)
    staging = runner.root / f".staging-{secrets.token_hex(8)}"
    staging.mkdir()
    try:
        upload = await uploads.receive(
            request.headers.get("content-type"),
            request.headers.get("content-length"),
            request.stream(),
            staging,
            limits,
        )
        preset = upload.fields.get("preset") or DEFAULT_PRESET
        overrides = parse_overrides(upload.fields.get("overrides"))
        if not upload.files:
            raise UploadError(
                400, "no images or videos: send one or more files in the 'files' field"
            )
        recipe = await run_in_threadpool(check_recipe, preset, overrides)
        names = await run_in_threadpool(uploads.check_upload, upload, staging, current.pixel_limit)
        folder = runner.root / new_batch_id()
        staging.rename(folder)
    except UploadError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise HTTPException(exc.status, exc.message) from None
    except ClientDisconnect:
        # The client went away mid-upload (cancelled, closed the page): an ordinary
        # event, not a server error; nothing is kept.
        shutil.rmtree(staging, ignore_errors=True)
        raise HTTPException(400, "the upload was cut off before its end") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return _queued(
        runner,
        folder,
        recipe,
        preset=preset,
        overrides=overrides,
        names=names,
        source=str(folder / "input"),
        masks=bool(upload.masks),
        skipped=[],
    )


@router.post("/batches/from-uris", status_code=201, response_model=BatchOut)
def create_from_uris(body: UrisIn, runner: RunnerDep, current: SettingsDep) -> dict[str, Any]:
    """A batch over images already in storage (s3://..., or local folders under
    RETOUCH_WEB_SOURCE_ROOTS), each source discovered as `retouch run SOURCE` does."""
    from retouch.lib import sources, storage
    from retouch.lib.errors import RetouchError

    roots = current.web_source_roots
    check_sources(body.sources, roots)
    recipe = check_recipe(body.preset, body.overrides)
    folder = runner.root / new_batch_id()
    folder.mkdir(parents=True)
    try:
        if len(body.sources) == 1:
            source = body.sources[0]
        else:
            source = str(folder / "sources.txt")
            Path(source).write_text("\n".join(body.sources) + "\n", encoding="utf-8")
        try:
            found = sources.discover(source, follow_symlinks=current.follow_symlinks)
        except RetouchError as exc:
            raise HTTPException(400, str(exc)) from None
        except (OSError, ValueError, TypeError) as exc:  # fsspec's errors for odd URLs
            raise HTTPException(
                400, f"{storage.redact(source)}: cannot be listed ({type(exc).__name__}: {exc})"
            ) from None
        for item in found.items:  # a list file may name anything
            check_uri(item.uri, source if len(body.sources) == 1 else item.uri, roots)
        skipped = [{"name": storage.redact(u), "reason": r} for u, r in found.skipped]
        if not found.items:
            why = f"; skipped: {skipped[0]['name']}: {skipped[0]['reason']}" if skipped else ""
            raise HTTPException(400, f"no images found in {', '.join(body.sources)}{why}")
        if len(found.items) > current.web_max_files:
            raise HTTPException(
                400,
                f"{len(found.items)} images: too many; at most {current.web_max_files} per "
                "batch (RETOUCH_WEB_MAX_FILES)",
            )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return _queued(
        runner,
        folder,
        recipe,
        preset=body.preset,
        overrides=body.overrides,
        names=[item.name for item in found.items],
        source=source,
        masks=False,
        skipped=skipped,
    )


@router.get("/batches", response_model=list[BatchSummaryOut])
def list_batches(runner: RunnerDep) -> list[dict[str, Any]]:
    """Every batch, newest first, without the per-image list."""
    return runner.summaries()


@router.get("/batches/{batch_id}", response_model=BatchOut)
def get_batch(batch_id: str, request: Request, runner: RunnerDep) -> Any:
    """A batch with the state of each image (poll it while the batch runs)."""
    data = snapshot(runner, batch_id)
    if "gzip" not in request.headers.get("accept-encoding", ""):
        return data
    # Polled every second or so, and a few hundred bytes per image: a big batch's state
    # is sent compressed (about 20 times smaller).
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if len(body) < GZIP_FROM_BYTES:
        return data
    return Response(
        gzip.compress(body, compresslevel=5),
        media_type="application/json",
        headers={"content-encoding": "gzip", "vary": "accept-encoding"},
    )


@router.post("/batches/{batch_id}/regenerate", status_code=202, response_model=BatchOut)
def regenerate(batch_id: str, body: RegenerateIn, runner: RunnerDep) -> dict[str, Any]:
    """Process some images again with changed parameters; the batch's ZIP, manifest and
    report are delivered again."""
    batch = batch_or_404(runner, batch_id)
    with runner.lock:
        if not batch.idle:
            raise HTTPException(409, f"batch {batch.id} is {batch.state}; wait until it ends")
        if not batch.run_id or not batch.summary:
            raise HTTPException(409, f"batch {batch.id} has no finished run to regenerate")
        for name in body.names:
            if name not in batch.images:
                raise HTTPException(400, f"no image {name!r} in batch {batch.id}")
            if "," in name:
                raise HTTPException(
                    400, f"{name!r}: names with commas cannot be selected for regeneration"
                )
    check_recipe(batch.info["preset"], batch.info.get("overrides") or {}, body.overrides)
    try:
        runner.regenerate(
            batch, list(dict.fromkeys(body.names)), body.overrides, keep_worse=body.keep_worse
        )
    except RuntimeError as exc:
        raise HTTPException(409, str(exc)) from None
    return snapshot(runner, batch_id)


@router.post("/batches/{batch_id}/cancel", status_code=202, response_model=BatchOut)
def cancel(batch_id: str, runner: RunnerDep) -> dict[str, Any]:
    """Stop the batch (its process gets SIGTERM, then SIGKILL); its state becomes
    cancelled once it has stopped."""
    batch = batch_or_404(runner, batch_id)
    if not runner.cancel(batch):
        raise HTTPException(409, f"batch {batch.id} is {batch.state}: nothing to cancel")
    return snapshot(runner, batch_id)
