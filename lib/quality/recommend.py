"""Recommendations before a run: what each image needs, grouped, with a preset per group.

Each image is analysed (size, faces, sharpness, noise, exposure, colour cast, drawing or
photo) on a reduced copy, given the preset that fits it (``analysis.suggested_preset``) and
plain-language tips; images are grouped by that preset, so ``retouch run --auto`` can run
each group with its own recipe.

Recommendations also learn from the workspace's version history: for images of the same
kind (the same recommended preset), the parameters of the results people kept (each
image's current version: the last run, a regeneration with overrides, or a rollback) are
compared by their review scores, and the best-scoring set of changes to the preset is
suggested (and applied by ``--auto``). So the second batch of a studio's photos starts from
what worked for the first.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from retouch.lib import storage
from retouch.lib.errors import RetouchError
from retouch.lib.image import Image, resize_plane
from retouch.lib.imageio import decode
from retouch.lib.quality import analysis
from retouch.lib.sources import SourceItem

ANALYSIS_SIDE = 1024


@dataclass
class Advice:
    """One image's recommendation (or the reason it could not be read)."""

    name: str
    uri: str
    preset: str | None = None
    tips: list[str] = field(default_factory=list)
    error: str | None = None
    overrides: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "preset": self.preset,
            "overrides": self.overrides,
            "tips": self.tips,
            "error": self.error,
        }


@dataclass
class Learned:
    """What the history says about one preset: the changes whose results scored best."""

    preset: str
    overrides: list[str]
    mean_score: float
    images: int
    baseline: float | None  # mean score of results made with the preset unchanged

    def tip(self) -> str:
        base = f" (unchanged preset: {self.baseline:.0f})" if self.baseline is not None else ""
        return (
            f"earlier results of this kind scored best with {', '.join(self.overrides)}: "
            f"mean score {self.mean_score:.0f} over {self.images} image(s){base}"
        )


def _changes(steps: list[dict[str, Any]], preset_steps: list[dict[str, Any]]) -> list[str] | None:
    """The ``op.param=value`` changes turning the preset's steps into ``steps`` (None when the
    steps are not the preset's, e.g. another op was added)."""
    if [s.get("op") for s in steps] != [s["op"] for s in preset_steps]:
        return None
    out = []
    for number, (step, base) in enumerate(zip(steps, preset_steps, strict=True), start=1):
        repeated = [s["op"] for s in preset_steps].count(base["op"]) > 1
        target = str(number) if repeated else base["op"]
        for key, value in sorted((step.get("params") or {}).items()):
            if base["params"].get(key) != value:
                out.append(f"{target}.{key}={json.dumps(value)}")
    return out


def learn_from_history(workspace: Any, *, max_images: int = 2000) -> dict[str, Learned]:
    """For each preset, the set of parameter changes whose kept results scored best.

    Reads the current version of at most ``max_images`` images of the workspace's history.
    A set of changes is suggested only when its mean score beats the unchanged preset's
    (or the unchanged preset has no results) and it was kept for at least one image.
    """
    from retouch.lib.recipe import load_preset, preset_names
    from retouch.lib.versions import VersionStore

    store = VersionStore(workspace)
    known = set(preset_names())
    presets: dict[str, list[dict[str, Any]]] = {}
    scores: dict[str, dict[tuple[str, ...], list[float]]] = {}
    for image in store.images()[:max_images]:
        try:
            current = store.current(image)
        except RetouchError:
            continue
        if current is None or current.scores.score is None:
            continue
        name = str(current.recipe.get("name") or "")
        if name not in known:
            continue
        if name not in presets:
            presets[name] = load_preset(name).canonical_steps()
        changes = _changes(current.recipe.get("steps") or [], presets[name])
        if changes is None:
            continue
        scores.setdefault(name, {}).setdefault(tuple(changes), []).append(
            float(current.scores.score)
        )
    learned = {}
    for name, by_changes in scores.items():
        means = {k: sum(v) / len(v) for k, v in by_changes.items()}
        baseline = means.get(())
        best = max(
            (k for k in means if k), key=lambda k: (means[k], len(by_changes[k])), default=None
        )
        if best is None or (baseline is not None and means[best] <= baseline):
            continue
        learned[name] = Learned(
            preset=name,
            overrides=list(best),
            mean_score=round(means[best], 1),
            images=len(by_changes[best]),
            baseline=None if baseline is None else round(baseline, 1),
        )
    return learned


def _reduced(image: Image) -> Image:
    scale = ANALYSIS_SIDE / max(image.width, image.height)
    if scale >= 1:
        return image
    w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    return image.with_pixels(resize_plane(image.pixels, w, h))


def advise(
    items: Iterable[SourceItem], *, pixel_limit: int, learned: dict[str, Learned] | None = None
) -> list[Advice]:
    """Analyse each image and recommend a preset (with the changes the history suggests for
    it, from :func:`learn_from_history`); unreadable files get their reason."""
    out = []
    for item in items:
        advice = Advice(name=item.name, uri=item.uri)
        try:
            image = decode(storage.read_bytes(item.uri), item.name, pixel_limit=pixel_limit)
            found = analysis.analyse(_reduced(image))
            tips = analysis.recommend(found)
            advice.preset = analysis.suggested_preset(found)
            advice.tips = tips[1:]  # the first tip names the preset, kept separately
            hint = (learned or {}).get(advice.preset)
            if hint is not None:
                advice.overrides = list(hint.overrides)
                advice.tips.append(hint.tip())
        except RetouchError as exc:
            advice.error = str(getattr(exc, "reason", None) or exc)
        out.append(advice)
    return out


def groups(advice: list[Advice]) -> dict[str, list[Advice]]:
    """Images grouped by recommended preset (unreadable ones left out), largest group first.
    Images of one preset share its learned overrides, so a group is one recipe."""
    by: dict[str, list[Advice]] = {}
    for a in advice:
        if a.preset:
            by.setdefault(a.preset, []).append(a)
    return dict(sorted(by.items(), key=lambda kv: (-len(kv[1]), kv[0])))
