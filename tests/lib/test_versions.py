"""Version history: immutable objects, current pointer, rollback, concurrency, lookups."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
from PIL import Image as PILImage
from typer.testing import CliRunner

from retouch.lib import versions
from retouch.lib.errors import RetouchError
from retouch.lib.image import Image
from retouch.lib.workspace import Workspace


def _add(store, image, key, run="r", score=None):
    return store.add(
        image,
        result_key=key,
        run_id=run,
        name="shoot/a.png",
        source="/photos/shoot/a.png",
        source_sha256="s" * 64,
        scores={"score": score} if score is not None else {},
    )


def test_new_versions_are_current_until_a_rollback(tmp_path):
    store = versions.VersionStore(Workspace(str(tmp_path / "ws")))
    for i in range(3):
        _add(store, "img", f"key{i}", score=[50, 80, 60][i])
    history = store.history("img")
    assert [v.number for v in history] == [1, 2, 3]
    assert [v.result_key for v in history] == ["key0", "key1", "key2"]
    assert store.current("img").result_key == "key2"
    assert store.best("img").result_key == "key1"

    store.set_current("img", store.get("img", 1))
    assert store.current("img").result_key == "key0"
    _add(store, "img", "key3")  # a newer version supersedes the rollback
    assert store.current("img").number == 4
    with pytest.raises(RetouchError, match="no version 9"):
        store.get("img", 9)


def test_record_version_dedupes_and_notes_the_previous(tmp_path):
    from retouch.lib.records import ImageRecord

    store = versions.VersionStore(Workspace(str(tmp_path / "ws")))

    def record(key):
        return ImageRecord(
            index=1, source="a.png", name="a.png", uri="a.png", sha256="s" * 64, result_key=key
        )

    first = versions.record_version(store, record("k1"), image="img", run_id="r1", recipe={})
    assert first.output["version"] == 1 and "previous" not in first.output
    same = versions.record_version(store, record("k1"), image="img", run_id="r2", recipe={})
    assert same.output["version"] == 1 and len(store.history("img")) == 1
    second = versions.record_version(store, record("k2"), image="img", run_id="r3", recipe={})
    assert second.output["version"] == 2
    assert second.output["previous"]["result_key"] == "k1"
    assert second.output["previous"]["thumb_after"].endswith("-after.jpg")
    # The same result as an older version makes that one current instead of duplicating it.
    back = versions.record_version(store, record("k1"), image="img", run_id="r4", recipe={})
    assert back.output["version"] == 1 and len(store.history("img")) == 2
    assert store.current("img").result_key == "k1"


def test_concurrent_writers_in_threads_lose_no_version(tmp_path):
    store = versions.VersionStore(Workspace(str(tmp_path / "ws")))
    barrier = threading.Barrier(6)

    def writer(n):
        barrier.wait()
        for image in ("a", "b", "c"):
            for i in range(4):
                _add(store, image, f"{image}-{n}-{i}", run=f"run{n}")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for image in ("a", "b", "c"):
        keys = {v.result_key for v in store.history(image)}
        assert keys == {f"{image}-{n}-{i}" for n in range(6) for i in range(4)}


def test_concurrent_runs_in_two_processes_lose_no_version(tmp_path):
    ws = tmp_path / "ws"
    script = textwrap.dedent(
        f"""
        import sys
        from retouch.lib import versions
        from retouch.lib.records import ImageRecord
        from retouch.lib.workspace import Workspace
        run = sys.argv[1]
        store = versions.VersionStore(Workspace({str(ws)!r}))
        for i in range(15):
            for name in ("a.png", "b.png"):
                r = ImageRecord(index=1, source=name, name=name, uri=name, sha256="s" * 64,
                                result_key=f"{{run}}-{{name}}-{{i}}")
                versions.record_version(store, r, image=name, run_id=run, recipe={{}})
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, run]) for run in ("run-one", "run-two")
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    store = versions.VersionStore(Workspace(str(ws)))
    for name in ("a.png", "b.png"):
        history = store.history(name)
        assert len(history) == 30
        assert {v.result_key for v in history} == {
            f"{run}-{name}-{i}" for run in ("run-one", "run-two") for i in range(15)
        }


def test_find_by_file_id_prefix_or_name(tmp_path):
    store = versions.VersionStore(Workspace(str(tmp_path / "ws")))
    photo = tmp_path / "a.png"
    PILImage.fromarray(np.zeros((4, 4, 3), np.uint8)).save(photo)
    import hashlib

    image = versions.image_id(hashlib.sha256(photo.read_bytes()).hexdigest(), "a.png")
    _add(store, image, "k")
    assert store.find(str(photo)) == image
    assert store.find(image[:6]) == image
    assert store.find("a.png") == image
    _add(store, "other-image", "k2")  # also named shoot/a.png
    with pytest.raises(RetouchError, match="names 2 different images"):
        store.find("a.png")
    with pytest.raises(RetouchError, match="no image 'zzz'"):
        store.find("zzz")


def test_image_identity_is_content_and_file_name():
    assert versions.image_id("s" * 64, "x/a.png") == versions.image_id("s" * 64, "y/a.png")
    assert versions.image_id("s" * 64, "a.png") != versions.image_id("t" * 64, "a.png")
    assert versions.image_id("s" * 64, "a.png") != versions.image_id("s" * 64, "b.png")


def test_cli_versions_compare_rollback(tmp_path):
    from retouch.cli.main import app

    ws = Workspace(str(tmp_path / "ws"))
    store = versions.VersionStore(ws)
    ws.save_result("k1", Image(np.zeros((20, 30, 3), np.uint8)))
    ws.save_result("k2", Image(np.full((10, 10, 3), 255, np.uint8)))
    _add(store, "img0123456789", "k1")
    _add(store, "img0123456789", "k2")
    runner = CliRunner()
    args = ["--workspace", ws.root]

    result = runner.invoke(app, ["versions", "img0123", *args], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "k1" in result.output and "k2" in result.output

    out = tmp_path / "cmp.png"
    result = runner.invoke(app, ["compare", "img0123", "1", "2", "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    with PILImage.open(out) as im:
        # 30x20 beside 10x10 scaled to 20x20, with the gap between.
        assert im.size == (30 + versions.COMPARE_GAP + 20, 20)
        assert im.getpixel((5, 5)) == (0, 0, 0) and im.getpixel((45, 5)) == (255, 255, 255)

    result = runner.invoke(app, ["rollback", "img0123", "1", *args])
    assert result.exit_code == 0, result.output
    assert store.current("img0123456789").result_key == "k1"

    result = runner.invoke(app, ["rollback", "img0123", "7", *args])
    assert result.exit_code == 1 and "no version 7" in result.output
    result = runner.invoke(app, ["versions", "nothing-like-it", *args])
    assert result.exit_code == 1 and "no image" in result.output
