"""ControlNet for Stable Diffusion img2img: keep the picture's composition while re-drawing.

A ControlNet is a local path given by the user, never fetched: a diffusers folder
(``config.json`` naming ``ControlNetModel``, with ``diffusion_pytorch_model.safetensors``) or
a single ``.safetensors`` file, in the original layout (``control_model.`` keys with the
``input_hint_block``, the prefix sometimes stripped) or diffusers' (``controlnet_cond_embedding``).

- :func:`check_controlnet` validates the path from its JSON config or safetensors header only
  (no weights read), and that it fits a checkpoint (SDXL or not, cross-attention width).
- :func:`controlnet_id` is its content identity for result keys.
- :func:`with_controlnet` turns a loaded img2img pipeline into diffusers' ControlNet img2img
  pipeline over the same components (used by :func:`.pipeline.load_pipeline`).
- :func:`canny_edges` is the condition picture of canny ControlNets: OpenCV's Canny edges.

Only canny conditioning is computed here: lineart, depth, pose... need annotator networks of
their own. Like the rest of the package, torch and diffusers are imported only when loading.
"""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path
from typing import Any

import numpy as np

from retouch.lib.errors import ModelError, ModelNotAvailableError
from retouch.lib.models.diffusion.checkpoint import (
    UNET_PREFIX,
    _check_safetensors_readable,
    _first_line,
    _inspect,
    _read_json,
    _weight_files,
)

CONTROLNET_CLASS = "ControlNetModel"
_HINT_KEY = "input_hint_block."
"""Original-format ControlNet files: the condition encoder (``control_model.`` prefix or none)."""
_DIFFUSERS_HINT = "controlnet_cond_embedding."
"""The same encoder in diffusers' key names (a diffusers ControlNet saved as one file)."""
_XL_KEYS = ("add_embedding.linear_1.weight", "label_emb.0.0.weight")
"""SDXL's size/crop conditioning, in diffusers' and the original key names."""
_WIDTH_KEY = "attn2.to_k.weight"
"""Cross-attention projections: their input width is the text encoder's (768 SD 1.x, 1024
SD 2.x, 2048 SDXL)."""
_SETTINGS = ("requires_safety_checker", "requires_aesthetics_score", "force_zeros_for_empty_prompt")
"""Pipeline settings kept from the img2img pipeline (SDXL's and the safety checker's)."""
_FAMILIES = {768: "Stable Diffusion 1.x", 1024: "Stable Diffusion 2.x", 2048: "SDXL"}

_WHAT = (
    "give a local ControlNet model: a diffusers folder (config.json naming ControlNetModel "
    "and diffusion_pytorch_model.safetensors) or a single .safetensors file"
)


# --------------------------------------------------------------------------- checking


