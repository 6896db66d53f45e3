"""Source discovery: folders, globs, single files, list files, ZIPs, S3 prefixes (real moto)."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest

from retouch.lib import storage  # noqa: E402
from retouch.lib.errors import SourceError, StorageError  # noqa: E402
from retouch.lib.sources import discover  # noqa: E402


def _write(path: Path, data: bytes = b"img") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _names(found) -> list[str]:
    return [item.name for item in found.items]


def _reasons(found) -> dict[str, str]:
    return {os.path.basename(uri.rstrip("/")): reason for uri, reason in found.skipped}


@pytest.fixture
def photo_dir(tmp_path) -> Path:
    root = tmp_path / "photos"
    _write(root / "b.jpg", b"bbb")
    _write(root / "A.JPEG", b"aa")
    _write(root / "sub" / "c.PNG", b"c")
    _write(root / "sub" / "deeper" / "d.webp", b"dddd")
    _write(root / "sub" / "notes.txt", b"hello")
    _write(root / "scan.tif")
    _write(root / "README")
    _write(root / ".DS_Store", b"\x00")
    _write(root / ".hidden.jpg")
    _write(root / ".git" / "obj.jpg")
    _write(tmp_path / "outside" / "secret.jpg", b"secret")
    _write(tmp_path / "outside" / "more" / "e.jpg")
    (root / "escape.jpg").symlink_to(tmp_path / "outside" / "secret.jpg")
    (root / "alias.jpg").symlink_to(root / "b.jpg")
    (root / "linked_dir").symlink_to(tmp_path / "outside" / "more")
    return root


def test_local_folder_recursive(photo_dir):
    found = discover(str(photo_dir))
    assert _names(found) == [
        "A.JPEG",
        "alias.jpg",
        "b.jpg",
        "scan.tif",
        "sub/c.PNG",
        "sub/deeper/d.webp",
    ]
    by_name = {item.name: item for item in found.items}
    assert by_name["sub/deeper/d.webp"].size == 4
    assert storage.read_bytes(by_name["b.jpg"].uri) == b"bbb"
    reasons = _reasons(found)
    assert reasons["notes.txt"] == "not an image file extension (.txt)"
    assert reasons["README"] == "not an image file extension (none)"
    assert "outside the source folder" in reasons["escape.jpg"]
    assert "not followed" in reasons["linked_dir"]
    assert reasons[".DS_Store"] == "hidden file" and reasons[".git"] == "hidden folder"
    assert reasons[".hidden.jpg"] == "hidden file"
    assert "obj.jpg" not in reasons  # a hidden folder is reported once, not walked


def test_local_folder_follow_symlinks_and_non_recursive(photo_dir):
    followed = discover(str(photo_dir), follow_symlinks=True)
    assert {"escape.jpg", "linked_dir/e.jpg"} <= set(_names(followed))
    escape = next(i for i in followed.items if i.name == "escape.jpg")
    assert storage.read_bytes(escape.uri) == b"secret"
    flat = discover(str(photo_dir), recursive=False)
    assert _names(flat) == ["A.JPEG", "alias.jpg", "b.jpg", "scan.tif"]


def test_symlink_loop_is_listed_once(tmp_path):
    root = tmp_path / "loop"
    _write(root / "a.jpg")
    (root / "again").symlink_to(root)
    found = discover(str(root), follow_symlinks=True)
    assert _names(found) == ["a.jpg"]
    assert any("already listed" in reason for _, reason in found.skipped)


def test_globs(photo_dir):
    top = discover(str(photo_dir / "*.jpg"))
    assert _names(top) == ["alias.jpg", "b.jpg"]  # hidden .hidden.jpg never matched
    assert "escape.jpg" in _reasons(top)
    deep = discover(str(photo_dir / "sub" / "**" / "*"))
    assert _names(deep) == ["c.PNG", "deeper/d.webp"]
    assert _reasons(deep)["notes.txt"].startswith("not an image")
    assert discover(str(photo_dir / "*.gif")).items == []
    with pytest.raises(SourceError, match="no such file, folder or prefix"):
        discover(str(photo_dir / "missing" / "*.jpg"))


def test_single_file_missing_and_empty_sources(tmp_path, photo_dir):
    single = discover(str(photo_dir / "sub" / "c.PNG"))
    assert [(i.name, i.size) for i in single.items] == [("c.PNG", 1)]
    with pytest.raises(SourceError) as info:
        discover(str(tmp_path / "nothing-here"))
    assert str(info.value) == f"{tmp_path / 'nothing-here'}: no such file, folder or prefix"
    empty = tmp_path / "empty"
    _write(empty / "only.txt")
    found = discover(str(empty))
    assert found.items == [] and _reasons(found)["only.txt"].startswith("not an image")
    other = discover(str(photo_dir / "README"))
    assert other.items == [] and "a source is a folder" in other.skipped[0][1]


def test_list_file(tmp_path, photo_dir):
    lst = tmp_path / "batch.txt"
    absolute = photo_dir / "sub" / "c.PNG"
    storage.write_bytes("memory://lists/m.jpg", b"mem")
    lst.write_text(
        "\ufeff# my selection\n"
        "\n"
        "photos/b.jpg\n"
        f"  {absolute}  \n"
        "photos/missing.jpg\n"
        "photos/sub\n"
        "photos/sub/notes.txt\n"
        "memory://lists/m.jpg\n"
        "./photos/b.jpg\n",
        encoding="utf-8",
    )
    found = discover(str(lst))
    assert _names(found) == ["c.PNG", "m.jpg", "photos/b.jpg", "photos/missing.jpg"]
    assert [storage.read_bytes(i.uri) for i in found.items[:3]] == [b"c", b"mem", b"bbb"]
    # A listed image that is not there is that image's failure, with the reason, not a skip.
    with pytest.raises(StorageError, match=r"photos/missing\.jpg: not found \(read\)"):
        storage.read_bytes(found.items[3].uri)
    reasons = _reasons(found)
    assert "missing.jpg" not in reasons
    assert reasons["sub"].startswith("is a folder")
    assert reasons["notes.txt"].startswith("not an image file extension (.txt)")
    assert "listed again on line 9" in reasons["b.jpg"]


def test_list_file_same_names_get_fuller_names(tmp_path):
    a = _write(tmp_path / "x" / "shot.jpg", b"1")
    b = _write(tmp_path / "y" / "SHOT.jpg", b"2")
    lst = tmp_path / "lists" / "two.lst"
    lst.parent.mkdir()
    lst.write_text(f"{a}\n{b}\n")
    names = _names(discover(str(lst)))
    assert len(set(n.casefold() for n in names)) == 2
    assert all(n.endswith(("x/shot.jpg", "y/SHOT.jpg")) for n in names)


def _evil_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("top.jpg", b"top")
        zf.writestr("album/in é space.png", b"png")
        zf.writestr("album/", b"")
        zf.writestr("../evil.jpg", b"evil")
        zf.writestr("/abs.jpg", b"abs")
        zf.writestr("C:/win.jpg", b"win")
        zf.writestr("album/readme.md", b"text")
        zf.writestr("__MACOSX/album/._top.jpg", b"fork")
        link = zipfile.ZipInfo("album/link.jpg")
        link.create_system = 3
        link.external_attr = 0o120777 << 16
        zf.writestr(link, "../../etc/passwd")
    return path


def test_zip_members_read_in_place_and_zip_slip_skipped(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    archive = _evil_zip(work / "upload.zip")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    found = discover(str(archive))
    assert _names(found) == ["album/in é space.png", "top.jpg"]
    assert [storage.read_bytes(i.uri) for i in found.items] == [b"png", b"top"]
    assert found.items[1].uri == f"zip://top.jpg::{archive}"
    reasons = {uri.split("::")[0][len("zip://") :]: r for uri, r in found.skipped}
    assert "'..'" in reasons["../evil.jpg"]
    assert "absolute" in reasons["/abs.jpg"] and "absolute" in reasons["C:/win.jpg"]
    assert "symbolic link" in reasons["album/link.jpg"]
    assert reasons["album/readme.md"].startswith("not an image")
    assert "album/" not in reasons
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert after == before  # discovery and reading extracted nothing anywhere
    assert not (tmp_path / "evil.jpg").exists()


def test_broken_zip_is_a_source_error(tmp_path):
    bad = _write(tmp_path / "broken.zip", b"PK\x03\x04 not really a zip")
    with pytest.raises(SourceError, match="not a readable ZIP archive"):
        discover(str(bad))


def test_memory_folder_url():
    storage.write_bytes("memory://src-mem/one/a.jpg", b"a")
    storage.write_bytes("memory://src-mem/one/nested/b.bmp", b"b")
    storage.write_bytes("memory://src-mem/one/x.csv", b"c")
    found = discover("memory://src-mem/one")
    assert _names(found) == ["a.jpg", "nested/b.bmp"]
    assert storage.read_bytes(found.items[1].uri) == b"b"


# -- S3 through a real moto server ------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_photos(moto_s3):
    moto_s3.create_bucket("src-photos")
    client = moto_s3.boto3_client()
    objects = {
        "shoot/a.jpg": b"a",
        "shoot/day2/b.tiff": b"bb",
        "shoot/day2/c.png": b"ccc",
        "shoot/.thumbs/a.jpg": b"t",
        "shoot/info.json": b"{}",
        "other/z.jpg": b"z",
        "lists/pick.txt": b"# relative to the list\n../shoot/a.jpg\n../shoot/gone.jpg\n",
    }
    for key, body in objects.items():
        client.put_object(Bucket="src-photos", Key=key, Body=body)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("inside/q.jpg", b"zipped")
        zf.writestr("../escape.jpg", b"no")
    client.put_object(Bucket="src-photos", Key="bundles/set.zip", Body=buf.getvalue())
    return moto_s3


def test_s3_prefix(s3_photos):
    found = discover("s3://src-photos/shoot")
    assert _names(found) == ["a.jpg", "day2/b.tiff", "day2/c.png"]
    assert [i.uri for i in found.items][0] == "s3://src-photos/shoot/a.jpg"
    assert [i.size for i in found.items] == [1, 2, 3]
    assert storage.read_bytes(found.items[2].uri) == b"ccc"
    reasons = _reasons(found)
    assert reasons[".thumbs"] == "hidden" and reasons["info.json"].startswith("not an image")
    assert _names(discover("s3://src-photos/shoot/", recursive=False)) == ["a.jpg"]


def test_s3_glob_list_zip_and_missing(s3_photos):
    assert _names(discover("s3://src-photos/shoot/**/*.png")) == ["day2/c.png"]
    listed = discover("s3://src-photos/lists/pick.txt")
    assert [i.uri for i in listed.items] == [
        "s3://src-photos/shoot/a.jpg",
        "s3://src-photos/shoot/gone.jpg",
    ]
    with pytest.raises(StorageError, match="s3://src-photos/shoot/gone.jpg: not found"):
        storage.read_bytes(listed.items[1].uri)
    zipped = discover("s3://src-photos/bundles/set.zip")
    assert _names(zipped) == ["inside/q.jpg"]
    assert storage.read_bytes(zipped.items[0].uri) == b"zipped"
    assert "'..'" in zipped.skipped[0][1]
    with pytest.raises(SourceError, match="s3://src-photos/nope: no such file, folder or prefix"):
        discover("s3://src-photos/nope")
    with pytest.raises(SourceError, match="no such file"):
        discover("s3://src-photos/nope/*.jpg")
