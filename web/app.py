"""The FastAPI app of ``retouch web``: the page, the REST API and the downloads.

Everything is served locally (no CDN): FastAPI's /docs and /redoc pages load their scripts
from a CDN, so they are off; the schema itself is at /openapi.json.
"""

from __future__ import annotations

import gzip
import hmac
import json
import mimetypes
import secrets
import shutil
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.responses import MalformedRangeHeader

from retouch.lib.recipe import DEFAULT_PRESET
from retouch.lib.settings import get_settings
from retouch.web import uploads
from retouch.web.batches import FULL_VIEWS, THUMB_LABELS, Batch, Runner, new_batch_id
from retouch.web.security import REPORT_CSP, Guard
from retouch.web.uploads import UploadError

STATIC_DIR = Path(__file__).parent / "static"
GZIP_FROM_BYTES = 32 * 1024
# Overrides that name files or folders on the server, or send results elsewhere: a web
# client must not point the server at its own files.
_SERVER_PATH_KEYS = ("mask_dir", "tags", "image", "font", "dest")
# Expert parameters (memory, tiling, numeric precision, settings the networks ignore): the
# page shows them in an "Advanced" fold of their step. One list, by parameter name, for
# every operation; each is marked "x-advanced" in the schema /api/presets serves.
ADVANCED_PARAMS = ("tile", "tile_batch", "tile_pad", "pre_pad", "half", "weight", "clip_percent")


def _version() -> str:
    try:
        return metadata.version("retouch")
    except metadata.PackageNotFoundError:
        return "0+unknown"


# -- response models (the OpenAPI schema the page and integrators read) ---------------------


class ErrorOut(BaseModel):
    detail: str = Field(description="What went wrong, naming the file or field and the reason")


class HealthOut(BaseModel):
    ok: bool
    version: str


class StepOut(BaseModel):
    op: str
    params: dict[str, Any] = Field(description="The preset's parameters, defaults filled in")
    schema_: dict[str, Any] = Field(alias="schema", description="JSON schema of the params")


class WeightOut(BaseModel):
    name: str = Field(description="Registry name of the model")
    filename: str = Field(description="Its weight file")
    source: Literal["mirror", "url"] | None = Field(
        description="Where the server fetches the file when a batch is submitted (the mirror "
        "or the official URL); null: it cannot be had here (offline, no mirror holds it)"
    )
    path: str = Field(description="Where the file belongs on the server")
    url: str = Field(description="The official download URL")
    how: str = Field(description="The ways to provide the file on the server")


class PresetOut(BaseModel):
    name: str
    description: str
    steps: list[StepOut]
    export: dict[str, Any] = Field(description="The preset's export settings")
    available: bool = Field(
        description="Whether a batch with this preset can start here: its weight files are "
        "on the server or can be fetched when the batch is submitted"
    )
    unavailable: str | None = Field(
        description="Why the preset cannot run here and how to make it run (null when it can)"
    )
    weights: list[WeightOut] = Field(
        description="The weight files the preset needs that are not on the server yet"
    )


class ImageOut(BaseModel):
    name: str = Field(description="Relative path as uploaded (or found in the source)")
    index: int
    status: Literal["pending", "prepared", "processed", "reviewed", "done", "failed"]
    phase: Literal["prepare", "process", "review", "export"] | None
    error: str | None
    note: str | None = Field(None, description="A remark that is not a failure")
    score: float | None = Field(
        description="The result's score (0..100); the verdict is read off it and score_before"
    )
    score_before: float | None = Field(None, description="The input's score, same scale")
    verdict: str | None
    step: int | None = Field(None, description="The last recipe step done on it (1-based)")
    step_op: str | None = Field(None, description="The operation of that step")
    reused: bool = Field(False, description="Its result came from the cache (not recomputed)")
    thumbs: dict[str, str | None] = Field(description="before, after, crop-before, crop-after")
    output_name: str | None
    result_url: str | None
    full: dict[str, str | None] = Field(
        default_factory=dict,
        description="before, after: the input and the delivered result at full size, in a "
        "format browsers show (null until the result is delivered, or when the input is not "
        "known)",
    )
    size: dict[str, int] | None = Field(
        None, description="width, height of the delivered result in pixels (when known)"
    )


