"""Per-image work in worker processes (retouch.lib.phases.workers): the same results as in the
flow's process, every progress event, and a dead worker costs only its own image."""

from __future__ import annotations

import io
import os
import signal
import sys
import time

import numpy as np
import pytest
from PIL import Image as PILImage

from retouch.lib import progress, sources
from retouch.lib.phases import workers
from retouch.lib.phases.context import RunConfig
from retouch.lib.phases.prepare import new_record
from retouch.lib.recipe import load_preset
from retouch.lib.settings import reload_settings

PHASES = (
    workers.prepare_batch,
    workers.process_batch,
    workers.review_batch,
    workers.record_versions({}, ""),
    workers.export_batch,
)


def _photo(seed: int, w: int = 72, h: int = 54) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(autouse=True)
def _no_pool_left():
    yield
    workers.shutdown()


def _records(folder, count):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"p{i:02d}.jpg").write_bytes(_photo(i))
    found = sources.discover(str(folder))
    return [new_record(item, i) for i, item in enumerate(found.items, start=1)]


def _config(tmp_path, name):
    return RunConfig(
        run_id=f"run-{name}",
        workspace=str(tmp_path / f"ws-{name}"),
        recipe=load_preset("web-ready"),
    )


def _run_phases(records, config):
    events = []
    unsubscribe = progress.subscribe(lambda e: events.append(e.model_dump()))
    try:
        for work in PHASES:
            records = workers.map_images(work, records, config)
    finally:
        unsubscribe()
    return records, events


def _use_processes(monkeypatch, n):
    monkeypatch.setenv("RETOUCH_PROCESSES", str(n))
    reload_settings()


def test_worker_processes_give_the_same_results_and_events(tmp_path, monkeypatch):
    records = _records(tmp_path / "src", 20)
    _use_processes(monkeypatch, 1)
    config_inline = _config(tmp_path, "inline")
    assert workers.processes_for(config_inline, len(records)) == 0
    inline, inline_events = _run_phases(records, config_inline)

    _use_processes(monkeypatch, 2)
    config_pool = _config(tmp_path, "pool")
    assert workers.processes_for(config_pool, len(records)) == 2
    pooled, pooled_events = _run_phases(records, config_pool)
    assert workers._pool is not None  # the work really went to worker processes
    worker_pids = {p.pid for p in workers._pool._processes.values()}
    assert worker_pids and os.getpid() not in worker_pids

    assert [r.name for r in pooled] == [r.name for r in inline]
    assert all(r.ok for r in pooled), [r.reason for r in pooled if not r.ok]
    for a, b in zip(inline, pooled, strict=True):
        assert a.result_key == b.result_key  # same content key: same recipe, same input
        assert a.scores["score"] == b.scores["score"]
        assert a.output_name == b.output_name and a.output_sha256 == b.output_sha256
    ws_inline, ws_pool = tmp_path / "ws-inline", tmp_path / "ws-pool"
    results = sorted(p.relative_to(ws_inline) for p in (ws_inline / "results").rglob("*.png"))
    assert results and results == sorted(
        p.relative_to(ws_pool) for p in (ws_pool / "results").rglob("*.png")
    )
    for rel in results:
        assert (ws_inline / rel).read_bytes() == (ws_pool / rel).read_bytes()
    # One version recorded per image, by the workers as by the flow's process.
    assert len(list((ws_pool / "versions").rglob("v/*.json"))) == 20
    assert len(list((ws_inline / "versions").rglob("v/*.json"))) == 20

    def per_phase(events):
        return sorted((e.get("phase"), e.get("name")) for e in events if e["event"] == "image")

    assert per_phase(pooled_events) == per_phase(inline_events)
    assert len(per_phase(pooled_events)) == 20 * 4  # recording versions emits no event
    # The records passed in are left as they were (the phases return changed copies).
    assert all(r.sha256 is None and not r.scores for r in records)


