"""What every phase of one run needs: the run's plain, serialisable configuration
(:class:`RunConfig`, passed to every chunk task) and the context rebuilt from it inside each
task (:class:`RunContext`: workspace, recipe, masks, settings, counters)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from retouch.lib.image import Image
from retouch.lib.masks import BesideMasks, MaskSource
from retouch.lib.ops.base import OpContext
from retouch.lib.ops.registry import registry
from retouch.lib.phases import keys
from retouch.lib.recipe import Recipe
from retouch.lib.records import ImageRecord
from retouch.lib.settings import Settings, get_settings
from retouch.lib.sources import is_video_name
from retouch.lib.workspace import Workspace


@dataclass
class RunContext:
    """What every phase of one run needs; rebuilt cheaply inside each task from plain values."""

    run_id: str
    workspace: Workspace
    recipe: Recipe
    masks_dir: str | None = None
    settings: Settings = field(default_factory=get_settings)
    refresh: bool = False
    segment_tasks: bool = False  # videos' segments were made by tasks of their own first
    counters: dict[str, int] = field(default_factory=dict)
    handed: dict[str, Image] | None = None
    """Decoded images handed from one phase to the next of the same image when the phases
    run back to back on it (``retouch.lib.phases.workers.in_one_pass``): the source as
    prepared (:func:`source_slot`) and the result as computed (:func:`result_slot`), so
    neither is read and decoded again. None (the default): every phase reads its own."""
    _mask_sources: dict[str, MaskSource] = field(default_factory=dict)
    _beside: BesideMasks | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def mask_folder(self, folder: str) -> MaskSource:
        """The masks of ``folder``, listed once for this context (i.e. once per task)."""
        with self._lock:
            if folder not in self._mask_sources:
                self._mask_sources[folder] = MaskSource(folder, self.settings.pixel_limit)
            return self._mask_sources[folder]

    def masks(self) -> MaskSource | None:
        return self.mask_folder(self.masks_dir) if self.masks_dir else None

    def beside(self) -> BesideMasks:
        """The masks kept beside the images (each folder listed once for this context)."""
        with self._lock:
            if self._beside is None:
                self._beside = BesideMasks(self.settings.pixel_limit)
            return self._beside

    def op_context(self, name: str, device: str, uri: str = "") -> OpContext:
        from retouch.lib.models.pool import default_pool

        return OpContext(
            name=name,
            device=device,
            pool=default_pool(),
            masks=self.masks(),
            mask_folder=self.mask_folder,
            uri=uri,
            beside=self.beside(),
            counters=self.counters,
        )

    def image_key(self, record: ImageRecord, weights: dict[str, str], device: str) -> str:
        """The result key of one prepared image (or video) under this run's recipe."""
        if is_video(record):
            from retouch.lib.video import phases

            return phases.video_key(record, self, weights, device)
        return self.step_keys(record, weights, device)[-1]

    def step_keys(self, record: ImageRecord, weights: dict[str, str], device: str) -> list[str]:
        """Keys of the image after 0, 1, ..., n steps of the recipe (the last is its result)."""
        assert record.sha256 is not None
        op_ctx = self.op_context(record.name, device, record.uri)
        inputs = [
            registry().get(step.op).key_inputs(step.parsed(), op_ctx) for step in self.recipe.steps
        ]
        return keys.step_keys(record.sha256, self.recipe, weights, inputs)

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counters[key] = self.counters.get(key, 0) + n


class RunConfig(BaseModel):
    """Passed (unmapped) to every chunk task: references and settings, never pixels."""

    run_id: str
    workspace: str
    recipe: Recipe
    source: str = ""  # what the run reads, as given (the manifest's "source")
    dest: str = ""  # where it delivers
    masks: str | None = None
    device: str = "cpu"
    weights: dict[str, str] = Field(default_factory=dict)
    refresh: bool = False
    segment_tasks: bool = Field(
        False,
        description="The process phase joins videos whose segments task runs of their own "
        "made first (see tasks/process.py); they were announced there",
    )

    def context(self, settings: Settings | None = None) -> RunContext:
        return RunContext(
            run_id=self.run_id,
            workspace=Workspace(self.workspace),
            recipe=self.recipe,
            masks_dir=self.masks,
            settings=settings or get_settings(),
            refresh=self.refresh,
            segment_tasks=self.segment_tasks,
        )


def source_slot(record: ImageRecord) -> str:
    """Where the prepared source of ``record`` is handed on (``RunContext.handed``): its
    location and content, so a file changed in between is never taken for it."""
    return f"source:{record.uri}:{record.sha256}"


def result_slot(key: str) -> str:
    """Where the computed result of result key ``key`` is handed on (``RunContext.handed``)."""
    return f"result:{key}"


def is_video(record: ImageRecord) -> bool:
    """Whether ``record`` is a video (by its name's extension; see ``lib/video``)."""
    return is_video_name(record.name)


def jsonable(value: Any) -> Any:
    """numpy scalars/arrays and tuples into plain JSON types."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, float):
        return round(value, 4)
    return value
