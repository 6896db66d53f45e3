"""SIGKILL in the middle of a run, then the same command again: it finishes, reuses every
image already done (no model call for them), delivers outputs byte-identical to an
uninterrupted run, and leaves no temporary or partial file under a final name."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from retouch.lib.storage import TEMP_MARKER
from tests.tiny_models import install_tiny_models

REPO = Path(__file__).resolve().parents[2]
COUNT = 10
RECIPE = """
name = "resume"
[[steps]]
op = "upscale"
params = { model = "realesr-general-x4v3", tile = 0 }
[export]
format = "png"
"""


def _source(folder: Path) -> None:
    folder.mkdir()
    rng = np.random.default_rng(11)
    for i in range(COUNT):
        arr = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
        PILImage.fromarray(arr).save(folder / f"img{i:02d}.png")


def _env(tmp_path: Path, model_dir: Path, workspace: Path) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ)
    env.update(
        {
            "PREFECT_API_URL": str(PREFECT_API_URL.value()),
            "PREFECT_HOME": str(tmp_path / "prefect-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "RETOUCH_HOME": str(tmp_path / "home"),
            "RETOUCH_MODEL_DIR": str(model_dir),
            "RETOUCH_WORKSPACE": str(workspace),
            "RETOUCH_OFFLINE": "1",
            "RETOUCH_WORKERS": "1",
            "RETOUCH_CHUNK_SIZE": "1",
            "RETOUCH_TEST_MODEL_DELAY": "0.4",
        }
    )
    return env


def _cmd(src: Path, recipe: Path, dest: Path) -> list[str]:
    return [sys.executable, "-m", "tests.robust._tiny_cli", "run", str(src), "-p", str(recipe),
            "-o", str(dest)]  # fmt: skip


def _committed(workspace: Path) -> list[Path]:
    return sorted((workspace / "results").glob("*/*.json"))


def _members(dest: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(dest / "results.zip") as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if TEMP_MARKER in p.name]


def _check_workspace_results(workspace: Path) -> None:
    """Everything under a final name in the workspace results is complete."""
    from retouch.lib.imageio import decode

    for path in (workspace / "results").rglob("*"):
        if path.is_dir() or TEMP_MARKER in path.name:
            continue
        if path.suffix == ".json":
            meta = json.loads(path.read_text())
            assert path.with_suffix(".png").exists(), f"{path} commits a missing result"
            img = decode(path.with_suffix(".png").read_bytes(), path.name, pixel_limit=1 << 40)
            assert (img.width, img.height) == (meta["width"], meta["height"])
        elif path.suffix == ".png":
            decode(path.read_bytes(), path.name, pixel_limit=1 << 40)  # raises if partial
        else:
            raise AssertionError(f"unexpected file in the workspace results: {path}")


def test_sigkill_mid_run_then_rerun_resumes_without_recomputing(
    prefect_server, tmp_path, monkeypatch
):
    model_dir = install_tiny_models(tmp_path / "models", monkeypatch, faces=None)
    src, recipe = tmp_path / "src", tmp_path / "resume.toml"
    _source(src)
    recipe.write_text(RECIPE)
    dest, workspace = tmp_path / "dest", tmp_path / "ws"
    env = _env(tmp_path, model_dir, workspace)

    proc = subprocess.Popen(
        _cmd(src, recipe, dest), cwd=REPO, env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 150
    try:
        while len(_committed(workspace)) < 3:
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the run never got going"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    done = len(_committed(workspace))
    assert 0 < done < COUNT, f"kill came too late or too early ({done} of {COUNT} done)"
    _check_workspace_results(workspace)
    assert not (dest / "results.zip").exists() and not (dest / "manifest.json").exists()

    # The same command again: finishes, and only the unfinished images reach the model.
    rerun = subprocess.run(_cmd(src, recipe, dest), cwd=REPO, env=env, capture_output=True,
                           timeout=300)  # fmt: skip
    assert rerun.returncode == 0, rerun.stdout.decode()[-3000:] + rerun.stderr.decode()[-3000:]
    manifest = json.loads((dest / "manifest.json").read_text())
    images = manifest["images"]
    assert all(img["status"] == "ok" for img in images)
    assert manifest["summary"]["reused"] == done
    assert sum(img["model_calls"] for img in images) == COUNT - done
    assert all(img["model_calls"] == 0 for img in images if img["reused"])

    # An uninterrupted run into another destination and workspace gives the same bytes.
    clean_dest = tmp_path / "clean-dest"
    clean = subprocess.run(
        _cmd(src, recipe, clean_dest), cwd=REPO, capture_output=True, timeout=300,
        env={**env, "RETOUCH_WORKSPACE": str(tmp_path / "ws-clean"), "RETOUCH_TEST_MODEL_DELAY": "0"},
    )  # fmt: skip
    assert clean.returncode == 0, clean.stderr.decode()[-3000:]
    clean_manifest = json.loads((clean_dest / "manifest.json").read_text())
    assert sum(img["model_calls"] for img in clean_manifest["images"]) == COUNT
    resumed, uninterrupted = _members(dest), _members(clean_dest)
    assert sorted(resumed) == [f"img{i:02d}.png" for i in range(COUNT)]
    assert resumed == uninterrupted

    # Nothing temporary or partial is left where a user looks.
    assert _temp_files(dest) == []
    assert sorted(p.name for p in dest.iterdir()) == ["manifest.json", "report.html", "results.zip"]
    _check_workspace_results(workspace)
