"""Random-weight, full-size LaMa generators (big-lama's architecture, ~51M parameters) and
the files big-lama comes in, for tests and benchmarks. No download: the weights are random.

PyTorch's default initialisation makes LaMa's output a flat 0.5 (and its activations
denormal, which is slow on CPU), so comparisons of fills would pass whatever the code did.
The weights here are drawn with a fan-in scale and the last convolution is scaled so that
the fill varies with the image (values across 0..1), like a trained model's.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import torch


@functools.cache
def lama_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """The generator's state dict (spandrel's names, ``model.model.*``), built once."""
    return {k: v.clone() for k, v in _network(seed).state_dict().items()}


@functools.cache
def _network(seed: int) -> Any:
    from spandrel.architectures.LaMa import LaMa

    gen = torch.Generator().manual_seed(seed)
    net = LaMa(in_nc=4, out_nc=3).eval()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)]
    with torch.no_grad():
        for conv in convs:
            conv.weight.normal_(0, 1.0 / math.sqrt(conv.weight[0].numel()), generator=gen)
        last = convs[-1]
        seen: dict[str, torch.Tensor] = {}
        hook = last.register_forward_hook(lambda _m, _a, out: seen.setdefault("out", out))
        x = torch.rand(1, 3, 64, 64, generator=gen)
        mask = torch.zeros(1, 1, 64, 64)
        mask[..., 16:40, 16:40] = 1
        net.model(x * (1 - mask), mask)
        hook.remove()
        last.weight.mul_(1.5 / float(seen["out"].std()))
        if last.bias is not None:
            last.bias.zero_()
    return net


def descriptor(state: dict[str, torch.Tensor] | None = None) -> Any:
    """spandrel's own descriptor for ``state`` (default :func:`lama_state`), as IOPaint
    and a plain script would load it."""
    from spandrel import ModelLoader

    return ModelLoader().load_from_state_dict(dict(state or lama_state())).eval()


def save_torchscript(path: Path) -> Path:
    """big-lama as the community ``big-lama.pt``: a traced module whose keys are
    ``model.model.*`` (the traced module is spandrel's LaMa, as the community file's)."""
    net = _network(0)
    x = torch.rand(1, 3, 32, 32)
    mask = torch.zeros(1, 1, 32, 32)
    with torch.no_grad():
        traced = torch.jit.trace(net, (x, mask), check_trace=False)
    traced.save(str(path))
    return path


def save_lightning(path: Path) -> Path:
    """big-lama as the authors' ``best.ckpt``: a Lightning checkpoint whose ``state_dict``
    holds ``generator.model.*``, a discriminator and loss networks, plus the trainer's
    entries."""
    state: dict[str, Any] = {
        "generator." + k.removeprefix("model."): v for k, v in lama_state().items()
    }
    state["discriminator.model0.0.weight"] = torch.randn(64, 3, 4, 4)
    state["discriminator.model0.0.bias"] = torch.zeros(64)
    state["loss_resnet_pl.impl.conv1.weight"] = torch.randn(8, 3, 3, 3)
    ckpt = {
        "epoch": 40,
        "global_step": 123456,
        "pytorch-lightning_version": "1.2.9",
        "state_dict": state,
        "hyper_parameters": {"generator": {"kind": "ffc_resnet", "ngf": 64}, "lr": 0.001},
    }
    torch.save(ckpt, path)
    return path


def save_bare(path: Path) -> Path:
    """A bare generator state dict (``model.model.*``), as torch.save writes it."""
    torch.save(lama_state(), path)
    return path


@functools.cache
def _safetensors_bytes() -> bytes:
    import tempfile

    from retouch.lib.models.weightfile import save_safetensors

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "big-lama.safetensors"
        save_safetensors(lama_state(), out)
        return out.read_bytes()


def install_big_lama(model_dir: Path) -> Path:
    """Put the random big-lama where ``fetch.resolve("big-lama")`` finds it (the converted
    copy ``import_into_shipped`` writes), without converting it again."""
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / "big-lama.safetensors"
    path.write_bytes(_safetensors_bytes())
    return path