def test_one_pass_per_image_in_workers_equals_the_phases_one_by_one(tmp_path, monkeypatch):
    """A chunk in worker processes goes through prepare, process, review and versions in one
    pass per image: the same records, results, previews, versions and events as the phases
    run one after the other in the flow's process."""
    records = _records(tmp_path / "src", 20)
    _use_processes(monkeypatch, 1)
    inline, inline_events = _run_phases(records, _config(tmp_path, "inline"))

    _use_processes(monkeypatch, 2)
    config = _config(tmp_path, "pass")
    assert workers.one_pass(config, records)
    assert not workers.one_pass(config, records[: workers.MIN_IMAGES - 1])
    events = []
    unsubscribe = progress.subscribe(lambda e: events.append(e.model_dump()))
    try:
        passed = workers.map_images(workers.in_one_pass({}, ""), records, config)
        passed = workers.map_images(workers.export_batch, passed, config)
    finally:
        unsubscribe()
    assert workers._pool is not None

    assert all(r.ok for r in passed), [r.reason for r in passed if not r.ok]
    for a, b in zip(inline, passed, strict=True):
        assert (a.name, a.sha256, a.result_key) == (b.name, b.sha256, b.result_key)
        assert a.analysis == b.analysis and a.input == b.input
        # The version's id is the run's own; the rest of what was delivered is the same.
        assert a.output.model_dump(exclude={"version_id"}) == b.output.model_dump(
            exclude={"version_id"}
        )
        assert a.output.version == b.output.version == 1
        assert a.scores == b.scores and a.problems == b.problems
        assert a.output_name == b.output_name and a.output_sha256 == b.output_sha256
        assert set(a.timings) == set(b.timings)
    ws_inline, ws_pass = tmp_path / "ws-inline", tmp_path / "ws-pass"
    for inline_dir, pass_dir in (
        (ws_inline / "results", ws_pass / "results"),
        (ws_inline / "runs" / "run-inline", ws_pass / "runs" / "run-pass"),  # previews
    ):
        files = sorted(
            p.relative_to(inline_dir) for p in inline_dir.rglob("*") if p.suffix in (".png", ".jpg")
        )
        assert files
        assert files == sorted(
            p.relative_to(pass_dir) for p in pass_dir.rglob("*") if p.suffix in (".png", ".jpg")
        )
        for rel in files:
            assert (inline_dir / rel).read_bytes() == (pass_dir / rel).read_bytes()
    assert len(list((ws_pass / "versions").rglob("v/*.json"))) == 20

    def per_phase(got):
        return sorted((e.get("phase"), e.get("name")) for e in got if e["event"] == "image")

    assert per_phase(events) == per_phase(inline_events)


def test_one_pass_reads_and_decodes_each_image_once(tmp_path, monkeypatch):
    """Phase by phase an image is decoded four times (prepare, process, the review's input and
    result); in one pass once, and the review scores the result as it was computed."""
    import retouch.lib.phases.prepare as prepare_mod
    import retouch.lib.phases.process as process_mod
    import retouch.lib.phases.review as review_mod
    import retouch.lib.workspace as workspace_mod

    decoded: list[str] = []
    for module in (prepare_mod, process_mod, review_mod, workspace_mod):
        real = module.decode

        def counting(data, name, *args, _real=real, **kwargs):
            decoded.append(name)
            return _real(data, name, *args, **kwargs)

        monkeypatch.setattr(module, "decode", counting)
    records = _records(tmp_path / "src", 3)
    config = _config(tmp_path, "one")
    ctx = config.context()
    phased = records
    for work in PHASES[:4]:
        phased = work([r.model_copy(deep=True) for r in phased], config, ctx)
    assert len(decoded) == 4 * 3
    decoded.clear()
    config = _config(tmp_path, "two")
    passed = workers.one_pass_batch(
        [r.model_copy(deep=True) for r in records], config, config.context()
    )
    assert len(decoded) == 3
    assert [r.scores for r in passed] == [r.scores for r in phased]
    assert all(r.ok and r.output.version == 1 for r in passed)


def test_small_chunks_and_model_recipes_stay_in_the_flow_process(tmp_path, monkeypatch):
    _use_processes(monkeypatch, 4)
    config = _config(tmp_path, "x")
    assert workers.processes_for(config, workers.MIN_IMAGES - 1) == 0
    assert workers.processes_for(config, workers.MIN_IMAGES) == 4
    models = config.model_copy(update={"recipe": load_preset("upscale-x4")})
    assert models.recipe.models()
    assert workers.processes_for(models, 500) == 0


