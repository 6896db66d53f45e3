"""Community model files of several architectures, built with random weights, as a user
would download them (a ``.pth`` state dict, or ``params_ema`` inside a training save)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def _esrgan() -> Any:
    from spandrel.architectures.ESRGAN import ESRGAN

    return ESRGAN(in_nc=3, out_nc=3, num_filters=16, num_blocks=2, scale=4)


def _span() -> Any:
    from spandrel.architectures.SPAN import SPAN

    return SPAN(num_in_ch=3, num_out_ch=3, feature_channels=16, upscale=2)


def _swinir() -> Any:
    from spandrel.architectures.SwinIR import SwinIR

    return SwinIR(
        upscale=2,
        img_size=32,
        window_size=8,
        embed_dim=24,
        depths=[2],
        num_heads=[2],
        upsampler="pixelshuffledirect",
    )


def _omnisr() -> Any:
    from spandrel.architectures.OmniSR import OmniSR

    return OmniSR(num_feat=16, up_scale=2)


# name -> (builder, spandrel architecture id, scale)
COMMUNITY: dict[str, tuple[Callable[[], Any], str, int]] = {
    "esrgan": (_esrgan, "ESRGAN", 4),
    "span": (_span, "SPAN", 2),
    "swinir": (_swinir, "SwinIR", 2),
    "omnisr": (_omnisr, "OmniSR", 2),
}


def write_community_model(
    folder: Path, kind: str, *, seed: int = 0, wrap: str | None = None
) -> Path:
    """A random-weight ``kind`` model saved as ``folder/<kind>.pth`` (inside ``{wrap: ...}``
    when ``wrap`` is given, as training code saves ``params_ema``)."""
    builder, _arch, _scale = COMMUNITY[kind]
    torch.manual_seed(seed)
    net = builder()
    state = net.state_dict()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{kind}.pth"
    torch.save({wrap: state} if wrap else state, path)
    return path
