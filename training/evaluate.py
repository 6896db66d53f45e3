"""Score retouch's compact upscaler against bicubic on the held-out photos.

Run from the repository root::

    python -m training.evaluate                      # the shipped models, by registry name
    python -m training.evaluate --weights 2=/tmp/x2.pth --weights 4=/tmp/x4.pth

For each held-out photo (``training.data.HELD_OUT``, never used in training) and each scale:
the photo is cropped to a multiple of the scale, downscaled with bicubic (PIL, antialiased),
then upscaled back by bicubic and by the model. The model runs through ``RealESRGANer`` the way
retouch runs it. Scores: PSNR on the Y channel (BT.601, border of ``scale`` pixels cropped,
higher is better) and NIQE (no-reference, lower is better), both from basicsr. Prints a table
and writes JSON (``--json``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from retouch.lib.models.compat import ensure_compat

from .data import HELD_OUT, TRAIN, bicubic_resize_u8


def _upsampler(scale: int, weights: Path | None) -> Any:
    """The registered model through the real loader, or a given file through the same
    RealESRGANer with the registry's network shape."""
    import torch

    from retouch.lib.models.loaders import build_sr_network, load_realesrganer
    from retouch.lib.models.specs import get_spec

    name = f"retouch-compact-x{scale}"
    if weights is None:
        return load_realesrganer(name, device="cpu")
    ensure_compat()
    from realesrgan import RealESRGANer

    spec = get_spec(name)
    return RealESRGANer(
        scale=spec.scale,
        model_path=str(weights),
        model=build_sr_network(spec),
        tile=0,
        pre_pad=10,
        half=False,
        device=torch.device("cpu"),
    )


def upscale_rgb(upsampler: Any, lr_rgb: np.ndarray, scale: int) -> np.ndarray:
    """HxWx3 RGB uint8 -> (H*scale)x(W*scale)x3 RGB uint8 with ``RealESRGANer.enhance``
    (which takes and returns BGR)."""
    out_bgr, _ = upsampler.enhance(np.ascontiguousarray(lr_rgb[..., ::-1]), outscale=scale)
    return np.ascontiguousarray(out_bgr[..., ::-1])


def scores(hr_rgb: np.ndarray, sr_rgb: np.ndarray, scale: int) -> dict[str, float]:
    """PSNR (Y channel, border ``scale`` cropped) and NIQE of ``sr_rgb`` against ``hr_rgb``;
    both HxWx3 RGB uint8 of the same size."""
    ensure_compat()
    from basicsr.metrics import calculate_niqe, calculate_psnr

    hr_bgr, sr_bgr = hr_rgb[..., ::-1], sr_rgb[..., ::-1]
    psnr = calculate_psnr(sr_bgr, hr_bgr, crop_border=scale, test_y_channel=True)
    niqe = calculate_niqe(sr_bgr, crop_border=scale, input_order="HWC", convert_to="y")
    return {"psnr": float(psnr), "niqe": float(niqe)}


