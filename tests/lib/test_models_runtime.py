"""The model layer: the pool of loaded models and the compat shims."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from retouch.lib.errors import ModelNotAvailableError
from retouch.lib.models import specs
from retouch.lib.models.pool import ModelPool

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tiny_models  # noqa: E402

from tests.lib.models_fixtures import (  # noqa: F401  (fixtures)
    _set_env,
    model_dir_fixture,
    seeded_and_clean_settings,
)

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


def test_preload_builds_the_recipes_models_as_its_steps_take_them(tmp_path, monkeypatch):
    """``preload`` with a recipe on the CPU builds every model the steps use (upscale, the
    face network with its detector and parser, the background upsampler) under the keys the
    steps ask for: running the steps afterwards builds nothing. On another device it builds
    nothing (models load there under the run's GPU limit)."""
    import numpy as np

    from retouch.lib.image import Image
    from retouch.lib.models.compat import preload
    from retouch.lib.models.pool import default_pool
    from retouch.lib.ops.base import OpContext
    from retouch.lib.ops.registry import registry
    from retouch.lib.recipe import Recipe

    tiny_models.install_tiny_models(tmp_path / "models", monkeypatch, faces="one")
    recipe = Recipe.model_validate(
        {
            "name": "t",
            "steps": [
                {"op": "upscale", "params": {"model": "realesrgan-x4plus", "outscale": 2}},
                {
                    "op": "restore_faces",
                    "params": {"upscale": 2, "bg_upsampler": "realesrgan-x2plus"},
                },
            ],
        }
    )
    pool = default_pool()
    pool.clear()
    entries = [
        key
        for step in recipe.steps
        for key, _ in registry().get(step.op).pool_entries(step.parsed(), "cpu")
    ]
    assert len(entries) == 3

    thread = preload(recipe.models(), recipe, "cuda:0")
    assert thread is not None
    thread.join(300)
    assert not any(key in pool for key in entries)  # a GPU run loads under its limit

    thread = preload(recipe.models(), recipe, "cpu")
    assert thread is not None
    thread.join(300)
    assert all(key in pool for key in entries)
    # Built ahead: reported once, by the first task that asks (its run's model_load_s).
    assert pool.take_ahead() > 0 and pool.take_ahead() == 0
    loads = dict(pool.loads)
    image = Image(pixels=np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8))
    for step in recipe.steps:
        image = registry().get(step.op)(image, step.parsed(), OpContext(device="cpu"))
    assert image.width == 48 * 4
    assert pool.loads == loads
    pool.clear()
