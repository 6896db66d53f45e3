"""Trying recipes before a run and deciding during one: ``preview`` and ``tune`` (a contact
sheet of a few images, in this process without Prefect), ``recommend`` (a preset per image),
``runs`` and ``approve`` (resume a run paused for approval)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from retouch.cli.common import console, fail, open_workspace, out, print_json, reported

if TYPE_CHECKING:
    from retouch.lib.quality.preview import PreviewResult, Variant
    from retouch.lib.quality.recommend import Advice

# How long `approve` waits for a run that has announced its pause to be paused.
PAUSE_GRACE_S = 15.0


def _variants(
    presets: list[str], grid: str | None, overrides: list[str], styles: str | None = None
) -> list[Variant]:
    from retouch.lib.quality import preview
    from retouch.lib.recipe import apply_overrides, load_preset

    if styles:
        # Style comparison: one column per style (a preset, or a re-drawing model).
        named = preview.style_variants(styles)
        if grid:
            raise ValueError("use --grid or --styles, not both")
        if overrides:
            named = [preview.Variant(v.label, apply_overrides(v.recipe, overrides)) for v in named]
        return named
    recipes = [load_preset(p) for p in presets]
    if overrides:
        recipes = [apply_overrides(r, overrides) for r in recipes]
    parsed = preview.parse_grid(grid) if grid else None
    if parsed and len(recipes) > 1:
        raise ValueError("use --grid with one preset, or several presets without --grid")
    if len(recipes) > 1:  # style comparison: one column per preset
        return [preview.Variant(r.name, r) for r in recipes]
    return preview.variants_for(recipes[0], parsed)


def _print_table(result: PreviewResult) -> None:
    table = Table(title="scores (0-100)", show_lines=False)
    table.add_column("image")
    for v in result.variants:
        table.add_column(escape(v), justify="right")
    for name in result.images:
        row = [escape(name)]
        for v in result.variants:
            cell = next((c for c in result.cells if c.image == name and c.variant == v), None)
            if cell is None or cell.score is None:
                row.append("[red]failed[/]")
            else:
                before = "" if cell.score_before is None else f"{cell.score_before:.0f} → "
                row.append(f"{before}{cell.score:.0f} {cell.verdict}")
        table.add_row(*row)
    console.print(table)


def _preview_command(
    source: str,
    presets: list[str],
    grid: str | None,
    sample: int,
    region: str | None,
    out_file: str,
    overrides: list[str],
    device: str | None,
    as_json: bool,
    max_side: int | None = None,
    styles: str | None = None,
    at: str | None = None,
) -> PreviewResult:
    from retouch.lib.models.device import device_for
    from retouch.lib.quality import preview
    from retouch.lib.settings import get_settings
    from retouch.lib.video.review import parse_time

    result = preview.run_preview(
        source,
        _variants(presets, grid, overrides, styles),
        out_file,
        sample_size=sample,
        region=preview.parse_region(region) if region else None,
        device=device_for(device or get_settings().device),
        max_side=max_side,
        at=parse_time(at) if at else None,
    )
    if as_json:
        print_json(result.as_dict())
    else:
        _print_table(result)
        where = out_file if "://" in out_file else os.path.abspath(out_file)
        console.print(f"contact sheet: [bold]{escape(where)}[/] ({result.seconds:.1f} s)")
    return result


SourceArg = Annotated[str, typer.Argument(help="Folder, glob, s3://bucket/prefix, list or .zip")]
PresetOpt = Annotated[
    list[str],
    typer.Option("--preset", "-p", help="Preset or recipe file; repeat to compare styles"),
]
GridOpt = Annotated[
    str | None,
    typer.Option("--grid", help="One parameter swept over values, e.g. sharpen.amount=0.3,0.6,1"),
]
SampleOpt = Annotated[int, typer.Option("--sample", "-n", min=1, max=50, help="Images to try")]
RegionOpt = Annotated[
    str | None,
    typer.Option("--region", help="X,Y,W,H in pixels or fractions: a full-resolution crop"),
]
SetOpt = Annotated[
    list[str], typer.Option("--set", help="STEP.PARAM=VALUE applied before the grid")
]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N")]
AtOpt = Annotated[
    str | None,
    typer.Option(
        "--at",
        help="For videos: the moment to try, in seconds or [HH:]MM:SS[.fff] from the first "
        "frame (default: the middle of each clip)",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the scores as JSON")]
MaxSideOpt = Annotated[
    int | None,
    typer.Option(
        "--max-side",
        min=16,
        help="Process a copy reduced to this many pixels (faster; its scores are then the "
        "reduced copy's, not those of a run)",
    ),
]


@reported(ValueError)
def preview(
    source: SourceArg,
    preset: PresetOpt = ["quick"],  # noqa: B006 (typer reads the default; never mutated)
    grid: GridOpt = None,
    sample: SampleOpt = 3,
    region: RegionOpt = None,
    out_file: Annotated[
        str, typer.Option("--out", "-o", help="Contact sheet (PNG); scores go beside it as JSON")
    ] = "retouch-preview.png",
    overrides: SetOpt = [],  # noqa: B006
    device: DeviceOpt = None,
    as_json: JsonOpt = False,
    max_side: MaxSideOpt = None,
    styles: Annotated[
        str | None,
        typer.Option(
            "--styles",
            help="Compare styles side by side: presets and/or re-drawing models, comma "
            "separated (e.g. anime,face-paint,animeganv2-celeba-distill,painting-sd)",
        ),
    ] = None,
    at: AtOpt = None,
) -> None:
    """Try a recipe on a few images: one contact sheet, original | result per grid value
    (or per preset, or per style), with the input's and the result's score under every
    cell (the scores a run with the same settings gives). A video gives one frame (--at),
    found by seeking, so any moment of a long clip is tried in seconds."""
    _preview_command(
        source,
        preset,
        grid,
        sample,
        region,
        out_file,
        overrides,
        device,
        as_json,
        max_side,
        styles,
        at,
    )


@reported(ValueError)
def tune(
    source: SourceArg,
    grid: Annotated[str, typer.Option("--grid", help="e.g. denoise.strength=3,6,10")],
    preset: Annotated[str, typer.Option("--preset", "-p", help="Preset or recipe file")] = "quick",
    sample: SampleOpt = 3,
    region: RegionOpt = None,
    out_file: Annotated[
        str, typer.Option("--out", "-o", help="Contact sheet of the trials (PNG)")
    ] = "retouch-tune.png",
    save: Annotated[
        str | None,
        typer.Option("--save", help="Save the best parameters as a user preset of this name"),
    ] = None,
    overrides: SetOpt = [],  # noqa: B006
    device: DeviceOpt = None,
    as_json: JsonOpt = False,
    max_side: MaxSideOpt = None,
    at: AtOpt = None,
) -> None:
    """Try each value of a grid on a sample and report the best-scoring one (mean score);
    --save keeps it as a user preset (see `retouch presets list`)."""
    result = _preview_command(
        source,
        [preset],
        grid,
        sample,
        region,
        out_file,
        overrides,
        device,
        as_json,
        max_side,
        at=at,
    )
    best = result.best()
    if best is None:
        raise fail("no trial produced a result: see the contact sheet and the reasons above")
    label, mean = best
    console.print(f"best: [bold]{escape(label)}[/] (mean score {mean:.1f})")
    if save:
        from retouch.lib.recipe import apply_overrides, load_preset, save_user_preset

        recipe = apply_overrides(load_preset(preset), [*overrides, label])
        path = save_user_preset(save, recipe)
        console.print(f"saved preset [bold]{escape(save)}[/]: {escape(str(Path(path)))}")


def _waiting_run(ws: Any, ident: str) -> tuple[str, dict[str, Any]]:
    """The approval record of run ``ident``: retouch's run id, or the Prefect flow run's id
    (as the UI shows it)."""
    from retouch.flows.approval import APPROVAL_FILE
    from retouch.lib import versions
    from retouch.lib.errors import RetouchError

    run_id = ident
    try:
        return run_id, ws.read_json(ws.run_path(run_id, APPROVAL_FILE))
    except (RetouchError, OSError, ValueError):
        pass
    for run in versions.list_runs(ws):
        if run.flow_run_id == ident:
            return run.run_id, ws.read_json(ws.run_path(run.run_id, APPROVAL_FILE))
    waiting = [r.run_id for r in versions.list_runs(ws) if r.state == "waiting for approval"]
    hint = f"; waiting now: {', '.join(waiting)}" if waiting else "; no run is waiting"
    raise fail(
        f"run {ident} is not waiting for approval in {ws.root} (give the run id printed by "
        f"`retouch run` or the Prefect flow run id, and the run's --workspace){hint}"
    )


@reported()
def runs(
    workspace: Annotated[
        str | None, typer.Option("--workspace", help="Workspace of the runs (default: setting)")
    ] = None,
    last: Annotated[int, typer.Option("--last", min=1, help="Show the newest N runs")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """List the runs of the workspace, newest last: id (it starts with the run's UTC date
    and time), preset, state (delivered, waiting for approval, rejected, not delivered),
    images, destination."""
    from retouch.lib import storage, versions

    ws = open_workspace(workspace)
    found = versions.list_runs(ws)[-last:]
    if as_json:
        print_json([r.__dict__ for r in found])
        return
    if not found:
        console.print(f"no runs in {escape(storage.redact(ws.root))}")
        return
    table = Table(show_header=True)
    table.add_column("run (date-time-id)", no_wrap=True)
    table.add_column("preset", overflow="fold")
    table.add_column("state", no_wrap=True)
    table.add_column("images", no_wrap=True)
    table.add_column("destination", overflow="fold")
    for r in found:
        s = r.summary
        images = f"{s.get('succeeded', 0)}/{s.get('total', 0)} ok" if s else ""
        state = r.state if r.state != "waiting for approval" else f"[yellow]{r.state}[/]"
        table.add_row(
            escape(r.run_id),
            escape(r.preset),
            state,
            images,
            escape(storage.redact(r.dest)),
        )
    out.print(table)


@reported(ValueError)
def approve(
    run_id: Annotated[
        str,
        typer.Argument(help="The run id shown when the run started, or its Prefect flow run id"),
    ],
    regenerate: Annotated[
        list[str],
        typer.Option("--regenerate", "-r", help="Image to redo before export (repeatable)"),
    ] = [],  # noqa: B006
    overrides: Annotated[
        list[str], typer.Option("--set", help="STEP.PARAM=VALUE for the regenerated images")
    ] = [],  # noqa: B006
    reject: Annotated[bool, typer.Option("--reject", help="Export nothing")] = False,
    note: Annotated[str, typer.Option("--note", help="Kept in the run's records")] = "",
    workspace: Annotated[
        str | None, typer.Option("--workspace", help="Workspace of the run (default: setting)")
    ] = None,
) -> None:
    """Resume a run paused for approval (recipe review.approve): approve its export, redo
    some images with overrides first, or reject it."""
    from uuid import UUID

    from retouch.lib.quality.gate import ApprovalDecision

    if reject and regenerate:
        raise fail("--reject and --regenerate exclude each other")
    run_id, pending = _waiting_run(open_workspace(workspace), run_id)
    if pending.get("status") != "waiting" or not pending.get("flow_run_id"):
        raise fail(f"run {run_id} is not waiting for approval (status: {pending.get('status')})")
    names = {img["name"] for img in pending.get("images", [])}
    unknown = sorted(set(regenerate) - names)
    if unknown:
        raise fail(
            f"run {run_id} has no image named {', '.join(unknown)}; its images: "
            + ", ".join(sorted(names))
        )
    action = "reject" if reject else "regenerate" if regenerate else "approve"
    decision = ApprovalDecision(action=action, images=regenerate, overrides=overrides, note=note)
    if overrides:  # validate now, while the user is here to fix a typo
        from retouch.lib.recipe import apply_overrides, recipe_from_dict

        manifest_recipe = pending.get("recipe")
        if manifest_recipe:
            apply_overrides(recipe_from_dict(manifest_recipe), overrides)
    flow_run = UUID(pending["flow_run_id"])
    from prefect.exceptions import NotPausedError
    from prefect.flow_runs import resume_flow_run

    # The run announces its pause (approval.json, the message) just before Prefect marks
    # it paused: an approver that quick is a moment early, not wrong.
    deadline = time.monotonic() + PAUSE_GRACE_S
    while True:
        try:
            resume_flow_run(flow_run, run_input=decision.model_dump())
            break
        except ValueError:
            raise  # reported as itself, as a bad id is
        except NotPausedError as exc:
            if time.monotonic() >= deadline:
                raise fail(f"could not resume run {run_id}: {type(exc).__name__}: {exc}") from None
            time.sleep(0.5)
        except Exception as exc:  # the Prefect API refused (e.g. the run is no longer paused)
            raise fail(f"could not resume run {run_id}: {type(exc).__name__}: {exc}") from None
    console.print(f"run {escape(run_id)}: {action} sent")


def advice_table(advice: list[Advice]) -> Table:
    """Each image's recommended preset and why (or why it could not be read)."""
    table = Table(title="recommendations", show_header=True)
    for col in ("image", "preset", "why"):
        table.add_column(col, overflow="fold")
    for a in advice:
        why = "[red]" + escape(a.error) + "[/]" if a.error else escape("; ".join(a.tips))
        table.add_row(escape(a.name), a.preset or "-", why)
    return table