def evaluate(weights: dict[int, Path | None], max_side: int = 512) -> dict[str, Any]:
    """Scores per photo and scale, and their means. Photos larger than ``max_side`` are
    centre-cropped to it (NIQE is slow on big images and the crop keeps the busy middle)."""
    import torch

    torch.set_num_threads(1)
    rows: list[dict[str, Any]] = []
    for scale, path in sorted(weights.items()):
        upsampler = _upsampler(scale, path)
        for photo in HELD_OUT:
            hr = photo.load_u8()
            h, w = hr.shape[:2]
            ch, cw = min(h, max_side), min(w, max_side)
            ch, cw = ch - ch % scale, cw - cw % scale
            y0, x0 = (h - ch) // 2, (w - cw) // 2
            hr = np.ascontiguousarray(hr[y0 : y0 + ch, x0 : x0 + cw])
            lr = bicubic_resize_u8(hr, cw // scale, ch // scale)
            bic = bicubic_resize_u8(lr, cw, ch)
            t0 = time.perf_counter()
            sr = upscale_rgb(upsampler, lr, scale)
            seconds = time.perf_counter() - t0
            b, m = scores(hr, bic, scale), scores(hr, sr, scale)
            rows.append(
                {
                    "scale": scale,
                    "photo": photo.name,
                    "size": f"{cw}x{ch}",
                    "psnr_bicubic": b["psnr"],
                    "psnr_model": m["psnr"],
                    "niqe_bicubic": b["niqe"],
                    "niqe_model": m["niqe"],
                    "model_seconds": seconds,
                }
            )
    summary: dict[str, Any] = {}
    for scale in sorted(weights):
        sel = [r for r in rows if r["scale"] == scale]
        mean = {
            k: float(np.mean([r[k] for r in sel]))
            for k in ("psnr_bicubic", "psnr_model", "niqe_bicubic", "niqe_model")
        }
        mean["psnr_gain"] = mean["psnr_model"] - mean["psnr_bicubic"]
        mean["niqe_gain"] = mean["niqe_bicubic"] - mean["niqe_model"]
        summary[f"x{scale}"] = mean
    return {
        "weights": {f"x{s}": str(p) if p else f"retouch-compact-x{s}" for s, p in weights.items()},
        "rows": rows,
        "mean": summary,
    }


def table(result: dict[str, Any]) -> str:
    """The result as a Markdown table (per photo, then the mean per scale)."""
    lines = [
        "| scale | photo | size | PSNR-Y bicubic | PSNR-Y model | gain (dB) "
        "| NIQE bicubic | NIQE model |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| x{r['scale']} | {r['photo']} | {r['size']} | {r['psnr_bicubic']:.2f} "
            f"| {r['psnr_model']:.2f} | {r['psnr_model'] - r['psnr_bicubic']:+.2f} "
            f"| {r['niqe_bicubic']:.2f} | {r['niqe_model']:.2f} |"
        )
    for key, m in result["mean"].items():
        lines.append(
            f"| **{key}** | **mean** | | {m['psnr_bicubic']:.2f} | {m['psnr_model']:.2f} "
            f"| **{m['psnr_gain']:+.2f}** | {m['niqe_bicubic']:.2f} | {m['niqe_model']:.2f} |"
        )
    return "\n".join(lines)


def speed(scale: int, side: int = 512, repeats: int = 3) -> dict[str, float]:
    """Seconds to upscale a ``side`` x ``side`` photo with the shipped model through retouch's
    own upscale path (pool, loader, ``RealESRGANer``), with torch's default threads: the
    model load, then the best and median of ``repeats`` runs after one warm-up."""
    from retouch.lib.models.pool import ModelPool
    from retouch.lib.ops.base import OpContext
    from retouch.lib.ops.upscale import upscale_pixels

    photo = TRAIN[0].load_u8()[:side, :side, ::-1]  # astronaut, 512x512
    bgr = np.ascontiguousarray(photo)
    ctx = OpContext(name="speed", device="cpu", pool=ModelPool())
    model = f"retouch-compact-x{scale}"
    t0 = time.perf_counter()
    upscale_pixels(bgr, ctx, model=model)
    first = time.perf_counter() - t0
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = upscale_pixels(bgr, ctx, model=model)
        runs.append(time.perf_counter() - t0)
    assert out.shape == (side * scale, side * scale, 3)
    return {
        "scale": scale,
        "side": side,
        "first_call_s": first,
        "best_s": min(runs),
        "median_s": float(np.median(runs)),
    }


def _weights_arg(value: str) -> tuple[int, Path]:
    scale, _, path = value.partition("=")
    if scale not in ("2", "4") or not path:
        raise argparse.ArgumentTypeError("use SCALE=PATH, e.g. 2=/tmp/retouch-compact-x2.pth")
    return int(scale), Path(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--weights",
        type=_weights_arg,
        action="append",
        help="SCALE=PATH of a weight file to score (repeatable); default: the shipped models",
    )
    parser.add_argument("--json", type=Path, help="write the full result here")
    parser.add_argument(
        "--speed",
        action="store_true",
        help="only time a 512x512 upscale with each shipped model (default torch threads)",
    )
    args = parser.parse_args(argv)
    if args.speed:
        import torch

        for scale in (2, 4):
            r = speed(scale)
            print(
                f"x{scale} {r['side']}x{r['side']}: first call (with load) {r['first_call_s']:.2f}s, "
                f"then best {r['best_s']:.2f}s, median {r['median_s']:.2f}s "
                f"({torch.get_num_threads()} threads)"
            )
        return
    weights: dict[int, Path | None] = dict(args.weights) if args.weights else {2: None, 4: None}
    result = evaluate(weights)
    print(table(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
