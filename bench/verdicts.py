"""What the cases conclude from their runs: the verdicts (leak, steady state, throughput),
the check that a retouch run delivered what it should, and small file helpers."""

from __future__ import annotations

import json
import shutil
import statistics
from fractions import Fraction
from pathlib import Path
from typing import Any

from .proc import Measured


def leak_verdict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Every batch after the first within 5% of the level after the first (RSS, and CUDA
    allocated memory when recorded)."""
    base = rows[0]["rss_mb"]
    worst = max(abs(r["rss_mb"] - base) / base for r in rows)
    out: dict[str, Any] = {
        "rss_after_first_mb": base,
        "rss_last_mb": rows[-1]["rss_mb"],
        "rss_max_deviation_pct": round(100 * worst, 2),
    }
    ok = worst <= 0.05
    if "cuda_allocated_mb" in rows[0]:
        cbase = rows[0]["cuda_allocated_mb"]
        cworst = max(abs(r["cuda_allocated_mb"] - cbase) for r in rows) / max(cbase, 1e-9)
        out["cuda_max_deviation_pct"] = round(100 * cworst, 2)
        ok = ok and cworst <= 0.05
    out["within_5pct"] = ok
    return out


SOAK_FLAT = ("rss_mb", "fds", "threads", "children")


def soak_verdict(
    samples: list[dict[str, Any]], rows: list[dict[str, Any]], every: int
) -> dict[str, Any]:
    """The soak targets. Flat: the last sample within 5% of the one at batch ``every`` (the
    first after the warm-up batches; the first sample when the run ended before it), for the
    serving process's RSS, open file descriptors, threads and child processes (a count of 0
    must stay 0). API latency flat: the median of the last 3 samples' latencies at most twice
    the median of the first 3 (with fewer than 6 samples, halves of them). No failed batch:
    every run Completed and delivered every image."""
    base = next((s for s in samples if s["batch"] >= every), samples[0])
    last = samples[-1]
    out: dict[str, Any] = {"base_batch": base["batch"], "last_batch": last["batch"]}
    ok = True
    for key in SOAK_FLAT:
        b, v = base[key], last[key]
        dev = (v - b) / b if b else (0.0 if v == b else float("inf"))
        flat = abs(dev) <= 0.05
        out[key] = {"base": b, "last": v, "deviation_pct": round(100 * dev, 2), "flat": flat}
        ok = ok and flat
    k = max(1, min(3, len(samples) // 2))
    first = statistics.median(s["api_ms"] for s in samples[:k])
    tail = statistics.median(s["api_ms"] for s in samples[-k:])
    out["api_ms"] = {
        "first_median": round(first, 2),
        "last_median": round(tail, 2),
        "samples_each": k,
        "ratio": round(tail / max(first, 1e-9), 2),
        "flat": tail <= 2 * first,
    }
    images = max((r["succeeded"] + r["failed"] for r in rows), default=0)
    failed = [
        r["batch"]
        for r in rows
        if r["state"] != "Completed" or r["failed"] or r["succeeded"] != images
    ]
    out["failed_batches"] = failed
    out["db_mb_per_batch"] = round(
        (last["db_mb"] - samples[0]["db_mb"]) / max(last["batch"] - samples[0]["batch"], 1), 4
    )
    out["pass"] = ok and out["api_ms"]["flat"] and not failed and bool(rows)
    return out


def steady_state(small: dict[str, Any], large: dict[str, Any]) -> dict[str, Any]:
    """Throughput once running: the extra images of the larger run over the extra wall time
    it took, for each side. Start-up and the per-run fixed costs (imports, model load,
    Prefect's flow run, delivery; the baseline's own start-up) cancel out, and are reported
    as the fixed seconds each side pays once per run."""
    extra = large["images"] - small["images"]
    out: dict[str, Any] = {"extra_images": extra}
    for side in ("baseline", "retouch"):
        per = (large[side]["wall_s"] - small[side]["wall_s"]) / extra
        out[f"{side}_s_per_image"] = round(per, 4)
        out[f"{side}_fixed_s"] = round(small[side]["wall_s"] - per * small["images"], 2)
    out["ratio"] = round(out["baseline_s_per_image"] / max(out["retouch_s_per_image"], 1e-9), 3)
    return out


def video_delivery(src: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    """A delivered video against its source, from what each holds (``bench.video.media_facts``:
    decoded frame times, exact; per audio stream its span, sample rate and frame size):
    the same frame count, every frame time equal, as many audio streams (at least one),
    each lasting as long as the source's within one audio frame (AAC: 1024 samples)."""
    t_in, t_out = src["times"], out["times"]
    mismatch = next(
        (i for i, (a, b) in enumerate(zip(t_in, t_out, strict=False)) if a != b or a is None),
        None,
    )
    res: dict[str, Any] = {
        "frames_in": len(t_in),
        "frames_out": len(t_out),
        "frames_equal": len(t_in) == len(t_out),
        "timestamps_equal": len(t_in) == len(t_out) and mismatch is None,
    }
    if mismatch is not None:
        a, b = t_in[mismatch], t_out[mismatch]
        res["first_timestamp_mismatch"] = {
            "frame": mismatch + 1,
            "source_s": None if a is None else float(a),
            "delivered_s": None if b is None else float(b),
        }
    a_in, a_out = src["audio"], out["audio"]
    res["audio_streams_in"], res["audio_streams_out"] = len(a_in), len(a_out)
    res["audio_present"] = bool(a_out) and len(a_out) == len(a_in)
    same = res["audio_present"]
    for s_in, s_out in zip(a_in, a_out, strict=False):
        rate = s_in["sample_rate"] or s_out["sample_rate"]
        one = Fraction(s_in["frame_size"] or 1024, rate) if rate else Fraction(0)
        res["audio_in_s"] = round(float(s_in["span"]), 4)
        res["audio_out_s"] = round(float(s_out["span"]), 4)
        res["audio_frame_s"] = round(float(one), 4)
        same = same and abs(s_in["span"] - s_out["span"]) <= one
    res["audio_duration_equal"] = bool(same)
    keys = ("frames_equal", "timestamps_equal", "audio_present", "audio_duration_equal")
    res["ok"] = all(res[k] for k in keys)
    return res


