"""The model layer: registry, resolution order, verification, import."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import os
import socket
import threading
from pathlib import Path

import fsspec
import pytest

from retouch.lib.errors import (
    ModelChecksumError,
    ModelNotAvailableError,
    UnknownNameError,
)
from retouch.lib.models import fetch, specs
from tests.lib.models_fixtures import (  # noqa: F401  (fixtures)
    _set_env,
    model_dir_fixture,
    seeded_and_clean_settings,
)

NAME = "realesr-general-x4v3"
FILENAME = "realesr-general-x4v3.pth"
# Captured before any fixture forbids downloads; only tests that serve from 127.0.0.1 use it.
_REAL_DOWNLOAD = fetch._download_url


def _set_spec(monkeypatch, name, **changes):
    monkeypatch.setitem(specs.SPECS, name, dataclasses.replace(specs.get_spec(name), **changes))


def _parts(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.part")) if folder.exists() else []


# --- registry ---------------------------------------------------------------------------


def test_unknown_model_name_lists_the_valid_ones():
    with pytest.raises(UnknownNameError) as err:
        specs.get_spec("realesrgan-x5")
    assert "realesrgan-x4plus" in str(err.value) and "gfpgan-v1.4" in str(err.value)


def test_registry_entries_are_consistent():
    all_names = [s.name for s in specs.all_specs()]
    for name in (
        "realesrgan-x4plus",
        "realesrgan-x2plus",
        "realesrnet-x4plus",
        "realesrgan-x4plus-anime-6b",
        "realesr-general-x4v3",
        "realesr-general-wdn-x4v3",
        "gfpgan-v1.3",
        "gfpgan-v1.4",
        "restoreformer",
        "retinaface-resnet50",
        "parsenet",
    ):
        assert name in all_names
    for spec in specs.all_specs():
        if spec.bundled:
            # Shipped inside retouch: nothing to download, but always verifiable.
            assert spec.url == "" and spec.size and spec.sha256 and len(spec.sha256) == 64
            continue
        assert spec.url.startswith("https://github.com/") and spec.url.endswith("/" + spec.filename)
        assert spec.sha256 is None or len(spec.sha256) == 64
    assert [s.name for s in specs.all_specs() if s.bundled] == [
        "retouch-compact-x2",
        "retouch-compact-x4",
    ]
    assert specs.required_models("gfpgan-v1.4") == [
        "gfpgan-v1.4",
        "retinaface-resnet50",
        "parsenet",
    ]
    assert specs.get_spec("realesrnet-x4plus").url.endswith("/v0.1.1/RealESRNet_x4plus.pth")


# --- resolution order -------------------------------------------------------------------


def test_explicit_path_wins_over_model_dir(model_dir, tmp_path):
    model_dir.mkdir(parents=True)
    (model_dir / FILENAME).write_bytes(b"model-dir")
    explicit = tmp_path / "mine.pth"
    explicit.write_bytes(b"explicit")
    assert fetch.resolve(NAME, explicit) == explicit
    assert fetch.resolve(NAME) == model_dir / FILENAME


def test_missing_explicit_path_is_an_error_naming_it(model_dir, tmp_path):
    with pytest.raises(ModelNotAvailableError) as err:
        fetch.resolve(NAME, tmp_path / "nope.pth")
    assert "nope.pth" in str(err.value) and "does not exist" in str(err.value)


def test_model_dir_wins_over_mirror(model_dir, monkeypatch):
    model_dir.mkdir(parents=True)
    (model_dir / FILENAME).write_bytes(b"local copy")
    fs = fsspec.filesystem("memory")
    fs.pipe(f"/mirror-a/{FILENAME}", b"mirror copy")
    _set_env(monkeypatch, RETOUCH_MODEL_MIRROR="memory://mirror-a")
    assert fetch.resolve(NAME).read_bytes() == b"local copy"


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_mirror_is_used_when_the_model_dir_lacks_the_file(model_dir, monkeypatch, tmp_path, kind):
    payload = b"weights from the mirror" * 100
    _set_spec(monkeypatch, NAME, size=len(payload), sha256=hashlib.sha256(payload).hexdigest())
    if kind == "memory":
        fsspec.filesystem("memory").pipe(f"/mirror-b/{FILENAME}", payload)
        mirror = "memory://mirror-b"
    else:
        folder = tmp_path / "mirror"
        folder.mkdir()
        (folder / FILENAME).write_bytes(payload)
        mirror = folder.as_uri()
    _set_env(monkeypatch, RETOUCH_MODEL_MIRROR=mirror)
    path = fetch.resolve(NAME)
    assert path == model_dir / FILENAME
    assert path.read_bytes() == payload
    assert _parts(model_dir) == []
    assert fetch.status(NAME)["verified"] is True


def test_mirror_checksum_mismatch_is_refused_and_temp_file_removed(model_dir, monkeypatch):
    payload = b"tampered"
    _set_spec(monkeypatch, NAME, size=len(payload), sha256="0" * 64)
    fsspec.filesystem("memory").pipe(f"/mirror-c/{FILENAME}", payload)
    _set_env(monkeypatch, RETOUCH_MODEL_MIRROR="memory://mirror-c")
    with pytest.raises(ModelChecksumError) as err:
        fetch.resolve(NAME)
    text = str(err.value)
    assert FILENAME in text and "0" * 64 in text and hashlib.sha256(payload).hexdigest() in text
    assert not (model_dir / FILENAME).exists()
    assert _parts(model_dir) == []


@pytest.fixture
def http_folder(tmp_path):
    """A real HTTP server on 127.0.0.1 serving a temp folder (stands in for the official host)."""
    folder = tmp_path / "served"
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_official_url_is_last_resort_and_verified(model_dir, monkeypatch, http_folder):
    folder, base = http_folder
    payload = bytes(range(256)) * 50
    (folder / FILENAME).write_bytes(payload)
    _set_spec(
        monkeypatch,
        NAME,
        url=f"{base}/{FILENAME}",
        size=len(payload),
        sha256=hashlib.sha256(payload).hexdigest(),
    )
    monkeypatch.setattr(fetch, "_download_url", _REAL_DOWNLOAD)
    path = fetch.resolve(NAME)
    assert path.read_bytes() == payload
    assert fetch.weights_id(NAME, path) == hashlib.sha256(payload).hexdigest()


def test_official_download_with_wrong_checksum_leaves_nothing(model_dir, monkeypatch, http_folder):
    folder, base = http_folder
    (folder / FILENAME).write_bytes(b"not the real weights")
    _set_spec(monkeypatch, NAME, url=f"{base}/{FILENAME}", size=None, sha256="a" * 64)
    monkeypatch.setattr(fetch, "_download_url", _REAL_DOWNLOAD)
    with pytest.raises(ModelChecksumError) as err:
        fetch.resolve(NAME)
    assert FILENAME in str(err.value) and "a" * 64 in str(err.value)
    assert not (model_dir / FILENAME).exists()
    assert _parts(model_dir) == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_official_url_fails_fast_with_the_three_ways(model_dir, monkeypatch):
    url = f"http://127.0.0.1:{_closed_port()}/{FILENAME}"
    _set_spec(monkeypatch, NAME, url=url)
    monkeypatch.setattr(fetch, "_download_url", _REAL_DOWNLOAD)
    with pytest.raises(ModelNotAvailableError) as err:
        fetch.resolve(NAME)
    text = str(err.value)
    assert FILENAME in text and url in text
    assert "network unreachable" in text
    assert f"retouch models pull {NAME}" in text
    assert f"retouch models import {NAME}" in text
    assert "RETOUCH_MODEL_MIRROR" in text
    assert str(model_dir / FILENAME) in text
    assert _parts(model_dir) == []


def test_offline_error_names_file_url_and_the_three_ways(model_dir, monkeypatch):
    _set_env(monkeypatch, RETOUCH_OFFLINE="1")
    with pytest.raises(ModelNotAvailableError) as err:
        fetch.resolve("gfpgan-v1.4")
    text = str(err.value)
    spec = specs.get_spec("gfpgan-v1.4")
    assert spec.filename in text and spec.url in text
    assert "offline" in text
    assert "retouch models pull gfpgan-v1.4" in text
    assert "retouch models import gfpgan-v1.4" in text
    assert "RETOUCH_MODEL_MIRROR" in text


def test_missing_mirror_file_is_reported_among_the_reasons(model_dir, monkeypatch):
    _set_env(monkeypatch, RETOUCH_MODEL_MIRROR="memory://empty-mirror", RETOUCH_OFFLINE="true")
    with pytest.raises(ModelNotAvailableError) as err:
        fetch.resolve(NAME)
    assert f"mirror memory://empty-mirror has no {FILENAME}" in str(err.value)


# --- pull / import / status / weights_id -------------------------------------------------


def test_pull_fetches_the_helper_models_of_a_face_model(model_dir, monkeypatch):
    fs = fsspec.filesystem("memory")
    for name in ("gfpgan-v1.3", "retinaface-resnet50", "parsenet"):
        spec = specs.get_spec(name)
        _set_spec(monkeypatch, name, size=None, sha256=None)
        fs.pipe(f"/mirror-d/{spec.filename}", name.encode())
    _set_env(monkeypatch, RETOUCH_MODEL_MIRROR="memory://mirror-d")
    path = fetch.pull("gfpgan-v1.3")
    assert path == model_dir / "GFPGANv1.3.pth"
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "GFPGANv1.3.pth",
        "detection_Resnet50_Final.pth",
        "parsing_parsenet.pth",
    ]
    # force fetches again even though the files are present
    fs.pipe("/mirror-d/GFPGANv1.3.pth", b"newer")
    assert fetch.pull("gfpgan-v1.3", force=True).read_bytes() == b"newer"
    assert fetch.pull("gfpgan-v1.3").read_bytes() == b"newer"


def test_import_file_copies_and_checks(model_dir, monkeypatch, tmp_path):
    good = tmp_path / "download.pth"
    good.write_bytes(b"x" * 1000)
    _set_spec(monkeypatch, NAME, size=1000, sha256=hashlib.sha256(b"x" * 1000).hexdigest())
    dest = fetch.import_file(NAME, good)
    assert dest == model_dir / FILENAME and dest.read_bytes() == good.read_bytes()
    assert fetch.status(NAME)["verified"] is True

    bad = tmp_path / "truncated.pth"
    bad.write_bytes(b"x" * 999)
    with pytest.raises(ModelChecksumError) as err:
        fetch.import_file(NAME, bad)
    assert "999" in str(err.value) and "1000" in str(err.value)
    assert dest.read_bytes() == b"x" * 1000  # the good copy is untouched
    assert _parts(model_dir) == []

    fetch.import_file(NAME, bad, force=True)
    assert dest.read_bytes() == b"x" * 999
    st = fetch.status(NAME)
    assert st["present"] is True and st["size"] == 999 and st["verified"] is False

    with pytest.raises(ModelNotAvailableError, match="no such file"):
        fetch.import_file(NAME, tmp_path / "missing.pth")


def test_status_of_an_absent_model(model_dir):
    st = fetch.status("parsenet")
    assert st["present"] is False and st["verified"] is None
    assert st["path"] == str(model_dir / "parsing_parsenet.pth")


def test_weights_id_is_cached_by_path_size_and_mtime(tmp_path):
    f = tmp_path / "w.pth"
    f.write_bytes(b"a" * 64)
    first = fetch.weights_id(NAME, f)
    assert first == hashlib.sha256(b"a" * 64).hexdigest()
    st = f.stat()
    f.write_bytes(b"b" * 64)  # same size; restore the mtime: the cached value is returned
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert fetch.weights_id(NAME, f) == first
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert fetch.weights_id(NAME, f) == hashlib.sha256(b"b" * 64).hexdigest()
