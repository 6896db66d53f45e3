"""Small, JSON-serialisable records that cross task boundaries (references, never pixels)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    ValidatorFunctionWrapHandler,
    model_serializer,
    model_validator,
)

Status = Literal["pending", "ok", "failed"]
Category = Literal["none", "group", "verdict", "tag", "folder"]
Verdict = Literal["improved", "unchanged", "restyled", "worse"]
# A measured number keeps the type it was written with (a float field would turn 3 into 3.0
# in manifest.json).
Number = int | float

_PRESET_PREFIX = "suggested preset: "


class SubRecord(BaseModel):
    """A part of a record with typed fields for the keys code reads; producers may add more.

    It dumps as the JSON object it was before it was typed: only the keys that were given or
    assigned (an absent key stays absent, never null), in the order they were first given,
    so manifest.json, saved run state and versions keep their shape and old JSON loads.
    Reading it like that object (``sub["key"]``, ``"key" in sub``, ``bool(sub)``) sees the
    same keys.
    """

    model_config = ConfigDict(extra="allow")

    _order: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="wrap")
    @classmethod
    def _remember_order(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Self:
        made: Self = handler(data)
        if isinstance(data, Mapping):
            made._order = [str(k) for k in data]
        return made

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if not name.startswith("_") and name not in self._order:
            self._order.append(name)

    @model_serializer(mode="wrap")
    def _given_keys(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        dumped = handler(self)
        return {k: dumped[k] for k in self._order if k in dumped}

    def __getitem__(self, key: str) -> Any:
        if key not in self._order:
            raise KeyError(key)
        return getattr(self, key)

    def __contains__(self, key: object) -> bool:
        return key in self._order

    def __bool__(self) -> bool:
        return bool(self._order)

    def update(self, values: Mapping[str, Any]) -> None:
        """Set several keys (a new key goes last, as in a dict)."""
        for key, value in values.items():
            setattr(self, key, value)

    def discard(self, key: str) -> None:
        """Make ``key`` absent again (None for a typed field, gone from the dump)."""
        if key in self._order:
            self._order.remove(key)
        if key in type(self).model_fields:
            super().__setattr__(key, None)
        elif self.__pydantic_extra__ is not None:
            self.__pydantic_extra__.pop(key, None)

    def to_json(self) -> dict[str, Any]:
        """The JSON object this part stands for."""
        return self.model_dump(mode="json")


class FileInfo(SubRecord):
    """What a file holds, read from its bytes (a video's also says kind "video")."""

    kind: str | None = None
    format: str | None = None
    width: int | None = None
    height: int | None = None
    bit_depth: int | None = None
    alpha: bool | None = None
    gray: bool | None = None


class InputInfo(FileInfo):
    """The input file, read in the prepare phase (a video's also gives its container, codec,
    timing and streams)."""

    frames: int | None = None
    start: Number | None = Field(None, description="A video's first frame time (seconds)")
    duration: Number | None = Field(None, description="A video's length (seconds)")
    segments: list[tuple[int | None, int | None, int]] | None = Field(
        None,
        description="A video's segments, cut at its key frames: [start_pts, end_pts, "
        "frames] in its time base (null: the clip's start or end)",
    )


class Faces(SubRecord):
    """The faces the analysis found (the rest of its keys: boxes, smallest, detector)."""

    count: int = 0


class Analysis(SubRecord):
    """Measures of the input (:func:`retouch.lib.quality.analysis.analyse` writes them all;
    code reads its faces and the group it was put in)."""

    faces: Faces | None = None
    group: str | None = None

    @property
    def face_count(self) -> int:
        return self.faces.count if self.faces is not None else 0


class Scores(SubRecord):
    """The review of a result against its input (the rest of
    :func:`retouch.lib.quality.score.quality_score`'s keys come along)."""

    score: Number | None = None
    score_before: Number | None = None
    verdict: Verdict | None = None
    faces: dict[str, int] | None = Field(None, description="Faces counted before and after")
    frames: list[dict[str, Any]] | None = Field(
        None, description="A video's sampled frames: time, score, verdict"
    )
    preview_clip: dict[str, Any] | None = Field(
        None,
        description="A video's before/after preview clip: start and end (s), frames, size",
    )


class PreviousVersion(SubRecord):
    """The version a run's result replaced (old and new side by side in the report)."""

    version: int | None = None
    version_id: str | None = None
    result_key: str | None = None
    run_id: str | None = None
    scores: Scores = Field(default_factory=Scores)
    source: str | None = None
    thumb_before: str | None = None
    thumb_after: str | None = None


class OutputInfo(FileInfo):
    """The delivered file (the first export profile's) and the version of its image it is."""

    bytes: int | None = None
    duration: Number | None = None
    image_id: str | None = None
    version: int | None = None
    version_id: str | None = None
    previous: PreviousVersion | None = None
    kept: str | None = Field(None, description="Why the delivered version is not the newest")


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
    input: InputInfo = Field(default_factory=InputInfo)
    analysis: Analysis = Field(default_factory=Analysis)
    recommendations: list[str] = Field(default_factory=list)
    result_key: str | None = None
    reused: bool = False
    model_calls: int = 0
    output: OutputInfo = Field(default_factory=OutputInfo)
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
    scores: Scores = Field(default_factory=Scores)
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
            if self.analysis.group:
                return self.analysis.group
            for line in self.recommendations:
                if line.startswith(_PRESET_PREFIX):
                    return line[len(_PRESET_PREFIX) :].strip()
            return ""
        if by == "verdict":
            return self.scores.verdict or ""
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
