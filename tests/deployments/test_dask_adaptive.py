"""The enhance flow on an adaptive local Dask cluster (1 to 2 single-threaded workers): a
second worker is started while chunks wait and retired once they are done, the results are
the bytes of the default runner, and no worker builds a model twice."""

from __future__ import annotations

import io
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from tests.deployments.dask_runs import delivered_images, pool_loads

pytest.importorskip("prefect_dask")
from distributed import WorkerPlugin  # noqa: E402

IMAGES = 8
SIZE = (448, 336)  # width, height: ~0.5-1 s of processing per one-image chunk (quick, 2 cores)


def _jpeg(seed: int, size: tuple[int, int] = SIZE) -> bytes:
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 0.4, yy * 0.5, (xx + yy) * 0.2], axis=2)
    base += 40 * (np.sin(xx / (5.0 + seed)) * np.cos(yy / 9.0))[..., None]
    arr = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _worker_addresses(dask_scheduler) -> list[str]:
    return sorted(dask_scheduler.workers)


class PoolLoadsRecorder(WorkerPlugin):
    """Writes the worker's model pool loads to a file each time one of its tasks finishes:
    a worker the cluster retires can no longer be asked for them (and its process may be
    killed as it closes, before any teardown could write them)."""

    name = "retouch-pool-loads"

    def __init__(self, folder: str):
        self.folder = folder

    def setup(self, worker) -> None:
        self.address = worker.address

    def transition(self, key, start, finish, *args, **kwargs) -> None:
        if start == "executing":  # a task finished: its model loads are in the pool
            path = Path(self.folder) / f"{os.getpid()}.json"
            path.write_text(json.dumps({"address": self.address, "loads": pool_loads()}))


def _recorded_loads(folder: Path) -> dict[str, dict[str, int]]:
    found = [json.loads(p.read_text()) for p in folder.glob("*.json")]
    return {f["address"]: f["loads"] for f in found}


class WorkerWatch(threading.Thread):
    """Polls the scheduler's workers from a thread: ``counts`` is each number of workers
    seen (in order, repeats dropped), ``seen`` every worker address."""

    def __init__(self, client, period: float = 0.2):
        super().__init__(daemon=True)
        self.client, self.period = client, period
        self.counts: list[int] = []
        self.seen: set[str] = set()
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            workers = self.client.run_on_scheduler(_worker_addresses)
            self.seen.update(workers)
            if not self.counts or self.counts[-1] != len(workers):
                self.counts.append(len(workers))
            self.stopped.wait(self.period)

    def wait_until(self, done, deadline_s: float) -> bool:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if done():
                return True
            time.sleep(self.period)
        return done()


