"""Export never drops alpha or 16 bits silently, and the manifest describes the delivered files.

The hostile corpus goes through ``quick`` (JPEG export) twice: as shipped, where an image
JPEG can't hold follows its input (transparency to PNG/WebP/TIFF, 16 bits to PNG/TIFF), and
with ``export.alpha=flatten`` / ``export.depth=reduce``, where every image is a JPEG and each
lossy change is stated in the image's problems. Every delivered file is read back with
Pillow, tifffile and OpenCV (not with retouch's own reader) and its real format, size, bit
depth, alpha and gray layout compared with the manifest's ``output`` and ``outputs``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

from retouch.lib.delivery import delivery
from retouch.lib.image import Image
from retouch.lib.imageio import decode, describe, encode, format_keeping
from retouch.lib.phases.context import RunContext
from retouch.lib.phases.export import assign_outputs, export_one
from retouch.lib.phases.prepare import prepare_one
from retouch.lib.phases.process import process_one
from retouch.lib.recipe import Recipe, apply_overrides, load_preset, recipe_from_dict
from retouch.lib.records import ImageRecord
from retouch.lib.settings import get_settings
from retouch.lib.workspace import Workspace
from tests.robust.corpus import build_corpus
from tests.robust.test_corpus import _outputs, _run

_PIL_FORMAT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "TIFF": "tiff", "BMP": "bmp"}
_FIELDS = ("format", "width", "height", "bit_depth", "alpha", "gray")


def read_back(data: bytes) -> dict[str, Any]:
    """What a delivered file really is, read with Pillow, tifffile and OpenCV."""
    pil = PILImage.open(io.BytesIO(data))
    pil.load()
    fmt = _PIL_FORMAT[pil.format]
    width, height = pil.size
    if fmt == "tiff":
        with tifffile.TiffFile(io.BytesIO(data)) as tf:
            page = tf.pages[0]
            bits = int(page.bitspersample)
            alpha = len(page.extrasamples) > 0
            gray = page.photometric == tifffile.PHOTOMETRIC.MINISBLACK
            assert page.asarray().dtype == (np.uint16 if bits == 16 else np.uint8)
    elif fmt == "png":
        bits, colour_type = data[24], data[25]  # IHDR
        alpha = colour_type in (4, 6) or "transparency" in pil.info
        gray = colour_type in (0, 4)
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert arr.dtype == (np.uint16 if bits == 16 else np.uint8)
    else:  # JPEG, WebP, BMP: 8 bits per sample
        bits = 8
        alpha = "A" in pil.mode or "transparency" in pil.info
        gray = pil.mode in ("L", "LA")
    return {
        "format": fmt,
        "width": width,
        "height": height,
        "bit_depth": bits,
        "alpha": alpha,
        "gray": gray,
    }


def rgba_of(data: bytes) -> np.ndarray:
    """HxWx4 RGBA float pixels (0..1) of a delivered file at its own bit depth."""
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:  # OpenCV reads no WebP alpha on some builds: Pillow for 8-bit files
        return np.asarray(PILImage.open(io.BytesIO(data)).convert("RGBA"), np.float64) / 255.0
    top = 65535.0 if arr.dtype == np.uint16 else 255.0
    if arr.ndim == 2:
        arr = np.dstack((arr, arr, arr))
    if arr.shape[2] == 2:
        arr = np.dstack((arr[..., 0], arr[..., 0], arr[..., 0], arr[..., 1]))
    if arr.shape[2] == 3:
        arr = np.dstack((arr[..., ::-1], np.full(arr.shape[:2], top, arr.dtype)))
    else:
        arr = np.dstack((arr[..., 2::-1], arr[..., 3]))
    return arr.astype(np.float64) / top


def assert_manifest_describes(img: dict, files: dict[str, bytes]) -> dict[str, Any]:
    """The manifest entry of one delivered image matches its file; returns the file's facts."""
    out = img["outputs"][0]
    assert out["name"] == img["output_name"]
    real = read_back(files[out["name"]])
    for key in _FIELDS:
        assert out[key] == real[key], (img["name"], key, out[key], real[key])
        assert img["output"][key] == real[key], (img["name"], key, img["output"][key], real[key])
    assert img["output"]["bytes"] == len(files[out["name"]])
    ext = out["name"].rsplit(".", 1)[1]
    assert {"jpg": "jpg", "png": "png", "webp": "webp", "tif": "tiff", "bmp": "bmp"}[ext] == (
        real["format"]
    ), img["name"]
    return real


