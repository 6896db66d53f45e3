"""The model layer: registry, resolution order, verification, import, pool, compat shims."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import os
import random
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import fsspec
import numpy as np
import pytest
import torch

from retouch.lib.errors import (
    ModelChecksumError,
    ModelNotAvailableError,
    UnknownNameError,
)
from retouch.lib.models import fetch, specs
from retouch.lib.models.pool import ModelPool
from retouch.lib.settings import reload_settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tiny_models  # noqa: E402

NAME = "realesr-general-x4v3"
FILENAME = "realesr-general-x4v3.pth"
# Captured before any fixture forbids downloads; only tests that serve from 127.0.0.1 use it.
_REAL_DOWNLOAD = fetch._download_url


@pytest.fixture(autouse=True)
def _seeded_and_clean_settings(monkeypatch):
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    for var in ("RETOUCH_MODEL_DIR", "RETOUCH_MODEL_MIRROR", "RETOUCH_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    yield
    monkeypatch.undo()
    reload_settings()


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    d = tmp_path / "models"
    tiny_models.point_settings_at(d, monkeypatch)
    tiny_models.forbid_network(monkeypatch)
    return d


def _set_spec(monkeypatch, name, **changes):
    monkeypatch.setitem(specs.SPECS, name, dataclasses.replace(specs.get_spec(name), **changes))


def _set_env(monkeypatch, **env):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reload_settings()


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


# --- pool -------------------------------------------------------------------------------


def test_pool_builds_once_under_concurrent_threads():
    pool = ModelPool()
    key = ("m", "cpu", "fp32", ())
    built = []

    def factory():
        time.sleep(0.2)
        obj = object()
        built.append(obj)
        return obj

    barrier = threading.Barrier(8)
    results = []

    def worker():
        barrier.wait()
        results.append(pool.get(key, factory))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 1 and pool.loads[key] == 1
    assert all(r is built[0] for r in results) and len(results) == 8
    pool.clear()
    pool.get(key, factory)
    assert pool.loads[key] == 2


def test_pool_use_holds_the_model_exclusively():
    pool = ModelPool()
    key = ("m", "cpu", "fp32", ())
    active, peak = [0], [0]
    lock = threading.Lock()

    def worker():
        with pool.use(key, object):
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            time.sleep(0.02)
            with lock:
                active[0] -= 1

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 1 and pool.loads[key] == 1


def test_pool_retries_after_a_failing_factory():
    pool = ModelPool()
    key = ("m", "cpu", "fp32", ())

    def broken():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        pool.get(key, broken)
    assert pool.get(key, lambda: "ok") == "ok"
    assert pool.loads[key] == 1


# --- compat -----------------------------------------------------------------------------


def _fresh_python(code: str) -> str:
    """What ``code`` (dedented) prints in a fresh interpreter; it must exit 0."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_compat_makes_gfpgan_and_realesrgan_importable_in_a_fresh_process():
    code = (
        "from retouch.lib.models.compat import import_gfpgan, import_realesrgan\n"
        "g = import_gfpgan(); r = import_realesrgan()\n"
        "import torchvision.transforms.functional_tensor as ft\n"
        "from basicsr.archs.rrdbnet_arch import RRDBNet\n"
        "print(g.GFPGANer.__name__, r.RealESRGANer.__name__, callable(ft.rgb_to_grayscale))\n"
    )
    assert _fresh_python(code).split() == ["GFPGANer", "RealESRGANer", "True"]


def test_facexlib_redirect_resolves_into_the_model_dir_and_writes_nothing_to_cwd(
    tmp_path, monkeypatch
):
    from retouch.lib.models.loaders import load_gfpganer

    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    model_dir = tiny_models.install_tiny_models(tmp_path / "models", monkeypatch, faces="none")
    restorer = load_gfpganer("gfpgan-v1.4", device="cpu")
    assert restorer.face_helper.face_det is not None
    assert list(work.iterdir()) == []  # no gfpgan/weights, no facexlib/weights

    import facexlib.detection

    url = specs.get_spec("retinaface-resnet50").url
    got = facexlib.detection.load_file_from_url(
        url=url,
        model_dir="facexlib/weights",
        progress=True,
        file_name=None,
        save_dir="gfpgan/weights",
    )
    assert Path(got) == model_dir / "detection_Resnet50_Final.pth"

    # Missing and offline: our error (naming the file), never facexlib's downloader.
    (model_dir / "parsing_parsenet.pth").unlink()
    _set_env(monkeypatch, RETOUCH_OFFLINE="1")
    with pytest.raises(ModelNotAvailableError) as err:
        load_gfpganer("gfpgan-v1.4", device="cpu")
    assert "parsing_parsenet.pth" in str(err.value)
    import facexlib.parsing

    with pytest.raises(ModelNotAvailableError, match="parsing_parsenet.pth"):
        facexlib.parsing.load_file_from_url(
            url=specs.get_spec("parsenet").url, model_dir="facexlib/weights", save_dir=None
        )
    assert list(work.iterdir()) == []


