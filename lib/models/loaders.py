"""Building the runnable helpers (``RealESRGANer``, ``GFPGANer``) from registry specs.

The network is built from the spec's ``arch`` and ``arch_kwargs`` (models are data), the weight
file comes from :func:`retouch.lib.models.fetch.resolve`, and everything imports through
:mod:`retouch.lib.models.compat`. Nothing here caches: the pool does.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from retouch.lib.errors import ModelError, UnknownNameError
from retouch.lib.models.compat import ensure_compat
from retouch.lib.models.device import device_for, use_half, wants_channels_last
from retouch.lib.models.fetch import resolve
from retouch.lib.models.specs import ModelSpec, get_spec, names

__all__ = [
    "build_sr_network",
    "device_for",
    "load_gfpganer",
    "load_realesrganer",
    "use_half",
    "wants_channels_last",
]


def _rrdbnet(**kwargs: Any) -> nn.Module:
    from basicsr.archs.rrdbnet_arch import RRDBNet

    return RRDBNet(**kwargs)


def _srvgg(**kwargs: Any) -> nn.Module:
    from realesrgan.archs.srvgg_arch import SRVGGNetCompact

    return SRVGGNetCompact(**kwargs)


_SR_ARCHS: dict[str, Callable[..., nn.Module]] = {"RRDBNet": _rrdbnet, "SRVGGNetCompact": _srvgg}
# GFPGANer's own name for each face architecture it can build.
_FACE_ARCHS: dict[str, str] = {"GFPGANv1Clean": "clean", "RestoreFormer": "RestoreFormer"}


def _spec_of_kind(name: str, kind: str, what: str) -> ModelSpec:
    spec = get_spec(name)
    if spec.kind != kind:
        raise UnknownNameError(what, name, names(kind))  # type: ignore[arg-type]
    return spec


class _NoRandomFill(TorchFunctionMode):
    """While active (in the thread that entered it), random fills are zero fills (a memset):
    the in-place ``normal_``/``uniform_`` and the ``torch.nn.init`` functions that hand
    themselves to torch-function modes (the layers' own ``reset_parameters``)."""

    SKIPPED = frozenset(
        {
            torch.Tensor.normal_,
            torch.Tensor.uniform_,
            nn.init.normal_,
            nn.init.uniform_,
            nn.init.kaiming_uniform_,
        }
    )

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        if func in self.SKIPPED:
            tensor = args[0] if args else kwargs.get("tensor", kwargs.get("self"))
            if isinstance(tensor, torch.Tensor):
                with torch.no_grad():  # zeros, not whatever the allocator handed out
                    return tensor.zero_()
        return func(*args, **kwargs)


def skip_random_init() -> TorchFunctionMode:
    """Context manager: networks built inside it start zero-filled instead of randomly
    initialised, for a caller that loads every parameter next, strictly (spandrel's loaders
    do). Saves the random initialisation, 0.2-0.5 s for a 50M-parameter network on a CPU."""
    return _NoRandomFill()


def build_sr_network(spec: ModelSpec, *, empty: bool = False) -> nn.Module:
    """The (untrained) super-resolution network described by ``spec``.

    ``empty``: its parameters are zero-filled instead of random, for a caller that loads every
    parameter next (strictly). That skips the random initialisation, about 0.5 s for RRDBNet
    x4 on a CPU core, which a weight load overwrites anyway (0.08 s to build it here).
    Building on the meta device would skip it too, but torch runs meta ``normal_`` and
    ``empty_like`` through its Python reference kernels, which import ``torch._dynamo``: 1.4 s.
    """
    ensure_compat()
    try:
        builder = _SR_ARCHS[spec.arch]
    except KeyError:
        raise ModelError(f"model {spec.name!r}: unsupported architecture {spec.arch!r}") from None
    if not empty:
        return builder(**dict(spec.arch_kwargs))
    with _NoRandomFill():
        return builder(**dict(spec.arch_kwargs))


def _state_dict(path: str) -> dict[str, torch.Tensor]:
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("params_ema", "params"):
        if isinstance(loaded, dict) and key in loaded:
            return loaded[key]
    return loaded


def load_realesrganer(
    name: str,
    *,
    device: str = "cpu",
    tile: int = 0,
    tile_pad: int = 10,
    pre_pad: int = 10,
    half: bool | None = None,
    denoise_strength: float | None = None,
) -> Any:
    """A ``realesrgan.RealESRGANer`` for registry name ``name`` on ``device``.

    Its ``model`` (the network) is what :mod:`retouch.lib.models.tiling` runs; on CPU the
    weights are stored channels-last (:func:`wants_channels_last`).

    ``denoise_strength`` (0..1) only applies to models with a ``dni_partner``
    (realesr-general-x4v3): below 1 the weights are interpolated as
    ``s * normal + (1 - s) * weak_denoise``, as the upstream command line does.
    Raises UnknownNameError for a non-upscaling name, ModelError for a denoise strength on a
    model without a partner, and whatever :func:`resolve` raises.
    """
    ensure_compat()
    from realesrgan import RealESRGANer

    spec = _spec_of_kind(name, "realesrgan", "upscaling model")
    net = build_sr_network(spec, empty=True)  # RealESRGANer loads every weight, strictly
    path = str(resolve(name))
    dni_state = None
    if denoise_strength is not None and denoise_strength < 1:
        if spec.dni_partner is None:
            raise ModelError(
                f"model {name!r} has no denoise-strength control; leave denoise_strength unset"
            )
        s = float(denoise_strength)
        partner = str(resolve(spec.dni_partner))
        normal, weak = _state_dict(path), _state_dict(partner)
        dni_state = {k: s * v + (1 - s) * weak[k] for k, v in normal.items()}
    upsampler = RealESRGANer(
        scale=spec.scale,
        model_path=path,
        model=net,
        tile=tile,
        tile_pad=tile_pad,
        pre_pad=pre_pad,
        half=use_half(device, half),
        device=torch.device(device),
    )
    if dni_state is not None:
        # RealESRGANer's own dni() only reads the "params" key; ours reads either.
        upsampler.model.load_state_dict(dni_state, strict=True)
        if upsampler.half:
            upsampler.model.half()
    if wants_channels_last(device):
        upsampler.model = upsampler.model.to(memory_format=torch.channels_last)
    return upsampler


def load_face_helper(*, device: str = "cpu", upscale: int = 1) -> Any:
    """facexlib's ``FaceRestoreHelper`` (detection, alignment, parsing, paste-back) built the
    way ``GFPGANer`` builds it, with its detector and parser weights resolved through
    :func:`resolve` first: for face networks that are not run by GFPGANer."""
    ensure_compat()
    from facexlib.utils.face_restoration_helper import FaceRestoreHelper

    from retouch.lib.models.specs import SPECS

    for helper in ("retinaface-resnet50", "parsenet"):
        if helper in SPECS:
            resolve(helper)
    with warnings.catch_warnings(), _NoRandomFill():
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
        helper = FaceRestoreHelper(
            upscale,
            face_size=512,
            crop_ratio=(1, 1),
            det_model="retinaface_resnet50",
            save_ext="png",
            use_parse=True,
            device=torch.device(device),
            model_rootpath=str(resolve("retinaface-resnet50").parent),
        )
    return _helpers_channels_last(helper, device)


def _helpers_channels_last(helper: Any, device: str) -> Any:
    """The face detector's and parser's weights channels-last where that is faster
    (:func:`wants_channels_last`): their convolutions then run channels-last on the inputs
    facexlib gives them. On this project's 2-core AMD EPYC: the parser 3.9-4.2 s -> 3.3 s per
    512x512 face, the detector 1.36-1.47 s -> 1.0-1.08 s on a 1024x768 photo (random weights;
    outputs within 4e-5). GFPGAN's own network stays as it is (its reshapes need contiguous
    activations)."""
    if wants_channels_last(device):
        for name in ("face_det", "face_parse"):
            net = getattr(helper, name, None)
            if isinstance(net, nn.Module):
                net.to(memory_format=torch.channels_last)
    return helper


class _FixedNoise(nn.Module):
    """Wraps a face network so every call uses the stored noise buffers instead of fresh
    random noise (``randomize_noise=False``): the same input gives the same output."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("randomize_noise", False)
        return self.inner(x, *args, **kwargs)


def load_gfpganer(
    name: str, *, device: str = "cpu", upscale: int = 1, bg_upsampler: Any = None
) -> Any:
    """A ``gfpgan.GFPGANer`` for registry name ``name`` (gfpgan-v1.3/1.4, restoreformer).

    The face detector and parser weights (retinaface-resnet50, parsenet) are resolved first
    through :func:`resolve`, and facexlib's own downloader is redirected to the same place, so
    nothing is written to the current directory. The face network is wrapped so its noise is
    fixed (deterministic output). Runs fp32 (GFPGANer has no half mode).
    """
    ensure_compat()
    from gfpgan import utils as gfpgan_utils

    spec = _spec_of_kind(name, "gfpgan", "face restoration model")
    for helper in spec.needs:
        resolve(helper)
    try:
        arch = _FACE_ARCHS[spec.arch]
    except KeyError:
        raise ModelError(f"model {name!r}: unsupported architecture {spec.arch!r}") from None
    path = str(resolve(name))
    # The face network, detector and parser each load every weight, strictly, once built:
    # their random initialisation (0.6 s on a CPU here) is skipped.
    with warnings.catch_warnings(), _NoRandomFill():
        # facexlib builds its resnet50 with torchvision's deprecated `pretrained=` argument.
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
        restorer = gfpgan_utils.GFPGANer(
            model_path=path,
            upscale=upscale,
            arch=arch,
            channel_multiplier=2,
            bg_upsampler=bg_upsampler,
            device=torch.device(device),
        )
    restorer.gfpgan = _FixedNoise(restorer.gfpgan).eval()
    _helpers_channels_last(restorer.face_helper, device)
    return restorer
