"""What a web client may ask of the server: a recipe that can start here (no server paths,
no approval pause, its weights at hand) and sources it may read (object stores, or local paths
under RETOUCH_WEB_SOURCE_ROOTS). Each refusal is an HTTP 400 naming the field and the fix."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fastapi import HTTPException

from retouch.web.runner import override_args

# Overrides that name files or folders on the server, or send results elsewhere: a web
# client must not point the server at its own files.
SERVER_PATH_KEYS = ("mask_dir", "tags", "image", "font", "dest", "checkpoint")
# Expert parameters (memory, tiling, numeric precision, settings the networks ignore): the
# page shows them in an "Advanced" fold of their step. One list, by parameter name, for
# every operation; each is marked "x-advanced" in the schema /api/presets serves.
ADVANCED_PARAMS = ("tile", "tile_batch", "tile_pad", "pre_pad", "half", "weight", "clip_percent")


def check_recipe(preset: str, overrides: Any, extra: dict[str, Any] | None = None) -> Any:
    """Refuse a batch whose recipe would fail before its first image (HTTP 400); returns
    the recipe."""
    from retouch.lib.errors import RetouchError
    from retouch.lib.recipe import apply_overrides, load_preset, preset_names

    names = preset_names()
    if preset not in names:
        raise HTTPException(400, f"unknown preset {preset!r}; valid presets: {', '.join(names)}")
    sets: list[str] = []
    for group in (overrides, extra or {}):
        if not isinstance(group, dict):
            raise HTTPException(400, 'overrides: expected a JSON object {"step.param": value}')
        for key in group:
            last = key.rsplit(".", 1)[-1]
            if last in SERVER_PATH_KEYS or key.startswith("export.sync"):
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
    check_runnable(recipe, f"preset {preset!r}")
    return recipe


def check_runnable(recipe: Any, what: str) -> None:
    """Refuse (HTTP 400, ``what`` cannot run on this server: why) a recipe a step of which
    would fail before its first image: what a step needs besides weights (an optional
    package, the server's diffusion checkpoint), and weights neither here nor to be had.
    Weights missing here are fetched now (the mirror, or the official URL unless offline),
    so nothing starts only to fail for want of them."""
    from retouch.lib.errors import ModelError
    from retouch.lib.models import fetch
    from retouch.lib.models.specs import required_models

    why = steps_unavailable(recipe)
    if why:
        raise HTTPException(400, f"{what} {why}")
    for model in recipe.models():
        for needed in required_models(model):
            try:
                fetch.resolve(needed)
            except ModelError as exc:
                raise HTTPException(400, f"{what} cannot run on this server: {exc}") from None


def steps_unavailable(recipe: Any) -> str | None:
    """Why a step of ``recipe`` cannot run here besides its weights (an optional package,
    the server's diffusion checkpoint: each op's ``check()``), or None. Nothing is loaded."""
    from retouch.lib.errors import RetouchError
    from retouch.lib.ops.registry import registry

    for step in recipe.steps:
        try:
            registry().get(step.op).check(step.parsed())
        except RetouchError as exc:
            return f"cannot run on this server: {exc}"
    return None


def preset_unavailable(recipe: Any, missing: list[dict[str, Any]]) -> str | None:
    """Why a preset cannot start a web batch here, with the fix (None when it can)."""
    if recipe.review.approve:
        return (
            "pauses for approval (review.approve), which the web page cannot give: use "
            "`retouch run` and `retouch approve`"
        )
    return weights_unavailable(missing)


def weights_unavailable(missing: list[dict[str, Any]]) -> str | None:
    """Why weights missing here (``fetch.missing_weights``) keep a recipe from running, with
    the fix; None when every one can be fetched."""
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


def marked_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A step's params schema with expert parameters marked ``x-advanced`` and those that
    name server paths (which the web API does not set) marked ``x-server-only``."""
    for name, prop in (schema.get("properties") or {}).items():
        if name in ADVANCED_PARAMS:
            prop["x-advanced"] = True
        if name in SERVER_PATH_KEYS:
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
        for key in SERVER_PATH_KEYS:
            if key in params:
                found[f"step {i} ({step.op}).{key}"] = params[key]
    return found


def parse_overrides(text: str | None) -> dict[str, Any]:
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


def check_sources(sources: list[str], roots: list[Path]) -> None:
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
        check_uri(source, source, roots)


def check_uri(uri: str, source: str, roots: list[Path]) -> None:
    """One source, or one image a source led to, must be an object-store URL or a local
    path under RETOUCH_WEB_SOURCE_ROOTS (symlinks resolved)."""
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
    real_roots = [os.path.realpath(r) for r in roots]
    real = os.path.realpath(path)
    if not any(os.path.commonpath([real, root]) == root for root in real_roots):
        raise HTTPException(
            400,
            f"{shown}{via}: local paths are read only under RETOUCH_WEB_SOURCE_ROOTS "
            f"({', '.join(real_roots) or 'none set'}); upload the files instead",
        )
