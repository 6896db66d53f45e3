"""``retouch run --auto``: analyse the images, then run each group of images that want the same
preset as an enhance subflow, delivering into DEST/<preset>."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from prefect import flow, get_run_logger

from retouch.flows.enhance import RunOptions, enhance
from retouch.lib import sources, storage
from retouch.lib.errors import RetouchError
from retouch.lib.quality import recommend as rec
from retouch.lib.quality.runnable import runnable_groups
from retouch.lib.recipe import apply_overrides, load_preset
from retouch.lib.records import RunSummary
from retouch.lib.settings import get_settings
from retouch.lib.workspace import Workspace


@dataclass
class GroupRun:
    """One preset's run: its summary, or the error that stopped it."""

    preset: str
    dest: str
    summary: RunSummary | None = None
    error: str | None = None

    @property
    def exit_code(self) -> int:
        return 1 if self.summary is None else self.summary.exit_code


@dataclass
class AutoRun:
    """The advice per image, the notes on presets that could not run here, and each group's run."""

    advice: list[rec.Advice]
    notes: list[str]
    groups: list[GroupRun] = field(default_factory=list)

    @property
    def unreadable(self) -> list[rec.Advice]:
        return [a for a in self.advice if a.error]

    @property
    def exit_code(self) -> int:
        """1: nothing delivered; 2: some images failed or could not be read; 0: all delivered."""
        codes = [g.exit_code for g in self.groups]
        if all(c == 1 for c in codes):  # no group at all, too
            return 1
        return 2 if self.unreadable or any(codes) else 0


@flow(name="retouch-auto", validate_parameters=True)
def enhance_auto(
    source: str,
    dest: str,
    overrides: list[str] = [],  # noqa: B006 (never mutated)
    options: RunOptions = RunOptions(),  # noqa: B008
) -> AutoRun:
    """Analyse every image in SOURCE, group the images by the preset recommended for them
    (with what the workspace's history learned for that kind of image) and run each group
    as an enhance subflow into DEST/<preset>.

    Args:
        source: Images to enhance: a folder, glob, list file, .zip or fsspec URL.
        dest: Each group's ZIP, manifest and report go to DEST/<preset>.
        overrides: Only the export.* ones apply (step overrides name one recipe's steps).
        options: Masks, chunk size, workspace, device, refresh (for every group).
    """
    settings = get_settings()
    found = sources.discover(source, follow_symlinks=settings.follow_symlinks)
    learned = rec.learn_from_history(Workspace(options.workspace or settings.resolved_workspace()))
    advice = rec.advise(found.items, pixel_limit=settings.pixel_limit, learned=learned)
    grouped, notes = runnable_groups(rec.groups(advice))
    shared = [o for o in overrides if o.split("=", 1)[0].startswith("export.")]
    result = AutoRun(advice=advice, notes=notes)
    logger = get_run_logger()
    with tempfile.TemporaryDirectory(prefix="retouch-auto-") as tmp:
        for preset, members in grouped.items():
            listing = Path(tmp) / f"{preset}.txt"
            listing.write_text("\n".join(a.uri for a in members) + "\n", encoding="utf-8")
            group = GroupRun(preset=preset, dest=storage.join(dest, preset))
            try:
                # What the history learned for this kind of image, then the user's export.
                recipe = apply_overrides(load_preset(preset), [*members[0].overrides, *shared])
                group.summary = enhance(
                    source=str(listing), dest=group.dest, recipe=recipe, options=options
                )
            except RetouchError as exc:
                group.error = str(exc)
            result.groups.append(group)
            logger.info("%s: %s", preset, group.error or f"exit code {group.exit_code}")
    return result
