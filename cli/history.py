"""A run's images after it ran: their versions (list, compare, roll back), regenerating some,
re-delivering the run and replacing sources."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from retouch.cli.common import (
    EXIT_NOTHING,
    EventsOpt,
    VerboseOpt,
    WorkspaceOpt,
    console,
    fail,
    open_workspace,
    out,
    prefect_defaults,
    print_json,
    reported,
    where,
)
from retouch.cli.output import follow_events, print_summary

if TYPE_CHECKING:
    from retouch.flows.regenerate import RegenerateOptions

RunIdArg = Annotated[str, typer.Argument(help="Run id")]
BestOpt = Annotated[bool, typer.Option("--best", help="Export each image's best-scoring version")]
DeliverOpt = Annotated[
    str | None, typer.Option("--out", "-o", help="Deliver here (default: the run's --out)")
]


@reported()
def versions_cmd(
    image: Annotated[str, typer.Argument(help="Source file, image id (or prefix) or image name")],
    workspace: WorkspaceOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the versions as JSON")] = False,
) -> None:
    """List every version of an image: number, time, run, score, recipe and result key.

    An image is its source content plus its file name. Example: retouch versions photos/a.jpg
    """
    from retouch.lib import versions

    store = versions.VersionStore(open_workspace(workspace))
    image_id = store.find(image)
    history = store.history(image_id)
    current = store.current(image_id, history)
    if json_out:
        items = [json.loads(versions.dumps(v)) for v in history]
        for item in items:
            item["current"] = current is not None and item["stamp"] == current.stamp
        print_json({"image_id": image_id, "versions": items})
        return
    table = Table(title=f"image {image_id}", show_header=True)
    for col in ("", "version", "created", "run", "score", "verdict", "steps", "result"):
        table.add_column(col)
    for v in history:
        steps = " → ".join(
            f"{s['op']}({', '.join(f'{k}={val}' for k, val in s['params'].items())})"
            for s in v.recipe.get("steps", [])
        )
        table.add_row(
            "*" if current and v.stamp == current.stamp else "",
            str(v.number),
            v.created,
            v.run_id,
            "" if v.scores.score is None else str(v.scores.score),
            v.scores.verdict or "",
            escape(steps or "no steps"),
            v.result_key[:12],
        )
    out.print(table)
    console.print("* = current version", highlight=False)


@reported()
def compare_cmd(
    image: Annotated[str, typer.Argument(help="Source file, image id or image name")],
    v1: Annotated[int, typer.Argument(help="First version number (left)")],
    v2: Annotated[int, typer.Argument(help="Second version number (right)")],
    out_file: Annotated[
        str | None, typer.Option("--out", "-o", help="PNG to write (default compare-ID-V1-V2.png)")
    ] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Write the results of two versions of an image side by side into one PNG.

    Example: retouch compare photos/a.jpg 1 2 --out a-1-vs-2.png
    """
    from retouch.lib import storage, versions

    ws = open_workspace(workspace)
    store = versions.VersionStore(ws)
    image_id = store.find(image)
    pair = [store.get(image_id, v1), store.get(image_id, v2)]
    data = versions.side_by_side(ws, pair)
    target = out_file or f"compare-{image_id[:12]}-{v1}-{v2}.png"
    storage.write_bytes(target, data)
    typer.echo(where(target))


@reported()
def rollback_cmd(
    image: Annotated[str, typer.Argument(help="Source file, image id or image name")],
    version: Annotated[int, typer.Argument(help="Version number to make current again")],
    workspace: WorkspaceOpt = None,
) -> None:
    """Make an older version of an image current again (`retouch export RUN` re-delivers a run
    with it). Example: retouch rollback photos/a.jpg 1
    """
    from retouch.lib import versions

    store = versions.VersionStore(open_workspace(workspace))
    image_id = store.find(image)
    chosen = store.get(image_id, version)
    store.set_current(image_id, chosen, note="rollback")
    console.print(
        f"{escape(chosen.name)}: version {chosen.number} (run {chosen.run_id}) is current "
        f"again; `retouch export {chosen.run_id}` re-delivers that run with it",
        highlight=False,
        soft_wrap=True,
    )


def _run_regenerate(
    run_id: str, options: RegenerateOptions, json_out: bool, events: str | None = None
) -> None:
    from retouch.flows.regenerate import regenerate, select_records
    from retouch.flows.runtime import ad_hoc_run
    from retouch.lib import versions

    # Checked before Prefect starts, so a typo costs no server start-up.
    state = versions.load_run(open_workspace(options.workspace), run_id)
    select_records(state.records, options)
    stop_events = follow_events(events)
    try:
        with ad_hoc_run():
            summary = regenerate(run_id=run_id, options=options)
    finally:
        stop_events()
    if json_out:
        print_json(summary.model_dump(mode="json"))
    print_summary(summary)
    raise typer.Exit(summary.exit_code)


def _names(values: list[str] | None) -> list[str]:
    return [n.strip() for v in values or [] for n in v.split(",") if n.strip()]