def video_verdict(
    ratio: float | None, rss_ratio: float, deliveries: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The video targets: retouch's whole-run frames per second at least the baseline's
    (``ratio`` >= 1.0), peak RSS on the long clip at most 1.2x the short clip's, and every
    delivered file equal to its source (frames, timestamps, audio)."""
    targets = {
        "throughput": ratio is not None and ratio >= 1.0,
        "rss": rss_ratio <= 1.2,
        "delivery": bool(deliveries) and all(d.get("ok") for d in deliveries.values()),
    }
    return {"targets": targets, "pass": all(targets.values())}


def throughput(n: int, base_wall: float, retouch_wall: float) -> dict[str, Any]:
    """Per-image seconds, images/s, ratio (retouch / baseline throughput) and the overhead
    per image, all from whole-process wall times (start-up and model load included)."""
    return {
        "baseline_s_per_image": round(base_wall / n, 4),
        "retouch_s_per_image": round(retouch_wall / n, 4),
        "baseline_images_per_s": round(n / base_wall, 4),
        "retouch_images_per_s": round(n / retouch_wall, 4),
        "ratio": round(base_wall / retouch_wall, 3),
        "overhead_ms_per_image": round(1000 * (retouch_wall - base_wall) / n, 2),
    }


def inpaint_pixels(src: Path, masks: Path, preset: str, overrides: list[str]) -> dict[str, Any]:
    """Pixels through the network: the whole padded images (baseline) and retouch's crops
    for the recipe's masks (its own plan: dilation, margin, resize limit)."""
    import cv2
    import numpy as np

    from retouch.lib.models.inpainting import _padded, plan
    from retouch.lib.recipe import apply_overrides, load_preset

    recipe = apply_overrides(load_preset(preset), overrides)
    p = next(s.parsed() for s in recipe.steps if s.op == "inpaint")
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * p.dilate + 1, 2 * p.dilate + 1))
    whole = crops = 0
    for path in files_in(src):
        mask = cv2.imread(str(masks / f"{path.stem}.png"), cv2.IMREAD_GRAYSCALE) > 127
        mask = cv2.dilate(mask.astype(np.uint8), kernel) > 0
        h, w = mask.shape
        whole += _padded(h) * _padded(w)
        boxes, _ = plan(mask, p.strategy, margin=p.crop_margin, resize_limit=p.resize_limit)
        for b in boxes:
            bw, bh = b.size or (b.w, b.h)
            crops += _padded(bh) * _padded(bw)
    return {"baseline": whole, "retouch": crops, "ratio": round(whole / max(crops, 1), 2)}


_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")


