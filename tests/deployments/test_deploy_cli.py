"""``retouch deploy``, ``watch`` and ``submit`` against the test server."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import typer
from typer.testing import CliRunner

from retouch.cli.deploy import register


def _invoke(*args: str):
    app = typer.Typer()
    register(app)
    # A thread of its own: Prefect's sync calls must not run inside the test's event loop.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(CliRunner().invoke, app, list(args)).result()


def test_deploy_watch_and_submit(prefect_server, tmp_path):
    from prefect import get_client

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    res = _invoke("deploy", "--pool", "cli-pool", "--inbox", str(inbox))
    assert res.exit_code == 0, res.output
    assert (
        res.output.startswith("enhance ") and "prefect worker start --pool cli-pool" in res.output
    )

    (inbox / "a.jpg").write_bytes(b"\xff\xd8 not decoded by the watcher")
    watch = ("watch", str(inbox), "--dest", str(tmp_path / "out"), "--settle", "0", "--once")
    res = _invoke(*watch)
    assert res.exit_code == 0, res.output
    (line,) = [x for x in res.output.splitlines() if x.startswith("{")]
    sent = json.loads(line)
    assert sent["count"] == 1 and sent["source"].endswith(".txt")
    # Run again (a restart): nothing new to announce.
    res = _invoke(*watch)
    assert res.exit_code == 0 and "{" not in res.output

    at = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    res = _invoke(
        "submit", str(inbox), "--dest", str(tmp_path / "d"), "--urgent", "--at", at.isoformat()
    )
    assert res.exit_code == 0, res.output
    run_id = res.output.strip().splitlines()[-1]
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
    assert run.work_queue_name == "urgent"
    assert run.state.is_scheduled() and run.next_scheduled_start_time == at
    assert run.parameters["source"] == str(inbox)


def test_watch_of_a_missing_folder_fails_with_its_name(tmp_path):
    missing = tmp_path / "no-such-inbox"
    res = _invoke("watch", str(missing), "--dest", str(tmp_path / "out"), "--once")
    assert res.exit_code == 1
    assert "no-such-inbox" in res.output and "does not exist" in res.output


def test_submit_needs_a_timezone(tmp_path):
    res = _invoke("submit", str(tmp_path), "--dest", str(tmp_path), "--at", "2030-01-01T08:00")
    assert res.exit_code == 1
    assert "with a timezone" in res.output
