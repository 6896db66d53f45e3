"""The CLI's registry and preset commands, and the events file of a run."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from typer.testing import CliRunner

from retouch.cli.main import app


def test_presets_list_names_every_shipped_preset():
    result = CliRunner().invoke(app, ["presets", "list"])
    assert result.exit_code == 0
    for name in (
        "quick",
        "portrait-restore",
        "upscale-x4",
        "anime-upscale",
        "remove-objects",
        "remove-objects-fast",
        "web-ready",
    ):
        assert name in result.output


def test_presets_show_prints_every_parameter_with_defaults():
    result = CliRunner().invoke(app, ["presets", "show", "quick"])
    assert result.exit_code == 0
    data = json.loads(result.output)
    sharpen = [s for s in data["steps"] if s["op"] == "sharpen"][0]["params"]
    assert sharpen == {"amount": 0.6, "radius": 1.2, "threshold": 6}
    colour = [s for s in data["steps"] if s["op"] == "auto_color"][0]["params"]
    assert colour["white_balance"] == "neutral"  # a default filled in, not written in the preset
    assert data["export"]["format"] == "jpg"


def test_presets_show_unknown_is_exit_1_with_valid_names():
    result = CliRunner().invoke(app, ["presets", "show", "nope"])
    assert result.exit_code == 1
    assert "unknown preset 'nope'" in result.output and "portrait-restore" in result.output


def test_models_import_then_path_and_list_show_it(tmp_path, retouch_home):
    from retouch.lib.models.compat import ensure_compat

    ensure_compat()  # basicsr needs the torchvision shim before realesrgan can be imported
    from realesrgan.archs.srvgg_arch import SRVGGNetCompact

    net = SRVGGNetCompact(3, 3, num_feat=8, num_conv=2, upscale=4, act_type="prelu")
    weights = tmp_path / "mine.pth"
    torch.save({"params_ema": net.state_dict()}, weights)
    runner = CliRunner()

    # The file is not the official one: refused unless forced, and the reason says so.
    refused = runner.invoke(app, ["models", "import", "realesr-general-x4v3", str(weights)])
    assert refused.exit_code == 1
    assert "realesr-general-x4v3" in refused.output

    forced = runner.invoke(
        app, ["models", "import", "realesr-general-x4v3", str(weights), "--force"]
    )
    assert forced.exit_code == 0, forced.output
    target = retouch_home / "models" / "realesr-general-x4v3.pth"
    assert target.read_bytes() == weights.read_bytes()
    assert runner.invoke(app, ["models", "path", "realesr-general-x4v3"]).output.strip() == str(
        target
    )
    assert runner.invoke(app, ["models", "path"]).output.strip() == str(retouch_home / "models")
    listing = CliRunner().invoke(app, ["models", "list"], terminal_width=200)
    row = [line for line in listing.output.splitlines() if "realesr-general-x4v3" in line][0]
    assert " yes " in row


def test_models_list_is_readable_at_80_columns():
    from retouch.lib.models import specs

    listing = CliRunner().invoke(app, ["models", "list"], terminal_width=80)
    assert listing.exit_code == 0, listing.output
    lines = listing.output.splitlines()
    table = [line for line in lines if line.startswith(("│", "┃", "┏", "└"))]
    assert table and all(len(line) <= 80 for line in table)
    for spec in specs.all_specs():  # every name whole, on its own row
        assert any(line.startswith(f"│ {spec.name} ") for line in table), spec.name
    assert any(line.startswith("model folder: ") for line in lines)


def test_models_unknown_name_lists_valid_ones():
    result = CliRunner().invoke(app, ["models", "pull", "esrgan-ultra"])
    assert result.exit_code == 1
    assert "unknown model 'esrgan-ultra'" in result.output and "realesrgan-x4plus" in result.output


def test_run_events_file_has_one_json_line_per_event(prefect_server, tmp_path):
    """`--events FILE`: what a front end follows - every image through every phase, the
    failing file's reason, review scores and previews, and the summary at the end."""
    import numpy as np
    from PIL import Image as PILImage

    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    PILImage.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(src / "a.png")
    (src / "b.jpg").write_text("not a picture")
    log = tmp_path / "events" / "run.jsonl"
    result = CliRunner().invoke(
        app,
        ["run", str(src), "-p", "web-ready", "-o", str(tmp_path / "out"), "--events", str(log)],
    )
    assert result.exit_code == 2, result.output
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert events[0]["event"] == "run" and events[0]["total"] == 2
    assert events[-1]["event"] == "done" and events[-1]["summary"]["succeeded"] == 1
    a = [e for e in events if e["event"] == "image" and e["name"] == "a.png"]
    assert [e["phase"] for e in a] == ["prepare", "process", "review", "export"]
    review = a[2]
    assert review["ok"] and review["verdict"] in ("improved", "unchanged", "worse")
    assert all(Path(p).is_file() for p in review["thumbs"].values())
    assert a[3]["output_name"] == "a.jpg"
    b = [e for e in events if e["event"] == "image" and e["name"] == "b.jpg"]
    assert b[0]["phase"] == "prepare" and not b[0]["ok"] and "not" in b[0]["reason"]


def test_help_texts_break_at_the_terminal_width_not_mid_sentence():
    import typer

    from retouch.cli.common import reflow_help

    # The docstrings' own line breaks used to show in `retouch --help`'s command list.
    commands = typer.main.get_command(app).commands
    assert commands["rollback"].help.startswith(
        "Make an older version of an image current again (`retouch export RUN` re-delivers "
        "a run with it). Example: retouch rollback photos/a.jpg 1"
    )
    assert "overrides), record them as new versions" in commands["regenerate"].help
    assert "\n  retouch regenerate " in commands["regenerate"].help  # examples keep their lines
    doc = """One line
    and its end.

    Examples:
      retouch run a --out b
      retouch run c --out d
    """
    assert reflow_help(doc) == (
        "One line and its end.\n\nExamples:\n  retouch run a --out b\n  retouch run c --out d"
    )
