"""lib/ is plain Python: it must not import Prefect, directly or through anything it imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

LIB = Path(__file__).resolve().parents[1] / "lib"


def test_no_prefect_import_statement_in_lib():
    offenders = []
    for path in LIB.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{path.relative_to(LIB)}:{node.lineno}"
                for n in names
                if n.split(".")[0] == "prefect"
            ]
    assert offenders == []


def test_importing_all_of_lib_loads_no_prefect_module():
    modules = sorted(
        "retouch.lib." + ".".join(p.relative_to(LIB).with_suffix("").parts)
        for p in LIB.rglob("*.py")
        if p.name != "__init__.py"
    )
    code = "import importlib, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
    code += "from retouch.lib.ops.registry import registry; registry()\n"
    code += "bad = [m for m in sys.modules if m == 'prefect' or m.startswith('prefect.')]\nprint(bad)\nsys.exit(1 if bad else 0)\n"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


# Which top-level packages each layer may import (besides itself). The entry points sit on
# top: the CLI may use everything; the web server talks to runs through lib (and runs them
# as CLI processes), never through flows or tasks; deployments package the flows.
ALLOWED = {
    "lib": set(),
    "tasks": {"lib"},
    "flows": {"lib", "tasks"},
    "deployments": {"lib", "tasks", "flows"},
    "web": {"lib"},
    "cli": {"lib", "tasks", "flows", "deployments", "web"},
}
# Front-end libraries belong to the entry points, not to the core.
FRONT_ENDS = {"typer", "rich", "fastapi", "starlette", "uvicorn"}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def test_each_layer_imports_only_the_layers_below_it():
    root = LIB.parent
    offenders = []
    for layer, allowed in ALLOWED.items():
        for path in (root / layer).rglob("*.py"):
            for lineno, module in _imports(path):
                parts = module.split(".")
                if parts[0] == "retouch" and len(parts) > 1 and parts[1] != layer:
                    if parts[1] not in allowed:
                        offenders.append(f"{path.relative_to(root)}:{lineno} imports {module}")
                if layer in ("lib", "tasks", "flows") and parts[0] in FRONT_ENDS:
                    offenders.append(f"{path.relative_to(root)}:{lineno} imports {module}")
    assert offenders == []


def test_no_relative_imports_so_every_import_names_its_layer():
    root = LIB.parent
    offenders = [
        f"{path.relative_to(root)}:{node.lineno}"
        for layer in ALLOWED
        for path in (root / layer).rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom) and node.level > 0
    ]
    assert offenders == []


def test_every_package_is_listed_in_pyproject():
    """An editable install finds a package the list leaves out; a wheel silently drops it."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["tool"]
    listed = set(config["setuptools"]["packages"])
    found = set()
    for name, folder in config["setuptools"]["package-dir"].items():
        for init in (root / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(root / folder).parts
            found.add(".".join((name, *rel)))
    assert sorted(found - listed) == []
