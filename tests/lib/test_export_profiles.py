"""One run exported with two profiles: sizes, formats, names, watermark and metadata policy."""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile

import numpy as np
import pytest
from PIL import Image as PILImage

from retouch.lib.delivery import delivery
from retouch.lib.delivery.watermark import apply_profile
from retouch.lib.errors import RecipeError
from retouch.lib.imageio import decode
from retouch.lib.phases.context import RunContext
from retouch.lib.phases.export import assign_outputs, export_one
from retouch.lib.phases.prepare import prepare_one
from retouch.lib.phases.process import process_one
from retouch.lib.phases.review import review_one
from retouch.lib.recipe import Recipe, apply_overrides, load_recipe_file, recipe_from_dict
from retouch.lib.records import ImageRecord
from retouch.lib.settings import get_settings
from retouch.lib.workspace import Workspace

MAKE = 0x010F


def _photo(seed: int, w: int = 160, h: int = 120) -> bytes:
    """A JPEG with EXIF (camera make) so the metadata policy can be seen in the outputs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 90)], axis=2)
    arr = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
    exif = PILImage.Exif()
    exif[MAKE] = "RetouchCam"
    buf = io.BytesIO()
    PILImage.fromarray(arr).save(buf, "JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


RECIPE = {
    "name": "shop",
    "export": {
        "quality": 90,
        "profiles": [
            {
                "name": "web",
                "format": "jpg",
                "resize": {"max_side": 64},
                "keep_metadata": False,
                "watermark": {"text": "PROOF", "opacity": 0.9, "scale": 0.6},
                "name_template": "{preset}-{index}-{stem}.{ext}",
                "index_width": 3,
            },
            {
                "name": "archive",
                "format": "tiff",
                "resize": {"width": 100, "height": 100, "mode": "crop"},
                "name_template": "{folder}/{stem}.{ext}",
            },
        ],
    },
}


def run_export(src, dest, recipe: Recipe) -> tuple[list[ImageRecord], object]:
    """prepare -> process (no steps) -> review -> export -> deliver, as the flow does."""
    settings = get_settings()
    ctx = RunContext(run_id="run-1", workspace=Workspace(str(src.parent / "ws")), recipe=recipe)
    names = sorted(p.relative_to(src).as_posix() for p in src.rglob("*.jpg"))
    records = []
    for i, name in enumerate(names, start=1):
        r = ImageRecord(index=i, source=name, name=name, uri=str(src / name))
        r = prepare_one(r, settings)
        r = process_one(r, ctx, {}, "cpu")
        records.append(review_one(r, ctx))
    assign_outputs([r for r in records if r.ok], recipe)
    records = [export_one(r, ctx) for r in records]
    summary = delivery.finalize(
        records, [], ctx, source=str(src), dest=str(dest), started=time.time()
    )
    return records, summary


def test_two_profiles_watermark_and_template(tmp_path):
    src = tmp_path / "src"
    (src / "studio").mkdir(parents=True)
    (src / "a.jpg").write_bytes(_photo(1))
    (src / "studio" / "b.jpg").write_bytes(_photo(2))
    recipe = recipe_from_dict(RECIPE)
    records, summary = run_export(src, tmp_path / "out", recipe)
    assert summary.exit_code == 0

    with zipfile.ZipFile(tmp_path / "out" / "results.zip") as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    # One folder per profile; each profile's own template and index padding.
    assert sorted(files) == [
        "archive/a.tif",
        "archive/studio/b.tif",
        "web/shop-001-a.jpg",
        "web/shop-002-b.jpg",
    ]
    opened = {n: PILImage.open(io.BytesIO(data)) for n, data in files.items()}
    for name in ("web/shop-001-a.jpg", "web/shop-002-b.jpg"):
        assert opened[name].format == "JPEG" and opened[name].size == (64, 48)
        assert "exif" not in opened[name].info and "icc_profile" not in opened[name].info
    for name in ("archive/a.tif", "archive/studio/b.tif"):
        assert opened[name].format == "TIFF" and opened[name].size == (100, 100)
        assert opened[name].getexif().get(MAKE) == "RetouchCam"  # kept in the archive

    # The mark: the web output against the same profile without its watermark.
    web = recipe.export.profiles[0]
    plain = web.model_copy(update={"watermark": None})
    result = Workspace(str(tmp_path / "ws")).load_result(records[0].result_key)
    reference = apply_profile(result, plain).pixels.astype(int)
    delivered = decode(files["web/shop-001-a.jpg"], "web", pixel_limit=10**8).pixels.astype(int)
    diff = np.abs(delivered - reference).max(axis=2)
    assert diff[30:, 32:].mean() > 8 * max(1.0, diff[:16, :24].mean())  # corner vs elsewhere
    assert (diff[30:, 32:] > 60).sum() > 20

    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["profiles"] == ["web", "archive"]
    a = next(img for img in manifest["images"] if img["name"] == "a.jpg")
    assert [
        (o["profile"], o["name"], o["format"], o["width"], o["height"]) for o in a["outputs"]
    ] == [
        ("web", "web/shop-001-a.jpg", "jpg", 64, 48),
        ("archive", "archive/a.tif", "tiff", 100, 100),
    ]
    for img in manifest["images"]:
        for out in img["outputs"]:
            assert hashlib.sha256(files[out["name"]]).hexdigest() == out["sha256"]


def test_grouped_archives_each_with_its_manifest_and_stale_ones_removed(tmp_path):
    src = tmp_path / "src"
    for folder, n in (("red", 2), ("blue", 1)):
        (src / folder).mkdir(parents=True)
        for i in range(n):
            (src / folder / f"{folder}{i}.jpg").write_bytes(_photo(i + len(folder)))
    dest = tmp_path / "out"
    recipe = recipe_from_dict({"export": {"group_by": "folder", "zip_name": "proofs.zip"}})
    _, summary = run_export(src, dest, recipe)
    assert sorted(p.name for p in dest.iterdir()) == [
        "manifest.json",
        "proofs-blue.manifest.json",
        "proofs-blue.zip",
        "proofs-red.manifest.json",
        "proofs-red.zip",
        "report.html",
    ]
    with zipfile.ZipFile(dest / "proofs-red.zip") as zf:
        assert sorted(zf.namelist()) == ["red0.jpg", "red1.jpg"]
    side = json.loads((dest / "proofs-red.manifest.json").read_text())
    assert side["group"] == "red" and [m["image"] for m in side["members"]] == [
        "red/red0.jpg",
        "red/red1.jpg",
    ]
    assert len(summary.archives) == 2

    # The next delivery to the same place, ungrouped: the old group archives go away.
    (tmp_path / "ws").rename(tmp_path / "ws-old")
    _, summary = run_export(src, dest, recipe_from_dict({"export": {"zip_name": "proofs.zip"}}))
    assert sorted(p.name for p in dest.iterdir()) == ["manifest.json", "proofs.zip", "report.html"]


def test_old_flat_export_keys_and_overrides_still_work(tmp_path):
    path = tmp_path / "old.toml"
    path.write_text(
        '[export]\nformat = "png"\nquality = 80\nname_template = "{index}-{stem}.{ext}"\n'
        'zip_name = "out.zip"\nkeep_metadata = false\n'
    )
    recipe = load_recipe_file(path)
    (only,) = recipe.export.effective_profiles()
    assert (only.format, only.quality, only.keep_metadata) == ("png", 80, False)
    changed = apply_overrides(
        recipe,
        ["export.format=webp", "export.watermark.text=PROOF", "export.resize.max_side=512"],
    )
    (only,) = changed.export.effective_profiles()
    assert only.format == "webp" and only.watermark.text == "PROOF"
    assert only.resize.max_side == 512

    two = recipe_from_dict(RECIPE)
    lower = apply_overrides(two, ["export.quality=70", "export.profiles.archive.format=png"])
    assert [(p.quality, p.format) for p in lower.export.profiles] == [(70, "jpg"), (70, "png")]
    with pytest.raises(RecipeError, match="no export profile 'print'"):
        apply_overrides(two, ["export.profiles.print.quality=1"])
    with pytest.raises(RecipeError, match="unknown placeholder"):
        recipe_from_dict({"export": {"profiles": [{"name": "a", "name_template": "{x}.jpg"}]}})
    with pytest.raises(RecipeError, match="two export profiles are named 'A'"):
        recipe_from_dict({"export": {"profiles": [{"name": "a"}, {"name": "A"}]}})
    # JSON-serialisable with bounds and descriptions, as a Prefect form needs.
    schema = json.dumps(Recipe.model_json_schema())
    assert "split_mb" in schema and "Where a single mark sits" in schema