def _delivered(folder: Path) -> dict[str, bytes]:
    """The encoded images a run left in ``folder``, by stem: loose files (retouch's
    ``--out`` tree, the baseline's folder) and the members of its ZIP archives (where
    retouch delivers them)."""
    import zipfile

    found: dict[str, bytes] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in _IMAGE_EXTS:
            found.setdefault(path.stem, path.read_bytes())
        elif path.is_file() and path.suffix.lower() == ".zip":
            with zipfile.ZipFile(path) as archive:
                for member in archive.namelist():
                    name = Path(member)
                    if name.suffix.lower() in _IMAGE_EXTS:
                        found.setdefault(name.stem, archive.read(member))
    return found


def outputs_agree(
    src: Path, reference: Path, other: Path, tolerance: int = 2, *, input_size: bool = True
) -> dict[str, Any]:
    """``other``'s output images against ``reference``'s (run folders, as
    :func:`_delivered` reads them), pixel by pixel, for every input in ``src``: both there,
    the same size (and the input's, with ``input_size``: recipes that keep the size), and no
    channel value more than ``tolerance`` levels apart. ``agree`` needs at least one image
    compared and every one within it."""
    import cv2
    import numpy as np

    per: dict[str, Any] = {}
    refs, others = _delivered(reference), _delivered(other)
    for path in files_in(src):
        ref_bytes, got_bytes = refs.get(path.stem), others.get(path.stem)
        if ref_bytes is None or got_bytes is None:
            per[path.name] = {"missing": "reference" if ref_bytes is None else "other"}
            continue
        want_hw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED).shape[:2]
        ref = cv2.imdecode(np.frombuffer(ref_bytes, np.uint8), cv2.IMREAD_UNCHANGED)
        got = cv2.imdecode(np.frombuffer(got_bytes, np.uint8), cv2.IMREAD_UNCHANGED)
        entry: dict[str, Any] = {"size": [int(want_hw[1]), int(want_hw[0])]}
        if ref.shape != got.shape or (input_size and ref.shape[:2] != want_hw):
            entry["shapes"] = {"input": list(want_hw), "reference": ref.shape, "other": got.shape}
            per[path.name] = entry
            continue
        diff = np.abs(ref.astype(np.int32) - got.astype(np.int32))
        entry["max_abs_diff"] = int(diff.max())
        entry["mean_abs_diff"] = round(float(diff.mean()), 4)
        entry["values_over_tolerance"] = int((diff > tolerance).sum())
        per[path.name] = entry
    compared = [e for e in per.values() if "max_abs_diff" in e]
    return {
        "tolerance_levels": tolerance,
        "images": len(per),
        "compared": len(compared),
        "max_abs_diff": max((e["max_abs_diff"] for e in compared), default=None),
        "agree": bool(compared)
        and len(compared) == len(per)
        and all(e["max_abs_diff"] <= tolerance for e in compared),
        "per_image": per,
    }


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def files_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def strip_detail(detail: dict[str, Any]) -> dict[str, Any]:
    """The baseline's report without the per-image list (kept as a summary)."""
    out = {k: v for k, v in detail.items() if k != "per_image_s"}
    per = detail.get("per_image_s")
    if per:
        out["per_image_s_min"], out["per_image_s_max"] = min(per), max(per)
    return out


def check_retouch(m: Measured, dest: Path, expected: int) -> dict[str, Any]:
    """Did the run deliver every image? (exit code and the manifest's statuses)"""
    manifest = dest / "manifest.json"
    check: dict[str, Any] = {"exit_code": m.returncode}
    if not manifest.is_file():
        check["status"] = f"failed: no manifest (exit {m.returncode})"
        check["log_tail"] = m.log[-1500:]
        return check
    data = json.loads(manifest.read_text())
    imgs = data.get("images", [])
    ok = [i for i in imgs if i.get("status") != "failed"]
    check["succeeded"] = len(ok)
    check["failed"] = len(imgs) - len(ok)
    phases: dict[str, float] = {}
    for img in imgs:
        for phase, secs in (img.get("timings") or {}).items():
            if isinstance(secs, int | float):
                phases[phase] = phases.get(phase, 0.0) + secs
    check["phase_seconds_sum"] = {k: round(v, 3) for k, v in phases.items()}
    if isinstance(data.get("performance"), dict):  # retouch's own per-run figures, if it has them
        check["performance"] = data["performance"]
    good = m.returncode == 0 and len(ok) == expected
    check["status"] = "ok" if good else f"{len(ok)} of {expected} delivered (exit {m.returncode})"
    if not good:
        check["log_tail"] = m.log[-1500:]
    return check


def cleanup(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
