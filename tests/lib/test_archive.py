"""ZIP export: round trip, stored vs deflated, atomic replacement, verification, S3 upload."""

from __future__ import annotations

import hashlib
import random
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from retouch.lib import storage  # noqa: E402
from retouch.lib.delivery.archive import member_cost, part_name, plan_parts, verify_zip, write_zip
from retouch.lib.errors import StorageError  # noqa: E402


@pytest.fixture
def results(tmp_path) -> list[tuple[str, str]]:
    rng = random.Random(7)
    folder = tmp_path / "results"
    folder.mkdir()
    files = {
        "a.jpg": bytes(rng.getrandbits(8) for _ in range(4000)),
        "portrait/b.webp": bytes(rng.getrandbits(8) for _ in range(3000)),
        "scan.tiff": b"\x00\x01" * 20_000,  # very compressible
        "Été/c d.png": bytes(rng.getrandbits(8) for _ in range(2000)),
    }
    members = []
    for i, (arcname, data) in enumerate(files.items()):
        path = folder / f"file{i}"
        path.write_bytes(data)
        members.append((arcname, str(path)))
    return members


def _sha(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_round_trip_local(tmp_path, results):
    dest = tmp_path / "out" / "results.zip"
    info = write_zip(results, str(dest))
    assert info["count"] == 4 and info["uri"] == str(dest)
    assert info["size"] == dest.stat().st_size
    assert info["sha256"] == _sha(str(dest))
    expected = {arc: _sha(path) for arc, path in results}
    assert info["members"] == expected
    with zipfile.ZipFile(dest) as zf:
        assert zf.namelist() == [arc for arc, _ in results]
        assert zf.testzip() is None
        for arc, path in results:
            assert zf.read(arc) == Path(path).read_bytes()
    assert verify_zip(str(dest), expected) == []
    assert sorted(p.name for p in dest.parent.iterdir()) == ["results.zip"]


@pytest.mark.skipif(shutil.which("unzip") is None, reason="unzip not installed")
def test_unzip_accepts_the_archive(tmp_path, results):
    dest = tmp_path / "r.zip"
    write_zip(results, str(dest))
    run = subprocess.run(["unzip", "-t", str(dest)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "No errors detected" in run.stdout


def test_stored_or_deflated_by_extension(tmp_path, results):
    dest = tmp_path / "r.zip"
    write_zip(results, str(dest))
    with zipfile.ZipFile(dest) as zf:
        methods = {i.filename: i.compress_type for i in zf.infolist()}
        tiff = zf.getinfo("scan.tiff")
    assert methods["a.jpg"] == zipfile.ZIP_STORED
    assert methods["portrait/b.webp"] == zipfile.ZIP_STORED
    assert methods["Été/c d.png"] == zipfile.ZIP_DEFLATED
    assert methods["scan.tiff"] == zipfile.ZIP_DEFLATED
    assert tiff.compress_size < tiff.file_size // 10


@pytest.mark.parametrize(("compression", "method"), [("stored", 0), ("deflate", 8)])
def test_compression_can_be_forced_for_every_member(tmp_path, results, compression, method):
    dest = tmp_path / "r.zip"
    info = write_zip(results, str(dest), compression=compression, compresslevel=1)
    with zipfile.ZipFile(dest) as zf:
        assert {i.compress_type for i in zf.infolist()} == {method}
    assert verify_zip(str(dest), info["members"]) == []


def test_verify_reports_problems(tmp_path, results):
    dest = tmp_path / "r.zip"
    write_zip(results, str(dest))
    expected = {arc: _sha(path) for arc, path in results}
    wrong = dict(expected)
    wrong["a.jpg"] = "0" * 64
    del wrong["scan.tiff"]
    wrong["missing.png"] = "1" * 64
    problems = verify_zip(str(dest), wrong)
    assert any("'a.jpg' has sha256" in p for p in problems)
    assert any("unexpected member 'scan.tiff'" in p for p in problems)
    assert any("'missing.png' is missing" in p for p in problems)
    assert len(problems) == 3

    corrupt = tmp_path / "corrupt.zip"
    data = bytearray(dest.read_bytes())
    offset = data.index(Path(results[0][1]).read_bytes()[:64])  # inside the stored a.jpg
    data[offset + 10] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    assert any("a.jpg" in p for p in verify_zip(str(corrupt), expected))
    assert verify_zip(str(tmp_path / "none.zip"), expected) == [
        f"{tmp_path / 'none.zip'}: archive not found"
    ]
    (tmp_path / "text.zip").write_text("not a zip")
    assert "not a readable ZIP" in verify_zip(str(tmp_path / "text.zip"), expected)[0]


@pytest.mark.parametrize(
    "bad", ["../evil.jpg", "/abs.jpg", "a\\b.jpg", "C:/x.jpg", "a/./../b.jpg", ""]
)
def test_unsafe_names_are_refused_and_nothing_is_written(tmp_path, results, bad):
    dest = tmp_path / "r.zip"
    with pytest.raises(StorageError, match="not a safe relative path"):
        write_zip([*results, (bad, results[0][1])], str(dest))
    assert not dest.exists()
    assert not (tmp_path.parent / "evil.jpg").exists()


def test_duplicate_and_missing_members(tmp_path, results):
    with pytest.raises(StorageError, match="appears twice"):
        write_zip([*results, ("A.JPG", results[1][1])], str(tmp_path / "r.zip"))
    with pytest.raises(StorageError, match="not found"):
        write_zip([("x.jpg", str(tmp_path / "gone.jpg"))], str(tmp_path / "r.zip"))
    assert not (tmp_path / "r.zip").exists()


def test_failure_mid_archive_keeps_previous_zip(tmp_path, results, monkeypatch):
    dest = tmp_path / "r.zip"
    dest.write_bytes(b"previous archive")
    import retouch.lib.delivery.archive as archive_mod

    real = archive_mod.sha256_file
    calls = []

    def fail_on_third(path):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(path)

    monkeypatch.setattr(archive_mod, "sha256_file", fail_on_third)
    with pytest.raises(StorageError, match="No space left"):
        write_zip(results, str(dest))
    assert dest.read_bytes() == b"previous archive"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.zip", "results"]


def test_write_zip_to_s3(moto_s3, results, tmp_path):
    moto_s3.create_bucket("zips")
    uri = "s3://zips/run-1/results.zip"
    info = write_zip(results, uri)
    assert info["uri"] == uri and info["count"] == 4
    body = moto_s3.boto3_client().get_object(Bucket="zips", Key="run-1/results.zip")["Body"].read()
    assert len(body) == info["size"] and hashlib.sha256(body).hexdigest() == info["sha256"]
    assert verify_zip(uri, info["members"]) == []
    assert storage.size(uri) == info["size"]


def test_plan_parts_keeps_order_bounds_size_and_isolates_oversized_files():
    members = [("a.jpg", 400), ("b.jpg", 400), ("huge.tif", 5000), ("c.jpg", 300), ("d.jpg", 10)]
    limit = 1200
    parts = plan_parts(members, limit)
    assert [i for part in parts for i in part] == list(range(5))  # every member once, in order
    assert [2] in parts  # the file over the limit is alone
    for part in parts:
        if part != [2]:
            assert sum(member_cost(*members[i]) for i in part) < limit
    assert plan_parts([], 100) == []
    assert part_name("results.zip", 3, 12) == "results-part03.zip"
    assert part_name("proofs.zip", 7, 150) == "proofs-part007.zip"


def test_split_parts_are_independent_archives_under_the_limit(tmp_path):
    rng = random.Random(3)
    folder = tmp_path / "files"
    folder.mkdir()
    members = []
    for i in range(9):
        path = folder / f"f{i}"
        path.write_bytes(bytes(rng.getrandbits(8) for _ in range(rng.randint(2000, 9000))))
        members.append((f"img/{i:02d}.jpg", str(path)))
    limit = 20_000
    parts = plan_parts([(n, Path(p).stat().st_size) for n, p in members], limit)
    assert len(parts) >= 3
    seen = []
    for number, part in enumerate(parts, start=1):
        dest = tmp_path / part_name("results.zip", number, len(parts))
        write_zip([members[i] for i in part], str(dest), compression="deflate")
        assert dest.stat().st_size <= limit  # the bound holds on real archives
        with zipfile.ZipFile(dest) as zf:  # opens alone: no spanning
            assert zf.testzip() is None
            seen += zf.namelist()
    assert sorted(seen) == sorted(n for n, _ in members)
