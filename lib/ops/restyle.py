"""restyle: learned re-drawing (转绘) of a photo in another style.

Two methods:

- ``generator`` (default): a feed-forward style generator from the model registry
  (AnimeGANv2: Paprika anime scenes, face-paint portraits...; any imported one). One pass
  per image (or blended tiles of a large one, as the upscalers run), fast enough for a CPU.
- ``diffusion``: Stable Diffusion 1.x/SDXL img2img from a local checkpoint (the optional
  ``retouch[diffusion]`` packages), with a prompt, a strength and a **seed derived from the
  image's content and the step's parameters**, so a rerun gives the same bytes and the
  result key stays content-based; ``seed`` shifts it (regeneration with another seed makes
  another version). The frames of a video share the clip's seed (no flicker from seed
  changes). Slow on a CPU: :meth:`Restyle.notes` says so before a run starts. An optional
  local ControlNet (``controlnet``) keeps the photo's composition: it is conditioned on the
  picture's canny edges (``control``), so a higher strength re-draws the style while the
  outlines stay where they were.

Pixels in and out are HxWx3 BGR uint8/uint16 and keep their dtype and size (the networks
see ``work_side`` pixels on the long side when set, and the result is resized back). Alpha
is kept as it is; a gray input gives a gray result, as the other ops do.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import Field, model_validator

from retouch.lib.errors import OperationError
from retouch.lib.image import Image
from retouch.lib.ops.base import OpContext, Operation, OpParams, RestyleModelName, model_field

Method = Literal["generator", "diffusion"]
Scheduler = Literal["default", "ddim", "euler", "euler_a", "dpmpp"]
Control = Literal["none", "canny"]
_CONTROL_ONLY = ("control_scale", "canny_low", "canny_high")
"""Settings of the ControlNet's condition: refused without a ControlNet."""
_DIFFUSION_ONLY = (
    "checkpoint",
    "prompt",
    "negative_prompt",
    "strength",
    "steps",
    "guidance",
    "scheduler",
    "seed",
    "controlnet",
    "control",
    *_CONTROL_ONLY,
)
# CPU time of one Stable Diffusion 1.x UNet step at 512x512 with guidance (two passes),
# measured with full-size random weights on a 2-core CPU: `python -m bench.diffusion_step`,
# bench/results/2026-12-06-cpu-2c-sd-step.json (8.72 s, median of 3).
CPU_SECONDS_PER_STEP_512 = 8.7
CONTROLNET_STEP_FACTOR = 1.5
"""Estimated (not measured) cost of a step with a ControlNet, relative to one without."""
DIFFUSION_MAX_PIXELS = 2048 * 2048
"""Largest picture diffusion img2img runs whole; a larger one needs ``work_side``."""


