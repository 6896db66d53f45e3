"""The recipe models: an ordered list of steps plus export settings, validated."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from retouch.lib.errors import RecipeError
from retouch.lib.quality.gate import ReviewSettings

OUTPUT_FORMATS = ("same", "jpg", "png", "webp", "tiff", "bmp")


class Step(BaseModel):
    """One operation with its parameters (validated against the operation's params model)."""

    model_config = ConfigDict(extra="forbid")

    op: str = Field(description="Operation id, e.g. upscale, restore_faces, fit")
    params: dict[str, Any] = Field(default_factory=dict, description="Parameters of the operation")

    @field_validator("op")
    @classmethod
    def _known_op(cls, value: str) -> str:
        from retouch.lib.ops.registry import registry

        registry().get(value)  # raises UnknownNameError listing the valid ids
        return value

    # The params validated once: a step is built from a finished dict (overrides edit the
    # recipe's dict before the Recipe is made), and every image's every step asks for them.
    _parsed: Any = PrivateAttr(default=None)

    def parsed(self) -> Any:
        """The params as the operation's pydantic model (defaults filled in)."""
        if self._parsed is None:
            from retouch.lib.ops.registry import registry

            op = registry().get(self.op)
            try:
                self._parsed = op.Params(**self.params)
            except ValidationError as exc:
                raise RecipeError(f"step {self.op!r}: {validation_text(exc)}") from None
        return self._parsed


_PROFILE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_HEX_COLOUR = r"^#?[0-9a-fA-F]{6}$"
WatermarkPosition = Literal[
    "top-left", "top", "top-right", "left", "center", "right", "bottom-left", "bottom", "bottom-right"
]  # fmt: skip


class Resize(BaseModel):
    """How a profile resizes its output: a maximum side, or an exact width x height."""

    model_config = ConfigDict(extra="forbid")

    max_side: int | None = Field(
        None, ge=1, le=100_000, description="Longest side in pixels (keeps the aspect ratio)"
    )
    width: int | None = Field(None, ge=1, le=100_000, description="Exact width (with height)")
    height: int | None = Field(None, ge=1, le=100_000, description="Exact height (with width)")
    mode: Literal["crop", "pad"] = Field(
        "crop",
        description="Exact size: crop = fill the frame and crop the excess (faces and detail "
        "kept in frame), pad = fit inside and pad",
    )
    upscale: bool = Field(
        False,
        description="Enlarge images smaller than the target; without it they are never "
        "enlarged (an exact size is then reached by padding)",
    )
    pad_color: str = Field("#ffffff", pattern=_HEX_COLOUR, description="Padding colour (hex RGB)")

    @model_validator(mode="after")
    def _one_target(self) -> Resize:
        exact = self.width is not None or self.height is not None
        if self.max_side is not None and exact:
            raise ValueError("give max_side, or width and height, not both")
        if self.max_side is None and (self.width is None or self.height is None):
            raise ValueError("give max_side (e.g. 2048), or both width and height")
        return self


class Watermark(BaseModel):
    """A text or image mark drawn on every output of a profile."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, max_length=200, description="Text of the mark, e.g. PROOF")
    image: str | None = Field(
        None, description="Path or URL of a mark image (PNG with transparency works best)"
    )
    position: WatermarkPosition = Field("bottom-right", description="Where a single mark sits")
    opacity: float = Field(0.4, ge=0.0, le=1.0, description="0 invisible, 1 opaque")
    scale: float = Field(
        0.25, gt=0.0, le=1.0, description="Width of the mark as a fraction of the image width"
    )
    margin: float = Field(
        0.03, ge=0.0, le=0.4, description="Gap to the edges as a fraction of the shorter side"
    )
    tile: bool = Field(False, description="Repeat the mark over the whole image")
    color: str = Field("#ffffff", pattern=_HEX_COLOUR, description="Text colour (hex RGB)")
    font: str | None = Field(None, description="TrueType/OpenType font file for the text")

    @model_validator(mode="after")
    def _text_or_image(self) -> Watermark:
        if bool(self.text) == bool(self.image):
            raise ValueError("give a watermark text or a watermark image (one of them)")
        return self


class ExportProfile(BaseModel):
    """One kind of output of every image: format, size, colour, metadata, mark and name."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        "default",
        pattern=_PROFILE_NAME,
        description="Profile name: the folder of its outputs when there are several profiles, "
        "and {profile} in names",
    )
    format: Literal["same", "jpg", "png", "webp", "tiff", "bmp"] = Field(
        "jpg", description="Output format; 'same' keeps each input's format where it can be written"
    )
    quality: int = Field(92, ge=1, le=100, description="JPEG/WebP quality (1-100)")
    alpha: Literal["flatten", "keep"] = Field(
        "flatten",
        description="An image with transparency when the format has none (JPEG, BMP): "
        "flatten = composite it onto `background`, stated in the image's problems; keep = "
        "deliver that image in a format with transparency (its own format if it has one, "
        "else PNG)",
    )
    depth: Literal["reduce", "keep"] = Field(
        "reduce",
        description="A 16-bit image when the format holds 8 bits (JPEG, WebP, BMP): reduce = "
        "round it to 8 bits, stated in the image's problems; keep = deliver that image in a "
        "16-bit format (its own PNG or TIFF, else PNG)",
    )
    background: str = Field(
        "#ffffff",
        pattern=_HEX_COLOUR,
        description="Colour transparency is flattened onto (hex RGB), where it is flattened",
    )
    resize: Resize | None = Field(
        None, description="Resize the output (never enlarged unless asked)"
    )
    colour: Literal["keep", "srgb"] = Field(
        "keep",
        description="keep: pixels and ICC profile as they are; srgb: convert through the "
        "embedded ICC profile to sRGB (and tag the output sRGB)",
    )
    keep_metadata: bool = Field(True, description="Carry EXIF, ICC profile and DPI to the outputs")
    watermark: Watermark | None = Field(None, description="A text or image mark (none by default)")
    name_template: str = Field(
        "{stem}.{ext}",
        description="Output name: {stem}, {ext}, {index}, {preset}, {profile}, {folder}, {date}, "
        "{score}, {verdict}, {group}, {tag}; '/' makes folders",
    )
    index_width: int | None = Field(
        None,
        ge=1,
        le=12,
        description="Zero-padding of {index} (default: digits of the image count)",
    )

    @field_validator("name_template")
    @classmethod
    def _valid_template(cls, value: str) -> str:
        from retouch.lib.delivery.naming import validate_template

        try:
            validate_template(value)
        except RecipeError as exc:
            raise ValueError(str(exc)) from None
        return value