@reported()
def regenerate_cmd(
    run_id: Annotated[str, typer.Argument(help="Run id (printed by `retouch run`)")],
    select: Annotated[
        list[str] | None,
        typer.Option("--select", help="Image names to re-process (repeat, or comma-separated)"),
    ] = None,
    failed: Annotated[bool, typer.Option("--failed", help="Re-process the failed images")] = False,
    worse: Annotated[
        bool, typer.Option("--worse", help="Re-process the images the review judged worse")
    ] = False,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="Override STEP.PARAM=VALUE for the re-processed images"),
    ] = None,
    best: BestOpt = False,
    keep_worse: Annotated[
        bool,
        typer.Option(
            "--keep-worse",
            help="Make a regenerated version current even when it scores below the one it "
            "replaces (by default the better one stays current)",
        ),
    ] = False,
    out_dir: DeliverOpt = None,
    workspace: WorkspaceOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON")] = False,
    verbose: VerboseOpt = False,
    events: EventsOpt = None,
) -> None:
    """Re-process selected images of an earlier run (its recipe plus --set overrides), record
    them as new versions and re-deliver the run's ZIP, manifest and report.

    Examples:
      retouch regenerate 20260101-120000-ab12cd --select a.jpg,b.jpg --set sharpen.amount=0.4
      retouch regenerate 20260101-120000-ab12cd --failed
    """
    prefect_defaults(verbose)
    from retouch.flows.regenerate import RegenerateOptions

    names = _names(select)
    if not (names or failed or worse):
        raise fail("nothing selected: give --select NAMES, --failed or --worse")
    options = RegenerateOptions(
        select=names,
        failed=failed,
        worse=worse,
        overrides=overrides or [],
        pick="best" if best else "current",
        keep_worse=keep_worse,
        dest=out_dir,
        workspace=workspace,
    )
    _run_regenerate(run_id, options, json_out, events)


@reported()
def export_cmd(
    run_id: RunIdArg,
    best: BestOpt = False,
    out_dir: DeliverOpt = None,
    workspace: WorkspaceOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Re-deliver a run with each image's current version (after a rollback), or its best one.

    Example: retouch export 20260101-120000-ab12cd --best
    """
    prefect_defaults(verbose)
    from retouch.flows.regenerate import RegenerateOptions

    options = RegenerateOptions(
        pick="best" if best else "current", dest=out_dir, workspace=workspace
    )
    _run_regenerate(run_id, options, False)


@reported()
def replace_cmd(
    run_id: RunIdArg,
    name: Annotated[
        str | None, typer.Argument(help="Image name in the run (as in its manifest)")
    ] = None,
    new_file: Annotated[str | None, typer.Argument(help="The new source file")] = None,
    map_file: Annotated[
        Path | None,
        typer.Option("--map", help="Text file of 'OLD-NAME -> NEW-FILE' lines (many at once)"),
    ] = None,
    undo: Annotated[bool, typer.Option("--undo", help="Undo the run's last replacement")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Don't ask for confirmation")] = False,
    preview_dir: Annotated[
        str | None,
        typer.Option(
            "--preview", help="Folder for the preview thumbnails (default ./retouch-preview/RUN)"
        ),
    ] = None,
    workspace: WorkspaceOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Replace the source of images in a run (keeping its recipe), process them as new
    versions and re-deliver the run; --undo brings the old sources and versions back.

    Examples:
      retouch replace 20260101-120000-ab12cd a.jpg ~/reshoot/a.jpg
      retouch replace 20260101-120000-ab12cd --map replacements.txt --yes
      retouch replace 20260101-120000-ab12cd --undo
    """
    prefect_defaults(verbose)
    from retouch.flows.regenerate import RegenerateOptions
    from retouch.lib import replace

    ws = open_workspace(workspace)
    if undo:
        if name or new_file or map_file:
            raise fail("--undo takes only the run id")
        for item in replace.undo(ws, run_id):
            console.print(
                f"{escape(item['name'])}: back to {escape(item['old_source'])}", highlight=False
            )
        _run_regenerate(run_id, RegenerateOptions(workspace=workspace), False)
        return
    if map_file is not None:
        if name or new_file:
            raise fail("give either NAME NEWFILE or --map FILE, not both")
        pairs = replace.read_map(map_file)
    elif name and new_file:
        pairs = [(name, new_file)]
    else:
        raise fail("give NAME NEWFILE, --map FILE or --undo")
    folder = preview_dir or os.path.join("retouch-preview", run_id)
    planned = replace.plan(ws, run_id, pairs, folder)
    console.print(f"replacements in run {run_id}:", highlight=False)
    for replacement in planned:
        console.print(escape(replacement.describe()), highlight=False, soft_wrap=True)
    console.print(
        f"preview thumbnails (old/new): {escape(where(folder))}", highlight=False, soft_wrap=True
    )
    if not yes and not typer.confirm(f"Replace {len(planned)} image(s) and re-deliver the run?"):
        raise fail("nothing replaced", EXIT_NOTHING)
    options = RegenerateOptions(
        sources=replace.save(ws, run_id, planned), workspace=workspace, note="replacement source"
    )
    _run_regenerate(run_id, options, False)


def register(app: typer.Typer) -> None:
    """Add ``versions``, ``compare``, ``rollback``, ``regenerate``, ``export`` and ``replace``
    to the ``retouch`` command line."""
    app.command("versions")(versions_cmd)
    app.command("compare")(compare_cmd)
    app.command("rollback")(rollback_cmd)
    app.command("regenerate")(regenerate_cmd)
    app.command("export")(export_cmd)
    app.command("replace")(replace_cmd)
