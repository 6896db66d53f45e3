"""A community model file, imported on the command line, is usable in a run at once."""

from __future__ import annotations

import io
import zipfile

import numpy as np
from PIL import Image as PILImage
from typer.testing import CliRunner

from retouch.cli.main import app
from tests.spandrel_models import COMMUNITY, write_community_model


def _run(runner, src, override, out):
    return runner.invoke(
        app, ["run", str(src), "-p", "upscale-x4", "--set", override, "-o", str(out)]
    )


def test_imported_community_upscalers_run_from_the_command_line(
    prefect_server, retouch_home, tmp_path
):
    src = tmp_path / "photos"
    src.mkdir()
    rng = np.random.default_rng(0)
    PILImage.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(src / "a.png")
    runner = CliRunner()
    for kind in ("esrgan", "span", "swinir"):  # three spandrel architectures, no code change
        _builder, arch, scale = COMMUNITY[kind]
        path = write_community_model(tmp_path / "downloads", kind)
        done = runner.invoke(app, ["models", "import", str(path), "--name", f"c-{kind}"])
        assert done.exit_code == 0, done.output
        assert f"imported c-{kind}: {arch} x{scale}" in done.output
        assert f"--set upscale.model=c-{kind}" in done.output
        out = tmp_path / f"out-{kind}"
        result = _run(runner, src, f"upscale.model=c-{kind}", out)
        assert result.exit_code == 0, result.output
        with zipfile.ZipFile(out / "results.zip") as zf:
            names = [n for n in zf.namelist() if n.endswith("a.png")]
            assert names, zf.namelist()
            with PILImage.open(io.BytesIO(zf.read(names[0]))) as delivered:
                assert delivered.size == (40 * scale, 30 * scale)
    listing = runner.invoke(app, ["models", "list"], env={"COLUMNS": "200"})
    row = [line for line in listing.output.splitlines() if "c-span" in line][0]
    assert "upscale" in row and "spandrel" in row and "imported from" in row

    # A model of the wrong purpose stops the run before any image, naming both.
    wrong = _run(runner, src, "upscale.model=big-lama", tmp_path / "x")
    assert wrong.exit_code == 1
    assert "'big-lama' is an inpainting model, not an upscaling model" in " ".join(
        wrong.output.split()
    )
