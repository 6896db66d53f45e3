"""The review settings of a recipe: the quality gate and approval, and the approval decision.

The gate runs after review: a result scoring below ``min_score`` (or judged "worse" than its
input, with ``gate_worse``) fails it, and the recipe says what happens then: flag it and
deliver anyway, deliver the original instead, hold it back from export, or retry it with
the next set of gentler parameters. Approval pauses the run after review (and after the
gate) until someone approves the export, asks for some images to be regenerated with
overrides, or rejects the run.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from retouch.lib.records import ImageRecord

GateAction = Literal["flag", "original", "hold", "retry"]


class ReviewSettings(BaseModel):
    """What happens after review: the quality gate and the optional approval pause."""

    model_config = ConfigDict(extra="forbid")

    min_score: float | None = Field(
        None, ge=0, le=100, description="Quality gate: a result scoring below this fails it"
    )
    gate_worse: bool = Field(
        False, description="Quality gate: a result judged worse than its input fails it"
    )
    on_gate_fail: GateAction = Field(
        "flag",
        description="flag: deliver and mark it; original: deliver the input unchanged; "
        "hold: keep it out of the export (reported as failed); retry: run again with retry_with",
    )
    retry_with: list[list[str]] = Field(
        default_factory=list,
        description="For retry: override sets tried in order until one passes, "
        'e.g. [["sharpen.amount=0.3"], ["sharpen.amount=0.1", "denoise.strength=3"]]',
    )
    approve: bool = Field(
        False,
        description="Pause after review until the export is approved (Prefect UI form or "
        "`retouch approve RUN`)",
    )
    approve_timeout: int = Field(
        86_400, ge=10, le=30 * 86_400, description="Seconds to wait for approval before failing"
    )

    @field_validator("retry_with")
    @classmethod
    def _overrides_look_right(cls, value: list[list[str]]) -> list[list[str]]:
        for group in value:
            for item in group:
                if "=" not in item or "." not in item.split("=", 1)[0]:
                    raise ValueError(f"{item!r}: expected STEP.PARAM=VALUE")
        return value

    @property
    def gated(self) -> bool:
        return self.min_score is not None or self.gate_worse


class ApprovalDecision(BaseModel):
    """What the reviewer decided for a paused run (the form shown in the Prefect UI)."""

    action: Literal["approve", "regenerate", "reject"] = Field(
        "approve",
        description="approve: export as it is; regenerate: redo the named images with the "
        "overrides, then export; reject: export nothing",
    )
    images: list[str] = Field(
        default_factory=list, description="For regenerate: image names as in the report"
    )
    overrides: list[str] = Field(
        default_factory=list,
        description="For regenerate: STEP.PARAM=VALUE, e.g. sharpen.amount=0.3",
    )
    note: str = Field("", description="Kept in the manifest")


def gate_failure(record: ImageRecord, settings: ReviewSettings) -> str | None:
    """Why ``record`` fails the quality gate, or None when it passes (or was never scored)."""
    if not record.ok or not record.scores:
        return None
    score = record.scores.score
    if settings.min_score is not None and score is not None and score < settings.min_score:
        return f"score {score:.0f} is below the gate's {settings.min_score:.0f}"
    if settings.gate_worse and record.scores.verdict == "worse":
        return "the result is worse than its input"
    return None
