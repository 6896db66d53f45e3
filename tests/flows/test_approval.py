"""Quality gate and approval: a paused run resumed with a regeneration request; gate actions."""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from typer.testing import CliRunner

from retouch.cli.main import app
from retouch.lib.recipe import recipe_from_dict


def _photos(folder: Path, n: int = 3) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        rng = np.random.default_rng(i)
        yy, xx = np.mgrid[0:72, 0:96]
        base = np.stack([xx * 2.5, yy * 3.0, (xx + yy) * 1.5], axis=2) + rng.normal(
            0, 6, (72, 96, 3)
        )
        arr = np.clip(base, 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        PILImage.fromarray(arr).save(buf, "PNG")
        name = f"img_{i}.png"
        (folder / name).write_bytes(buf.getvalue())
        names.append(name)
    return names


def _recipe(**review):
    return recipe_from_dict(
        {
            "name": "gated",
            "steps": [{"op": "sharpen", "params": {"amount": 0.5}}],
            "export": {"format": "png"},
            "review": review,
        }
    )


def _members(zip_path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(zip_path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def test_paused_run_resumed_with_a_regeneration_request(prefect_server, tmp_path):
    from retouch.flows.enhance import RunOptions, enhance

    src = tmp_path / "in"
    names = _photos(src)
    ws = tmp_path / "ws"
    options = RunOptions(workspace=str(ws))
    plain = enhance(
        str(src), str(tmp_path / "plain"), recipe=_recipe(), options=RunOptions(workspace=str(ws))
    )
    assert plain.exit_code == 0

    outcome: dict = {}
    from retouch.lib import progress

    paused: list[dict] = []
    unsubscribe = progress.subscribe(
        lambda e: paused.append(e.model_dump()) if e.event == "approval" else None
    )

    def run():
        try:
            outcome["summary"] = enhance(
                str(src), str(tmp_path / "out"), recipe=_recipe(approve=True), options=options
            )
        except BaseException as exc:  # reported by the assertions below
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.time() + 120
    pending = None
    while time.time() < deadline and worker.is_alive():
        found = list(ws.glob("runs/*/approval.json"))
        if found and json.loads(found[0].read_text()).get("status") == "waiting":
            pending = found[0]
            break
        time.sleep(0.5)
    assert pending is not None, outcome
    run_id = pending.parent.name
    assert not (tmp_path / "out" / "results.zip").exists()  # nothing exported while paused

    unsubscribe()
    # The pause is announced with the exact commands that resume it.
    from retouch.cli.output import approval_lines

    (event,) = paused
    assert event["run_id"] == run_id and event["flow_run_id"]
    shown = "\n".join(approval_lines(progress.parse(event)))
    assert f"retouch approve {run_id} --workspace {ws}" in shown
    assert "waiting for approval (for up to 86400 s)" in shown and "--reject" in shown

    runner = CliRunner()
    listed = runner.invoke(app, ["runs", "--workspace", str(ws)], terminal_width=200)
    assert listed.exit_code == 0, listed.output
    assert run_id in listed.output and "waiting for approval" in listed.output
    assert "delivered" in listed.output  # the first, plain run
    unknown = runner.invoke(
        app, ["approve", run_id, "--regenerate", "nope.png", "--workspace", str(ws)]
    )
    assert unknown.exit_code == 1 and "no image named nope.png" in unknown.output
    # Resumed by the Prefect flow run's id, as the UI shows it.
    sent = runner.invoke(
        app,
        [
            "approve", event["flow_run_id"], "--regenerate", names[1],
            "--set", "sharpen.amount=2.5", "--workspace", str(ws),
        ],
    )  # fmt: skip
    assert sent.exit_code == 0, sent.output
    worker.join(timeout=180)
    assert not worker.is_alive() and "error" not in outcome, outcome
    assert outcome["summary"].exit_code == 0

    before, after = (
        _members(tmp_path / "plain" / "results.zip"),
        _members(tmp_path / "out" / "results.zip"),
    )
    assert sorted(after) == sorted(before) == sorted(names)
    assert after[names[0]] == before[names[0]] and after[names[2]] == before[names[2]]
    assert after[names[1]] != before[names[1]]  # regenerated with the stronger sharpening
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    entry = next(i for i in manifest["images"] if i["name"] == names[1])
    assert any("regenerated with sharpen.amount=2.5" in p for p in entry["problems"])
    assert json.loads(pending.read_text())["status"] == "regenerate"


@pytest.mark.parametrize("action", ["hold", "original", "flag"])
def test_quality_gate_actions(prefect_server, tmp_path, action):
    from retouch.flows.enhance import RunOptions, enhance

    src = tmp_path / "in"
    names = _photos(src, 2)
    dest = tmp_path / "out"
    # No result can score above 100: every image fails this gate.
    recipe = _recipe(min_score=100, on_gate_fail=action)
    summary = enhance(
        str(src), str(dest), recipe=recipe, options=RunOptions(workspace=str(tmp_path / "ws"))
    )
    manifest = json.loads((dest / "manifest.json").read_text())
    if action == "hold":
        assert summary.exit_code == 1 and summary.failed == 2
        assert all("held back by the quality gate" in i["reason"] for i in manifest["images"])
        assert not (dest / "results.zip").exists()
        return
    assert summary.exit_code == 0
    members = _members(dest / "results.zip")
    assert sorted(members) == sorted(names)
    for image in manifest["images"]:
        assert any(p.startswith("quality gate: score") for p in image["problems"])
    original = np.asarray(PILImage.open(src / names[0]))
    delivered = np.asarray(PILImage.open(io.BytesIO(members[names[0]])))
    assert np.array_equal(original, delivered) == (action == "original")


def test_gate_retry_tries_gentler_parameters(prefect_server, tmp_path):
    from retouch.flows.enhance import RunOptions, enhance

    src = tmp_path / "in"
    _photos(src, 2)
    dest = tmp_path / "out"
    recipe = recipe_from_dict(
        {
            "steps": [{"op": "sharpen", "params": {"amount": 3.0, "radius": 3}}],
            "export": {"format": "png"},
            "review": {
                "gate_worse": True,
                "on_gate_fail": "retry",
                "retry_with": [["sharpen.amount=0.1", "sharpen.radius=0.5"]],
            },
        }
    )
    summary = enhance(
        str(src), str(dest), recipe=recipe, options=RunOptions(workspace=str(tmp_path / "ws"))
    )
    assert summary.exit_code == 0
    manifest = json.loads((dest / "manifest.json").read_text())
    for image in manifest["images"]:
        assert image["scores"]["verdict"] != "worse"
        assert any("regenerated with sharpen.amount=0.1" in p for p in image["problems"])