@reported()
def recommend(
    source: SourceArg,
    as_json: JsonOpt = False,
    workspace: Annotated[
        str | None,
        typer.Option("--workspace", help="Workspace whose history informs the advice"),
    ] = None,
) -> None:
    """Analyse SOURCE and recommend a preset per image, grouped by what the images need
    (size, faces, blur, noise, exposure, colour cast, drawing or photo). `retouch run
    --auto` runs each group with its preset."""
    from retouch.lib import sources
    from retouch.lib.quality import recommend as rec
    from retouch.lib.quality.runnable import runnable_groups
    from retouch.lib.settings import get_settings

    found = sources.discover(source, follow_symlinks=get_settings().follow_symlinks)
    if not found.items:
        raise fail("no images found")
    learned = rec.learn_from_history(open_workspace(workspace))
    advice = rec.advise(found.items, pixel_limit=get_settings().pixel_limit, learned=learned)
    grouped, notes = runnable_groups(rec.groups(advice), fetch=False)
    if as_json:
        print_json(
            {
                "images": [a.as_dict() for a in advice],
                "groups": {k: [a.name for a in v] for k, v in grouped.items()},
                "learned": {k: v.__dict__ for k, v in learned.items()},
                "notes": notes,
            }
        )
        return
    console.print(advice_table(advice))
    for note in notes:
        console.print(f"[yellow]{escape(note)}[/]", highlight=False, soft_wrap=True)
    for preset, members in grouped.items():
        extra = f" with {', '.join(members[0].overrides)}" if members[0].overrides else ""
        console.print(f"[bold]{preset}[/]{escape(extra)}: {len(members)} image(s)")


def register(app: typer.Typer) -> None:
    """Add ``preview``, ``tune``, ``approve``, ``runs`` and ``recommend`` to the ``retouch``
    command line."""
    app.command()(preview)
    app.command()(tune)
    app.command()(approve)
    app.command()(runs)
    app.command()(recommend)
