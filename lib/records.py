"""Small, JSON-serialisable records that cross task boundaries (references, never pixels)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Status = Literal["pending", "ok", "failed"]


class ImageRecord(BaseModel):
    """Everything retouch knows about one input image, filled in phase by phase."""

    index: int = Field(description="1-based position in the sorted source listing")
    source: str = Field(description="URI the image was read from (credentials redacted)")
    name: str = Field(description="Path relative to the source root, '/'-separated")
    uri: str = Field(description="URI used to read the image (not shown to users)", exclude=False)
    sha256: str | None = None
    bytes: int | None = None
    status: Status = "pending"
    failed_phase: str | None = None
    reason: str | None = None
    input: dict[str, Any] = Field(default_factory=dict)
    analysis: dict[str, Any] = Field(default_factory=dict)
    recommendations: list[str] = Field(default_factory=list)
    result_key: str | None = None
    reused: bool = False
    model_calls: int = 0
    output: dict[str, Any] = Field(default_factory=dict)
    output_name: str | None = None
    output_sha256: str | None = None
    scores: dict[str, Any] = Field(default_factory=dict)
    problems: list[str] = Field(default_factory=list)
    timings: dict[str, float] = Field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def fail(self, phase: str, reason: str) -> ImageRecord:
        self.status = "failed"
        self.failed_phase = phase
        self.reason = reason
        return self

    def manifest_entry(self) -> dict[str, Any]:
        """The record as written to manifest.json (no internal URIs)."""
        return self.model_dump(mode="json", exclude={"uri"})


class RunSummary(BaseModel):
    """What a finished run delivered and where."""

    run_id: str
    total: int
    succeeded: int
    failed: int
    skipped: list[dict[str, str]] = Field(default_factory=list)
    zip_uri: str | None = None
    manifest_uri: str | None = None
    report_uri: str | None = None
    seconds: float = 0.0
    model_calls: int = 0

    @property
    def exit_code(self) -> int:
        """0: everything succeeded; 2: some failed, the rest delivered; 1: nothing delivered."""
        if self.total == 0 or self.succeeded == 0:
            return 1
        return 0 if self.failed == 0 else 2
