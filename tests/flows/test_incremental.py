"""Incremental re-runs through the flow: only what changed is recomputed."""

from __future__ import annotations

import json
import zipfile

import numpy as np
from PIL import Image as PILImage

from tests.tiny_models import install_tiny_models


def _images(folder, n, size=(40, 28)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    for i in range(n):
        arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        PILImage.fromarray(arr).save(folder / f"img{i}.png")


def _manifest(dest):
    return json.loads((dest / "manifest.json").read_text())


def test_export_format_change_calls_no_model(prefect_server, tmp_path, monkeypatch):
    from retouch.flows.enhance import enhance
    from retouch.lib.recipe import apply_overrides, load_preset

    install_tiny_models(tmp_path / "models", monkeypatch, faces=None)
    src = tmp_path / "src"
    _images(src, 2)
    recipe = apply_overrides(load_preset("upscale-x4"), ["upscale.tile=0", "upscale.outscale=2"])

    first = enhance(source=str(src), dest=str(tmp_path / "a"), recipe=recipe)
    assert first.model_calls == 2
    webp = apply_overrides(recipe, ["export.format=webp"])
    second = enhance(source=str(src), dest=str(tmp_path / "b"), recipe=webp)
    assert second.exit_code == 0 and second.model_calls == 0
    assert [i["model_calls"] for i in _manifest(tmp_path / "b")["images"]] == [0, 0]
    with zipfile.ZipFile(tmp_path / "b" / "results.zip") as zf:
        assert sorted(zf.namelist()) == ["img0.webp", "img1.webp"]
        with zf.open("img0.webp") as fh, PILImage.open(fh) as im:
            assert im.format == "WEBP" and im.size == (80, 56)
    # The same result is the same version: no new version for a re-encode.
    versions_seen = [i["output"]["version"] for i in _manifest(tmp_path / "b")["images"]]
    assert versions_seen == [1, 1]


def test_changing_the_second_step_runs_only_the_second(prefect_server, tmp_path):
    from retouch.flows.enhance import enhance
    from retouch.lib import progress
    from retouch.lib.recipe import apply_overrides, recipe_from_dict

    src = tmp_path / "src"
    _images(src, 3)
    recipe = recipe_from_dict(
        {"name": "two", "steps": [{"op": "denoise"}, {"op": "sharpen", "params": {"amount": 0.5}}]}
    )
    runs: list[tuple[str, str]] = []

    def listen(e):
        event = e.model_dump()
        if event["event"] == "step":
            runs.append((event["op"], event["name"]))

    stop = progress.subscribe(listen)
    try:
        enhance(source=str(src), dest=str(tmp_path / "a"), recipe=recipe)
        assert sorted(runs) == sorted(
            [(op, f"img{i}.png") for op in ("denoise", "sharpen") for i in range(3)]
        )
        runs.clear()
        changed = apply_overrides(recipe, ["sharpen.amount=1.5"])
        summary = enhance(source=str(src), dest=str(tmp_path / "b"), recipe=changed)
    finally:
        stop()
    assert summary.exit_code == 0
    assert [op for op, _ in runs].count("denoise") == 0
    assert sorted(runs) == [("sharpen", f"img{i}.png") for i in range(3)]
    # The new results are new versions of the same images, noting the old ones.
    images = _manifest(tmp_path / "b")["images"]
    assert [i["output"]["version"] for i in images] == [2, 2, 2]
    old = {i["name"]: i["result_key"] for i in _manifest(tmp_path / "a")["images"]}
    assert all(i["output"]["previous"]["result_key"] == old[i["name"]] for i in images)
