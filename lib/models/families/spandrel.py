"""The spandrel family: community model files of every architecture spandrel knows.

spandrel (the model loader of chaiNNer and ComfyUI, MIT) recognises an architecture from the
keys and shapes of a state dict and builds it: ESRGAN/RRDB variants, SwinIR, HAT, DAT,
OmniSR, SPAN, Compact, RealCUGAN... for upscaling; GFPGAN, RestoreFormer++ for faces; LaMa
for inpainting. ``retouch models import FILE`` detects the architecture, scale and purpose,
stores the weights as safetensors in the model dir and registers the model
(:mod:`retouch.lib.models.imported`); this family loads it again from there.

Architectures under non-commercial licences live in the separate ``spandrel_extra_arches``
package and are only used after an explicit opt-in (``--allow-noncommercial``), which the
registry entry records.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from retouch.lib.errors import ModelError
from retouch.lib.models.families import Detected, Family, Loaded, Needs, Purpose

# spandrel's purposes -> retouch's. "Restoration" models (denoise, deblur, JPEG artefacts)
# are image-to-image at scale 1: the upscale op tiles and runs them like any upscaler.
_PURPOSES: dict[str, Purpose] = {
    "SR": "upscale",
    "Restoration": "upscale",
    "FaceSR": "face",
    "Inpainting": "inpaint",
}

MAIN_LICENSE = "architecture from spandrel's main registry (permissive licences; see spandrel)"
EXTRA_LICENSE = (
    "NON-COMMERCIAL: architecture from spandrel_extra_arches, whose licences forbid "
    "commercial use (see that package); imported with --allow-noncommercial"
)


def _loader(noncommercial: bool) -> Any:
    from spandrel import MAIN_REGISTRY, ArchRegistry, ModelLoader

    if not noncommercial:
        return ModelLoader()
    try:
        import spandrel_extra_arches  # type: ignore[import-not-found]
    except ImportError:
        raise ModelError(
            "non-commercial architectures need the spandrel_extra_arches package: "
            "pip install spandrel_extra_arches (its architectures' licences forbid "
            "commercial use)"
        ) from None
    registry = ArchRegistry()
    registry.add(*MAIN_REGISTRY)
    registry.add(*spandrel_extra_arches.EXTRA_REGISTRY, ignore_duplicates=True)
    return ModelLoader(registry=registry)


def _is_extra(arch_id: str) -> bool:
    from spandrel import MAIN_REGISTRY

    return arch_id not in {a.architecture.id for a in MAIN_REGISTRY}


def _needs(descriptor: Any) -> Needs:
    req = descriptor.size_requirements
    return Needs(
        min_size=max(1, int(req.minimum)),
        multiple_of=max(1, int(req.multiple_of)),
        fp16=bool(descriptor.supports_half),
        bf16=bool(descriptor.supports_bfloat16),
    )


class _Call:
    """The descriptor's own call (its pre- and post-processing) as a network module."""

    @staticmethod
    def wrap(descriptor: Any) -> Any:
        from torch import nn

        class SpandrelNet(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = descriptor.model

            def forward(self, *args: Any) -> Any:
                return descriptor(*args)

        return SpandrelNet()


class _FaceRunner:
    """What the face op runs (as for ``GFPGANer``): ``face_helper`` (facexlib's detection,
    alignment and paste-back) and ``gfpgan``, the face network called as GFPGANer calls its
    own, ``net(x, return_rgb=False, weight=w)[0]`` on -1..1 RGB 512x512 faces."""

    def __init__(self, descriptor: Any, face_helper: Any) -> None:
        self.face_helper = face_helper
        self.gfpgan = _FaceRunner.network(descriptor)

    @staticmethod
    def network(descriptor: Any) -> Any:
        from torch import nn

        arch = descriptor.architecture.id

        class SpandrelFaceNet(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = descriptor.model

            def forward(self, x: Any, **_: Any) -> Any:
                if arch == "GFPGAN":  # the official call, with its stored noise (deterministic)
                    return (self.inner(x, return_rgb=False, randomize_noise=False)[0],)
                if arch == "RestoreFormer":
                    return (self.inner(x)[0],)
                return (descriptor((x + 1) / 2) * 2 - 1,)  # spandrel's 0..1 contract

        return SpandrelFaceNet().eval()


class SpandrelFamily(Family):
    name = "spandrel"
    purposes = ("upscale", "face", "inpaint")
    description = "Community model files, loaded by spandrel (chaiNNer's loader)"

    def needs(self, spec: Any) -> Needs:
        stored = dict(spec.arch_kwargs).get("needs") or {}
        return Needs(**stored)

    def dtype(self, spec: Any, device: str, half: bool | None) -> str:
        # The tiling runs upscalers in fp16 or fp32 only; faces run fp32 as GFPGANer does.
        chosen = super().dtype(spec, device, half)
        if chosen == "bf16" and self.purpose(spec) != "inpaint":
            return "fp32"
        if self.purpose(spec) == "face":
            return "fp32"
        return chosen

    def describe(
        self, state: Mapping[str, Any], *, allow_noncommercial: bool = False
    ) -> Any | None:
        """spandrel's descriptor for ``state``, or None when no architecture matches."""
        from spandrel import UnsupportedModelError

        from retouch.lib.models.loaders import skip_random_init

        try:
            with skip_random_init():  # spandrel loads every weight next, strictly
                return _loader(allow_noncommercial).load_from_state_dict(dict(state))
        except UnsupportedModelError:
            return None

    def detect(
        self, state: Mapping[str, Any], *, allow_noncommercial: bool = False
    ) -> Detected | None:
        try:
            descriptor = self.describe(state, allow_noncommercial=allow_noncommercial)
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - an architecture matched, but its build failed
            raise ModelError(
                f"the weights look like a known architecture but do not build: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        if descriptor is None:
            return None
        arch = descriptor.architecture.id
        purpose = _PURPOSES.get(descriptor.purpose)
        if purpose is None:
            raise ModelError(f"{arch}: spandrel purpose {descriptor.purpose!r} is not supported")
        if descriptor.size_requirements.square:
            raise ModelError(f"{arch}: the network needs square inputs, which retouch cannot tile")
        if descriptor.input_channels != 3 and purpose != "inpaint":
            raise ModelError(
                f"{arch}: {descriptor.input_channels}-channel input; retouch runs 3-channel "
                "(colour) models"
            )
        extra = _is_extra(arch)
        return Detected(
            family=self.name,
            arch=arch,
            purpose=purpose,
            scale=int(descriptor.scale),
            needs=_needs(descriptor),
            state=state,
            license=EXTRA_LICENSE if extra else MAIN_LICENSE,
            params=sum(p.numel() for p in descriptor.model.parameters()),
        )

    def load(self, spec: Any, *, device: str, dtype: str, **options: Any) -> Loaded:
        import torch

        from retouch.lib.models.fetch import resolve
        from retouch.lib.models.weightfile import read_state_dict

        path = resolve(spec.name)
        noncommercial = bool(dict(spec.arch_kwargs).get("noncommercial"))
        descriptor = self.describe(read_state_dict(path), allow_noncommercial=noncommercial)
        if descriptor is None:
            raise ModelError(f"model {spec.name!r}: {path} matches no known architecture")
        arch, scale = descriptor.architecture.id, int(descriptor.scale)
        if arch != spec.arch or scale != spec.scale:
            raise ModelError(
                f"model {spec.name!r}: {path} holds a {arch} x{scale} network, but the "
                f"registry says {spec.arch} x{spec.scale}; import the file again"
            )
        torch_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(dtype, torch.float32)
        descriptor.to(torch.device(device), torch_dtype).eval()
        if self.purpose(spec) == "face":
            from retouch.lib.models.loaders import load_face_helper

            runner = _FaceRunner(descriptor, load_face_helper(device=device))
            return Loaded(spec, runner.gfpgan, device, dtype, 1, _needs(descriptor), runner)
        return Loaded(
            spec=spec,
            network=_Call.wrap(descriptor).eval(),
            device=device,
            dtype=dtype,
            scale=scale,
            needs=_needs(descriptor),
            handle=descriptor,
        )

    def preload(self) -> None:
        import spandrel  # noqa: F401


FAMILY = SpandrelFamily()
