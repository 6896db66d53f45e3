"""URIs: local paths and fsspec URLs, joined safely, and shown without their credentials."""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import unquote

import fsspec

from retouch.lib.errors import StorageError

# Object stores have no real folders: creating one is either a no-op or (for a bare
# bucket name) would create a bucket, which retouch must never do behind the user's back.
OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "abfs", "az", "adl", "oss", "r2"}


def is_chained(uri: str) -> bool:
    """Whether ``uri`` is a chained fsspec URL (``zip://a.jpg::s3://b/x.zip``,
    ``simplecache::s3://b/k``): some part beyond the first ``::`` is a URL, or the first part
    names a protocol. A local file may have ``::`` in its name (``m_a::b.jpg``): a path."""
    if "::" not in uri or uri.startswith("file://"):  # a file:// URL is always the last link
        return False
    parts = uri.split("::")
    return any("://" in part for part in parts) or parts[0] in fsspec.available_protocols()


def _has_protocol(uri: str) -> bool:
    return "://" in uri or is_chained(uri)


def local_path(uri: str) -> str | None:
    """The local filesystem path ``uri`` names, or ``None`` when it is not local.

    Plain paths (``~`` expanded, ``::`` in a name included) and ``file://`` URLs are local;
    every other URL, chained ones included, is not.
    """
    uri = os.fspath(uri)
    if is_chained(uri):
        return None
    if uri.startswith("file://"):
        return unquote(uri[len("file://") :]) or "/"
    if "://" in uri:
        return None
    return os.path.expanduser(uri)


def is_local(uri: str) -> bool:
    """True when ``uri`` is a plain path or a ``file://`` URL."""
    return local_path(uri) is not None


def join(base: str, *parts: str) -> str:
    """Join path parts onto a local path or URL, always staying below ``base``.

    Parts are split on ``/``; leading slashes are dropped so an absolute part cannot
    replace the base, and a ``..`` segment is refused (ValueError). For a chained URL (``zip://a::s3://b/x.zip``) the parts are joined to
    the first (innermost) path.
    """
    head, sep, tail = base.partition("::")
    pieces = [p for part in parts for p in str(part).replace("\\", "/").split("/") if p]
    if ".." in pieces:
        raise ValueError(f"refusing to join {parts!r} onto {redact(base)}: '..' would leave it")
    if not pieces:
        return base
    if "://" in head:
        proto, _, path = head.partition("://")
        joined = path.rstrip("/") + "/" + "/".join(pieces) if path else "/".join(pieces)
        head = f"{proto}://{joined}"
    else:
        head = os.path.join(head, *pieces) if head else os.path.join(*pieces)
    return head + sep + tail


def redact(uri: str) -> str:
    """``uri`` with credentials removed: user info and query strings become ``***``.

    Each part of a chained URL is redacted. Plain local paths are returned unchanged.
    """
    if not _has_protocol(uri):
        return uri
    return "::".join(_redact_one(part) for part in uri.split("::"))


def redact_tree(value: Any) -> Any:
    """A JSON-like value (dicts, lists, strings) with credentials removed from every URL in
    it (recipes, run records and manifests name mask folders, sources, destinations)."""
    if isinstance(value, dict):
        return {k: redact_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_tree(v) for v in value]
    if isinstance(value, str) and "://" in value:
        return redact(value)
    return value


def _userinfo_end(rest: str) -> int:
    """Index of the '@' ending ``user[:password]`` in the part after ``scheme://``, or -1."""
    at = rest.rfind("@")
    first_slash = rest.find("/")
    colon = rest.find(":")
    # user[:password]@host: the '@' is in the host part, or a ':' precedes it (a secret
    # key may itself contain '/', which would end the host part early).
    if at >= 0 and (first_slash < 0 or at < first_slash or 0 <= colon < at):
        return at
    return -1


def _redact_one(part: str) -> str:
    if "://" not in part:
        return part
    scheme, _, rest = part.partition("://")
    rest, query, _ = rest.partition("?")
    at = _userinfo_end(rest)
    if at >= 0:
        rest = "***@" + rest[at + 1 :]
    return _mask_env_secrets(f"{scheme}://{rest}" + ("?***" if query else ""))


def uri_secrets(uri: str) -> list[str]:
    """The credential strings inside ``uri`` (user info, its password, query strings).

    A library's error message may quote them without the URL around them (a bucket name
    "KEY:SECRET@bucket"), so :func:`redact_text` masks these wherever they appear.
    """
    found: list[str] = []
    for part in uri.split("::"):
        if "://" not in part:
            continue
        rest, _, query = part.partition("://")[2].partition("?")
        at = _userinfo_end(rest)
        if at >= 0:
            userinfo = rest[:at]
            found += [userinfo, *userinfo.split(":", 1)]
        if query:
            found += [query, *(v for kv in query.split("&") for v in kv.split("=", 1)[1:])]
    # Longest first, so that a whole "user:password" goes before its pieces; very short
    # values would mangle ordinary words.
    return sorted({f for f in found if len(f) >= 4}, key=len, reverse=True)


def check_no_inline_credentials(uri: str) -> None:
    """Refuse object-store URLs carrying credentials (``s3://KEY:SECRET@bucket/...``).

    Such URLs do not work (the object stores take keys from the environment or a profile,
    so the keys would be read as part of the bucket name) and would be recorded wherever
    the URL is. Raises :class:`StorageError` with the URL redacted.
    """
    for part in uri.split("::"):
        scheme, sep, rest = part.partition("://")
        if not sep or scheme.lower() not in OBJECT_STORES:
            continue
        if _userinfo_end(rest.partition("?")[0]) >= 0:
            raise StorageError(
                f"{redact(uri)}: credentials inside a {scheme}:// URL are not accepted; put "
                "them in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or a "
                "profile and give the URL without them"
            )


def _mask_env_secrets(text: str) -> str:
    # Short values (test keys such as "testing") would mangle ordinary words; real secrets
    # are 40+ characters.
    for var in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        value = os.environ.get(var)
        if value and len(value) >= 8:
            text = text.replace(value, "***")
    return text


_URL_IN_TEXT = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def redact_text(text: str, uri: str | None = None) -> str:
    """Remove credentials from free text (an underlying library's error message).

    URLs in the text are redacted like :func:`redact`, the values of the AWS secret key and
    session token environment variables are masked wherever they appear, and so are the
    credentials of ``uri`` (the URI the message is about), even when quoted on their own.
    """
    text = _URL_IN_TEXT.sub(lambda m: _redact_one(m.group(0)), text)
    for secret in uri_secrets(uri) if uri else ():
        text = text.replace(secret, "***")
    return _mask_env_secrets(text)
