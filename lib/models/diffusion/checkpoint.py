"""Stable Diffusion checkpoints on disk: what a path holds and its content identity.

A checkpoint is given by the user as a local path, never fetched: either a diffusers folder
(``model_index.json`` naming a Stable Diffusion 1.x/2.x or SDXL pipeline, with ``unet/``,
``vae/``, ``text_encoder/``, ``tokenizer/`` and ``scheduler/``) or a single original-format
file (``.safetensors`` or ``.ckpt``, the CompVis / Stability layout with UNet keys under
``model.diffusion_model.``).

- :func:`check_checkpoint` validates the path from file names, JSON configs and key names
  only (no weights read), so a run can refuse a wrong path before it starts.
- :func:`checkpoint_id` is the checkpoint's content identity for result keys.
- :func:`require_diffusers` says how to install the optional packages when they are missing.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

from retouch.lib.errors import ModelError, ModelNotAvailableError
from retouch.lib.models.weightfile import Inert

INSTALL_HINT = "pip install 'retouch[diffusion]'"


SD_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline")
SDXL_PIPELINES = ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline")

UNET_PREFIX = "model.diffusion_model."
"""Key prefix of the UNet in an original-format (single file) checkpoint."""
SDXL_PREFIX = "conditioner.embedders."
"""Key prefix of SDXL's text encoders in a single file (SD 1.x/2.x use ``cond_stage_model.``);
the SDXL base model has ``conditioner.embedders.1.``, the refiner only ``.0.``."""
_VAE_PREFIX = "first_stage_model."
_TEXT_PREFIXES = ("cond_stage_model.", SDXL_PREFIX)
_UNET_INPUT_KEY = UNET_PREFIX + "input_blocks.0.0.weight"
_SINGLE_SUFFIXES = (".safetensors", ".ckpt")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")
LATENT_CHANNELS = 4
"""UNet input channels of a text-to-image / img2img checkpoint (inpainting ones have 9)."""

_WHAT = (
    "give a local Stable Diffusion 1.x/SDXL checkpoint, a .safetensors file or a diffusers "
    "folder (the folder holding model_index.json)"
)


# --------------------------------------------------------------------------- packages


def _missing_packages() -> list[str]:
    missing = []
    for name in ("diffusers", "transformers"):
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def require_diffusers() -> None:
    """Raise ModelError when the optional packages diffusers or transformers are missing.

    Cheap: it looks the packages up without importing them (a broken install is reported
    by :func:`load_pipeline` when it imports them).
    """
    missing = _missing_packages()
    if missing:
        raise ModelError(
            "Stable Diffusion (diffusion img2img) needs the optional packages diffusers and "
            f"transformers: install them with {INSTALL_HINT} "
            f"(missing here: {', '.join(missing)})"
        )


# --------------------------------------------------------------------------- checking


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {line[:300]}" if line else type(exc).__name__


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(
            f"{path} is unreadable or truncated ({_first_line(exc)}): {what}. "
            "Copy the checkpoint folder again."
        ) from None
    if not isinstance(data, dict):
        raise ModelError(f"{path} is not a JSON object: {what}. Copy the checkpoint folder again.")
    return data


def _component(index: dict[str, Any], name: str) -> bool:
    """Whether model_index.json lists component ``name`` (``[library, class]``, not nulls)."""
    entry = index.get(name)
    return isinstance(entry, list | tuple) and len(entry) == 2 and entry[1] is not None


def _required_components(index: dict[str, Any], xl: bool) -> list[str]:
    names = ["unet", "vae", "scheduler"]
    if not xl:
        return names + ["text_encoder", "tokenizer"]
    names += ["text_encoder_2", "tokenizer_2"]
    if _component(index, "text_encoder") or _component(index, "tokenizer"):
        names += ["text_encoder", "tokenizer"]  # SDXL base; the refiner has only the _2 pair
    return names


def _weight_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and (p.suffix in _WEIGHT_SUFFIXES or p.name.endswith(".index.json"))
    )


def _check_safetensors_readable(path: Path) -> list[str]:
    """Key names of a .safetensors file, from its header only (no tensor read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as fh:
            return list(fh.keys())
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise ModelError(
            f"{path} is truncated or unreadable ({_first_line(exc)}): copy or download the "
            "checkpoint again."
        ) from None


def _folder_pipeline(folder: Path) -> tuple[dict[str, Any], bool]:
    """(model_index.json, is SDXL) of a diffusers folder, checked; raises ModelError."""
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise ModelError(
            f"{folder} is a folder without model_index.json, so it is not a diffusers "
            f"pipeline folder: {_WHAT}, for example a .safetensors checkpoint file."
        )
    index = _read_json(index_path, "it describes the diffusers pipeline")
    cls = index.get("_class_name")
    if cls not in SD_PIPELINES + SDXL_PIPELINES:
        raise ModelError(
            f"{index_path} names the pipeline {cls!r}, not a Stable Diffusion 1.x/2.x or SDXL "
            f"pipeline ({', '.join(SD_PIPELINES + SDXL_PIPELINES)}): restyle re-draws with "
            f"Stable Diffusion only; {_WHAT}."
        )
    return index, cls in SDXL_PIPELINES


def _check_folder(folder: Path) -> bool:
    """Check a diffusers folder from its JSON files and safetensors headers; returns
    whether it is SDXL."""
    index, xl = _folder_pipeline(folder)
    for name in _required_components(index, xl):
        sub = folder / name
        if not _component(index, name):
            raise ModelError(
                f"{folder / 'model_index.json'} lists no {name!r} component, which a Stable "
                f"Diffusion pipeline needs: {_WHAT}."
            )
        if not sub.is_dir() or not any(sub.iterdir()):
            raise ModelError(
                f"{sub} is missing or empty: the checkpoint folder {folder} is incomplete. "
                "Copy the whole folder again."
            )
        if name == "scheduler":
            _read_json(sub / "scheduler_config.json", "the scheduler's configuration")
        elif name.startswith(("unet", "vae", "text_encoder")):
            config = _read_json(sub / "config.json", f"the {name}'s configuration")
            weights = _weight_files(sub)
            if not weights:
                raise ModelError(
                    f"{sub} holds no weight file (.safetensors or .bin): the checkpoint folder "
                    f"{folder} is incomplete. Copy the whole folder again."
                )
            for weight in weights:
                if weight.suffix == ".safetensors":
                    _check_safetensors_readable(weight)
                elif weight.name.endswith(".index.json"):
                    _read_json(weight, f"the index of the {name}'s weight shards")
            if name == "unet":
                channels = config.get("in_channels")
                if channels is not None and channels != LATENT_CHANNELS:
                    raise ModelError(_channels_message(folder, int(channels)))
    return xl


def _channels_message(path: Path, channels: int) -> str:
    kind = {9: "an inpainting", 8: "an instruct-pix2pix"}.get(channels, "a non-standard")
    return (
        f"{path} is {kind} Stable Diffusion checkpoint (its UNet takes {channels} input "
        f"channels, img2img needs {LATENT_CHANNELS}): give a regular (text-to-image) "
        "Stable Diffusion 1.x/SDXL checkpoint."
    )


class _KeysUnpickler(pickle.Unpickler):
    """Reads a torch checkpoint's ``data.pkl`` for its dict structure only: dicts are real,
    every class or function it names is :class:`~retouch.lib.models.weightfile.Inert` (nothing is imported or called), and
    tensor storages are never read."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return dict
        return Inert

    def persistent_load(self, pid: Any) -> Any:
        return None


def _ckpt_keys(path: Path) -> list[str]:
    """Key names of a zip-format torch checkpoint (``.ckpt``), from its pickle only."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.rsplit("/", 1)[-1] == "data.pkl"]
            if not pickles:
                raise ModelError(
                    f"{path} is a zip archive but not a torch checkpoint (no data.pkl): {_WHAT}."
                )
            data = archive.read(pickles[0])
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ModelError(
            f"{path} is truncated or unreadable ({_first_line(exc)}; a .ckpt must be a "
            "complete zip-format torch checkpoint): copy or download it again."
        ) from None
    try:
        loaded = _KeysUnpickler(io.BytesIO(data)).load()
    except Exception as exc:  # noqa: BLE001 - any malformed pickle
        raise ModelError(
            f"{path} is truncated or unreadable ({_first_line(exc)}): copy or download it again."
        ) from None
    keys: list[str] = []
    stack = [loaded]
    while stack and len(keys) < 1_000_000:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if isinstance(key, str):
                    keys.append(key)
                if isinstance(value, dict):
                    stack.append(value)
    return keys


def _single_file_keys(path: Path) -> tuple[list[str], int | None]:
    """(key names, UNet input channels or None) of a single-file checkpoint."""
    if path.suffix.lower() == ".safetensors":
        keys = _check_safetensors_readable(path)
        channels: int | None = None
        if _UNET_INPUT_KEY in keys:
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as fh:
                shape = fh.get_slice(_UNET_INPUT_KEY).get_shape()
            channels = int(shape[1]) if len(shape) == 4 else None
        return keys, channels
    return _ckpt_keys(path), None


def _check_single_file(path: Path) -> bool:
    """Check a single-file checkpoint from its key names; returns whether it is SDXL."""
    suffix = path.suffix.lower()
    if suffix not in _SINGLE_SUFFIXES:
        hint = (
            f" (give the folder that holds it: {path.parent})"
            if path.name == "model_index.json"
            else ""
        )
        raise ModelError(
            f"{path} is not a Stable Diffusion checkpoint file: a single file must be "
            f".safetensors or .ckpt{hint}; {_WHAT}."
        )
    keys, channels = _single_file_keys(path)
    if not any(k.startswith(UNET_PREFIX) for k in keys):
        raise ModelError(
            f"{path} is not a Stable Diffusion checkpoint: none of its {len(keys)} keys is a "
            f"UNet weight (key prefix {UNET_PREFIX}); a LoRA, VAE, embedding or upscaler file "
            f"is not enough: {_WHAT}."
        )
    if not any(k.startswith(UNET_PREFIX + "input_blocks.") for k in keys):
        raise ModelError(
            f"{path} holds a diffusion transformer (Flux, SD3 or similar: no UNet "
            f"{UNET_PREFIX}input_blocks), not a Stable Diffusion 1.x/2.x/SDXL UNet: {_WHAT}."
        )
    if not any(k.startswith(_VAE_PREFIX) for k in keys) or not any(
        k.startswith(_TEXT_PREFIXES) for k in keys
    ):
        raise ModelError(
            f"{path} holds a UNet only (no VAE {_VAE_PREFIX}* or text encoder "
            "cond_stage_model.* / conditioner.* keys): give a full checkpoint, with the VAE "
            "and text encoder in it, or a diffusers folder."
        )
    if channels is not None and channels != LATENT_CHANNELS:
        raise ModelError(_channels_message(path, channels))
    return any(k.startswith(SDXL_PREFIX) for k in keys)


def _existing(path: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelNotAvailableError(f"Stable Diffusion checkpoint {p} does not exist: {_WHAT}.")
    return p


def check_checkpoint(path: str) -> str:
    """Validate a local checkpoint without loading its weights; returns ``"folder"`` (a
    diffusers folder) or ``"file"`` (a single ``.safetensors`` / ``.ckpt`` file).

    Reads only JSON configs, safetensors headers and (for ``.ckpt``) the pickle's structure,
    never the tensors. Raises ModelNotAvailableError when ``path`` does not exist,
    ModelError when it is not a Stable Diffusion 1.x/2.x/SDXL checkpoint (a folder without
    model_index.json, another pipeline, a file without UNet keys, an inpainting UNet...) or
    is truncated or unreadable; every message names the file and what to do.
    """
    return _inspect(path)[1]


def _inspect(path: str) -> tuple[Path, str, bool]:
    """(path, "folder" or "file", is SDXL) of a checked checkpoint."""
    p = _existing(path)
    if p.is_dir():
        return p, "folder", _check_folder(p)
    return p, "file", _check_single_file(p)


# --------------------------------------------------------------------------- identity


def _folder_files(folder: Path) -> list[Path]:
    """The files of a diffusers folder a load reads: model_index.json and, for each
    component it uses, the JSON/text configs and the weights (only the .safetensors when a
    component has them, as diffusers prefers them)."""
    index, xl = _folder_pipeline(folder)
    files = [folder / "model_index.json"]
    for name in _required_components(index, xl):
        sub = folder / name
        if not sub.is_dir():
            continue
        entries = sorted(p for p in sub.rglob("*") if p.is_file() and not p.name.startswith("."))
        weights = [p for p in entries if p.suffix in _WEIGHT_SUFFIXES]
        if any(p.suffix == ".safetensors" for p in weights):
            weights = [p for p in weights if p.suffix == ".safetensors"]
        others = [p for p in entries if p.suffix not in _WEIGHT_SUFFIXES]
        files += sorted(others + weights)
    return files


def checkpoint_id(path: str) -> str:
    """Content identity of a checkpoint, for result keys: a hex sha256.

    A single file: the sha256 of the file. A folder: sha256 over the relative path and
    sha256 of each file a load reads (model_index.json, the components' configs and
    weights). File hashes are cached per process by path, size and mtime
    (:func:`retouch.lib.models.fetch.file_sha256`), so only a changed file is hashed again.
    """
    from retouch.lib.models.fetch import file_sha256

    p = _existing(path)
    if not p.is_dir():
        return file_sha256(p)
    digest = hashlib.sha256(b"retouch-diffusers-folder\n")
    for file in _folder_files(p):
        rel = file.relative_to(p).as_posix()
        digest.update(f"{rel}\0{file_sha256(file)}\n".encode())
    return digest.hexdigest()
