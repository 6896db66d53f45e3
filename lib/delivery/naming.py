"""Output names from a template such as ``{stem}.{ext}`` or ``{preset}/{index}-{stem}.{ext}``.

Every name produced is a safe relative POSIX path: it cannot climb out of the destination
(``..``, absolute paths, drive letters and backslashes are neutralised), holds no control
characters, no segment is made only of dots, and names are unique case-insensitively (so
they survive a case-insensitive disk or a ZIP unpacked on Windows or macOS). Unicode letters
and spaces in file names are kept.
"""

from __future__ import annotations

import re
import string
import unicodedata
from typing import Any

from retouch.lib.errors import RecipeError

PLACEHOLDERS = (
    "stem", "ext", "index", "preset", "profile", "folder", "date", "score", "verdict", "group", "tag"
)  # fmt: skip
"""Placeholders a name template may use: ``folder`` is the source sub-folder ('' at the top),
``date`` the run's date (YYYY-MM-DD), ``score`` the quality score (a number: ``{score:.0f}``),
``verdict`` the review verdict, ``group`` the analysis group, ``tag`` the user's tag."""

_REQUIRED_KEYS = ("stem", "ext", "index")
MISSING_VALUE = "na"
"""What an optional placeholder without a value (an image with no score) renders as."""

# Characters that are path separators or invalid in file names on common systems
# (Windows forbids these in names; a ZIP may be unpacked there).
_FORBIDDEN = re.compile(r'[/\\<>:"|?*]')
_WINDOWS_RESERVED = {
    "CON", "PRN", "AUX", "NUL",
    *(f"COM{i}" for i in range(1, 10)),
    *(f"LPT{i}" for i in range(1, 10)),
}  # fmt: skip
_MAX_SEGMENT_BYTES = 255


