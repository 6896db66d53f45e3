"""``retouch server``: the Prefect server the commands share in the background."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.markup import escape

from retouch.cli.common import console, fail, out, print_json, reported

server_app = typer.Typer(
    help="The Prefect server the commands share in the background when PREFECT_API_URL is "
    "unset: where it is, starting and stopping it.",
    no_args_is_help=True,
)


def _quiet_prefect() -> None:
    from retouch.cli.common import prefect_defaults

    prefect_defaults(verbose=False)


def _describe(record: dict[str, Any], live: dict[str, Any] | None) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "running": live is not None,
        "url": record.get("url"),
        "pid": record["pid"],
        "since": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.get("started", 0))),
        "idle_limit_s": record.get("idle_s"),
        "prefect": record.get("prefect"),
    }
    if live is not None:
        shown["idle_s"] = live.get("idle_s")
        shown["open_connections"] = live.get("open")
        shown["used_by"] = live.get("users", [])
    return shown


@server_app.command("status")
@reported()
def status(
    json_out: Annotated[bool, typer.Option("--json", help="Print the status as JSON")] = False,
) -> None:
    """Where the background server is (URL, pid, state file), since when, how long it has
    been unused and which commands use it. Exit code 1 when none is running."""
    _quiet_prefect()
    from retouch.flows import background

    where = background.place()
    record = background.read_record(where)
    live = None
    if record is not None and record.get("url") and background.is_server_process(record["pid"]):
        live = background.server_status(record["url"], record.get("auth", ""))
    if record is None or live is None:
        if json_out:
            print_json({"running": False, "state_file": str(where.state)})
        raise fail(f"no background Prefect server is running (state file {where.state})")
    shown = _describe(record, live)
    shown["state_file"] = str(where.state)
    shown["log"] = str(where.log)
    if json_out:
        print_json(shown)
        return
    users = shown["used_by"]
    idle = (
        f"unused for {shown['idle_s']:g} s of {shown['idle_limit_s']:g} s"
        if not users and not shown["open_connections"]
        else f"in use ({len(users)} command(s), {shown['open_connections']} connection(s))"
    )
    for label, value in (
        ("url", shown["url"]),
        ("pid", shown["pid"]),
        ("since", shown["since"]),
        ("idle", idle),
        ("prefect", shown["prefect"]),
        ("state file", shown["state_file"]),
        ("log", shown["log"]),
    ):
        out.print(f"{label + ':':<11} {escape(str(value))}", highlight=False, soft_wrap=True)


@server_app.command("start")
@reported()
def start() -> None:
    """Start the background server now (the first command would), or say where it runs."""
    _quiet_prefect()
    from retouch.flows import background
    from retouch.lib.settings import get_settings

    idle_s = get_settings().server_idle_s
    if idle_s <= 0:
        raise fail("RETOUCH_SERVER_IDLE_S is 0: each command starts its own server")
    try:
        found = background.connect(
            idle_s=idle_s, announce=lambda line: console.print(escape(line), highlight=False)
        )
    except background.ServerError as exc:
        raise fail(str(exc)) from None
    finally:
        background.release_lease()
    said = "started" if found.started else "already running"
    out.print(f"{said}: {found.url} (pid {found.pid})", highlight=False, soft_wrap=True)


@server_app.command("stop")
@reported()
def stop(
    force: Annotated[
        bool, typer.Option("--force", help="Stop it even while commands are using it")
    ] = False,
) -> None:
    """Stop the background server (refused while a command uses it, unless --force)."""
    _quiet_prefect()
    from retouch.flows import background

    try:
        record = background.stop(force=force)
    except background.ServerError as exc:
        raise fail(str(exc)) from None
    if record is None:
        out.print("no background Prefect server was running", highlight=False)
        return
    out.print(f"stopped the background Prefect server (pid {record['pid']})", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the ``server`` group to the ``retouch`` command line."""
    app.add_typer(server_app, name="server")
