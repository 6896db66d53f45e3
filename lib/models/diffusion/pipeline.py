"""Stable Diffusion img2img through diffusers: load a checkpoint, re-draw one image.

- :func:`load_pipeline` builds diffusers' img2img pipeline on a device, with the Hugging
  Face hub switched off for the duration of the load: nothing is ever downloaded.
- :func:`img2img` re-draws one image, deterministically for a given seed (with a ControlNet
  pipeline, guided by a condition picture such as :func:`.control.canny_edges`).

The packages diffusers and transformers are an optional extra; they (and torch) are imported
only inside the functions that need them, so importing this module costs nothing.

Arrays: images are HxWx3 float32 RGB (channel order R, G, B) in 0..1, rows top to bottom.
"""

from __future__ import annotations

import hashlib
import math
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from retouch.lib.errors import ModelError, UnknownNameError
from retouch.lib.models.diffusion.checkpoint import (
    INSTALL_HINT,
    _component,
    _first_line,
    _folder_pipeline,
    _inspect,
    _missing_packages,
    _weight_files,
    require_diffusers,
)

SCHEDULERS = ("default", "ddim", "euler", "euler_a", "dpmpp")
"""Sampler names for :func:`img2img`: ``default`` keeps the checkpoint's own scheduler."""

_SCHEDULER_CLASSES = {
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "dpmpp": "DPMSolverMultistepScheduler",
}

MULTIPLE = 8
"""Image sides go through the pipeline as multiples of this (the VAE's scale factor)."""

_load_lock = threading.Lock()
_pipe_locks: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_pipe_locks_guard = threading.Lock()

# --------------------------------------------------------------------------- loading


@contextmanager
def _offline_quiet_load() -> Iterator[None]:
    """While a load runs (one at a time): the Hugging Face hub client is offline, since
    diffusers' single-file loader retries a config download when ``local_files_only``
    finds nothing cached, and offline mode makes that attempt fail instead of reaching the
    network; and diffusers' and transformers' loading progress bars are off."""
    import huggingface_hub.constants as hub
    import huggingface_hub.utils as hub_utils
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    with _load_lock:
        saved_offline = hub.HF_HUB_OFFLINE
        saved_bars = (
            diffusers_logging.is_progress_bar_enabled(),
            transformers_logging.is_progress_bar_enabled(),
            hub_utils.are_progress_bars_disabled(),
        )
        hub.HF_HUB_OFFLINE = True
        diffusers_logging.disable_progress_bar()
        if saved_bars[1]:
            transformers_logging.disable_progress_bar()
        try:
            yield
        finally:
            hub.HF_HUB_OFFLINE = saved_offline
            if saved_bars[0]:
                diffusers_logging.enable_progress_bar()
            if saved_bars[1]:
                transformers_logging.enable_progress_bar()
                if saved_bars[2]:  # transformers turned the hub's bars back on with its own
                    hub_utils.disable_progress_bars()


