"""The open model layer: families as modules, models as registry entries, imported models
usable by every op of their purpose, and weight files read as tensors only."""

from __future__ import annotations

import ast
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from retouch.lib.errors import ModelChecksumError, ModelError
from retouch.lib.models import families, fetch, imported, specs
from retouch.lib.models.families import get_family
from retouch.lib.models.pool import ModelPool
from retouch.lib.models.weightfile import UnsafeWeightsError, read_state_dict
from retouch.lib.ops.base import OpContext
from retouch.lib.ops.restore_faces import RestoreFacesParams
from retouch.lib.ops.upscale import UpscaleParams, upscale_pixels
from tests.spandrel_models import COMMUNITY, write_community_model

ROOT = Path(__file__).resolve().parents[2]
FAMILY_DIR = ROOT / "lib" / "models" / "families"


@pytest.fixture(autouse=True)
def _home(retouch_home):
    return retouch_home


# --- one place per model, one file per family ------------------------------------------


def test_every_family_module_is_registered_once_and_every_spec_names_a_family():
    modules = {p.stem for p in FAMILY_DIR.glob("*.py") if p.name != "__init__.py"}
    assert set(families._MODULES.values()) == modules
    for name in families.family_names():
        fam = get_family(name)
        assert fam.name == name and fam.purposes
        assert set(fam.purposes) <= set(families.PURPOSES)
    for spec in specs.all_specs():
        assert spec.kind in families.family_names(), spec.name


def _string_constants(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }


def _family_branches(path: Path) -> set[str]:
    """Family names compared with a ``.kind`` (``spec.kind == "lama"``, ``kind in (...)``)
    or imported from the families package by module name."""
    family_names = set(families.family_names())
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(isinstance(s, ast.Attribute) and s.attr == "kind" for s in sides):
                for s in sides:
                    for c in ast.walk(s):
                        if isinstance(c, ast.Constant) and c.value in family_names:
                            found.add(c.value)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").endswith("families"):
            found |= {a.name for a in node.names if a.name in family_names}
        elif isinstance(node, ast.ImportFrom) and ".families." in f".{node.module or ''}":
            found.add(str(node.module).rsplit(".", 1)[-1])
    return found


def test_no_code_outside_the_model_layer_branches_on_a_family_or_lists_models():
    """Adding a model is one spec entry, adding a family one module: nothing else names
    them. A default model in a parameter (and in a preset) is the only mention allowed."""
    defaults = {"realesrgan-x4plus", "gfpgan-v1.4", "big-lama", "animeganv2-paprika"}
    model_names = set(specs.SPECS) - defaults
    offenders = []
    for folder in ("lib/ops", "flows", "tasks", "web", "deployments"):
        for path in (ROOT / folder).rglob("*.py"):
            found = (_string_constants(path) & model_names) | _family_branches(path)
            offenders += [f"{path.relative_to(ROOT)}: {name}" for name in sorted(found)]
    for path in [*(ROOT / "lib").glob("*.py")]:
        found = _family_branches(path)
        offenders += [f"{path.relative_to(ROOT)}: {name}" for name in sorted(found)]
    assert offenders == []


def test_the_guard_sees_a_branch_on_a_family(tmp_path):
    branch = tmp_path / "op.py"
    branch.write_text(
        'if spec.kind == "realesrgan":\n    pass\nfrom ..models.families import lama\n'
    )
    assert _family_branches(branch) == {"realesrgan", "lama"}
    method = tmp_path / "ok.py"  # an op's own vocabulary that happens to match is fine
    method.write_text('if params.method == "lama":\n    pass\n')
    assert _family_branches(method) == set()


def test_a_new_spec_entry_is_offered_by_every_op_of_its_purpose(monkeypatch):
    base = specs.get_spec("retouch-compact-x2")
    new = specs.ModelSpec(
        name="studio-x2",
        kind=base.kind,
        arch=base.arch,
        scale=2,
        filename="studio-x2.pth",
        url="https://example.invalid/studio-x2.pth",
        arch_kwargs=base.arch_kwargs,
    )
    monkeypatch.setitem(specs.SPECS, "studio-x2", new)
    assert UpscaleParams(model="studio-x2").model == "studio-x2"
    assert RestoreFacesParams(bg_upsampler="studio-x2").bg_upsampler == "studio-x2"
    assert "studio-x2" in UpscaleParams.model_json_schema()["properties"]["model"]["enum"]
    options = RestoreFacesParams.model_json_schema()["properties"]["bg_upsampler"]["anyOf"]
    assert any("studio-x2" in o.get("enum", []) for o in options)
    assert "studio-x2" not in RestoreFacesParams.model_json_schema()["properties"]["model"]["enum"]


def test_a_model_of_another_purpose_is_refused_naming_both():
    with pytest.raises(ValueError) as err:
        UpscaleParams(model="big-lama")
    text = str(err.value)
    assert "'big-lama' is an inpainting model, not an upscaling model" in text
    assert "realesrgan-x4plus" in text
    with pytest.raises(
        ValueError, match="unknown face restoration model 'realesrgan-x4plus'|is an upscaling model"
    ):
        RestoreFacesParams(model="realesrgan-x4plus")


