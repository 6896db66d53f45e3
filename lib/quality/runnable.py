"""Recommended groups that can run here: a preset whose model weights can't be had hands its
images to the default preset, with a note saying what the better one needs
(``retouch recommend`` and ``retouch run --auto``)."""

from __future__ import annotations

from retouch.lib.errors import RetouchError
from retouch.lib.models.fetch import missing_weights
from retouch.lib.phases.keys import weights_ids
from retouch.lib.quality.recommend import Advice
from retouch.lib.recipe import DEFAULT_PRESET, load_preset


def blocker(preset: str, fetch: bool) -> str | None:
    """Why ``preset`` cannot run here (its model weights can't be had), or None. With
    ``fetch``, weights that can be fetched are fetched now (as a run would); without, only
    looked up (nothing downloaded)."""
    recipe = load_preset(preset)
    if fetch:
        try:
            weights_ids(recipe)
        except RetouchError as exc:
            return str(exc)
        return None
    blocked = [m for m in missing_weights(recipe.models()) if m["source"] is None]
    if not blocked:
        return None
    files = ", ".join(f"{m['filename']} ({m['name']})" for m in blocked)
    return f"it needs {files}, not here: {blocked[0]['how']}"


def runnable_groups(
    grouped: dict[str, list[Advice]], fetch: bool = True
) -> tuple[dict[str, list[Advice]], list[str]]:
    """Groups whose preset can run here, and a note per preset that could not (its images
    join the default preset's group, their advice says what the better one needs; see
    :func:`blocker`)."""
    runnable: dict[str, list[Advice]] = {}
    notes = []
    for preset, members in grouped.items():
        target = preset
        if preset != DEFAULT_PRESET:
            why = blocker(preset, fetch)
            if why is not None:
                target = DEFAULT_PRESET
                notes.append(
                    f"{preset} would suit {len(members)} image(s) but cannot run here, so they "
                    f"get {DEFAULT_PRESET}: {why}"
                )
                for a in members:
                    a.preset, a.overrides = DEFAULT_PRESET, []
                    a.tips.append(f"{preset} would fit better: {why}")
        runnable.setdefault(target, []).extend(members)
    return runnable, notes
