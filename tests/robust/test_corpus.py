"""The hostile corpus through whole `retouch run`s: every file processed faithfully or
reported with its exact reason, the exit code 2, every good image delivered.

Animated GIF and multi-page TIFF: the first frame (page) is processed and delivered; the
manifest records the input's frame count (``input.frames``), and the output holds one frame.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from typer.testing import CliRunner

from retouch.cli.main import app
from tests.robust.corpus import DPI, EXIF_MAKE, build_corpus
from tests.tiny_models import install_tiny_models

CLASSIC_RECIPE = """
name = "corpus"
[[steps]]
op = "sharpen"
params = { amount = 0.3, radius = 1.0, threshold = 0 }
[export]
format = "same"
"""

UPSCALE_RECIPE = """
name = "corpus-upscale"
[[steps]]
op = "upscale"
params = { model = "realesr-general-x4v3", outscale = 2, tile = 0 }
[export]
format = "same"
"""


def _run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(app, args, terminal_width=200)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def _outputs(dest: Path) -> tuple[dict, dict[str, bytes]]:
    manifest = json.loads((dest / "manifest.json").read_text())
    with zipfile.ZipFile(dest / "results.zip") as zf:
        assert zf.testzip() is None
        files = {n: zf.read(n) for n in zf.namelist()}
    return manifest, files


def _block(arr: np.ndarray, top: bool, left: bool) -> np.ndarray:
    """Mean RGB of a 4x4 block well inside one corner (HxWx3 RGB)."""
    ys = slice(1, 5) if top else slice(-5, -1)
    xs = slice(1, 5) if left else slice(-5, -1)
    return arr[ys, xs].reshape(-1, 3).mean(axis=0)


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory, prefect_server):
    """One classic-only run over the whole corpus (module-scoped: it is the slow part)."""
    root = tmp_path_factory.mktemp("corpus")
    src = root / "src"
    cases = build_corpus(src)
    recipe = root / "corpus.toml"
    recipe.write_text(CLASSIC_RECIPE)
    dest = root / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RETOUCH_HOME", str(root / "home"))
        mp.setenv("RETOUCH_OFFLINE", "1")
        from retouch.lib.settings import reload_settings

        reload_settings()
        code, output = _run(["run", str(src), "-p", str(recipe), "-o", str(dest)])
    reload_settings()
    manifest, files = _outputs(dest)
    return cases, code, output, manifest, files, src


def test_corpus_has_every_case_of_the_issue(corpus_run):
    cases = corpus_run[0]
    assert len(cases) >= 25
    names = {c.name for c in cases}
    for needed in ("zero-byte.jpg", "bomb.png", "animated.gif", "pages.tif", "wide.png",
                   "one-pixel.png", "three.png", "-leading-dash.jpg", "sub/inner.jpg",
                   "notes.txt", *(f"orient-{o}.jpg" for o in range(1, 9))):  # fmt: skip
        assert needed in names


def test_corpus_run_exits_2_and_delivers_every_good_image(corpus_run):
    cases, code, output, manifest, files, _src = corpus_run
    assert code == 2, output
    by_name = {img["name"]: img for img in manifest["images"]}
    expected_images = {c.name for c in cases if c.outcome != "skipped"}
    assert set(by_name) == expected_images
    good = [c for c in cases if c.outcome == "ok"]
    assert manifest["summary"]["succeeded"] == len(good)
    assert manifest["summary"]["failed"] == len([c for c in cases if c.outcome == "failed"])
    # Every good image is in the ZIP exactly once, with the bytes the manifest describes.
    assert sorted(files) == sorted(by_name[c.name]["output_name"] for c in good)
    import hashlib

    for c in good:
        img = by_name[c.name]
        assert img["status"] == "ok", (c.name, img["reason"])
        assert hashlib.sha256(files[img["output_name"]]).hexdigest() == img["output_sha256"]


def test_broken_files_fail_with_their_exact_reason(corpus_run):
    cases, _code, output, manifest, _files, _src = corpus_run
    by_name = {img["name"]: img for img in manifest["images"]}
    for c in cases:
        if c.outcome != "failed":
            continue
        img = by_name[c.name]
        assert img["status"] == "failed" and img["failed_phase"] == "prepare", c.name
        assert img["reason"] == c.reason, c.name
        assert img["output_name"] is None
    assert "zero-byte.jpg" in output  # the CLI's failed-images table names them


def test_non_images_are_skipped_with_a_reason(corpus_run):
    cases, _code, _output, manifest, _files, src = corpus_run
    skipped = {Path(s["uri"]).relative_to(src).as_posix(): s["reason"] for s in manifest["skipped"]}
    for c in cases:
        if c.outcome == "skipped":
            assert skipped[c.name] == c.reason


def _decoded(files: dict[str, bytes], img: dict) -> PILImage.Image:
    pil = PILImage.open(io.BytesIO(files[img["output_name"]]))
    pil.load()
    return pil


def test_good_images_keep_size_mode_depth_alpha_and_orientation(corpus_run):
    cases, _code, _output, manifest, files, _src = corpus_run
    by_name = {img["name"]: img for img in manifest["images"]}
    for c in (c for c in cases if c.outcome == "ok"):
        img, exp = by_name[c.name], c.expect
        data = files[img["output_name"]]
        pil = _decoded(files, img)
        where = f"{c.name} -> {img['output_name']}"
        assert pil.size == exp["size"], where
        assert getattr(pil, "n_frames", 1) == 1, where
        if "format" in exp:
            assert img["output"]["format"] == exp["format"], where
        if "mode" in exp:
            assert pil.mode == exp["mode"], where
        if "bit_depth" in exp:
            assert img["output"]["bit_depth"] == exp["bit_depth"], where
            if exp["bit_depth"] == 16:
                import cv2

                arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
                assert arr.dtype == np.uint16, where
                channels = 1 if arr.ndim == 2 else arr.shape[2]
                assert channels == (1 if exp.get("gray") else 3) + exp["alpha"], where
        if "alpha" in exp:
            assert img["output"]["alpha"] is exp["alpha"], where
            assert img["input"]["alpha"] is exp["alpha"], where
            assert ("A" in pil.mode or "transparency" in pil.info) is exp["alpha"], where
        if exp.get("gray"):
            assert img["input"]["gray"] and img["output"]["gray"], where
        if "frames_in" in exp:
            assert img["input"]["frames"] == exp["frames_in"], where
        if exp.get("upright"):
            rgb = np.asarray(pil.convert("RGB")).astype(float)
            tl, br = _block(rgb, True, True), _block(rgb, False, False)
            assert tl[0] > 150 and tl[2] < 90, f"{where}: top-left is {tl}, not red"
            assert br[2] > 150 and br[0] < 90, f"{where}: bottom-right is {br}, not blue"
            # The pixels are upright, so no viewer may rotate them again.
            assert pil.getexif().get(0x0112, 1) == 1, where
        if exp.get("transparent_top_left"):
            rgba = np.asarray(pil.convert("RGBA"))
            assert rgba[0, 0, 3] == 0 and rgba[-1, -1, 3] == 255, where
        if "first_frame_value" in exp:
            rgb = np.asarray(pil.convert("RGB")).astype(float)
            assert abs(rgb.mean() - exp["first_frame_value"]) < 3, where


def test_metadata_is_carried(corpus_run):
    _cases, _code, _output, manifest, files, _src = corpus_run
    img = {i["name"]: i for i in manifest["images"]}["metadata.jpg"]
    pil = _decoded(files, img)
    assert pil.getexif().get(0x010F) == EXIF_MAKE
    assert pil.info.get("icc_profile")
    assert tuple(round(v) for v in pil.info["dpi"]) == DPI


def test_duplicate_content_gives_two_identical_outputs(corpus_run):
    _cases, _code, _output, manifest, files, _src = corpus_run
    by_name = {img["name"]: img for img in manifest["images"]}
    a, b = by_name["dup-a.png"], by_name["dup-b.png"]
    assert a["sha256"] == b["sha256"] and a["result_key"] == b["result_key"]
    assert a["output_name"] != b["output_name"]
    assert files[a["output_name"]] == files[b["output_name"]]


def test_odd_names_keep_their_names(corpus_run):
    _cases, _code, _output, manifest, _files, _src = corpus_run
    by_name = {img["name"]: img for img in manifest["images"]}
    assert by_name["with space.jpg"]["output_name"] == "with space.jpg"
    assert by_name["café ünïcode 写真.jpg"]["output_name"] == "café ünïcode 写真.jpg"
    assert by_name["-leading-dash.jpg"]["output_name"] == "-leading-dash.jpg"
    assert by_name["sub/inner.jpg"]["output_name"] == "inner.jpg"


def test_tiny_and_extreme_sizes_survive_a_model_and_metadata_can_be_stripped(
    prefect_server, tmp_path, monkeypatch
):
    install_tiny_models(tmp_path / "models", monkeypatch, faces=None)
    src = tmp_path / "src"
    cases = {c.name: c for c in build_corpus(tmp_path / "all")}
    for name in ("one-pixel.png", "three.png", "wide.png", "metadata.jpg", "rgba16.png"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes((tmp_path / "all" / name).read_bytes())
    recipe = tmp_path / "up.toml"
    recipe.write_text(UPSCALE_RECIPE)
    dest = tmp_path / "out"
    code, output = _run(
        ["run", str(src), "-p", str(recipe), "-o", str(dest), "--set", "export.keep_metadata=false"]
    )
    assert code == 0, output
    manifest, files = _outputs(dest)
    by_name = {img["name"]: img for img in manifest["images"]}
    for name in ("one-pixel.png", "three.png", "wide.png", "metadata.jpg", "rgba16.png"):
        img = by_name[name]
        assert img["status"] == "ok" and img["model_calls"] == 1, (name, img["reason"])
        w, h = cases[name].expect["size"]
        assert _decoded(files, img).size == (2 * w, 2 * h), name
    assert by_name["rgba16.png"]["output"]["bit_depth"] == 16
    assert by_name["rgba16.png"]["output"]["alpha"] is True
    stripped = _decoded(files, by_name["metadata.jpg"])
    assert 0x010F not in stripped.getexif()
    assert "icc_profile" not in stripped.info and "exif" not in stripped.info
    assert "dpi" not in stripped.info