def _is_hub_miss(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is the hub client refusing to download."""
    names = {"LocalEntryNotFoundError", "OfflineModeIsEnabled", "EntryNotFoundError"}
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__name__ in names:
            return True
        text = str(current).lower()
        if "offline" in text or "local_files_only" in text or "huggingface.co" in text:
            return True
        current = current.__cause__ or current.__context__
    return False


def _variant(folder: Path) -> str | None:
    """``"fp16"`` for a folder whose UNet holds only fp16-variant weight files
    (``diffusion_pytorch_model.fp16.safetensors``), which diffusers loads only when asked."""
    unet = folder / "unet"
    if not unet.is_dir():
        return None
    names = [p.name for p in _weight_files(unet)]
    plain = [n for n in names if ".fp16." not in n]
    return "fp16" if names and not plain else None


def _import_diffusers() -> Any:
    require_diffusers()
    try:
        import diffusers
        import transformers  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - a broken or incompatible install
        raise ModelError(
            f"diffusers/transformers are installed but do not import ({_first_line(exc)}): "
            f"reinstall them with {INSTALL_HINT}."
        ) from None
    return diffusers


def load_pipeline(path: str, *, device: str, dtype: str, controlnet: str | None = None) -> Any:
    """diffusers' img2img pipeline for the checkpoint at ``path``, ready on ``device``.

    ``StableDiffusionXLImg2ImgPipeline`` for SDXL (from model_index.json's ``_class_name``,
    or for a single file from its ``conditioner.embedders.`` keys), else
    ``StableDiffusionImg2ImgPipeline``. Weights are float16 when ``dtype == "fp16"`` and
    ``device`` is CUDA, else float32. Loaded with ``local_files_only=True`` and the hub
    offline: nothing is ever fetched. No safety checker (and no SDXL watermark); the
    progress bar is off.

    A single file needs diffusers' configs for its model type (they come from the Hugging
    Face cache when it holds them); when it does not, ModelError says how to convert the file
    to a diffusers folder. Any failure raises ModelError naming ``path`` and the reason.

    ``controlnet``: a local ControlNet (diffusers folder or single ``.safetensors``, see
    :func:`.control.check_controlnet`, which runs first): the pipeline is then diffusers'
    ``StableDiffusionControlNetImg2ImgPipeline`` (for SDXL its XL counterpart) over the same
    components, and :func:`img2img` needs a ``control`` picture.
    """
    from retouch.lib.models.diffusion import control

    p, kind, xl = _inspect(path)
    if controlnet:
        control.check_controlnet(controlnet, checkpoint=path)
    diffusers = _import_diffusers()
    import torch

    torch_dtype = torch.float16 if dtype == "fp16" and device.startswith("cuda") else torch.float32
    cls = (
        diffusers.StableDiffusionXLImg2ImgPipeline
        if xl
        else diffusers.StableDiffusionImg2ImgPipeline
    )
    kwargs: dict[str, Any] = {
        "dtype": torch_dtype,  # diffusers 0.42 deprecates torch_dtype for dtype
        "local_files_only": True,
        "feature_extractor": None,
    }
    if xl:
        kwargs["add_watermarker"] = False
    else:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    try:
        with _offline_quiet_load():
            if kind == "folder":
                variant = _variant(p)
                if variant:
                    kwargs["variant"] = variant
                pipe = cls.from_pretrained(str(p), **kwargs)
            else:
                pipe = cls.from_single_file(str(p), **kwargs)
        pipe = pipe.to(device)
    except Exception as exc:  # noqa: BLE001 - diffusers/transformers/torch raise many types
        if kind == "file" and _is_hub_miss(exc):
            cls_name = cls.__name__
            raise ModelError(
                f"{p}: diffusers cannot build a pipeline from this single file offline: it "
                "needs the diffusers config files (and tokenizer) of the file's model type, "
                "which it would download from the Hugging Face hub, and retouch never "
                "downloads them. Convert the file once to a diffusers folder on a machine with "
                f'network: python -c "from diffusers import {cls_name}; '
                f"{cls_name}.from_single_file('{p}').save_pretrained('{p.with_suffix('')}')\", "
                "then give that folder instead of the file."
            ) from None
        raise ModelError(
            f"could not load the Stable Diffusion checkpoint {p}: {_first_line(exc)}"
        ) from None
    if controlnet:
        pipe = control.with_controlnet(pipe, controlnet, xl=xl, device=device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# --------------------------------------------------------------------------- running


def token_limit_note(pipe: Any, prompt: str) -> str | None:
    """A one-line note when ``prompt`` is longer than the text encoder reads, else None.

    The count includes the start and end tokens, as the encoder's limit does (77 for CLIP):
    'prompt is N tokens; the text encoder reads the first 77, the rest is ignored'. The
    pipeline truncates the prompt itself; this only says so.
    """
    tokenizer = getattr(pipe, "tokenizer", None) or getattr(pipe, "tokenizer_2", None)
    if tokenizer is None or not prompt:
        return None
    limit = int(getattr(tokenizer, "model_max_length", 0) or 0)
    if limit <= 0 or limit > 100_000:  # unset limits are huge sentinels
        return None
    count = len(tokenizer(prompt, truncation=False, verbose=False)["input_ids"])
    if count <= limit:
        return None
    return (
        f"prompt is {count} tokens; the text encoder reads the first {limit}, the rest is ignored"
    )


def prompt_note(path: str, prompt: str) -> str | None:
    """:func:`token_limit_note` for the checkpoint at ``path`` without loading it: only the
    tokenizer of a diffusers folder is read (``tokenizer/``, or ``tokenizer_2/`` for an
    SDXL refiner), once per process and folder state.

    None when the prompt fits, and also when no tokenizer can be read here (a single-file
    checkpoint: its tokenizer comes from the hub; a path that is not a usable folder; the
    optional packages missing): the note is advice, :func:`check_checkpoint` reports
    errors.
    """
    if not prompt:
        return None
    tokenizer = _folder_tokenizer(path)
    if tokenizer is None:
        return None
    return token_limit_note(_TokenizerHolder(tokenizer), prompt)


class _TokenizerHolder:
    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer


_tokenizers: dict[tuple[str, int], Any] = {}


def _folder_tokenizer(path: str) -> Any:
    folder = Path(path).expanduser()
    try:
        index, _ = _folder_pipeline(folder) if folder.is_dir() else ({}, False)
    except ModelError:
        return None
    name = next((n for n in ("tokenizer", "tokenizer_2") if _component(index, n)), None)
    if name is None or not (folder / name).is_dir() or _missing_packages():
        return None
    sub = folder / name
    key = (str(sub.resolve()), max((p.stat().st_mtime_ns for p in sub.iterdir()), default=0))
    if key in _tokenizers:
        return _tokenizers[key]
    try:
        import transformers

        cls = getattr(transformers, str(index[name][1]), None) or transformers.CLIPTokenizer
        with _offline_quiet_load():
            tokenizer = cls.from_pretrained(str(sub), local_files_only=True)
    except Exception:  # noqa: BLE001 - advice only: no note when the tokenizer will not load
        return None
    _tokenizers[key] = tokenizer
    return tokenizer


def seed_for(pixels_digest: str, params_json: str, seed: int) -> int:
    """A 63-bit seed from the image's content digest, the step's canonical parameters (JSON
    text) and the user's ``seed`` offset (sha256 of the three). The same inputs give the same
    seed; changing any of them gives another."""
    text = f"retouch-diffusion-seed\0{pixels_digest}\0{params_json}\0{int(seed)}"
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") >> 1


def _pipe_lock(pipe: Any) -> threading.Lock:
    with _pipe_locks_guard:
        lock = _pipe_locks.get(pipe)
        if lock is None:
            lock = _pipe_locks[pipe] = threading.Lock()
        return lock


def _fresh_scheduler(original: Any, name: str) -> Any:
    """A new scheduler for one call: the checkpoint's own class (``default``) or the named
    one, from the original scheduler's config (schedulers keep per-run state)."""
    if name == "default":
        return type(original).from_config(original.config)
    import diffusers

    cls = getattr(diffusers, _SCHEDULER_CLASSES[name])
    return cls.from_config(original.config)


