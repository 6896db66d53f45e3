"""The API's request and response models: the OpenAPI schema the page and integrators read."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from retouch.lib.recipe import DEFAULT_PRESET


class ErrorOut(BaseModel):
    detail: str = Field(description="What went wrong, naming the file or field and the reason")


class HealthOut(BaseModel):
    ok: bool
    version: str


class StepOut(BaseModel):
    op: str
    params: dict[str, Any] = Field(description="The preset's parameters, defaults filled in")
    schema_: dict[str, Any] = Field(alias="schema", description="JSON schema of the params")


class WeightOut(BaseModel):
    name: str = Field(description="Registry name of the model")
    filename: str = Field(description="Its weight file")
    source: Literal["mirror", "url"] | None = Field(
        description="Where the server fetches the file when a batch is submitted (the mirror "
        "or the official URL); null: it cannot be had here (offline, no mirror holds it)"
    )
    path: str = Field(description="Where the file belongs on the server")
    url: str = Field(description="The official download URL")
    how: str = Field(description="The ways to provide the file on the server")


class PresetOut(BaseModel):
    name: str
    description: str
    steps: list[StepOut]
    export: dict[str, Any] = Field(description="The preset's export settings")
    available: bool = Field(
        description="Whether a batch with this preset can start here: its weight files are "
        "on the server or can be fetched when the batch is submitted"
    )
    unavailable: str | None = Field(
        description="Why the preset cannot run here and how to make it run (null when it can)"
    )
    weights: list[WeightOut] = Field(
        description="The weight files the preset needs that are not on the server yet"
    )


class FramesOut(BaseModel):
    done: int = Field(description="Frames processed (those of stored segments included)")
    total: int | None = Field(description="Frames of the clip (null when not known)")
    fps: float | None = Field(description="Frames per second of this run's own work")
    eta_s: float | None = Field(description="Seconds left at that rate")
    segment: int | None = Field(description="The segment being processed (1-based)")
    segments: int | None = Field(description="Segments of the clip")
    reused: bool = Field(description="The last frames came from a segment stored earlier")


class SequenceOut(BaseModel):
    frames: int = Field(description="Frames in the sequence")
    format: str = Field(description="Image format of each frame: png, jpg or tiff")
    first_frame_url: str = Field(description="The first frame, in a format browsers show")


class ImageOut(BaseModel):
    name: str = Field(description="Relative path as uploaded (or found in the source)")
    index: int
    kind: Literal["image", "video"] = Field(
        "image",
        description="video: a clip, delivered as a video (result_url plays it) or as an "
        "image sequence (see sequence)",
    )
    status: Literal["pending", "prepared", "processed", "reviewed", "done", "failed"]
    phase: Literal["prepare", "process", "review", "export"] | None
    error: str | None
    note: str | None = Field(None, description="A remark that is not a failure")
    score: float | None = Field(
        description="The result's score (0..100); the verdict is read off it and score_before"
    )
    score_before: float | None = Field(None, description="The input's score, same scale")
    verdict: str | None
    step: int | None = Field(None, description="The last recipe step done on it (1-based)")
    step_op: str | None = Field(None, description="The operation of that step")
    frames: FramesOut | None = Field(
        None, description="A video in the process phase: its frames done, rate and time left"
    )
    reused: bool = Field(False, description="Its result came from the cache (not recomputed)")
    thumbs: dict[str, str | None] = Field(description="before, after, crop-before, crop-after")
    output_name: str | None
    result_url: str | None
    full: dict[str, str | None] = Field(
        default_factory=dict,
        description="before, after: the input and the delivered result at full size, in a "
        "format browsers show (null until the result is delivered, when the input is not "
        "known, and for videos)",
    )
    size: dict[str, int] | None = Field(
        None, description="width, height of the delivered result in pixels (when known)"
    )
    sequence: SequenceOut | None = Field(
        None,
        description="A video delivered as an image sequence (export.video.container=frames): "
        "result_url downloads its folder as a ZIP",
    )


class ProgressOut(BaseModel):
    fraction: float = Field(description="Share of the current job's work done (0..1)")
    reviewed: int = Field(description="Images reviewed so far (their previews are ready)")
    exported: int = Field(description="Images exported (in the delivery)")
    elapsed_s: float | None = Field(description="Seconds since the current job started")
    eta_s: float | None = Field(description="Estimated seconds left (null when not known)")


class BatchSummaryOut(BaseModel):
    id: str
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    created: str
    preset: str
    overrides: dict[str, Any]
    total: int
    counts: dict[str, int]
    progress: ProgressOut
    steps: list[str] = Field(description="The operations of the preset's steps, in order")
    skipped: list[dict[str, str]]
    error: str | None
    run_id: str | None
    zip_url: str | None
    report_url: str | None
    exit_code: int | None


class BatchOut(BatchSummaryOut):
    images: list[ImageOut]


class ResultOut(BaseModel):
    name: str
    output_name: str
    bytes: int
    url: str


class UrisIn(BaseModel):
    sources: list[str] = Field(
        min_length=1, description="Folders, files, globs, s3:// prefixes, list files or .zip"
    )
    preset: str = DEFAULT_PRESET
    overrides: dict[str, Any] = Field(default_factory=dict)


class RegenerateIn(BaseModel):
    names: list[str] = Field(min_length=1, description="Image names to process again")
    overrides: dict[str, Any] = Field(default_factory=dict)
    keep_worse: bool = Field(
        False,
        description="Take a new version even when it scores below the one it replaces "
        "(by default the better one stays current and the image's note says so)",
    )


class StyleOut(BaseModel):
    name: str = Field(description="What to send in ``styles``: a preset or a model name")
    kind: Literal["preset", "model"] = Field(
        description="preset: a preset whose recipe re-draws the picture (restyle, stylize); "
        "model: a re-drawing model, run in the anime preset's recipe in place of its model"
    )
    description: str
    available: bool = Field(
        description="Whether it can be compared here: its weight files are on the server (or "
        "can be fetched) and what its steps need besides (a diffusion checkpoint, optional "
        "packages) is there"
    )
    unavailable: str | None = Field(
        description="Why it cannot be compared here and how to make it run (null when it can)"
    )
    weights: list[WeightOut] = Field(
        description="The weight files it needs that are not on the server yet"
    )


class StyleCellOut(BaseModel):
    style: str
    score: float | None = Field(description="The re-drawn picture's score (0..100)")
    score_before: float | None = Field(description="The photo's score, same scale")
    verdict: str | None = Field(description="restyled for a re-drawing, else as a run's review")
    problems: list[str] = Field(description="What the review noticed in the result")
    error: str | None = Field(description="Why this style failed on the photo (its cell is red)")
    seconds: float = Field(description="Time this style took")


class StylePreviewOut(BaseModel):
    image: str = Field(description="The photo's name as uploaded")
    styles: list[str] = Field(description="The styles, in the order of the sheet's columns")
    sheet: str = Field(
        description="The contact sheet as a data: URL (PNG): the photo (reduced to max_side), "
        "then one column per style with its score under it"
    )
    cells: list[StyleCellOut]
    best: str | None = Field(description="The style with the highest score (null if none ran)")
    max_side: int = Field(description="Long side, in pixels, the photo was reduced to")
    seconds: float = Field(description="Time the comparison took on the server")


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 413, 415, 416, 422, 507)
}
MULTIPART_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "Images; a file name may hold a relative folder path",
                        },
                        "masks": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "Inpainting masks, matched to images by file stem",
                        },
                        "preset": {"type": "string", "default": DEFAULT_PRESET},
                        "overrides": {
                            "type": "string",
                            "description": 'JSON object, e.g. {"sharpen.amount": 1.5}',
                        },
                    },
                }
            }
        },
    }
}
STYLE_PREVIEW_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "styles"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "The photo (one image file)",
                        },
                        "styles": {
                            "type": "string",
                            "description": "2 to 6 presets or re-drawing models, comma "
                            "separated (GET /api/styles lists them), e.g. "
                            "anime,animeganv2-face-paint-v2",
                        },
                        "max_side": {
                            "type": "integer",
                            "minimum": 64,
                            "maximum": 1024,
                            "default": 512,
                            "description": "Long side, in pixels, the photo is reduced to "
                            "first (the scores describe that copy)",
                        },
                    },
                }
            }
        },
    }
}
