"""``retouch models``: the model registry (list, download, import, remove, locate weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from retouch.cli.common import console, fail, out, reported

models_app = typer.Typer(
    help="The model registry: list, download, import and locate weights.", no_args_is_help=True
)


@models_app.command("list")
@reported()
def models_list() -> None:
    """List the registered models (shipped and imported) and whether their weights are present."""
    from retouch.lib.models import fetch, specs

    table = Table(show_header=True)
    table.add_column("name", no_wrap=True)
    for col in ("for", "scale", "size", "present"):
        table.add_column(col, no_wrap=True)
    # Family, file and origin only where they fit (a full path made the table unreadable at
    # 80 columns); `models path NAME` prints any model's full path.
    wide = out.width >= 110
    if wide:
        table.add_column("family", no_wrap=True)
        table.add_column("file / from", no_wrap=True)
    for spec in specs.all_specs():
        st = fetch.status(spec.name)
        size = f"{spec.size / 1e6:.1f} MB" if spec.size else "?"
        row = [
            spec.name,
            specs.purpose_of(spec),
            str(spec.scale or ""),
            size,
            "bundled" if st.get("bundled") else "yes" if st.get("present") else "no",
        ]
        where = f"imported from {spec.origin}" if spec.imported else Path(st["path"]).name
        table.add_row(*row, *([spec.kind, escape(where)] if wide else []))
    out.print(table)
    out.print(
        f"model folder: {escape(str(fetch.model_dir()))}  "
        "(`retouch models path NAME` prints a model's full path)",
        highlight=False,
        soft_wrap=True,
    )


@models_app.command("pull")
@reported()
def models_pull(
    name: Annotated[str, typer.Argument(help="Model name, e.g. realesrgan-x4plus")],
    force: Annotated[bool, typer.Option(help="Download again even if present")] = False,
) -> None:
    """Download a model's weights (from RETOUCH_MODEL_MIRROR, else the official URL) and verify them.

    Example: retouch models pull gfpgan-v1.4
    """
    from retouch.lib.models import fetch

    typer.echo(str(fetch.pull(name, force=force)))


@models_app.command("import")
@reported()
def models_import(
    first: Annotated[
        str, typer.Argument(metavar="FILE|NAME", help="A model file, or a shipped model's name")
    ],
    second: Annotated[
        str | None,
        typer.Argument(metavar="[FILE]", help="The file, when the first argument is a name"),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Register the model under this name")
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            help="Replace an imported model of the same name; for a shipped name, accept a "
            "file whose size/checksum differ from the official one"
        ),
    ] = False,
    allow_noncommercial: Annotated[
        bool,
        typer.Option(
            "--allow-noncommercial",
            help="Accept architectures whose licences forbid commercial use "
            "(spandrel_extra_arches)",
        ),
    ] = False,
) -> None:
    """Bring a model: a community file of any architecture spandrel knows, or a shipped model's
    weights downloaded by hand.

    `retouch models import FILE [--name NAME]` detects the architecture, scale and purpose
    (upscaling, faces, inpainting) from the weights, stores them as safetensors in the model
    folder and registers the model: it is then usable in every step of its purpose, e.g.
    `retouch run photos --set upscale.model=NAME`. Only tensors are read; a file whose
    pickle would run code is refused.

    `retouch models import NAME FILE` provides the weights of a shipped model (checked
    against the official size and checksum; big-lama also takes the authors' best.ckpt or a
    state dict, converted once).

    Examples:
      retouch models import ~/Downloads/4x_NMKD-Siax_200k.pth --name siax
      retouch models import big-lama ~/Downloads/big-lama.pt
    """
    from retouch.lib.models import imported, specs

    if second is not None and first in specs.SPECS:
        path = imported.import_into_shipped(specs.SPECS[first], second, force=force)
        typer.echo(str(path))
        return
    if second is None and first in specs.SPECS:
        raise fail(f"give the file to import as {first!r}: retouch models import {first} FILE")
    if second is not None:
        raise fail(
            f"{first!r} is not a shipped model; to import a file under a new name use "
            f"`retouch models import FILE --name NAME`"
        )
    if name is not None and name in specs.SPECS:
        path = imported.import_into_shipped(specs.SPECS[name], first, force=force)
        typer.echo(str(path))
        return
    spec = imported.import_model(first, name, force=force, allow_noncommercial=allow_noncommercial)
    op = {"upscale": "upscale.model", "face": "restore_faces.model", "inpaint": "inpaint.model"}
    use = op.get(specs.purpose_of(spec), "")
    out.print(
        f"imported {escape(spec.name)}: {escape(spec.description)}; "
        f"use it with --set {use}={escape(spec.name)}",
        highlight=False,
        soft_wrap=True,
    )
    if spec.license.startswith("NON-COMMERCIAL"):
        console.print(f"[yellow]note:[/] {escape(spec.license)}", highlight=False)


@models_app.command("remove")
@reported()
def models_remove(name: Annotated[str, typer.Argument(help="An imported model's name")]) -> None:
    """Forget an imported model and delete its stored weights (shipped models stay)."""
    from retouch.lib.models import imported, specs

    if name in specs.SPECS:
        raise fail(f"{name!r} is a shipped model; delete its file from the model folder instead")
    if not imported.remove(name):
        raise fail(f"no imported model named {name!r} (see `retouch models list`)")
    typer.echo(f"removed {name}")


@models_app.command("path")
@reported()
def models_path(
    name: Annotated[
        str | None, typer.Argument(help="Model name (omit for the model folder)")
    ] = None,
) -> None:
    """Print the model folder, or where a model's weight file is (or would be) kept."""
    from retouch.lib.models import fetch
    from retouch.lib.settings import get_settings

    if name is None:
        typer.echo(str(get_settings().resolved_model_dir()))
        return
    typer.echo(str(fetch.status(name)["path"]))


def register(app: typer.Typer) -> None:
    """Add ``models list``, ``pull``, ``import``, ``remove`` and ``path`` to the ``retouch``
    command line."""
    app.add_typer(models_app, name="models")