def _is_control(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") and ch not in (" ",)


def sanitize_part(value: str) -> str:
    """A value made safe to sit inside one path segment.

    Separators (``/``, ``\\``) and characters invalid on Windows become ``_``; control and
    format characters are dropped; a value made only of dots becomes underscores; Unicode
    letters, digits, spaces and punctuation such as ``-`` and ``.`` are kept. The result is
    NFC-normalised.
    """
    value = unicodedata.normalize("NFC", str(value))
    value = "".join(ch for ch in value if not _is_control(ch))
    value = _FORBIDDEN.sub("_", value)
    # A value of only dots would vanish as a path segment ('.' and '..' are dropped);
    # keep it visible instead.
    if value and set(value) == {"."}:
        value = "_" * len(value)
    return value


def _parse(template: str) -> list[tuple[str, str | None, str | None, str | None]]:
    try:
        return list(string.Formatter().parse(template))
    except ValueError as exc:
        raise RecipeError(
            f"name template {template!r} is not valid ({exc}); use placeholders like "
            "{stem} and write a literal brace as {{ or }}"
        ) from None


def validate_template(template: str) -> None:
    """Check that ``template`` only uses known placeholders and valid format specs.

    Raises:
        RecipeError: an unknown placeholder (the message lists the valid ones), attribute
            or item access, a conversion, or an empty template.
    """
    if not template or not template.strip():
        raise RecipeError("the name template is empty; the default is '{stem}.{ext}'")
    for _literal, field_name, spec, conversion in _parse(template):
        if field_name is None:
            continue
        if field_name not in PLACEHOLDERS:
            valid = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            shown = "{" + field_name + "}" if field_name else "{}"
            raise RecipeError(
                f"name template {template!r}: unknown placeholder {shown}; valid placeholders: {valid}"
            )
        if conversion:
            raise RecipeError(
                f"name template {template!r}: conversions like !{conversion} are not allowed"
            )
        if spec and ("{" in spec or "}" in spec):
            raise RecipeError(f"name template {template!r}: nested placeholders are not allowed")
        sample: Any = {"index": 1, "score": 1.5}.get(field_name, "x")
        try:
            format(sample, spec or "")
        except ValueError as exc:
            raise RecipeError(
                f"name template {template!r}: bad format {{{field_name}:{spec}}} ({exc})"
            ) from None


def render_names(
    entries: list[dict[str, Any]], template: str, *, index_width: int | None = None
) -> list[str]:
    """Render one safe, unique relative name per entry.

    Each entry needs ``stem`` (file name without extension), ``ext`` (without the dot) and
    ``index`` (1-based); ``preset``, ``profile`` and ``folder`` are optional (empty when
    missing), ``date``, ``score``, ``verdict``, ``group`` and ``tag`` too (``na`` when
    missing). ``{index}`` is zero-padded to ``index_width`` digits, by default the width of
    the number of entries, unless the template gives its own format (``{index:04d}``). Values are sanitised before they are
    put in the template, so a stem like ``../../x`` stays one harmless file name; ``/`` written
    in the template itself makes folders (``folder`` may hold ``/`` too). Names equal when
    compared case-insensitively get ``-2``, ``-3``... before the extension, in entry order.

    Raises:
        RecipeError: an invalid template or an entry missing a required key.
    """
    validate_template(template)
    fields = _parse(template)
    width = index_width or (len(str(len(entries))) if entries else 1)
    used: set[str] = set()
    names: list[str] = []
    for position, entry in enumerate(entries):
        missing = [k for k in _REQUIRED_KEYS if k not in entry]
        if missing:
            raise RecipeError(f"naming entry {position + 1} lacks {', '.join(missing)}")
        rendered = []
        for literal, field_name, spec, _conversion in fields:
            rendered.append(literal)
            if field_name is not None:
                rendered.append(_render_field(entry, field_name, spec or "", width))
        # An entry whose values are all empty still needs a file name.
        name = _safe_path("".join(rendered)) or "unnamed"
        name = _unique(name, used)
        names.append(name)
    return names


def _render_field(entry: dict[str, Any], key: str, spec: str, width: int) -> str:
    if key == "index":
        index = int(entry["index"])
        return format(index, spec) if spec else f"{index:0{width}d}"
    value = entry.get(key)
    if key in ("date", "score", "verdict", "group", "tag") and (value is None or value == ""):
        return MISSING_VALUE
    if key == "score":
        try:
            return sanitize_part(format(float(value), spec))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return MISSING_VALUE
    text = "" if value is None else str(value)
    if key == "ext":
        text = text.lstrip(".")
    if key == "folder":
        # The one value allowed to make folders: keep its '/' and sanitise each segment.
        return "/".join(format(sanitize_part(p), spec) for p in text.replace("\\", "/").split("/"))
    return format(sanitize_part(text), spec)


def _safe_segment(segment: str) -> str:
    segment = "".join(ch for ch in segment if not _is_control(ch))
    segment = re.sub(r'[\\<>:"|?*]', "_", segment).strip()
    # Trailing dots and spaces vanish on Windows; a leading dot hides the file.
    segment = segment.rstrip(" .")
    if segment.startswith("."):
        segment = "_" + segment.lstrip(".")
    if not segment or set(segment) <= {"."}:
        return ""
    if segment.split(".", 1)[0].upper() in _WINDOWS_RESERVED:
        segment = "_" + segment
    return _truncate(segment)


def _truncate(segment: str) -> str:
    if len(segment.encode("utf-8")) <= _MAX_SEGMENT_BYTES:
        return segment
    stem, dot, ext = segment.rpartition(".")
    if not dot or len(ext) > 16:
        stem, dot, ext = segment, "", ""
    budget = _MAX_SEGMENT_BYTES - len((dot + ext).encode("utf-8"))
    cut = stem.encode("utf-8")[:budget].decode("utf-8", errors="ignore")
    return cut + dot + ext


def _safe_path(raw: str) -> str:
    raw = unicodedata.normalize("NFC", raw).replace("\\", "/")
    # Empty, '.' and '..' segments are dropped: none of them can name a file, and '..'
    # would climb out of the destination; a leading '/' or 'C:' likewise goes away.
    segments = [_safe_segment(s) for s in raw.split("/")]
    return "/".join(s for s in segments if s)


def _split_ext(segment: str) -> tuple[str, str]:
    stem, dot, ext = segment.rpartition(".")
    if not dot or not stem:
        return segment, ""
    return stem, "." + ext


def _unique(name: str, used: set[str]) -> str:
    folder, _, last = name.rpartition("/")
    stem, ext = _split_ext(last)
    candidate = name
    n = 1
    while candidate.casefold() in used:
        n += 1
        candidate = (folder + "/" if folder else "") + f"{stem}-{n}{ext}"
    used.add(candidate.casefold())
    return candidate


def unique_name(name: str, used: set[str]) -> str:
    """``name``, or ``name`` with ``-2``, ``-3``... before its extension, so that it differs
    (ignoring case) from every name in ``used``; the result is added to ``used``."""
    return _unique(name, used)


def is_safe_name(name: str) -> bool:
    """True when ``name`` is a relative POSIX path that stays below its destination."""
    if not name or name.startswith("/") or "\\" in name or re.match(r"^[A-Za-z]:", name):
        return False
    if any(_is_control(ch) for ch in name):
        return False
    return all(seg and set(seg) != {"."} for seg in name.split("/"))