# --- community files through spandrel ----------------------------------------------------


def _direct(path: Path, pixels: np.ndarray) -> np.ndarray:
    """The model run as spandrel's own users run it: its descriptor on the whole image."""
    from spandrel import ModelLoader

    descriptor = ModelLoader().load_from_file(path).eval()
    x = torch.from_numpy(pixels[:, :, ::-1].copy()).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        y = descriptor(x)[0].permute(1, 2, 0).numpy()[:, :, ::-1]
    return np.rint(np.clip(y, 0, 1) * 255).astype(np.uint8)


@pytest.mark.parametrize("kind", sorted(COMMUNITY))
def test_an_imported_community_upscaler_runs_as_spandrel_runs_it(tmp_path, kind):
    _builder, arch, scale = COMMUNITY[kind]
    path = write_community_model(tmp_path / "downloads", kind, wrap="params_ema")
    spec = imported.import_model(path, name=f"my-{kind}")
    assert (spec.kind, spec.arch, spec.scale, specs.purpose_of(spec)) == (
        "spandrel",
        arch,
        scale,
        "upscale",
    )
    assert spec.origin == str(path) and spec.filename == f"my-{kind}.safetensors"
    assert (fetch.model_dir() / spec.filename).is_file()
    assert f"my-{kind}" in specs.names(purpose="upscale")
    assert specs.get_spec(f"my-{kind}") == spec  # read back from the model dir's registry

    pixels = np.random.default_rng(1).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    ctx = OpContext(name="x.png", pool=ModelPool())
    out = upscale_pixels(pixels, ctx, model=f"my-{kind}", pre_pad=0)
    assert out.shape == (20 * scale, 24 * scale, 3) and out.dtype == np.uint8
    expected = _direct(path, pixels)
    # Same network, same input: at most one 8-bit level apart (float summation order).
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1


def test_an_imported_upscaler_keeps_16_bit_and_tiles(tmp_path):
    path = write_community_model(tmp_path, "esrgan")
    imported.import_model(path, name="e16")
    pixels = np.random.default_rng(2).integers(0, 65536, (40, 36, 3), dtype=np.uint16)
    ctx = OpContext(name="x.tif", pool=ModelPool())
    whole = upscale_pixels(pixels, ctx, model="e16")
    tiled = upscale_pixels(pixels, ctx, model="e16", tile=32, tile_pad=8)
    assert whole.dtype == np.uint16 and whole.shape == (160, 144, 3)
    assert ctx.counters["forward_passes"] > 2  # the tiled call ran several passes
    # Tiles overlap and are blended: inside, the same as the whole image within 1%.
    assert np.abs(whole.astype(int) - tiled.astype(int)).mean() < 0.01 * 65535


def test_import_refuses_a_taken_name_unless_forced_and_remove_forgets(tmp_path):
    path = write_community_model(tmp_path, "span")
    imported.import_model(path, name="mine")
    with pytest.raises(ModelError, match="already imported"):
        imported.import_model(path, name="mine")
    imported.import_model(path, name="mine", force=True)
    with pytest.raises(ModelError, match="shipped model"):
        imported.import_model(path, name="realesrgan-x4plus")
    with pytest.raises(ModelError, match="model name 'Bad Name!'"):
        imported.import_model(path, name="Bad Name!")
    assert imported.remove("mine") and not imported.remove("mine")
    assert "mine" not in specs.names()
    assert not (fetch.model_dir() / "mine.safetensors").exists()


# --- bad files: each a clear error naming the file, nothing registered ------------------


def test_a_file_of_an_unknown_architecture_is_refused_naming_it(tmp_path):
    path = tmp_path / "mystery.pth"
    torch.save({"encoder.weight": torch.zeros(3, 3), "decoder.bias": torch.zeros(3)}, path)
    with pytest.raises(ModelError) as err:
        imported.import_model(path)
    assert str(path) in str(err.value) and "unknown architecture" in str(err.value)
    assert "encoder.weight" in str(err.value)
    assert specs.names(kind="spandrel") == []


def test_a_truncated_or_empty_file_is_refused_naming_it(tmp_path):
    path = write_community_model(tmp_path, "esrgan")
    cut = tmp_path / "cut.pth"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(
        ModelError, match=r"cut\.pth: not a readable weight file \(truncated or corrupted"
    ):
        imported.import_model(cut)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(ModelError, match=r"empty\.safetensors: the file is empty"):
        imported.import_model(empty)
    with pytest.raises(ModelError, match="no such file"):
        imported.import_model(tmp_path / "absent.pth")


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def test_a_pickle_that_would_run_code_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "ran.txt"
    path = tmp_path / "evil.pth"
    torch.save({"conv.weight": torch.zeros(1), "payload": _RunsCode(marker)}, path)
    with pytest.raises(UnsafeWeightsError) as err:
        imported.import_model(path)
    assert str(path) in str(err.value) and "builtins.exec" in str(err.value)
    assert not marker.exists()


class DictConfig:
    """Stands for omegaconf's class (not installed here) in a saved checkpoint."""

    def __init__(self, content):
        self.content = content