PROFILE_FIELDS = tuple(ExportProfile.model_fields)


class SyncSettings(BaseModel):
    """A mirror of the delivered files on a second storage (e.g. an S3 bucket)."""

    model_config = ConfigDict(extra="forbid")

    dest: str = Field(description="Folder or fsspec URL of the mirror, e.g. s3://bucket/prefix")
    versioning: Literal["prefix", "bucket", "off"] = Field(
        "prefix",
        description="prefix: a replaced file's previous version is kept under versions/; "
        "bucket: rely on the bucket's own versioning; off: overwrite",
    )


class VideoSettings(BaseModel):
    """How video results are encoded (videos only; images ignore it). Kept small on purpose:
    codec, quality and container. The profile settings (resize, watermark, format...) do
    not apply to videos yet."""

    model_config = ConfigDict(extra="forbid")

    codec: Literal["h264", "h265", "av1"] = Field(
        "h264", description="Video codec: h264 (libx264), h265 (libx265) or av1 (SVT-AV1)"
    )
    crf: int | None = Field(
        None,
        ge=0,
        le=63,
        description="Constant rate factor, lower is better (default: 18 for h264, 20 for "
        "h265, 30 for av1; h264/h265 take 0-51)",
    )
    preset: str | None = Field(
        None,
        max_length=16,
        pattern=r"^[A-Za-z0-9]+$",
        description="Encoder speed preset (x264/x265: ultrafast..veryslow; SVT-AV1: 0-13); "
        "default: the encoder's own",
    )
    encoder: Literal["auto", "software", "nvenc"] = Field(
        "auto",
        description="auto: NVIDIA's hardware encoder (NVENC) when the run is on a CUDA GPU "
        "and it opens, else software (libx264/libx265/SVT-AV1); nvenc: NVENC or fail",
    )
    blend_static: float = Field(
        0.0,
        ge=0,
        le=0.9,
        description="Steady a model's frame-to-frame shimmer: where the source does not "
        "move, blend the result with the previous frame's by this weight (0 = off, 0.5 = "
        "even); moving areas are left alone; starts again at scene cuts and segments",
    )
    segment_seconds: float = Field(
        10.0,
        ge=0.5,
        le=3600,
        description="Videos are processed in segments of at least this many seconds, cut "
        "at the clip's key frames; a stopped run resumes after the last finished segment",
    )
    container: Literal["same", "mp4", "mkv", "mov", "frames"] = Field(
        "same",
        description="Output container: same = the input's (mp4, mov, mkv; WebM stays WebM "
        "with av1 and becomes mkv otherwise, AVI becomes mp4), each change stated; frames = "
        "an image sequence (a folder of numbered images as processed, frames.csv with each "
        "frame's time, the audio beside them)",
    )
    frames_format: Literal["png", "jpg", "tiff"] = Field(
        "png",
        description="Image format of each frame with container = frames: png (lossless, "
        "default), jpg (at each profile's quality, export.quality by default) or tiff "
        "(lossless)",
    )

    @model_validator(mode="after")
    def _crf_range(self) -> VideoSettings:
        if self.crf is not None and self.codec != "av1" and self.crf > 51:
            raise ValueError(f"crf {self.crf}: {self.codec} takes 0-51")
        return self


