"""What the report's before/after preview clip adds to a video's review.

A 10 s 640x360 clip at 25 fps (moving texture with grain, one key frame every 250 frames,
as libx264 writes by default: the preview's seek decodes from the clip's start) is
prepared and processed once with a one-step recipe (sharpen); then its review runs
``--repeats`` times with the preview clip and as many times without it (the step replaced
by nothing), interleaved in one process. Prints the median review time of each, their
ratio, the preview's own time and its size; ``--json FILE`` keeps the numbers. Nothing
here is a test.

Run ``python -m bench.preview_clip_cost [--repeats N] [--json FILE]`` from the repository
root (about a minute on a loaded 2-core CPU).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np


def make_clip(path: Path, seconds: int = 10, width: int = 640, height: int = 360) -> None:
    """A clip of a texture moving 4 px a frame, with grain (so it does not encode to nothing)."""
    import av
    import cv2

    rng = np.random.default_rng(0)
    texture = rng.integers(0, 255, (height // 8, width // 4, 3), dtype=np.uint8)
    base = cv2.resize(texture, (2 * width, height), interpolation=cv2.INTER_CUBIC)
    out = av.open(str(path), "w")
    stream = out.add_stream("libx264", rate=25, options={"crf": "20"})
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    for i in range(seconds * 25):
        shifted = np.roll(base, 4 * i, axis=1)[:, :width].astype(np.int16)
        noisy = np.clip(shifted + rng.normal(0, 6, shifted.shape), 0, 255).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(noisy, format="bgr24").reformat(format="yuv420p")
        frame.pts, frame.time_base = i, Fraction(1, 25)
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()


def main() -> None:
    from retouch.lib.phases.context import RunContext
    from retouch.lib.phases.prepare import new_record, prepare_one
    from retouch.lib.phases.process import process_many
    from retouch.lib.phases.review import review_one
    from retouch.lib.recipe import recipe_from_dict
    from retouch.lib.records import ImageRecord
    from retouch.lib.settings import get_settings
    from retouch.lib.sources import SourceItem
    from retouch.lib.video import review as video_review
    from retouch.lib.workspace import Workspace

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="retouch-bench-") as tmp:
        clip = Path(tmp) / "clip.mp4"
        make_clip(clip)
        recipe = recipe_from_dict({"steps": [{"op": "sharpen"}]})
        ctx = RunContext(run_id="bench", workspace=Workspace(str(Path(tmp) / "ws")), recipe=recipe)
        record = new_record(SourceItem(str(clip), clip.name, None), 1)
        prepare_one(record, get_settings())
        process_many([record], ctx, {}, "cpu")
        if not record.ok:
            raise SystemExit(f"could not process the clip: {record.reason}")

        made = video_review.write_preview_clip
        preview_s: list[float] = []

        def timed_preview(*a: object, **kw: object) -> None:
            started = time.perf_counter()
            made(*a, **kw)  # type: ignore[arg-type]
            preview_s.append(time.perf_counter() - started)

        def review(with_clip: bool) -> tuple[float, ImageRecord]:
            video_review.write_preview_clip = (
                timed_preview if with_clip else (lambda *a, **kw: None)
            )  # type: ignore[assignment]
            copy = ImageRecord(**record.model_dump(exclude={"scores", "problems"}))
            started = time.perf_counter()
            review_one(copy, ctx)
            return time.perf_counter() - started, copy

        review(True)  # warm up: imports, the scorer's first use
        with_s, without_s = [], []
        last: ImageRecord | None = None
        for _ in range(args.repeats):
            seconds, last = review(True)
            with_s.append(seconds)
            without_s.append(review(False)[0])
        video_review.write_preview_clip = made
        assert last is not None
        info = last.scores.preview_clip or {}
        problems = [p for p in last.problems if p.startswith(("preview clip", "review failed"))]
        result = {
            "clip": "10 s, 640x360, 25 fps, key frame every 250 frames",
            "repeats": args.repeats,
            "review_with_s": round(statistics.median(with_s), 3),
            "review_without_s": round(statistics.median(without_s), 3),
            "ratio": round(statistics.median(with_s) / statistics.median(without_s), 3),
            "preview_s": round(statistics.median(preview_s[1:]), 3),
            "preview": info,
            "problems": problems,
        }
    print(
        f"review of a 10 s 640x360 clip: {result['review_with_s']} s with the preview clip, "
        f"{result['review_without_s']} s without ({result['ratio']}x); the preview itself "
        f"{result['preview_s']} s, {info.get('bytes')} bytes, {info.get('width')}x"
        f"{info.get('height')}, {info.get('frames')} frames ({info.get('start')}-"
        f"{info.get('end')} s)" + (f"; problems: {problems}" if problems else "")
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