class ProgressOut(BaseModel):
    fraction: float = Field(description="Share of the current job's work done (0..1)")
    reviewed: int = Field(description="Images reviewed so far (their previews are ready)")
    exported: int = Field(description="Images exported (in the delivery)")
    elapsed_s: float | None = Field(description="Seconds since the current job started")
    eta_s: float | None = Field(description="Estimated seconds left (null when not known)")


class BatchSummaryOut(BaseModel):
    id: str
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    created: str
    preset: str
    overrides: dict[str, Any]
    total: int
    counts: dict[str, int]
    progress: ProgressOut
    steps: list[str] = Field(description="The operations of the preset's steps, in order")
    skipped: list[dict[str, str]]
    error: str | None
    run_id: str | None
    zip_url: str | None
    report_url: str | None
    exit_code: int | None


class BatchOut(BatchSummaryOut):
    images: list[ImageOut]


class ResultOut(BaseModel):
    name: str
    output_name: str
    bytes: int
    url: str


class UrisIn(BaseModel):
    sources: list[str] = Field(
        min_length=1, description="Folders, files, globs, s3:// prefixes, list files or .zip"
    )
    preset: str = DEFAULT_PRESET
    overrides: dict[str, Any] = Field(default_factory=dict)


class RegenerateIn(BaseModel):
    names: list[str] = Field(min_length=1, description="Image names to process again")
    overrides: dict[str, Any] = Field(default_factory=dict)
    keep_worse: bool = Field(
        False,
        description="Take a new version even when it scores below the one it replaces "
        "(by default the better one stays current and the image's note says so)",
    )


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 413, 415, 416, 422, 507)
}
MULTIPART_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "Images; a file name may hold a relative folder path",
                        },
                        "masks": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "Inpainting masks, matched to images by file stem",
                        },
                        "preset": {"type": "string", "default": DEFAULT_PRESET},
                        "overrides": {
                            "type": "string",
                            "description": 'JSON object, e.g. {"sharpen.amount": 1.5}',
                        },
                    },
                }
            }
        },
    }
}


# -- checks ----------------------------------------------------------------------------------


def check_recipe(preset: str, overrides: Any, extra: dict[str, Any] | None = None) -> Any:
    """Refuse a batch whose recipe would fail before its first image (HTTP 400); returns
    the recipe."""
    from retouch.lib.errors import ModelError, RetouchError
    from retouch.lib.models import fetch
    from retouch.lib.models.specs import required_models
    from retouch.lib.recipe import apply_overrides, load_preset, preset_names
    from retouch.web.batches import override_args

    names = preset_names()
    if preset not in names:
        raise HTTPException(400, f"unknown preset {preset!r}; valid presets: {', '.join(names)}")
    sets: list[str] = []
    for group in (overrides, extra or {}):
        if not isinstance(group, dict):
            raise HTTPException(400, 'overrides: expected a JSON object {"step.param": value}')
        for key in group:
            last = key.rsplit(".", 1)[-1]
            if last in _SERVER_PATH_KEYS or key.startswith("export.sync"):
                raise HTTPException(
                    400,
                    f"override {key!r}: names a file, folder or destination on the server, which "
                    "the web API does not set (upload masks instead, or use `retouch run`)",
                )
        sets += override_args(group)
    try:
        base = load_preset(preset)
        recipe = apply_overrides(base, sets)
        recipe.validate_steps()
    except RetouchError as exc:
        raise HTTPException(400, str(exc)) from None
    # The keys above are only the direct spellings: a whole group given as a value
    # ({"export.watermark": {"image": ...}}), a profile list or a step number reach the same
    # settings, so the resulting recipe is compared with the preset's.
    before = _server_settings(base)
    for where, value in _server_settings(recipe).items():
        if value != before.get(where):
            raise HTTPException(
                400,
                f"overrides: {where} names a file, folder or destination on the server, which "
                "the web API does not set (upload masks instead, or use `retouch run`)",
            )
    if recipe.review.approve:
        raise HTTPException(400, f"preset {preset!r} {preset_unavailable(recipe, [])}")
    # Weights missing here are fetched now (the mirror, or the official URL unless
    # offline), so a batch never starts only to fail for want of them.
    for model in recipe.models():
        for needed in required_models(model):
            try:
                fetch.resolve(needed)
            except ModelError as exc:
                raise HTTPException(
                    400, f"preset {preset!r} cannot run on this server: {exc}"
                ) from None
    return recipe


