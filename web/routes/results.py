"""A batch's results: the delivered files, previews, full-size views, ZIPs and report."""

from __future__ import annotations

import mimetypes
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from retouch.lib.phases.review import THUMB_LABELS
from retouch.web.batches import Batch
from retouch.web.checks import check_uri
from retouch.web.deps import RunnerDep, SettingsDep, batch_or_404
from retouch.web.results import (
    FULL_VIEWS,
    Download,
    FullViewError,
    archive_members,
    extract_result,
    first_frame,
    folder_members,
    full_view,
    selection_zip,
)
from retouch.web.schemas import ResultOut
from retouch.web.security import REPORT_CSP
from retouch.web.views import is_video

router = APIRouter(tags=["results"])
T = TypeVar("T")
# Delivered videos, by extension: named here rather than guessed from the system's MIME
# table, which lacks some of them on some systems (a <video> needs the right type).
VIDEO_MEDIA_TYPES = {
    "mp4": "video/mp4",
    "mov": "video/quicktime",
    "mkv": "video/x-matroska",
    "webm": "video/webm",
    "avi": "video/x-msvideo",
}


def _idle_or_409(batch: Batch) -> None:
    if not batch.idle:
        raise HTTPException(
            409, f"batch {batch.id} is {batch.state}: its results are ready when it is done"
        )
    if not batch.archives():
        raise HTTPException(409, f"batch {batch.id} ({batch.state}) delivered no results")


def _changing(batch: Batch, build: Callable[[], T]) -> T:
    """Run ``build`` (which reads the batch's ZIPs); a job that started meanwhile may have
    replaced them: that is a conflict to retry, not a server error."""
    try:
        return build()
    except (FileNotFoundError, zipfile.BadZipFile):
        raise HTTPException(
            409, f"batch {batch.id}: its results changed during the request; try again"
        ) from None


def _members_for(batch: Batch, names: list[str]) -> list[str]:
    """ZIP members for names given as image names or delivered file names."""
    members = archive_members(batch)
    wanted: list[str] = []
    for value in names:
        parts = [value] if value in batch.images or value in members else value.split(",")
        for name in (p.strip() for p in parts):
            if not name:
                continue
            image = batch.images.get(name)
            files = (
                []
                if image is None
                else image.outputs or ([image.output_name] if image.output_name else [])
            )
            if files:  # an image sequence's output is a folder: all its files
                for file in files:
                    wanted += [file] if file in members else folder_members(members, file)
            elif name in members:
                wanted.append(name)
            elif folder_members(members, name):
                wanted += folder_members(members, name)
            else:
                raise HTTPException(404, f"no result {name!r} in batch {batch.id}")
    return wanted


@router.get("/batches/{batch_id}/results", response_model=list[ResultOut])
def list_results(batch_id: str, runner: RunnerDep) -> list[dict[str, Any]]:
    """The delivered file of each image, with its size (a video delivered as an image
    sequence: its folder, with the size of all its files)."""
    batch = batch_or_404(runner, batch_id)
    with runner.lock:
        _idle_or_409(batch)
        members = archive_members(batch)
        found = []
        for image in batch.images.values():
            name = image.output_name
            if not name:
                continue
            size = members.get(name)
            if size is None:
                files = folder_members(members, name)
                size = sum(members[f] for f in files) if files else None
            if size is not None:
                found.append(
                    {
                        "name": image.name,
                        "output_name": name,
                        "bytes": size,
                        "url": f"/api/batches/{batch.id}/results/{image.index}",
                    }
                )
        return found