# -- the corpus through `retouch run -p quick` -------------------------------------------------


def _quick_run(root: Path, src: Path, overrides: list[str]) -> tuple[int, str, dict, dict]:
    dest = root / "out"
    args = ["run", str(src), "-p", "quick", "-o", str(dest)]
    for item in overrides:
        args += ["--set", item]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RETOUCH_HOME", str(root / "home"))
        mp.setenv("RETOUCH_OFFLINE", "1")
        from retouch.lib.settings import reload_settings

        reload_settings()
        try:
            code, output = _run(args)
        finally:
            reload_settings()
    manifest, files = _outputs(dest)
    return code, output, manifest, files


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, prefect_server):
    """`quick` as shipped over the whole corpus."""
    root = tmp_path_factory.mktemp("quick")
    cases = build_corpus(root / "src")
    code, output, manifest, files = _quick_run(root, root / "src", [])
    return cases, code, output, manifest, files


# The images of the corpus JPEG can't hold as they are, and where `quick` delivers them.
KEPT = {
    "palette-trns.png": ("png", 8, True),
    "rgba.png": ("png", 8, True),
    "gray-alpha.png": ("png", 8, True),
    "alpha.webp": ("webp", 8, True),
    "rgb16.png": ("png", 16, False),
    "rgba16.png": ("png", 16, True),
    "gray16.png": ("png", 16, False),
    "rgb16.tif": ("tiff", 16, False),
    "rgba16.tif": ("tiff", 16, True),
}


def test_quick_delivers_every_good_image_and_the_manifest_describes_each_file(quick_run):
    cases, code, output, manifest, files = quick_run
    assert code == 2, output  # the broken files of the corpus fail, the rest is delivered
    by_name = {img["name"]: img for img in manifest["images"]}
    good = [c for c in cases if c.outcome == "ok"]
    assert manifest["summary"]["succeeded"] == len(good)
    assert sorted(files) == sorted(by_name[c.name]["output_name"] for c in good)
    for c in good:
        img = by_name[c.name]
        assert img["status"] == "ok", (c.name, img["reason"])
        real = assert_manifest_describes(img, files)
        assert (real["width"], real["height"]) == (2 * c.expect["size"][0], 2 * c.expect["size"][1])


def test_quick_keeps_alpha_and_16_bits_by_following_the_input(quick_run):
    cases, _code, _output, manifest, files = quick_run
    by_name = {img["name"]: img for img in manifest["images"]}
    assert set(KEPT) <= {c.name for c in cases}
    for c in (c for c in cases if c.outcome == "ok"):
        img = by_name[c.name]
        real = read_back(files[img["output_name"]])
        where = f"{c.name} -> {img['output_name']}"
        # Nothing is lost: the delivered file has the input's alpha and bit depth.
        assert real["alpha"] is img["input"]["alpha"], where
        assert real["bit_depth"] == img["input"]["bit_depth"], where
        lossy = [p for p in img["problems"] if "flattened" in p or "reduced" in p]
        assert lossy == [], where
        if c.name not in KEPT:
            assert real["format"] == "jpg", where
            assert not [p for p in img["problems"] if p.startswith("export")], where
            continue
        fmt, bits, alpha = KEPT[c.name]
        assert (real["format"], real["bit_depth"], real["alpha"]) == (fmt, bits, alpha), where
        kept = " and ".join(
            what
            for what, has, key in (
                ("transparency", alpha, "alpha"),
                ("16 bits", bits == 16, "depth"),
            )
            if has
        )
        keys = ", ".join(
            f"export.{key}=keep" for key, has in (("alpha", alpha), ("depth", bits == 16)) if has
        )
        label = {"png": "PNG", "webp": "WebP", "tiff": "TIFF"}[fmt]
        assert (
            f"export: delivered as {label}, not JPEG, to keep its {kept} ({keys})"
            in (img["problems"])
        ), (where, img["problems"])
        assert img["outputs"][0]["notes"] == [
            f"delivered as {label}, not JPEG, to keep its {kept} ({keys})"
        ]
        if c.expect.get("transparent_top_left"):
            rgba = rgba_of(files[img["output_name"]])
            assert rgba[0, 0, 3] == 0 and rgba[-1, -1, 3] == 1, where
        if bits == 16:  # real 16-bit values, not 8-bit ones stretched
            arr = cv2.imdecode(np.frombuffer(files[img["output_name"]], np.uint8), -1)
            assert arr.dtype == np.uint16 and bool((arr % 257 != 0).any()), where


