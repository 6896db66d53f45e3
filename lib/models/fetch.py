"""Finding, downloading, importing and verifying weight files.

Weights that ship with retouch (``spec.bundled``, in ``lib/models/weights/``) resolve to the
packaged file, checked against the registry's size and sha256; nothing else is tried for them.
Resolution order for every other registry name (:func:`resolve`):

1. an explicit path given by the caller (must exist);
2. ``<model dir>/<filename>`` (``RETOUCH_MODEL_DIR``, default ``~/.cache/retouch/models``);
3. ``<RETOUCH_MODEL_MIRROR>/<filename>``: any fsspec folder URL (local path, ``file://``,
   ``s3://``, ``memory://``...);
4. the official URL, unless ``RETOUCH_OFFLINE`` is set.

Anything fetched goes to a temporary file in the model dir, is checked against the size and
sha256 recorded in the registry (where known) and only then renamed into place, so a
half-written or wrong file never sits under the real name.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from retouch.lib.errors import ModelChecksumError, ModelError, ModelNotAvailableError
from retouch.lib.models.specs import ModelSpec, get_spec, required_models
from retouch.lib.settings import get_settings

# Seconds to wait for the official server to answer; offline machines fail fast.
DOWNLOAD_TIMEOUT_S = 20.0
_CHUNK = 1 << 20

_fetch_locks: dict[str, threading.Lock] = {}
_fetch_locks_guard = threading.Lock()
_hash_cache: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


# Where weights that ship inside the package live (``ModelSpec.bundled``).
BUNDLED_DIR = Path(__file__).resolve().parent / "weights"


def model_dir() -> Path:
    """The folder holding weight files (from the settings; not created here)."""
    return get_settings().resolved_model_dir()


def _lock_for(filename: str) -> threading.Lock:
    with _fetch_locks_guard:
        return _fetch_locks.setdefault(filename, threading.Lock())


def bundled_path(spec: ModelSpec) -> Path:
    """Where the packaged weight file of a bundled spec lives (it may be missing in a broken
    install; :func:`resolve` checks)."""
    return BUNDLED_DIR / spec.filename


def _bundled(spec: ModelSpec) -> Path:
    """The packaged file of a bundled spec, verified against the registry's size and sha256."""
    path = bundled_path(spec)
    if not path.is_file():
        raise ModelNotAvailableError(
            f"model {spec.name!r} ships with retouch, but its weight file {path} is missing: "
            "the installation is incomplete. Reinstall retouch (pip install --force-reinstall)."
        )
    size = path.stat().st_size
    try:
        _check(spec, str(path), size, file_sha256(path))
    except ModelChecksumError as exc:
        raise ModelChecksumError(
            f"{exc} The file ships with retouch: reinstall retouch to restore it."
        ) from None
    return path


def _how_to_provide(spec: ModelSpec) -> str:
    target = model_dir() / spec.filename
    if spec.imported:
        return (
            f"It was imported from {spec.origin}: import it again with "
            f"`retouch models import {spec.origin} --name {spec.name} --force`."
        )
    return (
        f"Official URL: {spec.url}. Provide the file in one of three ways: "
        f"(1) online: run `retouch models pull {spec.name}`; "
        f"(2) copy a downloaded file in: `retouch models import {spec.name} /path/to/{spec.filename}` "
        f"(or put it at {target}); "
        f"(3) set RETOUCH_MODEL_MIRROR to a folder (path, file://, s3://...) that holds {spec.filename}."
    )


def _not_available(spec: ModelSpec, reasons: list[str]) -> ModelNotAvailableError:
    why = "; ".join(reasons) if reasons else "not found"
    return ModelNotAvailableError(
        f"model {spec.name!r}: weight file {spec.filename} is not available ({why}). "
        + _how_to_provide(spec)
    )


