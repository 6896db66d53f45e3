"""The ``load`` case: what loading a model through retouch costs against spandrel's own loader.

Full-size random-weight networks, saved as their community files are:

- ``community-x4.pth``: an ESRGAN x4 (RRDB, 64 filters, 23 blocks: the 67 MB
  "4x_*.pth" files of the model databases), imported with ``retouch models import`` and then
  loaded by retouch's spandrel family (from the stored safetensors);
- ``lama-state.pth``: a big-lama generator (51M parameters) as a bare state dict, imported
  as an inpainting model and loaded by retouch's LaMa family;
- ``RealESRGAN_x4plus.pth`` (``params_ema``): the shipped realesrgan-x4plus, loaded by
  retouch's official path (``RealESRGANer``), against spandrel loading the same file: which
  of the two is faster for that family.

The baseline is spandrel's ``ModelLoader().load_from_file(FILE)`` on the original file, as
chaiNNer and ComfyUI load. Each load runs in a fresh process (imports of torch, spandrel and
retouch's model modules done before the clock starts, on both sides: only the load is timed), sides alternating, the fastest
of ``repeats`` counting. Ratio = retouch / spandrel load time (<= 1.0: no more than spandrel's).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

_MEASURE = r"""
import json, sys, time
import torch, spandrel
side, path, name = sys.argv[1], sys.argv[2], sys.argv[3]
from retouch.lib.models import specs
from retouch.lib.models.families import get_family
from retouch.lib.models.compat import ensure_compat
ensure_compat()
import realesrgan  # noqa: F401  (imported by both sides before the clock starts)
from retouch.lib.models import fetch, loaders, weightfile  # noqa: F401
import safetensors.torch  # noqa: F401
spec = specs.get_spec(name)
family = get_family(spec.kind)  # imports the family's module
t = time.perf_counter()
if side == "spandrel":
    model = spandrel.ModelLoader().load_from_file(path).eval()
else:
    model = family.load(spec, device="cpu", dtype="fp32")
print(json.dumps({"load_s": time.perf_counter() - t}))
"""


def _build(folder: Path) -> dict[str, Path]:
    import torch
    from spandrel.architectures.ESRGAN import ESRGAN
    from spandrel.architectures.LaMa import LaMa

    from retouch.lib.models.loaders import build_sr_network
    from retouch.lib.models.specs import get_spec

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    files = {
        "community-x4": folder / "community-x4.pth",
        "lama": folder / "lama-state.pth",
        "realesrgan-x4plus": folder / "RealESRGAN_x4plus.pth",
    }
    torch.save(
        ESRGAN(in_nc=3, out_nc=3, num_filters=64, num_blocks=23, scale=4).state_dict(),
        files["community-x4"],
    )
    torch.save(LaMa(in_nc=4, out_nc=3).state_dict(), files["lama"])
    net = build_sr_network(get_spec("realesrgan-x4plus"))
    torch.save({"params_ema": net.state_dict()}, files["realesrgan-x4plus"])
    return files


def _one(side: str, path: Path, name: str, env: dict[str, str]) -> float:
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, side, str(path), name],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{side} load of {path.name} failed: {out.stderr[-2000:]}")
    return float(json.loads(out.stdout.strip().splitlines()[-1])["load_s"])


def run(root: Path, env: dict[str, str], repeats: int) -> list[dict[str, Any]]:
    """Build, import and time the loads; one row per model."""
    files = _build(root / "load-files")
    env = {**env, "RETOUCH_MODEL_DIR": str(root / "load-models")}
    setup = (
        "from retouch.lib.models import imported, specs, fetch\n"
        f"imported.import_model({str(files['community-x4'])!r}, name='community-x4')\n"
        f"imported.import_model({str(files['lama'])!r}, name='lama-imported')\n"
        f"fetch.import_file('realesrgan-x4plus', {str(files['realesrgan-x4plus'])!r}, force=True)\n"
    )
    subprocess.run([sys.executable, "-c", setup], env=env, check=True, timeout=900)
    cases = [
        ("community-x4", files["community-x4"], "ESRGAN x4 (RRDB 23 blocks), spandrel family"),
        ("lama-imported", files["lama"], "LaMa (51M), LaMa family"),
        ("realesrgan-x4plus", files["realesrgan-x4plus"], "RRDBNet x4plus, official RealESRGANer"),
    ]
    rows = []
    for name, path, what in cases:
        walls: dict[str, list[float]] = {"spandrel": [], "retouch": []}
        for i in range(repeats):
            order = ("spandrel", "retouch") if i % 2 == 0 else ("retouch", "spandrel")
            for side in order:
                walls[side].append(_one(side, path, name, env))
        best = {side: min(v) for side, v in walls.items()}
        official = name == "realesrgan-x4plus"
        row: dict[str, Any] = {
            "case": "load",
            "model": name,
            "what": what,
            "file_mb": round(os.path.getsize(path) / 1e6, 1),
            "spandrel_load_s": round(best["spandrel"], 3),
            "retouch_load_s": round(best["retouch"], 3),
            "ratio": round(best["retouch"] / best["spandrel"], 2),
            "walls_s": {k: [round(x, 3) for x in v] for k, v in walls.items()},
        }
        if official:  # which loader to keep for this family: reported, not a target
            row["target"] = "none (official path vs spandrel for the same file)"
        else:
            row["target"] = "retouch load time <= 1.0x spandrel's load_from_file"
            row["pass"] = best["retouch"] <= best["spandrel"]
        rows.append(row)
    return rows


def lines(rows: list[dict[str, Any]]) -> list[str]:
    return [
        f"load {r['model']} ({r['what']}, {r['file_mb']} MB file): spandrel "
        f"{r['spandrel_load_s']:.2f} s, retouch {r['retouch_load_s']:.2f} s, ratio "
        f"{r['ratio']:.2f}; target {r['target']}"
        + ("" if "pass" not in r else f": {'pass' if r['pass'] else 'FAIL'}")
        for r in rows
        if "model" in r
    ]
