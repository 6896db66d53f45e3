"""Regenerating part of a run, rolling back, and replacing a source, end to end."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
from PIL import Image as PILImage
from typer.testing import CliRunner

from retouch.cli.main import app

RECIPE = {
    "name": "crisp",
    "steps": [{"op": "denoise"}, {"op": "sharpen", "params": {"amount": 0.5}}],
}


def _images(folder, n):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    for i in range(n):
        arr = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        PILImage.fromarray(arr).save(folder / f"img{i}.png")


def _zip(dest) -> dict[str, bytes]:
    with zipfile.ZipFile(dest / "results.zip") as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _manifest(dest):
    return {i["name"]: i for i in json.loads((dest / "manifest.json").read_text())["images"]}


def _first_run(tmp_path, n):
    from retouch.flows.enhance import enhance
    from retouch.lib.recipe import recipe_from_dict

    src, dest = tmp_path / "src", tmp_path / "out"
    _images(src, n)
    summary = enhance(source=str(src), dest=str(dest), recipe=recipe_from_dict(RECIPE))
    assert summary.exit_code == 0
    return summary.run_id, src, dest


def test_regenerate_two_of_six_then_roll_back(prefect_server, tmp_path):
    from retouch.lib import versions
    from retouch.lib.settings import get_settings
    from retouch.lib.workspace import Workspace

    run_id, _, dest = _first_run(tmp_path, 6)
    before_zip, before = _zip(dest), _manifest(dest)
    runner = CliRunner()

    result = runner.invoke(
        app,
        [
            "regenerate",
            run_id,
            "--select",
            "img1.png,img4.png",
            "--set",
            "sharpen.amount=2.5",
            "--keep-worse",  # these score lower; taken anyway
        ],
    )
    assert result.exit_code == 0, result.output
    after_zip, after = _zip(dest), _manifest(dest)
    changed = {"img1.jpg", "img4.jpg"}
    assert sorted(after_zip) == sorted(before_zip)
    for name, data in after_zip.items():
        assert (data != before_zip[name]) == (name in changed), name

    store = versions.VersionStore(Workspace(get_settings().resolved_workspace()))
    for name, record in after.items():
        image = record["output"]["image_id"]
        history = store.history(image)
        if name in ("img1.png", "img4.png"):
            assert len(history) == 2 and record["output"]["version"] == 2
            assert record["result_key"] != before[name]["result_key"]
            previous = record["output"]["previous"]
            assert previous["result_key"] == before[name]["result_key"]
            assert previous["version"] == 1 and previous["thumb_after"].endswith(".jpg")
            assert history[1].recipe["steps"][1]["params"]["amount"] == 2.5
        else:
            assert len(history) == 1 and record["result_key"] == before[name]["result_key"]

    # Roll img4 back to its first version and re-deliver the run: its old result is back.
    result = runner.invoke(app, ["rollback", "img4.png", "1"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("img4.png: version 1 (run ")  # the name, not an id
    result = runner.invoke(app, ["export", run_id])
    assert result.exit_code == 0, result.output
    rolled = _zip(dest)
    assert rolled["img4.jpg"] == before_zip["img4.jpg"]
    assert rolled["img1.jpg"] == after_zip["img1.jpg"]
    assert _manifest(dest)["img4.png"]["output"]["version"] == 1


def test_a_regeneration_that_scores_lower_says_so_and_keeps_the_better_version(
    prefect_server, tmp_path
):
    run_id, _, dest = _first_run(tmp_path, 2)
    before_zip, before = _zip(dest), _manifest(dest)
    result = CliRunner().invoke(
        app, ["regenerate", run_id, "--select", "img1.png", "--set", "sharpen.amount=2.5"]
    )
    assert result.exit_code == 0, result.output
    after = _manifest(dest)["img1.png"]
    # Version 2 was made and scored lower: version 1 is still current and delivered.
    assert _zip(dest) == before_zip
    assert after["output"]["version"] == 1
    assert after["scores"]["score"] == before["img1.png"]["scores"]["score"]
    (note,) = [p for p in after["problems"] if "regenerated version 2 scored" in p]
    assert "version 1 stays current" in note and "--keep-worse" in note
    assert "regenerated version 2 scored" in result.output
    from retouch.lib import versions
    from retouch.lib.settings import get_settings
    from retouch.lib.workspace import Workspace

    store = versions.VersionStore(Workspace(get_settings().resolved_workspace()))
    history = store.history(after["output"]["image_id"])
    assert len(history) == 2 and history[1].scores["score"] < history[0].scores["score"]
    assert store.current(after["output"]["image_id"]).number == 1


def test_replace_a_source_and_undo(prefect_server, tmp_path):
    run_id, _, dest = _first_run(tmp_path, 2)
    before_zip, before = _zip(dest), _manifest(dest)
    new = tmp_path / "reshoot.png"
    PILImage.fromarray(np.full((30, 40, 3), (200, 40, 40), np.uint8)).save(new)
    runner = CliRunner()

    result = runner.invoke(
        app,
        ["replace", run_id, "img0.png", str(new), "--preview", str(tmp_path / "pv")],
        input="n\n",
        terminal_width=200,
    )
    assert result.exit_code == 1 and "nothing replaced" in result.output
    assert "reshoot.png" in result.output and "40x30" in result.output
    assert (tmp_path / "pv" / "img0-old.jpg").exists() and (
        tmp_path / "pv" / "img0-new.jpg"
    ).exists()
    assert _zip(dest) == before_zip

    result = runner.invoke(
        app, ["replace", run_id, "img0.png", str(new), "--yes", "--preview", str(tmp_path / "pv2")]
    )
    assert result.exit_code == 0, result.output
    replaced_zip, replaced = _zip(dest), _manifest(dest)
    assert replaced_zip["img1.jpg"] == before_zip["img1.jpg"]
    with PILImage.open(io.BytesIO(replaced_zip["img0.jpg"])) as im:
        assert im.size == (40, 30)
        r, g, b = np.asarray(im.convert("RGB")).reshape(-1, 3).mean(axis=0)
        assert r > 150 and g < 90 and b < 90
    assert replaced["img0.png"]["source"] == str(new)
    assert replaced["img0.png"]["output"]["version"] == 2  # a new version of the same slot
    assert replaced["img0.png"]["output"]["image_id"] == before["img0.png"]["output"]["image_id"]

    result = runner.invoke(app, ["replace", run_id, "--undo"])
    assert result.exit_code == 0, result.output
    assert _zip(dest) == before_zip
    undone = _manifest(dest)
    assert undone["img0.png"]["source"] == before["img0.png"]["source"]
    assert undone["img0.png"]["result_key"] == before["img0.png"]["result_key"]

    result = runner.invoke(app, ["replace", run_id, "--undo"])
    assert result.exit_code == 1 and "no replacement to undo" in result.output


def test_regenerate_refuses_unknown_names_before_starting(tmp_path):
    from retouch.lib import versions
    from retouch.lib.records import ImageRecord
    from retouch.lib.settings import get_settings
    from retouch.lib.workspace import Workspace

    ws = Workspace(get_settings().resolved_workspace())
    record = ImageRecord(index=1, source="a.png", name="a.png", uri="a.png", status="ok")
    ws.write_json(ws.run_path("r1", "manifest.json"), {"images": [record.manifest_entry()]})
    runner = CliRunner()
    result = runner.invoke(app, ["regenerate", "r1", "--select", "b.png"])
    assert (
        result.exit_code == 1 and "no image 'b.png'" in result.output and "a.png" in result.output
    )
    result = runner.invoke(app, ["regenerate", "r1"])
    assert result.exit_code == 1 and "nothing selected" in result.output
    result = runner.invoke(app, ["regenerate", "nope", "--failed"])
    assert result.exit_code == 1 and "run 'nope'" in result.output
    assert versions.VersionStore(ws).images() == []


def test_regenerate_deployment_has_typed_parameters():
    from concurrent.futures import ThreadPoolExecutor

    from retouch.deployments.serve import deployments

    # A thread of its own: Prefect builds deployments asynchronously when a loop is running.
    with ThreadPoolExecutor(1) as pool:
        built = pool.submit(deployments).result()
    by_name = {d.name: d for d in built}
    assert set(by_name) == {"enhance", "regenerate"}
    schema = by_name["regenerate"]._parameter_openapi_schema.model_dump()
    options = schema["definitions"]["RegenerateOptions"]["properties"]
    assert {"select", "failed", "worse", "overrides", "sources", "pick"} <= set(options)
    assert options["pick"]["enum"] == ["current", "best"]
