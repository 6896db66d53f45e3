"""Good images are never lost because of their names: ``::``, ``#``, ``?``, ``*`` and names
at the file system's 255-byte limit are local paths, delivered like any other."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from retouch.lib import storage

NAMES = [
    "m_a::b.jpg",
    "h#1.jpg",
    "q?x.jpg",
    "st*r.jpg",
    "a" * 246 + ".jpg",  # 250 bytes
    "é" * 123 + ".jpg",  # 250 bytes of UTF-8
]


def _jpeg(seed: int) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_local_names_with_double_colons_are_paths_and_chained_urls_are_not():
    assert storage.local_path("/photos/m_a::b.jpg") == "/photos/m_a::b.jpg"
    assert storage.local_path("m_a::b.jpg") == "m_a::b.jpg"
    assert storage.local_path("file:///photos/m_a::b.jpg") == "/photos/m_a::b.jpg"
    assert storage.local_path("zip://a.jpg::s3://bucket/x.zip") is None
    assert storage.local_path("zip://a.jpg::/tmp/x.zip") is None
    assert storage.local_path("simplecache::s3://bucket/k.jpg") is None


def test_a_temporary_name_stays_within_255_bytes(tmp_path):
    for name in NAMES:
        temp = os.path.basename(storage.temp_name(str(tmp_path / name)))
        assert len(temp.encode()) <= 255 and storage.TEMP_MARKER in temp
        with storage.atomic_local_file(str(tmp_path / name)) as path:
            Path(path).write_bytes(b"x")
        assert (tmp_path / name).read_bytes() == b"x"


def test_images_with_awkward_names_are_all_delivered(prefect_server, tmp_path):
    from retouch.flows.enhance import enhance
    from retouch.lib.recipe import recipe_from_dict

    src = tmp_path / "src"
    src.mkdir()
    for i, name in enumerate(NAMES):
        assert len(name.encode()) <= 250
        (src / name).write_bytes(_jpeg(i))
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(str(src / n) for n in NAMES) + "\n", encoding="utf-8")
    recipe = recipe_from_dict({"name": "t", "steps": [{"op": "sharpen"}]})
    for source, out in ((src, "from-folder"), (listing, "from-list")):
        dest = tmp_path / out
        summary = enhance(source=str(source), dest=str(dest), recipe=recipe)
        manifest = json.loads((dest / "manifest.json").read_text())
        failed = {i["name"]: i.get("reason") for i in manifest["images"] if i["status"] != "ok"}
        assert summary.exit_code == 0 and not failed, failed
        assert sorted(i["name"] for i in manifest["images"]) == sorted(NAMES)
        with zipfile.ZipFile(dest / "results.zip") as zf:
            members = zf.namelist()
            assert len(members) == len(NAMES)
            for img in manifest["images"]:
                assert PILImage.open(io.BytesIO(zf.read(img["output_name"]))).size == (32, 24)