class ExportSettings(ExportProfile):
    """How results are delivered.

    The profile fields at this level (format, quality, resize, watermark, name_template...)
    describe the single output of each image. With ``profiles``, each profile is one more
    output per image and keys a profile leaves out are taken from this level.
    """

    profiles: list[ExportProfile] = Field(
        default_factory=list,
        max_length=16,
        description="Several outputs per image (e.g. web JPEG + archive TIFF); each in its own "
        "folder of the archive",
    )
    zip_name: str = Field(
        "results.zip", description="File name of the ZIP written to the destination (no folders)"
    )
    compression: Literal["auto", "stored", "deflate"] = Field(
        "auto",
        description="ZIP members: auto = stored for JPEG/WebP, deflated for PNG/TIFF/BMP",
    )
    compresslevel: int = Field(6, ge=0, le=9, description="Deflate level (0-9)")
    split_mb: float | None = Field(
        None,
        gt=0,
        le=1_000_000,
        description="Split the delivery into independent ZIPs of at most this many MB",
    )
    group_by: Literal["none", "group", "verdict", "tag", "folder"] = Field(
        "none",
        description="One archive per category: analysis group, quality verdict, user tag or "
        "source folder",
    )
    tags: str | None = Field(
        None,
        description="Path or URL of a user tag file (JSON {image: tag} or CSV image,tag lines)",
    )
    verify: bool = Field(True, description="Re-read every archive and check member checksums")
    sync: SyncSettings | None = Field(None, description="Mirror the delivery to a second storage")
    video: VideoSettings = Field(
        default_factory=VideoSettings,
        description="Codec, quality and container of video results",
    )
    link_expiry_s: int | None = Field(
        None,
        ge=60,
        le=604_800,
        description="Share links (presigned URLs) valid this many seconds, where the storage "
        "can sign (S3); none by default",
    )

    @model_validator(mode="before")
    @classmethod
    def _profiles_inherit(cls, data: Any) -> Any:
        # Keys a profile leaves out come from the flat settings, so a recipe can say the
        # quality once for all profiles.
        if isinstance(data, dict) and data.get("profiles"):
            shared = {k: v for k, v in data.items() if k in PROFILE_FIELDS and k != "name"}
            data = dict(data)
            data["profiles"] = [
                {**shared, **p} if isinstance(p, dict) else p for p in data["profiles"]
            ]
        return data

    @field_validator("zip_name")
    @classmethod
    def _plain_zip_name(cls, value: str) -> str:
        from retouch.lib.delivery.naming import is_safe_name

        if (
            "/" in value
            or "\\" in value
            or not is_safe_name(value)
            or not value.lower().endswith(".zip")
        ):
            raise ValueError(f"{value!r} must be a plain file name ending in .zip, without folders")
        return value

    @model_validator(mode="after")
    def _distinct_profiles(self) -> ExportSettings:
        seen: set[str] = set()
        for p in self.profiles:
            if p.name.casefold() in seen:
                raise ValueError(f"two export profiles are named {p.name!r}; names must differ")
            seen.add(p.name.casefold())
        return self

    def effective_profiles(self) -> list[ExportProfile]:
        """The profiles of this export: ``profiles``, or the flat settings as the only one."""
        if self.profiles:
            return list(self.profiles)
        return [ExportProfile(**{k: getattr(self, k) for k in PROFILE_FIELDS})]

    @property
    def split_bytes(self) -> int | None:
        return None if self.split_mb is None else max(1, int(self.split_mb * 1_000_000))


