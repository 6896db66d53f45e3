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