@pytest.fixture(scope="module")
def flatten_run(tmp_path_factory, prefect_server):
    """`quick` told to write every image as a JPEG, transparency onto green."""
    root = tmp_path_factory.mktemp("flatten")
    every = root / "all"
    cases = {c.name: c for c in build_corpus(every)}
    src = root / "src"
    for name in [*KEPT, "metadata.jpg", "gray.jpg"]:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes((every / name).read_bytes())
    overrides = ["export.alpha=flatten", "export.depth=reduce", "export.background=#00ff00"]
    code, output, manifest, files = _quick_run(root, src, overrides)
    return cases, code, output, manifest, files


def test_flattened_and_reduced_jpegs_say_so_and_the_manifest_describes_them(flatten_run):
    cases, code, output, manifest, files = flatten_run
    assert code == 0, output
    for img in manifest["images"]:
        where = img["name"]
        real = assert_manifest_describes(img, files)
        assert real["format"] == "jpg" and real["bit_depth"] == 8 and not real["alpha"], where
        notes = [p for p in img["problems"] if p.startswith("export: ")]
        assert img["outputs"][0]["notes"] == [n[len("export: ") :] for n in notes]
        expected = []
        if img["input"]["alpha"]:
            expected.append(
                "export: transparency flattened onto #00ff00: JPEG has no alpha channel; "
                "export.alpha=keep delivers it as "
                f"{'WebP' if where.endswith('.webp') else 'TIFF' if where.endswith('.tif') else 'PNG'}"
                " with its transparency"
            )
        if img["input"]["bit_depth"] == 16:
            expected.append(
                "export: 16-bit reduced to 8-bit: JPEG holds 8 bits per channel; "
                "export.depth=keep delivers it as "
                f"{'TIFF' if where.endswith('.tif') else 'PNG'} with 16 bits"
            )
        assert notes == expected, (where, img["problems"])
        if cases[where].expect.get("transparent_top_left"):
            # The fully transparent corner is the background colour asked for.
            rgb = rgba_of(files[img["output_name"]])[2:6, 2:6, :3].reshape(-1, 3).mean(axis=0)
            assert abs(rgb[0]) < 0.05 and rgb[1] > 0.95 and abs(rgb[2]) < 0.05, (where, rgb)


# -- library level: several profiles, notes, re-export ---------------------------------------