class RestyleParams(OpParams):
    method: Method = Field(
        "generator",
        description="generator: a feed-forward style model (AnimeGANv2...); diffusion: "
        "Stable Diffusion img2img from a local checkpoint (needs retouch[diffusion])",
    )
    model: RestyleModelName = model_field(
        "restyle", "animeganv2-paprika", "Style generator from the registry (method=generator)"
    )
    work_side: int = Field(
        0,
        ge=0,
        le=16384,
        description="Long side, in pixels, the network works at (0 = the image's own size); "
        "the result is resized back to the image's size. Style models draw strokes of a "
        "fixed size in pixels, so this sets how coarse the drawing looks",
    )
    tile: int = Field(
        0,
        ge=0,
        le=8192,
        description="generator: tile size (0 = automatic: the whole image when it fits the "
        "memory budget; the generator normalises over what it sees, so whole is best)",
    )
    half: bool | None = Field(
        None, description="fp16 inference; empty = on CUDA only (always fp32 on CPU)"
    )
    checkpoint: str = Field(
        "",
        description="diffusion: local Stable Diffusion 1.x/SDXL checkpoint (.safetensors file "
        "or diffusers folder); empty = the RETOUCH_DIFFUSION_CHECKPOINT setting",
    )
    prompt: str = Field("", max_length=2000, description="diffusion: what the result shows")
    negative_prompt: str = Field(
        "", max_length=2000, description="diffusion: what the result must not show"
    )
    strength: float = Field(
        0.45,
        ge=0.0,
        le=1.0,
        description="diffusion: how far from the photo (0 = unchanged, 1 = ignore it)",
    )
    steps: int = Field(30, ge=1, le=200, description="diffusion: denoising steps")
    guidance: float = Field(7.5, ge=0.0, le=30.0, description="diffusion: prompt guidance scale")
    scheduler: Scheduler = Field("default", description="diffusion: sampler")
    seed: int = Field(
        0,
        ge=0,
        le=2**31 - 1,
        description="diffusion: added to the seed derived from each image's content; change "
        "it for another result (the same value gives the same bytes again)",
    )
    controlnet: str = Field(
        "",
        description="diffusion: local ControlNet model that keeps the photo's composition (a "
        "diffusers folder with config.json and diffusion_pytorch_model.safetensors, or a "
        "single .safetensors file), made for the checkpoint's model (SD 1.5 or SDXL) and for "
        "the condition `control` computes (a canny ControlNet for canny); empty = none",
    )
    control: Control = Field(
        "canny",
        description="diffusion with a controlnet: what the ControlNet follows, computed from "
        "each picture: canny = its edges (OpenCV Canny, no extra model); none = leave the "
        "controlnet unused (plain img2img). lineart/depth/pose need annotator models of their "
        "own, not supported yet",
    )
    control_scale: float = Field(
        1.0,
        ge=0.0,
        le=2.0,
        description="diffusion with a controlnet: how strongly the result follows the "
        "condition (0 = not at all, 1 = as trained, up to 2)",
    )
    canny_low: int = Field(
        100,
        ge=0,
        le=1000,
        description="control=canny: lower hysteresis threshold (gradient of the 8-bit "
        "picture); edges weaker than this are dropped",
    )
    canny_high: int = Field(
        200,
        ge=0,
        le=1000,
        description="control=canny: upper threshold; an edge starts where the gradient is "
        "above it (lower both for more, fainter edges)",
    )

    @model_validator(mode="after")
    def _method_fields(self) -> RestyleParams:
        if self.method == "generator":
            given = [f for f in _DIFFUSION_ONLY if f in self.model_fields_set]
            if given:
                raise ValueError(
                    f"{', '.join(given)} only apply to method=diffusion; remove them or set "
                    "method=diffusion"
                )
        elif "tile" in self.model_fields_set or "model" in self.model_fields_set:
            raise ValueError("model and tile only apply to method=generator")
        elif not self.controlnet:
            given = [f for f in _CONTROL_ONLY if f in self.model_fields_set]
            if self.control != "none" and "control" in self.model_fields_set:
                given.insert(0, "control")
            if given:
                raise ValueError(
                    f"{', '.join(given)} only apply with a ControlNet: set restyle.controlnet="
                    "PATH (a local ControlNet model) or remove them"
                )
        if self.canny_low > self.canny_high:
            raise ValueError(
                f"canny_low ({self.canny_low}) must not be above canny_high ({self.canny_high})"
            )
        return self

    @property
    def uses_controlnet(self) -> bool:
        """Whether the run loads the ControlNet: one is given and control is not none."""
        return self.method == "diffusion" and bool(self.controlnet) and self.control != "none"


def _work_size(h: int, w: int, work_side: int) -> tuple[int, int]:
    if work_side <= 0 or max(h, w) <= work_side:
        return h, w
    f = work_side / max(h, w)
    return max(1, round(h * f)), max(1, round(w * f))


def _resized(pixels: np.ndarray, h: int, w: int) -> np.ndarray:
    if pixels.shape[:2] == (h, w):
        return pixels
    shrink = h < pixels.shape[0]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LANCZOS4
    return cv2.resize(pixels, (w, h), interpolation=interp)


def checkpoint_path(params: RestyleParams) -> str:
    """The diffusion checkpoint ``params`` name, or the machine's default; raises
    OperationError saying how to give one."""
    from retouch.lib.settings import get_settings

    path = params.checkpoint or get_settings().diffusion_checkpoint or ""
    if not path:
        raise OperationError(
            "restyle with method=diffusion needs a Stable Diffusion checkpoint: "
            "--set restyle.checkpoint=PATH (a .safetensors file or a diffusers folder), or "
            "the RETOUCH_DIFFUSION_CHECKPOINT setting"
        )
    return path


