"""The export phase: outputs named (templates, tags, profiles), each result encoded once per
export profile into the run's staging area, and every lossy change stated."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from retouch.lib import progress, storage
from retouch.lib.delivery import naming
from retouch.lib.errors import RecipeError, RetouchError, reason_of
from retouch.lib.image import Image
from retouch.lib.imageio import (
    describe,
    encode,
    format_extension,
    format_from_name,
    format_keeping,
    format_label,
    holds_16bit,
    holds_alpha,
)
from retouch.lib.phases.context import RunContext, is_video
from retouch.lib.phases.keys import sha256_bytes
from retouch.lib.recipe import ExportProfile, Recipe
from retouch.lib.records import ImageRecord, parse_tags
from retouch.lib.sources import extension


def output_format(record: ImageRecord, recipe: Recipe, profile: ExportProfile | None = None) -> str:
    """The format ``profile`` (by default the export's first profile) writes ``record`` in.

    That is ``profile.format`` ("same": the input's format), except where the profile keeps
    what that format can't hold: with ``alpha = "keep"`` an input with alpha, and with
    ``depth = "keep"`` a 16-bit input, go to a format that holds it (the input's own format
    when it can, else PNG; see :func:`retouch.lib.imageio.format_keeping`). Decided from the
    record's ``input`` (known before the export, so names are planned with it).
    """
    profile = profile or recipe.export.effective_profiles()[0]
    sniffed = record.input.format
    return format_keeping(
        format_from_name(profile.format, sniffed),
        sniffed,
        alpha=profile.alpha == "keep" and bool(record.input.alpha),
        sixteen_bit=profile.depth == "keep" and record.input.bit_depth == 16,
    )


def output_extension(record: ImageRecord, recipe: Recipe, profile: ExportProfile) -> str:
    """The file extension ``record``'s output under ``profile`` gets (a video's: its output
    container, see :func:`retouch.lib.video.media.output_container`; none for a video
    delivered as frames, whose name is then its folder's)."""
    if is_video(record):
        from retouch.lib.video.media import output_container

        video = recipe.export.video
        if video.container == "frames":
            return ""
        return output_container(extension(record.name), video.container, video.codec)[0]
    return format_extension(output_format(record, recipe, profile))


_COLOUR_NAMES = {"#ffffff": "white", "#000000": "black"}
# Notes the export adds to ``record.problems`` start so; a re-export replaces them.
NOTE_PREFIXES = ("export: ", "export profile '")


def note_prefix(profile: ExportProfile, several: bool) -> str:
    return f"export profile {profile.name!r}: " if several else "export: "


def _setting(profile: ExportProfile, several: bool, key: str) -> str:
    """How a user sets ``key`` of ``profile`` (``--set`` syntax)."""
    return f"export.profiles.{profile.name}.{key}" if several else f"export.{key}"


def export_notes(
    record: ImageRecord, image: Image, fmt: str, profile: ExportProfile, *, several: bool = False
) -> list[str]:
    """What a user must be told about writing ``image`` (the result, shaped by ``profile``)
    of ``record`` as ``fmt``: each lossy change, and a format other than the one asked.

    - transparency flattened (onto which colour) where ``fmt`` has no alpha; an alpha
      channel that is fully opaque is said to be dropped with no pixel changed;
    - 16 bits reduced to 8 where ``fmt`` holds 8;
    - the format changed from ``profile.format`` to keep transparency or 16 bits
      (``alpha``/``depth = "keep"``).

    Each note says what happened, why, and the setting that avoids it.
    """
    sniffed = record.input.format
    asked = format_from_name(profile.format, sniffed)
    label = format_label(fmt)
    notes: list[str] = []
    if fmt != asked:
        kept = []
        if image.alpha is not None and not holds_alpha(asked):
            kept.append("transparency")
        if image.bit_depth == 16 and not holds_16bit(asked):
            kept.append("16 bits")
        if kept:
            keys = [
                f"{_setting(profile, several, key)}=keep"
                for key, what in (("alpha", "transparency"), ("depth", "16 bits"))
                if what in kept
            ]
            notes.append(
                f"delivered as {label}, not {format_label(asked)}, to keep its "
                f"{' and '.join(kept)} ({', '.join(keys)})"
            )
    if image.alpha is not None and not holds_alpha(fmt):
        full = 65535 if image.alpha.dtype == np.uint16 else 255
        if bool((image.alpha < full).any()):
            hex_colour = "#" + profile.background.lstrip("#").lower()
            name = _COLOUR_NAMES.get(hex_colour)
            onto = f"{name} ({hex_colour})" if name else hex_colour
            better = format_keeping(fmt, sniffed, alpha=True)
            if profile.alpha == "flatten":
                fix = (
                    f"{_setting(profile, several, 'alpha')}=keep delivers it as "
                    f"{format_label(better)} with its transparency"
                )
            else:
                fix = f"{_setting(profile, several, 'format')}={better} keeps it"
            notes.append(f"transparency flattened onto {onto}: {label} has no alpha channel; {fix}")
        else:
            notes.append(
                f"alpha channel dropped (fully opaque, no pixel changed): {label} has no "
                "alpha channel"
            )
    if image.bit_depth == 16 and not holds_16bit(fmt):
        better = format_keeping(fmt, sniffed, sixteen_bit=True)
        if profile.depth == "reduce":
            fix = (
                f"{_setting(profile, several, 'depth')}=keep delivers it as "
                f"{format_label(better)} with 16 bits"
            )
        else:
            fix = f"{_setting(profile, several, 'format')}={better} keeps them"
        notes.append(f"16-bit reduced to 8-bit: {label} holds 8 bits per channel; {fix}")
    return notes


def name_entries(
    records: list[ImageRecord],
    recipe: Recipe,
    profile: ExportProfile | None = None,
    *,
    date: str | None = None,
) -> list[dict[str, Any]]:
    """What the naming template of ``profile`` (default: the first) may use, per record."""
    profile = profile or recipe.export.effective_profiles()[0]
    day = date or datetime.now(UTC).date().isoformat()
    return [
        {
            "stem": PurePosixPath(r.name).stem,
            "folder": _folder(r.name),
            "ext": output_extension(r, recipe, profile),
            "index": r.index,
            "preset": recipe.name,
            "profile": profile.name,
            "date": day,
            "score": r.scores.score,
            "verdict": r.scores.verdict,
            "group": r.category("group"),
            "tag": r.category("tag"),
        }
        for r in records
    ]


def assign_outputs(records: list[ImageRecord], recipe: Recipe, *, date: str | None = None) -> None:
    """Name every output of ``records`` (the deliverable ones), profile by profile.

    Sets ``record.tags`` (from ``export.tags``), ``record.outputs`` (one planned
    ``{"profile", "name"}`` per profile) and ``record.output_name`` (the first). Names are
    unique within a profile; with several profiles each one's outputs sit in a folder named
    after it (``web/a.jpg``, ``archive/a.tif``), with one profile at the top as before.

    Raises:
        RecipeError: a bad name template, an unreadable tag file or watermark file.
    """
    from retouch.lib.delivery import watermark

    export = recipe.export
    profiles = export.effective_profiles()
    for profile in profiles:
        if profile.watermark is not None:
            watermark.check_watermark(profile.watermark)
    tags = read_tags(export.tags) if export.tags else {}
    for r in records:
        tag = tags.get(r.name, tags.get(PurePosixPath(r.name).name))
        r.tags = [tag] if tag else []
        r.outputs = []
    several = len(profiles) > 1
    for profile in profiles:
        names = naming.render_names(
            name_entries(records, recipe, profile, date=date),
            profile.name_template,
            index_width=profile.index_width,
        )
        for r, name in zip(records, names, strict=True):
            member = f"{profile.name}/{name}" if several else name
            r.outputs.append({"profile": profile.name, "name": member})
    for r in records:
        r.output_name = r.outputs[0]["name"] if r.outputs else None
        r.output_sha256 = None


def read_tags(uri: str) -> dict[str, str]:
    """The user tag file at ``uri`` (see :func:`retouch.lib.records.parse_tags`).

    Raises:
        RecipeError: the file cannot be read or parsed.
    """
    try:
        text = storage.read_bytes(uri, max_bytes=16 * 1024 * 1024).decode("utf-8-sig")
        return parse_tags(text, storage.redact(uri))
    except (RetouchError, UnicodeDecodeError, ValueError) as exc:
        raise RecipeError(f"export.tags: {exc}") from None


def planned_outputs(record: ImageRecord, recipe: Recipe) -> list[tuple[ExportProfile, str]]:
    profiles = recipe.export.effective_profiles()
    planned = record.outputs
    if (
        len(planned) == len(profiles)
        and planned[0].get("name") == record.output_name
        and [o.get("profile") for o in planned] == [p.name for p in profiles]
    ):
        return [(p, str(o["name"])) for p, o in zip(profiles, planned, strict=True)]
    # Named by a caller that only set output_name: the first profile alone.
    return [(profiles[0], str(record.output_name))]


def export_one(record: ImageRecord, ctx: RunContext) -> ImageRecord:
    """Encode one result once per export profile into the run's staging area.

    Each profile resizes, converts the colour, marks and encodes the stored result (pixels
    HxWx3 BGR uint8/uint16) its own way; ``record.outputs`` then lists every file written
    with its sha256 and what the file really holds (format, width, height, bit_depth,
    alpha, gray: read back from the encoded bytes, never copied from the input), and
    ``output_sha256`` is the first one's; ``record.output`` takes those fields of the first
    file. Each lossy change (transparency flattened, 16 bits reduced) and each format
    changed to keep them is stated in the output's ``notes`` and in ``record.problems``
    (see :func:`export_notes`). A failure in any profile fails the image, so the delivery
    never holds part of an image's outputs.
    """
    from retouch.lib.delivery import watermark

    if not record.ok or record.result_key is None or record.output_name is None:
        progress.emit(
            progress.ImagePhaseDone(
                phase="export", name=record.name, ok=False, reason=record.reason
            )
        )
        return record
    if is_video(record):
        from retouch.lib.video.export import export_video

        return export_video(record, ctx)
    with exporting(record):
        if not ctx.workspace.has_result(record.result_key):
            raise RetouchError(
                f"result {record.result_key[:12]} is missing from the workspace {ctx.workspace.root}; "
                "run again with --refresh to recompute it"
            )
        image = ctx.workspace.load_result(record.result_key)
        # An earlier export's notes (a re-delivery) give way to this one's.
        record.problems = [p for p in record.problems if not p.startswith(NOTE_PREFIXES)]
        planned = planned_outputs(record, ctx.recipe)
        several = len(ctx.recipe.export.effective_profiles()) > 1
        outputs: list[dict[str, Any]] = []
        said: list[str] = []
        for profile, member in planned:
            fmt = output_format(record, ctx.recipe, profile)
            try:
                shaped = watermark.apply_profile(image, profile)
                notes = export_notes(record, shaped, fmt, profile, several=several)
                data = encode(
                    shaped,
                    fmt,
                    quality=profile.quality,
                    keep_metadata=profile.keep_metadata,
                    background=profile.background,
                )
                held = describe(data)  # what the file really is, read from its own bytes
            except RetouchError as exc:
                raise RetouchError(f"export profile {profile.name!r}: {reason_of(exc)}") from exc
            if held["format"] != fmt:  # the name's extension would lie
                raise RetouchError(
                    f"export profile {profile.name!r}: encoded {held['format']}, not {fmt}"
                )
            # Staged for the archive, which is the durable copy.
            storage.write_bytes(staging_path(ctx, member), data, durable=False)
            outputs.append(
                {
                    "profile": profile.name,
                    "name": member,
                    **held,
                    "bytes": len(data),
                    "sha256": sha256_bytes(data),
                    "notes": notes,
                }
            )
            said += [note_prefix(profile, several) + n for n in notes]
        record.outputs = outputs
        record.problems += [n for n in dict.fromkeys(said) if n not in record.problems]
        record.output_sha256 = str(outputs[0]["sha256"])
        # ``output`` describes the delivered file (the first one with several profiles).
        record.output.update(
            {
                key: outputs[0][key]
                for key in ("format", "width", "height", "bit_depth", "alpha", "gray", "bytes")
            }
        )
        record.status = "ok"
    return record


@contextmanager
def exporting(record: ImageRecord) -> Iterator[None]:
    """The export of one input: an error fails it (and then names no delivered file, as it
    is not in the ZIP); the time is recorded and the export announced."""
    started = time.perf_counter()
    try:
        yield
    except RetouchError as exc:
        record.fail("export", reason_of(exc))
    except Exception as exc:
        record.fail("export", f"{type(exc).__name__}: {exc}")
    if not record.ok:  # not in the ZIP, so the manifest must not name a file for it
        record.output_name = record.output_sha256 = None
        record.outputs = []
    record.timings["export"] = round(time.perf_counter() - started, 4)
    progress.emit(
        progress.ImagePhaseDone(
            phase="export", name=record.name, ok=record.ok, output_name=record.output_name
        )
    )


def _folder(name: str) -> str:
    """The source sub-folder of an image ("" at the top level), for the {folder} placeholder."""
    parent = str(PurePosixPath(name).parent)
    return "" if parent == "." else parent


def staging_path(ctx: RunContext, output_name: str) -> str:
    return ctx.workspace.run_path(ctx.run_id, "export", *output_name.split("/"))


def frames_listing(ctx: RunContext, folder: str) -> str:
    """Where the export lists the files of the image sequence ``folder`` once every one of
    them is staged: the delivery packs exactly the files listed, so an export stopped
    half-way (no listing) never passes for a whole sequence. (Output names never start with
    a dot, so the listing cannot clash with one.)"""
    return ctx.workspace.run_path(ctx.run_id, "export", ".frames", *folder.split("/")) + ".json"
