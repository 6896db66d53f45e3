"""A whole run delivered in split parts, mirrored to S3 (moto), with share links."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import urllib.request

import numpy as np
from PIL import Image as PILImage


def _noise(seed: int, w: int, h: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    PILImage.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _unzip(*args: str) -> str:
    tool = shutil.which("unzip")
    assert tool, "the unzip tool is needed by this test (CI must install it: apt-get install unzip)"
    run = subprocess.run([tool, *args], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def test_split_parts_open_alone_sync_uploads_changes_only_and_links_work(
    prefect_server, moto_s3, tmp_path
):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter

    from retouch.flows.enhance import RunOptions, enhance
    from retouch.lib.recipe import recipe_from_dict

    moto_s3.create_bucket("delivery-mirror")
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"p{i}.png").write_bytes(_noise(i, 64, 48))
    (src / "big.png").write_bytes(_noise(9, 300, 200))  # its TIFF alone exceeds the limit
    recipe = recipe_from_dict(
        {
            "name": "deliver",
            "export": {
                "profiles": [
                    {"name": "web", "format": "jpg", "quality": 85, "keep_metadata": False},
                    {"name": "archive", "format": "tiff"},
                ],
                "split_mb": 0.04,
                "sync": {"dest": "s3://delivery-mirror/shoot"},
                "link_expiry_s": 3600,
            },
        }
    )
    dest = tmp_path / "out"
    options = RunOptions(workspace=str(tmp_path / "ws"))
    state = enhance(
        source=str(src), dest=str(dest), recipe=recipe, options=options, return_state=True
    )
    summary = state.result()
    assert summary.exit_code == 0 and len(summary.archives) >= 3
    manifest = json.loads((dest / "manifest.json").read_text())

    # Each part is a complete archive: unzip tests and lists it on its own.
    expected = {o["name"]: o["sha256"] for img in manifest["images"] for o in img["outputs"]}
    assert len(expected) == 12
    held: list[str] = []
    for item in manifest["archives"]:
        path = dest / item["name"]
        assert "No errors detected" in _unzip("-t", str(path))
        listing = _unzip("-Z1", str(path)).split()
        held += listing
        if item["warnings"]:  # only a file over the limit on its own may exceed it
            assert len(listing) == 1 and listing[0].rsplit("/", 1)[1].startswith("big.")
            assert "larger than the split limit" in item["warnings"][0]
        else:
            assert path.stat().st_size <= 40_000
    assert sorted(held) == sorted(expected)  # together: exactly the run's files, once each
    assert any(item["warnings"] for item in manifest["archives"])  # archive/big.tif at least

    # The mirror holds every output; the first sync uploaded them all.
    assert sorted(manifest["sync"]["uploaded"]) == sorted(expected)
    # Share links: each mirrored output downloads through its presigned URL.
    link = next(
        o["link"] for img in manifest["images"] for o in img["outputs"] if o["name"] == "web/p0.jpg"
    )
    with urllib.request.urlopen(link, timeout=10) as response:
        data = response.read()
    assert PILImage.open(io.BytesIO(data)).format == "JPEG"
    assert hashlib.sha256(data).hexdigest() == expected["web/p0.jpg"]
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(like_="retouch-share-")),
            flow_run_filter=FlowRunFilter(id={"any_": [state.state_details.flow_run_id]}),
        )
        previews = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["retouch-previews"])),
            flow_run_filter=FlowRunFilter(id={"any_": [state.state_details.flow_run_id]}),
        )
    assert arts and all("Signature=" in a.data for a in arts)
    # Image previews in the Prefect UI: one per image, through its presigned link.
    assert len(previews) == 1 and previews[0].data.count("![") == 6
    assert "Signature=" in previews[0].data

    # Same run again: nothing changed in the outputs, so none is uploaded again.
    (src / "p1.png").write_bytes(_noise(101, 64, 48))  # ...except this image's two outputs
    again = enhance(source=str(src), dest=str(dest), recipe=recipe, options=options)
    second = json.loads((dest / "manifest.json").read_text())["sync"]
    assert sorted(second["uploaded"]) == ["archive/p1.tif", "web/p1.jpg"]
    assert len(second["unchanged"]) == 10
    assert sorted(second["versioned"]) == ["archive/p1.tif", "web/p1.jpg"]
    assert again.uploaded == 2 + 2  # the two outputs, then manifest.json and report.html