class Restyle(Operation):
    id = "restyle"
    version = "1"
    Params = RestyleParams
    redraws = True
    summary = "Learned re-drawing: anime/painting generators (AnimeGANv2) or diffusion img2img"

    def models(self, params: OpParams) -> list[str]:
        assert isinstance(params, RestyleParams)
        return [params.model] if params.method == "generator" else []

    def uses_model(self, params: OpParams) -> bool:
        return True  # a generator from the registry, or a diffusion checkpoint

    def check(self, params: OpParams) -> None:
        """Before a run: the diffusion packages and checkpoint are there (nothing loaded)."""
        assert isinstance(params, RestyleParams)
        if params.method != "diffusion":
            return
        from retouch.lib.models import diffusion

        path = checkpoint_path(params)
        diffusion.require_diffusers()
        diffusion.check_checkpoint(path)
        if params.uses_controlnet:
            diffusion.check_controlnet(params.controlnet, checkpoint=path)

    def notes(self, params: OpParams, device: str) -> list[str]:
        """What a user should know before the run on ``device`` (a setting: auto, cpu,
        cuda...): diffusion on a CPU is slow (with an estimate), a prompt longer than the
        text encoder reads."""
        assert isinstance(params, RestyleParams)
        if params.method != "diffusion":
            return []
        from retouch.lib.models import diffusion
        from retouch.lib.models.device import device_for

        out = []
        if not device_for(device).startswith("cuda"):
            side = params.work_side or 512
            per_image = CPU_SECONDS_PER_STEP_512 * (side / 512) ** 2 * params.steps
            per_image *= max(params.strength, 1 / params.steps)
            with_cn = ""
            if params.uses_controlnet:
                # Not measured: a ControlNet runs a copy of the UNet's encoder and middle
                # block, about half the UNet's work, at every step.
                per_image *= CONTROLNET_STEP_FACTOR
                with_cn = ", about half as much again for the ControlNet"
            out.append(
                "diffusion img2img on a CPU is slow: about "
                f"{per_image / 60:.0f} min per {side}px image at {params.steps} steps and "
                f"strength {params.strength} (measured {CPU_SECONDS_PER_STEP_512:.0f} s per "
                f"512px step of a Stable Diffusion 1.x UNet on 2 cores{with_cn}); a CUDA GPU "
                "takes seconds"
            )
        long = diffusion.prompt_note(checkpoint_path(params), params.prompt)
        if long:
            out.append(long)
        return out

    def key_inputs(self, params: OpParams, ctx: OpContext) -> Any:
        assert isinstance(params, RestyleParams)
        if params.method != "diffusion":
            return None
        from retouch.lib.models import diffusion

        inputs = {"checkpoint": diffusion.checkpoint_id(checkpoint_path(params))}
        if params.uses_controlnet:
            inputs["controlnet"] = diffusion.controlnet_id(params.controlnet)
        return inputs

    def __call__(self, image: Image, params: OpParams, ctx: OpContext) -> Image:
        assert isinstance(params, RestyleParams)
        h, w = image.height, image.width
        wh, ww = _work_size(h, w, params.work_side)
        src = _resized(image.pixels, wh, ww)
        if params.method == "generator":
            out = self._generator(src, params, ctx)
        else:
            out = self._diffusion(src, params, ctx)
        out = _resized(out, h, w)
        if image.is_gray:
            from retouch.lib.ops.upscale import gray_like

            out = gray_like(out)
        return image.with_pixels(np.ascontiguousarray(out), image.alpha)

    @staticmethod
    def _generator(pixels: np.ndarray, params: RestyleParams, ctx: OpContext) -> np.ndarray:
        # The generators are 0..1 RGB -> 0..1 RGB networks at scale 1: the upscalers' tiled
        # runner drives them (padding to their multiple, blended tiles, out-of-memory retry).
        from retouch.lib.ops.upscale import upscale_pixels

        return upscale_pixels(
            pixels, ctx, model=params.model, tile=params.tile, half=params.half, pre_pad=0
        )

    @staticmethod
    def _diffusion(pixels: np.ndarray, params: RestyleParams, ctx: OpContext) -> np.ndarray:
        from retouch.lib.models import diffusion
        from retouch.lib.models.device import device_for, use_half
        from retouch.lib.models.pool import default_pool

        h, w = pixels.shape[:2]
        if h * w > DIFFUSION_MAX_PIXELS:
            raise OperationError(
                f"{w}x{h} is larger than diffusion img2img runs at once "
                f"({DIFFUSION_MAX_PIXELS // 1_000_000} MP); set restyle.work_side (e.g. 1024: "
                "the model draws at that size and the result is resized back)"
            )
        path = checkpoint_path(params)
        device = device_for(ctx.device)
        dtype = "fp16" if device.startswith("cuda") and use_half(device, params.half) else "fp32"
        controlnet = params.controlnet if params.uses_controlnet else None
        cn_id = diffusion.controlnet_id(controlnet) if controlnet else ""
        key = ("diffusion", diffusion.checkpoint_id(path), cn_id, device, dtype)
        top = 65535.0 if pixels.dtype == np.uint16 else 255.0
        rgb = np.ascontiguousarray(pixels[:, :, ::-1], dtype=np.float32) / np.float32(top)
        canonical = json.dumps(params.model_dump(mode="json"), sort_keys=True)
        # A video's frames share one seed (the clip's), an image gets its own (its pixels).
        digest = ctx.clip_id or hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()
        seed = diffusion.seed_for(digest, canonical, params.seed)
        control = (
            diffusion.canny_edges(rgb, params.canny_low, params.canny_high) if controlnet else None
        )
        pool = ctx.pool if ctx.pool is not None else default_pool()
        with pool.use(
            key,
            lambda: diffusion.load_pipeline(
                path, device=device, dtype=dtype, controlnet=controlnet
            ),
        ) as pipe:
            out = diffusion.img2img(
                pipe,
                rgb,
                prompt=params.prompt,
                negative_prompt=params.negative_prompt,
                strength=params.strength,
                steps=params.steps,
                guidance=params.guidance,
                scheduler=params.scheduler,
                seed=seed,
                control=control,
                control_scale=params.control_scale,
            )
        ctx.count("model_calls")
        bgr = np.clip(out[:, :, ::-1], 0.0, 1.0) * top
        return np.rint(bgr).astype(pixels.dtype)
