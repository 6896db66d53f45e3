"""Videos delivered as image sequences (``export.video.container = "frames"``): frames stored
bit for bit as processed, exported as numbered images with frames.csv and the audio, and
packed only once the whole sequence is staged (real PyAV clips through the lib phases)."""

from __future__ import annotations

import io
import zipfile
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image as PILImage

from retouch.lib.image import Image
from retouch.lib.video import media, segments
from retouch.lib.video.export import frames_csv, seconds_text
from tests.video_clips import VFR_STEPS, make_clip

LIMIT = 100_000_000


def _frames_encoding(codec: str = "h264", crf: int | None = None) -> media.Encoding:
    settings = SimpleNamespace(codec=codec, crf=crf, preset=None, container="frames")
    enc, note = media.encoding_for("mp4", settings)
    assert note is None
    return enc


def _noise(index: int) -> np.ndarray:
    """Frame ``index``'s made-up result: odd sides, every value, no structure to hide a loss."""
    return np.random.default_rng(index).integers(0, 256, (33, 47, 3), dtype=np.uint8)


def test_frames_are_stored_bit_for_bit_at_any_size_with_every_source_time(tmp_path):
    src = tmp_path / "vfr.mp4"
    times = make_clip(src, steps=VFR_STEPS * 2, gop=5)
    info = media.probe_video(str(src), src.name, pixel_limit=LIMIT)
    plan = segments.plan_segments(info.pts, info.keyframes, info.time_base, 0.25)
    assert len(plan) >= 3
    enc = _frames_encoding()
    counter = iter(range(10**6))
    parts = [
        segments.process_segment(
            str(src),
            str(tmp_path / f"seg{i}.{enc.ext}"),
            start_pts=start,
            end_pts=end,
            process=lambda _image: Image(pixels=_noise(next(counter))),
            encoding=enc,
            label=src.name,
        )
        for i, (start, end, _n) in enumerate(plan)
    ]
    assert all(p.notes == [] for p in parts)  # no padding to even sides, no matrix change
    out = tmp_path / "joined.mp4"
    segments.join(str(src), parts, str(out), enc.muxer, src.name, enc.muxer_options(info.time_base))
    got_times, _tb = segments.video_timestamps(str(out), src.name)
    assert got_times == times
    with media.open_input(str(out), "joined") as c:
        decoded = [media.frame_image(f, 0).pixels for f in c.decode(media.video_stream(c, "j"))]
    assert len(decoded) == len(times)
    for i, pixels in enumerate(decoded):
        assert np.array_equal(pixels, _noise(i)), f"frame {i + 1} changed"


def test_a_frames_result_key_ignores_the_video_codec_settings_and_differs_from_a_video():
    frames = _frames_encoding().key()
    assert _frames_encoding("h265", 30).key() == frames
    video, _note = media.encoding_for(
        "mp4", SimpleNamespace(codec="h264", crf=None, preset=None, container="mp4")
    )
    assert video.key() != frames


def test_frame_times_are_written_exactly_where_a_decimal_can_hold_them():
    assert seconds_text(Fraction(1, 25)) == "0.04"
    assert seconds_text(Fraction(3, 1)) == "3"
    assert seconds_text(Fraction(1, 30)) == "0.033333333"  # 1/30 s: rounded to ns
    assert seconds_text(Fraction(-1024, 16000)) == "-0.064"
    text = frames_csv([0, 3600, 5400], Fraction(1, 90000), ["a_1.png", "a_2.png", "a_3.png"])
    assert text.splitlines() == [
        "index,file,pts,time_base,time,duration",
        "1,a_1.png,0,1/90000,0,0.04",
        "2,a_2.png,3600,1/90000,0.04,0.02",
        "3,a_3.png,5400,1/90000,0.06,0.03",  # the last one: the clip's mean duration
    ]


def _through_the_phases(tmp_path: Path, overrides: list[str]):
    from retouch.lib.phases.context import RunContext
    from retouch.lib.phases.export import assign_outputs, export_one
    from retouch.lib.phases.prepare import new_record, prepare_one
    from retouch.lib.phases.process import process_many
    from retouch.lib.recipe import apply_overrides, recipe_from_dict
    from retouch.lib.settings import get_settings
    from retouch.lib.sources import SourceItem
    from retouch.lib.workspace import Workspace

    clip = tmp_path / "clip.mp4"
    times = make_clip(clip, frames=5, audio=None)
    recipe = apply_overrides(recipe_from_dict({"steps": [{"op": "sharpen"}]}), overrides)
    ctx = RunContext(run_id="r", workspace=Workspace(str(tmp_path / "ws")), recipe=recipe)
    record = new_record(SourceItem(str(clip), "clip.mp4", None), 1)
    prepare_one(record, get_settings())
    process_many([record], ctx, {}, "cpu")
    assign_outputs([record], recipe)
    export_one(record, ctx)
    assert record.ok, record.reason
    return record, ctx, times


