"""The export phase of a video record (:mod:`retouch.lib.video.phases` has the others): the
stored file delivered under each planned name, or with ``export.video.container =
"frames"`` the stored (lossless) frames written as a folder of numbered images with
``frames.csv`` and the audio.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from fractions import Fraction
from pathlib import PurePosixPath
from typing import Any

from retouch.lib import storage
from retouch.lib.errors import RetouchError
from retouch.lib.records import ImageRecord
from retouch.lib.sources import extension
from retouch.lib.video import media, segments
from retouch.lib.video.phases import local_source

# -- export ------------------------------------------------------------------------------------

_NOT_FOR_VIDEO = ("resize", "watermark")


def export_video(record: ImageRecord, ctx: Any) -> ImageRecord:
    """Deliver the stored video under each planned name (one per export profile: the same
    file; the profiles' image settings are not applied to videos, stated when set). What
    each output holds is read back from the delivered file."""
    from retouch.lib.phases.export import (
        NOTE_PREFIXES,
        exporting,
        note_prefix,
        planned_outputs,
        staging_path,
    )

    if ctx.recipe.export.video.container == "frames":
        return export_frames(record, ctx)
    with exporting(record):
        _stored_kind(record, ctx, "video")
        record.problems = [p for p in record.problems if not p.startswith(NOTE_PREFIXES)]
        planned = planned_outputs(record, ctx.recipe)
        several = len(ctx.recipe.export.effective_profiles()) > 1
        outputs: list[dict[str, Any]] = []
        said: list[str] = []
        with local_source(ctx.workspace.result_file(record.result_key), 1 << 62) as (
            local,
            sha,
            size,
        ):
            held = _held(local, record.name)
            for profile, member in planned:
                notes = [
                    f"{what} is not applied to videos in this version"
                    for what in _NOT_FOR_VIDEO
                    if getattr(profile, what) is not None
                ]
                if profile.colour == "srgb":
                    notes.append("colour conversion to sRGB is not applied to videos")
                storage.put_file(local, staging_path(ctx, member))
                outputs.append(
                    {
                        "profile": profile.name,
                        "name": member,
                        **held,
                        "bytes": size,
                        "sha256": sha,
                        "notes": notes,
                    }
                )
                said += [note_prefix(profile, several) + n for n in notes]
        record.outputs = outputs
        record.problems += [n for n in dict.fromkeys(said) if n not in record.problems]
        record.output_sha256 = str(outputs[0]["sha256"])
        record.output.update({k: outputs[0][k] for k in (*held, "bytes")})
        record.status = "ok"
    return record


def _stored_kind(record: ImageRecord, ctx: Any, kind: str) -> dict[str, Any]:
    """The stored result's meta, checked to be there and of ``kind`` ("video" or "frames")."""
    assert record.result_key is not None
    if not ctx.workspace.has_result(record.result_key):
        raise RetouchError(
            f"result {record.result_key[:12]} is missing from the workspace "
            f"{ctx.workspace.root}; run again with --refresh to recompute it"
        )
    meta: dict[str, Any] = ctx.workspace.result_meta(record.result_key)
    if meta.get("kind", "video") != kind:
        raise RetouchError(
            f"the stored result is {meta.get('kind', 'video')}, not {kind} as "
            "export.video.container asks; run again with --refresh to recompute it"
        )
    return meta


def seconds_text(t: Fraction) -> str:
    """A time in seconds as a decimal: exact where it has a finite decimal expansion of at
    most 9 places (ns), else rounded to 9 places."""
    scaled = t * 10**9
    nanos = round(scaled)
    sign = "-" if nanos < 0 else ""
    whole, frac = divmod(abs(nanos), 10**9)
    return f"{sign}{whole}.{frac:09d}".rstrip("0").rstrip(".") if frac else f"{sign}{whole}"


def frames_csv(pts: list[int], time_base: Fraction, names: list[str]) -> str:
    """``frames.csv`` of an image sequence: per frame its number, file, source pts, the
    stream's time base (so ``pts * time_base`` is its exact time), its time and duration in
    seconds. A frame lasts until the next one; the last one the clip's mean frame duration
    (1/25 s alone), as the clip's duration counts it."""
    times = [Fraction(p) * time_base for p in pts]
    span = times[-1] - times[0]
    last = span / (len(times) - 1) if len(times) > 1 else Fraction(1, 25)
    lines = ["index,file,pts,time_base,time,duration"]
    for i, (t, name) in enumerate(zip(times, names, strict=True)):
        duration = times[i + 1] - t if i + 1 < len(times) else last
        lines.append(
            f"{i + 1},{name},{pts[i]},{time_base},{seconds_text(t)},{seconds_text(duration)}"
        )
    return "\n".join(lines) + "\n"


def export_frames(record: ImageRecord, ctx: Any) -> ImageRecord:
    """Deliver the stored lossless result as an image sequence under each planned name (a
    folder per export profile): ``<stem>_000001.png``... (numbered from 1, zero-padded to
    the count's width, at least 6 digits; ``export.video.frames_format``), ``frames.csv``
    (each frame's source time, :func:`frames_csv`) and each audio stream copied
    (:func:`segments.copy_audio`).

    The frames are decoded from the stored file bit for bit as processed, checked against
    the stored frame times (count and each time), encoded once (JPEG once per profile
    ``quality``) and staged per profile; the folder's listing
    (:func:`~retouch.lib.phases.export.frames_listing`) is written last, so the delivery
    never packs part of a sequence.
    """
    from retouch.lib.imageio import encode, format_extension
    from retouch.lib.phases.export import (
        NOTE_PREFIXES,
        exporting,
        frames_listing,
        note_prefix,
        planned_outputs,
        staging_path,
    )
    from retouch.lib.phases.keys import sha256_bytes

    with exporting(record):
        meta = _stored_kind(record, ctx, "frames")
        assert record.result_key is not None
        record.problems = [p for p in record.problems if not p.startswith(NOTE_PREFIXES)]
        planned = planned_outputs(record, ctx.recipe)
        several = len(ctx.recipe.export.effective_profiles()) > 1
        fmt = ctx.recipe.export.video.frames_format
        ext = format_extension(fmt)
        # JPEG frames at each profile's quality (one encoding per distinct quality);
        # lossless formats once for all profiles.
        quality_of = {
            member: (profile.quality if fmt == "jpg" else 0) for profile, member in planned
        }
        time_base = Fraction(meta["time_base"])
        pts = [int(p) for p in meta["pts"]]
        digits = max(6, len(str(len(pts))))
        stems = {member: PurePosixPath(member).name for _p, member in planned}
        for _profile, member in planned:  # an earlier, unfinished export's files go first
            if storage.exists(frames_listing(ctx, member)):
                storage.remove(frames_listing(ctx, member))
            staged = storage.local_path(staging_path(ctx, member))
            if staged is not None and os.path.isdir(staged):
                shutil.rmtree(staged)
        # Per quality: (file in the folder, bytes, sha256) of each frame, in order.
        files: dict[int, list[tuple[str, int, str]]] = {q: [] for q in quality_of.values()}
        names: list[str] = []
        size: tuple[int, int] | None = None
        with (
            local_source(ctx.workspace.result_file(record.result_key), 1 << 62) as (local, *_),
            tempfile.TemporaryDirectory(prefix="retouch-frames-") as tmp,
        ):
            with media.open_input(local, record.name) as c:
                vs = media.video_stream(c, record.name)
                stored_tb = Fraction(vs.time_base)
                for frame in c.decode(vs):
                    n = len(names)
                    if (
                        n >= len(pts)
                        or frame.pts is None
                        or (Fraction(frame.pts) * stored_tb != Fraction(pts[n]) * time_base)
                    ):
                        raise RetouchError(
                            f"the stored frames do not match their times at frame {n + 1}; "
                            "run again with --refresh to recompute them"
                        )
                    image = media.frame_image(frame, 0)
                    size = size or (image.width, image.height)
                    number = f"{n + 1:0{digits}d}.{ext}"
                    for q, listed_q in files.items():
                        data = encode(image, fmt, quality=q or 92, keep_metadata=False)
                        for member, stem in stems.items():
                            if quality_of[member] == q:
                                storage.write_bytes(
                                    staging_path(ctx, f"{member}/{stem}_{number}"),
                                    data,
                                    durable=False,
                                )
                        listed_q.append((number, len(data), sha256_bytes(data)))
                    names.append(number)
            if len(names) != len(pts) or size is None:
                raise RetouchError(
                    f"the stored result holds {len(names)} of the {len(pts)} frames; run "
                    "again with --refresh to recompute them"
                )
            audio = segments.copy_audio(local, tmp, record.name)
            outputs: list[dict[str, Any]] = []
            said: list[str] = []
            for profile, member in planned:
                stem = stems[member]
                listed = [(f"{stem}_{name}", b, sha) for name, b, sha in files[quality_of[member]]]
                csv = frames_csv(pts, time_base, [name for name, *_ in listed]).encode()
                storage.write_bytes(staging_path(ctx, f"{member}/frames.csv"), csv, durable=False)
                listed.append(("frames.csv", len(csv), sha256_bytes(csv)))
                for name, path in audio:
                    storage.put_file(path, staging_path(ctx, f"{member}/{name}"))
                    with open(path, "rb") as fh:
                        blob = fh.read()
                    listed.append((name, len(blob), sha256_bytes(blob)))
                notes = _frames_notes(record, profile)
                digest = sha256_bytes(
                    "".join(f"{sha}  {name}\n" for name, _b, sha in listed).encode()
                )
                ctx.workspace.write_json(
                    frames_listing(ctx, member), {"folder": member, "files": listed}
                )
                outputs.append(
                    {
                        "profile": profile.name,
                        "name": member,
                        "kind": "frames",
                        "folder": member,
                        "format": fmt,
                        **({"quality": profile.quality} if fmt == "jpg" else {}),
                        "width": size[0],
                        "height": size[1],
                        "frames": len(pts),
                        "files": len(listed),
                        "bit_depth": 8,
                        "alpha": False,
                        "gray": False,
                        "audio": [name for name, _path in audio],
                        "bytes": sum(b for _n, b, _s in listed),
                        "sha256": digest,
                        "notes": notes,
                    }
                )
                said += [note_prefix(profile, several) + n for n in notes]
        record.outputs = outputs
        record.problems += [n for n in dict.fromkeys(said) if n not in record.problems]
        record.output_sha256 = str(outputs[0]["sha256"])
        for key in ("codec", "colour", "streams"):
            record.output.discard(key)
        first = outputs[0]
        record.output.update(
            {
                k: first[k]
                for k in (
                    "kind",
                    "format",
                    "width",
                    "height",
                    "frames",
                    "bit_depth",
                    "alpha",
                    "gray",
                    "bytes",
                    "folder",
                    "files",
                    "audio",
                )
            }  # fmt: skip
        )
        record.status = "ok"
    return record


def _frames_notes(record: ImageRecord, profile: Any) -> list[str]:
    """What a user must be told about an image sequence made of ``record`` under
    ``profile``: the profile settings not applied, streams left out, HDR values as coded."""
    notes = [
        f"{what} is not applied to videos in this version"
        for what in _NOT_FOR_VIDEO
        if getattr(profile, what) is not None
    ]
    if profile.colour == "srgb":
        notes.append("colour conversion to sRGB is not applied to videos")
    held = record.input.to_json()
    subtitles = [s for s in held.get("streams") or [] if s.get("kind") == "subtitle"]
    if subtitles:
        notes.append(
            f"{len(subtitles)} subtitle stream(s) left out: an image sequence holds the frames, "
            "frames.csv and the audio (export.video.container=mkv keeps subtitles)"
        )
    transfer = (held.get("colour") or {}).get("transfer")
    if transfer in ("smpte2084", "arib-std-b67"):
        notes.append(
            f"HDR frames ({transfer}) written as coded, without tone mapping: the image "
            "files carry no HDR tags, so they look flat in an SDR viewer"
        )
    return notes


def _held(path: str, label: str) -> dict[str, Any]:
    """What a video file holds, read from it: container, codec, size, frames, streams."""
    times, _tb = segments.video_timestamps(path, label)
    with media.open_input(path, label) as c:
        vs = media.video_stream(c, label)
        names = c.format.name.split(",")
        if "mp4" in names:  # one demuxer for both: the file's brand tells them apart
            brand = str(c.metadata.get("major_brand", "")).strip()
            fmt = "mov" if brand == "qt" else "mp4"
        elif "matroska" in names:  # one demuxer for both; WebM is named by its extension
            fmt = "webm" if extension(path) == "webm" else "mkv"
        else:
            fmt = names[0]
        return {
            "kind": "video",
            "format": fmt,
            "codec": vs.codec_context.name,
            "width": int(vs.codec_context.width),
            "height": int(vs.codec_context.height),
            "frames": len(times),
            "bit_depth": 8,
            "alpha": False,
            "gray": False,
            "streams": [f"{s.type} {s.codec_context.name}" for s in c.streams if s.type != "video"],
            "colour": media.Colour.of(vs.codec_context).to_json(),
        }