def preset_unavailable(recipe: Any, missing: list[dict[str, Any]]) -> str | None:
    """Why a preset cannot start a web batch here, with the fix (None when it can)."""
    if recipe.review.approve:
        return (
            "pauses for approval (review.approve), which the web page cannot give: use "
            "`retouch run` and `retouch approve`"
        )
    lost = [m for m in missing if m["source"] is None]
    if not lost:
        return None
    files = ", ".join(f"{m['filename']} (model {m['name']})" for m in lost)
    return (
        f"model weights missing on this server: {files}. Put each file at "
        f"{lost[0]['path'].rsplit('/', 1)[0]}/, run `retouch models pull "
        f"{' '.join(m['name'] for m in lost)}` where the server can reach the internet, or set "
        "RETOUCH_MODEL_MIRROR to a folder that holds them; then reload the page"
    )


def _marked_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A step's params schema with expert parameters marked ``x-advanced`` and those that
    name server paths (which the web API does not set) marked ``x-server-only``."""
    for name, prop in (schema.get("properties") or {}).items():
        if name in ADVANCED_PARAMS:
            prop["x-advanced"] = True
        if name in _SERVER_PATH_KEYS:
            prop["x-server-only"] = True
    return schema


def _server_settings(recipe: Any) -> dict[str, Any]:
    """Every recipe setting that reads or writes a server path or URL, by where it is."""
    data = recipe.model_dump(mode="json")
    export = data["export"]
    found: dict[str, Any] = {"export.sync": export.get("sync"), "export.tags": export.get("tags")}
    groups = [("export", export)] + [
        (f"export.profiles.{p.get('name') or i}", p)
        for i, p in enumerate(export.get("profiles") or [], start=1)
    ]
    for where, group in groups:
        mark = group.get("watermark") or {}
        found[f"{where}.watermark.image"] = mark.get("image")
        found[f"{where}.watermark.font"] = mark.get("font")
    for i, step in enumerate(recipe.steps, start=1):
        params = step.parsed().model_dump(mode="json")
        for key in _SERVER_PATH_KEYS:
            if key in params:
                found[f"step {i} ({step.op}).{key}"] = params[key]
    return found


def _parse_overrides(text: str | None) -> dict[str, Any]:
    if not text or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise HTTPException(400, f"overrides: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise HTTPException(400, 'overrides: expected a JSON object {"step.param": value}')
    return value


# Object stores the web API may read with the server's credentials. Other URL kinds
# (http, ftp, chained ``a::b`` URLs...) would let a caller make the server fetch what it
# can reach and it cannot.
REMOTE_SCHEMES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss")


def _check_sources(sources: list[str]) -> None:
    """Refuse credentials in URLs, URL kinds other than object stores, and local paths
    outside RETOUCH_WEB_SOURCE_ROOTS."""
    from retouch.lib import storage
    from retouch.lib.errors import RetouchError

    for source in sources:
        if not source.strip():
            raise HTTPException(400, "sources: an empty source")
        if any(ord(c) < 32 or ord(c) == 127 for c in source):
            raise HTTPException(400, f"{source!r}: control characters in a source")
        try:
            storage.check_no_inline_credentials(source)
        except RetouchError as exc:
            raise HTTPException(400, str(exc)) from None
        _check_uri(source, source)


def _check_uri(uri: str, source: str) -> None:
    """One source, or one image a source led to, must be an object-store URL or a local
    path under RETOUCH_WEB_SOURCE_ROOTS (symlinks resolved)."""
    import os

    from retouch.lib import storage

    shown = storage.redact(uri)
    via = "" if uri == source else f" (found through {storage.redact(source)})"
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else None
    if uri.startswith("zip://") and uri != source:
        uri = uri.split("::", 1)[1] if "::" in uri else uri  # an image inside a .zip source
        scheme = uri.split("://", 1)[0].lower() if "://" in uri else None
    if "::" in uri or (scheme is not None and scheme not in ("file", *REMOTE_SCHEMES)):
        raise HTTPException(
            400,
            f"{shown}{via}: the web API reads only local paths and "
            f"{', '.join(s + '://' for s in REMOTE_SCHEMES)} URLs; upload the files instead",
        )
    path = storage.local_path(uri)
    if path is None:
        return
    roots = [os.path.realpath(r) for r in get_settings().web_source_roots]
    real = os.path.realpath(path)
    if not any(os.path.commonpath([real, root]) == root for root in roots):
        raise HTTPException(
            400,
            f"{shown}{via}: local paths are read only under RETOUCH_WEB_SOURCE_ROOTS "
            f"({', '.join(roots) or 'none set'}); upload the files instead",
        )


# -- the guard in front of everything -----------------------------------------------------

# Sent with every answer: no sniffing, no framing, and no address (which may carry the token)
# passed on as a Referer.
# -- downloads ----------------------------------------------------------------------------


class Download(FileResponse):
    """A file download with ranges for resuming (Starlette's), an ASCII fallback beside the
    UTF-8 file name, and a malformed or foreign-unit Range ignored (RFC 9110 14.2: the whole
    file, 200) instead of answered with 400."""

    def __init__(self, path: Path, media_type: str, filename: str, **kwargs: Any):
        from urllib.parse import quote

        fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\;' else "_" for c in filename)
        disposition = f'attachment; filename="{fallback}"'
        if fallback != filename or quote(filename) != filename:
            disposition += f"; filename*=utf-8''{quote(filename, safe='')}"
        headers = {**kwargs.pop("headers", {}), "content-disposition": disposition}
        super().__init__(path, media_type=media_type, headers=headers, **kwargs)

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        try:
            return super()._parse_range_header(http_range, file_size)
        except MalformedRangeHeader:
            return []


# -- the app ---------------------------------------------------------------------------------


def _prefect_api_url() -> str | None:
    """The Prefect API this process uses (a test harness or PREFECT_API_URL), if any."""
    try:
        from prefect.settings import PREFECT_API_URL
    except ImportError:
        return None
    return PREFECT_API_URL.value() or None


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
    if runner is None:
        runner = Runner(
            settings.home / "web" / "batches",
            max_running=settings.web_max_running,
            prefect_api_url=prefect_api_url or _prefect_api_url(),
        )
    static = static_dir or STATIC_DIR

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(runner.start)
        try:
            yield
        finally:
            await run_in_threadpool(runner.stop)

    app = FastAPI(
        title="retouch web",
        version=_version(),
        description="Batch photo enhancement: upload images, follow each one, download results.",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.state.runner = runner
    app.state.token = token
    app.add_middleware(Guard, token=token)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body") or "request"
            parts.append(f"{loc}: {err.get('msg')}")
        return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)

    bearer = HTTPBearer(auto_error=False, description="RETOUCH_WEB_TOKEN, when one is set")

    def require_token(
        credentials: HTTPAuthorizationCredentials | None = Security(bearer),
        token_param: str | None = Query(
            None, alias="token", description="The token, for links and <img> (instead of a header)"
        ),
    ) -> None:
        if not token:
            return
        given = credentials.credentials if credentials else token_param
        if not given or not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(
                401,
                "a token is required: send 'Authorization: Bearer TOKEN' or ?token=TOKEN",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        page = static / "index.html"
        if page.is_file():
            return FileResponse(page, media_type="text/html")
        return HTMLResponse(
            "<!doctype html><meta charset=utf-8><title>retouch web</title>"
            "<p>retouch web is running; its page is not installed. "
            'The API is described at <a href="/openapi.json">/openapi.json</a>.</p>'
        )

    if static.is_dir():
        app.mount("/static", StaticFiles(directory=static), name="static")

    @app.get("/api/health", response_model=HealthOut, tags=["server"])
    def health() -> dict[str, Any]:
        """Liveness and version (no token needed)."""
        return {"ok": True, "version": _version()}

    api = APIRouter(prefix="/api", dependencies=[Depends(require_token)], responses=ERRORS)

    def batch_or_404(batch_id: str) -> Batch:
        batch = runner.get(batch_id)
        if batch is None:
            raise HTTPException(404, f"no batch {batch_id!r}")
        return batch

    def snapshot(batch_id: str) -> dict[str, Any]:
        data = runner.snapshot(batch_id)
        if data is None:
            raise HTTPException(404, f"no batch {batch_id!r}")
        return data

    @api.get("/presets", response_model=list[PresetOut], tags=["recipes"])
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
                    "schema": _marked_schema(registry().get(step.op).Params.model_json_schema()),
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

    @api.post(
        "/batches",
        status_code=201,
        response_model=BatchOut,
        openapi_extra=MULTIPART_BODY,
        tags=["batches"],
    )
    async def create_batch(request: Request) -> dict[str, Any]:
        """Upload images (and masks) as a new batch. Nothing starts unless every file is a
        usable image within the limits; a refusal names the file and the reason."""
        current = get_settings()
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
            overrides = _parse_overrides(upload.fields.get("overrides"))
            if not upload.files:
                raise UploadError(400, "no images: send one or more files in the 'files' field")
            recipe = await run_in_threadpool(check_recipe, preset, overrides)
            names = await run_in_threadpool(
                uploads.check_upload, upload, staging, current.pixel_limit
            )
            batch_id = new_batch_id()
            folder = runner.root / batch_id
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
        info = {
            "id": batch_id,
            "created": _created(),
            "preset": preset,
            "overrides": overrides,
            "names": names,
            "source": str(folder / "input"),
            "masks": bool(upload.masks),
            "skipped": [],
            "steps": [step.op for step in recipe.steps],
        }
        runner.add(folder, info)
        return snapshot(batch_id)

    @api.post("/batches/from-uris", status_code=201, response_model=BatchOut, tags=["batches"])
    def create_from_uris(body: UrisIn) -> dict[str, Any]:
        """A batch over images already in storage (s3://..., or local folders under
        RETOUCH_WEB_SOURCE_ROOTS), each source discovered as `retouch run SOURCE` does."""
        from retouch.lib import sources, storage
        from retouch.lib.errors import RetouchError

        current = get_settings()
        _check_sources(body.sources)
        recipe = check_recipe(body.preset, body.overrides)
        batch_id = new_batch_id()
        folder = runner.root / batch_id
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
                _check_uri(item.uri, source if len(body.sources) == 1 else item.uri)
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
        info = {
            "id": batch_id,
            "created": _created(),
            "preset": body.preset,
            "overrides": body.overrides,
            "names": [item.name for item in found.items],
            "source": source,
            "masks": False,
            "skipped": skipped,
            "steps": [step.op for step in recipe.steps],
        }
        runner.add(folder, info)
        return snapshot(batch_id)

    @api.get("/batches", response_model=list[BatchSummaryOut], tags=["batches"])
    def list_batches() -> list[dict[str, Any]]:
        """Every batch, newest first, without the per-image list."""
        return runner.list()

    @api.get("/batches/{batch_id}", response_model=BatchOut, tags=["batches"])
    def get_batch(batch_id: str, request: Request) -> Any:
        """A batch with the state of each image (poll it while the batch runs)."""
        data = snapshot(batch_id)
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

    def idle_or_409(batch: Batch) -> None:
        if not batch.idle:
            raise HTTPException(
                409, f"batch {batch.id} is {batch.state}: its results are ready when it is done"
            )
        if not batch.archives():
            raise HTTPException(409, f"batch {batch.id} ({batch.state}) delivered no results")

    @api.get("/batches/{batch_id}/results", response_model=list[ResultOut], tags=["results"])
    def list_results(batch_id: str) -> list[dict[str, Any]]:
        """The delivered file of each image, with its size."""
        from retouch.web.batches import archive_members

        batch = batch_or_404(batch_id)
        with runner.lock:
            idle_or_409(batch)
            members = archive_members(batch)
            return [
                {
                    "name": image.name,
                    "output_name": image.output_name,
                    "bytes": members[image.output_name],
                    "url": f"/api/batches/{batch.id}/results/{image.index}",
                }
                for image in batch.images.values()
                if image.output_name in members
            ]

    @api.get(
        "/batches/{batch_id}/results/{index}",
        response_class=FileResponse,
        responses={200: {"content": {"application/octet-stream": {}}}, 206: {}},
        tags=["results"],
    )
    def get_result(batch_id: str, index: int) -> FileResponse:
        """One image's delivered file (HTTP Range supported)."""
        from retouch.web.batches import extract_result

        batch = batch_or_404(batch_id)
        with runner.lock:
            idle_or_409(batch)
            image = batch.by_index(index)
            if image is None or not image.output_name:
                raise HTTPException(404, f"batch {batch.id}: no result for image {index}")
        path = _changing(batch, lambda: extract_result(batch, image.output_name))
        if path is None:
            raise HTTPException(404, f"{image.output_name}: not in the batch's ZIP")
        media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return Download(path, media, Path(image.output_name).name)

    @api.get(
        "/batches/{batch_id}/thumbs/{index}/{label}",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}},
        tags=["results"],
    )
    def get_thumb(batch_id: str, index: int, label: str) -> Response:
        """A before/after preview of one image (JPEG); 404 until the review wrote it."""
        from retouch.lib import storage

        batch = batch_or_404(batch_id)
        if label not in THUMB_LABELS:
            raise HTTPException(404, f"no thumbnail {label!r}; labels: {', '.join(THUMB_LABELS)}")
        with runner.lock:
            image = batch.by_index(index)
            path = image.thumbs.get(label) if image else None
        if not path:
            raise HTTPException(
                404, f"batch {batch.id}: no {label} thumbnail for image {index} yet"
            )
        headers = {"Cache-Control": "no-cache"}
        if "://" in path:
            return Response(storage.read_bytes(path), media_type="image/jpeg", headers=headers)
        if not Path(path).is_file():
            raise HTTPException(
                404, f"batch {batch.id}: the {label} thumbnail of image {index} is gone"
            )
        return FileResponse(path, media_type="image/jpeg", headers=headers)

    @api.get(
        "/batches/{batch_id}/full/{index}/{which}",
        response_class=FileResponse,
        responses={
            200: {"content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}}},
            206: {},
            304: {"description": "Not modified (If-None-Match)"},
        },
        tags=["results"],
    )
    def get_full(batch_id: str, index: int, which: str, request: Request) -> Response:
        """One image's input (before) or delivered result (after) at full size, for the
        zoomable comparison: JPEG, PNG and WebP as they are; TIFF, BMP, GIF, 16-bit and
        animated images converted (PNG when there is alpha, else JPEG). Refused (413) above
        a large pixel bound; revalidated with ETag (If-None-Match)."""
        from retouch.web.batches import FullViewError, extract_result, full_view

        batch = batch_or_404(batch_id)
        if which not in FULL_VIEWS:
            raise HTTPException(404, f"no full-size {which!r}; choose before or after")
        with runner.lock:
            idle_or_409(batch)
            image = batch.by_index(index)
            if image is None or not image.output_name or image.status != "done":
                raise HTTPException(404, f"batch {batch.id}: no result for image {index}")
            uri = batch.input_uri(image) if which == "before" else None
            uploaded = batch.info.get("source") == str(batch.folder / "input")
        if which == "after":
            path = _changing(batch, lambda: extract_result(batch, image.output_name))
            if path is None:
                raise HTTPException(404, f"{image.output_name}: not in the batch's ZIP")
            uri = str(path)
        elif uri is None:
            raise HTTPException(404, f"batch {batch.id}: the input of {image.name} is not known")
        elif not uploaded:
            _check_uri(uri, uri)  # the sources may have been narrowed since the batch ran
        try:
            served, media = _changing(
                batch, lambda: full_view(batch, which, index, uri, image.name)
            )
        except FullViewError as exc:
            raise HTTPException(exc.status, exc.message) from None
        stat = served.stat()
        etag = f'"{which}-{stat.st_mtime_ns:x}-{stat.st_size:x}"'
        headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
        if etag in [v.strip() for v in request.headers.get("if-none-match", "").split(",")]:
            return Response(status_code=304, headers=headers)
        return FileResponse(served, media_type=media, headers=headers)

    @api.get(
        "/batches/{batch_id}/zip",
        response_class=FileResponse,
        responses={200: {"content": {"application/zip": {}}}, 206: {}},
        tags=["results"],
    )
    def get_zip(
        batch_id: str,
        names: list[str] | None = Query(
            None,
            description="Only these results: image or file names (comma-separated or repeated)",
        ),
    ) -> FileResponse:
        """The batch's ZIP, or one of only the named results (HTTP Range and If-Range
        supported, so an interrupted download can resume)."""
        from retouch.web.batches import selection_zip

        batch = batch_or_404(batch_id)
        with runner.lock:
            idle_or_409(batch)
            if not names:
                path = batch.archives()[0]
                return Download(path, "application/zip", f"{batch.id}-{path.name}")
            members = _members_for(batch, names)
        # Built outside the lock: a big selection must not hold up the other requests.
        path = _changing(batch, lambda: selection_zip(batch, members))
        return Download(path, "application/zip", f"{batch.id}-selected.zip")

    @api.get(
        "/batches/{batch_id}/report",
        response_class=HTMLResponse,
        responses={200: {"content": {"text/html": {}}}},
        tags=["results"],
    )
    def get_report(batch_id: str) -> FileResponse:
        """The run's review report (one self-contained HTML page)."""
        batch = batch_or_404(batch_id)
        with runner.lock:
            report = batch.report_path() if batch.idle else None
        if report is None:
            raise HTTPException(409, f"batch {batch.id} ({batch.state}) has no report yet")
        return FileResponse(
            report, media_type="text/html", headers={"content-security-policy": REPORT_CSP}
        )

    @api.post(
        "/batches/{batch_id}/regenerate",
        status_code=202,
        response_model=BatchOut,
        tags=["batches"],
    )
    def regenerate(batch_id: str, body: RegenerateIn) -> dict[str, Any]:
        """Process some images again with changed parameters; the batch's ZIP, manifest and
        report are delivered again."""
        batch = batch_or_404(batch_id)
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
        return snapshot(batch_id)

    @api.post(
        "/batches/{batch_id}/cancel", status_code=202, response_model=BatchOut, tags=["batches"]
    )
    def cancel(batch_id: str) -> dict[str, Any]:
        """Stop the batch (its process gets SIGTERM, then SIGKILL); its state becomes
        cancelled once it has stopped."""
        batch = batch_or_404(batch_id)
        if not runner.cancel(batch):
            raise HTTPException(409, f"batch {batch.id} is {batch.state}: nothing to cancel")
        return snapshot(batch_id)

    # HEAD as well, for download managers that ask for the size before they fetch (kept out
    # of the schema: it describes the GETs).
    for path, endpoint in (
        ("/batches/{batch_id}/results/{index}", get_result),
        ("/batches/{batch_id}/thumbs/{index}/{label}", get_thumb),
        ("/batches/{batch_id}/full/{index}/{which}", get_full),
        ("/batches/{batch_id}/zip", get_zip),
        ("/batches/{batch_id}/report", get_report),
    ):
        api.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False)
    app.include_router(api)
    return app


def _created() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="seconds")


def _changing(batch: Batch, build: Any) -> Any:
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
    from retouch.web.batches import archive_members

    members = archive_members(batch)
    wanted: list[str] = []
    for value in names:
        parts = [value] if value in batch.images or value in members else value.split(",")
        for name in (p.strip() for p in parts):
            if not name:
                continue
            image = batch.images.get(name)
            if image is not None and (image.outputs or image.output_name):
                wanted += [m for m in image.outputs or [image.output_name] if m in members]
            elif name in members:
                wanted.append(name)
            else:
                raise HTTPException(404, f"no result {name!r} in batch {batch.id}")
    return wanted
