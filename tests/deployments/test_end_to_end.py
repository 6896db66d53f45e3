"""A real Prefect server (loopback, free port, its own home), the deployments applied, a
process worker and the watcher: images dropped into a folder are enhanced once, a restarted
watcher triggers nothing, and an urgent run starts before queued bulk runs."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _wait(predicate, timeout: float, what: str, procs=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"{what}: {p.args[:3]} exited with {p.returncode}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read())
    except OSError:
        return None


def _post(url: str, body: dict):
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _python(code: str, env: dict, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, **kw
    )


class Team:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = _free_port()
        self.api = f"http://127.0.0.1:{self.port}/api"
        # Built before the per-test RETOUCH_HOME fixture runs (module scope): every retouch
        # setting the processes use is set here, inside this test's own folder.
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RETOUCH_"))
        }
        self.env.update(
            PREFECT_HOME=str(home / "prefect-home"),
            PREFECT_API_URL=self.api,
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_SERVER_UI_ENABLED="false",
            PREFECT_LOGGING_LEVEL="WARNING",
            PREFECT_WORKER_QUERY_SECONDS="1",
            PREFECT_WORKER_PREFETCH_SECONDS="1",
            RETOUCH_TEAM_POOL="e2e",
            RETOUCH_HOME=str(home / "retouch-home"),
            RETOUCH_OFFLINE="1",
        )
        self.logs = home / "logs"
        self.logs.mkdir(parents=True)
        self.procs: list[subprocess.Popen] = []
        self.prefect = str(Path(sys.executable).with_name("prefect"))

    def start(self, name: str, *args: str) -> subprocess.Popen:
        with open(self.logs / f"{name}.log", "ab") as log:
            p = subprocess.Popen(
                list(args),
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(p)
        return p

    def worker(self) -> subprocess.Popen:
        return self.start(
            "worker", self.prefect, "worker", "start", "--pool", "e2e", "--limit", "1"
        )

    def stop(self, p: subprocess.Popen) -> None:
        if p.poll() is None:
            os.killpg(p.pid, 15)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)
            p.wait()

    def runs(self, **flt) -> list[dict]:
        return _post(f"{self.api}/flow_runs/filter", flt) or []

    def wait_done(self, run_ids: list[str], timeout: float, procs) -> None:
        def done():
            states = [_get(f"{self.api}/flow_runs/{r}")["state_type"] for r in run_ids]
            failed = [s for s in states if s in ("FAILED", "CRASHED", "CANCELLED")]
            assert not failed, f"runs ended {failed}; see {self.logs}"
            return all(s == "COMPLETED" for s in states)

        _wait(done, timeout, "the runs to complete", procs)


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    home = tmp_path_factory.mktemp("team")
    t = Team(home)
    try:
        server = t.start(
            "server", t.prefect, "server", "start", "--host", "127.0.0.1", "--port", str(t.port)
        )
        _wait(lambda: _get(f"{t.api}/health") is True, 120, "the server", [server])
        t.server = server
        applied = _python(
            "from retouch.deployments.deploy import apply; print(sorted(apply()))", t.env
        )
        assert applied.returncode == 0, applied.stderr
        assert "'enhance'" in applied.stdout
        yield t
    finally:
        for p in reversed(t.procs):
            t.stop(p)


def test_dropped_images_are_enhanced_once(team, tmp_path):
    env, api, runs, server = team.env, team.api, team.runs, team.server
    worker = team.worker()
    inbox, delivery = tmp_path / "inbox", tmp_path / "delivery"
    inbox.mkdir()
    for i in range(3):
        (inbox / f"shot_{i}.jpg").write_bytes(_jpeg(i))
    (inbox / "notes.txt").write_text("not an image")

    watch = (
        "import sys; from retouch.deployments.watch import run_watcher; "
        f"print(run_watcher({str(inbox)!r}, {str(delivery)!r}, settle_s=0, once=True))"
    )
    first = _python(watch, env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "1"

    def batch_runs():
        return [r for r in runs() if "batches" in str(r["parameters"].get("source"))]

    (run,) = _wait(batch_runs, 60, "a flow run triggered by the event", [server, worker])
    assert run["parameters"]["source"].endswith(".txt")
    (batch_dest,) = _wait(
        lambda: [p.parent for p in delivery.glob("*/manifest.json")],
        150,
        "the delivery",
        [server, worker],
    )
    manifest = json.loads((batch_dest / "manifest.json").read_text())
    text = json.dumps(manifest)
    for i in range(3):
        assert f"shot_{i}" in text
    assert any(p.suffix == ".zip" for p in batch_dest.iterdir())
    _wait(
        lambda: _get(f"{api}/flow_runs/{run['id']}")["state_type"] == "COMPLETED",
        60,
        "the run to complete",
        [server, worker],
    )

    # A restarted watcher finds nothing new: no event, so no second run.
    again = _python(watch, env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "0"
    time.sleep(3)  # time enough for a stray event to become a run
    assert len(batch_runs()) == 1
    assert len(list(delivery.glob("*/manifest.json"))) == 1
    team.stop(worker)


def test_urgent_run_starts_before_queued_bulk_runs(team, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "one.jpg").write_bytes(_jpeg(7))
    # Three bulk runs queued first, then one urgent run, while no worker is running.
    queue = f"""