def _save(arr: np.ndarray, fmt: str, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(arr, mode).save(buf, fmt)
    return buf.getvalue()


def _sources(folder: Path) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    photo = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    rgba = np.dstack((photo, np.full((20, 30), 255, np.uint8)))
    rgba[:10, :15, 3] = 0
    (folder / "logo.png").write_bytes(_save(rgba, "PNG"))
    opaque = np.dstack((photo, np.full((20, 30), 255, np.uint8)))
    (folder / "opaque.png").write_bytes(_save(opaque, "PNG"))
    (folder / "plain.png").write_bytes(_save(photo, "PNG"))
    deep = rng.integers(0, 65536, (20, 30, 3), dtype=np.uint16)
    ok, buf = cv2.imencode(".png", deep)
    assert ok
    (folder / "deep.png").write_bytes(buf.tobytes())


def _export(src: Path, recipe: Recipe, ws: Path) -> tuple[list[ImageRecord], dict, dict]:
    settings = get_settings()
    ctx = RunContext(run_id="run-1", workspace=Workspace(str(ws)), recipe=recipe)
    records = []
    for i, path in enumerate(sorted(src.iterdir()), start=1):
        r = ImageRecord(index=i, source=path.name, name=path.name, uri=str(path))
        r = prepare_one(r, settings)
        records.append(process_one(r, ctx, {}, "cpu"))
    assign_outputs(records, recipe)
    records = [export_one(r, ctx) for r in records]
    dest = ws.parent / "dest"
    delivery.finalize(records, [], ctx, source=str(src), dest=str(dest), started=0.0)
    manifest, files = _outputs(dest)
    return records, manifest, files


TWO_PROFILES = {
    "name": "shop",
    "steps": [{"op": "sharpen", "params": {"amount": 0.2}}],
    "export": {
        "profiles": [
            {"name": "web", "format": "jpg", "background": "#000000"},
            {"name": "archive", "format": "webp", "alpha": "keep", "depth": "keep"},
        ]
    },
}


def test_every_profile_describes_its_file_and_states_its_changes(tmp_path):
    _sources(tmp_path / "src")
    recipe = recipe_from_dict(TWO_PROFILES)
    records, manifest, files = _export(tmp_path / "src", recipe, tmp_path / "ws")
    by_name = {img["name"]: img for img in manifest["images"]}
    assert all(r.ok for r in records), [r.reason for r in records]
    for img in manifest["images"]:
        for out in img["outputs"]:
            real = read_back(files[out["name"]])
            assert {k: out[k] for k in _FIELDS} == real, (img["name"], out["profile"])
        assert {k: img["output"][k] for k in _FIELDS} == {k: img["outputs"][0][k] for k in _FIELDS}

    logo = by_name["logo.png"]
    web, archive = logo["outputs"]
    assert web["name"] == "web/logo.jpg" and web["alpha"] is False
    assert web["notes"] == [
        "transparency flattened onto black (#000000): JPEG has no alpha channel; "
        "export.profiles.web.alpha=keep delivers it as PNG with its transparency"
    ]
    assert archive["name"] == "archive/logo.webp" and archive["alpha"] is True
    assert archive["notes"] == []
    assert logo["problems"] == [f"export profile 'web': {web['notes'][0]}"]
    corner = rgba_of(files["web/logo.jpg"])[2:6, 2:6, :3].max()
    assert corner < 0.05  # flattened onto black, as asked

    opaque = by_name["opaque.png"]
    assert opaque["outputs"][0]["notes"] == [
        "alpha channel dropped (fully opaque, no pixel changed): JPEG has no alpha channel"
    ]

    deep = by_name["deep.png"]
    web, archive = deep["outputs"]
    assert (web["format"], web["bit_depth"]) == ("jpg", 8)
    assert web["notes"] == [
        "16-bit reduced to 8-bit: JPEG holds 8 bits per channel; "
        "export.profiles.web.depth=keep delivers it as PNG with 16 bits"
    ]
    # WebP holds 8 bits: with depth=keep the archive follows the input, a 16-bit PNG.
    assert (archive["name"], archive["format"], archive["bit_depth"]) == (
        "archive/deep.png",
        "png",
        16,
    )
    assert archive["notes"] == [
        "delivered as PNG, not WebP, to keep its 16 bits (export.profiles.archive.depth=keep)"
    ]

    plain = by_name["plain.png"]
    assert plain["problems"] == [] and [o["notes"] for o in plain["outputs"]] == [[], []]


def test_a_re_export_replaces_the_notes_of_the_earlier_one(tmp_path):
    _sources(tmp_path / "src")
    (tmp_path / "src" / "opaque.png").unlink()
    (tmp_path / "src" / "plain.png").unlink()
    recipe = load_preset("quick").model_copy(update={"steps": []})
    settings = get_settings()
    ws = Workspace(str(tmp_path / "ws"))
    flatten = apply_overrides(recipe, ["export.alpha=flatten", "export.depth=reduce"])
    ctx = RunContext(run_id="run-1", workspace=ws, recipe=flatten)
    r = ImageRecord(index=1, source="logo.png", name="logo.png", uri=str(tmp_path / "src/logo.png"))
    r = process_one(prepare_one(r, settings), ctx, {}, "cpu")
    assign_outputs([r], flatten)
    export_one(r, ctx)
    export_one(r, ctx)  # the same export again: the note is not repeated
    assert r.output["format"] == "jpg" and r.output["alpha"] is False
    assert [p for p in r.problems if p.startswith("export")] == [
        "export: transparency flattened onto white (#ffffff): JPEG has no alpha channel; "
        "export.alpha=keep delivers it as PNG with its transparency"
    ]
    # Delivered again as quick ships (alpha kept): the old note no longer holds.
    keep = RunContext(run_id="run-2", workspace=ws, recipe=recipe)
    assign_outputs([r], recipe)
    export_one(r, keep)
    assert r.output_name == "logo.png" and r.output["format"] == "png" and r.output["alpha"]
    assert [p for p in r.problems if p.startswith("export")] == [
        "export: delivered as PNG, not JPEG, to keep its transparency (export.alpha=keep)"
    ]


# -- encode and format choice -----------------------------------------------------------------


def test_format_keeping_follows_the_input():
    assert format_keeping("jpg", "jpeg") == "jpg"
    assert format_keeping("jpg", "png", alpha=True) == "png"
    assert format_keeping("jpg", "webp", alpha=True) == "webp"
    assert format_keeping("jpg", "tiff", alpha=True) == "tiff"
    assert format_keeping("jpg", "gif", alpha=True) == "png"
    assert format_keeping("bmp", "bmp", alpha=True) == "png"
    assert format_keeping("jpg", "tiff", sixteen_bit=True) == "tiff"
    assert format_keeping("webp", "png", sixteen_bit=True) == "png"
    assert format_keeping("webp", "webp", alpha=True, sixteen_bit=True) == "png"
    assert format_keeping("jpg", "webp", alpha=True, sixteen_bit=True) == "png"
    assert format_keeping("png", "jpeg", alpha=True, sixteen_bit=True) == "png"


def test_flatten_colour_and_gray_images_on_a_coloured_background():
    gray = np.full((8, 8, 3), 100, np.uint8)
    alpha = np.zeros((8, 8), np.uint8)
    alpha[:, 4:] = 255
    img = Image(pixels=gray, alpha=alpha, is_gray=True)
    on_white = encode(img, "bmp")
    assert describe(on_white)["gray"] is True  # gray over white stays gray
    on_red = encode(img, "bmp", background="#ff0000")
    held = describe(on_red)
    assert held["gray"] is False and held["alpha"] is False
    back = decode(on_red, "x.bmp", pixel_limit=10**6)
    assert tuple(back.pixels[0, 0]) == (0, 0, 255)  # BGR red where it was transparent
    assert tuple(back.pixels[0, 7]) == (100, 100, 100)
    with pytest.raises(ValueError, match="hex RGB"):
        encode(img, "jpg", background="red")


def test_16_bit_gray_with_alpha_tiff_is_readable_and_keeps_both():
    rng = np.random.default_rng(9)
    g = rng.integers(0, 65536, (6, 7), dtype=np.uint16)
    a = rng.integers(0, 65536, (6, 7), dtype=np.uint16)
    img = Image(pixels=np.dstack((g, g, g)), alpha=a, is_gray=True)
    data = encode(img, "tiff")
    assert (
        describe(data)
        == read_back(data)
        == {
            "format": "tiff",
            "width": 7,
            "height": 6,
            "bit_depth": 16,
            "alpha": True,
            "gray": False,
        }
    )
    back = decode(data, "x.tif", pixel_limit=10**6)
    assert np.array_equal(back.pixels[..., 0], g) and np.array_equal(back.alpha, a)