def _existing(path: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelNotAvailableError(f"ControlNet model {p} does not exist: {_WHAT}.")
    return p


def _file_width(path: Path, keys: list[str], prefix: str = "") -> int | None:
    """Cross-attention width of a .safetensors file, from one key's shape (header only)."""
    from safetensors import safe_open

    key = next((k for k in keys if k.startswith(prefix) and k.endswith(_WIDTH_KEY)), None)
    if key is None:
        return None
    with safe_open(str(path), framework="numpy") as fh:
        shape = fh.get_slice(key).get_shape()
    return int(shape[1]) if len(shape) == 2 else None


def _check_folder(folder: Path) -> tuple[bool, int | None]:
    config_path = folder / "config.json"
    if not config_path.is_file():
        kind = (
            "a Stable Diffusion pipeline folder (model_index.json)"
            if (folder / "model_index.json").is_file()
            else "a folder without config.json"
        )
        raise ModelError(f"{folder} is {kind}, not a ControlNet model: {_WHAT}.")
    config = _read_json(config_path, "it describes the ControlNet")
    cls = config.get("_class_name")
    if cls != CONTROLNET_CLASS:
        raise ModelError(
            f"{config_path} names the model {cls!r}, not a {CONTROLNET_CLASS} (a UNet or VAE "
            f"folder of a checkpoint is not a ControlNet; ControlNet-XS and union models are "
            f"not supported): {_WHAT}."
        )
    weights = [p for p in _weight_files(folder) if not p.name.endswith(".index.json")]
    if not weights:
        raise ModelError(
            f"{folder} holds no weight file (diffusion_pytorch_model.safetensors): the "
            "ControlNet folder is incomplete. Copy the whole folder again."
        )
    for weight in weights:
        if weight.suffix == ".safetensors":
            _check_safetensors_readable(weight)
    width = config.get("cross_attention_dim")
    return config.get("addition_embed_type") == "text_time", (
        width if isinstance(width, int) else None
    )


def _check_file(path: Path) -> tuple[bool, int | None]:
    if path.suffix.lower() != ".safetensors":
        raise ModelError(
            f"{path} is not a ControlNet file this can read: a single file must be "
            f".safetensors (convert a .pth with diffusers, or use the .safetensors release); "
            f"{_WHAT}."
        )
    keys = _check_safetensors_readable(path)
    if not any(_HINT_KEY in k or k.startswith(_DIFFUSERS_HINT) for k in keys):
        what = (
            "a Stable Diffusion checkpoint"
            if any(k.startswith(UNET_PREFIX) for k in keys)
            else "another kind of network"
        )
        raise ModelError(
            f"{path} is not a ControlNet: none of its {len(keys)} keys is a condition encoder "
            f"weight (control_model.{_HINT_KEY}* or {_DIFFUSERS_HINT}*); it looks like {what}. "
            f"{_WHAT[0].upper()}{_WHAT[1:]}."
        )
    xl = any(k.removeprefix("control_model.") in _XL_KEYS for k in keys)
    return xl, _file_width(path, keys)


def _checkpoint_family(checkpoint: str) -> tuple[Path, bool, int | None]:
    """(path, is SDXL, cross-attention width or None) of a checked checkpoint."""
    p, kind, xl = _inspect(checkpoint)
    if kind == "folder":
        width = _read_json(p / "unet" / "config.json", "the unet's configuration").get(
            "cross_attention_dim"
        )
        return p, xl, width if isinstance(width, int) else None
    if p.suffix.lower() != ".safetensors":
        return p, xl, None  # a .ckpt: no shapes without reading the tensors
    keys = _check_safetensors_readable(p)
    return p, xl, _file_width(p, keys, UNET_PREFIX)


def _family(xl: bool, width: int | None) -> str:
    if xl:
        return "SDXL" + (f" with {width}-wide cross-attention" if width not in (None, 2048) else "")
    if width is None:
        return "Stable Diffusion 1.x/2.x"
    return _FAMILIES.get(width, f"a Stable Diffusion model with {width}-wide cross-attention")


def check_controlnet(path: str, *, checkpoint: str | None = None) -> str:
    """Validate a local ControlNet without loading its weights; returns ``"folder"`` (a
    diffusers folder) or ``"file"`` (a single ``.safetensors``).

    Reads only config.json or the safetensors header. With ``checkpoint`` (a path
    :func:`.check_checkpoint` accepts) it also checks that the ControlNet was made for that
    checkpoint's model: SDXL or not, and the same cross-attention width (SD 1.x 768, SD 2.x
    1024) where both say it. Raises ModelNotAvailableError when ``path`` does not exist,
    ModelError otherwise (not a ControlNet, incomplete, unreadable, for another model); every
    message names the path and what to do.
    """
    p = _existing(path)
    kind = "folder" if p.is_dir() else "file"
    xl, width = _check_folder(p) if kind == "folder" else _check_file(p)
    if checkpoint is not None:
        ck, ck_xl, ck_width = _checkpoint_family(checkpoint)
        if xl != ck_xl or (width and ck_width and width != ck_width):
            raise ModelError(
                f"{p} is a ControlNet for {_family(xl, width)} but the checkpoint {ck} is "
                f"{_family(ck_xl, ck_width)}: give a ControlNet made for the checkpoint's "
                "model (SD 1.5 ControlNets for SD 1.x checkpoints, SDXL ones for SDXL)."
            )
    return kind


def _variant(folder: Path) -> str | None:
    names = [p.name for p in _weight_files(folder) if p.suffix in (".safetensors", ".bin")]
    return "fp16" if names and all(".fp16." in n for n in names) else None


def controlnet_id(path: str) -> str:
    """Content identity of a ControlNet, for result keys: a hex sha256.

    A single file: the sha256 of the file. A folder: sha256 over the name and sha256 of
    config.json and of the weight files a load reads (the .safetensors ones when there are
    any). File hashes are cached per process by path, size and mtime.
    """
    from retouch.lib.models.fetch import file_sha256

    p = _existing(path)
    if not p.is_dir():
        return file_sha256(p)
    weights = _weight_files(p)
    if any(w.suffix == ".safetensors" for w in weights):
        weights = [w for w in weights if w.suffix == ".safetensors"]
    digest = hashlib.sha256(b"retouch-controlnet-folder\n")
    for file in [p / "config.json", *weights]:
        if file.is_file():
            digest.update(f"{file.name}\0{file_sha256(file)}\n".encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------- loading


def _load_controlnet(diffusers: Any, path: str, torch_dtype: Any) -> Any:
    """diffusers' ControlNetModel from ``path`` (checked), offline; raises ModelError."""
    from retouch.lib.models.diffusion.pipeline import _is_hub_miss, _offline_quiet_load

    p = _existing(path)
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "local_files_only": True}
    cls = diffusers.ControlNetModel
    try:
        with _offline_quiet_load():
            if p.is_dir():
                variant = _variant(p)
                if variant:
                    kwargs["variant"] = variant
                return cls.from_pretrained(str(p), **kwargs)
            return cls.from_single_file(str(p), **kwargs)
    except Exception as exc:  # noqa: BLE001 - diffusers/torch raise many types
        if not p.is_dir() and _is_hub_miss(exc):
            raise ModelError(
                f"{p}: diffusers cannot build a ControlNet from this single file offline: it "
                "needs the diffusers config of the file's model type, which it would download "
                "from the Hugging Face hub, and retouch never downloads it. Convert the file "
                'once to a diffusers folder on a machine with network: python -c "from '
                f"diffusers import ControlNetModel; ControlNetModel.from_single_file('{p}')"
                f".save_pretrained('{p.with_suffix('')}')\", then give that folder instead."
            ) from None
        raise ModelError(f"could not load the ControlNet {p}: {_first_line(exc)}") from None


def with_controlnet(pipe: Any, path: str, *, xl: bool, device: str) -> Any:
    """diffusers' ControlNet img2img pipeline (SDXL's when ``xl``) over the components and
    settings of the img2img pipeline ``pipe``, with the ControlNet at ``path`` loaded in the
    pipeline's dtype, on ``device``. Raises ModelError."""
    from retouch.lib.models.diffusion.pipeline import _import_diffusers

    diffusers = _import_diffusers()
    controlnet = _load_controlnet(diffusers, path, pipe.unet.dtype)
    cls = (
        diffusers.StableDiffusionXLControlNetImg2ImgPipeline
        if xl
        else diffusers.StableDiffusionControlNetImg2ImgPipeline
    )
    accepted = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in pipe.components.items() if k in accepted}
    for name in _SETTINGS:
        if name in accepted and name in pipe.config:
            kwargs[name] = pipe.config[name]
    if "add_watermarker" in accepted:
        kwargs["add_watermarker"] = False
    try:
        return cls(**kwargs, controlnet=controlnet).to(device)
    except Exception as exc:  # noqa: BLE001 - a ControlNet that does not fit the pipeline
        raise ModelError(
            f"could not use the ControlNet {path} with this checkpoint: {_first_line(exc)}"
        ) from None


# --------------------------------------------------------------------------- conditions


def canny_edges(rgb: np.ndarray, low: int = 100, high: int = 200) -> np.ndarray:
    """The condition picture of canny ControlNets: HxWx3 float32, white (1.0) edges on black.

    ``rgb`` is HxWx3 RGB in 0..1 (values outside are clipped); the edges are OpenCV's Canny
    (hysteresis thresholds ``low`` and ``high`` on the gradient) of its 8-bit version, all
    three channels at once (the strongest channel's gradient), as the canny annotator that
    ControlNet canny models were trained with computes them.
    """
    import cv2

    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"canny_edges takes an HxWx3 RGB array, not one of shape {arr.shape}")
    if not 0 <= low <= high:
        raise ValueError(f"canny thresholds must be 0 <= low <= high, not {low} and {high}")
    u8 = np.rint(np.clip(arr.astype(np.float32, copy=False), 0.0, 1.0) * 255).astype(np.uint8)
    edges = cv2.Canny(np.ascontiguousarray(u8), float(low), float(high))
    return np.repeat((edges > 0).astype(np.float32)[:, :, None], 3, axis=2)
