"""What an operation is: an id, a version, a pydantic params model and ``__call__``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Annotated, Any, ClassVar, Generic, TypeVar

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from retouch.lib.image import Image
from retouch.lib.models.pool import PoolEntry


class OpParams(BaseModel):
    """Base of every operation's parameters: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


MaskLookup = Callable[[str], np.ndarray | None]


def model_field(purpose: str, default: str | None, description: str) -> Any:
    """An op parameter naming a registered model of ``purpose`` (shipped or imported).

    Validated against the registry when the recipe is read (an unknown name, or a model of
    another purpose, lists the valid ones), and published in the JSON schema as an enum of
    the models registered when the schema is made, so the web form, the Prefect UI and
    ``--set`` offer them all. The annotation validates: :data:`UpscaleModelName`,
    :data:`FaceModelName`, :data:`InpaintModelName`.
    """

    def choices(schema: dict[str, Any]) -> None:
        from retouch.lib.models.specs import names

        valid = names(purpose=purpose)
        if "anyOf" in schema:  # optional: string or null
            for option in schema["anyOf"]:
                if option.get("type") == "string":
                    option["enum"] = valid
        else:
            schema["enum"] = valid

    return Field(default, description=description, json_schema_extra=choices)


def _checked(purpose: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        from retouch.lib.errors import ModelError, UnknownNameError
        from retouch.lib.models.specs import check_purpose

        if value is None:
            return value
        try:
            return check_purpose(value, purpose)
        except (UnknownNameError, ModelError) as exc:
            raise ValueError(str(exc)) from None

    return check


# A registered model's name, checked against the registry for its purpose.
UpscaleModelName = Annotated[str, AfterValidator(_checked("upscale"))]
FaceModelName = Annotated[str, AfterValidator(_checked("face"))]
InpaintModelName = Annotated[str, AfterValidator(_checked("inpaint"))]
RestyleModelName = Annotated[str, AfterValidator(_checked("restyle"))]


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
        clip_id: set while the frames of a video run: the video's sha256. Operations that
            draw randomness from the picture's content (restyle's diffusion seed) draw it
            from the clip instead, so every frame gets the same seed and the clip does not
            flicker from seed changes.
        state: what an operation keeps from one frame of a video to the next (for
            example the faces' landmarks, steadied across frames); empty for images, and
            fresh for each segment of a video, so a segment gives the same pixels whether
            it runs alone or after the one before.
        frame_time: set while the frames of a video run: the frame's time in seconds from
            the clip's first frame (a mask video gives the mask shown then); None for an
            image.
        resources: files an operation keeps open across the frames of a video (a mask
            video's reader), closed by :meth:`close` when the frames are done.
    """

    name: str = ""
    device: str = "cpu"
    pool: Any = None
    masks: MaskLookup | None = None
    mask_folder: Callable[[str], MaskLookup] | None = None
    uri: str = ""
    beside: MaskLookup | None = None
    counters: dict[str, int] = field(default_factory=dict)
    clip_id: str = ""
    state: dict[str, Any] = field(default_factory=dict)
    frame_time: Fraction | None = None
    resources: ExitStack = field(default_factory=ExitStack, repr=False)

    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n

    def close(self) -> None:
        """Close what the operations kept open (:attr:`resources`) and forget their state."""
        self.state.clear()
        self.resources.close()


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
    # The step re-draws the picture in another style (restyle, stylize): the review then
    # judges the result as a drawing, not as a repair of the photo (verdict "restyled").
    redraws: ClassVar[bool] = False
    # Parameters that only change the frames of videos (how a frame uses the ones before
    # it): images' result keys leave them out, so changing one recomputes videos only.
    video_params: ClassVar[frozenset[str]] = frozenset()

    def models(self, params: P) -> list[str]:
        """Registry names of the model weights this step needs (checked before a run starts)."""
        return []

    def uses_model(self, params: P) -> bool:
        """Whether this step runs a network (on the run's device, under the GPU limit, held
        in the pool): by default when it names registry weights; an op whose model is not
        a registry entry (a diffusion checkpoint) says so itself."""
        return bool(self.models(params))

    def pool_entries(self, params: P, device: str) -> list[PoolEntry]:
        """The models a call with ``params`` on ``device`` (resolved: ``cpu``, ``cuda:N``)
        takes from the pool, as (key, factory), built the way the call builds them: what a
        command loads ahead of its first image (``retouch.lib.models.compat.preload``)."""
        return []

    def check(self, params: P) -> None:
        """Raise :class:`~retouch.lib.errors.RetouchError` when this step cannot run here for
        a reason found without loading anything (a missing optional package or a checkpoint
        that is not there). Runs before a run starts, with the weight check."""
        return None

    def notes(self, params: P, device: str) -> list[str]:
        """What the user should know before this step runs on ``device`` (the device
        setting: auto, cpu, cuda, cuda:N; shown by the CLI before the run starts): e.g. that
        it will be slow here, with an estimate."""
        return []

    def key_inputs(self, params: P, ctx: OpContext) -> Any:
        """What this image's result depends on besides its bytes and ``params`` (e.g. its
        mask), as a JSON-able value or None. It goes into the result key, so a changed mask
        recomputes the image instead of reusing a stale result."""
        return None

    @abstractmethod
    def __call__(self, image: Image, params: P, ctx: OpContext) -> Image:
        """Return the processed image; never modify ``image`` in place."""
