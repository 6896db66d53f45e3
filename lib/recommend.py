"""Recommendations before a run: what each image needs, grouped, with a preset per group.

Each image is analysed (size, faces, sharpness, noise, exposure, colour cast, drawing or
photo) on a reduced copy, given the preset that fits it (``analysis.suggested_preset``) and
plain-language tips; images are grouped by that preset, so ``retouch run --auto`` can run
each group with its own recipe.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from . import analysis, storage
from .errors import RetouchError
from .image import Image, resize_plane
from .imageio import decode
from .sources import SourceItem

ANALYSIS_SIDE = 1024


@dataclass
class Advice:
    """One image's recommendation (or the reason it could not be read)."""

    name: str
    uri: str
    preset: str | None = None
    tips: list[str] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "preset": self.preset, "tips": self.tips, "error": self.error}


def _reduced(image: Image) -> Image:
    scale = ANALYSIS_SIDE / max(image.width, image.height)
    if scale >= 1:
        return image
    w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    return image.with_pixels(resize_plane(image.pixels, w, h))


def advise(items: Iterable[SourceItem], *, pixel_limit: int) -> list[Advice]:
    """Analyse each image and recommend a preset; unreadable files get their reason."""
    out = []
    for item in items:
        advice = Advice(name=item.name, uri=item.uri)
        try:
            image = decode(storage.read_bytes(item.uri), item.name, pixel_limit=pixel_limit)
            found = analysis.analyse(_reduced(image))
            tips = analysis.recommend(found)
            advice.preset = analysis.suggested_preset(found)
            advice.tips = tips[1:]  # the first tip names the preset, kept separately
        except RetouchError as exc:
            advice.error = str(getattr(exc, "reason", None) or exc)
        out.append(advice)
    return out


def groups(advice: list[Advice]) -> dict[str, list[Advice]]:
    """Images grouped by recommended preset (unreadable ones left out), largest group first."""
    by: dict[str, list[Advice]] = {}
    for a in advice:
        if a.preset:
            by.setdefault(a.preset, []).append(a)
    return dict(sorted(by.items(), key=lambda kv: (-len(kv[1]), kv[0])))
