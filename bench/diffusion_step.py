"""``python -m bench.diffusion_step``: the CPU cost of one Stable Diffusion 1.x denoising step.

restyle's ``diffusion`` method tells a CPU user how long a run will take from one figure, the
seconds of one 512x512 UNet step with classifier-free guidance
(``CPU_SECONDS_PER_STEP_512`` in ``lib/ops/restyle.py``); this script measures it. No
checkpoint can be downloaded here, but compute cost depends only on the architecture, so it
builds the full-size Stable Diffusion 1.5 UNet from its config (diffusers'
``UNet2DConditionModel``, 860M parameters) with torch's random initialisation, float32,
``eval()``, and times the call img2img makes per step: a latent batch of 2 (unconditional
and conditional) x 4 x 64 x 64, text embeddings 2 x 77 x 768 and a timestep, under
``torch.inference_mode()``. One warm-up call, then the median of ``--repeats`` calls. The
UNet is nearly all of a step's time (the scheduler's update is a few element-wise ops; the
text encoder and the VAE run once per image, not per step).

Prints the figure and writes JSON (default ``bench/results/<date>-<machine>-sd-step.json``)
with every call's time, the parameter count, torch's thread count, the load average before
and after, the CPU model and peak memory. Peak memory is a few GB (the weights alone are
3.4 GB in float32).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent

# Stable Diffusion 1.5's UNet (runwayml/stable-diffusion-v1-5, unet/config.json).
SD15_UNET = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}
TEXT_TOKENS, TEXT_DIM = 77, 768


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def measure(
    side: int = 512, repeats: int = 3, log: Any = print, device: str = "cpu"
) -> dict[str, Any]:
    """Build the UNet and time ``repeats`` guided steps at ``side`` x ``side`` pixels, on
    ``device`` (float32 on CPU; float16 on CUDA, as retouch runs it there)."""
    import torch
    from diffusers import UNet2DConditionModel

    dev = torch.device(device)
    dtype = torch.float16 if dev.type == "cuda" else torch.float32

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    load_start = [round(x, 2) for x in os.getloadavg()]
    torch.manual_seed(0)
    t = time.perf_counter()
    unet = UNet2DConditionModel(**SD15_UNET).eval().to(dev, dtype)
    build_s = time.perf_counter() - t
    params = sum(p.numel() for p in unet.parameters())
    log(f"sd-step: UNet built in {build_s:.1f} s: {params / 1e6:.1f}M parameters, {dtype}")

    latent = side // 8
    # Classifier-free guidance: the unconditional and the conditional pass as one batch of 2.
    sample = torch.randn(2, unet.config.in_channels, latent, latent).to(dev, dtype)
    text = torch.randn(2, TEXT_TOKENS, TEXT_DIM).to(dev, dtype)
    timestep = torch.tensor(500, device=dev)
    calls: list[float] = []
    with torch.inference_mode():
        for k in range(repeats + 1):
            sync()
            t = time.perf_counter()
            out = unet(sample, timestep, encoder_hidden_states=text).sample
            sync()
            calls.append(time.perf_counter() - t)
            what = "warm-up" if k == 0 else f"call {k}/{repeats}"
            log(f"sd-step: {what}: {calls[-1]:.2f} s")
    if tuple(out.shape) != tuple(sample.shape):
        raise RuntimeError(f"UNet output {tuple(out.shape)}, expected {tuple(sample.shape)}")
    attn = sorted({type(p).__name__ for p in unet.attn_processors.values()})
    return {
        "seconds_per_step": round(statistics.median(calls[1:]), 3),
        "what": f"one Stable Diffusion 1.5 UNet call at {side}x{side} with classifier-free "
        f"guidance: latent batch 2x4x{latent}x{latent}, encoder_hidden_states "
        f"2x{TEXT_TOKENS}x{TEXT_DIM}, timestep 500; {str(dtype).removeprefix('torch.')} on "
        f"{device}, eval, inference_mode; median "
        f"of {repeats} calls after one warm-up",
        "side": side,
        "latent_shape": [2, 4, latent, latent],
        "calls_s": [round(x, 3) for x in calls[1:]],
        "warmup_s": round(calls[0], 3),
        "build_s": round(build_s, 2),
        "parameters": params,
        "dtype": str(dtype).removeprefix("torch."),
        "device": device,
        "attention_processors": attn,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "diffusers": _version("diffusers"),
        "peak_rss_mb": _peak_rss_mb(),
        "load_avg_at_start": load_start,
        "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
    }


def _version(package: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(package)
    except Exception:  # noqa: BLE001 - not installed
        return None


def _default_out(info: dict[str, Any]) -> Path:
    from . import machine

    stem = f"{datetime.now(UTC):%Y-%m-%d}-{machine.slug(info)}-sd-step"
    out, n = RESULTS / f"{stem}.json", 2
    while out.exists():
        out = RESULTS / f"{stem}-{n}.json"
        n += 1
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.diffusion_step",
        description="Time one guided Stable Diffusion 1.5 UNet step (full size, random "
        "weights) on this machine.",
    )
    ap.add_argument("--side", type=int, default=512, help="image side in pixels (default 512)")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls after the warm-up")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's default)")
    ap.add_argument("--device", default="cpu", help="cpu (float32) or cuda (float16)")
    ap.add_argument("--out", type=Path, help="JSON file (default bench/results/...-sd-step.json)")
    args = ap.parse_args(argv)
    if args.side % 8 or args.side < 64 or args.repeats < 1:
        ap.error("--side must be a multiple of 8 (>= 64) and --repeats >= 1")

    import torch

    from . import machine

    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine.describe(REPO, torch.get_num_threads())
    print(
        f"sd-step: {info['cpu_model']}, {info['cpus_usable']} cpus, torch {info['torch']} "
        f"({torch.get_num_threads()} threads), load average {info['load_avg_at_start']}",
        flush=True,
    )
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device here")
    result = measure(
        args.side, args.repeats, log=lambda m: print(m, flush=True), device=args.device
    )
    report = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(
            ["python -m bench.diffusion_step", *(sys.argv[1:] if argv is None else argv)]
        ),
        "cpu_model": info["cpu_model"],
        "machine": info,
        **result,
    }
    out = args.out or _default_out(info)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(
        f"sd-step: {result['seconds_per_step']:.2f} s per {args.side}px step with guidance "
        f"(median of {result['calls_s']}; {result['parameters'] / 1e6:.0f}M parameters, "
        f"{result['torch_threads']} threads, peak RSS {result['peak_rss_mb']:.0f} MB, load "
        f"average {result['load_avg_at_start']} -> {result['load_avg_at_end']}); JSON: {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
