"""``/metrics`` in the Prometheus text format: scraped over real HTTP after real runs, its
counters are the runs' manifest.json figures. ``retouch web`` counts the batches it ran (read
from their events files); ``retouch serve``'s metrics server counts flow runs that ran in other
processes (Prefect starts one per flow run)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from tests.web.conftest import free_port, wait_for

PRESET = "web-ready"
OVERRIDES = {"fit.max_side": 48}
TOKEN = "metrics-test-token"


def _shoot(folder: Path) -> Path:
    """Three tiny photos, one file that only claims to be a JPEG, one note."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    for i, name in enumerate(["a.jpg", "b.png", "c.jpg"]):
        pixels = rng.integers(0, 255, (40 + 8 * i, 56, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a photo" * 4)
    (folder / "notes.txt").write_text("not a photo")
    return folder


def _scrape(url: str, **kwargs: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page: (name, sorted labels) -> value."""
    response = httpx.get(url, timeout=30, **kwargs)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def _total(samples: dict, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(
        value
        for (n, sample_labels), value in samples.items()
        if n == name and labels.items() <= dict(sample_labels).items()
    )


def _expected(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    """What the counters must say, from the manifests alone."""
    images = [i for m in manifests for i in m["images"]]
    return {
        "succeeded": sum(m["summary"]["succeeded"] for m in manifests),
        "failed": sum(m["summary"]["failed"] for m in manifests),
        "reused": sum(m["summary"]["reused"] for m in manifests),
        "skipped": sum(m["summary"]["skipped"] for m in manifests),
        "by_status": {
            "succeeded": sum(1 for i in images if i["status"] != "failed"),
            "failed": sum(1 for i in images if i["status"] == "failed"),
            "reused": sum(1 for i in images if i["status"] != "failed" and i["reused"]),
        },
        "timed": {
            phase: sum(1 for i in images if phase in (i.get("timings") or {}))
            for phase in ("prepare", "process", "review", "export")
        },
    }


def _assert_counts_match(samples: dict, manifests: list[dict[str, Any]], preset: str) -> None:
    want = _expected(manifests)
    # The manifests' summaries and their per-image statuses tell the same story.
    assert want["by_status"] == {k: want[k] for k in ("succeeded", "failed", "reused")}
    got = {
        "succeeded": _total(samples, "retouch_images_total", outcome="succeeded", preset=preset),
        "failed": _total(samples, "retouch_images_total", outcome="failed", preset=preset),
        "reused": _total(samples, "retouch_images_reused_total", preset=preset),
        "skipped": _total(samples, "retouch_inputs_skipped_total", preset=preset),
    }
    assert got == {k: want[k] for k in got}, (got, want)
    assert _total(samples, "retouch_images_total", kind="video") == 0
    assert _total(samples, "retouch_runs_total", outcome="done") == len(manifests)
    assert _total(samples, "retouch_runs_total", outcome="error") == 0
    # Live, per phase: each failed input once, in the phase it failed in.
    assert _total(samples, "retouch_phase_images_total", outcome="failed") == want["failed"]
    # One latency observation per input and phase the manifests timed.
    for phase, count in want["timed"].items():
        assert _total(samples, "retouch_phase_seconds_count", phase=phase) == count, phase
    assert _total(samples, "retouch_process_resident_memory_bytes") > 0


def test_web_metrics_count_the_batches_as_their_manifests_do(
    prefect_server, serve, tmp_path, monkeypatch
):
    from retouch.lib.settings import reload_settings

    shoot = _shoot(tmp_path / "shoot")
    monkeypatch.setenv("RETOUCH_WEB_SOURCE_ROOTS", json.dumps([str(tmp_path)]))
    reload_settings()
    web = serve(token=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    web.client.headers.update(auth)

    # Like the API, /metrics asks for the token (a scraper sends it as a bearer token).
    assert httpx.get(f"{web.url}/metrics").status_code == 401
    before = _scrape(f"{web.url}/metrics", headers=auth)
    assert _total(before, "retouch_images_total") == 0
    assert _total(before, "retouch_web_batches", state="waiting") == 0

    manifests = []
    for _ in range(2):  # the second batch finds the first one's results in the cache
        created = web.client.post(
            "/api/batches/from-uris",
            json={"sources": [str(shoot)], "preset": PRESET, "overrides": OVERRIDES},
        )
        assert created.status_code == 201, created.text
        done = wait_for(web.client, created.json()["id"], ("done", "failed", "cancelled"))
        assert done["state"] == "done", done
        batch = web.runner.batches[done["id"]]
        manifests.append(json.loads((batch.out_dir / "manifest.json").read_text()))

    assert [m["summary"]["failed"] for m in manifests] == [1, 1]  # broken.jpg
    assert [m["summary"]["skipped"] for m in manifests] == [1, 1]  # notes.txt
    assert manifests[1]["summary"]["reused"] == 3

    samples = _scrape(f"{web.url}/metrics", headers=auth)
    _assert_counts_match(samples, manifests, PRESET)
    assert _total(samples, "retouch_web_batches", state="waiting") == 0
    assert _total(samples, "retouch_web_batches", state="running") == 0
    assert _total(samples, "retouch_steps_total") > 0  # the recipe's steps, by operation

    # A regeneration re-delivers the whole run but re-processes only the image it was asked
    # for: that one image is counted, not the run's manifest again.
    first = web.runner.batches[created.json()["id"]]
    regen = web.client.post(f"/api/batches/{first.id}/regenerate", json={"names": ["a.jpg"]})
    assert regen.status_code == 202, regen.text
    assert wait_for(web.client, first.id, ("done", "failed", "cancelled"))["state"] == "done"
    after = _scrape(f"{web.url}/metrics", headers=auth)
    assert _total(after, "retouch_images_total", outcome="succeeded") == (
        _total(samples, "retouch_images_total", outcome="succeeded") + 1
    )
    assert _total(after, "retouch_images_total", outcome="failed") == 2
    assert _total(after, "retouch_runs_total", outcome="done") == 3


def _wait(check: Any, timeout: float, what: str, log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            said = log.read_text(errors="replace")[-3000:] if log else ""
            raise AssertionError(f"{what} after {timeout} s\n{said}")
        time.sleep(0.2)
    return result


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def test_retouch_serve_counts_its_flow_runs_on_the_metrics_port(prefect_server, tmp_path):
    """`retouch serve --metrics-port` runs each flow run in a process of its own (Prefect's
    runner); the serving process's /metrics counts them as their manifests do."""
    from retouch.web.runner import _prefect_api_url

    shoot = _shoot(tmp_path / "shoot")
    dest = tmp_path / "delivery"
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    env = {**os.environ, "PREFECT_API_URL": _prefect_api_url() or ""}
    log = tmp_path / "serve.log"
    cli = [sys.executable, "-m", "retouch.cli"]
    with open(log, "wb") as out:
        served = subprocess.Popen(
            [*cli, "serve", "--metrics-port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait(
            lambda: f"metrics on {url}" in log.read_text(errors="replace"), 120, "no /metrics", log
        )
        assert _total(_scrape(url), "retouch_images_total") == 0

        overrides = [a for k, v in OVERRIDES.items() for a in ("--set", f"{k}={v}")]

        def submit() -> subprocess.CompletedProcess[str] | None:
            # Refused until the serving process has registered its deployments.
            done = subprocess.run(
                [*cli, "submit", str(shoot), "--dest", str(dest), "--preset", PRESET]
                + [*overrides, "--served", "--wait"],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            return None if "ObjectNotFound" in done.stderr else done

        submitted = _wait(submit, 120, "the served deployment never appeared", log)
        assert submitted.returncode == 0, submitted.stderr[-3000:]
        manifest = json.loads((dest / "manifest.json").read_text())
        assert manifest["summary"]["failed"] == 1

        # The serving process reads its flow runs' events every second.
        def counted() -> dict | None:
            samples = _scrape(url)
            return samples if _total(samples, "retouch_runs_total") else None

        samples = _wait(counted, 30, "the flow run was not counted", log)
        _assert_counts_match(samples, [manifest], PRESET)
        assert _total(samples, "retouch_model_loads_total") == 0  # classic steps: no model
    finally:
        os.killpg(served.pid, signal.SIGINT)
        try:
            served.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(served.pid, signal.SIGKILL)
            served.wait()
    assert not _answers(url)  # stopped with the serving process


def test_metrics_server_answers_refuses_a_busy_port_and_leaves_nothing_behind():
    from retouch.lib.errors import RetouchError
    from retouch.lib.metrics import SPOOL_ENV, MetricsServer

    with MetricsServer(free_port()) as first:
        assert first.url == f"http://127.0.0.1:{first.port}/metrics"
        assert os.environ[SPOOL_ENV] == str(first.spool)  # for the processes it starts
        samples = _scrape(first.url)
        assert _total(samples, "retouch_runs_total") == 0
        assert _total(samples, "retouch_process_resident_memory_bytes") > 0
        with pytest.raises(RetouchError) as caught:
            MetricsServer(first.port)
        message = str(caught.value)
        assert f"metrics port {first.port}" in message and "RETOUCH_METRICS_PORT" in message
        assert os.environ[SPOOL_ENV] == str(first.spool)  # the refused one changed nothing
    assert SPOOL_ENV not in os.environ and not first.spool.exists()
    assert not _answers(first.url)


@pytest.mark.parametrize(("value", "port"), [("", 0), ("0", 0), ("9464", 9464)])
def test_metrics_port_setting_is_off_when_empty_or_zero(monkeypatch, value, port):
    from retouch.lib.settings import reload_settings

    monkeypatch.setenv("RETOUCH_METRICS_PORT", value)
    assert reload_settings().metrics_port == port


def test_the_grafana_dashboard_plots_only_metrics_retouch_exports():
    import re

    from retouch.lib import metrics

    dashboard = json.loads((Path(__file__).parents[2] / "docs/grafana-dashboard.json").read_text())
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bretouch_[a-z_]+", target["expr"])
    }
    exported = {
        family.name + suffix
        for family in metrics.Metrics(queue=lambda: (0, 0)).registry.collect()
        for suffix in ("", "_total", "_bucket", "_count", "_sum")
    }
    # GPU figures appear only where there is a GPU: their names are in the module's source.
    source = Path(metrics.__file__).read_text()
    gpu = {n for n in used if n.startswith("retouch_gpu_") and f'"{n}"' in source}
    assert used - exported - gpu == set()
    assert len(dashboard["panels"]) >= 5
