"""The ``retouch`` command line: ad hoc runs with progress bars, models and presets."""

from __future__ import annotations

import inspect
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from retouch.flows import deploy_cli, models_cli, review_cli, web_cli
from retouch.lib.recipe import DEFAULT_PRESET

if TYPE_CHECKING:
    from retouch.lib import progress as ev

console = Console(stderr=True)
out = Console()

app = typer.Typer(
    name="retouch",
    help="Batch photo enhancement: face restoration, super-resolution, inpainting and classic "
    "operations, run as Prefect flows.\n\nExample: retouch run ./photos --preset quick --out ./delivery",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
presets_app = typer.Typer(
    help="Recipes: shipped and saved presets; list, show or save one.", no_args_is_help=True
)
app.add_typer(presets_app, name="presets")

EXIT_OK, EXIT_NOTHING, EXIT_PARTIAL = 0, 1, 2


_verbose = False


def _prefect_defaults(verbose: bool) -> None:
    """Quiet, offline-friendly Prefect defaults; anything the user set wins."""
    global _verbose
    _verbose = verbose
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    if not verbose:
        # A quiet terminal, while the run's own INFO logs still reach the server (the UI's
        # log tab): only the console handler is raised, not the loggers.
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
        # An embedded server shares the terminal: its own shutdown noise (events still being
        # recorded as it stops, after the run is complete) is no news to the user.
        os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")
        # "Still processing items" while the last events are sent at exit: nothing is lost.
        logging.getLogger("EventsWorker").setLevel(logging.ERROR)


def _fail(message: str, code: int = EXIT_NOTHING) -> typer.Exit:
    from retouch.lib import progress

    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    progress.emit(
        progress.RunError(message=message)
    )  # also into an --events file, when one is followed
    return typer.Exit(code)


class _Rate(ProgressColumn):
    """Images per second over the phase so far."""

    def render(self, task: Any) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:5.1f} img/s" if speed else "   -- img/s", style="cyan")


def _where(uri: str | None) -> str:
    """Local results as absolute paths (so they can be opened from anywhere); URLs as they are."""
    from retouch.lib.storage import redact

    if not uri:
        return "(nothing to deliver)"
    return redact(uri) if "://" in uri else os.path.abspath(uri)


class _Bars:
    """Progress bars fed by lib.progress events (one bar per phase)."""

    PHASES = ("prepare", "process", "review", "export")

    def __init__(self, progress: Progress):
        self.progress = progress
        self.ids = {
            p: progress.add_task(p, total=None, current="", start=False) for p in self.PHASES
        }
        self.lock = threading.Lock()

    def __call__(self, event: ev.Event) -> None:
        from retouch.lib import progress as ev

        with self.lock:
            if isinstance(event, ev.RunStarted):
                for task_id in self.ids.values():
                    self.progress.update(task_id, total=event.total)
                    self.progress.start_task(task_id)
            elif isinstance(event, ev.ImagePhaseDone) and event.phase in self.ids:
                name = escape(event.name)
                mark = "" if event.ok else " [red](failed)[/]"
                self.progress.update(self.ids[event.phase], advance=1, current=f"{name}{mark}")
            elif isinstance(event, ev.FlowRunLinked) and event.url:
                self.progress.console.print(
                    f"Prefect UI: {escape(event.url)}", highlight=False, soft_wrap=True
                )
            elif isinstance(event, ev.ApprovalWaiting):
                for line in approval_lines(event):
                    self.progress.console.print(line, highlight=False, soft_wrap=True)


def approval_lines(event: ev.ApprovalWaiting) -> list[str]:
    """What a paused run tells the person at the terminal: that it waits, for how long, and
    the exact commands (or the UI page) that resume it."""
    from retouch.lib.settings import get_settings

    run_id = event.run_id
    ws = event.workspace
    where = "" if not ws or ws == get_settings().resolved_workspace() else f" --workspace {ws}"
    timeout = event.timeout_s
    wait = f" (for up to {int(timeout)} s)" if timeout else ""
    lines = [
        f"[bold yellow]paused:[/] run {escape(run_id)} is waiting for approval{wait}",
        f"  approve:  retouch approve {escape(run_id)}{escape(where)}",
        f"  redo:     retouch approve {escape(run_id)}{escape(where)} --regenerate NAME "
        "--set STEP.PARAM=VALUE",
        f"  reject:   retouch approve {escape(run_id)}{escape(where)} --reject",
    ]
    if event.url:
        lines.append(f"  or in the Prefect UI: {escape(event.url)}")
    return lines


