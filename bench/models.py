"""Full-size random-weight models, installed through retouch's own import path.

The official weights cannot be downloaded here, but compute cost depends only on the
architecture, so the bench builds the real networks (Real-ESRGAN x4plus: RRDBNet with 23
blocks; GFPGAN v1.4: the 76M-parameter clean architecture; RetinaFace-resnet50; ParseNet;
big-lama: spandrel's LaMa, 51M parameters, as the tests build it; AnimeGANv2 Paprika: the
port's generator, 2.1M parameters, as ``paprika.pt`` holds it)
with torch's random initialisation, saves them as the official files are saved and imports
them with ``retouch.lib.models.fetch.import_file(..., force=True)`` (what
``retouch models import NAME FILE --force`` does). Both the baseline and retouch then load
the very same files from the bench's model dir.

A randomly initialised RetinaFace reports about 130 overlapping "faces" in any picture, so
its output heads are set by hand to report one large face with a plausible 5-point landmark
layout (the same idea as the test suite's ``faces="one"`` detector): the face model then
runs once per image, as on a portrait.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any

import torch

# Normalised 5-point layout (eyes, nose, mouth corners) relative to the prior box, divided by
# RetinaFace's landmark variance (0.1).
_LANDMARK_OFFSETS = [-2.0, -1.5, 2.0, -1.5, 0.0, 0.3, -1.6, 1.8, 1.6, 1.8]

UPSCALE_MODEL = "realesrgan-x4plus"
FACE_MODEL = "gfpgan-v1.4"
INPAINT_MODEL = "big-lama"
RESTYLE_MODEL = "animeganv2-paprika"


def _realesrgan_x4plus() -> dict[str, Any]:
    from retouch.lib.models.loaders import build_sr_network
    from retouch.lib.models.specs import get_spec

    net = build_sr_network(get_spec(UPSCALE_MODEL))
    return {"params_ema": net.state_dict()}


def gfpgan_v14() -> dict[str, Any]:
    """A random GFPGAN v1.4 (the clean architecture, 76M parameters) as the official file holds it."""
    from gfpgan.archs.gfpganv1_clean_arch import GFPGANv1Clean

    # The constructor GFPGANer uses for arch="clean", channel_multiplier=2.
    net = GFPGANv1Clean(
        out_size=512,
        num_style_feat=512,
        channel_multiplier=2,
        decoder_load_path=None,
        fix_decoder=False,
        num_mlp=8,
        input_is_latent=True,
        different_w=True,
        narrow=1,
        sft_half=True,
    )
    return {"params_ema": net.state_dict()}


def _retinaface_one_face() -> dict[str, Any]:
    from facexlib.detection.retinaface import RetinaFace

    with warnings.catch_warnings():
        # facexlib builds its resnet50 with torchvision's deprecated `pretrained=` argument.
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
        net = RetinaFace(network_name="resnet50", half=False, device=torch.device("cpu"))
    with torch.no_grad():
        for level in range(3):
            # Class channels: [anchor0 bg, anchor0 face, anchor1 bg, anchor1 face]; only the
            # first anchor of the coarsest level says "face", so NMS keeps one large face.
            says_face = level == 2
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


def _parsenet() -> dict[str, Any]:
    from facexlib.parsing.parsenet import ParseNet

    return ParseNet(in_size=512, out_size=512, parsing_ch=19).state_dict()


def _big_lama() -> dict[str, Any]:
    # The tests' random big-lama: torch's default initialisation makes LaMa's activations
    # denormal (about 15x slower on CPU than a trained model's), see tests/lama_models.py.
    from tests.lama_models import lama_state

    return lama_state()


def _animeganv2_paprika() -> dict[str, Any]:
    """A random AnimeGANv2 generator as the port's released ``paprika.pt`` holds it: the bare
    generator's state dict (no wrapper, no prefix). The upsampling mode is not a weight."""
    from retouch.lib.models.families.animegan import _build

    return _build(align_corners=False).generator.state_dict()


_BUILDERS = {
    UPSCALE_MODEL: _realesrgan_x4plus,
    INPAINT_MODEL: _big_lama,
    RESTYLE_MODEL: _animeganv2_paprika,
    FACE_MODEL: gfpgan_v14,
    "retinaface-resnet50": _retinaface_one_face,
    "parsenet": _parsenet,
}


def install(model_dir: Path, staging: Path, names: list[str], seed: int = 0) -> dict[str, Any]:
    """Build, save and import each model in ``names`` into ``model_dir``.

    ``RETOUCH_MODEL_DIR`` is pointed at ``model_dir`` for this process (settings re-read).
    Returns, per name, the installed path, its size and the build/import seconds.
    """
    from retouch.lib.models import compat, fetch
    from retouch.lib.models.specs import get_spec
    from retouch.lib.settings import reload_settings

    os.environ["RETOUCH_MODEL_DIR"] = str(model_dir)
    reload_settings()
    compat.ensure_compat()
    staging.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {}
    for i, name in enumerate(names):
        started = time.perf_counter()
        torch.manual_seed(seed + i)
        spec = get_spec(name)
        src = staging / spec.filename
        torch.save(_BUILDERS[name](), src)
        built = time.perf_counter()
        if spec.kind == "lama":  # a generator state dict, as `retouch models import big-lama F`
            from retouch.lib.models.imported import import_into_shipped

            dest = import_into_shipped(spec, src)
        else:
            dest = fetch.import_file(name, src, force=True)
        src.unlink()
        info[name] = {
            "path": str(dest),
            "bytes": dest.stat().st_size,
            "official_bytes": spec.size,
            "build_s": round(built - started, 2),
            "import_s": round(time.perf_counter() - built, 2),
        }
    return info


def needed(cases: list[str]) -> list[str]:
    """The models the selected cases use."""
    names: list[str] = []
    if any(c in cases for c in ("upscale", "coldstart")):
        names.append(UPSCALE_MODEL)
    if "faces" in cases:
        names += [FACE_MODEL, "retinaface-resnet50", "parsenet"]
    if "inpaint" in cases:
        names.append(INPAINT_MODEL)
    if "restyle" in cases:
        names.append(RESTYLE_MODEL)
    return names
