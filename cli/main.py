"""The ``retouch`` command: its commands (one module per group) and the way it exits."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import NoReturn

import typer
from rich.markup import escape

from retouch.cli import cache, deploy, history, models, presets, review, run, server, web
from retouch.cli.common import EXIT_NOTHING, console, reflow_help, verbose

app = typer.Typer(
    name="retouch",
    help="Batch photo enhancement: face restoration, super-resolution, inpainting and classic "
    "operations, run as Prefect flows.\n\nExample: retouch run ./photos --preset quick --out ./delivery",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
# The order of `retouch --help`: commands as registered here, then the groups.
run.register(app)  # run, names
history.register(app)  # versions, compare, rollback, regenerate, export, replace
review.register(app)  # preview, tune, approve, runs, recommend
deploy.register(app)  # deploy, serve, watch, submit
web.register(app)  # web
presets.register(app)  # presets list, save, show
cache.register(app)  # cache info, prune
models.register(app)  # models list, pull, import, remove, path
server.register(app)  # server status, start, stop


def _reflow_commands(group: typer.Typer) -> None:
    for command in group.registered_commands:
        if command.help is None and command.callback is not None and command.callback.__doc__:
            command.help = reflow_help(command.callback.__doc__)
    for sub in group.registered_groups:
        if sub.typer_instance is not None:
            _reflow_commands(sub.typer_instance)


_reflow_commands(app)


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
        if verbose():
            console.print_exception()
        hint = "" if verbose() else " (-v shows the traceback)"
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
