"""Where recipes come from: shipped and saved presets, recipe files, ``--set`` overrides."""

from __future__ import annotations

import json
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from retouch.lib.errors import RecipeError, UnknownNameError
from retouch.lib.recipe.models import PROFILE_FIELDS, Recipe, validation_text


def _preset_files() -> dict[str, Any]:
    folder = resources.files("retouch.lib").joinpath("presets")
    return {p.name[: -len(".toml")]: p for p in folder.iterdir() if p.name.endswith(".toml")}


def user_preset_dir() -> Path:
    """Where saved presets live: ``$RETOUCH_HOME/presets`` (one JSON file each)."""
    from retouch.lib.settings import get_settings

    return get_settings().home / "presets"


def _user_preset_files() -> dict[str, Path]:
    folder = user_preset_dir()
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in folder.glob("*.json") if p.is_file()}


DEFAULT_PRESET = "quick"
"""The preset of every entry point that is not told one: ``retouch run``, ``submit``, the
web page, and the deployments' scheduled and triggered runs."""


def preset_names() -> list[str]:
    """Shipped presets, then the user's saved ones."""
    return sorted(_preset_files()) + sorted(set(_user_preset_files()) - set(_preset_files()))


def is_shipped_preset(name: str) -> bool:
    return name in _preset_files()


def is_user_preset(name: str) -> bool:
    return name in _user_preset_files() and name not in _preset_files()


def save_user_preset(name: str, recipe: Recipe) -> Path:
    """Save ``recipe`` as the user preset ``name`` (every parameter written out, so the file
    is complete and can be shared as it is). Shipped preset names can't be reused.

    Raises:
        RecipeError: the name is not a plain name, or is the name of a shipped preset.
    """
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
        raise RecipeError(
            f"preset name {name!r}: use letters, digits, '-', '_' or '.' (at most 64 characters)"
        )
    if name in _preset_files():
        raise RecipeError(f"preset name {name!r} is a shipped preset: choose another name")
    data = recipe.model_dump(mode="json")
    data["name"] = name
    data["steps"] = [{"op": s["op"], "params": s["params"]} for s in recipe.canonical_steps()]
    folder = user_preset_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    tmp = path.with_name(f".{name}.json.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)
    return path


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
        raise RecipeError(f"{origin}: {validation_text(exc)}") from None
    recipe.validate_steps()
    return recipe


def load_preset(name: str) -> Recipe:
    """A shipped preset by name, a saved user preset, or a recipe file if ``name`` is a
    path to one."""
    files = _preset_files()
    if name in files:
        data = tomllib.loads(files[name].read_text(encoding="utf-8"))
        data.setdefault("name", name)
        return recipe_from_dict(data, origin=f"preset {name}")
    user = _user_preset_files()
    if name in user:
        return load_recipe_file(user[name])
    if name.endswith((".toml", ".json")) or Path(name).is_file():
        return load_recipe_file(name)
    raise UnknownNameError("preset", name, preset_names())


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
    step number, or ``export`` for the export settings, with dotted paths into them:
    ``export.watermark.text=PROOF``, ``export.sync.dest=s3://b/p``,
    ``export.profiles.web.quality=80`` (a profile by name or 1-based number). A profile
    setting given at ``export`` level (``export.quality=80``) applies to every profile.
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
        if target == "export" or target.startswith("export."):
            _set_export(data["export"], target.split(".")[1:], param, value, item)
            continue
        index = _find_step(data["steps"], target, item)
        data["steps"][index]["params"][param] = value
    return recipe_from_dict(data, origin="overrides")


def _set_export(export: dict[str, Any], path: list[str], param: str, value: Any, item: str) -> None:
    node: Any = export
    walked = ["export"]
    for part in path:
        if isinstance(node, list):
            node = _find_profile(node, part, item)
        elif isinstance(node, dict):
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
        else:
            raise RecipeError(f"override {item!r}: {'.'.join(walked)} has no field {part!r}")
        walked.append(part)
    if not isinstance(node, dict):
        raise RecipeError(f"override {item!r}: {'.'.join(walked)} is not a group of settings")
    node[param] = value
    if not path and param in PROFILE_FIELDS and param != "name":
        for profile in export.get("profiles") or []:
            profile[param] = value


def _find_profile(profiles: list[Any], key: str, item: str) -> Any:
    if key.isdigit() and 1 <= int(key) <= len(profiles):
        return profiles[int(key) - 1]
    for profile in profiles:
        if isinstance(profile, dict) and profile.get("name") == key:
            return profile
    names = [str(p.get("name")) for p in profiles if isinstance(p, dict)]
    raise RecipeError(
        f"override {item!r}: no export profile {key!r} (profiles: {', '.join(names) or 'none'})"
    )


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
