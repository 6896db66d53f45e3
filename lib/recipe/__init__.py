"""Recipes: an ordered list of steps plus export settings. Presets are recipes shipped as TOML.

:mod:`.models` holds the validated models; :mod:`.loading` reads presets and recipe files
and applies ``--set`` overrides.
"""

from retouch.lib.recipe.loading import (
    DEFAULT_PRESET,
    apply_overrides,
    is_shipped_preset,
    is_user_preset,
    load_preset,
    load_recipe_file,
    parse_value,
    preset_names,
    recipe_from_dict,
    save_user_preset,
    user_preset_dir,
)
from retouch.lib.recipe.models import (
    OUTPUT_FORMATS,
    PROFILE_FIELDS,
    ExportProfile,
    ExportSettings,
    Recipe,
    Resize,
    Step,
    SyncSettings,
    VideoSettings,
    Watermark,
    WatermarkPosition,
)

__all__ = [
    "DEFAULT_PRESET",
    "OUTPUT_FORMATS",
    "PROFILE_FIELDS",
    "ExportProfile",
    "ExportSettings",
    "Recipe",
    "Resize",
    "Step",
    "SyncSettings",
    "VideoSettings",
    "Watermark",
    "WatermarkPosition",
    "apply_overrides",
    "is_shipped_preset",
    "is_user_preset",
    "load_preset",
    "load_recipe_file",
    "parse_value",
    "preset_names",
    "recipe_from_dict",
    "save_user_preset",
    "user_preset_dir",
]
