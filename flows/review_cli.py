"""``retouch preview`` and ``retouch tune``: try a recipe on a few images in seconds.

Both run in this process without Prefect (no server to start), on a sample of the source
(at full resolution, so each score is the one a run gives; or cut to a region, or reduced
with --max-side, for speed), and write a contact sheet with a score per cell. ``tune`` also names the best-scoring value and can save it as a user preset.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console(stderr=True)
out = Console()


def _fail(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


def _variants(presets: list[str], grid: str | None, overrides: list[str]):
    from retouch.lib.quality import preview
    from retouch.lib.recipe import apply_overrides, load_preset

    recipes = [load_preset(p) for p in presets]
    if overrides:
        recipes = [apply_overrides(r, overrides) for r in recipes]
    parsed = preview.parse_grid(grid) if grid else None
    if parsed and len(recipes) > 1:
        raise ValueError("use --grid with one preset, or several presets without --grid")
    if len(recipes) > 1:  # style comparison: one column per preset
        return [preview.Variant(r.name, r) for r in recipes]
    return preview.variants_for(recipes[0], parsed)


def _print_table(result) -> None:
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
):
    from retouch.lib.errors import RetouchError
    from retouch.lib.models.device import device_for
    from retouch.lib.quality import preview
    from retouch.lib.settings import get_settings

    try:
        variants = _variants(presets, grid, overrides)
        result = preview.run_preview(
            source,
            variants,
            out_file,
            sample_size=sample,
            region=preview.parse_region(region) if region else None,
            device=device_for(device or get_settings().device),
            max_side=max_side,
        )
    except (RetouchError, ValueError) as exc:
        raise _fail(str(exc)) from None
    if as_json:
        out.print_json(json.dumps(result.as_dict()))
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
) -> None:
    """Try a recipe on a few images: one contact sheet, original | result per grid value
    (or per preset), with the input's and the result's score under every cell (the scores
    a run with the same settings gives)."""
    _preview_command(
        source, preset, grid, sample, region, out_file, overrides, device, as_json, max_side
    )


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
) -> None:
    """Try each value of a grid on a sample and report the best-scoring one (mean score);
    --save keeps it as a user preset (see `retouch presets list`)."""
    result = _preview_command(
        source, [preset], grid, sample, region, out_file, overrides, device, as_json, max_side
    )
    best = result.best()
    if best is None:
        raise _fail("no trial produced a result: see the contact sheet and the reasons above")
    label, mean = best
    console.print(f"best: [bold]{escape(label)}[/] (mean score {mean:.1f})")
    if save:
        from retouch.lib.errors import RetouchError
        from retouch.lib.recipe import apply_overrides, load_preset, save_user_preset

        try:
            recipe = apply_overrides(load_preset(preset), [*overrides, label])
            path = save_user_preset(save, recipe)
        except RetouchError as exc:
            raise _fail(str(exc)) from None
        console.print(f"saved preset [bold]{escape(save)}[/]: {escape(str(Path(path)))}")


def _waiting_run(ws, ident: str) -> tuple[str, dict]:
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
    raise _fail(
        f"run {ident} is not waiting for approval in {ws.root} (give the run id printed by "
        f"`retouch run` or the Prefect flow run id, and the run's --workspace){hint}"
    )


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
    from retouch.lib.settings import get_settings
    from retouch.lib.workspace import Workspace

    ws = Workspace(workspace or get_settings().resolved_workspace())
    found = versions.list_runs(ws)[-last:]
    if as_json:
        out.print_json(json.dumps([r.__dict__ for r in found]))
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

    from retouch.lib.errors import RetouchError
    from retouch.lib.quality.gate import ApprovalDecision
    from retouch.lib.settings import get_settings
    from retouch.lib.workspace import Workspace

    if reject and regenerate:
        raise _fail("--reject and --regenerate exclude each other")
    ws = Workspace(workspace or get_settings().resolved_workspace())
    run_id, pending = _waiting_run(ws, run_id)
    if pending.get("status") != "waiting" or not pending.get("flow_run_id"):
        raise _fail(f"run {run_id} is not waiting for approval (status: {pending.get('status')})")
    names = {img["name"] for img in pending.get("images", [])}
    unknown = sorted(set(regenerate) - names)
    if unknown:
        raise _fail(
            f"run {run_id} has no image named {', '.join(unknown)}; its images: "
            + ", ".join(sorted(names))
        )
    action = "reject" if reject else "regenerate" if regenerate else "approve"
    decision = ApprovalDecision(action=action, images=regenerate, overrides=overrides, note=note)
    try:
        if overrides:  # validate now, while the user is here to fix a typo
            from retouch.lib.recipe import apply_overrides, recipe_from_dict

            manifest_recipe = pending.get("recipe")
            if manifest_recipe:
                apply_overrides(recipe_from_dict(manifest_recipe), overrides)
        from prefect.flow_runs import resume_flow_run

        resume_flow_run(UUID(pending["flow_run_id"]), run_input=decision.model_dump())
    except (RetouchError, ValueError) as exc:
        raise _fail(str(exc)) from None
    except Exception as exc:  # the Prefect API refused (e.g. the run is no longer paused)
        raise _fail(f"could not resume run {run_id}: {type(exc).__name__}: {exc}") from None
    console.print(f"run {escape(run_id)}: {action} sent")


def _advice_table(advice) -> Table:
    table = Table(title="recommendations", show_header=True)
    for col in ("image", "preset", "why"):
        table.add_column(col, overflow="fold")
    for a in advice:
        why = "[red]" + escape(a.error) + "[/]" if a.error else escape("; ".join(a.tips))
        table.add_row(escape(a.name), a.preset or "-", why)
    return table


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
    from retouch.lib.errors import RetouchError
    from retouch.lib.quality import recommend as rec
    from retouch.lib.settings import get_settings
    from retouch.lib.workspace import Workspace

    try:
        found = sources.discover(source, follow_symlinks=get_settings().follow_symlinks)
    except RetouchError as exc:
        raise _fail(str(exc)) from None
    if not found.items:
        raise _fail("no images found")
    learned = rec.learn_from_history(Workspace(workspace or get_settings().resolved_workspace()))
    advice = rec.advise(found.items, pixel_limit=get_settings().pixel_limit, learned=learned)
    grouped, notes = _runnable_groups(rec.groups(advice), fetch=False)
    if as_json:
        data = {
            "images": [a.as_dict() for a in advice],
            "groups": {k: [a.name for a in v] for k, v in grouped.items()},
            "learned": {k: v.__dict__ for k, v in learned.items()},
            "notes": notes,
        }
        out.print_json(json.dumps(data))
        return
    console.print(_advice_table(advice))
    for note in notes:
        console.print(f"[yellow]{escape(note)}[/]", highlight=False, soft_wrap=True)
    for preset, members in grouped.items():
        extra = f" with {', '.join(members[0].overrides)}" if members[0].overrides else ""
        console.print(f"[bold]{preset}[/]{escape(extra)}: {len(members)} image(s)")


def _blocker(preset: str, fetch: bool) -> str | None:
    """Why ``preset`` cannot run here (its model weights can't be had), or None. With
    ``fetch``, weights that can be fetched are fetched now (as a run would); without, only
    looked up (nothing downloaded)."""
    from retouch.lib.errors import RetouchError
    from retouch.lib.models.fetch import missing_weights
    from retouch.lib.phases.keys import weights_ids
    from retouch.lib.recipe import load_preset

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


def _runnable_groups(grouped: dict, fetch: bool = True) -> tuple[dict, list[str]]:
    """Groups whose preset can run here; a preset whose model weights can't be had (missing,
    offline, no mirror) hands its images to the default preset, with a note saying what the
    better one needs (see :func:`_blocker`)."""
    from retouch.lib.recipe import DEFAULT_PRESET

    out: dict = {}
    notes = []
    for preset, members in grouped.items():
        target = preset
        if preset != DEFAULT_PRESET:
            exc = _blocker(preset, fetch)
            if exc is not None:
                target = DEFAULT_PRESET
                notes.append(
                    f"{preset} would suit {len(members)} image(s) but cannot run here, so they "
                    f"get {DEFAULT_PRESET}: {exc}"
                )
                for a in members:
                    a.preset, a.overrides = DEFAULT_PRESET, []
                    a.tips.append(f"{preset} would fit better: {exc}")
        out.setdefault(target, []).extend(members)
    return out, notes


def run_auto(items, out_dir: str, overrides: list[str], options, json_out: bool) -> int:
    """Run each recommended group with its preset into OUT/<preset>; the worst exit code."""
    import tempfile

    from retouch.flows.enhance import enhance
    from retouch.flows.runtime import ad_hoc_run
    from retouch.lib import storage
    from retouch.lib.errors import RetouchError
    from retouch.lib.quality import recommend as rec
    from retouch.lib.recipe import apply_overrides, load_preset
    from retouch.lib.settings import get_settings
    from retouch.lib.workspace import Workspace

    ws = Workspace(options.workspace or get_settings().resolved_workspace())
    learned = rec.learn_from_history(ws)
    advice = rec.advise(items, pixel_limit=get_settings().pixel_limit, learned=learned)
    grouped, notes = _runnable_groups(rec.groups(advice))
    if not json_out:
        console.print(_advice_table(advice))
        for note in notes:
            console.print(f"[yellow]{escape(note)}[/]", highlight=False, soft_wrap=True)
    # Only export settings apply across presets; step overrides name one recipe's steps.
    shared = [o for o in overrides if o.split("=", 1)[0].startswith("export.")]
    codes, summaries = [], {}
    with tempfile.TemporaryDirectory(prefix="retouch-auto-") as tmp:
        for preset, members in grouped.items():
            listing = Path(tmp) / f"{preset}.txt"
            listing.write_text("\n".join(a.uri for a in members) + "\n", encoding="utf-8")
            try:
                # What the history learned for this kind of image, then the user's export.
                recipe = apply_overrides(load_preset(preset), [*members[0].overrides, *shared])
                with ad_hoc_run():
                    summary = enhance(
                        source=str(listing),
                        dest=storage.join(out_dir, preset),
                        recipe=recipe,
                        options=options,
                    )
            except RetouchError as exc:
                console.print(f"[red]{preset}: {escape(str(exc))}[/]")
                codes.append(1)
                continue
            codes.append(summary.exit_code)
            summaries[preset] = summary.model_dump(mode="json")
            console.print(
                f"[bold]{preset}[/]: {summary.succeeded} of {summary.total} delivered to "
                f"{escape(storage.redact(storage.join(out_dir, preset)))}"
            )
    unreadable = [a for a in advice if a.error]
    if json_out:
        out.print_json(
            json.dumps({"groups": summaries, "unreadable": [a.as_dict() for a in unreadable]})
        )
    if not codes:
        return 1
    if max(codes) == 1 and min(codes) == 1:
        return 1
    return 2 if unreadable or any(c != 0 for c in codes) else 0


def register(app: typer.Typer) -> None:
    """Add ``preview``, ``tune``, ``approve``, ``runs`` and ``recommend`` to the ``retouch``
    command line."""
    app.command()(preview)
    app.command()(tune)
    app.command()(approve)
    app.command()(runs)
    app.command()(recommend)
