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


@dataclass
class OpContext:
    """What an operation may use besides the image.

    Attributes:
        name: the input's file name (for error messages and mask lookup by stem).
        device: torch device string ("cpu", "cuda", "cuda:1").
        pool: the per-process model pool (``retouch.lib.models.pool.ModelPool``).
        masks: returns the mask (HxW uint8, 255 = fill) for an image stem, or None.
        counters: incremented by operations that call a model (tests and benchmarks read it).
    """

    name: str = ""
    device: str = "cpu"
    pool: Any = None
    masks: Callable[[str], np.ndarray | None] | None = None
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

    def models(self, params: P) -> list[str]:
        """Registry names of the model weights this step needs (checked before a run starts)."""
        return []

    @abstractmethod
    def __call__(self, image: Image, params: P, ctx: OpContext) -> Image:
        """Return the processed image; never modify ``image`` in place."""