class _EventLog:
    """Appends every lib.progress event to a file as one JSON line (for a front end to follow).

    Events come from the flow's worker threads: a lock keeps lines whole, and each line is
    flushed so a reader sees it at once.
    """

    def __init__(self, path: str):
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115  (closed by close())
        self.lock = threading.Lock()

    def __call__(self, event: ev.Event) -> None:
        from retouch.lib import progress as ev

        line = ev.to_json(event)
        with self.lock:
            self.file.write(line + "\n")
            self.file.flush()

    def close(self) -> None:
        with self.lock:
            self.file.close()


def _follow_events(path: str | None) -> Any:
    """Subscribe an :class:`_EventLog` on ``path`` (if given); returns the function that stops it."""
    from retouch.lib import progress

    if not path:
        return lambda: None
    try:
        log = _EventLog(path)
    except OSError as exc:
        raise _fail(f"{path}: cannot write the events file ({exc.strerror})") from None
    unsubscribe = progress.subscribe(log)

    def stop() -> None:
        unsubscribe()
        log.close()

    return stop


EventsOpt = Annotated[
    str | None,
    typer.Option(
        "--events",
        help="Append every progress event to FILE as one JSON line (for front ends)",
        metavar="FILE",
    ),
]


# Shared by the commands that take a source and a recipe.
SourceArg = Annotated[
    str, typer.Argument(help="Folder, glob, s3://bucket/prefix, list file (.txt) or .zip")
]
PresetOpt = Annotated[
    str,
    typer.Option("--preset", "-p", help="Preset name (see `retouch presets list`) or recipe file"),
]


@app.command()
def run(
    source: SourceArg,
    out_dir: Annotated[
        str,
        typer.Option(
            "--out", "-o", help="Destination folder or fsspec URL for ZIP, manifest, report"
        ),
    ],
    preset: PresetOpt = DEFAULT_PRESET,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            "-s",
            help="Override STEP.PARAM=VALUE, e.g. upscale.outscale=2 or export.format=png",
        ),
    ] = None,
    masks: Annotated[
        str | None,
        typer.Option(
            help="Inpainting masks: a folder (one per image, matched by file stem) or one "
            "mask file for every image"
        ),
    ] = None,
    workspace: Annotated[
        str | None, typer.Option(help="Workspace for results (default RETOUCH_WORKSPACE)")
    ] = None,
    chunk_size: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Images per task (default: automatic, at most RETOUCH_MAX_CHUNKS tasks per phase)",
        ),
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N")] = None,
    refresh: Annotated[
        bool, typer.Option(help="Recompute every image, ignoring cached results")
    ] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the run summary as JSON on stdout")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show Prefect's own logs")
    ] = False,
    auto: Annotated[
        bool,
        typer.Option(
            "--auto",
            help="Analyse first, then run each group of images with the preset recommended "
            "for it, into OUT/<preset> (see `retouch recommend`)",
        ),
    ] = False,
    events: EventsOpt = None,
) -> None:
    """Run the four-phase batch flow over SOURCE and deliver the results to --out.

    Exit codes: 0 every image succeeded; 2 some failed (the rest are delivered, the manifest
    says why); 1 nothing could be done (bad arguments, no images, missing model weights).

    Examples:
      retouch run samples --preset quick --out out/demo
      retouch run s3://studio/inbox/ --preset portrait-restore --out s3://studio/delivered/
      retouch run shoot.zip -p upscale-x4 --set upscale.outscale=2 --set export.format=webp -o out
    """
    _prefect_defaults(verbose)
    from retouch.lib import locks, sources
    from retouch.lib.delivery import delivery
    from retouch.lib.errors import RetouchError
    from retouch.lib.phases.keys import weights_ids
    from retouch.lib.recipe import apply_overrides, load_preset
    from retouch.lib.settings import get_settings
    from retouch.lib.storage import check_no_inline_credentials, redact

    try:
        recipe = apply_overrides(load_preset(preset), overrides or [])
        # Refused before Prefect starts: the destination becomes a recorded flow parameter.
        check_no_inline_credentials(out_dir)
        found = sources.discover(source, follow_symlinks=get_settings().follow_symlinks)
        if not found.items:
            why = (
                f"; skipped: {redact(found.skipped[0][0])}: {found.skipped[0][1]}"
                if found.skipped
                else ""
            )
            raise _fail(f"{redact(source)}: no images found{why}")
        weights_ids(recipe)  # a missing model stops here, before Prefect starts
        # One run at a time into a destination (the second would replace the first's
        # delivery), and one that can be written: found now, not after every image.
        dest_lock = locks.lock_destination(out_dir, get_settings().home / "locks")
        delivery.check_destination(out_dir)
    except RetouchError as exc:
        raise _fail(str(exc)) from None

    from retouch.lib.models.compat import preload

    preload(recipe.models())  # the model libraries import while Prefect starts
    from retouch.flows import runtime
    from retouch.flows.enhance import RunOptions

    if not verbose:
        runtime.tidy_console()
    options = RunOptions(
        masks=masks, workspace=workspace, chunk_size=chunk_size, refresh=refresh, device=device
    )
    stop_events = _follow_events(events)
    try:
        try:
            runtime.start_embedded_server()
        except Exception as exc:  # the server's own errors vary; the message says what failed
            raise _fail(f"could not start a local Prefect server: {exc}") from None
        _run_flow(source, out_dir, recipe, found, options, overrides, json_out, auto)
    finally:
        stop_events()
        dest_lock.release()


