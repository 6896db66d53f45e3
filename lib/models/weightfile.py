"""Reading a weight file as tensors only, whatever its format.

- ``.safetensors``: read with safetensors (no code at all).
- A TorchScript archive (the community ``big-lama.pt``): its tensors are read with
  ``torch.jit.load(...).state_dict()``. TorchScript is torch's own restricted language, not
  Python: loading it cannot import modules or call Python functions.
- Any other ``torch.save`` file (``.pth``, ``.ckpt``, ``.bin``): ``torch.load`` with
  ``weights_only=True``. Training checkpoints (PyTorch Lightning) also hold their
  configuration as objects of their libraries (omegaconf, lightning); those are read as inert
  placeholders that run nothing and are dropped. A pickle that names anything else (``os``,
  ``subprocess``, ``builtins.eval``...) is refused with :class:`UnsafeWeightsError`, before
  any of it runs.

The state dict is then unwrapped from the containers training code saves it in
(``params_ema``, ``params``, ``state_dict``, ``model``...).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from retouch.lib.errors import ModelError

# Modules whose objects a training checkpoint may hold besides tensors (configuration,
# counters, loop state). They are read as placeholders: never imported, never called.
INERT_MODULES = (
    "omegaconf",
    "pytorch_lightning",
    "lightning",
    "lightning_fabric",
    "pathlib",
    "argparse",
    "typing",
    "numpy",
)


class UnsafeWeightsError(ModelError):
    """A weight file whose pickle would run code to load."""


class Inert:
    """A placeholder for an object of an :data:`INERT_MODULES` class: takes any arguments and
    state, keeps none of it, does nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass


class _InertPickle:
    """A ``pickle_module`` for ``torch.load``: torch's own rebuild functions and the standard
    containers are real, :data:`INERT_MODULES` classes are placeholders, anything else is
    refused (``UnpicklingError`` naming it)."""

    __name__ = "retouch_inert_pickle"
    load = staticmethod(pickle.load)

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if module in ("__builtin__", "copy_reg"):  # protocol-2 names of the same modules
                module = {"__builtin__": "builtins", "copy_reg": "copyreg"}[module]
            root = module.split(".")[0]
            if root == "torch" or (module, name) in _SAFE_GLOBALS:
                return super().find_class(module, name)
            if root in INERT_MODULES:
                return type(name, (Inert,), {})
            raise pickle.UnpicklingError(f"refused global {module}.{name}")


_SAFE_GLOBALS = {
    ("collections", "OrderedDict"),
    ("collections", "defaultdict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("builtins", "slice"),
    ("builtins", "complex"),
    ("_codecs", "encode"),
}


def is_torchscript(path: str | os.PathLike[str]) -> bool:
    """A TorchScript archive (a zip with a ``code/`` folder and ``constants.pkl``)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("/constants.pkl") for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _torch_load(path: Path) -> Any:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as first:
        try:
            return torch.load(
                path,
                map_location="cpu",
                weights_only=False,
                pickle_module=_InertPickle,  # type: ignore[arg-type]
            )
        except pickle.UnpicklingError as exc:
            what = str(exc).removeprefix("refused global ").strip() or str(first)
            raise UnsafeWeightsError(
                f"{path}: refused: its pickle calls {what} to load, which could run any code. "
                "retouch reads weights only as tensors: use a .safetensors copy of the model, "
                "or a file saved as a plain state dict"
            ) from None


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The tensors of the weight file at ``path``, as a flat ``{key: tensor}`` dict.

    Raises:
        ModelError: the file is missing, empty, truncated or corrupted, or holds no tensors.
        UnsafeWeightsError: the file's pickle would run code.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"{p}: no such file")
    if p.stat().st_size == 0:
        raise ModelError(f"{p}: the file is empty")
    try:
        if p.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            loaded: Any = load_file(str(p))
        elif is_torchscript(p):
            import torch

            loaded = dict(torch.jit.load(str(p), map_location="cpu").state_dict())
        else:
            loaded = _torch_load(p)
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - every reader reports corruption its own way
        raise ModelError(
            f"{p}: not a readable weight file (truncated or corrupted?): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None
    state = unwrap(loaded)
    if not state:
        raise ModelError(f"{p}: holds no weights (no tensors found)")
    return state


_CONTAINERS = ("params_ema", "params", "state_dict", "model", "net_g", "generator", "module")


def unwrap(loaded: Any) -> dict[str, Any]:
    """The flat tensor dict inside what training code saved (the EMA weights first)."""
    import torch

    current = loaded
    for _ in range(4):
        if not isinstance(current, Mapping):
            return {}
        tensors = {k: v for k, v in current.items() if isinstance(v, torch.Tensor)}
        if tensors and len(tensors) * 2 >= len(current):
            return {str(k): v for k, v in tensors.items()}
        inner = next((current[k] for k in _CONTAINERS if isinstance(current.get(k), Mapping)), None)
        if inner is None:
            return {str(k): v for k, v in tensors.items()}
        current = inner
    return {}


def save_safetensors(state: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Write ``state`` as safetensors (contiguous CPU copies; shared storage is split)."""
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous().clone() for k, v in state.items()}, str(path))
