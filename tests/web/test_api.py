"""The REST API over real HTTP, with real ``retouch run`` processes against the test Prefect
server: upload, progress, downloads with ranges, regenerate, cancel, restart."""

from __future__ import annotations

import io
import json
import os
import signal
import time
import zipfile

import pytest
from PIL import Image

from tests.web.conftest import SAMPLES, sample_files, wait_for

# Classic steps only and small outputs: the batch takes seconds.
PRESET = "web-ready"
OVERRIDES = {"fit.max_side": 160}


def _zip_members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        return {name: zf.read(name) for name in zf.namelist()}


def test_batch_end_to_end(prefect_server, serve):
    web = serve()
    c = web.client
    images = sorted(p.name for p in SAMPLES.iterdir())
    created = c.post(
        "/api/batches",
        files=sample_files(folder="shoot/"),
        data={"preset": PRESET, "overrides": json.dumps(OVERRIDES)},
    )
    assert created.status_code == 201, created.text
    batch = created.json()
    assert batch["state"] in ("queued", "running")
    assert batch["preset"] == PRESET and batch["overrides"] == OVERRIDES
    assert [i["name"] for i in batch["images"]] == [f"shoot/{n}" for n in images]
    assert [i["index"] for i in batch["images"]] == list(range(1, len(images) + 1))
    bid = batch["id"]
    assert any(b["id"] == bid and "images" not in b for b in c.get("/api/batches").json())

    done = wait_for(c, bid, ("done", "failed", "cancelled"))
    assert done["state"] == "done", done
    assert done["exit_code"] == 0 and done["error"] is None
    assert done["counts"] == {"pending": 0, "running": 0, "done": len(images), "failed": 0}
    for image in done["images"]:
        assert image["status"] == "done" and image["phase"] == "export"
        assert isinstance(image["score"], float) and 0 <= image["score"] <= 100
        assert image["verdict"] in ("improved", "unchanged", "worse")
        assert image["output_name"]
        assert image["result_url"] == f"/api/batches/{bid}/results/{image['index']}"
        for label, url in image["thumbs"].items():
            assert url == f"/api/batches/{bid}/thumbs/{image['index']}/{label}"
    thumb = c.get(done["images"][0]["thumbs"]["after"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(thumb.content)).format == "JPEG"
    assert c.get(f"/api/batches/{bid}/thumbs/1/sideways").status_code == 404

    # The comparison's full-size pair, found through the run's own manifest: the upload as
    # it was sent, and the delivered result at the size the batch reports.
    first = done["images"][0]
    full = f"/api/batches/{bid}/full/1"
    assert first["full"] == {"before": f"{full}/before", "after": f"{full}/after"}
    assert c.get(first["full"]["before"]).content == (SAMPLES / images[0]).read_bytes()
    after = c.get(first["full"]["after"])
    assert after.status_code == 200 and after.headers["content-type"].startswith("image/")
    shown = Image.open(io.BytesIO(after.content)).size
    assert shown == (first["size"]["width"], first["size"]["height"])

    # The ZIP at once, then in two ranges: the same bytes.
    whole = c.get(done["zip_url"])
    assert whole.status_code == 200
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-disposition"].startswith("attachment")
    etag = whole.headers["etag"]
    size = len(whole.content)
    half = size // 2
    first = c.get(done["zip_url"], headers={"Range": f"bytes=0-{half - 1}"})
    second = c.get(done["zip_url"], headers={"Range": f"bytes={half}-", "If-Range": etag})
    assert (first.status_code, second.status_code) == (206, 206)
    assert first.headers["content-range"] == f"bytes 0-{half - 1}/{size}"
    assert second.headers["content-range"] == f"bytes {half}-{size - 1}/{size}"
    assert first.content + second.content == whole.content
    members = _zip_members(first.content + second.content)
    by_image = {i["name"]: i["output_name"] for i in done["images"]}
    assert sorted(members) == sorted(by_image.values()) and len(members) == len(images)
    # A stale validator gets the whole new file; a range past the end is refused.
    stale = c.get(done["zip_url"], headers={"Range": "bytes=0-9", "If-Range": '"old"'})
    assert stale.status_code == 200 and stale.content == whole.content
    past = c.get(done["zip_url"], headers={"Range": f"bytes={size}-"})
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{size}"

    # One result, whole and resumed.
    name = "shoot/coffee.jpg"
    index = next(i["index"] for i in done["images"] if i["name"] == name)
    one = c.get(f"/api/batches/{bid}/results/{index}")
    assert one.status_code == 200 and one.content == members[by_image[name]]
    tail = c.get(f"/api/batches/{bid}/results/{index}", headers={"Range": "bytes=100-"})
    assert tail.status_code == 206 and tail.content == one.content[100:]
    listed = c.get(f"/api/batches/{bid}/results").json()
    assert {r["name"]: r["bytes"] for r in listed} == {
        n: len(members[o]) for n, o in by_image.items()
    }

    # Selected results: a ZIP of only those, with ranges too.
    picked = ["shoot/astronaut.jpg", by_image["shoot/rocket.jpg"]]
    sel = c.get(done["zip_url"], params={"names": ",".join(picked)})
    assert sel.status_code == 200
    assert sorted(_zip_members(sel.content)) == sorted(
        [by_image["shoot/astronaut.jpg"], by_image["shoot/rocket.jpg"]]
    )
    part = c.get(done["zip_url"], params={"names": ",".join(picked)}, headers={"Range": "bytes=5-"})
    assert part.status_code == 206 and part.content == sel.content[5:]
    missing = c.get(done["zip_url"], params={"names": "nope.jpg"})
    assert missing.status_code == 404 and "nope.jpg" in missing.json()["detail"]

    report = c.get(done["report_url"])
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    assert "coffee.jpg" in report.text

    # Regenerate one image with a stronger sharpen: only its result changes.
    regen = c.post(
        f"/api/batches/{bid}/regenerate",
        # (it scores lower: without keep_worse the better version would stay current)
        json={"names": [name], "overrides": {"sharpen.amount": 3.0}, "keep_worse": True},
    )
    assert regen.status_code == 202, regen.text
    body = regen.json()
    assert body["state"] in ("queued", "running")
    assert {i["name"]: i["status"] for i in body["images"]}[name] == "pending"
    assert all(i["status"] == "done" for i in body["images"] if i["name"] != name)
    assert c.get(done["zip_url"]).status_code == 409  # no download while it runs
    again = wait_for(c, bid, ("done", "failed", "cancelled"))
    assert again["state"] == "done", again
    assert all(i["status"] == "done" for i in again["images"])
    new_members = _zip_members(c.get(again["zip_url"]).content)
    assert sorted(new_members) == sorted(members)
    changed = sorted(m for m in members if members[m] != new_members[m])
    assert changed == [by_image[name]]
    after = c.get(f"/api/batches/{bid}/results/{index}")
    assert after.content == new_members[by_image[name]] != one.content

    bad = c.post(f"/api/batches/{bid}/regenerate", json={"names": ["ghost.jpg"]})
    assert bad.status_code == 400 and "ghost.jpg" in bad.json()["detail"]
    assert c.post(f"/api/batches/{bid}/cancel").status_code == 409

    # A restarted server finds the batch as it was.
    restarted = serve()
    assert restarted.client.get(f"/api/batches/{bid}").json() == again


def test_cancel_stops_the_running_process(prefect_server, serve):
    web = serve()
    c = web.client
    created = c.post(
        "/api/batches",
        files=sample_files(),
        data={"preset": PRESET, "overrides": json.dumps(OVERRIDES)},
    )
    assert created.status_code == 201, created.text
    bid = created.json()["id"]
    assert created.json()["state"] == "running"
    pid = web.runner.batches[bid].job.pid
    os.kill(pid, 0)  # the process exists

    cancelled = c.post(f"/api/batches/{bid}/cancel")
    assert cancelled.status_code == 202
    final = wait_for(c, bid, ("cancelled", "done", "failed"), timeout=60)
    assert final["state"] == "cancelled", final
    assert final["zip_url"] is None
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # the whole process group is gone
    assert c.post(f"/api/batches/{bid}/cancel").status_code == 409


def test_queue_runs_one_batch_at_a_time_and_a_queued_batch_cancels_at_once(serve):
    from retouch.lib.settings import get_settings
    from retouch.web.runner import Runner

    runner = Runner(get_settings().home / "web" / "batches", max_running=0)
    web = serve(runner=runner)
    c = web.client
    first = c.post("/api/batches", files=sample_files(["rocket.jpg"])).json()
    assert first["state"] == "queued" and first["counts"]["pending"] == 1
    cancelled = c.post(f"/api/batches/{first['id']}/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["state"] == "cancelled"
    assert runner.running_count() == 0
    assert c.get(f"/api/batches/{first['id']}/zip").status_code == 409


def test_a_batch_whose_process_vanished_is_failed_after_a_restart(prefect_server, serve):
    web = serve()
    c = web.client
    bid = c.post("/api/batches", files=sample_files(["rocket.jpg"])).json()["id"]
    runner = web.runner
    # The server dies without a word (no shutdown), and its batch's process with it.
    runner._stop.set()
    pid = runner.batches[bid].job.pid
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while runner.batches[bid].job.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    runner.batches[bid].job = None  # forgotten, as by a crashed server

    fresh = serve()
    batch = fresh.client.get(f"/api/batches/{bid}").json()
    assert batch["state"] == "failed"
    assert "ended without a result" in batch["error"]


def test_a_job_stopped_by_a_server_shutdown_runs_again_at_the_next_start(prefect_server, serve):
    from retouch.lib.settings import get_settings
    from retouch.web.runner import Runner

    web = serve()
    c = web.client
    bid = c.post("/api/batches", files=sample_files(["rocket.jpg"])).json()["id"]
    pid = web.runner.batches[bid].job.pid
    web.runner.stop()  # what the server's shutdown does
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    stopped = c.get(f"/api/batches/{bid}").json()
    assert stopped["state"] == "queued" and "runs again" in stopped["error"]

    later = Runner(get_settings().home / "web" / "batches", max_running=0)
    again = serve(runner=later).client.get(f"/api/batches/{bid}").json()
    assert again["state"] == "queued"
    assert [(b, j.kind) for b, j in later.queue] == [(bid, "run")]


CRASHING_RUN = """#!{python}
import json, os, signal, sys
events = sys.argv[sys.argv.index("--events") + 1]
with open(events, "a") as fh:
    fh.write(json.dumps({{"event": "image", "phase": "prepare", "name": "rocket.jpg",
                         "ok": True}}) + "\\n")
    fh.write('{{"event": "image", "phase": "proc')  # a line cut by the crash
    fh.flush()
if "{how}" == "signal":
    os.kill(os.getpid(), signal.SIGKILL)
print("warming up", file=sys.stderr)
print("error: out of memory while upscaling rocket.jpg", file=sys.stderr)
sys.exit(1)
"""


@pytest.mark.parametrize("how", ["error", "signal"])
def test_a_crashing_run_fails_the_batch_with_its_reason(serve, tmp_path, how):
    """The run process dies (an error it reports, or killed outright): the batch fails with
    the reason, its images keep the progress they made, and it can be read again."""
    import sys

    from retouch.lib.settings import get_settings
    from retouch.web.runner import Runner

    fake = tmp_path / "python"
    fake.write_text(CRASHING_RUN.format(python=sys.executable, how=how))
    fake.chmod(0o755)
    runner = Runner(get_settings().home / "web" / "batches", python=str(fake), poll_s=0.05)
    c = serve(runner=runner).client
    created = c.post("/api/batches", files=sample_files(["rocket.jpg", "coffee.jpg"]))
    assert created.status_code == 201, created.text
    batch = wait_for(c, created.json()["id"], ("done", "failed", "cancelled"), timeout=30)
    assert batch["state"] == "failed"
    if how == "error":
        assert batch["error"] == "out of memory while upscaling rocket.jpg"
        assert batch["exit_code"] == 1
    else:
        assert batch["error"] == "the run was killed (signal 9) before it finished"
    statuses = {i["name"]: i["status"] for i in batch["images"]}
    assert statuses == {"rocket.jpg": "prepared", "coffee.jpg": "pending"}
    assert batch["zip_url"] is None
    assert c.get(f"/api/batches/{batch['id']}/zip").status_code == 409
