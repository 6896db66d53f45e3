"""A tiny in-process event hub: phases report per-image progress, front ends draw it.

Every event is one of the typed models below (the :data:`Event` union, told apart by its
``event`` field). Listeners run in the reporting thread and must be quick. When nobody
listens (a worker process, a deployment), emitting costs a lock and an empty loop.

The same models are the wire format: ``retouch run --events FILE`` writes one JSON line per
event (:func:`to_json`), and a front end reads them back with :func:`parse`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

Phase = Literal["prepare", "process", "review", "export"]


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True)


class RunStarted(_Event):
    """A run listed its inputs: how many will go through the phases, in how many chunks."""

    event: Literal["run"] = "run"
    run_id: str
    total: int
    skipped: int = 0
    chunks: int = 0


class FlowRunLinked(_Event):
    """The Prefect flow run behind a retouch run (and its UI page, when a server has one)."""

    event: Literal["flow-run"] = "flow-run"
    run_id: str
    flow_run_id: str | None = None
    url: str | None = None


class ImagePhaseDone(_Event):
    """One input (image or video) finished one phase, well or not."""

    event: Literal["image"] = "image"
    phase: Phase
    name: str
    ok: bool = True
    reason: str | None = None
    reused: bool = False
    index: int | None = None
    score: float | None = None
    score_before: float | None = None
    verdict: str | None = None
    output_name: str | None = None
    thumbs: dict[str, str] | None = Field(
        None, description="Where the review's before/after previews were written, by label"
    )


class StepStarted(_Event):
    """An input's recipe reached step ``number`` (1-based)."""

    event: Literal["step"] = "step"
    name: str
    number: int
    op: str


class FramesDone(_Event):
    """A video's process phase has ``done`` of its ``total`` frames (frames of segments
    stored by an earlier run count as done), at ``fps`` frames per second of this run's
    own work, with ``eta_s`` seconds left at that rate; ``segment`` of ``segments`` is the
    one being processed."""

    event: Literal["frames"] = "frames"
    name: str
    done: int
    total: int | None = None
    fps: float | None = None
    eta_s: float | None = None
    segment: int | None = None
    segments: int | None = None
    reused: bool = Field(False, description="The frames were in a segment stored earlier")


class ApprovalWaiting(_Event):
    """A run paused for approval: who can resume it, where, and for how long it waits."""

    event: Literal["approval"] = "approval"
    run_id: str
    flow_run_id: str | None = None
    url: str | None = None
    workspace: str | None = None
    timeout_s: float | None = None


class RunDone(_Event):
    """The run's summary (a :class:`~retouch.lib.records.RunSummary` as a dict)."""

    event: Literal["done"] = "done"
    summary: dict[str, Any]


class RunError(_Event):
    """The command stopped with an error (the message it printed)."""

    event: Literal["error"] = "error"
    message: str


Event = Annotated[
    RunStarted
    | FlowRunLinked
    | ImagePhaseDone
    | StepStarted
    | FramesDone
    | ApprovalWaiting
    | RunDone
    | RunError,
    Field(discriminator="event"),
]
EVENT_KINDS = frozenset(
    m.model_fields["event"].default
    for m in (
        RunStarted,
        FlowRunLinked,
        ImagePhaseDone,
        StepStarted,
        FramesDone,
        ApprovalWaiting,
        RunDone,
        RunError,
    )
)
_adapter: TypeAdapter[Event] = TypeAdapter(Event)

Listener = Callable[[Event], None]

_lock = threading.Lock()
_listeners: list[Listener] = []


def parse(data: dict[str, Any] | str) -> Event:
    """An event from its dict or JSON line (raises ``pydantic.ValidationError`` if unknown)."""
    if isinstance(data, str):
        return _adapter.validate_json(data)
    return _adapter.validate_python(data)


def to_json(event: Event) -> str:
    """One JSON line (no newline) for the events file, in ``json.dumps``'s spacing."""
    return json.dumps(event.model_dump(mode="json"), ensure_ascii=False)


def subscribe(listener: Listener) -> Callable[[], None]:
    """Register a listener; returns a function that unregisters it."""
    with _lock:
        _listeners.append(listener)

    def unsubscribe() -> None:
        with _lock:
            if listener in _listeners:
                _listeners.remove(listener)

    return unsubscribe


def emit(event: Event) -> None:
    """Send ``event`` to every listener; a failing listener is dropped."""
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(event)
        except Exception:  # a broken progress bar must never fail a batch
            with _lock:
                if listener in _listeners:
                    _listeners.remove(listener)