def test_a_sequence_per_profile_is_delivered_only_once_every_file_is_staged(tmp_path):
    from retouch.lib.delivery.delivery import finalize
    from retouch.lib.errors import StorageError
    from retouch.lib.phases.export import export_one, frames_listing, staging_path

    record, ctx, times = _through_the_phases(
        tmp_path,
        [
            "export.video.container=frames",
            "export.video.frames_format=tiff",
            'export.profiles=[{"name": "web"}, {"name": "archive"}]',
        ],
    )
    assert [o["name"] for o in record.outputs] == ["web/clip", "archive/clip"]
    assert record.output_name == "web/clip" and record.output["kind"] == "frames"
    frames = [f"clip_{i:06d}.tif" for i in range(1, len(times) + 1)]
    # No audio in this clip: frames and frames.csv only.
    assert record.outputs[0]["audio"] == [] and record.outputs[0]["files"] == len(times) + 1

    # An export stopped before it listed the whole sequence: nothing is delivered.
    listing = Path(frames_listing(ctx, "archive/clip"))
    listing.unlink()
    Path(staging_path(ctx, f"archive/clip/{frames[-1]}")).unlink()
    dest = tmp_path / "out"
    with pytest.raises(StorageError, match=r"the frames of archive/clip/ are not all staged"):
        finalize([record], [], ctx, source="src", dest=str(dest), started=0.0)
    assert not (dest / "results.zip").exists() and not (dest / "manifest.json").exists()

    # The export again: the whole sequence, both profiles, the same files.
    first = dict(record.outputs[0])
    export_one(record, ctx)
    assert record.ok, record.reason
    assert record.outputs[0]["sha256"] == first["sha256"]
    finalize([record], [], ctx, source="src", dest=str(dest), started=0.0)
    with zipfile.ZipFile(dest / "results.zip") as zf:
        names = sorted(zf.namelist())
        assert names == sorted(
            f"{profile}/clip/{name}"
            for profile in ("web", "archive")
            for name in (*frames, "frames.csv")
        )
        with PILImage.open(io.BytesIO(zf.read("archive/clip/clip_000005.tif"))) as im:
            assert (im.format, im.mode, im.size) == ("TIFF", "RGB", (48, 32))
        csv_text = zf.read("web/clip/frames.csv").decode()
    assert len(csv_text.splitlines()) == len(times) + 1


def test_a_stored_video_is_not_exported_as_frames_or_the_other_way(tmp_path):
    from retouch.lib.phases.export import export_one
    from retouch.lib.recipe import apply_overrides

    record, ctx, _times = _through_the_phases(tmp_path, [])
    ctx.recipe = apply_overrides(ctx.recipe, ["export.video.container=frames"])
    export_one(record, ctx)
    assert not record.ok
    assert record.reason is not None and "the stored result is video, not frames" in record.reason


def _luma_table_sum(data: bytes) -> int:
    with PILImage.open(io.BytesIO(data)) as im:
        assert im.format == "JPEG"
        return sum(im.quantization[0])


def test_jpeg_frames_take_each_profiles_quality(tmp_path):
    from retouch.lib.delivery.delivery import finalize
    from retouch.lib.imageio import encode

    record, ctx, times = _through_the_phases(
        tmp_path,
        [
            "export.video.container=frames",
            "export.video.frames_format=jpg",
            "export.quality=70",
            'export.profiles=[{"name": "web", "quality": 30}, {"name": "print", "quality": 97},'
            ' {"name": "plain"}]',
        ],
    )
    assert [(o["name"], o["quality"]) for o in record.outputs] == [
        ("web/clip", 30),
        ("print/clip", 97),
        ("plain/clip", 70),  # a profile without its own quality: export.quality
    ]
    dest = tmp_path / "out"
    finalize([record], [], ctx, source="src", dest=str(dest), started=0.0)
    tables = {}
    with zipfile.ZipFile(dest / "results.zip") as zf:
        for profile in ("web", "print", "plain"):
            frames = [zf.read(f"{profile}/clip/clip_{i:06d}.jpg") for i in range(1, len(times) + 1)]
            tables[profile] = {_luma_table_sum(data) for data in frames}
    # Each profile's frames carry the quantisation of its quality, the same for every frame.
    for profile, quality in (("web", 30), ("print", 97), ("plain", 70)):
        probe = encode(Image(pixels=_noise(0)), "jpg", quality=quality, keep_metadata=False)
        assert tables[profile] == {_luma_table_sum(probe)}, profile
    assert tables["print"] != tables["plain"] != tables["web"]


def test_a_mirrored_sequence_links_to_its_frames_csv_and_says_so(tmp_path, moto_s3):
    import json
    import urllib.request

    from retouch.lib.delivery.delivery import finalize
    from retouch.lib.phases.deliver import _previews

    moto_s3.create_bucket("frames-mirror")
    record, ctx, times = _through_the_phases(
        tmp_path,
        [
            "export.video.container=frames",
            'export.sync={"dest": "s3://frames-mirror/shoot"}',
            "export.link_expiry_s=3600",
        ],
    )
    dest = tmp_path / "out"
    finalize([record], [], ctx, source="src", dest=str(dest), started=0.0)
    manifest = json.loads((dest / "manifest.json").read_text())
    out = manifest["images"][0]["outputs"][0]
    assert out["kind"] == "frames" and out["name"] == "clip"
    assert "no single link" in out["link_note"] and "links.files under clip/" in out["link_note"]
    with zipfile.ZipFile(dest / "results.zip") as zf:
        csv_text = zf.read("clip/frames.csv")
        first = zf.read("clip/clip_000001.png")
    with urllib.request.urlopen(out["link"], timeout=10) as response:
        assert response.read() == csv_text
    # Every file of the folder has its own link, as the note says.
    files = manifest["links"]["files"]
    assert sorted(files) == sorted(
        [*(f"clip/clip_{i:06d}.png" for i in range(1, len(times) + 1)), "clip/frames.csv"]
    )
    with urllib.request.urlopen(files["clip/clip_000001.png"], timeout=10) as response:
        assert response.read() == first
    # The run's result previews show pictures: a CSV link is none.
    assert record.outputs[0]["link"] == out["link"]
    assert _previews([record]) == []