class Recipe(BaseModel):
    """A named, ordered list of steps and the export settings."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("custom", description="Preset or recipe name (used in {preset})")
    description: str = ""
    steps: list[Step] = Field(default_factory=list, description="Operations, applied in order")
    export: ExportSettings = Field(default_factory=ExportSettings)
    review: ReviewSettings = Field(
        default_factory=ReviewSettings,
        description="Quality gate and approval after review (both off by default)",
    )

    def validate_steps(self) -> None:
        """Parse every step's params now, so a bad recipe fails before any image is read."""
        for step in self.steps:
            step.parsed()

    def canonical_steps(self, *, images: bool = False) -> list[dict[str, Any]]:
        """Steps with defaults filled in and op versions, in a stable form for hashing.
        ``images``: without the parameters that only change videos' frames (an op's
        ``video_params``), for images' result keys."""
        from retouch.lib.ops.registry import registry

        out = []
        for step in self.steps:
            op = registry().get(step.op)
            params = step.parsed().model_dump(mode="json")
            if images:
                params = {k: v for k, v in params.items() if k not in op.video_params}
            out.append({"op": step.op, "version": op.version, "params": params})
        return out

    def steps_hash(self) -> str:
        blob = json.dumps(self.canonical_steps(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def notes(self, device: str) -> list[str]:
        """What the steps want the user to know before running on ``device`` (see
        :meth:`retouch.lib.ops.base.Operation.notes`)."""
        from retouch.lib.ops.registry import registry

        return [
            f"{step.op}: {note}"
            for step in self.steps
            for note in registry().get(step.op).notes(step.parsed(), device)
        ]

    def uses_models(self) -> bool:
        """Whether any step runs a network (registry weights or another model, such as a
        diffusion checkpoint): such a recipe runs on the device, under the GPU limit, with
        its models held once per process."""
        from retouch.lib.ops.registry import registry

        return any(registry().get(s.op).uses_model(s.parsed()) for s in self.steps)

    def models(self) -> list[str]:
        """Registry names of every model weight the steps need."""
        from retouch.lib.ops.registry import registry

        names: list[str] = []
        for step in self.steps:
            for name in registry().get(step.op).models(step.parsed()):
                if name not in names:
                    names.append(name)
        return names


def validation_text(exc: ValidationError) -> str:
    """A pydantic validation error as one line: ``field.path: message; ...``."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "value"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)
