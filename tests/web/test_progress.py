"""The progress a running batch reports to the page: it moves with every image reviewed
(not 0 of N until the export), says which step each image is at and whether its result
came from the cache, and estimates the time left."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

NAMES = ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
STEPS = ["auto_color", "denoise", "upscale", "sharpen"]


def _batch(tmp_path: Path, started_ago_s: float):
    from retouch.web.batches import Batch

    folder = tmp_path / "b-1"
    folder.mkdir()
    info = {
        "id": "b-1",
        "created": "2026-01-01T00:00:00+00:00",
        "preset": "quick",
        "overrides": {},
        "names": NAMES,
        "source": str(folder / "input"),
        "masks": False,
        "skipped": [],
        "steps": STEPS,
    }
    batch = Batch(folder, info)
    started = (datetime.now(UTC) - timedelta(seconds=started_ago_s)).isoformat()
    batch.append_event(
        {"event": "web-job", "job": 1, "kind": "run", "names": [], "started": started}
    )
    return batch


def _add(batch, *events) -> dict:
    with open(batch.events_path, "a", encoding="utf-8") as fh:
        for event in events:
            fh.write(json.dumps(event) + "\n")
    batch.read_events()
    return batch.to_json()


def test_progress_moves_with_each_image_and_cards_know_their_step(tmp_path):
    batch = _batch(tmp_path, started_ago_s=120)
    state = _add(
        batch, *({"event": "image", "phase": "prepare", "name": n, "ok": True} for n in NAMES)
    )
    assert state["steps"] == STEPS
    fractions = [state["progress"]["fraction"]]
    assert state["progress"]["reviewed"] == 0

    # b.jpg is half through its steps: the card can say "step 3 of 4 (upscale)".
    state = _add(
        batch,
        {"event": "step", "name": "b.jpg", "number": 1, "op": "auto_color"},
        {"event": "step", "name": "b.jpg", "number": 2, "op": "denoise"},
    )
    b = next(i for i in state["images"] if i["name"] == "b.jpg")
    assert (b["status"], b["step"], b["step_op"]) == ("prepared", 2, "denoise")
    fractions.append(state["progress"]["fraction"])

    # Each image reviewed moves the bar, long before anything is exported.
    for n, name in enumerate(NAMES, start=1):
        state = _add(
            batch,
            {
                "event": "image",
                "phase": "process",
                "name": name,
                "ok": True,
                "reused": name == "a.jpg",
            },
            {"event": "image", "phase": "review", "name": name, "ok": True, "score": 60.0},
        )
        assert state["progress"]["reviewed"] == n
        assert state["progress"]["exported"] == 0
        fractions.append(state["progress"]["fraction"])
    assert fractions == sorted(fractions) and len(set(fractions)) == len(fractions), fractions
    assert 0.5 < fractions[-1] < 1
    reused = {i["name"]: i["reused"] for i in state["images"]}
    assert reused == {"a.jpg": True, "b.jpg": False, "c.jpg": False, "d.jpg": False}

    # Most of the work is done after 120 s: the estimate is well under another 120 s.
    eta = state["progress"]["eta_s"]
    assert eta is not None and 0 < eta < 60, state["progress"]
    assert 119 <= state["progress"]["elapsed_s"] <= 180

    state = _add(batch, {"event": "image", "phase": "export", "name": "a.jpg", "ok": True})
    assert state["progress"]["exported"] == 1 and state["progress"]["fraction"] > fractions[-1]


def test_no_estimate_before_real_work_is_done(tmp_path):
    batch = _batch(tmp_path, started_ago_s=5)
    state = batch.to_json()
    assert state["progress"]["fraction"] == 0 and state["progress"]["eta_s"] is None
    state = _add(batch, {"event": "image", "phase": "prepare", "name": "a.jpg", "ok": True})
    assert state["progress"]["eta_s"] is None  # one image prepared says little about the rest
