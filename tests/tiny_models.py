"""Tiny random-weight model files for tests, loaded through retouch's real code paths.

The registry describes the real (large) networks. Tests swap in tiny architecture kwargs with
:func:`use_tiny_specs` (an explicit, test-only ``monkeypatch.setitem`` on ``specs.SPECS``), write
random weights of that tiny shape into a model dir, and everything else is the real path:
registry -> fetch.resolve -> pool -> loaders -> RealESRGANer / GFPGANer.

GFPGANer hard-codes its 76M-parameter network, so :func:`patch_tiny_face_nets` replaces the
classes it instantiates (``gfpgan.utils.GFPGANv1Clean`` and
``RestoreFormer``) with small versions (output still 512x512).
The face detector (RetinaFace resnet50) and parser (ParseNet) have no knobs, so they are
full-size random networks; they are generated once per process and hard-linked.

Plain random RetinaFace weights report about 130 overlapping "faces" in a 64x64 noise image
(measured), each costing a ParseNet pass of seconds, so tests use hand-set detector heads:
``faces="none"`` reports nothing, ``faces="one"`` writes a detector whose heads are set by hand so it reports a face at every
position of its coarsest level with a plausible 5-point landmark layout; NMS then keeps one
(large) face on a small image. That exercises alignment, the face network and paste-back,
not detection quality.
"""

from __future__ import annotations

import atexit
import dataclasses
import inspect
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch

from retouch.lib.models import compat, fetch, specs
from retouch.lib.settings import reload_settings

compat.ensure_compat()
# The real classes, captured before any test patches the names GFPGANer looks up.
from gfpgan.archs.gfpganv1_clean_arch import GFPGANv1Clean  # noqa: E402
from gfpgan.archs.restoreformer_arch import RestoreFormer  # noqa: E402

TINY_RRDB = {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 8, "num_block": 1, "num_grow_ch": 32}
TINY_COMPACT = {
    "num_in_ch": 3,
    "num_out_ch": 3,
    "num_feat": 8,
    "num_conv": 2,
    "upscale": 4,
    "act_type": "prelu",
}

_CACHE_DIR: Path | None = None


def _cache_dir() -> Path:
    global _CACHE_DIR
    if _CACHE_DIR is None:
        _CACHE_DIR = Path(tempfile.mkdtemp(prefix="retouch-tiny-models-"))
        atexit.register(_remove_cache_dir, _CACHE_DIR, os.getpid())
    return _CACHE_DIR


def _remove_cache_dir(path: Path, owner: int) -> None:
    """The session's model files (~300 MB) go with the process that made them; a forked child
    that exits through atexit leaves its parent's files alone."""
    if os.getpid() == owner:
        shutil.rmtree(path, ignore_errors=True)


def tiny_arch_kwargs(spec: specs.ModelSpec) -> dict[str, Any]:
    """Tiny constructor kwargs for a super-resolution spec (same arch, same scale)."""
    if spec.arch == "RRDBNet":
        return {**TINY_RRDB, "scale": spec.scale}
    if spec.arch == "SRVGGNetCompact":
        return {**TINY_COMPACT, "upscale": spec.scale}
    raise ValueError(f"no tiny kwargs for {spec.arch}")


def use_tiny_specs(monkeypatch: Any) -> None:
    """Test-only: every SR spec gets tiny arch kwargs; every spec forgets its size/sha256
    (random files cannot match the official ones). Undone by monkeypatch at teardown."""
    for name, spec in list(specs.SPECS.items()):
        changes: dict[str, Any] = {"size": None, "sha256": None}
        if spec.kind == "realesrgan":
            changes["arch_kwargs"] = tiny_arch_kwargs(spec)
        monkeypatch.setitem(specs.SPECS, name, dataclasses.replace(spec, **changes))


def _seeded(seed: int) -> None:
    torch.manual_seed(seed)


def write_tiny_sr(model_dir: Path, name: str, seed: int = 0) -> Path:
    """Random tiny weights for SR model ``name`` saved as ``{'params_ema': state_dict}``."""
    from retouch.lib.models.loaders import build_sr_network

    spec = specs.get_spec(name)
    _seeded(seed)
    net = build_sr_network(dataclasses.replace(spec, arch_kwargs=tiny_arch_kwargs(spec)))
    path = Path(model_dir) / spec.filename
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params_ema": net.state_dict()}, path)
    return path


