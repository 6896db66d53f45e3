"""What every phase task needs to rebuild its run context from plain, serialisable values."""

from __future__ import annotations

from pydantic import BaseModel, Field

from retouch.lib.pipeline import RunContext
from retouch.lib.recipe import Recipe
from retouch.lib.settings import get_settings
from retouch.lib.workspace import Workspace


class RunConfig(BaseModel):
    """Passed (unmapped) to every chunk task: references and settings, never pixels."""

    run_id: str
    workspace: str
    recipe: Recipe
    masks: str | None = None
    device: str = "cpu"
    weights: dict[str, str] = Field(default_factory=dict)
    refresh: bool = False

    def context(self) -> RunContext:
        return RunContext(
            run_id=self.run_id,
            workspace=Workspace(self.workspace),
            recipe=self.recipe,
            masks_dir=self.masks,
            settings=get_settings(),
            refresh=self.refresh,
        )


def chunk_retry_delays() -> list[float]:
    """Backoff between retries of a whole chunk (storage hiccups outlasting lib's own retries)."""
    return [2.0, 10.0]
