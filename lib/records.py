"""Small, JSON-serialisable records that cross task boundaries (references, never pixels)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, Field

Status = Literal["pending", "ok", "failed"]
Category = Literal["none", "group", "verdict", "tag", "folder"]

_PRESET_PREFIX = "suggested preset: "


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
    output_name: str | None = Field(
        None, description="Archive path of the first output (the only one with one profile)"
    )
    output_sha256: str | None = None
    outputs: list[dict[str, Any]] = Field(
        default_factory=list,
        description="One entry per export profile: profile, name (path in the archive and the "
        "mirror), what the file holds (format, width, height, bit_depth, alpha, gray: read "
        "back from its bytes), bytes, sha256, notes (lossy changes and format changes), and "
        "link when shared",
    )
    tags: list[str] = Field(default_factory=list, description="User tags (export.tags file)")
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

    def category(self, by: Category) -> str:
        """The record's value for ``by``: its analysis group (else the suggested preset), its
        review verdict, its first user tag, or its source folder ("" when it has none)."""
        if by == "group":
            group = self.analysis.get("group")
            if group:
                return str(group)
            for line in self.recommendations:
                if line.startswith(_PRESET_PREFIX):
                    return line[len(_PRESET_PREFIX) :].strip()
            return ""
        if by == "verdict":
            return str(self.scores.get("verdict") or "")
        if by == "tag":
            return self.tags[0] if self.tags else ""
        if by == "folder":
            parent = str(PurePosixPath(self.name).parent)
            return "" if parent == "." else parent
        return ""

    def manifest_entry(self) -> dict[str, Any]:
        """The record as written to manifest.json (no internal URIs)."""
        return self.model_dump(mode="json", exclude={"uri"})


def parse_tags(text: str, origin: str) -> dict[str, str]:
    """User tags from a tag file: JSON ``{"image name": "tag"}`` or CSV lines ``name,tag``.

    Names are the images' paths relative to the source (``sub/a.jpg``) or their bare file
    names; a CSV header line ``name,tag`` is skipped.

    Raises:
        ValueError: the text is neither (the message names ``origin``).
    """
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except ValueError as exc:
            raise ValueError(f"{origin}: not valid JSON ({exc})") from None
        return {str(k): str(v) for k, v in data.items() if v not in (None, "")}
    tags: dict[str, str] = {}
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not "".join(row).strip() or row[0].startswith("#"):
            continue
        if len(row) < 2:
            raise ValueError(f"{origin}: line {number} should be 'image name,tag'")
        name, tag = row[0].strip(), row[1].strip()
        if number == 1 and (name.lower(), tag.lower()) == ("name", "tag"):
            continue
        if tag:
            tags[name] = tag
    return tags


class RunSummary(BaseModel):
    """What a finished run delivered and where."""

    run_id: str
    total: int
    succeeded: int
    failed: int
    skipped: list[dict[str, str]] = Field(default_factory=list)
    zip_uri: str | None = Field(None, description="The archive (the first one when several)")
    archives: list[str] = Field(default_factory=list, description="Every archive written")
    manifest_uri: str | None = None
    report_uri: str | None = None
    mirror_uri: str | None = Field(None, description="Where the delivery was mirrored (sync)")
    uploaded: int = Field(0, description="Files uploaded to the mirror (changed ones only)")
    links: dict[str, str] = Field(
        default_factory=dict, description="Share links (presigned URLs) by what they open"
    )
    links_expire: str | None = None
    seconds: float = 0.0
    model_calls: int = 0
    performance: dict[str, Any] = Field(
        default_factory=dict,
        description="Throughput, time per phase, model loading, memory (see lib/perf.py)",
    )

    @property
    def exit_code(self) -> int:
        """0: everything succeeded; 2: some failed, the rest delivered; 1: nothing delivered."""
        if self.total == 0 or self.succeeded == 0:
            return 1
        return 0 if self.failed == 0 else 2
