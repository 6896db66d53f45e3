"""Which device a run uses, decided without importing torch where it can be.

Importing torch costs about 1.5 s of start-up; a recipe of classic operations never touches
it, so :func:`run_device` only asks torch when the recipe runs a model and the setting leaves
the choice open ("auto") or names CUDA.
"""

from __future__ import annotations

from typing import Any


def device_for(setting: str | None) -> str:
    """Resolve a device setting: "auto" (or None) -> "cuda" when available, else "cpu".

    Raises ModelError when CUDA is asked for explicitly but is not available.
    """
    from retouch.lib.errors import ModelError

    value = (setting or "auto").strip().lower()
    if value == "cpu":
        return value
    if value != "auto" and not value.startswith("cuda"):
        raise ModelError(f"unknown device {setting!r}; use auto, cpu, cuda or cuda:N")
    import torch

    if value == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise ModelError(
            f"device {setting!r} requested but CUDA is not available here; "
            "set RETOUCH_DEVICE=auto or cpu"
        )
    return value


def run_device(recipe: Any, setting: str | None) -> str:
    """The device recorded for a run of ``recipe``: resolved by :func:`device_for` when the
    recipe uses a model, "cpu" when it does not (no step of it runs on a device)."""
    if recipe.uses_models():
        return device_for(setting)
    value = (setting or "auto").strip().lower()
    if value not in ("auto", "cpu") and not value.startswith("cuda"):
        device_for(setting)  # the same error for a misspelt device, model or not
    return "cpu"


def use_half(device: str, half: bool | None) -> bool:
    """fp16 only on CUDA: ``None`` means "yes on CUDA", and True on CPU is ignored (CPU
    kernels for half are slow or missing)."""
    on_cuda = device.startswith("cuda")
    return on_cuda if half is None else (bool(half) and on_cuda)


def wants_channels_last(device: str) -> bool:
    """Channels-last (NHWC) weights and inputs on CPU: the oneDNN convolutions run about
    10-30% faster that way on these networks (measured on RRDBNet x4 and SRVGGNetCompact,
    same output within 4e-6). Not on CUDA, where it has not been measured here."""
    return not device.startswith("cuda")
