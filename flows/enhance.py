"""The batch flow: prepare -> process -> review -> export, each a task run per chunk of images."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field, ValidationInfo, field_validator

from retouch.flows import approval, scheduling
from retouch.flows.links import flow_run_id, flow_run_url
from retouch.flows.runtime import release_memory_after_run
from retouch.lib import perf, progress, versions
from retouch.lib.errors import RecipeError
from retouch.lib.models.device import run_device
from retouch.lib.phases import workers
from retouch.lib.phases.context import RunConfig
from retouch.lib.recipe import (
    DEFAULT_PRESET,
    Recipe,
    apply_overrides,
    load_preset,
    preset_names,
)
from retouch.lib.records import RunSummary
from retouch.lib.settings import get_settings
from retouch.lib.storage import redact
from retouch.lib.workspace import Workspace
from retouch.tasks.prepare import check_models, discover


class RunOptions(BaseModel):
    """Per-run options beside the recipe (all optional; empty = the setting's default).

    Fields are plain values rather than ``None`` defaults, so the Prefect UI's run form shows
    them as ordinary inputs; ``None`` is still accepted and means empty."""

    masks: str = Field(
        "",
        description="Masks for inpaint: a folder (matched to images by file stem) or one "
        "mask file for every image",
    )
    chunk_size: int = Field(
        0, ge=0, le=10_000, description="Images per mapped task (0: automatic, or the setting)"
    )
    workspace: str = Field(
        "", description="Workspace URI (empty: RETOUCH_WORKSPACE or ~/.cache/retouch/workspace)"
    )
    refresh: bool = Field(False, description="Ignore cached results and recompute every image")
    device: str = Field("", description="auto, cpu, cuda or cuda:N (empty: the setting)")

    @field_validator("masks", "workspace", "device", "chunk_size", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return 0 if info.field_name == "chunk_size" else ""
        return value


def resolve_recipe(preset: str, overrides: list[str], recipe: Recipe | None) -> Recipe:
    """The recipe a run executes: ``recipe`` when given in full, else the preset, with the
    overrides applied. A recipe without steps is refused unless it gives export settings (a
    delivery-only recipe: convert, rename, split): it would deliver the inputs untouched
    while reporting success (as ``recipe={"name": "quick"}`` once did)."""
    if recipe is None:
        chosen = load_preset(preset)
    elif not recipe.steps and "export" not in recipe.model_fields_set:
        hint = (
            f"to run the preset, pass preset={recipe.name!r}"
            if recipe.name in preset_names()
            else "pass a preset (e.g. preset="
            + DEFAULT_PRESET
            + "), list the recipe's steps, or give export settings for a delivery-only run"
        )
        raise RecipeError(f"recipe {recipe.name!r} has no steps, so nothing would be done: {hint}")
    else:
        chosen = recipe
    return apply_overrides(chosen, overrides) if overrides else chosen


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


@flow(
    name="retouch-enhance",
    task_runner=scheduling.task_runner(),
    validate_parameters=True,
)
def enhance(
    source: str,
    dest: str,
    preset: str = DEFAULT_PRESET,
    # Defaults rather than None, so the Prefect UI's form shows plain fields (never mutated).
    overrides: list[str] = [],  # noqa: B006
    recipe: Recipe | None = None,
    options: RunOptions = RunOptions(),  # noqa: B008
) -> RunSummary:
    """Enhance every image in SOURCE and deliver ZIP, manifest and report to DEST.

    Args:
        source: Images to enhance: a folder, glob, single image, list file, .zip, or any
            fsspec URL (s3://bucket/prefix/).
        dest: Where the ZIP, manifest.json and report.html go: a folder or fsspec URL.
        preset: The recipe to run, by name: a shipped preset or one saved with
            `retouch tune --save` (see `retouch presets list`).
        overrides: STEP.PARAM=VALUE changes to the preset, e.g. upscale.outscale=2 or
            export.format=webp.
        recipe: A full recipe instead of the preset (advanced; it must list its steps).
        options: Masks, chunk size, workspace, device, refresh.
    """
    meter = perf.RunMeter()
    try:
        chosen = resolve_recipe(preset, overrides or [], recipe)
        return _enhance(source, dest, chosen, options or RunOptions(), meter)
    finally:
        meter.close()  # a long-running worker must not keep a sampler per failed run
        workers.shutdown()  # worker processes, if a chunk started them
        release_memory_after_run()  # a long-running worker stays flat batch after batch


def _enhance(
    source: str, dest: str, recipe: Recipe, options: RunOptions, meter: perf.RunMeter
) -> RunSummary:
    settings = get_settings()
    logger = get_run_logger()
    started = time.time()
    run_id = new_run_id()
    recipe.validate_steps()

    records, skipped = discover(source, skip_masks=any(s.op == "inpaint" for s in recipe.steps))
    weights = check_models(recipe)
    config = RunConfig(
        run_id=run_id,
        workspace=options.workspace or settings.resolved_workspace(),
        recipe=recipe,
        source=source,
        dest=dest,
        masks=options.masks or None,
        device=run_device(recipe, options.device or settings.device),
        weights=weights,
        refresh=options.refresh,
    )
    size, chunks = scheduling.run_chunks(records, options.chunk_size, config)
    logger.info(
        "run %s: %d images in %d chunks, recipe %s", run_id, len(records), len(chunks), recipe.name
    )
    progress.emit(
        progress.RunStarted(
            run_id=run_id, total=len(records), skipped=len(skipped), chunks=len(chunks)
        )
    )

    url = flow_run_url()
    if url:
        logger.info("run %s in the Prefect UI: %s", run_id, url)
    progress.emit(progress.FlowRunLinked(run_id=run_id, flow_run_id=flow_run_id(), url=url))
    versions.save_run_info(
        Workspace(config.workspace),
        run_id,
        {
            "run_id": run_id,
            "flow_run_id": flow_run_id(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": source,
            "dest": dest,
            "recipe": recipe.model_dump(mode="json"),
            "options": options.model_dump(mode="json"),
        },
    )
    meter.start("prepare-process-review")
    reviewed = scheduling.process_phases(chunks, config)
    meter.stop("prepare-process-review")

    flat = [r for chunk in reviewed for r in chunk]
    # The recipe's quality gate, then (review.approve) a pause until someone decides.
    flat = approval.apply_gate(flat, config, size)
    flat, _decision = approval.wait_for_approval(flat, config, size)
    summary = scheduling.export_phase(flat, skipped, config, started, size, meter)
    logger.info(
        "run %s: %d succeeded, %d failed; results in %s",
        run_id,
        summary.succeeded,
        summary.failed,
        redact(dest),
    )
    return summary