def test_training_code_of_the_model_packages_loads_only_when_used():
    """compat defers the packages' datasets and training models (basicsr's import scipy.stats,
    0.6 s of every model run's start); anything that uses them gets the real modules."""
    code = """
        import sys
        from retouch.lib.models.compat import TRAINING_ONLY, ensure_compat
        ensure_compat()
        from realesrgan import RealESRGANer
        from gfpgan import GFPGANer
        from basicsr.archs.rrdbnet_arch import RRDBNet
        import basicsr, gfpgan, realesrgan
        print("scipy.stats" in sys.modules, all(n in sys.modules for n in TRAINING_ONLY))
        print(basicsr.data is sys.modules["basicsr.data"], realesrgan.models is sys.modules["realesrgan.models"])
        from basicsr.data import build_dataset
        from basicsr.data.degradations import random_mixed_kernels
        from realesrgan.models.realesrgan_model import RealESRGANModel
        from basicsr.archs import build_network
        from basicsr.metrics import calculate_psnr
        net = build_network({"type": "SRVGGNetCompact", "num_feat": 8, "num_conv": 1})
        print("scipy.stats" in sys.modules, callable(build_dataset), type(net).__name__)
        print(sorted(gfpgan.models.__dict__)[:1] != [], "__getattr__" in basicsr.data.__dict__)
        """
    out = _fresh_python(code)
    assert out.split() == [
        "False",
        "True",  # deferred: registered, not run
        "True",
        "True",  # attached to their packages as a real import would
        "True",
        "True",
        "SRVGGNetCompact",  # first use runs the real code (registry complete)
        "True",
        "False",
    ]


def test_an_upscale_imports_neither_torchvisions_model_zoo_nor_dynamo():
    """torchvision.ops imports torch._dynamo (and sympy): about 1 s of an upscale run's start.
    compat leaves the model zoo, the ops and basicsr's VGG-based networks for their first use,
    and redirects facexlib's downloader when facexlib is imported, not by importing it."""
    code = """
        import sys
        from retouch.lib.models.compat import _facexlib_load_file_from_url, import_realesrgan
        import_realesrgan()
        from basicsr.archs.rrdbnet_arch import RRDBNet
        from realesrgan.archs.srvgg_arch import SRVGGNetCompact
        print(*(m in sys.modules for m in ("torch._dynamo", "sympy", "facexlib", "gfpgan")))
        # First use gets the real code: the registry finds a network whose module is deferred,
        # the packages' attributes are the modules, torchvision's zoo and ops work.
        from basicsr.utils.registry import ARCH_REGISTRY
        import basicsr, torchvision
        print(ARCH_REGISTRY.get("DFDNet").__name__, "VGGFeatureExtractor" in ARCH_REGISTRY)
        print(basicsr.archs.vgg_arch is sys.modules["basicsr.archs.vgg_arch"],
              torchvision.ops is sys.modules["torchvision.ops"])
        print(torchvision.models.vgg11().__class__.__name__, callable(torchvision.ops.nms))
        import facexlib.detection, facexlib.parsing
        print(facexlib.detection.load_file_from_url is _facexlib_load_file_from_url,
              facexlib.parsing.load_file_from_url is _facexlib_load_file_from_url)
        """
    out = _fresh_python(code)
    lines = out.splitlines()
    assert lines[0].split() == [
        "False",
        "False",
        "False",
        "False",
    ]  # dynamo, sympy, facexlib, gfpgan
    assert lines[1:] == ["DFDNet True", "True True", "VGG True", "True True"]


