"""Re-runs and edge cases: what a user changes between runs must never come back stale."""

from __future__ import annotations

import json
import zipfile

import numpy as np
from PIL import Image as PILImage
from typer.testing import CliRunner

from retouch.cli.main import app


def _gradient(path, marked=False, corner=0):
    yy, xx = np.mgrid[0:48, 64:128]
    arr = np.stack([xx, yy * 4, xx + yy], axis=2).astype(np.uint8)
    arr[-1, -1] = corner  # distinct content where asked (identical images share one result)
    if marked:
        arr[10:30, 10:40] = (255, 0, 0)
    PILImage.fromarray(arr).save(path)


def _mask(path, box):
    m = np.zeros((48, 64), np.uint8)
    y0, y1, x0, x1 = box
    m[y0:y1, x0:x1] = 255
    PILImage.fromarray(m).save(path)


def _manifest(dest):
    return json.loads((dest / "manifest.json").read_text())


def test_changed_or_added_masks_are_never_served_from_an_earlier_run(prefect_server, tmp_path):
    src, masks = tmp_path / "src", tmp_path / "masks"
    src.mkdir()
    masks.mkdir()
    _gradient(src / "a.png", marked=True)
    _gradient(src / "b.png", marked=True, corner=9)
    _mask(masks / "a.png", (0, 5, 0, 5))  # misses the red block
    args = ["run", str(src), "-p", "remove-objects-fast", "--masks", str(masks)]
    runner = CliRunner()

    first = runner.invoke(app, [*args, "-o", str(tmp_path / "1")])
    assert first.exit_code == 2  # b.png has no mask
    m1 = {i["name"]: i for i in _manifest(tmp_path / "1")["images"]}
    assert m1["b.png"]["status"] == "failed"

    # The user fixes a's mask and adds b's: both must be computed, not reused or re-failed.
    _mask(masks / "a.png", (8, 32, 8, 42))
    _mask(masks / "b.png", (8, 32, 8, 42))
    second = runner.invoke(app, [*args, "-o", str(tmp_path / "2")])
    assert second.exit_code == 0, second.output
    m2 = {i["name"]: i for i in _manifest(tmp_path / "2")["images"]}
    assert not m2["a.png"]["reused"] and not m2["b.png"]["reused"]
    assert m2["a.png"]["result_key"] != m1["a.png"]["result_key"]
    with zipfile.ZipFile(tmp_path / "2" / "results.zip") as zf:
        for name in ("a.png", "b.png"):
            zf.extract(name, tmp_path / "x")
    for name in ("a.png", "b.png"):
        out = np.asarray(PILImage.open(tmp_path / "x" / name).convert("RGB")).astype(int)
        assert (out[12:28, 12:38, 0] - out[12:28, 12:38, 1]).mean() < 60  # red block gone
        # Reviewed as a fill: its own measures, not "worse than the input".
        scores = m2[name]["scores"]
        assert scores["fill"]["area"] > 0.1 and scores["fidelity"]["ssim"] > 0.98, scores
        assert not any("worse than the input" in p for p in m2[name]["problems"])

    # Same masks again: now everything is reused.
    third = runner.invoke(app, [*args, "-o", str(tmp_path / "3")])
    assert third.exit_code == 0
    assert _manifest(tmp_path / "3")["summary"]["reused"] == 2


def test_refresh_recomputes_every_image(prefect_server, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _gradient(src / "a.png")
    runner = CliRunner()
    assert runner.invoke(app, ["run", str(src), "-o", str(tmp_path / "1")]).exit_code == 0
    assert runner.invoke(app, ["run", str(src), "-o", str(tmp_path / "2")]).exit_code == 0
    assert _manifest(tmp_path / "2")["summary"]["reused"] == 1
    assert (
        runner.invoke(app, ["run", str(src), "--refresh", "-o", str(tmp_path / "3")]).exit_code == 0
    )
    assert _manifest(tmp_path / "3")["summary"]["reused"] == 0


def test_a_run_that_delivers_nothing_removes_an_older_zip(prefect_server, tmp_path):
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir()
    bad.mkdir()
    _gradient(good / "a.png")
    (bad / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    dest = tmp_path / "dest"
    runner = CliRunner()
    assert runner.invoke(app, ["run", str(good), "-o", str(dest)]).exit_code == 0
    assert (dest / "results.zip").exists()
    result = runner.invoke(app, ["run", str(bad), "-o", str(dest)])
    assert result.exit_code == 1
    assert not (dest / "results.zip").exists()
    assert _manifest(dest)["zip"] is None


def test_zip_name_cannot_leave_the_destination(tmp_path):
    for bad in ("../../escaped.zip", "sub/r.zip", "manifest.json"):
        result = CliRunner().invoke(
            app,
            ["run", str(tmp_path), "--set", f"export.zip_name={bad}", "-o", str(tmp_path / "o")],
        )
        assert result.exit_code == 1
        assert "zip_name" in result.output and "plain file name" in result.output
    assert not (tmp_path.parent / "escaped.zip").exists()


def test_bracketed_names_print_as_they_are(prefect_server, tmp_path):
    src = tmp_path / "[draft] shoot"
    src.mkdir()
    _gradient(src / "ok.png")
    (src / "[old].jpg").write_bytes(b"")
    result = CliRunner().invoke(
        app, ["run", str(src), "-o", str(tmp_path / "o")], terminal_width=200
    )
    assert result.exit_code == 2, result.output
    assert "[old].jpg" in result.output


def test_every_phase_reports_every_image_even_failed_ones(prefect_server, tmp_path):
    from retouch.flows.enhance import enhance
    from retouch.lib import progress
    from retouch.lib.recipe import load_preset

    src = tmp_path / "src"
    src.mkdir()
    _gradient(src / "a.png")
    _gradient(src / "b.png")
    (src / "c.png").write_bytes(b"")
    seen: dict[str, int] = {}

    def listen(e):
        event = e.model_dump()
        if event["event"] == "image":
            seen[event["phase"]] = seen.get(event["phase"], 0) + 1

    stop = progress.subscribe(listen)
    try:
        enhance(source=str(src), dest=str(tmp_path / "o"), recipe=load_preset("quick"))
    finally:
        stop()
    assert seen == {"prepare": 3, "process": 3, "review": 3, "export": 3}


def test_folder_placeholder_keeps_the_source_tree(prefect_server, tmp_path):
    src = tmp_path / "src"
    (src / "day1").mkdir(parents=True)
    (src / "day2").mkdir()
    _gradient(src / "day1" / "x.png")
    _gradient(src / "day2" / "x.png")
    _gradient(src / "top.png")
    result = CliRunner().invoke(
        app,
        [
            "run",
            str(src),
            "--set",
            "export.name_template={folder}/{stem}.{ext}",
            "-o",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(tmp_path / "o" / "results.zip") as zf:
        assert sorted(zf.namelist()) == ["day1/x.jpg", "day2/x.jpg", "top.jpg"]
