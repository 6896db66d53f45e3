"""Regenerate part of an earlier run: re-process selected images, record new versions and
re-deliver the run's ZIP, manifest and report with each image's current (or best) version."""

from __future__ import annotations

import time
from typing import Literal

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from retouch.flows import scheduling
from retouch.flows.runtime import release_memory_after_run
from retouch.lib import perf, progress, storage, versions
from retouch.lib.errors import RetouchError
from retouch.lib.models.device import run_device
from retouch.lib.phases import workers
from retouch.lib.phases.context import RunConfig
from retouch.lib.phases.review import thumb_path
from retouch.lib.recipe import apply_overrides, recipe_from_dict
from retouch.lib.records import ImageRecord, RunSummary
from retouch.lib.settings import get_settings
from retouch.lib.workspace import Workspace
from retouch.tasks.prepare import check_models


class RegenerateOptions(BaseModel):
    """What to re-process in the run and how (with no selection: re-export only)."""

    select: list[str] = Field(
        default_factory=list, description="Names of images to re-process, as in the manifest"
    )
    failed: bool = Field(False, description="Also re-process every image that failed")
    worse: bool = Field(False, description="Also re-process every image the review judged worse")
    overrides: list[str] = Field(
        default_factory=list,
        description="STEP.PARAM=VALUE changes to the run's recipe, e.g. sharpen.amount=0.5",
    )
    sources: dict[str, str] = Field(
        default_factory=dict,
        description="New source file per image name (replacements; those images are re-processed)",
    )
    pick: Literal["current", "best"] = Field(
        "current", description="Export each image's current version or its best-scoring one"
    )
    dest: str | None = Field(None, description="Deliver here instead of the run's destination")
    workspace: str | None = Field(
        None, description="Workspace URI (default: RETOUCH_WORKSPACE or ~/.cache/retouch/workspace)"
    )
    keep_worse: bool = Field(
        False,
        description="Make a regenerated version current even when it scores below the "
        "version it replaces (by default that one stays current and the image says so)",
    )
    refresh: bool = Field(False, description="Recompute the selected images, ignoring the cache")
    device: str | None = Field(None, description="auto, cpu, cuda or cuda:N (default: setting)")
    chunk_size: int | None = Field(None, ge=1, le=10_000, description="Images per mapped task")
    note: str = Field("", description="Note stored with the new versions")


def select_records(records: list[ImageRecord], options: RegenerateOptions) -> list[ImageRecord]:
    """The run's records to re-process; unknown names are an error naming the valid ones."""
    by_name = {r.name: r for r in records}
    wanted = list(dict.fromkeys([*options.select, *options.sources]))
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        shown = ", ".join(sorted(by_name)[:20])
        raise RetouchError(
            f"no image {', '.join(repr(n) for n in unknown)} in this run; its images: {shown}"
        )
    chosen = set(wanted)
    if options.failed:
        chosen |= {r.name for r in records if not r.ok}
    if options.worse:
        chosen |= {r.name for r in records if r.ok and r.scores.verdict == "worse"}
    return [r for r in records if r.name in chosen]


def _keep_better(
    store: versions.VersionStore,
    image: str,
    history: list[versions.Version],
    record: ImageRecord,
) -> str | None:
    """When the regenerated version scores below the version it replaced, make that one
    current again; returns what happened, in the user's words (None when the new one is
    kept)."""
    previous = record.output.previous
    old_score = previous.scores.score if previous is not None else None
    new_score = record.scores.score
    if previous is None or old_score is None or new_score is None or new_score >= old_score:
        return None
    former = next((v for v in history if v.stamp == previous.version_id), None)
    if former is None:
        return None
    store.set_current(image, former, note=f"kept: the regenerated version scored {new_score:.1f}")
    return (
        f"regenerated version {record.output.version} scored {new_score:.1f}, below "
        f"version {former.number}'s {old_score:.1f}: version {former.number} stays current "
        "(--keep-worse to take the new one; `retouch versions` lists both)"
    )


@flow(
    name="retouch-regenerate",
    task_runner=scheduling.task_runner(),
    validate_parameters=True,
)
def regenerate(run_id: str, options: RegenerateOptions | None = None) -> RunSummary:
    """Re-process the selected images of run RUN_ID (its recipe plus overrides), record new
    versions and re-deliver the run with every image's current (or best) version."""
    meter = perf.RunMeter()
    try:
        return _regenerate(run_id, options or RegenerateOptions(), meter)
    finally:
        meter.close()
        workers.shutdown()  # worker processes, if a chunk started them
        release_memory_after_run()  # a long-running worker stays flat batch after batch


