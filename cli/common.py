"""What every ``retouch`` command shares: the consoles, exit codes, the one way a command
fails (:func:`fail`, :class:`reported`), Prefect's quiet defaults and the common options."""

from __future__ import annotations

import inspect
import json
import logging
import os
from contextlib import ContextDecorator
from types import TracebackType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from retouch.lib.workspace import Workspace

console = Console(stderr=True)
out = Console()

EXIT_OK, EXIT_NOTHING, EXIT_PARTIAL = 0, 1, 2

_verbose = False


def verbose() -> bool:
    """Whether the command was given ``-v`` (an unexpected error then shows its traceback)."""
    return _verbose


def prefect_defaults(verbose: bool) -> None:
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


def fail(message: str, code: int = EXIT_NOTHING) -> typer.Exit:
    """One red ``error:`` line (also sent as a progress event, for an ``--events`` file being
    followed); returns the exit to raise."""
    from retouch.lib import progress

    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    progress.emit(progress.RunError(message=message))
    return typer.Exit(code)


class reported(ContextDecorator):  # noqa: N801 (reads as a decorator and a `with` clause)
    """Around a command (as its decorator) or part of one (``with reported():``): a
    :class:`~retouch.lib.errors.RetouchError`, or one of the ``also`` types, ends the
    command with :func:`fail`'s line and exit code 1, without a traceback. Anything else
    goes on to :func:`retouch.cli.main.main` (one line, the traceback with ``-v``)."""

    def __init__(self, *also: type[Exception]):
        self.also = also

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        from retouch.lib.errors import RetouchError

        if exc is not None and isinstance(exc, (RetouchError, *self.also)):
            raise fail(str(exc)) from None


def print_json(data: Any) -> None:
    """``data`` as JSON on stdout (for scripts)."""
    out.print_json(json.dumps(data))


def reflow_help(doc: str) -> str:
    """A command's docstring as help text: the lines of a paragraph joined (the terminal
    wraps them to its width; a docstring's own line breaks showed mid-sentence in
    `retouch --help`), while blank lines, indented lines (examples) and lines after one
    ending in ':' keep their breaks."""
    lines: list[str] = []
    for line in inspect.cleandoc(doc).splitlines():
        if not line.strip():
            lines.append("")
        elif lines and lines[-1] and not line.startswith(" ") and not lines[-1].endswith(":"):
            lines[-1] += " " + line.strip()
        else:
            lines.append(line)
    return "\n".join(lines)


def where(uri: str | None) -> str:
    """Local results as absolute paths (so they can be opened from anywhere); URLs as they are."""
    from retouch.lib.storage import redact

    if not uri:
        return "(nothing to deliver)"
    return redact(uri) if "://" in uri else os.path.abspath(uri)


def open_workspace(uri: str | None) -> Workspace:
    """The workspace given, else the setting's."""
    from retouch.lib.settings import get_settings
    from retouch.lib.workspace import Workspace

    return Workspace(uri or get_settings().resolved_workspace())


# Shared by the commands that take a source and a recipe.
SourceArg = Annotated[
    str, typer.Argument(help="Folder, glob, s3://bucket/prefix, list file (.txt) or .zip")
]
PresetOpt = Annotated[
    str,
    typer.Option("--preset", "-p", help="Preset name (see `retouch presets list`) or recipe file"),
]
WorkspaceOpt = Annotated[
    str | None, typer.Option(help="Workspace of the results (default RETOUCH_WORKSPACE)")
]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's logs")]
EventsOpt = Annotated[
    str | None,
    typer.Option(
        "--events",
        help="Append every progress event to FILE as one JSON line (for front ends)",
        metavar="FILE",
    ),
]