def test_killed_workers_cost_no_image(tmp_path, monkeypatch):
    """Every worker is killed after the pool starts: the batches they held are redone one
    image at a time in a fresh pool, and every image still succeeds."""
    records = _records(tmp_path / "src", 16)
    _use_processes(monkeypatch, 2)
    config = _config(tmp_path, "kill")
    prepared = workers.map_images(workers.prepare_batch, records, config)
    pool = workers._pool
    assert pool is not None
    for proc in list(pool._processes.values()):
        os.kill(proc.pid, signal.SIGKILL)
    deadline = time.time() + 10
    while any(p.is_alive() for p in pool._processes.values()) and time.time() < deadline:
        time.sleep(0.05)
    processed = workers.map_images(workers.process_batch, prepared, config)
    assert [r.name for r in processed] == [r.name for r in prepared]
    assert all(r.ok and r.result_key for r in processed), [r.reason for r in processed]
    assert workers._pool is not pool  # a fresh pool took over


def _crashing_work(work, batch, *args):
    """Stands in for workers._work in the workers: dies on p03.jpg, like a decoder crash."""
    if any(r.name == "p03.jpg" for r in batch):
        os._exit(7)
    return workers._work(work, batch, *args)


def test_an_image_that_kills_its_worker_fails_alone(tmp_path, monkeypatch):
    records = _records(tmp_path / "src", 18)
    _use_processes(monkeypatch, 2)
    config = _config(tmp_path, "crash")
    prepared = workers.map_images(workers.prepare_batch, records, config)
    monkeypatch.setattr(workers, "_work", _crashing_work)
    events = []
    unsubscribe = progress.subscribe(lambda e: events.append(e.model_dump()))
    try:
        processed = workers.map_images(workers.process_batch, prepared, config)
    finally:
        unsubscribe()
    by_name = {r.name: r for r in processed}
    assert len(by_name) == 18
    bad = by_name["p03.jpg"]
    assert not bad.ok and bad.failed_phase == "process"
    assert "worker process handling this image died" in bad.reason
    assert all(r.ok and r.result_key for n, r in by_name.items() if n != "p03.jpg")
    failed_events = [e for e in events if e["event"] == "image" and not e["ok"]]
    assert [e["name"] for e in failed_events] == ["p03.jpg"]


_FRESH_PAGES = """
    import ctypes, sys
    import numpy as np
    from retouch.lib import perf

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
            "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    if sys.argv[1] == "keep":
        assert perf.keep_freed_memory()
    if sys.argv[1] == "tuned":  # the user's (or Dask's) malloc setting wins
        assert not perf.keep_freed_memory()
    size = 64 << 20  # larger than glibc's largest mmap threshold (32 MB)
    start = perf.rss_bytes()
    a = np.ones(size, np.uint8)
    mapped = libc.mallinfo2().hblkhd  # bytes in blocks of their own (mmap)
    del a
    held = perf.rss_bytes() - start
    perf.trim_memory()
    print(mapped, held, held - (perf.rss_bytes() - start))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_workers_reuse_freed_memory_for_the_next_large_array_and_give_it_back(
    tmp_path, monkeypatch
):
    """A 64 MB array: by default a mapping of its own, fresh zeroed pages from the system,
    unmapped when freed; in a worker (perf.keep_freed_memory) heap memory that stays for the
    next image's arrays, handed back to the system when trimmed between batches."""
    import subprocess
    import textwrap

    # Dask's nanny sets MALLOC_TRIM_THRESHOLD_ in the process it runs in (the Dask tests).
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}

    def run(mode: str, **env: str) -> tuple[int, int, int]:
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(_FRESH_PAGES), mode],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
            env={**clean, **env},
        )
        assert proc.returncode == 0, proc.stderr
        mapped, held, given_back = proc.stdout.split()
        return int(mapped), int(held), int(given_back)

    size = 64 << 20
    mapped, held, _ = run("default")
    assert mapped >= size and held < size // 4
    mapped, held, given_back = run("keep")
    assert mapped < size // 4 and held > size * 3 // 4 and given_back > size * 3 // 4
    mapped, held, _ = run("tuned", MALLOC_TRIM_THRESHOLD_="65536")
    assert mapped >= size and held < size // 4

    called: list[bool] = []
    from retouch.lib import perf

    monkeypatch.setattr(perf, "keep_freed_memory", lambda: called.append(True) or True)
    monkeypatch.setattr("cv2.setNumThreads", lambda n: None)  # this process keeps its threads
    workers._init_worker(dict(os.environ))
    assert called == [True]
