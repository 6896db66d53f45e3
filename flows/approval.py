"""After review: the recipe's quality gate, then (optionally) a pause for approval.

Both act on the reviewed records before names are given and anything is exported. The pause
is Prefect's ``pause_flow_run`` with a typed input: the Prefect UI shows the
``ApprovalDecision`` form on the paused run, and ``retouch approve RUN`` resumes it from a
shell. A regeneration (asked at approval, or a gate retry) runs the process and review
tasks again on the chosen images only, with the recipe plus overrides.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from prefect import get_run_logger
from prefect.context import FlowRunContext
from prefect.flow_runs import pause_flow_run

from retouch.flows.links import flow_run_url
from retouch.flows.scheduling import chunked, run_phases
from retouch.lib import progress, storage
from retouch.lib.errors import RetouchError
from retouch.lib.imageio import decode
from retouch.lib.phases.context import RunConfig, RunContext
from retouch.lib.phases.keys import weights_ids
from retouch.lib.quality.gate import ApprovalDecision, ReviewSettings, gate_failure
from retouch.lib.recipe import apply_overrides
from retouch.lib.records import ImageRecord, Scores

APPROVAL_FILE = "approval.json"
POLL_SECONDS = 2


def approval_uri(ctx: RunContext) -> str:
    return ctx.workspace.run_path(ctx.run_id, APPROVAL_FILE)


def redo(
    records: list[ImageRecord], overrides: list[str], config: RunConfig, size: int
) -> list[ImageRecord]:
    """Process and review ``records`` again with the recipe plus ``overrides``; returns the
    new records (a chunk whose task failed marks its own images failed)."""
    if not records:
        return []
    recipe = apply_overrides(config.recipe, overrides)
    sub = config.model_copy(update={"recipe": recipe, "weights": weights_ids(recipe)})
    fresh = [
        r.model_copy(
            update={"result_key": None, "scores": Scores(), "problems": [], "reused": False},
            deep=True,
        )
        for r in records
    ]
    # Each regenerated result is a new version of its image, like any other result.
    done = run_phases(
        chunked(fresh, size), sub, ("process", "review", "versions"), note="regenerated"
    )
    out = [r for chunk in done for r in chunk]
    for r in out:
        r.problems.append(f"regenerated with {', '.join(overrides) or 'the same recipe'}")
    return out


def _use_original(record: ImageRecord, ctx: RunContext) -> None:
    """Store the decoded input as this record's result, so export delivers it unchanged."""
    assert record.sha256 is not None
    image = decode(
        storage.read_bytes(record.uri), record.name, pixel_limit=ctx.settings.pixel_limit
    )
    key = hashlib.sha256(f"original:{record.sha256}".encode()).hexdigest()
    if not ctx.workspace.has_result(key):
        ctx.workspace.save_result(key, image)
    record.result_key = key
    record.output.update({"width": image.width, "height": image.height})


def apply_gate(records: list[ImageRecord], config: RunConfig, size: int) -> list[ImageRecord]:
    """Apply the recipe's quality gate to reviewed records (unchanged when there is none)."""
    settings: ReviewSettings = config.recipe.review
    if not settings.gated:
        return records
    logger = get_run_logger()
    ctx = config.context()
    by_index = {r.index: r for r in records}
    failing = {r.index: why for r in records if (why := gate_failure(r, settings))}
    if not failing:
        return records
    logger.info("quality gate: %d image(s) below the bar", len(failing))
    if settings.on_gate_fail == "retry":
        for overrides in settings.retry_with:
            tried = redo([by_index[i] for i in failing], overrides, config, size)
            for r in tried:
                best = by_index[r.index]
                better = (r.scores.score or -1) > (best.scores.score or -1)
                if r.ok and (better or gate_failure(r, settings) is None):
                    by_index[r.index] = r
            failing = {i: why for i in failing if (why := gate_failure(by_index[i], settings))}
            if not failing:
                break
    for index, why in failing.items():
        record = by_index[index]
        if settings.on_gate_fail == "hold":
            record.fail("review", f"held back by the quality gate: {why}")
        elif settings.on_gate_fail == "original":
            try:
                _use_original(record, ctx)
                record.problems.append(f"quality gate: {why}; the original is delivered instead")
            except RetouchError as exc:
                record.fail("review", f"quality gate: {why}; the original could not be read: {exc}")
        else:
            tries = f" after {len(settings.retry_with)} retries" if settings.retry_with else ""
            record.problems.append(f"quality gate: {why}{tries}")
    return [by_index[r.index] for r in records]


def wait_for_approval(
    records: list[ImageRecord], config: RunConfig, size: int
) -> tuple[list[ImageRecord], ApprovalDecision | None]:
    """Pause until approved (when the recipe asks for it) and carry out the decision."""
    settings: ReviewSettings = config.recipe.review
    if not settings.approve:
        return records, None
    logger = get_run_logger()
    ctx = config.context()
    run_ctx = FlowRunContext.get()
    flow_run_id = str(run_ctx.flow_run.id) if run_ctx and run_ctx.flow_run else None
    pending = {
        "run_id": config.run_id,
        "flow_run_id": flow_run_id,
        "status": "waiting",
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
        "recipe": config.recipe.model_dump(mode="json"),
        "images": [
            {"name": r.name, "ok": r.ok, "score": r.scores.score, "problems": r.problems}
            for r in records
        ],
    }
    ctx.workspace.write_json(approval_uri(ctx), pending)
    url = flow_run_url(flow_run_id)
    logger.info(
        "run %s waits for approval: resume it in the Prefect UI%s or with `retouch approve %s`",
        config.run_id,
        f" ({url})" if url else "",
        config.run_id,
    )
    progress.emit(
        progress.ApprovalWaiting(
            run_id=config.run_id,
            flow_run_id=flow_run_id,
            url=url,
            workspace=ctx.workspace.root,
            timeout_s=settings.approve_timeout,
        )
    )
    decision = pause_flow_run(
        wait_for_input=ApprovalDecision,
        timeout=settings.approve_timeout,
        poll_interval=POLL_SECONDS,
    )
    assert isinstance(decision, ApprovalDecision)
    ctx.workspace.write_json(
        approval_uri(ctx), {**pending, "status": decision.action, "decision": decision.model_dump()}
    )
    if decision.action == "reject":
        reason = "rejected at approval" + (f": {decision.note}" if decision.note else "")
        return [r.model_copy(deep=True).fail("review", reason) if r.ok else r for r in records], (
            decision
        )
    if decision.action == "regenerate":
        wanted = set(decision.images)
        unknown = wanted - {r.name for r in records}
        if unknown:
            logger.warning("approval names unknown images, ignored: %s", ", ".join(sorted(unknown)))
        chosen = [r for r in records if r.name in wanted and r.ok]
        redone = {r.index: r for r in redo(chosen, decision.overrides, config, size)}
        records = [redone.get(r.index, r) for r in records]
    return records, decision