def _pad(rgb: np.ndarray, multiple: int) -> np.ndarray:
    """``rgb`` reflected at the bottom and right up to sides that are multiples of
    ``multiple`` (a side of 1 pixel is repeated instead)."""
    h, w = rgb.shape[:2]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not ph and not pw:
        return rgb
    widths = ((0, ph), (0, pw), (0, 0))
    if min(h, w) > 1:
        return np.pad(rgb, widths, mode="reflect")
    return np.pad(rgb, widths, mode="edge")


def _multiple(pipe: Any) -> int:
    factor = int(getattr(pipe, "vae_scale_factor", MULTIPLE) or MULTIPLE)
    return math.lcm(MULTIPLE, factor)


def _control_kwargs(
    pipe: Any, control: np.ndarray | None, scale: float, size: tuple[int, int]
) -> dict[str, Any]:
    """The ControlNet arguments of a pipeline call: the condition picture padded as the
    image is (NCHW, 0..1) and the scale; none for a pipeline without a ControlNet."""
    import torch

    has_controlnet = getattr(pipe, "controlnet", None) is not None
    if control is None:
        if has_controlnet:
            raise ValueError("this pipeline has a ControlNet: give a control picture")
        return {}
    if not has_controlnet:
        raise ValueError("a control picture needs a pipeline loaded with a ControlNet")
    arr = np.asarray(control)
    if arr.shape != (*size, 3):
        raise ValueError(
            f"the control picture must be HxWx3 of the image's size {size}, not {arr.shape}"
        )
    if not 0.0 <= scale <= 2.0:
        raise ValueError(f"control_scale must be in [0, 2], not {scale}")
    padded = _pad(np.clip(arr.astype(np.float32, copy=False), 0.0, 1.0), _multiple(pipe))
    tensor = torch.from_numpy(np.ascontiguousarray(padded.transpose(2, 0, 1)))[None]
    return {"control_image": tensor, "controlnet_conditioning_scale": float(scale)}


