"""The Real-ESRGAN family: RRDBNet and SRVGGNetCompact through the official ``RealESRGANer``.

The official loader stays the reference here: ``RealESRGANer`` builds and loads the
network (strictly), and :mod:`retouch.lib.models.tiling` runs it. Denoise strength
(``dni_partner``) is the official weight interpolation.
"""

from __future__ import annotations

from typing import Any

from retouch.lib.models.families import Family, Loaded, Needs


class RealESRGANFamily(Family):
    name = "realesrgan"
    purposes = ("upscale",)
    description = "Real-ESRGAN networks (RRDBNet, SRVGGNetCompact), loaded by RealESRGANer"

    def needs(self, spec: Any) -> Needs:
        from retouch.lib.models.tiling import mod_align

        return Needs(min_size=1, multiple_of=mod_align(spec.scale), fp16=True)

    def load(self, spec: Any, *, device: str, dtype: str, **options: Any) -> Loaded:
        from retouch.lib.models import loaders

        upsampler = loaders.load_realesrganer(
            spec.name, device=device, half=dtype == "fp16", **options
        )
        return Loaded(
            spec=spec,
            network=upsampler.model,
            device=device,
            dtype="fp16" if upsampler.half else "fp32",
            scale=int(upsampler.scale),
            needs=self.needs(spec),
            handle=upsampler,
        )

    def preload(self) -> None:
        from retouch.lib.models.compat import import_realesrgan

        import_realesrgan()


FAMILY = RealESRGANFamily()
