"""Which denoiser the ``quick`` preset should use: speed and quality of candidates, measured.

Clean pictures (``samples/``, two generated scenes and gray copies of two of them, each
fitted to 512 px on the longer side) are degraded four ways (Gaussian noise of sigma 3, 5
and 10, JPEG at quality 50) and also used as they are (``clean``: a light denoise must not
spoil a good photo). Every candidate denoises every input, and the whole ``quick`` recipe
runs with the candidate in place of its denoise step (the candidates with ``recipe=True``
in :func:`candidates`; ``--all-recipe`` for all). Colour and gray pictures are tabled apart:
OpenCV denoises a colour picture's Lab lightness but a gray one's raw levels, so the same
strength and windows act differently. Per candidate, degradation and colour/gray the table
gives the mean over the images of:

- ``step ms``: the denoise step's time per image (median of the repeats), and its ratio to
  the old setting (nlmeans, template 7, search 21) timed in the same loop, interleaved;
- ``PSNR``: the denoised image against the clean one (dB; ``-`` where they are identical);
- ``score`` / ``gain``: the review's score of the denoised image against its input
  (:func:`retouch.lib.phases.review.score_result`, one-step recipe) and its gain;
- ``recipe ms`` (and ``x old``), ``rPSNR``, ``rscore``: the same for the whole ``quick``
  recipe, and ``rworse``, the share of images the review calls "worse" than their input.
  The recipe's PSNR compares with the recipe run on the clean picture without
  a denoise step (what an ideal denoiser would lead to), so both leftover noise and lost
  detail count.

Times are noisy on a shared machine: compare the ratios, which are taken in one process with
the candidates interleaved. Nothing here is a test.

Run ``python -m bench.denoise_choice [--repeats N] [--images N] [--only NAMES] [--no-recipe]
[--all-recipe] [--json FILE]`` from the repository root (about 15 minutes on a loaded 2-core
CPU; ``--only camera --no-recipe`` for a quick look). The JSON has every image's numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from retouch.lib.errors import RetouchError
from retouch.lib.image import Image, resize_plane
from retouch.lib.imageio import decode
from retouch.lib.ops.base import OpContext
from retouch.lib.ops.denoise import Denoise, DenoiseParams
from retouch.lib.ops.registry import registry
from retouch.lib.phases.review import score_result
from retouch.lib.quality.measures import psnr
from retouch.lib.recipe import Recipe
from retouch.lib.recipe.loading import load_preset, recipe_from_dict

SIDE = 512
SAMPLES = Path(__file__).resolve().parent.parent / "samples"
DEGRADATIONS = ("clean", "gauss3", "gauss5", "gauss10", "jpeg50")
OLD = "nlmeans 7/21 (old)"
GRAY_COPIES = ("coffee", "generated1")


@dataclass
class Candidate:
    """A denoise step to try: ``params`` for the op (None: no denoise)."""

    name: str
    params: dict[str, Any] | None = None
    recipe: bool = True  # also run the whole recipe with it (unless --all-recipe)

    def __call__(self, image: Image) -> Image:
        if self.params is None:
            return image
        op = Denoise()
        return op(image, op.Params(**self.params), OpContext(name="bench"))


def candidates(shipped: DenoiseParams) -> list[Candidate]:
    """The windows to compare at the preset's strength; names mark the old and the shipped."""
    strength = shipped.strength

    def nl(template: int, search: int, recipe: bool = True) -> Candidate:
        name = f"nlmeans {template}/{search}"
        if (template, search) == (7, 21):
            name += " (old)"
        elif (shipped.method, shipped.template, shipped.search) == ("nlmeans", template, search):
            name += " (quick)"
        params = {"strength": strength, "template": template, "search": search}
        return Candidate(name, params, recipe=recipe)

    return [
        nl(7, 21),
        nl(7, 11, recipe=False),
        nl(7, 9),
        nl(7, 7, recipe=False),
        nl(7, 5, recipe=False),
        nl(5, 11),
        nl(5, 9),
        nl(5, 7),
        nl(3, 11, recipe=False),
        nl(3, 9),
        nl(3, 7),
        Candidate("bilateral", {"strength": strength, "method": "bilateral"}),
        Candidate("no denoise"),
    ]