def _regenerate(run_id: str, options: RegenerateOptions, meter: perf.RunMeter) -> RunSummary:
    settings = get_settings()
    logger = get_run_logger()
    started = time.time()
    ws = Workspace(options.workspace or settings.resolved_workspace())
    state = versions.load_run(ws, run_id)
    recipe = apply_overrides(
        recipe_from_dict(state.recipe, origin=f"run {run_id}"), options.overrides
    )
    dest = options.dest or state.dest
    if not dest:
        raise RetouchError(f"run {run_id}: its destination is unknown; give one (--out)")
    selected = select_records(state.records, options)
    config = RunConfig(
        run_id=run_id,
        workspace=ws.root,
        recipe=recipe,
        source=state.source,
        dest=dest,
        masks=state.options.get("masks") or None,
        device=run_device(recipe, options.device or settings.device),
        weights=check_models(recipe) if selected else {},
        refresh=options.refresh,
    )
    logger.info("run %s: regenerating %d of %d images", run_id, len(selected), len(state.records))
    progress.emit(progress.RunStarted(run_id=run_id, total=len(selected), skipped=0, chunks=0))

    image_ids = {r.name: i for r in selected if (i := versions.run_image_id(r))}
    fresh = []
    for r in selected:
        uri = options.sources.get(r.name, r.uri)
        fresh.append(ImageRecord(index=r.index, source=storage.redact(uri), name=r.name, uri=uri))
    size = scheduling.chunk_size(len(fresh), options.chunk_size)
    done = scheduling.process_phases(
        scheduling.chunked(fresh, size),
        config,
        image_ids=image_ids,
        note=options.note or f"regenerated ({', '.join(options.overrides) or 'same recipe'})",
    )
    new = {r.name: r for chunk in done for r in chunk}

    store = versions.VersionStore(ws)
    ctx = config.context()
    merged = []
    for old in state.records:
        record = new.get(old.name)
        if record is None:
            record = old.model_copy(deep=True)
            record.reused, record.model_calls = True, 0
        elif not record.ok and old.ok:
            # A failed regeneration must not take a delivered image out of the run.
            reason = f"regeneration failed ({record.failed_phase}): {record.reason}"
            record = old.model_copy(deep=True)
            record.problems.append(reason)
        record.output_name = record.output_sha256 = None
        if isinstance(getattr(record, "outputs", None), list):
            record.outputs = []  # the export phase lists this delivery's files afresh
        image = versions.run_image_id(record)
        history = store.history(image) if image else []
        kept = (
            _keep_better(store, image, history, record)
            # (a replaced source is another picture: its scores don't compare)
            if image
            and old.name in new
            and old.name not in options.sources
            and record.ok
            and not options.keep_worse
            else None
        )
        chosen = (
            (
                store.best(image, history)
                if options.pick == "best"
                else store.current(image, history)
            )
            if image
            else None
        )
        if chosen is not None and (chosen.stamp != record.output.version_id or not record.ok):
            former = next((v for v in history if v.stamp == record.output.version_id), None)
            versions.apply_version(record, chosen)
            if former is not None:
                record.output.previous = versions.previous_entry(store, former)
            for label in ("before", "after"):  # the report shows the version's own thumbnails
                thumb = store.thumb_uri(image or "", chosen.stamp, label)
                if storage.exists(thumb):
                    storage.write_bytes(thumb_path(ctx, record, label), storage.read_bytes(thumb))
        if kept:
            record.problems.append(kept)
            record.output.kept = kept  # for front ends: why this version is delivered
            logger.warning("%s: %s", record.name, kept)
        merged.append(record)

    # Export and delivery: the same phase as the enhance flow's.
    size = scheduling.chunk_size(len(merged), options.chunk_size)
    summary = scheduling.export_phase(merged, state.skipped, config, started, size, meter)
    logger.info(
        "run %s: %d regenerated; %d succeeded, %d failed; results in %s",
        run_id,
        len(selected),
        summary.succeeded,
        summary.failed,
        storage.redact(dest),
    )
    return summary
