"""The AnimeGANv2 family: feed-forward photo-to-anime / portrait-painting generators.

The network is the generator of AnimeGANv2 as its PyTorch port publishes it (a small
encoder-decoder: two stride-2 stages, four inverted residual blocks, bilinear upsampling
back, about 2.1M parameters). It is written here with the same module tree, so the port's
released files (``celeba_distill.pt``, ``face_paint_512_v1.pt``, ``face_paint_512_v2.pt``,
``paprika.pt``: plain state dicts) load strictly, and a file under another name is
recognised by its keys (``retouch models import FILE``).

``Loaded.network`` takes (N,3,H,W) RGB in 0..1 and returns (N,3,H,W) RGB in 0..1 (the
generator's own range is -1..1; the conversion is part of the module), so the op drives it
with the same tiled runner as the upscalers (scale 1). H and W must be multiples of 4 (two
stride-2 stages); the runner pads and crops back.

The generator normalises with one group over the whole feature map, so the statistics are
those of what it sees at once: an image that fits the memory budget runs whole (the same as
the port's own loop); a larger one runs in blended tiles, each normalised on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from retouch.lib.errors import ModelError
from retouch.lib.models.families import Detected, Family, Loaded, Needs

NEEDS = Needs(min_size=16, multiple_of=4, fp16=True, bf16=False)
LICENSE = (
    "AnimeGANv2 PyTorch port: MIT (architecture and the face_paint/celeba_distill weights); "
    "weights converted from the original AnimeGANv2 (paprika) carry its terms: "
    "non-commercial use, ask its author for commercial use"
)
# Keys only this generator has, together: the 7x7 stem, the first inverted residual block's
# expansion, and the 1x1 output layer.
_DETECT = ("block_a.0.1.weight", "block_c.1.layers.0.1.weight", "out_layer.0.weight")


def _build(align_corners: bool) -> Any:
    """The generator (random weights) wrapped to take and give RGB in 0..1."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    def conv_block(
        cin: int, cout: int, k: int = 3, stride: int = 1, pad: Any = 1, groups: int = 1
    ) -> nn.Sequential:
        # Reflection pad, convolution, one-group norm, leaky ReLU: indices 0..3 as in the
        # released state dicts ("<block>.1.weight" is the convolution, ".2." the norm).
        return nn.Sequential(
            nn.ReflectionPad2d(pad),
            nn.Conv2d(cin, cout, k, stride=stride, padding=0, groups=groups, bias=groups > 1),
            nn.GroupNorm(1, cout, affine=True),
            nn.LeakyReLU(0.2, inplace=True),
        )

    class InvertedResidual(nn.Module):
        def __init__(self, cin: int, cout: int, expand: int = 2) -> None:
            super().__init__()
            mid = cin * expand
            self.residual = cin == cout
            self.layers = nn.Sequential(
                conv_block(cin, mid, k=1, pad=0),
                conv_block(mid, mid, groups=mid),  # depthwise
                nn.Conv2d(mid, cout, 1, bias=False),
                nn.GroupNorm(1, cout, affine=True),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.layers(x)
            return x + y if self.residual else y

    down = (0, 1, 0, 1)  # stride-2 stages pad right and bottom only

    class Generator(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block_a = nn.Sequential(
                conv_block(3, 32, k=7, pad=3), conv_block(32, 64, stride=2, pad=down),
                conv_block(64, 64),
            )  # fmt: skip
            self.block_b = nn.Sequential(
                conv_block(64, 128, stride=2, pad=down), conv_block(128, 128)
            )
            self.block_c = nn.Sequential(
                conv_block(128, 128),
                InvertedResidual(128, 256),
                InvertedResidual(256, 256),
                InvertedResidual(256, 256),
                InvertedResidual(256, 256),
                conv_block(256, 128),
            )
            self.block_d = nn.Sequential(conv_block(128, 128), conv_block(128, 128))
            self.block_e = nn.Sequential(
                conv_block(128, 64), conv_block(64, 64), conv_block(64, 32, k=7, pad=3)
            )
            self.out_layer = nn.Sequential(nn.Conv2d(32, 3, 1, bias=False), nn.Tanh())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            half = self.block_a(x)
            y = self.block_c(self.block_b(half))
            y = self._up(y, half.shape[-2:])
            y = self._up(self.block_d(y), x.shape[-2:])
            return self.out_layer(self.block_e(y))

        @staticmethod
        def _up(y: torch.Tensor, size: Any) -> torch.Tensor:
            if align_corners:
                return F.interpolate(y, size=tuple(size), mode="bilinear", align_corners=True)
            return F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)

    class UnitRange(nn.Module):
        """RGB 0..1 in and out around the generator's -1..1."""

        def __init__(self) -> None:
            super().__init__()
            self.generator = Generator()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.generator(x * 2 - 1).add(1).mul(0.5)

    return UnitRange()


def clean_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """The generator's keys of a file (a ``module.`` prefix from DataParallel dropped)."""
    return {k.removeprefix("module."): v for k, v in state.items()}


class AnimeGANFamily(Family):
    name = "animegan"
    purposes = ("restyle",)
    description = "AnimeGANv2 photo-to-anime and face-paint generators (feed-forward, CPU-fast)"

    def needs(self, spec: Any) -> Needs:
        return NEEDS

    def detect(
        self, state: Mapping[str, Any], *, allow_noncommercial: bool = False
    ) -> Detected | None:
        clean = clean_state(state)
        if not all(k in clean for k in _DETECT):
            return None
        network = self._loaded(clean, "the file", align_corners=True)
        return Detected(
            family=self.name,
            arch="AnimeGANv2",
            purpose="restyle",
            scale=1,
            needs=NEEDS,
            state=clean,
            license=LICENSE,
            params=sum(p.numel() for p in network.parameters()),
        )

    @staticmethod
    def _loaded(state: Mapping[str, Any], what: str, *, align_corners: bool) -> Any:
        from retouch.lib.models.loaders import skip_random_init

        with skip_random_init():  # every weight is loaded next, strictly
            network = _build(align_corners)
        try:
            network.generator.load_state_dict(dict(state), strict=True)
        except Exception as exc:  # noqa: BLE001 - missing/extra keys, wrong shapes
            raise ModelError(
                f"{what} has AnimeGANv2 keys but is not a complete AnimeGANv2 generator: "
                f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            ) from None
        return network

    def load(self, spec: Any, *, device: str, dtype: str, **options: Any) -> Loaded:
        import torch

        from retouch.lib.models.fetch import resolve
        from retouch.lib.models.weightfile import read_state_dict

        path = resolve(spec.name)
        state = clean_state(read_state_dict(path))
        align = bool(spec.arch_kwargs.get("align_corners", True))
        network = self._loaded(state, str(path), align_corners=align)
        torch_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(dtype, torch.float32)
        network.to(device=torch.device(device), dtype=torch_dtype).eval()
        return Loaded(
            spec=spec,
            network=network,
            device=device,
            dtype=dtype if dtype in ("fp16", "bf16") else "fp32",
            scale=1,
            needs=NEEDS,
        )


FAMILY = AnimeGANFamily()
