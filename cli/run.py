"""``retouch run`` (one batch, or ``--auto``: one per recommended preset) and ``retouch names``."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from retouch.cli.common import (
    EventsOpt,
    PresetOpt,
    SourceArg,
    console,
    fail,
    out,
    prefect_defaults,
    print_json,
    reported,
)
from retouch.cli.output import follow_events, print_summary, progress_bars
from retouch.lib.recipe import DEFAULT_PRESET

RESUMES = (
    "the images finished before the stop are kept (results by content, in the workspace): "
    "the same command again reuses them and does the rest"
)
"""Said when a signal stops a run before its end."""

if TYPE_CHECKING:
    from retouch.flows.auto import AutoRun
    from retouch.flows.enhance import RunOptions
    from retouch.lib.recipe import Recipe


@reported()
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
    says why); 1 nothing could be done (bad arguments, no images, missing model weights);
    143 stopped by SIGTERM (128 + the signal: 129 for SIGHUP) within 10 s, every process it
    started stopped with it: the images finished before the stop are kept, and the same
    command again reuses them and does the rest.

    Examples:
      retouch run samples --preset quick --out out/demo
      retouch run s3://studio/inbox/ --preset portrait-restore --out s3://studio/delivered/
      retouch run shoot.zip -p upscale-x4 --set upscale.outscale=2 --set export.format=webp -o out
    """
    prefect_defaults(verbose)
    from retouch.lib import locks
    from retouch.lib.delivery import delivery
    from retouch.lib.settings import get_settings

    recipe, count = _checked(source, out_dir, preset, overrides or [], device)
    # One run at a time into a destination (the second would replace the first's
    # delivery), and one that can be written: found now, not after every image.
    dest_lock = locks.lock_destination(out_dir, get_settings().home / "locks")
    try:
        delivery.check_destination(out_dir)
        # Prefect first: its import configures logging (holding logging's lock while it
        # imports handler modules), and a model library importing in the preload thread
        # at that moment can deadlock against it. The preload then overlaps the server's
        # start and the flow run's creation.
        from retouch.flows import runtime
        from retouch.flows.background import local_api
        from retouch.flows.enhance import RunOptions
        from retouch.lib.models.compat import preload

        # The models too, when they run on the CPU: the first image finds them loaded.
        preload(recipe.models(), recipe, device or get_settings().device)

        if not verbose:
            runtime.tidy_console()
        runtime.set_termination_grace(hint=RESUMES)
        options = RunOptions(
            masks=masks, workspace=workspace, chunk_size=chunk_size, refresh=refresh, device=device
        )
        stop_events = follow_events(events)
        try:
            # Inside the events subscription: a front end following the file sees the error.
            with reported():
                try:
                    local_api(announce=_announce)
                except Exception as exc:  # the server's own errors vary; the message says what
                    raise fail(f"could not start a local Prefect server: {exc}") from None
                try:
                    if auto:
                        _run_auto(source, out_dir, overrides or [], options, json_out)
                    _run_one(source, out_dir, recipe, count, options, json_out)
                except runtime.Terminated:
                    console.print(f"retouch: stopped: {RESUMES}", highlight=False, soft_wrap=True)
                    raise
        finally:
            stop_events()
    finally:
        dest_lock.release()


def _announce(line: str) -> None:
    console.print(f"retouch: {escape(line)}", highlight=False, soft_wrap=True)


