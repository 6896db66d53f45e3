"""The LaMa family: big-lama and other LaMa generators, for inpainting (object removal).

The network is spandrel's LaMa (the same generator as the LaMa authors' code). Three kinds of
file hold it, and each imports:

- the community TorchScript ``big-lama.pt`` (keys ``model.model.*``), read as tensors;
- the authors' PyTorch Lightning checkpoint ``best.ckpt`` (``state_dict`` with
  ``generator.*``, ``discriminator.*`` and loss networks): only ``generator.*`` is kept;
- a bare generator state dict (``model.*`` or ``generator.model.*``).

``Loaded.network`` is the bare module: ``network(image, mask)`` with image (N,3,H,W) RGB in
0..1 and mask (N,1,H,W), 1 = fill, H and W multiples of 8, returns (N,3,H,W) with the
unmasked pixels kept. ``Loaded.handle`` is spandrel's descriptor. fp16 breaks LaMa's FFT
layers; bf16 works, so CUDA runs bf16 unless asked for fp32.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from retouch.lib.errors import ModelError
from retouch.lib.models.families import Detected, Family, Loaded, Needs

NEEDS = Needs(min_size=16, multiple_of=8, fp16=False, bf16=True)
_DETECT = ("model.model.1.bn_l.running_mean", "generator.model.1.bn_l.running_mean")
LICENSE = "LaMa: Apache-2.0 (architecture; see the LaMa authors' project for the weights)"


def generator_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """The generator's own keys of a LaMa file, named as spandrel's LaMa expects
    (``model.model.*``): a Lightning checkpoint's discriminator and loss networks dropped."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        if key.startswith("generator.model."):
            out["model." + key.removeprefix("generator.")] = value
        elif key.startswith("model.model."):
            out[key] = value
    return out


class LaMaFamily(Family):
    name = "lama"
    purposes = ("inpaint",)
    description = "LaMa inpainting generators (big-lama), loaded through spandrel"

    def needs(self, spec: Any) -> Needs:
        return NEEDS

    def detect(
        self, state: Mapping[str, Any], *, allow_noncommercial: bool = False
    ) -> Detected | None:
        if not any(k in state for k in _DETECT):
            return None
        clean = generator_state(state)
        descriptor = self._descriptor(clean, "the file")
        return Detected(
            family=self.name,
            arch="LaMa",
            purpose="inpaint",
            scale=1,
            needs=NEEDS,
            state=clean,
            license=LICENSE,
            params=sum(p.numel() for p in descriptor.model.parameters()),
        )

    @staticmethod
    def _descriptor(state: Mapping[str, Any], what: str) -> Any:
        from spandrel.architectures.LaMa import LaMaArch

        from retouch.lib.models.loaders import skip_random_init

        try:
            with skip_random_init():  # every weight is loaded next, strictly
                return LaMaArch().load(dict(state))
        except Exception as exc:  # noqa: BLE001 - missing/extra keys, wrong shapes
            raise ModelError(
                f"{what} has LaMa keys but is not a complete LaMa generator: "
                f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            ) from None

    def load(self, spec: Any, *, device: str, dtype: str, **options: Any) -> Loaded:
        import torch

        from retouch.lib.models.fetch import resolve
        from retouch.lib.models.weightfile import read_state_dict

        path = resolve(spec.name)
        state = generator_state(read_state_dict(path))
        if not state:
            raise ModelError(f"model {spec.name!r}: {path} holds no LaMa generator weights")
        descriptor = self._descriptor(state, str(path))
        torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
        descriptor.model.to(device=torch.device(device), dtype=torch_dtype).eval()
        return Loaded(
            spec=spec,
            network=descriptor.model,
            device=device,
            dtype="bf16" if dtype == "bf16" else "fp32",
            scale=1,
            needs=NEEDS,
            handle=descriptor,
        )

    def preload(self) -> None:
        import spandrel  # noqa: F401


FAMILY = LaMaFamily()