def _run_flow(
    source: str,
    out_dir: str,
    recipe: Any,
    found: Any,
    options: Any,
    overrides: list[str] | None,
    json_out: bool,
    auto: bool,
) -> None:
    from retouch.flows.enhance import enhance
    from retouch.flows.runtime import ad_hoc_run
    from retouch.lib import progress
    from retouch.lib.errors import RetouchError
    from retouch.lib.storage import redact

    if auto:
        raise typer.Exit(
            review_cli.run_auto(found.items, out_dir, overrides or [], options, json_out)
        )
    console.print(
        f"retouch: {len(found.items)} images, preset [bold]{escape(recipe.name)}[/] "
        f"({' → '.join(s.op for s in recipe.steps) or 'no steps'}); starting Prefect…",
        highlight=False,
    )
    columns = (
        TextColumn("{task.description:<8}"),
        BarColumn(),
        MofNCompleteColumn(),
        _Rate(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[current]}", style="dim"),
    )
    try:
        with Progress(
            *columns, console=console, transient=False, disable=json_out and not sys.stderr.isatty()
        ) as bars:
            unsubscribe = progress.subscribe(_Bars(bars))
            try:
                with ad_hoc_run():
                    summary = enhance(source=source, dest=out_dir, recipe=recipe, options=options)
            finally:
                unsubscribe()
    except RetouchError as exc:
        raise _fail(str(exc)) from None

    if json_out:
        shown = summary.model_dump(mode="json")
        for key in ("zip_uri", "manifest_uri", "report_uri"):
            shown[key] = redact(shown[key]) if shown[key] else None
        out.print_json(json.dumps(shown))
    _print_summary(summary)
    raise typer.Exit(summary.exit_code)


def _print_summary(summary: Any) -> None:
    from retouch.lib import storage

    manifest = (
        json.loads(storage.read_bytes(summary.manifest_uri))
        if summary.manifest_uri
        else {"images": []}
    )
    failed = [img for img in manifest["images"] if img["status"] == "failed"]
    table = Table(title=f"run {summary.run_id}", show_header=True)
    for col in ("images", "succeeded", "failed", "skipped files", "reused", "seconds"):
        table.add_column(col, justify="right")
    table.add_row(
        str(summary.total),
        str(summary.succeeded),
        str(summary.failed),
        str(len(summary.skipped)),
        str(manifest.get("summary", {}).get("reused", 0)),
        f"{summary.seconds:.1f}",
    )
    console.print(table)
    if failed:
        bad = Table(title="failed images", show_header=True)
        bad.add_column("image")
        bad.add_column("phase")
        bad.add_column("reason")
        for img in failed:
            bad.add_row(
                escape(img["name"]), img.get("failed_phase") or "", escape(img.get("reason") or "")
            )
        console.print(bad)
    _print_notes(manifest["images"])
    console.print(f"ZIP:      {_where(summary.zip_uri)}", highlight=False, soft_wrap=True)
    console.print(f"manifest: {_where(summary.manifest_uri)}", highlight=False, soft_wrap=True)
    console.print(f"report:   {_where(summary.report_uri)}", highlight=False, soft_wrap=True)