def img2img(
    pipe: Any,
    rgb: np.ndarray,
    *,
    prompt: str,
    negative_prompt: str,
    strength: float,
    steps: int,
    guidance: float,
    scheduler: str,
    seed: int,
    control: np.ndarray | None = None,
    control_scale: float = 1.0,
) -> np.ndarray:
    """Re-draw one image with ``pipe`` (from :func:`load_pipeline`).

    ``rgb``: HxWx3 float32 RGB in 0..1 (values outside are clipped). Returns HxWx3 float32
    RGB in 0..1 of the same size: the image is reflected at the bottom and right to sides
    that are multiples of 8 (the VAE's scale factor), re-drawn, and cropped back.

    ``strength`` (0 < s <= 1) is how much is re-drawn: the pipeline runs ``int(steps *
    strength)`` of ``steps`` denoising steps. ``guidance`` is the classifier-free guidance
    scale (<= 1 turns it off; ``negative_prompt`` is then unused). ``scheduler`` is one of
    :data:`SCHEDULERS`; each call uses a fresh scheduler (the checkpoint's own class for
    ``default``), so a swap never leaks into a later call. ``seed`` (used modulo 2**64)
    seeds a torch.Generator on the pipeline's device: the same inputs and seed give the same
    bytes in one process. Calls on one pipeline are serialised.

    ``control`` (a pipeline loaded with a ControlNet needs it, another refuses it): the
    condition picture, HxWx3 float32 RGB in 0..1 of the image's size (e.g.
    :func:`.control.canny_edges`), padded as the image is; ``control_scale`` weighs the
    ControlNet's guidance (0 = none, 1 = as trained).
    Raises UnknownNameError for an unknown scheduler, ValueError for a wrong array or
    parameter, ModelError when the pipeline fails; an out-of-memory error is raised as
    torch raised it.
    """
    import torch

    if scheduler not in SCHEDULERS:
        raise UnknownNameError("scheduler", scheduler, SCHEDULERS)
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"img2img takes an HxWx3 RGB array, not one of shape {arr.shape}")
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], not {strength}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, not {steps}")
    if int(steps * strength) < 1:
        raise ValueError(
            f"strength {strength} with {steps} steps runs no denoising step: use at least "
            f"{math.ceil(1 / strength)} steps"
        )
    h, w = arr.shape[:2]
    extra = _control_kwargs(pipe, control, control_scale, (h, w))
    padded = _pad(np.clip(arr.astype(np.float32, copy=False), 0.0, 1.0), _multiple(pipe))
    image = torch.from_numpy(np.ascontiguousarray(padded.transpose(2, 0, 1)))[None]
    device = torch.device(pipe.device)
    with _pipe_lock(pipe):
        original = pipe.scheduler
        try:
            pipe.scheduler = _fresh_scheduler(original, scheduler)
            generator = torch.Generator(device=device).manual_seed(int(seed) % 2**64)
            with torch.inference_mode():
                result = pipe(
                    prompt=prompt,
                    negative_prompt=negative_prompt or None,
                    image=image,
                    strength=float(strength),
                    num_inference_steps=int(steps),
                    guidance_scale=float(guidance),
                    generator=generator,
                    output_type="np",
                    **extra,
                )
        except Exception as exc:  # noqa: BLE001 - report the pipeline's failure as ours
            from retouch.lib.models.tiling import is_out_of_memory

            if is_out_of_memory(exc):
                raise  # the caller decides (smaller image, CPU...)
            raise ModelError(
                f"Stable Diffusion img2img failed on a {w}x{h} image: {_first_line(exc)}"
            ) from None
        finally:
            pipe.scheduler = original
    out = np.asarray(result.images[0], dtype=np.float32)[:h, :w]
    return np.ascontiguousarray(np.clip(out, 0.0, 1.0))