def _checked(
    source: str, out_dir: str, preset: str, overrides: list[str], device: str | None = None
) -> tuple[Recipe, int]:
    """The recipe and the number of images, once everything that can be checked before
    Prefect starts is checked."""
    from retouch.lib import sources
    from retouch.lib.phases.keys import weights_ids
    from retouch.lib.recipe import apply_overrides, load_preset
    from retouch.lib.settings import get_settings
    from retouch.lib.storage import check_no_inline_credentials, redact

    recipe = apply_overrides(load_preset(preset), overrides)
    # Refused before Prefect starts: the destination becomes a recorded flow parameter.
    check_no_inline_credentials(out_dir)
    follow = get_settings().follow_symlinks
    found = sources.discover(source, follow_symlinks=follow)
    if not found.items:
        why = (
            f"; skipped: {redact(found.skipped[0][0])}: {found.skipped[0][1]}"
            if found.skipped
            else ""
        )
        raise fail(f"{redact(source)}: no images found{why}")
    weights_ids(recipe)  # a missing model stops here, before Prefect starts
    for note in recipe.notes(device or get_settings().device):
        console.print(f"[yellow]{escape(note)}[/]", highlight=False, soft_wrap=True)
    sources.hand_over(source, found, follow_symlinks=follow)  # the run lists it no more
    return recipe, len(found.items)


def _run_one(
    source: str, out_dir: str, recipe: Recipe, count: int, options: RunOptions, json_out: bool
) -> None:
    from retouch.flows.enhance import enhance
    from retouch.flows.runtime import ad_hoc_run
    from retouch.lib.storage import redact

    console.print(
        f"retouch: {count} images, preset [bold]{escape(recipe.name)}[/] "
        f"({' → '.join(s.op for s in recipe.steps) or 'no steps'}); starting Prefect…",
        highlight=False,
    )
    with progress_bars(hidden=json_out and not sys.stderr.isatty()), ad_hoc_run():
        summary = enhance(source=source, dest=out_dir, recipe=recipe, options=options)
    if json_out:
        shown = summary.model_dump(mode="json")
        for key in ("zip_uri", "manifest_uri", "report_uri"):
            shown[key] = redact(shown[key]) if shown[key] else None
        print_json(shown)
    print_summary(summary)
    raise typer.Exit(summary.exit_code)


def _run_auto(
    source: str, out_dir: str, overrides: list[str], options: RunOptions, json_out: bool
) -> None:
    from retouch.flows.auto import enhance_auto
    from retouch.flows.runtime import ad_hoc_run

    with ad_hoc_run():
        result = enhance_auto(source=source, dest=out_dir, overrides=overrides, options=options)
    _print_auto(result, json_out)
    raise typer.Exit(result.exit_code)


def _print_auto(result: AutoRun, json_out: bool) -> None:
    from retouch.cli.review import advice_table
    from retouch.lib import storage

    if not json_out:
        console.print(advice_table(result.advice))
        for note in result.notes:
            console.print(f"[yellow]{escape(note)}[/]", highlight=False, soft_wrap=True)
    for group in result.groups:
        if group.summary is None:
            console.print(f"[red]{group.preset}: {escape(group.error or '')}[/]")
        else:
            console.print(
                f"[bold]{group.preset}[/]: {group.summary.succeeded} of {group.summary.total} "
                f"delivered to {escape(storage.redact(group.dest))}"
            )
    if json_out:
        summaries = {
            g.preset: g.summary.model_dump(mode="json") for g in result.groups if g.summary
        }
        print_json({"groups": summaries, "unreadable": [a.as_dict() for a in result.unreadable]})


@reported()
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
    from retouch.lib.recipe import apply_overrides, load_preset
    from retouch.lib.storage import redact

    recipe = apply_overrides(load_preset(preset), overrides or [])
    found = sources.discover(source)
    if not found.items:
        raise fail(f"{redact(source)}: no images found")
    rows = delivery.preview_names([item.name for item in found.items], recipe)
    if json_out:
        print_json(rows)
        return
    table = Table(show_header=True)
    for col in ("#", "image", "profile", "name"):
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(str(row["index"]), escape(row["image"]), row["profile"], escape(row["name"]))
    out.print(table)


def register(app: typer.Typer) -> None:
    """Add ``run`` and ``names`` to the ``retouch`` command line."""
    app.command()(run)
    app.command()(names)
