"""The GFPGAN family: GFPGAN v1.3/v1.4 and RestoreFormer through the official ``GFPGANer``
(its face detector, alignment and paste-back are facexlib's; see the ``facexlib`` family)."""

from __future__ import annotations

from typing import Any

from retouch.lib.models.families import Family, Loaded, Needs


class GFPGANFamily(Family):
    name = "gfpgan"
    purposes = ("face",)
    description = "GFPGAN and RestoreFormer face networks, loaded by GFPGANer"

    def needs(self, spec: Any) -> Needs:
        return Needs(min_size=16)

    def load(self, spec: Any, *, device: str, dtype: str, **options: Any) -> Loaded:
        from retouch.lib.models import loaders

        restorer = loaders.load_gfpganer(spec.name, device=device, **options)
        return Loaded(
            spec=spec,
            network=restorer.gfpgan,
            device=device,
            dtype="fp32",  # GFPGANer has no half mode
            scale=1,
            needs=self.needs(spec),
            handle=restorer,
        )

    def preload(self) -> None:
        from retouch.lib.models.compat import import_gfpgan, import_realesrgan

        import_realesrgan()
        import_gfpgan()


FAMILY = GFPGANFamily()
