"""Models a user brings: ``retouch models import FILE [--name NAME]``.

The file is read as tensors only (:mod:`retouch.lib.models.weightfile`), its architecture,
scale and purpose are detected by the model families (LaMa, then spandrel), the network is
built once with the weights loaded strictly (so a file that detects but does not load is
refused now, not in the middle of a batch), and the weights are stored as
``<model dir>/<name>.safetensors``. The entry goes to ``<model dir>/imported.json``; the
registry (:func:`retouch.lib.models.specs.get_spec`) reads it, so the model is usable in
every op of its purpose, the web form and ``--set`` at once, without any code change.

Importing a file under a shipped name (``retouch models import big-lama best.ckpt``) checks
it against that entry: the official file is copied as is; another file of the same
architecture (the authors' checkpoint, a bare state dict) is converted once to
``<model dir>/<stem>.safetensors``, which :func:`retouch.lib.models.fetch.resolve` then finds.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from retouch.lib.errors import ModelError
from retouch.lib.models.specs import SPECS, ModelSpec

REGISTRY_FILE = "imported.json"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_lock = threading.Lock()
_cache: dict[str, tuple[tuple[int, int], dict[str, ModelSpec]]] = {}


def registry_path() -> Path:
    from retouch.lib.models.fetch import model_dir

    return model_dir() / REGISTRY_FILE


def _read(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: the imported models' registry is unreadable ({exc})") from None
    return list(data.get("models", [])) if isinstance(data, dict) else []


def _spec(entry: dict[str, Any]) -> ModelSpec:
    fields = {k: v for k, v in entry.items() if k in ModelSpec.__dataclass_fields__}
    fields["needs"] = tuple(fields.get("needs") or ())
    return ModelSpec(**fields)


def imported_specs() -> dict[str, ModelSpec]:
    """The models imported on this machine (model dir), by name; cached by the registry
    file's size and mtime, so an import by another process is seen at the next lookup."""
    path = registry_path()
    try:
        st = path.stat()
    except OSError:
        return {}
    stamp = (st.st_size, st.st_mtime_ns)
    cached = _cache.get(str(path))
    if cached is not None and cached[0] == stamp:
        return cached[1]
    specs: dict[str, ModelSpec] = {}
    for entry in _read(path):
        try:
            spec = _spec(entry)
        except TypeError:
            continue  # an entry written by a newer retouch: skip it, keep the others
        specs[spec.name] = spec
    _cache[str(path)] = (stamp, specs)
    return specs


def _write(path: Path, entries: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"models": entries}, fh, indent=2, sort_keys=True)
    os.replace(tmp, path)


def _store(state: Any, target: Path) -> Path:
    """Write ``state`` as safetensors at ``target``, atomically (a temp file renamed)."""
    from retouch.lib.models.weightfile import save_safetensors

    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    try:
        save_safetensors(state, tmp)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def default_name(file: str | os.PathLike[str]) -> str:
    """A registry name from a file name: lower case, other characters as dashes."""
    stem = Path(os.fspath(file)).name.split(".")[0].lower()
    name = re.sub(r"[^a-z0-9._-]+", "-", stem).strip("-._")[:64]
    return name or "model"