import json
from prefect.deployments import run_deployment
from retouch.deployments.deploy import run_urgent
from retouch.lib.recipe import load_preset
recipe = load_preset("web-ready").model_dump(mode="json")
def params(name):
    return {{"source": {str(src)!r}, "dest": {str(tmp_path)!r} + "/" + name, "recipe": recipe}}
bulk = [str(run_deployment("retouch-enhance/enhance", parameters=params(f"bulk{{i}}"),
        timeout=0, as_subflow=False).id) for i in range(3)]
urgent = str(run_urgent("retouch-enhance/enhance", params("urgent")))
print(json.dumps({{"bulk": bulk, "urgent": urgent}}))
"""
    made = _python(queue, team.env)
    assert made.returncode == 0, made.stderr
    ids = json.loads(made.stdout.strip().splitlines()[-1])
    worker = team.worker()  # one run at a time (--limit 1)
    team.wait_done([*ids["bulk"], ids["urgent"]], 240, [team.server, worker])
    team.stop(worker)

    def started(run_id: str) -> str:
        return _get(f"{team.api}/flow_runs/{run_id}")["start_time"]

    urgent_start = started(ids["urgent"])
    assert all(urgent_start < started(b) for b in ids["bulk"])
    assert (tmp_path / "urgent" / "manifest.json").exists()
    assert all((tmp_path / f"bulk{i}" / "manifest.json").exists() for i in range(3))


def _flow_run(team: Team, run_id: str) -> dict:
    return _get(f"{team.api}/flow_runs/{run_id}")


def test_a_deployment_run_given_only_a_preset_processes_the_images(team, tmp_path):
    """``preset=quick`` alone is a full run (steps run, outputs differ from the inputs); a
    recipe without steps fails the run with the reason instead of delivering the inputs."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(2):
        (src / f"p{i}.jpg").write_bytes(_jpeg(20 + i))
    queue = f"""
import json
from prefect.deployments import run_deployment
def run(name, **params):
    params |= {{"source": {str(src)!r}, "dest": {str(tmp_path)!r} + "/" + name}}
    return str(run_deployment("retouch-enhance/enhance", parameters=params,
               timeout=0, as_subflow=False).id)
print(json.dumps({{"preset": run("preset", preset="quick"),
                   "empty": run("empty", recipe={{"name": "quick"}})}}))
"""
    made = _python(queue, team.env)
    assert made.returncode == 0, made.stderr
    ids = json.loads(made.stdout.strip().splitlines()[-1])
    worker = team.worker()
    team.wait_done([ids["preset"]], 240, [team.server, worker])
    _wait(
        lambda: _flow_run(team, ids["empty"])["state_type"] in ("FAILED", "CRASHED"),
        120,
        "the run with an empty recipe to fail",
        [team.server, worker],
    )
    team.stop(worker)

    manifest = json.loads((tmp_path / "preset" / "manifest.json").read_text())
    assert [s["op"] for s in manifest["recipe"]["steps"]] == [
        "auto_color",
        "denoise",
        "upscale",
        "sharpen",
    ]
    import zipfile

    with zipfile.ZipFile(tmp_path / "preset" / "results.zip") as zf:
        for img in manifest["images"]:
            out = PILImage.open(io.BytesIO(zf.read(img["output_name"])))
            assert out.size == (2 * 56, 2 * 40)  # x2, so certainly not the input
    empty = _flow_run(team, ids["empty"])
    assert "has no steps" in (empty["state"]["message"] or ""), empty["state"]
    assert not (tmp_path / "empty" / "manifest.json").exists()