def test_adaptive_cluster_grows_under_load_and_shrinks_after(prefect_server, tmp_path, monkeypatch):
    from distributed import Client
    from prefect.settings import PREFECT_API_URL

    from retouch.deployments.scale import enhance_on_dask, local_cluster
    from retouch.flows.enhance import RunOptions, enhance
    from retouch.lib.recipe import load_preset

    src = tmp_path / "src"
    src.mkdir()
    for i in range(IMAGES):
        (src / f"img_{i:02d}.jpg").write_bytes(_jpeg(i))
    recipe = load_preset("quick")  # x2 upscale with the model that ships with retouch
    default = enhance(
        str(src), str(tmp_path / "default"), recipe=recipe, options=RunOptions(chunk_size=1)
    )
    assert default.succeeded == IMAGES

    # Spawned Dask workers report to the same test server (through their environment) and
    # get a workspace of their own, so nothing comes from the first run's result cache.
    monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())
    recorded = tmp_path / "pool-loads"
    recorded.mkdir()
    options = RunOptions(chunk_size=1, workspace=str(tmp_path / "ws-dask"), refresh=True)
    # The shipped idle rule (10 checks a second apart); a target duration of 0.25 s instead
    # of 1 s, so that two chunks in flight ask for a second worker on a machine several
    # times faster than this one too (here a one-image chunk takes 0.5-1 s).
    with (
        local_cluster(adapt=(1, 2), target_duration="0.25s", dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        client.register_plugin(PoolLoadsRecorder(str(recorded)))
        watch = WorkerWatch(client)
        watch.start()
        try:
            summary = enhance_on_dask(cluster.scheduler_address)(
                str(src), str(tmp_path / "dask"), recipe=recipe, options=options
            )
            grown = max(watch.counts)
            shrunk = watch.wait_until(lambda: watch.counts[-1] == 1, deadline_s=60)
            live = client.run(pool_loads)
            events = client.get_events("all")
        finally:
            watch.stopped.set()
            watch.join()

    assert summary.succeeded == IMAGES
    a, b = delivered_images(tmp_path / "default"), delivered_images(tmp_path / "dask")
    assert len(a) == IMAGES and a.keys() == b.keys()
    assert all(a[n] == b[n] for n in a)
    # One worker to start with, two while the chunks waited, one again once they were done.
    assert watch.counts[0] == 1 and grown == 2, watch.counts
    assert shrunk and len(live) == 1, watch.counts
    # The scheduler's record of each worker it let go: nothing was running there, nothing
    # computed was lost with it.
    removed = [msg for _when, msg in events if msg.get("action") == "remove-worker"]
    assert len(removed) == len(watch.seen) - 1 >= 1
    assert all(not m["processing-tasks"] and not m["lost-computed-tasks"] for m in removed)
    # Every worker there was, retired or live, built the model at most once, and the builds
    # are the ones the run's manifest reports (the first chunk on each worker).
    loads = {**_recorded_loads(recorded), **live}
    assert watch.seen <= loads.keys() and len(watch.seen) >= 2
    for worker, counts in loads.items():
        assert set(counts.values()) <= {1}, f"{worker} rebuilt a model: {counts}"
        assert all("retouch-compact-x2" in key for key in counts)
    manifest = json.loads((tmp_path / "dask" / "manifest.json").read_text())
    reported = sum("model_load" in image["timings"] for image in manifest["images"])
    assert sum(len(counts) for counts in loads.values()) == reported >= 1


def test_a_cluster_for_one_run_adapts_from_its_minimum(prefect_server, tmp_path, monkeypatch):
    """``enhance_on_dask(adapt=...)``: prefect-dask starts the local cluster at the minimum
    and makes it adaptive for the run; the results are the default runner's bytes."""
    from prefect.settings import PREFECT_API_URL

    from retouch.deployments.scale import dask_runner, enhance_on_dask
    from retouch.flows.enhance import RunOptions, enhance
    from retouch.lib.recipe import load_preset

    runner = dask_runner(adapt=(1, 3), wait_count=5)
    assert runner.cluster_kwargs["n_workers"] == 1
    assert runner.adapt_kwargs == {
        "minimum": 1,
        "maximum": 3,
        "target_duration": "1s",
        "interval": "1s",
        "wait_count": 5,
    }

    src = tmp_path / "src"
    src.mkdir()
    for i in range(2):
        (src / f"small_{i}.jpg").write_bytes(_jpeg(i, (48, 32)))
    recipe = load_preset("quick")
    default = enhance(str(src), str(tmp_path / "default"), recipe=recipe)
    monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())
    options = RunOptions(workspace=str(tmp_path / "ws-dask"), refresh=True)
    summary = enhance_on_dask(adapt=(1, 2))(
        str(src), str(tmp_path / "dask"), recipe=recipe, options=options
    )
    assert default.succeeded == summary.succeeded == 2
    assert delivered_images(tmp_path / "default") == delivered_images(tmp_path / "dask")


@pytest.mark.parametrize("adapt", [(2, 1), (-1, 2), (0, 0)])
def test_adapt_needs_a_minimum_no_larger_than_a_positive_maximum(adapt):
    from retouch.deployments.scale import dask_runner, local_cluster

    for make in (dask_runner, local_cluster):
        with pytest.raises(ValueError, match=r"0 <= minimum <= maximum"):
            make(adapt=adapt)


def test_adapt_is_for_local_clusters_only():
    from retouch.deployments.scale import dask_runner

    with pytest.raises(ValueError, match="sized by its own cluster.adapt"):
        dask_runner("tcp://scheduler:8786", adapt=(1, 4))
