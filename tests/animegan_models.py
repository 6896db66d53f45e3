"""Random-weight AnimeGANv2 generators (the released architecture, ~2.1M parameters) and the
files they come in, for tests and benchmarks. No download: the weights are random."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch


@functools.cache
def _network(seed: int, align_corners: bool) -> Any:
    from retouch.lib.models.families.animegan import _build

    torch.manual_seed(seed)
    return _build(align_corners).eval()


def state(seed: int = 0) -> dict[str, torch.Tensor]:
    """The generator's state dict, as the port's released ``*.pt`` files hold it."""
    return {k: v.clone() for k, v in _network(seed, True).generator.state_dict().items()}


def save(path: Path, seed: int = 0) -> Path:
    """A released-style file: ``torch.save`` of the bare state dict."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state(seed), path)
    return path


def install(model_dir: Path, name: str = "animeganv2-paprika", seed: int = 0) -> Path:
    """Put a random file where the shipped model ``name`` is looked for."""
    from retouch.lib.models.specs import get_spec

    return save(model_dir / get_spec(name).filename, seed)


def reference_loop(rgb: np.ndarray, seed: int = 0, *, align_corners: bool) -> np.ndarray:
    """The port's own inference on one image, as its ``test.py`` writes it: RGB uint8 ->
    ``/127.5 - 1`` -> generator -> ``(out + 1) * 127.5``, clipped, cast to uint8. Sides must
    be multiples of 4 (the script does not pad)."""
    net = _network(seed, True).generator
    x = torch.from_numpy(rgb.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
    with torch.no_grad():
        # The generator's upsampling mode is fixed when it is built; rebuild for the other.
        if not align_corners:
            other = _network(seed, False).generator
            other.load_state_dict(net.state_dict())
            net = other
        out = net(x)[0].permute(1, 2, 0).numpy()
    return np.clip((out + 1) * 127.5, 0, 255).astype(np.uint8)