def _print_notes(images: list[dict[str, Any]], limit: int = 20) -> None:
    """The verdict counts, then the delivered images with a problem: their two scores, the
    verdict and what to do (the same numbers as the report's)."""
    delivered = [img for img in images if img["status"] != "failed" and img.get("scores")]
    if not delivered:
        return
    counts = {v: 0 for v in ("improved", "unchanged", "worse")}
    for img in delivered:
        verdict = img["scores"].get("verdict")
        if verdict in counts:
            counts[verdict] += 1
    console.print(
        "review: " + ", ".join(f"{n} {v}" for v, n in counts.items()) + " (score input → result)",
        highlight=False,
    )
    flagged = [img for img in delivered if img.get("problems")]
    if not flagged:
        return
    table = Table(title="images to look at", show_header=True)
    table.add_column("image", overflow="fold")
    table.add_column("score", no_wrap=True)
    table.add_column("verdict")
    table.add_column("problems", overflow="fold")
    for img in flagged[:limit]:
        scores = img["scores"]
        before, after = scores.get("score_before"), scores.get("score")
        shown = f"{before:.1f} → {after:.1f}" if before is not None and after is not None else ""
        table.add_row(
            escape(img["name"]),
            shown,
            str(scores.get("verdict") or ""),
            escape("; ".join(img["problems"])),
        )
    console.print(table)
    if len(flagged) > limit:
        console.print(f"… and {len(flagged) - limit} more: see the report", highlight=False)


# -- presets -------------------------------------------------------------------------------------


@app.command()
def names(
    source: SourceArg,
    preset: PresetOpt = DEFAULT_PRESET,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            "-s",
            help="Override STEP.PARAM=VALUE, e.g. export.name_template='{index}-{stem}.{ext}'",
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the names as JSON")] = False,
) -> None:
    """Preview the output names of SOURCE under the recipe's export profiles (nothing is run).

    {score}, {verdict} and {group} are known only after a run and show as 'na'.

    Example: retouch names ./photos --preset web-ready --set export.name_template='{index}-{stem}.{ext}'
    """
    from retouch.lib import sources
    from retouch.lib.delivery import delivery
    from retouch.lib.errors import RetouchError
    from retouch.lib.recipe import apply_overrides, load_preset
    from retouch.lib.storage import redact

    try:
        recipe = apply_overrides(load_preset(preset), overrides or [])
        found = sources.discover(source)
        if not found.items:
            raise _fail(f"{redact(source)}: no images found")
        rows = delivery.preview_names([item.name for item in found.items], recipe)
    except RetouchError as exc:
        raise _fail(str(exc)) from None
    if json_out:
        out.print_json(json.dumps(rows))
        return
    table = Table(show_header=True)
    for col in ("#", "image", "profile", "name"):
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(str(row["index"]), escape(row["image"]), row["profile"], escape(row["name"]))
    out.print(table)


@presets_app.command("list")
def presets_list() -> None:
    """List the shipped presets and your saved ones (`retouch tune ... --save NAME`)."""
    from retouch.lib.recipe import is_user_preset, load_preset, preset_names

    table = Table(show_header=True)
    table.add_column("preset", no_wrap=True)
    table.add_column("steps")
    table.add_column("models")
    table.add_column("description")
    for name in preset_names():
        recipe = load_preset(name)
        table.add_row(
            f"{name} (saved)" if is_user_preset(name) else name,
            " → ".join(s.op for s in recipe.steps),
            ", ".join(recipe.models()) or "none",
            escape(recipe.description),
        )
    out.print(table)


@presets_app.command("save")
def presets_save(
    name: Annotated[str, typer.Argument(help="Name of the new preset")],
    preset: PresetOpt = DEFAULT_PRESET,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", "-s", help="Override STEP.PARAM=VALUE")
    ] = None,
) -> None:
    """Save a preset (or recipe file) with overrides as your own preset, every parameter
    written out. The JSON file it prints can be shared: anyone can pass it to --preset.

    Example: retouch presets save studio-web -p web-ready --set sharpen.amount=0.4
    """
    from retouch.lib.errors import RetouchError
    from retouch.lib.recipe import apply_overrides, load_preset, save_user_preset

    try:
        path = save_user_preset(name, apply_overrides(load_preset(preset), overrides or []))
    except RetouchError as exc:
        raise _fail(str(exc)) from None
    console.print(f"saved preset [bold]{escape(name)}[/]: {escape(str(path))}")


