"""process_many: reading and writing overlap with the steps, with the same results as one by
one, and a failure stays with its own image."""

from __future__ import annotations

import numpy as np
import pytest

from retouch.lib import progress
from retouch.lib.errors import StorageError
from retouch.lib.image import Image
from retouch.lib.imageio import encode
from retouch.lib.phases.context import RunContext
from retouch.lib.phases.keys import sha256_bytes, step_keys, weights_ids
from retouch.lib.phases.process import process_many, process_one
from retouch.lib.recipe import recipe_from_dict
from retouch.lib.records import ImageRecord
from retouch.lib.workspace import Workspace

# The bundled compact model: a recipe with a model, so the overlapping path is taken.
UPSCALE = {
    "name": "x2",
    "steps": [
        {"op": "upscale", "params": {"model": "retouch-compact-x2"}},
        {"op": "sharpen", "params": {"amount": 0.4}},
    ],
}


def _records(folder, n: int) -> list[ImageRecord]:
    out = []
    for i in range(n):
        rng = np.random.default_rng(i)
        path = folder / f"p{i}.png"
        path.write_bytes(
            encode(Image(rng.integers(0, 256, (20 + i, 28, 3), dtype=np.uint8)), "png")
        )
        out.append(
            ImageRecord(
                index=i + 1,
                source=str(path),
                name=path.name,
                uri=str(path),
                sha256=sha256_bytes(path.read_bytes()),
            )
        )
    return out


def _ctx(tmp_path, name: str) -> RunContext:
    return RunContext(
        run_id="r", workspace=Workspace(str(tmp_path / name)), recipe=recipe_from_dict(UPSCALE)
    )


def test_overlapped_results_equal_one_by_one_and_are_reported_in_order(tmp_path):
    records = _records(tmp_path, 4)
    weights = weights_ids(recipe_from_dict(UPSCALE))
    ctx_one = _ctx(tmp_path, "one")
    one = [process_one(r.model_copy(deep=True), ctx_one, weights, "cpu") for r in records]
    events: list[str] = []
    unsubscribe = progress.subscribe(
        lambda e: events.append(e.name) if getattr(e, "phase", None) == "process" else None
    )
    try:
        ctx_many = _ctx(tmp_path, "many")
        many = process_many([r.model_copy(deep=True) for r in records], ctx_many, weights, "cpu")
    finally:
        unsubscribe()
    assert events == [r.name for r in records]
    assert ctx_many.counters["steps:upscale"] == 4
    for i, (a, b) in enumerate(zip(one, many, strict=True)):
        assert a.ok and b.ok and a.result_key == b.result_key and a.output == b.output
        left = ctx_one.workspace.load_result(a.result_key).pixels
        right = ctx_many.workspace.load_result(b.result_key).pixels
        assert left.shape[:2] == (2 * (20 + i), 56)  # x2
        assert np.array_equal(left, right)


@pytest.mark.parametrize("where", ["read", "write"])
def test_a_failure_while_reading_or_writing_fails_only_that_image(tmp_path, monkeypatch, where):
    records = _records(tmp_path, 3)
    weights = weights_ids(recipe_from_dict(UPSCALE))
    ctx = _ctx(tmp_path, "ws")
    if where == "read":
        (tmp_path / "p1.png").write_bytes(b"changed since it was prepared")
    else:
        real = ctx.workspace.save_result
        broken = step_keys(records[1].sha256 or "", recipe_from_dict(UPSCALE), weights)[-1]

        def save(key, image):
            if key == broken:
                raise StorageError("disk full")
            return real(key, image)

        monkeypatch.setattr(ctx.workspace, "save_result", save)
    out = process_many(records, ctx, weights, "cpu")
    assert [r.ok for r in out] == [True, False, True]
    reason = out[1].reason or ""
    assert ("changed while the run" in reason) if where == "read" else ("disk full" in reason)
    assert out[1].failed_phase == "process"
    assert ctx.workspace.has_result(out[0].result_key) and ctx.workspace.has_result(
        out[2].result_key
    )