@router.get(
    "/batches/{batch_id}/results/{index}",
    response_class=FileResponse,
    responses={
        200: {
            "content": {
                "application/octet-stream": {},
                "application/zip": {},
                **{t: {} for t in VIDEO_MEDIA_TYPES.values()},
            }
        },
        206: {},
    },
)
def get_result(batch_id: str, index: int, runner: RunnerDep) -> FileResponse:
    """One image's or video's delivered file, with its media type (video/mp4...) and HTTP
    Range support, so a <video> element can play it and seek. A video delivered as an image
    sequence comes as a ZIP of its folder (frames, frames.csv, audio): ``<stem>-frames.zip``."""
    batch = batch_or_404(runner, batch_id)
    with runner.lock:
        _idle_or_409(batch)
        image = batch.by_index(index)
        if image is None or not image.output_name:
            raise HTTPException(404, f"batch {batch.id}: no result for image {index}")
        member = image.output_name
    path = _changing(batch, lambda: extract_result(batch, member))
    if path is not None:
        return Download(path, media_type(path.name), Path(member).name)
    files = _changing(batch, lambda: folder_members(archive_members(batch), member))
    if not files:
        raise HTTPException(404, f"{member}: not in the batch's ZIP")
    zipped = _changing(batch, lambda: selection_zip(batch, files))
    return Download(zipped, "application/zip", f"{Path(member).name}-frames.zip")


@router.get(
    "/batches/{batch_id}/results/{index}/first-frame",
    response_class=FileResponse,
    responses={200: {"content": {"image/jpeg": {}, "image/png": {}}}},
)
def get_first_frame(
    batch_id: str, index: int, runner: RunnerDep, current: SettingsDep
) -> FileResponse:
    """The first frame of a video delivered as an image sequence, as the browser can show
    it (PNG and JPEG as they are, TIFF converted): the picture of the sequence."""
    batch = batch_or_404(runner, batch_id)
    with runner.lock:
        _idle_or_409(batch)
        image = batch.by_index(index)
        if image is None or not image.output_name or image.status != "done":
            raise HTTPException(404, f"batch {batch.id}: no result for image {index}")
        folder, name = image.output_name, image.name
    first = _changing(batch, lambda: first_frame(archive_members(batch), folder))
    if first is None:
        raise HTTPException(404, f"{name}: not delivered as an image sequence")
    path = _changing(batch, lambda: extract_result(batch, first))
    if path is None:
        raise HTTPException(404, f"{first}: not in the batch's ZIP")
    local = str(path)
    try:
        served, media = _changing(
            batch,
            lambda: full_view(batch, "first", index, local, first, current.max_file_bytes),
        )
    except FullViewError as exc:
        raise HTTPException(exc.status, exc.message) from None
    return FileResponse(served, media_type=media, headers={"Cache-Control": "private, no-cache"})


def media_type(name: str) -> str:
    """The Content-Type of a delivered file, by its extension."""
    from retouch.lib.sources import extension

    return (
        VIDEO_MEDIA_TYPES.get(extension(name))
        or mimetypes.guess_type(name)[0]
        or "application/octet-stream"
    )


@router.get(
    "/batches/{batch_id}/thumbs/{index}/{label}",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
)
def get_thumb(batch_id: str, index: int, label: str, runner: RunnerDep) -> Response:
    """A before/after preview of one image (JPEG); 404 until the review wrote it."""
    from retouch.lib import storage

    batch = batch_or_404(runner, batch_id)
    if label not in THUMB_LABELS:
        raise HTTPException(404, f"no thumbnail {label!r}; labels: {', '.join(THUMB_LABELS)}")
    with runner.lock:
        image = batch.by_index(index)
        path = image.thumbs.get(label) if image else None
    if not path:
        raise HTTPException(404, f"batch {batch.id}: no {label} thumbnail for image {index} yet")
    headers = {"Cache-Control": "no-cache"}
    if "://" in path:
        return Response(storage.read_bytes(path), media_type="image/jpeg", headers=headers)
    if not Path(path).is_file():
        raise HTTPException(
            404, f"batch {batch.id}: the {label} thumbnail of image {index} is gone"
        )
    return FileResponse(path, media_type="image/jpeg", headers=headers)