def tiny_gfpgan_clean(**_ignored: Any) -> torch.nn.Module:
    """Stand-in for GFPGANv1Clean(...) as GFPGANer calls it: same class, tiny widths."""
    return GFPGANv1Clean(
        out_size=512,
        num_style_feat=32,
        channel_multiplier=1,
        decoder_load_path=None,
        fix_decoder=False,
        num_mlp=1,
        input_is_latent=True,
        different_w=True,
        narrow=1 / 16,
        sft_half=True,
    )


TINY_RESTOREFORMER = {
    "n_embed": 16,
    "embed_dim": 32,
    "ch": 32,
    "ch_mult": (1, 1, 1, 1, 1, 1),
    "num_res_blocks": 1,
    "z_channels": 32,
    "head_size": 1,
}


def tiny_restoreformer(**_ignored: Any) -> torch.nn.Module:
    """A RestoreFormer with tiny widths (output still 512x512)."""
    return RestoreFormer(**TINY_RESTOREFORMER)


def _tiny_restoreformer_defaults() -> tuple[Any, ...]:
    sig = inspect.signature(RestoreFormer.__init__)
    params = [p for p in sig.parameters.values() if p.default is not inspect.Parameter.empty]
    return tuple(TINY_RESTOREFORMER.get(p.name, p.default) for p in params)


_FACE_FACTORIES = {"GFPGANv1Clean": tiny_gfpgan_clean, "RestoreFormer": tiny_restoreformer}


def patch_tiny_face_nets(monkeypatch: Any) -> None:
    """Make GFPGANer build the tiny face networks instead of the full-size ones.

    GFPGANv1Clean is looked up in ``gfpgan.utils`` and replaced there. GFPGANer builds
    ``RestoreFormer()`` with no arguments, and the class refers to its own module-level name
    (``super(RestoreFormer, self)``), so there the constructor's defaults are swapped instead.
    """
    import gfpgan.utils as gfpgan_utils

    monkeypatch.setattr(gfpgan_utils, "GFPGANv1Clean", tiny_gfpgan_clean)
    monkeypatch.setattr(RestoreFormer.__init__, "__defaults__", _tiny_restoreformer_defaults())


def write_tiny_face(model_dir: Path, name: str, seed: int = 0) -> Path:
    """Random tiny weights for face model ``name`` (gfpgan-v1.x or restoreformer)."""
    spec = specs.get_spec(name)
    _seeded(seed)
    net = _FACE_FACTORIES[spec.arch]()
    with torch.no_grad():
        for pname, param in net.named_parameters():
            # StyleGAN2 noise-injection strengths start at 0, which would hide whether the
            # noise is random or fixed; give them weight so determinism is actually tested.
            if pname.endswith(".weight") and tuple(param.shape) == (1,):
                param.fill_(0.5)
    path = Path(model_dir) / spec.filename
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params_ema": net.state_dict()}, path)
    return path


# Normalised 5-point layout (eyes, nose, mouth corners) relative to the prior box, divided by
# RetinaFace's landmark variance (0.1): what the landmark head must output for a plausible face.
_LANDMARK_OFFSETS = [-2.0, -1.5, 2.0, -1.5, 0.0, 0.3, -1.6, 1.8, 1.6, 1.8]


def _retinaface_state_dict(faces: str, seed: int) -> dict[str, torch.Tensor]:
    from facexlib.detection.retinaface import RetinaFace

    _seeded(seed)
    net = RetinaFace(network_name="resnet50", half=False, device=torch.device("cpu"))
    if faces != "random":
        with torch.no_grad():
            for level in range(3):
                # Class channels: [anchor0 bg, anchor0 face, anchor1 bg, anchor1 face]. With
                # faces="one" only the first (smaller) anchor of the coarsest level says "face".
                says_face = faces == "one" and level == 2
                cls = net.ClassHead[level].conv1x1
                cls.weight.zero_()
                cls.bias.copy_(
                    torch.tensor([-8.0, 8.0, 8.0, -8.0] if says_face else [8.0, -8.0, 8.0, -8.0])
                )
                box = net.BboxHead[level].conv1x1
                box.weight.zero_()
                box.bias.zero_()
                lm = net.LandmarkHead[level].conv1x1
                lm.weight.zero_()
                lm.bias.copy_(torch.tensor(_LANDMARK_OFFSETS * 2))
    return net.state_dict()


