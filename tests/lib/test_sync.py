"""Mirroring to S3 (a moto server): only changed files are uploaded, versions kept, links."""

from __future__ import annotations

import json
import urllib.request

import pytest

from retouch.lib import storage
from retouch.lib.delivery import sync
from retouch.lib.errors import StorageError


@pytest.fixture
def bucket(moto_s3, request):
    name = "mirror-" + request.node.name.replace("_", "-")[:40].lower()
    moto_s3.create_bucket(name)
    return name


def _files(tmp_path, contents: dict[str, bytes]) -> list[tuple[str, str]]:
    out = []
    for rel, data in contents.items():
        path = tmp_path / "local" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        out.append((rel, str(path)))
    return out


@pytest.fixture
def uploads(monkeypatch):
    """Every upload the sync makes, by destination URI."""
    seen: list[str] = []
    real = storage.put_file

    def counting(local, uri):
        seen.append(uri)
        return real(local, uri)

    monkeypatch.setattr(storage, "put_file", counting)
    return seen


def test_second_sync_uploads_only_the_changed_file_and_keeps_its_old_version(
    tmp_path, bucket, moto_s3, uploads
):
    dest = f"s3://{bucket}/shoot-42"
    contents = {"web/a.jpg": b"a" * 1000, "web/b.jpg": b"b" * 2000, "archive/a.tif": b"t" * 3000}
    first = sync.sync_files(_files(tmp_path, contents), dest, stamp="v1")
    assert sorted(first["uploaded"]) == sorted(contents) and len(uploads) == 3

    uploads.clear()
    contents["web/b.jpg"] = b"B" * 2000  # same size, new bytes
    second = sync.sync_files(_files(tmp_path, contents), dest, stamp="v2")
    assert second["uploaded"] == ["web/b.jpg"] and uploads == [f"{dest}/web/b.jpg"]
    assert sorted(second["unchanged"]) == ["archive/a.tif", "web/a.jpg"]
    assert second["versioned"] == {"web/b.jpg": "versions/v2/web/b.jpg"}

    s3 = moto_s3.boto3_client()
    body = s3.get_object(Bucket=bucket, Key="shoot-42/web/b.jpg")["Body"].read()
    old = s3.get_object(Bucket=bucket, Key="shoot-42/versions/v2/web/b.jpg")["Body"].read()
    assert body == b"B" * 2000 and old == b"b" * 2000
    index = json.loads(
        s3.get_object(Bucket=bucket, Key=f"shoot-42/{sync.INDEX_NAME}")["Body"].read()
    )
    assert set(index["files"]) == set(contents)

    # Without the index (lost, or a mirror filled by hand) matching ETags still skip uploads.
    s3.delete_object(Bucket=bucket, Key=f"shoot-42/{sync.INDEX_NAME}")
    uploads.clear()
    third = sync.sync_files(_files(tmp_path, contents), dest, stamp="v3")
    assert third["uploaded"] == [] and uploads == []


def test_presigned_link_downloads_the_file_and_local_folders_get_none(tmp_path, bucket):
    dest = f"s3://{bucket}/share"
    sync.sync_files(_files(tmp_path, {"proof.jpg": b"\xff\xd8 proof bytes"}), dest)
    url = sync.share_link(f"{dest}/proof.jpg", 600)
    assert url and "Signature=" in url and "Expires=" in url
    with urllib.request.urlopen(url, timeout=10) as response:  # plain HTTP, no credentials
        assert response.read() == b"\xff\xd8 proof bytes"
    assert sync.share_link(str(tmp_path / "local" / "proof.jpg"), 600) is None


def test_versioning_off_overwrites_and_reserved_names_are_refused(tmp_path):
    dest = str(tmp_path / "mirror")
    sync.sync_files(_files(tmp_path, {"a.jpg": b"1"}), dest, versioning="off")
    result = sync.sync_files(_files(tmp_path, {"a.jpg": b"2"}), dest, versioning="off")
    assert result["uploaded"] == ["a.jpg"] and result["versioned"] == {}
    assert not (tmp_path / "mirror" / "versions").exists()
    with pytest.raises(StorageError, match="reserved"):
        sync.sync_files(_files(tmp_path, {"versions/x.jpg": b"1"}), dest)
