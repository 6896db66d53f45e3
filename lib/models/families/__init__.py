"""Model families: one module per kind of network, one registry line per module.

A family says how to recognise its weight files, build and load its networks and what they
need to run (scale, minimum size, multiple-of padding, fp16/bf16, purpose). Everything else
(the ops, the CLI, the web form, the pre-flight weight check) reads the registry of specs
(:mod:`retouch.lib.models.specs`) and this registry of families, never a model or family name.

- Adding a shipped model: one :class:`~retouch.lib.models.specs.ModelSpec` entry in
  ``specs._ALL`` whose ``kind`` names its family.
- Adding a family: one module in this folder defining a :class:`Family` subclass, plus one
  line in :data:`_MODULES` below.

``tests/lib/test_model_families.py`` fails when either needs a second place changed.
Importing this package does not import torch; loading a model does.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from retouch.lib.errors import ModelError, UnknownNameError

if TYPE_CHECKING:
    from retouch.lib.models.specs import ModelSpec

Purpose = Literal["upscale", "face", "inpaint", "restyle", "helper"]
PURPOSES: tuple[Purpose, ...] = ("upscale", "face", "inpaint", "restyle", "helper")
PURPOSE_WORDS: dict[str, str] = {
    "upscale": "upscaling model",
    "face": "face restoration model",
    "inpaint": "inpainting model",
    "restyle": "re-drawing (style) model",
    "helper": "helper model",
}


@dataclass(frozen=True)
class Needs:
    """What a network needs from its input and device.

    Attributes:
        min_size: shortest side the network accepts, in input pixels.
        multiple_of: input sides must be multiples of this (the caller pads and crops back).
        fp16: the network runs correctly in float16.
        bf16: the network runs correctly in bfloat16.
    """

    min_size: int = 1
    multiple_of: int = 1
    fp16: bool = False
    bf16: bool = False


@dataclass
class Loaded:
    """A model ready to run on one device.

    Attributes:
        spec: the registry entry it was built from.
        network: the ``torch.nn.Module`` (eval mode, on ``device``, in ``dtype``).
        device: torch device string.
        dtype: "fp32", "fp16" or "bf16".
        scale: output size / input size.
        needs: what the network needs (padding, minimum size).
        handle: the family's own runner where the op needs more than the network (the
            official ``RealESRGANer``/``GFPGANer``), else None.
    """

    spec: ModelSpec
    network: Any
    device: str
    dtype: str
    scale: int
    needs: Needs
    handle: Any = None

    @property
    def half(self) -> bool:
        return self.dtype == "fp16"


@dataclass(frozen=True)
class Detected:
    """What a family recognised in a weight file (:meth:`Family.detect`).

    Attributes:
        family: the family's name (the spec's ``kind``).
        arch: architecture name (spandrel's id, "LaMa", "RRDBNet"...).
        purpose: what the model is for.
        scale: native upscaling factor (1 for faces and inpainting).
        needs: what the network needs.
        state: the state dict to store (already cleaned: only the network's own keys).
        license: a note on the architecture's licence.
        params: parameter count.
    """

    family: str
    arch: str
    purpose: Purpose
    scale: int
    needs: Needs
    state: Mapping[str, Any] = field(repr=False)
    license: str = ""
    params: int = 0


class Family(ABC):
    """How to detect, load and run one kind of network. Subclasses set ``name`` and
    ``purposes`` and implement :meth:`load`; those that can read community files implement
    :meth:`detect`."""

    name: ClassVar[str]
    purposes: ClassVar[tuple[Purpose, ...]]
    description: ClassVar[str] = ""

    def purpose(self, spec: ModelSpec) -> Purpose:
        """What ``spec`` is for (a family with several purposes reads the spec's own)."""
        if spec.purpose in PURPOSES:
            return spec.purpose  # type: ignore[return-value]  # checked just above
        return self.purposes[0]

    def needs(self, spec: ModelSpec) -> Needs:
        """What the network of ``spec`` needs (before it is loaded)."""
        return Needs()

    def detect(
        self, state: Mapping[str, Any], *, allow_noncommercial: bool = False
    ) -> Detected | None:
        """The architecture of state dict ``state`` when this family can run it, else None."""
        return None

    @abstractmethod
    def load(self, spec: ModelSpec, *, device: str, dtype: str, **options: Any) -> Loaded:
        """The network of ``spec`` on ``device`` in ``dtype``, weights loaded strictly."""

    def preload(self) -> None:
        """Import the libraries :meth:`load` needs (run in a background thread while a flow
        starts, so the import overlaps Prefect's start; nothing is built). By default,
        nothing: the family's libraries are imported when it loads."""
        return None

    def dtype(self, spec: ModelSpec, device: str, half: bool | None) -> str:
        """The precision to run ``spec`` in on ``device``: ``half`` True/False asks for fp16
        or fp32; None picks fp16 (or bf16 where fp16 is not supported) on CUDA, fp32 on CPU."""
        from retouch.lib.models.device import use_half

        needs = self.needs(spec)
        if half is False or device == "cpu" or not device.startswith("cuda"):
            return "fp32"
        if needs.fp16 and use_half(device, half):
            return "fp16"
        if half is None and needs.bf16:
            return "bf16"
        return "fp32"


# One line per family: its name (a spec's ``kind``) and the module that defines it.
_MODULES: dict[str, str] = {
    "realesrgan": "realesrgan",
    "gfpgan": "gfpgan",
    "facexlib": "facexlib",
    "lama": "lama",
    "animegan": "animegan",
    "spandrel": "spandrel",  # last: it detects what the dedicated families do not
}

_LOADED: dict[str, Family] = {}


def family_names() -> list[str]:
    return list(_MODULES)


def get_family(name: str) -> Family:
    """The family registered under ``name`` (a spec's ``kind``)."""
    found = _LOADED.get(name)
    if found is not None:
        return found
    module = _MODULES.get(name)
    if module is None:
        raise UnknownNameError("model family", name, _MODULES)
    mod = importlib.import_module(f"{__name__}.{module}")
    fam = getattr(mod, "FAMILY", None)
    if not isinstance(fam, Family) or fam.name != name:
        raise ModelError(f"model family module {mod.__name__} defines no FAMILY named {name!r}")
    _LOADED[name] = fam
    return fam


def detect(state: Mapping[str, Any], *, allow_noncommercial: bool = False) -> Detected | None:
    """The first family that recognises ``state`` (the dedicated families before spandrel)."""
    for name in _MODULES:
        found = get_family(name).detect(state, allow_noncommercial=allow_noncommercial)
        if found is not None:
            return found
    return None