def _cached_file(key: str, build: Any) -> Path:
    path = _cache_dir() / key
    if not path.exists():
        torch.save(build(), path)
    return path


def _link_into(src: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        dest.unlink()
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)
    return dest


def write_retinaface(model_dir: Path, faces: str = "one") -> Path:
    """A full-size RetinaFace-resnet50 state dict.

    ``faces``: "random" (plain random init: finds about a hundred "faces" in noise, too slow
    for tests), "none" (reports no face anywhere) or "one" (one large face; see the module doc).
    """
    if faces not in ("random", "none", "one"):
        raise ValueError(f"faces must be random, none or one, not {faces!r}")
    src = _cached_file(f"retinaface-{faces}.pth", lambda: _retinaface_state_dict(faces, seed=0))
    return _link_into(src, Path(model_dir) / specs.get_spec("retinaface-resnet50").filename)


def write_parsenet(model_dir: Path) -> Path:
    """A full-size random ParseNet state dict."""

    def build() -> dict[str, torch.Tensor]:
        compat.ensure_compat()
        from facexlib.parsing.parsenet import ParseNet

        _seeded(0)
        return ParseNet(in_size=512, out_size=512, parsing_ch=19).state_dict()

    src = _cached_file("parsenet.pth", build)
    return _link_into(src, Path(model_dir) / specs.get_spec("parsenet").filename)


def _network_forbidden(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError(f"a test tried to download a model: args={args!r}")


def forbid_network(monkeypatch: Any) -> None:
    """Make every downloader we know of raise, so a network attempt fails loudly."""
    compat.ensure_compat()
    import basicsr.utils.download_util as basicsr_dl
    import facexlib.utils.misc as facexlib_misc

    monkeypatch.setattr(basicsr_dl, "download_url_to_file", _network_forbidden)
    monkeypatch.setattr(facexlib_misc, "download_url_to_file", _network_forbidden)
    monkeypatch.setattr(fetch, "_download_url", _network_forbidden)


def point_settings_at(model_dir: Path, monkeypatch: Any, mirror: str | None = None) -> None:
    """RETOUCH_MODEL_DIR = model_dir, no mirror, settings re-read. Callers should call
    ``reload_settings()`` again after monkeypatch is undone."""
    monkeypatch.setenv("RETOUCH_MODEL_DIR", str(model_dir))
    if mirror is None:
        monkeypatch.delenv("RETOUCH_MODEL_MIRROR", raising=False)
    else:
        monkeypatch.setenv("RETOUCH_MODEL_MIRROR", mirror)
    monkeypatch.delenv("RETOUCH_OFFLINE", raising=False)
    reload_settings()


def install_tiny_models(model_dir: Path, monkeypatch: Any, *, faces: str | None = "one") -> Path:
    """Everything a test needs to run the AI operations offline on tiny models.

    Points the settings at ``model_dir``, swaps in tiny specs and face networks, writes tiny
    weights for every SR model (and, unless ``faces`` is None, the face models and a detector
    of that kind, see :func:`write_retinaface`) and makes all downloaders raise. Returns ``model_dir``.
    """
    model_dir = Path(model_dir)
    point_settings_at(model_dir, monkeypatch)
    use_tiny_specs(monkeypatch)
    forbid_network(monkeypatch)
    for i, name in enumerate(specs.names("realesrgan")):
        write_tiny_sr(model_dir, name, seed=i)
    if faces is not None:
        patch_tiny_face_nets(monkeypatch)
        for i, name in enumerate(specs.names("gfpgan")):
            write_tiny_face(model_dir, name, seed=100 + i)
        write_retinaface(model_dir, faces=faces)
        write_parsenet(model_dir)
    return model_dir


@pytest.fixture(name="_seeded", autouse=True)
def seeded_zero(monkeypatch):
    """Seeds 0 for the model tests that import it (``from tiny_models import seeded_zero``):
    their calibrated values were measured with these seeds, not the suite-wide ones; the
    settings are re-read once the test's own environment changes are undone."""
    import random

    import numpy as np

    from retouch.lib.settings import reload_settings

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield
    monkeypatch.undo()
    reload_settings()
