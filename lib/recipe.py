"""Recipes: an ordered list of steps plus export settings. Presets are recipes shipped as TOML."""

from __future__ import annotations

import hashlib
import json
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import RecipeError, UnknownNameError

OUTPUT_FORMATS = ("same", "jpg", "png", "webp", "tiff", "bmp")


class Step(BaseModel):
    """One operation with its parameters (validated against the operation's params model)."""

    model_config = ConfigDict(extra="forbid")

    op: str = Field(description="Operation id, e.g. upscale, restore_faces, fit")
    params: dict[str, Any] = Field(default_factory=dict, description="Parameters of the operation")

    @field_validator("op")
    @classmethod
    def _known_op(cls, value: str) -> str:
        from .ops.registry import registry

        registry().get(value)  # raises UnknownNameError listing the valid ids
        return value

    def parsed(self):
        """The params as the operation's pydantic model (defaults filled in)."""
        from .ops.registry import registry

        op = registry().get(self.op)
        try:
            return op.Params(**self.params)
        except ValidationError as exc:
            raise RecipeError(f"step {self.op!r}: {_short(exc)}") from None


class ExportSettings(BaseModel):
    """How results are delivered."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["same", "jpg", "png", "webp", "tiff", "bmp"] = Field(
        "jpg", description="Output format; 'same' keeps each input's format where it can be written"
    )
    quality: int = Field(92, ge=1, le=100, description="JPEG/WebP quality (1-100)")
    name_template: str = Field(
        "{stem}.{ext}",
        description="Output name: {stem}, {ext}, {preset}, {index} (1-based, zero-padded); '/' makes folders",
    )
    zip_name: str = Field(
        "results.zip", description="File name of the ZIP written to the destination (no folders)"
    )
    keep_metadata: bool = Field(True, description="Carry EXIF, ICC profile and DPI to the outputs")

    @field_validator("zip_name")
    @classmethod
    def _plain_zip_name(cls, value: str) -> str:
        from .naming import is_safe_name

        if (
            "/" in value
            or "\\" in value
            or not is_safe_name(value)
            or not value.lower().endswith(".zip")
        ):
            raise ValueError(f"{value!r} must be a plain file name ending in .zip, without folders")
        return value


class Recipe(BaseModel):
    """A named, ordered list of steps and the export settings."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("custom", description="Preset or recipe name (used in {preset})")
    description: str = ""
    steps: list[Step] = Field(default_factory=list, description="Operations, applied in order")
    export: ExportSettings = Field(default_factory=ExportSettings)

    def validate_steps(self) -> None:
        """Parse every step's params now, so a bad recipe fails before any image is read."""
        for step in self.steps:
            step.parsed()

    def canonical_steps(self) -> list[dict[str, Any]]:
        """Steps with defaults filled in and op versions, in a stable form for hashing."""
        from .ops.registry import registry

        out = []
        for step in self.steps:
            op = registry().get(step.op)
            out.append(
                {
                    "op": step.op,
                    "version": op.version,
                    "params": step.parsed().model_dump(mode="json"),
                }
            )
        return out

    def steps_hash(self) -> str:
        blob = json.dumps(self.canonical_steps(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def models(self) -> list[str]:
        """Registry names of every model weight the steps need."""
        from .ops.registry import registry

        names: list[str] = []
        for step in self.steps:
            for name in registry().get(step.op).models(step.parsed()):
                if name not in names:
                    names.append(name)
        return names


def _short(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "value"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


# -- presets -------------------------------------------------------------------------------


def _preset_files() -> dict[str, Any]:
    folder = resources.files("retouch.lib").joinpath("presets")
    return {p.name[: -len(".toml")]: p for p in folder.iterdir() if p.name.endswith(".toml")}


def preset_names() -> list[str]:
    return sorted(_preset_files())


def load_recipe_file(path: str | Path) -> Recipe:
    """Load a recipe from a TOML or JSON file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError(f"{p}: cannot read recipe file ({exc.strerror})") from None
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise RecipeError(
            f"{p}: not valid {'JSON' if p.suffix.lower() == '.json' else 'TOML'}: {exc}"
        ) from None
    return recipe_from_dict(data, origin=str(p))


def recipe_from_dict(data: dict[str, Any], origin: str = "recipe") -> Recipe:
    try:
        recipe = Recipe.model_validate(data)
    except UnknownNameError:
        raise
    except ValidationError as exc:
        raise RecipeError(f"{origin}: {_short(exc)}") from None
    recipe.validate_steps()
    return recipe


def load_preset(name: str) -> Recipe:
    """A shipped preset by name, or a recipe file if ``name`` is a path to one."""
    files = _preset_files()
    if name in files:
        data = tomllib.loads(files[name].read_text(encoding="utf-8"))
        data.setdefault("name", name)
        return recipe_from_dict(data, origin=f"preset {name}")
    if name.endswith((".toml", ".json")) or Path(name).is_file():
        return load_recipe_file(name)
    raise UnknownNameError("preset", name, files)


# -- overrides -------------------------------------------------------------------------------


def parse_value(text: str) -> Any:
    """``--set`` values: JSON literals (numbers, true/false, null, lists) or plain strings."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def apply_overrides(recipe: Recipe, overrides: list[str]) -> Recipe:
    """Apply ``step.param=value`` overrides and return a new, validated recipe.

    ``step`` is an operation id (its first occurrence; ``op#2`` for the second), a 1-based
    step number, or ``export`` for the export settings.
    """
    data = recipe.model_dump(mode="json")
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise RecipeError(
                f"override {item!r}: expected STEP.PARAM=VALUE, e.g. upscale.outscale=2"
            )
        key, raw = item.split("=", 1)
        target, param = key.rsplit(".", 1)
        value = parse_value(raw)
        if target == "export":
            data["export"][param] = value
            continue
        index = _find_step(data["steps"], target, item)
        data["steps"][index]["params"][param] = value
    return recipe_from_dict(data, origin="overrides")


def _find_step(steps: list[dict[str, Any]], target: str, item: str) -> int:
    if target.isdigit():
        index = int(target) - 1
        if not 0 <= index < len(steps):
            raise RecipeError(
                f"override {item!r}: the recipe has {len(steps)} steps, no step {target}"
            )
        return index
    op, _, nth = target.partition("#")
    wanted = int(nth) if nth.isdigit() else 1
    seen = 0
    for i, step in enumerate(steps):
        if step["op"] == op:
            seen += 1
            if seen == wanted:
                return i
    present = [s["op"] for s in steps]
    raise RecipeError(
        f"override {item!r}: no step {target!r} in the recipe (steps: {', '.join(present) or 'none'})"
    )