def test_a_default_cli_run_sends_its_logs_to_the_server_and_keeps_the_terminal_quiet(
    team, tmp_path
):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.jpg").write_bytes(_jpeg(30))
    env = {k: v for k, v in team.env.items() if not k.startswith("PREFECT_LOGGING")}
    retouch = str(Path(sys.executable).with_name("retouch"))
    done = subprocess.run(
        [retouch, "run", str(src), "--out", str(tmp_path / "out")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert " | INFO " not in done.stderr and " | INFO " not in done.stdout
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    flows = [r for r in team.runs() if r["parameters"].get("source") == str(src)]
    assert len(flows) == 1, manifest["run_id"]

    def logs():
        found = _post(
            f"{team.api}/logs/filter", {"logs": {"flow_run_id": {"any_": [flows[0]["id"]]}}}
        )
        return [entry for entry in found if entry["level"] >= 20]

    lines = _wait(logs, 30, "the run's logs on the server", [team.server])
    assert any("run " in entry["message"] for entry in lines), lines
    # The terminal names the run's page in the Prefect UI.
    url = f"http://127.0.0.1:{team.port}/runs/flow-run/{flows[0]['id']}"
    assert f"Prefect UI: {url}" in done.stderr


def test_submit_with_overrides_waits_for_the_run(team, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.jpg").write_bytes(_jpeg(40))
    worker = team.worker()
    retouch = str(Path(sys.executable).with_name("retouch"))
    done = subprocess.run(
        [
            retouch, "submit", str(src), "--dest", str(tmp_path / "out"),
            "--set", "export.format=png", "--wait",
        ],
        env=team.env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    team.stop(worker)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip().splitlines()[0]
    assert f"{run_id}: Completed" in done.stderr
    run = _flow_run(team, run_id)
    assert run["parameters"]["preset"] == "quick"
    assert run["parameters"]["overrides"] == ["export.format=png"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["images"][0]["output_name"] == "a.png"


def test_stopping_serve_leaves_the_applied_deployments_running(team, tmp_path):
    def deployment(name: str):
        return _get(f"{team.api}/deployments/name/retouch-enhance/{name}")

    applied = deployment("enhance")
    assert applied and not applied["paused"] and applied["work_pool_name"] == "e2e"
    serve = team.start(
        "serve", sys.executable, "-m", "retouch.cli", "serve", "--inbox", str(tmp_path)
    )
    served = _wait(lambda: deployment("enhance-served"), 120, "the served deployment", [serve])
    assert served["id"] != applied["id"]
    time.sleep(2)  # serving: its runner has started
    team.stop(serve)  # SIGTERM, as systemd stops a service
    _wait(lambda: deployment("enhance-served")["paused"], 30, "serve to pause its own")
    after = deployment("enhance")
    assert after["id"] == applied["id"] and not after["paused"]
    assert after["work_pool_name"] == "e2e"  # not taken over by the served copy