DictConfig.__module__ = "omegaconf.dictconfig"
DictConfig.__qualname__ = "DictConfig"


def test_a_training_checkpoint_with_config_objects_reads_its_tensors_only(tmp_path, monkeypatch):
    """A Lightning checkpoint also holds its configuration as objects of its libraries
    (omegaconf here): they are read as inert placeholders, the weights come through."""
    fake = types.ModuleType("omegaconf.dictconfig")
    fake.DictConfig = DictConfig
    monkeypatch.setitem(sys.modules, "omegaconf", types.ModuleType("omegaconf"))
    monkeypatch.setitem(sys.modules, "omegaconf.dictconfig", fake)
    builder, _arch, _scale = COMMUNITY["span"]
    state = builder().state_dict()
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": state, "epoch": 3, "hyper_parameters": DictConfig({"lr": 1})}, path)
    monkeypatch.delitem(sys.modules, "omegaconf.dictconfig")
    monkeypatch.delitem(sys.modules, "omegaconf")
    with pytest.raises(pickle.UnpicklingError):  # what weights_only alone says
        torch.load(path, weights_only=True)
    got = read_state_dict(path)
    assert set(got) == set(state) and all(torch.equal(got[k], state[k]) for k in state)


def test_a_file_whose_scale_disagrees_with_the_shipped_entry_is_refused(tmp_path):
    path = write_community_model(tmp_path, "span")  # x2
    with pytest.raises(ModelError) as err:
        imported.import_into_shipped(specs.get_spec("realesrgan-x4plus"), path, force=True)
    assert "x2" in str(err.value) and "x4" in str(err.value) and str(path) in str(err.value)
    assert not (fetch.model_dir() / "RealESRGAN_x4plus.pth").exists()


def test_another_file_under_a_shipped_name_still_needs_force(tmp_path):
    path = write_community_model(tmp_path, "esrgan")  # x4, but not the official file
    spec = specs.get_spec("realesrgan-x2plus")
    with pytest.raises(ModelError):  # x4 file for an x2 entry
        imported.import_into_shipped(spec, path)
    spec4 = specs.get_spec("realesrgan-x4plus")
    x4 = write_community_model(tmp_path / "x4", "esrgan")
    with pytest.raises(ModelChecksumError):  # same scale, but not the official file
        imported.import_into_shipped(spec4, x4)
    assert imported.import_into_shipped(spec4, x4, force=True).read_bytes() == x4.read_bytes()


def test_noncommercial_architectures_need_the_opt_in():
    try:
        import spandrel_extra_arches  # noqa: F401
    except ImportError:
        with pytest.raises(ModelError, match="pip install spandrel_extra_arches"):
            get_family("spandrel").describe({}, allow_noncommercial=True)
    else:  # pragma: no cover - not installed here
        pytest.skip("spandrel_extra_arches is installed")


# --- faces: an imported face network runs in restore_faces --------------------------------


def test_an_imported_gfpgan_file_restores_faces_as_the_official_path_does(tmp_path, retouch_home):
    """The same random GFPGAN v1.4 weights, once as the shipped gfpgan-v1.4 (GFPGANer) and
    once imported as a community file (spandrel): the same restored image within 1 level."""
    from retouch.lib.image import Image
    from retouch.lib.models.compat import ensure_compat
    from retouch.lib.ops.restore_faces import RestoreFaces, RestoreFacesParams
    from tests.tiny_models import write_parsenet, write_retinaface

    ensure_compat()  # basicsr (under gfpgan) needs the torchvision shim
    from bench.models import gfpgan_v14

    folder = fetch.model_dir()
    write_retinaface(folder, faces="one")
    write_parsenet(folder)
    torch.manual_seed(3)
    path = tmp_path / "GFPGANv1.4-copy.pth"
    torch.save(gfpgan_v14(), path)
    imported.import_into_shipped(specs.get_spec("gfpgan-v1.4"), path, force=True)
    spec = imported.import_model(path, name="my-faces")
    assert (spec.kind, spec.arch, specs.purpose_of(spec)) == ("spandrel", "GFPGAN", "face")
    assert spec.needs == ("retinaface-resnet50", "parsenet")  # checked before a run starts
    assert "my-faces" in RestoreFacesParams.model_json_schema()["properties"]["model"]["enum"]

    rng = np.random.default_rng(4)
    pixels = rng.integers(60, 200, (96, 96, 3), dtype=np.uint8)
    image = Image(pixels=pixels)
    op = RestoreFaces()
    outs = {}
    for name in ("gfpgan-v1.4", "my-faces"):
        ctx = OpContext(name="face.png", pool=ModelPool())
        params = RestoreFacesParams(model=name, only_center_face=True)
        outs[name] = op(image, params, ctx).pixels
        assert ctx.counters["faces"] == 1
    assert not np.array_equal(outs["gfpgan-v1.4"], pixels)  # a face was pasted
    diff = np.abs(outs["gfpgan-v1.4"].astype(int) - outs["my-faces"].astype(int))
    assert diff.max() <= 1, diff.max()
