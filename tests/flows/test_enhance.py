"""End to end: the four-phase flow under a real Prefect test server, through the CLI too."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image as PILImage
from typer.testing import CliRunner

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def _photo(seed: int, w: int = 96, h: int = 64) -> bytes:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (w + h)], axis=2).astype(
        np.float32
    )
    arr = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _batch_with_two_bad(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(10):
        (folder / f"photo_{i:02d}.jpg").write_bytes(_photo(i))
    (folder / "empty.jpg").write_bytes(b"")
    good = _photo(99)
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 2])


def _zip_names(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        return sorted(zf.namelist())


def test_quick_preset_on_samples_delivers_zip_manifest_report(prefect_server, tmp_path):
    from retouch.flows.enhance import enhance
    from retouch.lib.recipe import load_preset

    dest = tmp_path / "out"
    summary = enhance(source=str(SAMPLES), dest=str(dest), recipe=load_preset("quick"))
    samples = sorted(p.name for p in SAMPLES.iterdir() if p.suffix in (".jpg", ".png"))
    assert summary.exit_code == 0
    assert summary.succeeded == len(samples) and summary.failed == 0
    names = _zip_names(dest / "results.zip")
    assert names == sorted(Path(n).stem + ".jpg" for n in samples)
    manifest = json.loads((dest / "manifest.json").read_text())
    assert {img["name"] for img in manifest["images"]} == set(samples)
    for img in manifest["images"]:
        assert img["status"] == "ok"
        assert len(img["sha256"]) == 64 and len(img["output_sha256"]) == 64
        assert img["scores"]["verdict"] in ("improved", "unchanged", "worse")
        assert 0 <= img["scores"]["score"] <= 100 and img["scores"]["quality"]["after"] > 0
        assert {"prepare", "process", "review", "export"} <= set(img["timings"])
    astronaut = next(i for i in manifest["images"] if i["name"] == "astronaut.jpg")
    # faces before and after (the quick preset keeps the astronaut's face findable)
    assert (
        astronaut["scores"]["faces"]["before"] >= 1 and astronaut["scores"]["faces"]["after"] >= 1
    )
    # The ZIP holds exactly the bytes the manifest describes.
    with zipfile.ZipFile(dest / "results.zip") as zf:
        for img in manifest["images"]:
            import hashlib

            assert hashlib.sha256(zf.read(img["output_name"])).hexdigest() == img["output_sha256"]
    report = (dest / "report.html").read_text()
    assert "astronaut.jpg" in report and "data:image/jpeg;base64," in report
    for img in manifest["images"]:
        scores = img["scores"]
        before, after = scores["score_before"], scores["score"]
        # The verdict is read off the two numbers shown, never against them.
        assert abs((after - before) - scores["gain"]) < 0.15, (img["name"], scores)
        if scores["verdict"] == "improved":
            assert after > before, (img["name"], scores)
        elif scores["verdict"] == "worse":
            assert after <= before, (img["name"], scores)
        else:
            assert abs(after - before) <= 3.05, (img["name"], scores)
        # The report shows the same pair and verdict.
        assert f"score {before:.2f} → <b>{after:.2f}</b> " in report, img["name"]
    _preview_agrees_with_the_run(manifest, tmp_path)
    # The grayscale sample stays gray.
    with zipfile.ZipFile(dest / "results.zip") as zf:
        cam = PILImage.open(io.BytesIO(zf.read("camera.jpg")))
        assert cam.mode == "L"


def _preview_agrees_with_the_run(manifest: dict, tmp_path: Path) -> None:
    """``retouch preview`` with the same preset scores each sample as the run did."""
    from retouch.lib.quality import preview
    from retouch.lib.recipe import load_preset

    variants = preview.variants_for(load_preset("quick"), None)
    result = preview.run_preview(
        str(SAMPLES), variants, str(tmp_path / "sheet.png"), sample_size=len(manifest["images"])
    )
    by_name = {img["name"]: img["scores"] for img in manifest["images"]}
    assert sorted(c.image for c in result.cells) == sorted(by_name)
    for cell in result.cells:
        run = by_name[cell.image]
        # Same pixels, same scoring path; only float rounding may differ.
        assert cell.score == pytest.approx(run["score"], abs=0.25), cell.image
        assert cell.score_before == pytest.approx(run["score_before"], abs=0.25), cell.image
        assert cell.verdict == run["verdict"], cell.image


def test_cli_run_with_two_corrupt_files_exits_2_and_delivers_the_rest(prefect_server, tmp_path):
    from retouch.cli.main import app

    src = tmp_path / "batch"
    _batch_with_two_bad(src)
    dest = tmp_path / "dest"
    result = CliRunner().invoke(app, ["run", str(src), "--preset", "quick", "--out", str(dest)])
    assert result.exit_code == 2, result.output
    assert len(_zip_names(dest / "results.zip")) == 10
    manifest = json.loads((dest / "manifest.json").read_text())
    bad = {img["name"]: img for img in manifest["images"] if img["status"] == "failed"}
    assert set(bad) == {"empty.jpg", "truncated.jpg"}
    assert "empty" in bad["empty.jpg"]["reason"].lower()
    assert (
        "truncated" in bad["truncated.jpg"]["reason"].lower()
        or "corrupt" in bad["truncated.jpg"]["reason"].lower()
    )
    assert manifest["summary"] == {
        "total": 12,
        "succeeded": 10,
        "failed": 2,
        "skipped": 0,
        "reused": 0,
    }
    assert "empty.jpg" in result.output and "truncated.jpg" in result.output


def test_rerun_reuses_results_and_export_settings_change_reencodes_only(prefect_server, tmp_path):
    from retouch.flows.enhance import enhance
    from retouch.lib.recipe import apply_overrides, load_preset

    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"p{i}.jpg").write_bytes(_photo(i))
    first = enhance(source=str(src), dest=str(tmp_path / "a"), recipe=load_preset("quick"))
    second_recipe = apply_overrides(load_preset("quick"), ["export.format=png"])
    second = enhance(source=str(src), dest=str(tmp_path / "b"), recipe=second_recipe)
    assert first.exit_code == second.exit_code == 0
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["summary"]["reused"] == 3
    assert _zip_names(tmp_path / "b" / "results.zip") == ["p0.png", "p1.png", "p2.png"]


def test_no_images_is_exit_1(prefect_server, tmp_path):
    from retouch.cli.main import app

    empty = tmp_path / "nothing"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    result = CliRunner().invoke(app, ["run", str(empty), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "no images" in result.output


def test_retouch_run_lists_its_source_once(prefect_server, tmp_path, monkeypatch):
    """The check before Prefect starts and the run's discover task share one listing."""
    from retouch.cli.main import app
    from retouch.lib.sources import discovery

    src = tmp_path / "in"
    src.mkdir()
    for i in range(2):
        (src / f"p{i}.jpg").write_bytes(_photo(i))
    listed: list[str] = []
    real = discovery._from_local

    def counting(source, *args, **kwargs):
        listed.append(source)
        return real(source, *args, **kwargs)

    monkeypatch.setattr(discovery, "_from_local", counting)
    result = CliRunner().invoke(
        app, ["run", str(src), "--preset", "web-ready", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 0, result.output
    assert listed == [str(src)]
    assert len(json.loads((tmp_path / "o" / "manifest.json").read_text())["images"]) == 2


def test_unknown_preset_lists_valid_ones(tmp_path):
    from retouch.cli.main import app

    result = CliRunner().invoke(
        app, ["run", str(SAMPLES), "--preset", "nope", "--out", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert "unknown preset 'nope'" in result.output and "quick" in result.output


def test_bad_override_names_the_step(tmp_path):
    from retouch.cli.main import app

    result = CliRunner().invoke(
        app,
        [
            "run",
            str(SAMPLES),
            "--preset",
            "quick",
            "--set",
            "sharpen.amount=99",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 1
    assert "sharpen" in result.output and "amount" in result.output


def test_models_pull_offline_names_file_url_and_ways(tmp_path):
    from retouch.cli.main import app

    result = CliRunner().invoke(app, ["models", "pull", "realesrgan-x4plus"])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "RealESRGAN_x4plus.pth" in text
    assert (
        "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth"
        in text
    )
    assert "retouch models import" in text and "RETOUCH_MODEL_MIRROR" in text


def test_run_with_missing_weights_exits_1_before_any_work(tmp_path):
    from retouch.cli.main import app

    dest = tmp_path / "d"
    result = CliRunner().invoke(
        app, ["run", str(SAMPLES), "--preset", "upscale-x4", "--out", str(dest)]
    )
    assert result.exit_code == 1
    assert "RealESRGAN_x4plus.pth" in " ".join(result.output.split())
    assert not dest.exists()


def test_s3_source_and_destination(prefect_server, s3_endpoint, tmp_path):
    import s3fs

    from retouch.flows.enhance import enhance
    from retouch.lib.recipe import load_preset

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})
    fs.mkdir("retouch-in")
    fs.mkdir("retouch-out")
    for name in ("astronaut.jpg", "coffee.jpg", "camera.png"):
        fs.pipe(f"retouch-in/shoot/{name}", (SAMPLES / name).read_bytes())
    fs.pipe("retouch-in/shoot/broken.jpg", b"not an image at all")
    summary = enhance(
        source="s3://retouch-in/shoot/",
        dest="s3://retouch-out/delivery",
        recipe=load_preset("quick"),
    )
    assert summary.exit_code == 2
    fs.invalidate_cache()
    listed = sorted(p.rsplit("/", 1)[1] for p in fs.ls("retouch-out/delivery"))
    assert listed == ["manifest.json", "report.html", "results.zip"]
    manifest = json.loads(fs.cat("retouch-out/delivery/manifest.json"))
    assert manifest["summary"]["succeeded"] == 3
    broken = [i for i in manifest["images"] if i["name"] == "broken.jpg"][0]
    assert broken["status"] == "failed" and broken["reason"]
    local_zip = tmp_path / "r.zip"
    local_zip.write_bytes(fs.cat("retouch-out/delivery/results.zip"))
    assert _zip_names(local_zip) == ["astronaut.jpg", "camera.jpg", "coffee.jpg"]
    # No credentials anywhere in what we deliver.
    assert "testing" not in json.dumps(manifest).replace("testing-", "")


def test_remove_objects_with_a_mask_folder(prefect_server, tmp_path):
    from retouch.cli.main import app

    src, masks = tmp_path / "src", tmp_path / "masks"
    src.mkdir()
    masks.mkdir()
    yy, xx = np.mgrid[0:64, 0:96]
    base = np.stack([xx * 2, yy * 3, xx + yy], axis=2).astype(np.uint8)
    marked = base.copy()
    marked[20:40, 30:60] = (255, 0, 0)  # a red "watermark"
    PILImage.fromarray(marked).save(src / "marked.png")
    PILImage.fromarray(base).save(src / "nomask.png")
    mask = np.zeros((64, 96), np.uint8)
    mask[20:40, 30:60] = 255
    PILImage.fromarray(mask).save(masks / "marked.png")

    dest = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["run", str(src), "-p", "remove-objects-fast", "--masks", str(masks), "-o", str(dest)]
    )
    assert result.exit_code == 2, result.output
    manifest = json.loads((dest / "manifest.json").read_text())
    by_name = {img["name"]: img for img in manifest["images"]}
    assert by_name["marked.png"]["status"] == "ok"
    assert by_name["nomask.png"]["status"] == "failed"
    assert "no inpaint mask for stem 'nomask'" in by_name["nomask.png"]["reason"]
    with zipfile.ZipFile(dest / "results.zip") as zf:
        out = np.asarray(PILImage.open(io.BytesIO(zf.read("marked.png"))).convert("RGB")).astype(
            int
        )
    red = out[22:38, 32:58]
    assert (red[:, :, 0] - red[:, :, 1]).mean() < 60  # the red block is gone
    assert np.array_equal(out[:15], base[:15].astype(int))  # untouched pixels are exact (PNG)


def test_run_publishes_summary_table_and_link_artifacts(prefect_server, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter

    from retouch.flows.enhance import enhance
    from retouch.lib.recipe import load_preset

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.jpg").write_bytes(_photo(1))
    (src / "b.jpg").write_bytes(b"garbage")
    state = enhance(
        source=str(src), dest=str(tmp_path / "out"), recipe=load_preset("quick"), return_state=True
    )
    summary = state.result()
    assert summary.exit_code == 2
    keys = [
        "retouch-summary",
        "retouch-images",
        "retouch-zip",
        "retouch-report",
        "retouch-performance",
    ]
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)),
            flow_run_filter=FlowRunFilter(id={"any_": [state.state_details.flow_run_id]}),
        )
    by_key = {a.key: a for a in arts}
    assert set(by_key) == set(keys)
    assert "b.jpg" in by_key["retouch-summary"].data
    table = by_key["retouch-images"].data
    rows = json.loads(table) if isinstance(table, str) else table
    assert {r["image"]: r["status"] for r in rows} == {"a.jpg": "ok", "b.jpg": "failed"}
    assert "file://" in by_key["retouch-zip"].data and "results.zip" in by_key["retouch-zip"].data
    assert "images/s" in by_key["retouch-performance"].data
    figures = summary.performance
    assert figures["images"] == 2 and figures["succeeded"] == 1
    assert figures["images_per_s"] > 0 and figures["rss_peak_mb"] > 0
    assert set(figures["phase_seconds"]) == {"prepare", "process", "review", "export"}
    assert {"prepare-process-review", "export", "deliver"} <= set(figures["spans"])
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["performance"]["images"] == 2


def _run_recording_phases(tmp_path, count: int, options) -> tuple[Any, list[tuple[str, str]]]:
    """``web-ready`` over ``count`` photos p0.jpg...; the run's summary and its image events
    as (phase, name), in order."""
    from retouch.flows.enhance import enhance
    from retouch.lib import progress
    from retouch.lib.recipe import load_preset

    src = tmp_path / "src"
    src.mkdir()
    for i in range(count):
        (src / f"p{i}.jpg").write_bytes(_photo(i))
    events: list[tuple[str, str]] = []
    unsubscribe = progress.subscribe(
        lambda e: events.append((e.phase, e.name)) if e.event == "image" else None
    )
    try:
        summary = enhance(
            source=str(src), dest=str(tmp_path / "out"), recipe=load_preset("web-ready"),
            options=options,
        )  # fmt: skip
    finally:
        unsubscribe()
    return summary, events


def test_chunks_stream_through_the_phases(prefect_server, tmp_path):
    """A chunk is reviewed as soon as it is processed: the first review comes before the last
    image is processed (a phase-at-a-time flow would process every image first)."""
    from retouch.flows.enhance import RunOptions

    summary, events = _run_recording_phases(tmp_path, 6, RunOptions(chunk_size=1))
    assert summary.succeeded == 6
    phases = [phase for phase, _ in events]
    assert phases.count("process") == 6 and phases.count("review") == 6
    last_process = max(i for i, p in enumerate(phases) if p == "process")
    assert phases.index("review") < last_process


def test_chunking_is_one_chunk_per_worker_when_small_and_bounded_when_large():
    from retouch.flows.scheduling import chunk_size_for, chunked

    assert chunk_size_for(6, None, 25) == 4  # one worker: chunks of at most 4
    assert chunk_size_for(6, None, 25, workers=2) == 3  # one chunk per worker
    assert chunk_size_for(8, None, 25, workers=2) == 4
    assert chunk_size_for(3, None, 25, workers=4) == 1
    assert chunk_size_for(100, None, 25, workers=2) == 4
    assert chunk_size_for(2000, None, 25) == 80
    assert len(chunked(list(range(2000)), chunk_size_for(2000, None, 25))) == 25
    assert len(chunked(list(range(2001)), chunk_size_for(2001, None, 25))) == 25
    assert chunk_size_for(2000, 10, 25) == 10  # an explicit size wins


def test_with_automatic_chunks_the_first_image_goes_alone_ahead(monkeypatch):
    from retouch.flows.scheduling import run_chunks
    from retouch.lib.settings import reload_settings

    monkeypatch.delenv("RETOUCH_CHUNK_SIZE", raising=False)
    monkeypatch.setenv("RETOUCH_WORKERS", "2")
    reload_settings()
    try:
        size, chunks = run_chunks(list(range(6)), None)
        assert size == 3 and chunks == [[0], [1, 2], [3, 4, 5]]
        assert run_chunks(list(range(6)), 2) == (2, [[0, 1], [2, 3], [4, 5]])  # explicit: kept
        assert run_chunks([7], None) == (1, [[7]])
        assert run_chunks([], None)[1] == []
        size, chunks = run_chunks(list(range(2000)), None)
        assert [len(c) for c in chunks[:3]] == [1, size - 1, size]
        assert [i for c in chunks for i in c] == list(range(2000))  # every image once, in order
        monkeypatch.setenv("RETOUCH_CHUNK_SIZE", "4")  # a size set for the machine: kept
        reload_settings()
        assert run_chunks(list(range(6)), None) == (4, [[0, 1, 2, 3], [4, 5]])
    finally:
        monkeypatch.delenv("RETOUCH_CHUNK_SIZE", raising=False)
        monkeypatch.delenv("RETOUCH_WORKERS", raising=False)
        reload_settings()


def test_chunks_of_recipes_for_worker_processes_are_big_enough_for_them(monkeypatch):
    """A recipe without models runs its chunks in worker processes from 16 images: its
    automatic chunks hold at least that many and the first is not split, so 200 photos are
    spread over the cores instead of going by 8 through the flow's threads."""
    from retouch.flows.scheduling import run_chunks
    from retouch.lib.phases import workers
    from retouch.lib.phases.context import RunConfig
    from retouch.lib.recipe import load_preset
    from retouch.lib.settings import reload_settings

    monkeypatch.delenv("RETOUCH_CHUNK_SIZE", raising=False)
    monkeypatch.setenv("RETOUCH_PROCESSES", "2")
    reload_settings()
    try:
        classic = RunConfig(run_id="r", workspace="/tmp/ws", recipe=load_preset("web-ready"))
        models = RunConfig(run_id="r", workspace="/tmp/ws", recipe=load_preset("quick"))
        size, chunks = run_chunks(list(range(200)), None, classic)
        assert size == workers.MIN_IMAGES and len(chunks) == 13
        assert all(workers.processes_for(classic, len(c)) for c in chunks[:-1])
        assert [i for c in chunks for i in c] == list(range(200))
        assert [len(c) for c in run_chunks(list(range(200)), None, models)[1][:2]] == [1, 7]
        assert run_chunks(list(range(10)), None, classic)[1][0] == [0]  # too few: as before
        assert run_chunks(list(range(200)), 5, classic)[0] == 5  # explicit: kept
    finally:
        monkeypatch.delenv("RETOUCH_PROCESSES", raising=False)
        reload_settings()


def test_the_first_image_is_reviewed_before_the_second_is_processed(
    prefect_server, tmp_path, monkeypatch
):
    """Automatic chunks, one at a time (as a model on the CPU runs them): the first image's
    result and review come after its own work, not after a whole chunk's."""
    from retouch.flows.enhance import RunOptions
    from retouch.lib.settings import reload_settings

    monkeypatch.setenv("RETOUCH_WORKERS", "1")
    monkeypatch.delenv("RETOUCH_CHUNK_SIZE", raising=False)
    reload_settings()
    summary, events = _run_recording_phases(tmp_path, 4, RunOptions())
    monkeypatch.delenv("RETOUCH_WORKERS")
    reload_settings()
    assert summary.succeeded == 4
    first_review = events.index(("review", "p0.jpg"))
    assert first_review < events.index(("process", "p1.jpg"))


def test_the_recipe_a_run_executes_preset_overrides_and_empty_recipes():
    from retouch.flows.enhance import resolve_recipe
    from retouch.lib.errors import RecipeError
    from retouch.lib.recipe import DEFAULT_PRESET, load_preset, recipe_from_dict

    # Only a preset: its steps, with the overrides applied.
    quick = resolve_recipe("quick", ["sharpen.amount=0.9"], None)
    assert [s.op for s in quick.steps] == [s.op for s in load_preset("quick").steps]
    assert quick.steps[-1].parsed().amount == 0.9
    assert DEFAULT_PRESET == "quick"
    # A recipe named like a preset but without steps would deliver the inputs untouched.
    with pytest.raises(RecipeError, match=r"recipe 'quick' has no steps.*preset='quick'"):
        resolve_recipe("quick", [], recipe_from_dict({"name": "quick"}))
    with pytest.raises(RecipeError, match="has no steps"):
        resolve_recipe("quick", [], recipe_from_dict({"name": "custom", "steps": []}))
    # A delivery-only recipe says what to deliver: allowed.
    only = resolve_recipe(
        "quick", [], recipe_from_dict({"name": "convert", "export": {"format": "png"}})
    )
    assert only.steps == [] and only.export.format == "png"
