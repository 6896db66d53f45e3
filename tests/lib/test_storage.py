"""Storage: atomic writes, retries, error text, URL handling, and S3 against a real moto server."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from retouch.lib import storage  # noqa: E402
from retouch.lib.errors import InvalidImageError, StorageError  # noqa: E402
from retouch.lib.settings import reload_settings  # noqa: E402
from retouch.lib.storage import atomic, retry  # noqa: E402
from tests.s3server import moto_s3_server  # noqa: E402


@pytest.fixture
def no_sleep(monkeypatch):
    delays: list[float] = []
    monkeypatch.setattr(retry, "_sleep", delays.append)
    return delays


@pytest.fixture
def seeded():
    import random

    random.seed(1234)


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- local files, atomicity -------------------------------------------------------------------


def test_write_then_read_local_creates_parent_folders(tmp_path):
    target = tmp_path / "out" / "deep" / "a.bin"
    storage.write_bytes(str(target), b"\x00\x01payload")
    assert target.read_bytes() == b"\x00\x01payload"
    assert storage.read_bytes(str(target)) == b"\x00\x01payload"
    assert storage.read_bytes(target.as_uri()) == b"\x00\x01payload"
    assert _files(target.parent) == ["a.bin"]
    assert storage.exists(str(target)) and storage.size(str(target)) == 9


def test_write_replaces_existing_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a.jpg"
    target.write_bytes(b"old")
    storage.write_bytes(str(target), b"new content")
    assert target.read_bytes() == b"new content"
    assert _files(tmp_path) == ["a.jpg"]


def test_failed_write_never_leaves_a_partial_file_under_the_final_name(tmp_path, monkeypatch):
    target = tmp_path / "result.png"

    def broken_fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", broken_fsync)
    with pytest.raises(StorageError) as info:
        storage.write_bytes(str(target), b"x" * 10_000)
    assert not target.exists()
    assert _files(tmp_path) == []  # the temporary file is gone too
    assert str(target) in str(info.value) and "No space left" in str(info.value)


def test_failed_replacement_keeps_the_previous_file_intact(tmp_path, monkeypatch):
    target = tmp_path / "result.png"
    target.write_bytes(b"previous good result")
    monkeypatch.setattr(
        atomic.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full"))
    )
    with pytest.raises(StorageError):
        storage.write_bytes(str(target), b"new")
    assert target.read_bytes() == b"previous good result"
    assert _files(tmp_path) == ["result.png"]


def test_atomic_local_file_exception_mid_write(tmp_path):
    target = tmp_path / "sub" / "big.tif"
    with pytest.raises(RuntimeError, match="encoder crashed"):
        with storage.atomic_local_file(str(target)) as tmp:
            assert Path(tmp).parent == target.parent
            assert storage.TEMP_MARKER in Path(tmp).name and Path(tmp).name.startswith(".")
            with open(tmp, "wb") as fh:
                fh.write(b"half of the pixels")
            raise RuntimeError("encoder crashed")
    assert not target.exists()
    assert _files(target.parent) == []


def test_put_file_local_and_memory(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(3000))
    dest = tmp_path / "dest" / "copy.bin"
    storage.put_file(str(src), str(dest))
    assert dest.read_bytes() == src.read_bytes()
    storage.put_file(str(src), "memory://retouch-test/put/copy.bin")
    assert storage.read_bytes("memory://retouch-test/put/copy.bin") == src.read_bytes()
    assert storage.remove("memory://retouch-test/put/copy.bin") is True
    assert storage.remove("memory://retouch-test/put/copy.bin") is False
    with pytest.raises(StorageError, match="not found"):
        storage.put_file(str(tmp_path / "missing.bin"), str(dest))


def test_missing_file_is_not_found_without_retries(tmp_path, no_sleep):
    missing = tmp_path / "nope.jpg"
    with pytest.raises(StorageError, match="not found") as info:
        storage.read_bytes(str(missing))
    assert str(missing) in str(info.value)
    assert no_sleep == []
    assert storage.exists(str(missing)) is False
    with pytest.raises(StorageError, match="not found"):
        storage.size(str(missing))


def test_max_bytes_rejects_large_inputs(tmp_path):
    target = tmp_path / "big.jpg"
    target.write_bytes(b"y" * 101)
    assert storage.read_bytes(str(target), max_bytes=101) == b"y" * 101
    with pytest.raises(InvalidImageError, match="RETOUCH_MAX_FILE_BYTES"):
        storage.read_bytes(str(target), max_bytes=100)


# -- retries --------------------------------------------------------------------------------------


def test_flaky_operation_is_retried_with_growing_delays(no_sleep, seeded):
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
        return "ok"

    assert (
        storage.retrying(flaky, what="read", uri="s3://b/k.jpg", retries=3, base_delay=1.0) == "ok"
    )
    assert len(calls) == 3
    assert len(no_sleep) == 2
    # base * 2**n scaled by jitter in [0.5, 1.5): the ranges of consecutive delays do not overlap
    assert 0.5 <= no_sleep[0] < 1.5 and 1.0 <= no_sleep[1] < 3.0


@pytest.mark.parametrize(
    "exc",
    [
        FileNotFoundError(errno.ENOENT, "No such key"),
        PermissionError(errno.EACCES, "Access Denied"),
        OSError(errno.EINVAL, "InvalidArgument"),
    ],
)
def test_permanent_errors_are_not_retried(exc, no_sleep):
    calls = []

    def fails():
        calls.append(1)
        raise exc

    with pytest.raises(StorageError):
        storage.retrying(fails, what="read", uri="s3://b/k.jpg", retries=5)
    assert len(calls) == 1 and no_sleep == []


def test_s3_style_server_errors_are_retried(no_sleep):
    from botocore.exceptions import ClientError

    slow_down = ClientError(
        {
            "Error": {"Code": "SlowDown", "Message": "Reduce your request rate"},
            "ResponseMetadata": {"HTTPStatusCode": 503},
        },
        "GetObject",
    )
    denied = ClientError(
        {
            "Error": {"Code": "AccessDenied", "Message": "no"},
            "ResponseMetadata": {"HTTPStatusCode": 403},
        },
        "GetObject",
    )
    internal = OSError(121, "We encountered an internal error")  # s3fs's mapping of S3 500
    assert storage.is_transient(slow_down) and storage.is_transient(internal)
    assert storage.is_transient(TimeoutError()) and not storage.is_transient(denied)
    assert not storage.is_transient(FileNotFoundError("k"))
    seq = [slow_down, internal]

    def fn():
        if seq:
            raise seq.pop(0)
        return b"data"

    assert storage.retrying(fn, what="read", uri="s3://b/k", retries=2) == b"data"
    assert len(no_sleep) == 2


def test_bugs_are_not_wrapped(no_sleep):
    def buggy():
        raise KeyError("not a storage problem")

    with pytest.raises(KeyError):
        storage.retrying(buggy, what="read", uri="x")
    assert no_sleep == []


def test_exhausted_retries_name_uri_and_operation_but_no_secret(no_sleep, monkeypatch):
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzSECRET"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    uri = f"s3://AKIAEXAMPLE:{secret}@photos/in/a.jpg?X-Amz-Signature=deadbeef"
    calls = []

    def always_times_out():
        calls.append(1)
        raise TimeoutError(
            f"timed out talking to https://host/a.jpg?X-Amz-Signature=deadbeef ({secret})"
        )

    with pytest.raises(StorageError) as info:
        storage.retrying(always_times_out, what="write", uri=uri, retries=2)
    text = str(info.value)
    assert len(calls) == 3
    assert "write" in text and "photos/in/a.jpg" in text and "3 attempt" in text
    assert "resumes" in text
    assert secret not in text and "deadbeef" not in text and "AKIAEXAMPLE" not in text
    assert info.value.__cause__ is None  # the raw message held the secret: not chained


def test_retry_count_comes_from_settings(monkeypatch, no_sleep):
    monkeypatch.setenv("RETOUCH_STORAGE_RETRIES", "1")
    reload_settings()
    try:
        calls = []

        def down():
            calls.append(1)
            raise ConnectionRefusedError(errno.ECONNREFUSED, "refused")

        with pytest.raises(StorageError, match="2 attempt"):
            storage.retrying(down, what="read", uri="/x")
        assert len(calls) == 2
    finally:
        monkeypatch.delenv("RETOUCH_STORAGE_RETRIES")
        reload_settings()


# -- URLs -------------------------------------------------------------------------------------


def test_redact():
    assert storage.redact("s3://key:secret@bucket/a.jpg") == "s3://***@bucket/a.jpg"
    assert storage.redact("https://h/x.jpg?X-Amz-Credential=abc&sig=1") == "https://h/x.jpg?***"
    assert storage.redact("zip://a.jpg::s3://k:s@b/x.zip") == "zip://a.jpg::s3://***@b/x.zip"
    assert storage.redact("/local/what?.jpg") == "/local/what?.jpg"


def test_join_stays_below_base():
    assert storage.join("s3://b/out", "x", "y.jpg") == "s3://b/out/x/y.jpg"
    assert storage.join("s3://b/out/", "/abs/y.jpg") == "s3://b/out/abs/y.jpg"
    assert storage.join("/data/out", "sub/a.png") == os.path.join("/data/out", "sub", "a.png")
    assert storage.join("zip://dir::s3://b/x.zip", "a.jpg") == "zip://dir/a.jpg::s3://b/x.zip"
    assert storage.join("memory://", "a") == "memory://a"


def test_local_detection():
    assert storage.local_path("file:///tmp/a%20b.jpg") == "/tmp/a b.jpg"
    assert storage.local_path("rel/a.jpg") == "rel/a.jpg"
    assert storage.local_path("s3://b/k") is None
    assert storage.local_path("zip://a::/tmp/x.zip") is None
    assert storage.is_local("/x") and not storage.is_local("memory://x")


def test_dead_endpoint_gives_storage_error(monkeypatch, no_sleep):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "dead-endpoint-secret")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("RETOUCH_S3_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    with pytest.raises(StorageError) as info:
        storage.read_bytes("s3://bucket/photo.jpg")
    text = str(info.value)
    assert "s3://bucket/photo.jpg" in text and "read" in text and "Could not connect" in text
    assert "dead-endpoint-secret" not in text
    assert len(no_sleep) == 3  # default settings: 3 retries


# -- S3 through a real moto server ------------------------------------------------------------------


def test_s3_round_trip(moto_s3, tmp_path):
    moto_s3.create_bucket("storage-rt")
    uri = "s3://storage-rt/out/a.jpg"
    assert storage.exists(uri) is False
    storage.makedirs("s3://storage-rt/out")  # a no-op on S3, must not fail
    storage.write_bytes(uri, b"jpeg bytes")
    assert storage.read_bytes(uri) == b"jpeg bytes"
    assert storage.exists(uri) and storage.size(uri) == 10
    obj = moto_s3.boto3_client().get_object(Bucket="storage-rt", Key="out/a.jpg")
    assert obj["Body"].read() == b"jpeg bytes"

    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(200_000))
    storage.put_file(str(big), "s3://storage-rt/out/big.bin")
    assert storage.read_bytes("s3://storage-rt/out/big.bin") == big.read_bytes()
    assert storage.remove(uri) is True and storage.exists(uri) is False
    with pytest.raises(StorageError, match="not found"):
        storage.read_bytes(uri)


def test_s3_sees_objects_written_by_another_client(moto_s3):
    moto_s3.create_bucket("storage-ext")
    assert storage.exists("s3://storage-ext/x/late.jpg") is False
    storage.exists("s3://storage-ext/x")  # may fill s3fs's listing cache
    moto_s3.boto3_client().put_object(Bucket="storage-ext", Key="x/late.jpg", Body=b"123")
    assert storage.exists("s3://storage-ext/x/late.jpg") is True
    assert storage.size("s3://storage-ext/x/late.jpg") == 3


def test_switching_endpoint_between_servers(moto_s3, monkeypatch):
    moto_s3.create_bucket("switch")
    storage.write_bytes("s3://switch/where.txt", b"first server")
    with moto_s3_server() as second:
        monkeypatch.setenv("AWS_ENDPOINT_URL", second.endpoint_url)
        second.create_bucket("switch")
        storage.write_bytes("s3://switch/where.txt", b"second server")
        assert storage.read_bytes("s3://switch/where.txt") == b"second server"
        monkeypatch.setenv("AWS_ENDPOINT_URL", moto_s3.endpoint_url)
        assert storage.read_bytes("s3://switch/where.txt") == b"first server"
        monkeypatch.setenv("RETOUCH_S3_ENDPOINT_URL", second.endpoint_url)
        assert storage.read_bytes("s3://switch/where.txt") == b"second server"


def test_credentials_of_the_uri_are_masked_even_when_quoted_alone():
    uri = "s3://AKIAKEY1:Very/Secret+Key@bucket/in/a.png?X-Amz-Signature=abcdef123456"
    text = 'Invalid bucket name "AKIAKEY1:Very/Secret+Key@bucket": sig abcdef123456'
    clean = storage.redact_text(text, uri)
    assert "Very/Secret+Key" not in clean and "AKIAKEY1" not in clean
    assert "abcdef123456" not in clean and "bucket" in clean


def test_object_store_urls_with_inline_credentials_are_refused_without_echoing_them():
    with pytest.raises(StorageError) as err:
        storage.filesystem("s3://AKIAKEY1:TopSecretValue@bucket/out/")
    assert "TopSecretValue" not in str(err.value) and "AKIAKEY1" not in str(err.value)
    assert "s3://***@bucket/out/" in str(err.value) and "AWS_SECRET_ACCESS_KEY" in str(err.value)
    storage.check_no_inline_credentials("s3://bucket/user@example.com/a.png")  # '@' in a key
    storage.check_no_inline_credentials("memory://in/a.png")


def test_bounded_read_does_not_allocate_the_limit(tmp_path):
    import tracemalloc

    path = tmp_path / "small.bin"
    path.write_bytes(b"x" * 1000)
    tracemalloc.start()
    data = storage.read_bytes(str(path), max_bytes=400 << 20)
    _now, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert data == b"x" * 1000
    assert peak < 32 << 20
