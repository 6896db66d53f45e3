"""The enhance flow's tasks on a local Dask cluster of 2 workers: the same bytes as the
default runner, and the model built once in each worker."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image as PILImage

from tests.deployments.dask_runs import delivered_images, pool_loads

pytest.importorskip("prefect_dask")


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:48]
    base = np.stack([xx * 5, yy * 7, (xx + yy) * 3], axis=2).astype(np.float32)
    arr = np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_process_phase_on_dask_matches_default_runner(prefect_server, tmp_path, monkeypatch):
    from distributed import Client, LocalCluster
    from prefect.settings import PREFECT_API_URL

    from retouch.deployments.scale import enhance_on_dask
    from retouch.flows.enhance import RunOptions, enhance
    from retouch.lib.recipe import load_preset

    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        (src / f"img_{i}.jpg").write_bytes(_jpeg(i))
    recipe = load_preset("quick")  # x2 upscale with the model that ships with retouch

    default = enhance(
        str(src), str(tmp_path / "default"), recipe=recipe, options=RunOptions(chunk_size=1)
    )
    assert default.succeeded == 6

    # Spawned Dask workers report to the same test server (through their environment) and
    # get a workspace of their own, so nothing comes from the first run's result cache.
    monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())
    options = RunOptions(chunk_size=1, workspace=str(tmp_path / "ws-dask"), refresh=True)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster,
        Client(cluster) as client,
    ):
        summary = enhance_on_dask(cluster.scheduler_address)(
            str(src), str(tmp_path / "dask"), recipe=recipe, options=options
        )
        loads = client.run(pool_loads)

    assert summary.succeeded == 6
    a, b = delivered_images(tmp_path / "default"), delivered_images(tmp_path / "dask")
    assert len(a) == 6 and a.keys() == b.keys()
    assert all(a[n] == b[n] for n in a)
    assert len(loads) == 2
    for worker, counts in loads.items():
        assert counts, f"{worker} built no model"
        assert set(counts.values()) == {1}, f"{worker} rebuilt a model: {counts}"
