"""The per-step result cache and its bound: prefix reuse, LRU eviction, pinned versions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from retouch.lib import cache, storage, versions
from retouch.lib.image import Image
from retouch.lib.imageio import encode
from retouch.lib.phases.context import RunContext
from retouch.lib.phases.keys import result_key, sha256_bytes, step_keys
from retouch.lib.phases.process import process_one
from retouch.lib.recipe import apply_overrides, recipe_from_dict
from retouch.lib.records import ImageRecord
from retouch.lib.workspace import Workspace

TWO_STEPS = {
    "name": "two",
    "steps": [
        {"op": "denoise", "params": {}},
        {"op": "sharpen", "params": {"amount": 0.5}},
    ],
}


def _photo(path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    path.write_bytes(encode(Image(pixels), "png", keep_metadata=False))


def _record(path, index: int = 1) -> ImageRecord:
    data = path.read_bytes()
    return ImageRecord(
        index=index,
        source=str(path),
        name=path.name,
        uri=str(path),
        sha256=sha256_bytes(data),
    )


def _process(ws: Workspace, recipe, path, refresh: bool = False):
    ctx = RunContext(run_id="r", workspace=ws, recipe=recipe, refresh=refresh)
    record = process_one(_record(path), ctx, {}, "cpu")
    assert record.ok, record.reason
    return record, ctx.counters


def test_step_keys_share_the_prefix_before_the_changed_step():
    recipe = recipe_from_dict(TWO_STEPS)
    changed = apply_overrides(recipe, ["sharpen.amount=1.5"])
    a = step_keys("ab" * 32, recipe, {})
    b = step_keys("ab" * 32, changed, {})
    assert len(a) == 3
    assert a[:2] == b[:2] and a[2] != b[2]
    assert a[-1] == result_key("ab" * 32, recipe, {})


def test_changing_the_second_step_reuses_the_first(tmp_path):
    ws = Workspace(str(tmp_path / "ws"))
    _photo(tmp_path / "a.png")
    recipe = recipe_from_dict(TWO_STEPS)
    _, first = _process(ws, recipe, tmp_path / "a.png")
    assert first["steps:denoise"] == 1 and first["steps:sharpen"] == 1

    changed = apply_overrides(recipe, ["sharpen.amount=1.5"])
    record, second = _process(ws, changed, tmp_path / "a.png")
    assert "steps:denoise" not in second and second["steps:sharpen"] == 1
    assert second["steps_reused"] == 1 and not record.reused

    # Resuming from the stored intermediate gives exactly what a full run gives.
    fresh = Workspace(str(tmp_path / "fresh"))
    again, _ = _process(fresh, changed, tmp_path / "a.png", refresh=True)
    assert np.array_equal(
        ws.load_result(record.result_key).pixels, fresh.load_result(again.result_key).pixels
    )

    record, third = _process(ws, changed, tmp_path / "a.png")
    assert record.reused and "steps:sharpen" not in third and "steps:denoise" not in third


def test_step_cache_on_an_s3_workspace(s3_endpoint, moto_s3, tmp_path):
    moto_s3.create_bucket("retouch-cache")
    storage.reset_filesystems()
    ws = Workspace("s3://retouch-cache/ws")
    _photo(tmp_path / "a.png")
    recipe = recipe_from_dict(TWO_STEPS)
    _process(ws, recipe, tmp_path / "a.png")
    _, counters = _process(ws, apply_overrides(recipe, ["sharpen.amount=2"]), tmp_path / "a.png")
    assert "steps:denoise" not in counters and counters["steps:sharpen"] == 1
    found = cache.info(ws)
    assert found.count == 3  # denoise, denoise+sharpen(0.5), denoise+sharpen(2)


def _stored(ws: Workspace, n: int) -> list[str]:
    keys = []
    for i in range(n):
        key = f"{i:02d}" + "0" * 62
        ws.save_result(key, Image(np.full((8, 8, 3), i * 20, np.uint8)))
        meta = ws.result_meta(key)
        meta["last_used"] = 1000.0 + i  # key 0 is the least recently used
        storage.write_bytes(ws.path("results", key[:2], key + ".json"), json.dumps(meta).encode())
        keys.append(key)
    return keys


def test_prune_evicts_least_recently_used_but_never_a_current_version(tmp_path):
    ws = Workspace(str(tmp_path / "ws"))
    keys = _stored(ws, 4)
    store = versions.VersionStore(ws)
    store.add(
        "img", result_key=keys[0], run_id="r", name="a.png", source="a.png", source_sha256="x"
    )
    sizes = {e.key: e.bytes for e in cache.entries(ws)}
    budget = sizes[keys[0]] + sizes[keys[3]]

    report = cache.prune(ws, max_bytes=budget)
    assert sorted(report.removed_keys) == [keys[1], keys[2]]  # oldest unpinned first
    assert ws.has_result(keys[0]) and ws.has_result(keys[3])
    assert report.pinned == 1

    report = cache.prune(ws, older_than_s=10, now=1000.0 + 3 + 60)
    assert report.removed_keys == [keys[3]] and ws.has_result(keys[0])


def test_reuse_refreshes_the_last_use(tmp_path, monkeypatch):
    from retouch.lib import workspace

    monkeypatch.setattr(workspace, "TOUCH_EVERY_S", 0.0)
    ws = Workspace(str(tmp_path / "ws"))
    _photo(tmp_path / "a.png")
    recipe = recipe_from_dict(TWO_STEPS)
    record, _ = _process(ws, recipe, tmp_path / "a.png")
    meta = ws.result_meta(record.result_key)
    meta["last_used"] = 5.0
    storage.write_bytes(
        ws.path("results", record.result_key[:2], record.result_key + ".json"),
        json.dumps(meta).encode(),
    )
    _process(ws, recipe, tmp_path / "a.png")
    assert ws.result_meta(record.result_key)["last_used"] > 1e9


def test_cache_cli_info_and_prune(tmp_path):
    from retouch.cli.main import app

    ws = Workspace(str(tmp_path / "ws"))
    _stored(ws, 3)
    runner = CliRunner()
    result = runner.invoke(app, ["cache", "info", "--workspace", ws.root])
    assert result.exit_code == 0, result.output
    assert "results:    3 (0 pinned)" in result.output
    assert "1970-01-01 00:16:40 UTC" in result.output  # oldest use: epoch 1000

    result = runner.invoke(app, ["cache", "prune", "--max-bytes", "0", "--workspace", ws.root])
    assert result.exit_code == 0, result.output
    assert "removed 3 results" in result.output
    assert cache.info(ws).count == 0

    result = runner.invoke(app, ["cache", "prune", "--workspace", ws.root])
    assert result.exit_code == 1 and "--max-bytes" in result.output


@pytest.mark.parametrize("days", ["-1"])
def test_prune_rejects_negative_ages(tmp_path, days):
    from retouch.cli.main import app

    result = CliRunner().invoke(app, ["cache", "prune", "--older-than", days])
    assert result.exit_code == 2


CHEAP_THEN_SLOW = {
    "name": "mixed",
    "steps": [
        {"op": "auto_color", "params": {}},
        {"op": "denoise", "params": {}},
        {"op": "sharpen", "params": {"amount": 0.5}},
        {"op": "fit", "params": {"max_side": 16}},
    ],
}


def test_only_slow_steps_and_the_result_are_stored(tmp_path):
    """auto_color, sharpen and fit are cheaper to redo than to store; denoise is kept, so
    changing the last step restarts from it."""
    ws = Workspace(str(tmp_path / "ws"))
    src = tmp_path / "a.png"
    _photo(src)
    recipe = recipe_from_dict(CHEAP_THEN_SLOW)
    record, counters = _process(ws, recipe, src)
    keys = step_keys(record.sha256, recipe, {})
    assert [ws.has_result(k) for k in keys[1:]] == [False, True, False, True]
    assert counters.get("steps:denoise") == 1

    changed = apply_overrides(recipe, ["fit.max_side=20"])
    _, counters = _process(ws, changed, src)
    assert counters.get("steps:denoise") is None and counters.get("steps:auto_color") is None
    assert counters.get("steps:sharpen") == 1 and counters.get("steps:fit") == 1


@pytest.mark.parametrize("damage", ["truncate", "empty-sidecar"])
def test_a_torn_result_counts_as_missing_and_is_recomputed(tmp_path, damage):
    """Results are written without fsync; after a power cut the sidecar may name a pixel file
    that did not reach the disk whole. Such a result is recomputed, never served."""
    ws = Workspace(str(tmp_path / "ws"))
    src = tmp_path / "a.png"
    _photo(src)
    recipe = recipe_from_dict(TWO_STEPS)
    record, _ = _process(ws, recipe, src)
    final = record.result_key
    png = tmp_path / "ws" / "results" / final[:2] / f"{final}.png"
    good = png.read_bytes()
    if damage == "truncate":
        png.write_bytes(good[: len(good) // 2])
    else:
        png.with_suffix(".json").write_bytes(b"")
    assert not ws.has_result(final)
    again, counters = _process(ws, recipe, src)
    assert not again.reused and counters.get("steps:sharpen") == 1
    assert ws.has_result(final) and png.read_bytes() == good