def test_facexlib_imported_before_compat_is_redirected_at_once():
    code = (
        "import facexlib.detection, facexlib.parsing\n"
        "from retouch.lib.models.compat import _facexlib_load_file_from_url as ours, ensure_compat\n"
        "ensure_compat()\n"
        "print(facexlib.detection.load_file_from_url is ours,"
        " facexlib.parsing.load_file_from_url is ours)\n"
    )
    out = _fresh_python(code)
    assert out.split() == ["True", "True"]


def test_a_network_built_for_a_weight_load_skips_the_random_fills_and_dynamo():
    """``empty=True`` zero-fills the parameters (a strict weight load follows), without
    the meta device, whose Python reference kernels import torch._dynamo (1.4 s)."""
    code = """
        import sys, torch
        from retouch.lib.models.loaders import build_sr_network
        from retouch.lib.models.specs import get_spec
        for name in ("realesrgan-x4plus", "realesr-general-x4v3"):
            spec = get_spec(name)
            empty, full = build_sr_network(spec, empty=True), build_sr_network(spec)
            shapes = lambda net: [(k, v.shape, v.dtype) for k, v in net.state_dict().items()]
            print(shapes(empty) == shapes(full), {p.device.type for p in empty.parameters()})
        print("torch._dynamo" in sys.modules, float(torch.nn.init.normal_(torch.zeros(4096)).std()) > 0.5)
        """
    out = _fresh_python(code)
    assert out.splitlines() == ["True {'cpu'}", "True {'cpu'}", "False True"]


def test_skipped_random_fills_are_confined_to_the_building_thread():
    import threading

    import torch

    from retouch.lib.models.loaders import _NoRandomFill

    seen: list[float] = []

    def fill_elsewhere() -> None:
        seen.append(float(torch.nn.init.uniform_(torch.zeros(4096)).std()))

    with _NoRandomFill():  # random fills are zero fills
        assert not torch.nn.init.uniform_(torch.ones(4096)).any()
        assert not torch.nn.init.kaiming_uniform_(torch.ones(64, 64)).any()
        assert not torch.ones(4096).normal_().any()
        other = threading.Thread(target=fill_elsewhere)
        other.start()
        other.join()
    assert seen and seen[0] > 0.2  # uniform(0, 1): std 0.29
    assert float(torch.nn.init.normal_(torch.zeros(4096)).std()) > 0.5


def test_loaded_face_networks_hold_the_files_weights(tmp_path, monkeypatch):
    """The face network, detector and parser are built without random fills: every tensor
    they hold comes from their weight files."""
    import torch

    from retouch.lib.models.loaders import load_gfpganer

    model_dir = tiny_models.install_tiny_models(tmp_path / "models", monkeypatch, faces="one")
    restorer = load_gfpganer("gfpgan-v1.4", device="cpu")

    def file_state(filename: str) -> dict:
        loaded = torch.load(model_dir / filename, map_location="cpu", weights_only=True)
        return loaded.get("params_ema", loaded)

    helper = restorer.face_helper
    for net, filename in (
        (restorer.gfpgan.inner, specs.get_spec("gfpgan-v1.4").filename),
        (helper.face_det, "detection_Resnet50_Final.pth"),
        (helper.face_parse, "parsing_parsenet.pth"),
    ):
        expected = file_state(filename)
        state = net.state_dict()
        assert state.keys() == expected.keys(), filename
        for key, value in state.items():
            assert torch.equal(value, expected[key].to(value.dtype)), (filename, key)


def test_a_deferred_module_that_fails_is_removed_like_any_failed_import(tmp_path, monkeypatch):
    """A deferred module whose code raises leaves no half-run module in sys.modules: the error
    reaches the caller, and the next import runs the code again."""
    from retouch.lib.models import compat

    pkg = tmp_path / "deferpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "bad.py").write_text(
        "import os\nif os.environ.get('DEFER_FAIL'):\n    raise ValueError('bad module')\nVALUE = 7\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("DEFER_FAIL", "1")
    try:
        compat._defer("deferpkg.bad")
        assert "deferpkg.bad" in sys.modules and "deferpkg" not in sys.modules
        with pytest.raises(ValueError, match="bad module"):
            from deferpkg.bad import VALUE  # noqa: F401
        assert "deferpkg.bad" not in sys.modules
        monkeypatch.delenv("DEFER_FAIL")
        from deferpkg.bad import VALUE

        assert VALUE == 7
    finally:
        for name in ("deferpkg.bad", "deferpkg"):
            sys.modules.pop(name, None)
            compat._pending.pop(name, None)