def _local_copy(file: str) -> tuple[Path, Path | None]:
    """A local path for ``file`` (a path or any fsspec URL) and the temp file to remove."""
    if "://" not in file:
        path = Path(file).expanduser()
        if not path.exists():
            raise ModelError(f"cannot import {file}: no such file")
        if path.is_dir():
            raise ModelError(f"cannot import {file}: it is a folder, give the weight file")
        return path, None
    import fsspec

    suffix = "".join(Path(file.split("?")[0]).suffixes[-1:])
    fd, tmp = tempfile.mkstemp(suffix=suffix)
    try:
        with fsspec.open(file, "rb") as src, os.fdopen(fd, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
    except FileNotFoundError:
        Path(tmp).unlink(missing_ok=True)
        raise ModelError(f"cannot import {file}: no such file") from None
    return Path(tmp), Path(tmp)


def inspect_file(file: str | os.PathLike[str], *, allow_noncommercial: bool = False) -> Any:
    """What the model families detect in ``file``: a :class:`~.families.Detected`.

    Raises ModelError naming the file when it cannot be read, is a pickle with code, or
    matches no architecture retouch can run.
    """
    from retouch.lib.models.families import detect
    from retouch.lib.models.weightfile import read_state_dict

    src = os.fspath(file)
    path, tmp = _local_copy(src)
    try:
        state = read_state_dict(path)
        try:
            found = detect(state, allow_noncommercial=allow_noncommercial)
        except ModelError as exc:
            raise ModelError(f"{src}: {exc}") from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    if found is None:
        sample = ", ".join(list(state)[:3])
        raise ModelError(
            f"{src}: unknown architecture: its {len(state)} weights (first keys: {sample}) "
            "match no network retouch can run (spandrel's architectures, LaMa). "
            "Is it a model for images? Non-commercial architectures need "
            "--allow-noncommercial and the spandrel_extra_arches package"
        )
    if found.license.startswith("NON-COMMERCIAL") and not allow_noncommercial:
        raise ModelError(
            f"{src}: {found.arch} is under a non-commercial licence; import it with "
            "--allow-noncommercial to accept that"
        )
    return found


def import_model(
    file: str | os.PathLike[str],
    name: str | None = None,
    *,
    force: bool = False,
    allow_noncommercial: bool = False,
) -> ModelSpec:
    """Detect, verify and register the model in ``file`` under ``name`` (default: from the
    file name); returns its registry entry. ``force`` replaces an earlier import of the
    same name."""
    from retouch.lib.models.families import get_family
    from retouch.lib.models.fetch import file_sha256, model_dir

    src = os.fspath(file)
    name = name or default_name(src)
    if not _NAME.match(name):
        raise ModelError(
            f"model name {name!r}: use lower-case letters, digits, '.', '_' and '-' "
            "(64 at most, starting with a letter or digit)"
        )
    if name in SPECS:
        raise ModelError(
            f"{name!r} is a shipped model: import its file with `retouch models import {name} FILE`"
        )
    found = inspect_file(src, allow_noncommercial=allow_noncommercial)
    with _lock:
        path = registry_path()
        entries = [e for e in _read(path) if e.get("name") != name]
        if not force and len(entries) != len(_read(path)):
            raise ModelError(
                f"a model named {name!r} is already imported; pass --force to replace it, "
                "or choose another --name"
            )
        target = _store(found.state, model_dir() / f"{name}.safetensors")
        arch_kwargs: dict[str, Any] = {"needs": asdict(found.needs)}
        if found.license.startswith("NON-COMMERCIAL"):
            arch_kwargs["noncommercial"] = True
        scale = f" x{found.scale}" if found.purpose == "upscale" else ""
        spec = ModelSpec(
            name=name,
            kind=found.family,
            arch=found.arch,
            scale=found.scale,
            filename=target.name,
            url="",
            size=target.stat().st_size,
            sha256=file_sha256(target),
            arch_kwargs=arch_kwargs,
            description=f"{found.arch}{scale} ({found.params / 1e6:.1f}M parameters), imported",
            license=found.license,
            purpose=found.purpose,
            origin=src,
            # Face networks need the face detector and parser, as the shipped ones do.
            needs=("retinaface-resnet50", "parsenet") if found.purpose == "face" else (),
        )
        entry = {**asdict(spec), "imported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        entries.append(entry)
        _write(path, entries)
    # Loading it once now is the check that it runs (strict weights, the detected scale).
    try:
        get_family(spec.kind).load(spec, device="cpu", dtype="fp32")
    except Exception as exc:
        remove(name)
        raise ModelError(f"{src}: detected as {found.arch} but does not load: {exc}") from None
    return spec


def remove(name: str) -> bool:
    """Forget the imported model ``name`` and delete its weights; False when there is none."""
    from retouch.lib.models.fetch import model_dir

    with _lock:
        path = registry_path()
        entries = _read(path)
        kept = [e for e in entries if e.get("name") != name]
        if len(kept) == len(entries):
            return False
        _write(path, kept)
        (model_dir() / f"{name}.safetensors").unlink(missing_ok=True)
    return True


def import_into_shipped(
    spec: ModelSpec, file: str | os.PathLike[str], *, force: bool = False
) -> Path:
    """Provide the weights of shipped model ``spec`` from ``file``.

    The official file (its checksum matches) is copied as is. Otherwise, for a family that
    can read other files of the same network (LaMa: the authors' checkpoint, a bare state
    dict), the file is detected, checked to be the same architecture and scale and stored
    converted as ``<stem>.safetensors``. Anything else is the checksum error of
    :func:`retouch.lib.models.fetch.import_file` (``force`` copies it anyway).
    """
    from retouch.lib.errors import ModelChecksumError
    from retouch.lib.models.families import get_family
    from retouch.lib.models.fetch import converted_path, import_file

    try:
        return import_file(spec.name, file, force=False)
    except ModelChecksumError:
        from retouch.lib.models.families import detect
        from retouch.lib.models.specs import purpose_of
        from retouch.lib.models.weightfile import read_state_dict

        src = os.fspath(file)
        path, tmp = _local_copy(src)
        try:
            state = read_state_dict(path)
            found = detect(state)
            own = get_family(spec.kind).detect(state)
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
        if found is not None and (found.scale != spec.scale or found.purpose != purpose_of(spec)):
            raise ModelError(
                f"{src}: holds a {found.arch} x{found.scale} {found.purpose} network, but "
                f"{spec.name!r} is {spec.arch} x{spec.scale} ({purpose_of(spec)}); import it "
                f"under its own name: `retouch models import {src} --name NAME`"
            ) from None
        if own is None:
            if force:
                return import_file(spec.name, file, force=True)
            raise
        return _store(own.state, converted_path(spec))