@presets_app.command("show")
def presets_show(name: Annotated[str, typer.Argument(help="Preset name or recipe file")]) -> None:
    """Show a preset with every parameter (defaults filled in), as JSON."""
    from retouch.lib.errors import RetouchError
    from retouch.lib.recipe import load_preset

    try:
        recipe = load_preset(name)
    except RetouchError as exc:
        raise _fail(str(exc)) from None
    data = recipe.model_dump(mode="json")
    data["steps"] = [{"op": s["op"], "params": s["params"]} for s in recipe.canonical_steps()]
    out.print_json(json.dumps(data))


# -- versions, regeneration, replacement, cache -----------------------------------------------

WorkspaceOpt = Annotated[
    str | None, typer.Option(help="Workspace of the results (default RETOUCH_WORKSPACE)")
]


def _workspace(uri: str | None) -> Any:
    from retouch.lib.settings import get_settings
    from retouch.lib.workspace import Workspace

    return Workspace(uri or get_settings().resolved_workspace())


def _when(epoch: float | None) -> str:
    from datetime import UTC, datetime

    if not epoch:
        return "-"
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@app.command("versions")
def versions_cmd(
    image: Annotated[str, typer.Argument(help="Source file, image id (or prefix) or image name")],
    workspace: WorkspaceOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the versions as JSON")] = False,
) -> None:
    """List every version of an image: number, time, run, score, recipe and result key.

    An image is its source content plus its file name. Example: retouch versions photos/a.jpg
    """
    from retouch.lib import versions
    from retouch.lib.errors import RetouchError

    store = versions.VersionStore(_workspace(workspace))
    try:
        image_id = store.find(image)
        history = store.history(image_id)
        current = store.current(image_id, history)
    except RetouchError as exc:
        raise _fail(str(exc)) from None
    if json_out:
        items = [json.loads(versions.dumps(v)) for v in history]
        for item in items:
            item["current"] = current is not None and item["stamp"] == current.stamp
        out.print_json(json.dumps({"image_id": image_id, "versions": items}))
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
            str(v.scores.get("score", "")),
            str(v.scores.get("verdict", "")),
            escape(steps or "no steps"),
            v.result_key[:12],
        )
    out.print(table)
    console.print("* = current version", highlight=False)


@app.command("compare")
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
    from retouch.lib.errors import RetouchError

    ws = _workspace(workspace)
    store = versions.VersionStore(ws)
    try:
        image_id = store.find(image)
        pair = [store.get(image_id, v1), store.get(image_id, v2)]
        data = versions.side_by_side(ws, pair)
        target = out_file or f"compare-{image_id[:12]}-{v1}-{v2}.png"
        storage.write_bytes(target, data)
    except RetouchError as exc:
        raise _fail(str(exc)) from None
    typer.echo(_where(target))


@app.command("rollback")
def rollback_cmd(
    image: Annotated[str, typer.Argument(help="Source file, image id or image name")],
    version: Annotated[int, typer.Argument(help="Version number to make current again")],
    workspace: WorkspaceOpt = None,
) -> None:
    """Make an older version of an image current again (`retouch export RUN` re-delivers a run
    with it). Example: retouch rollback photos/a.jpg 1
    """
    from retouch.lib import versions
    from retouch.lib.errors import RetouchError

    store = versions.VersionStore(_workspace(workspace))
    try:
        image_id = store.find(image)
        chosen = store.get(image_id, version)
        store.set_current(image_id, chosen, note="rollback")
    except RetouchError as exc:
        raise _fail(str(exc)) from None
    console.print(
        f"{escape(chosen.name)}: version {chosen.number} (run {chosen.run_id}) is current "
        f"again; `retouch export {chosen.run_id}` re-delivers that run with it",
        highlight=False,
        soft_wrap=True,
    )


def _run_regenerate(run_id: str, options: Any, json_out: bool, events: str | None = None) -> None:
    from retouch.flows.regenerate import regenerate, select_records
    from retouch.flows.runtime import ad_hoc_run
    from retouch.lib import versions
    from retouch.lib.errors import RetouchError

    try:
        # Checked before Prefect starts, so a typo costs no server start-up.
        state = versions.load_run(_workspace(options.workspace), run_id)
        select_records(state.records, options)
        stop_events = _follow_events(events)
        try:
            with ad_hoc_run():
                summary = regenerate(run_id=run_id, options=options)
        finally:
            stop_events()
    except RetouchError as exc:
        raise _fail(str(exc)) from None
    if json_out:
        out.print_json(json.dumps(summary.model_dump(mode="json")))
    _print_summary(summary)
    raise typer.Exit(summary.exit_code)


