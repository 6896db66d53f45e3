"""What an operation is: an id, a version, a pydantic params model and ``__call__``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from ..image import Image


class OpParams(BaseModel):
    """Base of every operation's parameters: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


MaskLookup = Callable[[str], np.ndarray | None]


@dataclass
class OpContext:
    """What an operation may use besides the image.

    Attributes:
        name: the input's name relative to the source (error messages, mask lookup).
        device: torch device string ("cpu", "cuda", "cuda:1").
        pool: the per-process model pool (``retouch.lib.models.pool.ModelPool``).
        masks: the run's masks (``--masks``): called with ``name``, returns the mask
            (HxW uint8, 255 = fill) or None.
        mask_folder: returns the lookup for a mask folder named in a step's parameters
            (one per run, so a folder is listed once per run).
        uri: the input's URI (where masks kept beside it are looked for), or "".
        beside: called with ``uri``, returns the mask kept beside the image
            (``<stem>_mask*.png``, :class:`retouch.lib.masks.BesideMasks`) or None.
        counters: incremented by operations that call a model (tests and benchmarks read it).
    """

    name: str = ""
    device: str = "cpu"
    pool: Any = None
    masks: MaskLookup | None = None
    mask_folder: Callable[[str], MaskLookup] | None = None
    uri: str = ""
    beside: MaskLookup | None = None
    counters: dict[str, int] = field(default_factory=dict)

    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n


P = TypeVar("P", bound=OpParams)


class Operation(ABC, Generic[P]):
    """One image operation. Subclasses set ``id``, ``version``, ``Params`` and ``__call__``.

    ``version`` is part of every result key: bump it whenever the output for the same input
    and parameters changes, so cached results are recomputed.
    """

    id: ClassVar[str]
    version: ClassVar[str] = "1"
    Params: ClassVar[type[OpParams]]
    summary: ClassVar[str] = ""
    # Store this step's result as an intermediate, so a re-run that changes only later steps
    # starts from it. Worth it for slow steps (models, denoising); for steps cheaper than
    # encoding and writing the image (levels, resizing, sharpening) it costs more than it saves.
    checkpoint: ClassVar[bool] = True

    def models(self, params: P) -> list[str]:
        """Registry names of the model weights this step needs (checked before a run starts)."""
        return []

    def key_inputs(self, params: P, ctx: OpContext) -> Any:
        """What this image's result depends on besides its bytes and ``params`` (e.g. its
        mask), as a JSON-able value or None. It goes into the result key, so a changed mask
        recomputes the image instead of reusing a stale result."""
        return None

    @abstractmethod
    def __call__(self, image: Image, params: P, ctx: OpContext) -> Image:
        """Return the processed image; never modify ``image`` in place."""
