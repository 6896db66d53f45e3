"""Train retouch's compact upscaler (Real-ESRGAN's SRVGGNetCompact, small) at x2 or x4.

Run from the repository root::

    python -m training.train_compact --scale 2 --out lib/models/weights/retouch-compact-x2.pth
    python -m training.train_compact --scale 4 --out lib/models/weights/retouch-compact-x4.pth

Everything is seeded and the patch sampler is a pure function of (seed, step), so the same
command on the same machine gives the same weights. On CPU the run uses one thread
(``--threads``), which also keeps floating-point reductions in a fixed order. The network
shape comes from the registry (``retouch-compact-x2`` / ``-x4``), so the file written here
loads through the same ``RealESRGANer`` path as every other model. The file holds
``{"params_ema": state_dict}`` (an exponential moving average of the weights, which scores
slightly better than the last step) and a JSON log is written beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from retouch.lib.models.loaders import build_sr_network
from retouch.lib.models.specs import get_spec

from .data import HELD_OUT, TRAIN, Degradation, PatchSampler, training_sources

# HR patch side per scale: the LR patch is 48 (x2) or 32 (x4) pixels, enough context for the
# network's receptive field while keeping a CPU step short.
HR_PATCH = {2: 96, 4: 128}
# Steps and batch size per scale, sized so each model trains in about 15 minutes on one CPU
# thread here (an x4 step is cheaper: its LR patch is smaller).
DEFAULT_ITERS = {2: 1400, 4: 1400}
DEFAULT_BATCH = {2: 16, 4: 24}
# At x2 the input is usually a clean photo: little noise and more blur in training (the
# model learns to make edges crisp rather than to smooth grain away); scores in the model card.
DEGRADATION = {
    2: Degradation(
        clean_prob=0.5,
        blur_prob=0.6,
        blur_sigma=(0.3, 1.0),
        noise_prob=0.15,
        noise_sigma=(0.5, 2.5),
        jpeg_prob=0.3,
        jpeg_quality=(85, 95),
    ),
    4: Degradation(),
}
# Weight of an L1 loss on horizontal and vertical pixel differences. The network adds its
# output to a nearest-neighbour enlargement of the input; at x2 what a short training leaves
# of that base shows as a faint 2-pixel block pattern, which matching the target's gradients
# weakens (and PSNR improves). At x4 plain L1 was enough.
GRAD_WEIGHT = {2: 1.0, 4: 0.0}


def _grad_l1(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    dx = (out[..., :, 1:] - out[..., :, :-1]) - (target[..., :, 1:] - target[..., :, :-1])
    dy = (out[..., 1:, :] - out[..., :-1, :]) - (target[..., 1:, :] - target[..., :-1, :])
    return dx.abs().mean() + dy.abs().mean()


def sharpen_targets(hr: np.ndarray, amount: float, sigma: float) -> np.ndarray:
    """Unsharp-mask a batch of HR targets (NxCxHxW RGB float32 0..1, returned the same way):
    ``hr + amount * (hr - gaussian(hr, sigma))``, clipped. A positive amount sharpens, a
    negative one softens (-1 is the plain blur). Only the targets change; the LR inputs are
    still made from the unfiltered patch, so the model learns an enlargement slightly crisper
    (or softer) than the ground truth."""
    out = np.empty_like(hr)
    for i, img in enumerate(hr):
        hwc = np.ascontiguousarray(img.transpose(1, 2, 0))
        blurred = cv2.GaussianBlur(hwc, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
        out[i] = np.clip(hwc + amount * (hwc - blurred), 0.0, 1.0).transpose(2, 0, 1)
    return out


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def _save(net: nn.Module, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    torch.save({"params_ema": state}, path)


def train(
    *,
    scale: int,
    out: Path,
    iters: int,
    batch: int,
    lr: float,
    seed: int,
    threads: int,
    device: str,
    ema_decay: float = 0.999,
    log_every: int = 100,
    save_every: int = 0,
    grad_weight: float = 0.0,
    init: Path | None = None,
    target_sharpen: float = 0.0,
    sharpen_sigma: float = 1.0,
) -> dict[str, object]:
    """Train one model and write it to ``out``; returns the log (also written as JSON).
    With ``init`` the network (and its average) start from that weight file's
    ``params_ema`` instead of random weights: a fine-tuning stage. ``target_sharpen`` > 0
    unsharp-masks the HR targets (see :func:`sharpen_targets`)."""
    torch.set_num_threads(threads)
    _seed_everything(seed)
    spec = get_spec(f"retouch-compact-x{scale}")
    net = build_sr_network(spec).to(device)
    if init is not None:
        start = torch.load(init, map_location="cpu", weights_only=True)
        net.load_state_dict(start.get("params_ema", start))
    ema = build_sr_network(spec).to(device)
    ema.load_state_dict(net.state_dict())
    for p in ema.parameters():
        p.requires_grad_(False)
    params = sum(p.numel() for p in net.parameters())

    sampler = PatchSampler(
        training_sources(seed),
        scale=scale,
        hr_patch=HR_PATCH[scale],
        seed=seed,
        degradation=DEGRADATION[scale],
    )
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.9, 0.99))
    # Cosine decay to 1% of the start rate: stable late steps without a schedule to tune.
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(i, iters) / iters))
    )
    loss_fn = nn.L1Loss()
    history: list[dict[str, float]] = []
    running = 0.0
    t0 = time.perf_counter()
    net.train()
    for step in range(iters):
        lr_np, hr_np = sampler.batch(step, batch)
        if target_sharpen:
            hr_np = sharpen_targets(hr_np, target_sharpen, sharpen_sigma)
        x = torch.from_numpy(lr_np).to(device)
        y = torch.from_numpy(hr_np).to(device)
        pred = net(x)
        loss = loss_fn(pred, y)
        if grad_weight:
            loss = loss + grad_weight * _grad_l1(pred, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        # Warm the average up faster at the start (the usual bias correction for EMA).
        decay = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pn in zip(ema.parameters(), net.parameters(), strict=True):
                pe.mul_(decay).add_(pn.detach(), alpha=1 - decay)
        running += loss.item()
        if (step + 1) % log_every == 0:
            entry = {
                "step": step + 1,
                "loss": running / log_every,
                "lr": sched.get_last_lr()[0],
                "seconds": time.perf_counter() - t0,
            }
            history.append(entry)
            running = 0.0
            print(
                f"x{scale} step {entry['step']:5d}  loss {entry['loss']:.5f}  "
                f"lr {entry['lr']:.2e}  {entry['seconds']:.0f}s",
                flush=True,
            )
        if save_every and (step + 1) % save_every == 0 and step + 1 < iters:
            _save(ema, out.with_suffix(f".step{step + 1}.pth"))
    seconds = time.perf_counter() - t0
    _save(ema, out)
    log: dict[str, object] = {
        "model": spec.name,
        "scale": scale,
        "arch": spec.arch,
        "arch_kwargs": dict(spec.arch_kwargs),
        "parameters": params,
        "iters": iters,
        "batch": batch,
        "hr_patch": HR_PATCH[scale],
        "lr": lr,
        "grad_weight": grad_weight,
        "init": str(init) if init is not None else None,
        "target_sharpen": target_sharpen,
        "sharpen_sigma": sharpen_sigma,
        "seed": seed,
        "threads": threads,
        "device": device,
        "train_seconds": round(seconds, 1),
        "train_photos": [p.name for p in TRAIN],
        "held_out_photos": [p.name for p in HELD_OUT],
        "degradation": DEGRADATION[scale].__dict__,
        "history": history,
        "torch": torch.__version__,
    }
    out.with_suffix(".json").write_text(json.dumps(log, indent=2) + "\n")
    print(f"wrote {out} ({out.stat().st_size} bytes, {params} parameters) in {seconds:.0f}s")
    return log


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, choices=(2, 4), required=True)
    parser.add_argument("--out", type=Path, required=True, help="weight file to write (.pth)")
    parser.add_argument("--iters", type=int, default=None, help="default: 1400")
    parser.add_argument("--batch", type=int, default=None, help="default: 16 (x2), 24 (x4)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--save-every", type=int, default=0, help="also write <out>.stepN.pth every N steps"
    )
    parser.add_argument("--grad-weight", type=float, default=None, help="default: 1.0 (x2), 0 (x4)")
    parser.add_argument(
        "--init", type=Path, default=None, help="start from this weight file (fine-tuning)"
    )
    parser.add_argument(
        "--target-sharpen",
        type=float,
        default=0.0,
        help="unsharp-mask amount for the HR targets (0 = off, < 0 softens)",
    )
    parser.add_argument("--sharpen-sigma", type=float, default=1.0, help="unsharp-mask sigma")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 = reproducible)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args(argv)
    train(
        scale=args.scale,
        out=args.out,
        iters=args.iters or DEFAULT_ITERS[args.scale],
        batch=args.batch or DEFAULT_BATCH[args.scale],
        lr=args.lr,
        seed=args.seed,
        threads=args.threads,
        device=args.device,
        save_every=args.save_every,
        grad_weight=GRAD_WEIGHT[args.scale] if args.grad_weight is None else args.grad_weight,
        init=args.init,
        target_sharpen=args.target_sharpen,
        sharpen_sigma=args.sharpen_sigma,
    )


if __name__ == "__main__":
    main()