def _names(values: list[str] | None) -> list[str]:
    return [n.strip() for v in values or [] for n in v.split(",") if n.strip()]


@app.command("regenerate")
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
    best: Annotated[
        bool, typer.Option("--best", help="Export each image's best-scoring version")
    ] = False,
    keep_worse: Annotated[
        bool,
        typer.Option(
            "--keep-worse",
            help="Make a regenerated version current even when it scores below the one it "
            "replaces (by default the better one stays current)",
        ),
    ] = False,
    out_dir: Annotated[
        str | None, typer.Option("--out", "-o", help="Deliver here (default: the run's --out)")
    ] = None,
    workspace: WorkspaceOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's logs")] = False,
    events: EventsOpt = None,
) -> None:
    """Re-process selected images of an earlier run (its recipe plus --set overrides), record
    them as new versions and re-deliver the run's ZIP, manifest and report.

    Examples:
      retouch regenerate 20260101-120000-ab12cd --select a.jpg,b.jpg --set sharpen.amount=0.4
      retouch regenerate 20260101-120000-ab12cd --failed
    """
    _prefect_defaults(verbose)
    from retouch.flows.regenerate import RegenerateOptions

    names = _names(select)
    if not (names or failed or worse):
        raise _fail("nothing selected: give --select NAMES, --failed or --worse")
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


@app.command("export")
def export_cmd(
    run_id: Annotated[str, typer.Argument(help="Run id")],
    best: Annotated[
        bool, typer.Option("--best", help="Export each image's best-scoring version")
    ] = False,
    out_dir: Annotated[
        str | None, typer.Option("--out", "-o", help="Deliver here (default: the run's --out)")
    ] = None,
    workspace: WorkspaceOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's logs")] = False,
) -> None:
    """Re-deliver a run with each image's current version (after a rollback), or its best one.

    Example: retouch export 20260101-120000-ab12cd --best
    """
    _prefect_defaults(verbose)
    from retouch.flows.regenerate import RegenerateOptions

    options = RegenerateOptions(
        pick="best" if best else "current", dest=out_dir, workspace=workspace
    )
    _run_regenerate(run_id, options, False)


@app.command("replace")
def replace_cmd(
    run_id: Annotated[str, typer.Argument(help="Run id")],
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
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's logs")] = False,
) -> None:
    """Replace the source of images in a run (keeping its recipe), process them as new
    versions and re-deliver the run; --undo brings the old sources and versions back.

    Examples:
      retouch replace 20260101-120000-ab12cd a.jpg ~/reshoot/a.jpg
      retouch replace 20260101-120000-ab12cd --map replacements.txt --yes
      retouch replace 20260101-120000-ab12cd --undo
    """
    _prefect_defaults(verbose)
    from retouch.flows.regenerate import RegenerateOptions
    from retouch.lib import storage, versions
    from retouch.lib.errors import RetouchError

    ws = _workspace(workspace)
    store = versions.VersionStore(ws)
    try:
        if undo:
            if name or new_file or map_file:
                raise _fail("--undo takes only the run id")
            undone = versions.undo_replacement(ws, run_id)
            for item in undone["items"]:
                if item.get("image_id") and item.get("previous_version"):
                    target = next(
                        (
                            v
                            for v in store.history(item["image_id"])
                            if v.stamp == item["previous_version"]
                        ),
                        None,
                    )
                    if target is not None:
                        store.set_current(item["image_id"], target, note="replacement undone")
                console.print(
                    f"{escape(item['name'])}: back to {escape(item['old_source'])}", highlight=False
                )
            _run_regenerate(run_id, RegenerateOptions(workspace=workspace), False)
            return
        pairs = _replacement_pairs(name, new_file, map_file)
        state = versions.load_run(ws, run_id)
        by_name = {r.name: r for r in state.records}
        unknown = [old for old, _ in pairs if old not in by_name]
        if unknown:
            raise _fail(
                f"no image {', '.join(map(repr, unknown))} in run {run_id}; its images: "
                + ", ".join(sorted(by_name)[:20])
            )
        folder = preview_dir or os.path.join("retouch-preview", run_id)
        lines = []
        items = []
        for old, new in pairs:
            record = by_name[old]
            new_uri = new if "://" in new else os.path.abspath(new)
            if not storage.exists(new_uri):
                raise _fail(f"{new}: not found (the new source for {old})")
            stem = Path(old).stem
            storage.write_bytes(
                os.path.join(folder, f"{stem}-old.jpg"), versions.preview_jpeg(record.uri)
            )
            storage.write_bytes(
                os.path.join(folder, f"{stem}-new.jpg"), versions.preview_jpeg(new_uri)
            )
            old_input = record.input
            lines.append(
                f"{old}: {record.source} ({old_input.get('width', '?')}x"
                f"{old_input.get('height', '?')}, {record.bytes or 0} bytes)\n"
                f"  -> {storage.redact(new_uri)} ({_image_size(new_uri)})"
            )
            image_id = versions.run_image_id(record)
            current = store.current(image_id) if image_id else None
            items.append(
                {
                    "name": old,
                    "image_id": image_id,
                    "old_source": record.source,
                    "new_source": new_uri,
                    "previous_version": current.stamp if current else None,
                }
            )
        console.print(f"replacements in run {run_id}:", highlight=False)
        for line in lines:
            console.print(escape(line), highlight=False, soft_wrap=True)
        console.print(
            f"preview thumbnails (old/new): {escape(_where(folder))}",
            highlight=False,
            soft_wrap=True,
        )
        if not yes and not typer.confirm(f"Replace {len(items)} image(s) and re-deliver the run?"):
            raise _fail("nothing replaced", EXIT_NOTHING)
        versions.save_replacement(ws, run_id, items)
    except RetouchError as exc:
        raise _fail(str(exc)) from None
    options = RegenerateOptions(
        sources={i["name"]: i["new_source"] for i in items},
        workspace=workspace,
        note="replacement source",
    )
    _run_regenerate(run_id, options, False)