@router.get(
    "/batches/{batch_id}/full/{index}/{which}",
    response_class=FileResponse,
    responses={
        200: {"content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}}},
        206: {},
        304: {"description": "Not modified (If-None-Match)"},
    },
)
def get_full(
    batch_id: str,
    index: int,
    which: str,
    request: Request,
    runner: RunnerDep,
    current: SettingsDep,
) -> Response:
    """One image's input (before) or delivered result (after) at full size, for the
    zoomable comparison: JPEG, PNG and WebP as they are; TIFF, BMP, GIF, 16-bit and
    animated images converted (PNG when there is alpha, else JPEG). Refused (413) above
    a large pixel bound; revalidated with ETag (If-None-Match)."""
    batch = batch_or_404(runner, batch_id)
    if which not in FULL_VIEWS:
        raise HTTPException(404, f"no full-size {which!r}; choose before or after")
    with runner.lock:
        _idle_or_409(batch)
        image = batch.by_index(index)
        if image is None or not image.output_name or image.status != "done":
            raise HTTPException(404, f"batch {batch.id}: no result for image {index}")
        if is_video(image):
            raise HTTPException(
                404,
                f"{image.name}: a video has no full-size view; play or download it from "
                f"/api/batches/{batch.id}/results/{index}",
            )
        member, name = image.output_name, image.name
        uri = batch.input_uri(image) if which == "before" else None
        uploaded = batch.info.get("source") == str(batch.folder / "input")
    if which == "after":
        path = _changing(batch, lambda: extract_result(batch, member))
        if path is None:
            raise HTTPException(404, f"{member}: not in the batch's ZIP")
        uri = str(path)
    elif uri is None:
        raise HTTPException(404, f"batch {batch.id}: the input of {name} is not known")
    elif not uploaded:
        # The sources may have been narrowed since the batch ran.
        check_uri(uri, uri, current.web_source_roots)
    read = uri
    try:
        served, media = _changing(
            batch,
            lambda: full_view(batch, which, index, read, name, current.max_file_bytes),
        )
    except FullViewError as exc:
        raise HTTPException(exc.status, exc.message) from None
    stat = served.stat()
    etag = f'"{which}-{stat.st_mtime_ns:x}-{stat.st_size:x}"'
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    if etag in [v.strip() for v in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers=headers)
    return FileResponse(served, media_type=media, headers=headers)


@router.get(
    "/batches/{batch_id}/zip",
    response_class=FileResponse,
    responses={200: {"content": {"application/zip": {}}}, 206: {}},
)
def get_zip(
    batch_id: str,
    runner: RunnerDep,
    names: list[str] | None = Query(
        None,
        description="Only these results: image or file names (comma-separated or repeated)",
    ),
) -> FileResponse:
    """The batch's ZIP, or one of only the named results (HTTP Range and If-Range
    supported, so an interrupted download can resume)."""
    batch = batch_or_404(runner, batch_id)
    with runner.lock:
        _idle_or_409(batch)
        if not names:
            path = batch.archives()[0]
            return Download(path, "application/zip", f"{batch.id}-{path.name}")
        members = _members_for(batch, names)
    # Built outside the lock: a big selection must not hold up the other requests.
    path = _changing(batch, lambda: selection_zip(batch, members))
    return Download(path, "application/zip", f"{batch.id}-selected.zip")


@router.get(
    "/batches/{batch_id}/report",
    response_class=HTMLResponse,
    responses={200: {"content": {"text/html": {}}}},
)
def get_report(batch_id: str, runner: RunnerDep) -> FileResponse:
    """The run's review report (one self-contained HTML page)."""
    batch = batch_or_404(runner, batch_id)
    with runner.lock:
        report = batch.report_path() if batch.idle else None
    if report is None:
        raise HTTPException(409, f"batch {batch.id} ({batch.state}) has no report yet")
    return FileResponse(
        report, media_type="text/html", headers={"content-security-policy": REPORT_CSP}
    )


# HEAD as well, for download managers that ask for the size before they fetch (kept out of
# the schema: it describes the GETs).
for _path, _endpoint in (
    ("/batches/{batch_id}/results/{index}", get_result),
    ("/batches/{batch_id}/results/{index}/first-frame", get_first_frame),
    ("/batches/{batch_id}/thumbs/{index}/{label}", get_thumb),
    ("/batches/{batch_id}/full/{index}/{which}", get_full),
    ("/batches/{batch_id}/zip", get_zip),
    ("/batches/{batch_id}/report", get_report),
):
    router.add_api_route(_path, _endpoint, methods=["HEAD"], include_in_schema=False)