# -- inputs ----------------------------------------------------------------------------------


def _fit(image: Image) -> Image:
    """``image`` resized so its longer side is 512 px, 8-bit (the samples are 8-bit)."""
    h, w = image.height, image.width
    f = SIDE / max(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    return Image(resize_plane(image.to_uint8(), *size), is_gray=image.is_gray)


def _generated(seed: int) -> np.ndarray:
    """A 512x384 scene: smooth gradients, hard-edged shapes, fine stripes and blurred texture,
    so that both flat areas (where noise shows) and detail (which a denoiser can erase)
    are present."""
    rng = np.random.default_rng(seed)
    h, w = 384, SIDE
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([60 + 120 * xx / w, 80 + 100 * yy / h, 200 - 120 * xx / w], axis=2)
    for _ in range(12):
        cx, cy, r = rng.integers(0, w), rng.integers(0, h), rng.integers(10, 60)
        colour = rng.integers(20, 235, 3).tolist()
        cv2.circle(img, (int(cx), int(cy)), int(r), colour, -1, lineType=cv2.LINE_AA)
    img[40:120, 300:460] = 128 + 60 * np.sin(xx[40:120, 300:460] * 0.9)[..., None]
    texture = cv2.GaussianBlur(rng.normal(0, 30, (h, w, 3)).astype(np.float32), (0, 0), 1.2)
    img[220:340, 40:220] += texture[220:340, 40:220]
    return np.clip(img, 0, 255).astype(np.uint8)


def clean_images(limit: int | None, only: set[str] | None) -> list[tuple[str, Image]]:
    """The samples decoded as a run decodes them (a gray file stays gray: the op then takes
    its gray path) and the generated scenes."""
    out: list[tuple[str, Image]] = []
    for path in sorted(SAMPLES.iterdir()):
        try:
            image = decode(path.read_bytes(), path.name, pixel_limit=SIDE * SIDE * 64)
        except RetouchError as exc:
            raise SystemExit(f"denoise_choice: {path}: {exc}") from None
        out.append((path.stem, _fit(image)))
    out += [(f"generated{seed}", Image(_generated(seed))) for seed in (1, 2)]
    # More gray pictures than the one gray sample: the op's gray path is another filter.
    for stem in GRAY_COPIES:
        colour = next(image for name, image in out if name == stem)
        gray = cv2.cvtColor(colour.pixels, cv2.COLOR_BGR2GRAY)
        out.append((f"{stem}-gray", Image(np.repeat(gray[:, :, None], 3, axis=2), is_gray=True)))
    if only:
        missing = only - {stem for stem, _ in out}
        if missing:
            valid = ", ".join(stem for stem, _ in out)
            raise SystemExit(f"denoise_choice: no image {', '.join(sorted(missing))}; use {valid}")
        out = [(stem, image) for stem, image in out if stem in only]
    return out[:limit] if limit else out


def degrade(clean: Image, kind: str, seed: int) -> Image:
    """``clean`` with noise or JPEG artefacts; a gray image gets gray noise and stays gray."""
    px = clean.pixels[:, :, :1] if clean.is_gray else clean.pixels
    if kind == "clean":
        return clean
    if kind.startswith("gauss"):
        sigma = float(kind[len("gauss") :])
        rng = np.random.default_rng(seed)
        out = np.clip(px + rng.normal(0, sigma, px.shape), 0, 255).astype(np.uint8)
    elif kind.startswith("jpeg"):
        quality = int(kind[len("jpeg") :])
        ok, data = cv2.imencode(".jpg", px, [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok
        out = cv2.imdecode(data, cv2.IMREAD_UNCHANGED).reshape(px.shape)
    else:
        raise ValueError(kind)
    if clean.is_gray:
        out = np.repeat(out, 3, axis=2)
    return Image(out, is_gray=clean.is_gray)


# -- measuring -------------------------------------------------------------------------------


def _timed(fn: Callable[[], Image]) -> tuple[Image, float]:
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def _run_recipe(recipe: Recipe, image: Image, denoise: Candidate | None) -> Image:
    """The recipe's steps in order, ``denoise`` in place of its denoise step (None: skip it)."""
    ctx = OpContext(name="bench")
    for step in recipe.steps:
        if step.op == "denoise":
            image = denoise(image) if denoise is not None else image
        else:
            image = registry().get(step.op)(image, step.parsed(), ctx)
    return image


def measure(args: argparse.Namespace) -> dict[str, Any]:
    quick = load_preset("quick")
    shipped = next(s.parsed() for s in quick.steps if s.op == "denoise")
    assert isinstance(shipped, DenoiseParams)
    cands = candidates(shipped)
    one_step = {
        c.name: recipe_from_dict({"steps": [{"op": "denoise", "params": c.params or {}}]})
        for c in cands
    }
    records: list[dict[str, Any]] = []
    images = clean_images(args.images, set(args.only.split(",")) if args.only else None)
    for i, (stem, clean) in enumerate(images):
        reference = _run_recipe(quick, clean, None) if args.recipe else None
        for kind in DEGRADATIONS:
            noisy = degrade(clean, kind, seed=i)
            times: dict[str, list[float]] = {c.name: [] for c in cands}
            outs: dict[str, Image] = {}
            for rep in range(args.repeats):
                # Rotate the order each repeat so no candidate always runs first (warm caches).
                order = cands[rep % len(cands) :] + cands[: rep % len(cands)]
                for c in order:
                    outs[c.name], took = _timed(lambda c=c, noisy=noisy: c(noisy))
                    times[c.name].append(took)
            rtimes: dict[str, list[float]] = {c.name: [] for c in cands}
            routs: dict[str, Image] = {}
            in_recipe = [c for c in cands if args.recipe and (c.recipe or args.all_recipe)]
            for rep in range(args.recipe_repeats if in_recipe else 0):
                order = in_recipe[rep % len(in_recipe) :] + in_recipe[: rep % len(in_recipe)]
                for c in order:
                    routs[c.name], took = _timed(
                        lambda c=c, noisy=noisy: _run_recipe(quick, noisy, c)
                    )
                    rtimes[c.name].append(took)
            for c in cands:
                out = outs[c.name]
                scores, _, _ = score_result(noisy, out, one_step[c.name])
                rec: dict[str, Any] = {
                    "image": stem,
                    "gray": clean.is_gray,
                    "candidate": c.name,
                    "degradation": kind,
                    "step_s": statistics.median(times[c.name]),
                    "step_ratio": statistics.median(times[c.name]) / statistics.median(times[OLD]),
                    "psnr": _finite(psnr(clean.pixels, out.pixels)),
                    "score": scores["score"],
                    "gain": scores["gain"],
                }
                if c.name in routs:
                    assert reference is not None
                    res = routs[c.name]
                    rscores, _, _ = score_result(noisy, res, quick)
                    rec |= {
                        "recipe_s": statistics.median(rtimes[c.name]),
                        "recipe_ratio": statistics.median(rtimes[c.name])
                        / statistics.median(rtimes[OLD]),
                        "recipe_psnr": _finite(psnr(reference.pixels, res.pixels)),
                        "recipe_score": rscores["score"],
                        "recipe_worse": float(rscores["verdict"] == "worse"),
                    }
                records.append(rec)
        print(f"  {stem}: done ({i + 1}/{len(images)})", flush=True)
    return {
        "images": [stem for stem, _ in images],
        "gray": [stem for stem, image in images if image.is_gray],
        "strength": shipped.strength,
        "repeats": args.repeats,
        "recipe_repeats": args.recipe_repeats if args.recipe else 0,
        "load_average": os.getloadavg(),
        "cv2_threads": cv2.getNumThreads(),
        "candidates": [c.name for c in cands],
        "per_image": records,
    }


def _finite(value: float) -> float | None:
    """PSNR of identical images is infinite: kept as None (JSON has no infinity)."""
    return value if math.isfinite(value) else None


METRICS = (
    "step_s",
    "step_ratio",
    "psnr",
    "score",
    "gain",
    "recipe_s",
    "recipe_ratio",
    "recipe_psnr",
    "recipe_score",
    "recipe_worse",
)


def summary(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Means over the images of each (colour or gray, degradation, candidate)."""
    rows = []
    for group, gray in (("colour", False), ("gray", True)):
        for kind in DEGRADATIONS:
            for name in result["candidates"]:
                recs = [
                    r
                    for r in result["per_image"]
                    if r["gray"] == gray and r["degradation"] == kind and r["candidate"] == name
                ]
                if not recs:
                    continue
                row: dict[str, Any] = {"group": group, "degradation": kind, "candidate": name}
                row["images"] = len(recs)
                for key in METRICS:
                    values = [r[key] for r in recs if r.get(key) is not None]
                    present = any(key in r for r in recs)
                    row[key] = round(statistics.mean(values), 4) if values else None
                    if not present:
                        del row[key]
                rows.append(row)
    return rows


def _cell(value: float | None, width: int, fmt: str) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:{width}{fmt}}"


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (
        f"{'candidate':22} {'input':8} {'step ms':>8} {'x old':>6} {'PSNR':>6} {'score':>6} "
        f"{'gain':>6} {'recipe ms':>9} {'x old':>6} {'rPSNR':>6} {'rscore':>6} {'rworse':>6}"
    )
    last = None
    for row in rows:
        if (row["group"], row["degradation"]) != last:
            if last is None or row["group"] != last[0]:
                print(f"\n{row['group']} images ({row['images']})")
                print(head)
            else:
                print()
            last = (row["group"], row["degradation"])
        step_ms = None if row["step_s"] is None else 1000 * row["step_s"]
        line = (
            f"{row['candidate']:22} {row['degradation']:8} {_cell(step_ms, 8, '.0f')} "
            f"{_cell(row['step_ratio'], 6, '.2f')} {_cell(row['psnr'], 6, '.2f')} "
            f"{_cell(row['score'], 6, '.1f')} {_cell(row['gain'], 6, '.1f')}"
        )
        if "recipe_s" in row:
            recipe_ms = None if row["recipe_s"] is None else 1000 * row["recipe_s"]
            line += (
                f" {_cell(recipe_ms, 9, '.0f')} {_cell(row['recipe_ratio'], 6, '.2f')} "
                f"{_cell(row['recipe_psnr'], 6, '.2f')} {_cell(row['recipe_score'], 6, '.1f')} "
                f"{_cell(row['recipe_worse'], 6, '.2f')}"
            )
        print(line)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.denoise_choice", description=__doc__)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each denoise step")
    ap.add_argument("--recipe-repeats", type=int, default=1, help="timed runs of each recipe")
    ap.add_argument("--images", type=int, default=None, help="use only the first N images")
    ap.add_argument("--only", default="", help="comma-separated image names (e.g. camera)")
    ap.add_argument("--no-recipe", dest="recipe", action="store_false", help="step alone only")
    ap.add_argument("--all-recipe", action="store_true", help="run the recipe with every candidate")
    ap.add_argument("--json", type=Path, default=None, help="also write the table as JSON here")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    load_start = os.getloadavg()
    result = measure(args)
    result["load_average_start"] = load_start
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(
        f"denoise candidates for quick (strength {result['strength']}), "
        f"{len(result['images'])} images ({', '.join(result['images'])}; gray: "
        f"{', '.join(result['gray']) or 'none'}) x {len(DEGRADATIONS)} inputs, 512 px long side; "
        f"load {load_start[0]:.1f} -> {result['load_average'][0]:.1f}; "
        f"cv2 threads {result['cv2_threads']}; {result['seconds']} s"
    )
    result["summary"] = summary(result)
    print_table(result["summary"])
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