def _replacement_pairs(
    name: str | None, new_file: str | None, map_file: Path | None
) -> list[tuple[str, str]]:
    if map_file is not None:
        if name or new_file:
            raise _fail("give either NAME NEWFILE or --map FILE, not both")
        try:
            lines = map_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise _fail(f"{map_file}: cannot read ({exc.strerror})") from None
        pairs = []
        for number, line in enumerate(lines, start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if "->" not in line:
                raise _fail(f"{map_file}:{number}: expected 'OLD-NAME -> NEW-FILE', got {line!r}")
            old, new = (part.strip() for part in line.split("->", 1))
            pairs.append((old, new))
        if not pairs:
            raise _fail(f"{map_file}: no 'OLD-NAME -> NEW-FILE' lines")
        return pairs
    if not (name and new_file):
        raise _fail("give NAME NEWFILE, --map FILE or --undo")
    return [(name, new_file)]


def _image_size(uri: str) -> str:
    from retouch.lib import storage
    from retouch.lib.imageio import probe
    from retouch.lib.settings import get_settings

    data = storage.read_bytes(uri)
    info = probe(data, uri, pixel_limit=get_settings().pixel_limit)
    return f"{info.width}x{info.height}, {len(data)} bytes"


cache_app = typer.Typer(help="The result cache: its size, and pruning it.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")
models_cli.register(app)  # models list, pull, import, remove, path
review_cli.register(app)  # preview, tune, approve, recommend
deploy_cli.register(app)  # deploy, serve, watch, submit
web_cli.register(app)  # web


def reflow_help(doc: str) -> str:
    """A command's docstring as help text: the lines of a paragraph joined (the terminal
    wraps them to its width; a docstring's own line breaks showed mid-sentence in
    `retouch --help`), while blank lines, indented lines (examples) and lines after one
    ending in ':' keep their breaks."""
    out: list[str] = []
    for line in inspect.cleandoc(doc).splitlines():
        if not line.strip():
            out.append("")
        elif out and out[-1] and not line.startswith(" ") and not out[-1].endswith(":"):
            out[-1] += " " + line.strip()
        else:
            out.append(line)
    return "\n".join(out)


def _reflow_commands(group: typer.Typer) -> None:
    for command in group.registered_commands:
        if command.help is None and command.callback is not None and command.callback.__doc__:
            command.help = reflow_help(command.callback.__doc__)
    for sub in group.registered_groups:
        if sub.typer_instance is not None:
            _reflow_commands(sub.typer_instance)


_reflow_commands(app)


@cache_app.command("info")
def cache_info(workspace: WorkspaceOpt = None) -> None:
    """Count, size and oldest/newest use of the cached results (pinned = a current version)."""
    from retouch.lib import cache
    from retouch.lib.errors import RetouchError

    ws = _workspace(workspace)
    try:
        found = cache.info(ws)
    except RetouchError as exc:
        raise _fail(str(exc)) from None
    out.print(f"workspace:  {_where(ws.root)}", highlight=False, soft_wrap=True)
    out.print(f"results:    {found.count} ({found.pinned} pinned)", highlight=False)
    out.print(f"bytes:      {found.bytes} ({found.bytes / 1e6:.1f} MB)", highlight=False)
    out.print(f"oldest use: {_when(found.oldest_use)}", highlight=False)
    out.print(f"newest use: {_when(found.newest_use)}", highlight=False)


@cache_app.command("prune")
def cache_prune(
    max_bytes: Annotated[
        int | None, typer.Option(min=0, help="Evict least recently used results beyond this size")
    ] = None,
    older_than: Annotated[
        float | None, typer.Option(min=0, help="Evict results unused for more than DAYS days")
    ] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Evict cached results (never an image's current version). Without options: down to the
    cache_max_bytes setting.

    Examples: retouch cache prune --max-bytes 2000000000; retouch cache prune --older-than 30
    """
    from retouch.lib import cache
    from retouch.lib.errors import RetouchError
    from retouch.lib.settings import get_settings

    if max_bytes is None and older_than is None:
        max_bytes = get_settings().cache_max_bytes
        if max_bytes is None:
            raise _fail("give --max-bytes N or --older-than DAYS (no cache size is set)")
    try:
        report = cache.prune(
            _workspace(workspace),
            max_bytes=max_bytes,
            older_than_s=older_than * 86400 if older_than is not None else None,
        )
    except RetouchError as exc:
        raise _fail(str(exc)) from None
    out.print(
        f"removed {report.removed} results ({report.freed} bytes); kept {report.kept} "
        f"({report.kept_bytes} bytes, {report.pinned} pinned)",
        highlight=False,
    )


def main(argv: list[str] | None = None) -> None:
    """The ``retouch`` command: run it, then exit without the interpreter's teardown.

    Every way out stops a Prefect server the command started: SIGTERM and SIGHUP (a service
    manager or container stopping it) unwind the run like Ctrl-C and exit with 128 + the
    signal number. An unexpected error is one line on the terminal; ``-v`` adds its
    traceback.
    """
    from retouch.flows.runtime import Terminated, handle_termination

    handle_termination()
    try:
        app(argv, prog_name="retouch")
    except SystemExit as exc:
        _exit_now(exc.code)
    except Terminated as exc:
        name = signal.Signals(exc.signum).name
        console.print(f"retouch: stopped by {name}", highlight=False)
        _exit_now(128 + exc.signum)
    except Exception as exc:  # a bug or an unforeseen failure: one line, the traceback with -v
        if _verbose:
            console.print_exception()
        hint = "" if _verbose else " (-v shows the traceback)"
        console.print(
            f"[bold red]error:[/] {escape(type(exc).__name__)}: {escape(str(exc))}{hint}",
            highlight=False,
            soft_wrap=True,
        )
        _exit_now(EXIT_NOTHING)
    _exit_now(0)


def _drain_prefect_services(timeout_s: float = 10.0) -> None:
    """Send Prefect's queued logs and events now, while the server is still up.

    Prefect drains them in threading's exit hooks, which the fast exit below never reaches;
    and an embedded server is stopped by an ``atexit`` handler, after which a late batch of
    logs ends in "Error logging to API" on the terminal.
    """
    for module, name in (
        ("prefect.logging.handlers", "APILogWorker"),
        ("prefect.events.worker", "EventsWorker"),
    ):
        service = getattr(sys.modules.get(module), name, None)
        if service is not None:
            try:
                service.drain_all(timeout=timeout_s)
            except Exception:  # noqa: BLE001 (exiting: what is not sent is lost, not fatal)
                pass


def _exit_now(code: object) -> NoReturn:
    """Exit with ``code`` (as ``sys.exit`` reads it) once the exit handlers have run.

    With torch loaded, tearing the interpreter down takes about a second (freeing every module
    and libtorch's own destructors) after the work is done and every file is closed. So once
    the other threads are finished and the exit handlers have run (Prefect sends its last
    events and logs and stops a server it started, logging flushes), the process ends
    without that teardown. Without torch the teardown is short and runs as usual.
    """
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    if "torch" not in sys.modules:
        raise SystemExit(status)
    workers = sys.modules.get("retouch.lib.phases.workers")
    if workers is not None:
        workers.shutdown()  # its manager thread would otherwise be waited for below
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    _drain_prefect_services()
    import atexit

    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
