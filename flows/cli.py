"""The ``retouch`` command line: ad hoc runs with progress bars, models and presets."""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

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
models_app = typer.Typer(
    help="The model registry: list, download, import and locate weights.", no_args_is_help=True
)
presets_app = typer.Typer(help="Shipped recipes: list them or show one.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(presets_app, name="presets")

EXIT_OK, EXIT_NOTHING, EXIT_PARTIAL = 0, 1, 2


def _prefect_defaults(verbose: bool) -> None:
    """Quiet, offline-friendly Prefect defaults; anything the user set wins."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_LEVEL", "WARNING")


def _fail(message: str, code: int = EXIT_NOTHING) -> typer.Exit:
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
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

    def __call__(self, event: dict[str, Any]) -> None:
        with self.lock:
            if event["event"] == "run":
                for task_id in self.ids.values():
                    self.progress.update(task_id, total=event["total"])
                    self.progress.start_task(task_id)
            elif event["event"] == "image" and event["phase"] in self.ids:
                name = escape(event["name"])
                mark = "" if event.get("ok", True) else " [red](failed)[/]"
                self.progress.update(self.ids[event["phase"]], advance=1, current=f"{name}{mark}")


@app.command()
def run(
    source: Annotated[
        str, typer.Argument(help="Folder, glob, s3://bucket/prefix, list file (.txt) or .zip")
    ],
    out_dir: Annotated[
        str,
        typer.Option(
            "--out", "-o", help="Destination folder or fsspec URL for ZIP, manifest, report"
        ),
    ],
    preset: Annotated[
        str,
        typer.Option(
            "--preset", "-p", help="Preset name (see `retouch presets list`) or recipe file"
        ),
    ] = "quick",
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            "-s",
            help="Override STEP.PARAM=VALUE, e.g. upscale.outscale=2 or export.format=png",
        ),
    ] = None,
    masks: Annotated[
        str | None, typer.Option(help="Folder of inpainting masks, matched by file stem")
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
    from retouch.lib import pipeline, progress, sources
    from retouch.lib.errors import RetouchError
    from retouch.lib.recipe import apply_overrides, load_preset
    from retouch.lib.storage import redact

    try:
        recipe = apply_overrides(load_preset(preset), overrides or [])
        found = sources.discover(source)
        if not found.items:
            why = (
                f"; skipped: {redact(found.skipped[0][0])}: {found.skipped[0][1]}"
                if found.skipped
                else ""
            )
            raise _fail(f"{redact(source)}: no images found{why}")
        pipeline.weights_ids(recipe)  # a missing model stops here, before Prefect starts
    except RetouchError as exc:
        raise _fail(str(exc)) from None

    from retouch.flows.enhance import RunOptions, enhance

    options = RunOptions(
        masks=masks, workspace=workspace, chunk_size=chunk_size, refresh=refresh, device=device
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
    console.print(f"ZIP:      {_where(summary.zip_uri)}", highlight=False, soft_wrap=True)
    console.print(f"manifest: {_where(summary.manifest_uri)}", highlight=False, soft_wrap=True)
    console.print(f"report:   {_where(summary.report_uri)}", highlight=False, soft_wrap=True)


# -- models --------------------------------------------------------------------------------------


@models_app.command("list")
def models_list() -> None:
    """List the registered models and whether their weights are present."""
    from retouch.lib.models import fetch, specs

    table = Table(show_header=True)
    table.add_column("name", no_wrap=True)
    for col in ("kind", "scale", "size", "present"):
        table.add_column(col, no_wrap=True)
    table.add_column("file", overflow="fold")
    for spec in specs.all_specs():
        st = fetch.status(spec.name)
        size = f"{spec.size / 1e6:.1f} MB" if spec.size else "?"
        table.add_row(
            spec.name,
            spec.kind,
            str(spec.scale or ""),
            size,
            "yes" if st.get("present") else "no",
            escape(str(st.get("path") or spec.filename)),
        )
    out.print(table)


@models_app.command("pull")
def models_pull(
    name: Annotated[str, typer.Argument(help="Model name, e.g. realesrgan-x4plus")],
    force: Annotated[bool, typer.Option(help="Download again even if present")] = False,
) -> None:
    """Download a model's weights (from RETOUCH_MODEL_MIRROR, else the official URL) and verify them.

    Example: retouch models pull gfpgan-v1.4
    """
    from retouch.lib.errors import RetouchError
    from retouch.lib.models import fetch

    try:
        path = fetch.pull(name, force=force)
    except RetouchError as exc:
        raise _fail(str(exc)) from None
    typer.echo(str(path))


@models_app.command("import")
def models_import(
    name: Annotated[str, typer.Argument(help="Model name, e.g. gfpgan-v1.4")],
    file: Annotated[Path, typer.Argument(help="A weight file you downloaded yourself")],
    force: Annotated[
        bool, typer.Option(help="Accept a file whose size/sha256 differ from the official one")
    ] = False,
) -> None:
    """Copy a weight file into the model folder under the model's name.

    Example: retouch models import realesrgan-x4plus ~/Downloads/RealESRGAN_x4plus.pth
    """
    from retouch.lib.errors import RetouchError
    from retouch.lib.models import fetch

    try:
        path = fetch.import_file(name, file, force=force)
    except RetouchError as exc:
        raise _fail(str(exc)) from None
    typer.echo(str(path))


@models_app.command("path")
def models_path(
    name: Annotated[
        str | None, typer.Argument(help="Model name (omit for the model folder)")
    ] = None,
) -> None:
    """Print the model folder, or where a model's weight file is (or would be) kept."""
    from retouch.lib.errors import RetouchError
    from retouch.lib.models import fetch
    from retouch.lib.settings import get_settings

    if name is None:
        typer.echo(str(get_settings().resolved_model_dir()))
        return
    try:
        st = fetch.status(name)
    except RetouchError as exc:
        raise _fail(str(exc)) from None
    typer.echo(str(st["path"]))


# -- presets -------------------------------------------------------------------------------------


@presets_app.command("list")
def presets_list() -> None:
    """List the shipped presets."""
    from retouch.lib.recipe import load_preset, preset_names

    table = Table(show_header=True)
    table.add_column("preset")
    table.add_column("steps")
    table.add_column("models")
    table.add_column("description")
    for name in preset_names():
        recipe = load_preset(name)
        table.add_row(
            name,
            " → ".join(s.op for s in recipe.steps),
            ", ".join(recipe.models()) or "none",
            escape(recipe.description),
        )
    out.print(table)


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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