@contextmanager
def _temp_in(folder: Path, filename: str) -> Iterator[tuple[IO[bytes], Path]]:
    """A temp file next to the destination (same filesystem, so the rename is atomic); removed
    unless the caller renamed it away."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=folder)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh, tmp
    finally:
        tmp.unlink(missing_ok=True)


def _copy_stream(src: IO[bytes], dst: IO[bytes]) -> tuple[int, str, str]:
    """Copy ``src`` to ``dst``; returns (size, sha256, md5)."""
    digest = hashlib.sha256()
    md5 = hashlib.md5(usedforsecurity=False)
    size = 0
    while True:
        chunk = src.read(_CHUNK)
        if not chunk:
            break
        digest.update(chunk)
        md5.update(chunk)
        dst.write(chunk)
        size += len(chunk)
    return size, digest.hexdigest(), md5.hexdigest()


def converted_path(spec: ModelSpec) -> Path:
    """Where the safetensors copy of a shipped model's weights goes when they were imported
    from another file of the same network (:func:`retouch.lib.models.imported.import_into_shipped`)."""
    return model_dir() / (Path(spec.filename).stem + ".safetensors")


def local_path(spec: ModelSpec) -> Path:
    """Where the weights of ``spec`` are on this machine (the packaged file, the model
    dir's file or its converted copy), or where they would go when absent."""
    if spec.bundled:
        return bundled_path(spec)
    dest = model_dir() / spec.filename
    if not dest.is_file():
        converted = converted_path(spec)
        if converted.is_file():
            return converted
    return dest


def _check(spec: ModelSpec, origin: str, size: int, sha256: str, md5: str | None = None) -> None:
    if spec.size is not None and size != spec.size:
        raise ModelChecksumError(
            f"{spec.filename} from {origin}: size {size} bytes, expected {spec.size} "
            f"(model {spec.name!r}); the file is truncated or a different file. "
            "Fetch it again or import the right file."
        )
    if spec.sha256 is not None and sha256 != spec.sha256:
        raise ModelChecksumError(
            f"{spec.filename} from {origin}: sha256 {sha256}, expected {spec.sha256} "
            f"(model {spec.name!r}); the file is corrupt or a different file. "
            "Fetch it again or import the right file."
        )
    if spec.md5 is not None and md5 is not None and md5 != spec.md5:
        raise ModelChecksumError(
            f"{spec.filename} from {origin}: md5 {md5}, expected {spec.md5} "
            f"(model {spec.name!r}); the file is corrupt or a different file. "
            "Fetch it again or import the right file."
        )


def _install(spec: ModelSpec, src: IO[bytes], origin: str, *, verify: bool = True) -> Path:
    """Stream ``src`` into the model dir under the spec's filename, verified and atomic."""
    folder = model_dir()
    dest = folder / spec.filename
    with _temp_in(folder, spec.filename) as (fh, tmp):
        size, sha, md5 = _copy_stream(src, fh)
        fh.flush()
        os.fsync(fh.fileno())
        fh.close()
        if verify:
            _check(spec, origin, size, sha, md5)
        os.replace(tmp, dest)
    st = dest.stat()
    with _hash_lock:
        _hash_cache[(str(dest), st.st_size, st.st_mtime_ns)] = sha
    return dest


def _from_mirror(spec: ModelSpec, mirror: str) -> Path:
    import fsspec

    url = f"{mirror.rstrip('/')}/{spec.filename}"
    try:
        with fsspec.open(url, "rb") as src:
            return _install(spec, src, url)
    except FileNotFoundError:
        raise ModelNotAvailableError(f"mirror {mirror} has no {spec.filename}") from None


def _download_url(url: str, spec: ModelSpec) -> Path:
    """Download ``url`` into the model dir (tests replace this to forbid network access)."""
    request = urllib.request.Request(url, headers={"User-Agent": "retouch"})
    with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
        return _install(spec, response, url)


def _fetch(spec: ModelSpec, *, allow_download: bool, skip_local: bool = False) -> Path:
    if spec.bundled:
        return _bundled(spec)
    settings = get_settings()
    dest = model_dir() / spec.filename
    reasons: list[str] = []
    if not skip_local:
        if dest.is_file():
            return dest
        converted = converted_path(spec)
        if converted != dest and converted.is_file():
            return converted
        reasons.append(f"not in the model dir {model_dir()}")
    with _lock_for(spec.filename):
        # Another thread may have fetched it while we waited.
        if not skip_local and dest.is_file():
            return dest
        if settings.model_mirror:
            try:
                return _from_mirror(spec, settings.model_mirror)
            except ModelChecksumError:
                raise
            except ModelNotAvailableError as exc:
                reasons.append(str(exc))
            except Exception as exc:  # any fsspec backend error: report it, try the next way
                reasons.append(
                    f"mirror {settings.model_mirror} failed: {type(exc).__name__}: {exc}"
                )
        else:
            reasons.append("no mirror set (RETOUCH_MODEL_MIRROR)")
        if settings.offline:
            reasons.append("offline mode (RETOUCH_OFFLINE) forbids the official URL")
        elif not allow_download:
            reasons.append("downloading was not allowed for this call")
        else:
            try:
                return _download_url(spec.url, spec)
            except ModelChecksumError:
                raise
            except urllib.error.HTTPError as exc:
                reasons.append(f"download failed: HTTP {exc.code} {exc.reason}")
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                reasons.append(f"network unreachable: {reason}")
    raise _not_available(spec, reasons)


def resolve(
    name: str, explicit_path: str | os.PathLike[str] | None = None, *, allow_download: bool = True
) -> Path:
    """The local path of the weight file for registry name ``name``, fetching it if needed.

    Order: ``explicit_path`` (must exist; not checked against the registry, it is the caller's
    choice), the model dir, the mirror, the official URL (unless offline or
    ``allow_download=False``). Without ``explicit_path`` a bundled model resolves to its packaged,
    verified file. Raises UnknownNameError for a name not in the registry,
    ModelNotAvailableError (naming the file, the official URL, the three ways to provide it and
    why each way failed), ModelChecksumError when a fetched file does not match.
    """
    spec = get_spec(name)
    if explicit_path is not None:
        path = Path(explicit_path).expanduser()
        if not path.is_file():
            raise ModelNotAvailableError(
                f"model {name!r}: the given weight file {path} does not exist. "
                "Check the path, or leave it out to use the model dir. " + _how_to_provide(spec)
            )
        return path
    return _fetch(spec, allow_download=allow_download)


def pull(name: str, force: bool = False) -> Path:
    """Make ``name`` and its helper models present in the model dir; returns the main file.

    With ``force`` the files are fetched again (mirror, then official URL) even if present.
    """
    paths = [
        _fetch(get_spec(n), allow_download=True, skip_local=force) for n in required_models(name)
    ]
    return paths[0]


def import_file(name: str, file: str | os.PathLike[str], force: bool = False) -> Path:
    """Copy a downloaded weight file (path or fsspec URL) into the model dir under its name.

    The copy is checked against the registry's size and sha256 where known; a mismatch raises
    ModelChecksumError (nothing is written) unless ``force`` is true.
    """
    import fsspec

    spec = get_spec(name)
    if spec.bundled:
        raise ModelError(
            f"model {name!r} ships with retouch ({bundled_path(spec)}); there is nothing to "
            "import. Register your own file under a new name instead."
        )
    src_name = os.fspath(file)
    try:
        with fsspec.open(src_name, "rb") as src:
            return _install(spec, src, src_name, verify=not force)
    except FileNotFoundError:
        raise ModelNotAvailableError(
            f"cannot import {src_name} as model {name!r}: no such file"
        ) from None
    except IsADirectoryError:
        raise ModelError(
            f"cannot import {src_name} as model {name!r}: it is a folder, give the {spec.filename} file"
        ) from None


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file, cached by (path, size, mtime_ns) so each file is hashed once."""
    p = Path(path)
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    with _hash_lock:
        cached = _hash_cache.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    with p.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    value = digest.hexdigest()
    with _hash_lock:
        _hash_cache[key] = value
    return value


def weights_id(name: str, path: str | os.PathLike[str]) -> str:
    """Identity of the weights actually used for ``name``: the sha256 of the file at ``path``.

    Cached per process by (path, size, mtime_ns); result keys include it so that replacing a
    weight file recomputes results.
    """
    try:
        return file_sha256(path)
    except FileNotFoundError:
        raise ModelNotAvailableError(f"model {name!r}: weight file {path} does not exist") from None


def weights_key(name: str) -> tuple[str, str]:
    """(path, sha256) of the file ``name`` resolves to now: part of every model pool key, so a
    long-lived worker loads the new weights after a file is replaced under the same name."""
    path = resolve(name)
    return (str(path), weights_id(name, path))


def status(name: str) -> dict[str, Any]:
    """What is known about ``name`` on this machine (hashes the file if present).

    Returns a dict: name, filename, path, present, size (on disk or None), expected_size,
    expected_sha256, sha256 (on disk or None), verified (True when size and sha256 match what
    is recorded, False on a mismatch, None when absent or nothing is recorded), url, bundled
    (True for weights that ship with retouch; their path is the packaged file).
    """
    spec = get_spec(name)
    path = local_path(spec)
    present = path.is_file()
    size = path.stat().st_size if present else None
    sha = file_sha256(path) if present else None
    verified: bool | None = None
    converted = path.name != spec.filename
    if present and not converted and (spec.size is not None or spec.sha256 is not None):
        verified = (spec.size is None or size == spec.size) and (
            spec.sha256 is None or sha == spec.sha256
        )
    return {
        "name": spec.name,
        "filename": spec.filename,
        "path": str(path),
        "present": present,
        "size": size,
        "expected_size": spec.size,
        "expected_sha256": spec.sha256,
        "sha256": sha,
        "verified": verified,
        "url": spec.url,
        "bundled": spec.bundled,
    }


def availability(name: str) -> dict[str, Any]:
    """Whether the weight file of ``name`` is here, and where it would come from if not.

    Nothing is downloaded: only a configured mirror is asked whether it holds the file.
    Returns a dict: name, filename, present (bundled file or a file in the model dir),
    source (where a missing file would be fetched from: "mirror", "url", or None when it
    cannot be had here: offline with no mirror holding it), path (where it belongs), url,
    how (the ways to provide it).
    """
    spec = get_spec(name)
    path = local_path(spec)
    present = path.is_file()
    source: str | None = None
    if not present and not spec.bundled:
        settings = get_settings()
        if settings.model_mirror and _mirror_has(settings.model_mirror, spec.filename):
            source = "mirror"
        elif not settings.offline:
            source = "url"
    return {
        "name": spec.name,
        "filename": spec.filename,
        "present": present,
        "source": source,
        "path": str(path),
        "url": spec.url,
        "how": _how_to_provide(spec) if not spec.bundled else "reinstall retouch",
    }


def _mirror_has(mirror: str, filename: str) -> bool:
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(mirror)
        return bool(fs.exists(f"{root.rstrip('/')}/{filename}"))
    except Exception:  # an unreachable mirror holds nothing usable now
        return False


def missing_weights(names: list[str]) -> list[dict[str, Any]]:
    """:func:`availability` of every weight file ``names`` need (helpers included) that is
    not here yet, in order, without duplicates."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for name in names:
        for needed in required_models(name):
            if needed in seen:
                continue
            seen.add(needed)
            found = availability(needed)
            if not found["present"]:
                out.append(found)
    return out
