"""``retouch presets``: the shipped and saved recipes (list, show, save)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from retouch.cli.common import PresetOpt, console, out, print_json, reported
from retouch.lib.recipe import DEFAULT_PRESET

presets_app = typer.Typer(
    help="Recipes: shipped and saved presets; list, show or save one.", no_args_is_help=True
)


@presets_app.command("list")
@reported()
def presets_list() -> None:
    """List the shipped presets and your saved ones (`retouch tune ... --save NAME`)."""
    from retouch.lib.recipe import is_user_preset, load_preset, preset_names

    table = Table(show_header=True)
    table.add_column("preset", no_wrap=True)
    table.add_column("steps")
    table.add_column("models")
    table.add_column("description")
    for name in preset_names():
        recipe = load_preset(name)
        table.add_row(
            f"{name} (saved)" if is_user_preset(name) else name,
            " → ".join(s.op for s in recipe.steps),
            ", ".join(recipe.models()) or "none",
            escape(recipe.description),
        )
    out.print(table)


@presets_app.command("save")
@reported()
def presets_save(
    name: Annotated[str, typer.Argument(help="Name of the new preset")],
    preset: PresetOpt = DEFAULT_PRESET,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", "-s", help="Override STEP.PARAM=VALUE")
    ] = None,
) -> None:
    """Save a preset (or recipe file) with overrides as your own preset, every parameter
    written out. The JSON file it prints can be shared: anyone can pass it to --preset.

    Example: retouch presets save studio-web -p web-ready --set sharpen.amount=0.4
    """
    from retouch.lib.recipe import apply_overrides, load_preset, save_user_preset

    path = save_user_preset(name, apply_overrides(load_preset(preset), overrides or []))
    console.print(f"saved preset [bold]{escape(name)}[/]: {escape(str(path))}")


@presets_app.command("show")
@reported()
def presets_show(name: Annotated[str, typer.Argument(help="Preset name or recipe file")]) -> None:
    """Show a preset with every parameter (defaults filled in), as JSON."""
    from retouch.lib.recipe import load_preset

    recipe = load_preset(name)
    data = recipe.model_dump(mode="json")
    data["steps"] = [{"op": s["op"], "params": s["params"]} for s in recipe.canonical_steps()]
    print_json(data)


def register(app: typer.Typer) -> None:
    """Add ``presets list``, ``show`` and ``save`` to the ``retouch`` command line."""
    app.add_typer(presets_app, name="presets")
