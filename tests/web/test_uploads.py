"""Refused uploads: each gets a 4xx naming the file and the reason, and leaves nothing behind
(no batch, no folder, no process)."""

from __future__ import annotations

import json
import socket

import pytest

from tests.web.conftest import SAMPLES, sample_files

ASTRONAUT = (SAMPLES / "astronaut.jpg").read_bytes()  # 53,962 bytes
ROCKET = (SAMPLES / "rocket.jpg").read_bytes()  # 25,478 bytes
CAMERA = (SAMPLES / "camera.png").read_bytes()

CASES = [
    pytest.param(
        {"files": [("files", ("notes.jpg", b"shopping list: milk, eggs\n" * 20))]},
        {},
        415,
        ["notes.jpg", "looks like text"],
        id="text-renamed-jpg",
    ),
    pytest.param(
        {"files": [("files", ("cut.jpg", ASTRONAUT[: len(ASTRONAUT) // 2]))]},
        {},
        422,
        ["cut.jpg", "truncated or corrupt JPEG"],
        id="truncated-jpeg",
    ),
    pytest.param(
        {"files": [("files", ("ok.jpg", ROCKET)), ("files", ("big.jpg", ASTRONAUT))]},
        {"RETOUCH_WEB_MAX_FILE_BYTES": "40000"},
        413,
        ["big.jpg", "40000 bytes per file"],
        id="file-over-limit",
    ),
    pytest.param(
        {"files": [("files", ("a.jpg", ASTRONAUT)), ("files", ("b.jpg", ASTRONAUT))]},
        {"RETOUCH_WEB_MAX_BATCH_BYTES": "80000"},
        413,
        ["b.jpg", "80000 bytes per batch"],
        id="batch-over-limit",
    ),
    pytest.param(
        {"files": sample_files(["rocket.jpg", "coffee.jpg", "chelsea.jpg"])},
        {"RETOUCH_WEB_MAX_FILES": "2"},
        400,
        ["chelsea.jpg", "too many files", "at most 2"],
        id="too-many-files",
    ),
    pytest.param(
        {"data": {"preset": "quick"}, "files": [("masks", ("a.png", b""))]},
        {},
        400,
        ["no images"],
        id="no-files",
    ),
    pytest.param(
        {"files": sample_files(["rocket.jpg"]), "data": {"preset": "ultra-hd"}},
        {},
        400,
        ["unknown preset 'ultra-hd'", "web-ready"],
        id="unknown-preset",
    ),
    pytest.param(
        {
            "files": sample_files(["rocket.jpg"]),
            "data": {"preset": "web-ready", "overrides": json.dumps({"sharpen.amount": "lots"})},
        },
        {},
        400,
        ["sharpen", "amount"],
        id="bad-override-value",
    ),
    pytest.param(
        {
            "files": sample_files(["rocket.jpg"]),
            "data": {"overrides": json.dumps({"warp.speed": 9})},
        },
        {},
        400,
        ["warp.speed", "no step 'warp'"],
        id="override-of-a-missing-step",
    ),
    pytest.param(
        {"files": sample_files(["rocket.jpg"]), "data": {"overrides": "{sharpen: 1"}},
        {},
        400,
        ["overrides", "not valid JSON"],
        id="overrides-not-json",
    ),
    pytest.param(
        {
            "files": sample_files(["rocket.jpg"]),
            "data": {"overrides": json.dumps({"export.sync.dest": "/tmp/elsewhere"})},
        },
        {},
        400,
        ["export.sync.dest", "on the server"],
        id="override-pointing-at-server-paths",
    ),
    pytest.param(
        {
            "files": sample_files(["rocket.jpg"]),
            "data": {"overrides": json.dumps({"export.watermark": {"image": "/etc/a.png"}})},
        },
        {},
        400,
        ["export.watermark.image", "on the server"],
        id="server-path-inside-a-group-value",
    ),
    pytest.param(
        {
            "files": sample_files(["rocket.jpg"]),
            "data": {
                "overrides": json.dumps(
                    {"export.profiles": [{"name": "w", "watermark": {"text": "x", "font": "/f"}}]}
                )
            },
        },
        {},
        400,
        ["export.profiles.w.watermark.font", "on the server"],
        id="server-path-inside-a-profile",
    ),
    pytest.param(
        {"files": [("files", (".secret.jpg", ROCKET))]},
        {},
        400,
        [".secret.jpg", "hidden"],
        id="hidden-name",
    ),
    pytest.param(
        {"files": [("files", ("readme.txt", b"hello"))]},
        {},
        415,
        ["readme.txt", "not an image or video file extension (.txt)"],
        id="not-an-image-extension",
    ),
    pytest.param(
        {"files": sample_files(["rocket.jpg"]) + [("masks", ("rocket.png", CAMERA[:5000]))]},
        {},
        422,
        ["mask rocket.png", "truncated or corrupt PNG"],
        id="broken-mask",
    ),
    pytest.param(
        {"files": [("files", ("a.jpg", ROCKET)), ("files", ("x/../a.jpg", ROCKET))]},
        {},
        400,
        ["a.jpg", "sent twice"],
        id="same-name-twice",
    ),
]


@pytest.mark.parametrize(("request_kwargs", "env", "status", "words"), CASES)
def test_bad_upload_is_refused_and_leaves_nothing(
    serve, monkeypatch, request_kwargs, env, status, words
):
    from retouch.lib.settings import reload_settings

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reload_settings()
    web = serve()
    response = web.client.post("/api/batches", **request_kwargs)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    for word in words:
        assert word in detail, detail
    assert web.client.get("/api/batches").json() == []
    assert list(web.runner.root.iterdir()) == []
    assert web.runner.running_count() == 0


def test_an_upload_over_the_declared_length_is_refused_before_reading(serve, monkeypatch):
    from retouch.lib.settings import reload_settings

    monkeypatch.setenv("RETOUCH_WEB_MAX_BATCH_BYTES", "1000")
    reload_settings()
    web = serve()
    # Only the headers are sent: the answer comes without the 50 MB body.
    host, port = web.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /api/batches HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: multipart/form-data; boundary=zz\r\n"
            b"Content-Length: 50000000\r\n\r\n"
        )
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
        answer = answer.decode()
    assert answer.startswith("HTTP/1.1 413"), answer
    assert "1000 bytes per batch" in answer
    assert list(web.runner.root.iterdir()) == []


def test_unsafe_names_are_made_safe(serve):
    from retouch.lib.settings import get_settings
    from retouch.web.runner import Runner

    runner = Runner(get_settings().home / "web" / "batches", max_running=0)
    web = serve(runner=runner)
    response = web.client.post(
        "/api/batches",
        files=[
            ("files", ("../../escape.jpg", ROCKET)),
            ("files", ("/abs/shoot/./a.jpg", ASTRONAUT)),
            ("files", ("照片/猫.jpg", ROCKET)),
        ],
    )
    assert response.status_code == 201, response.text
    batch = response.json()
    assert [i["name"] for i in batch["images"]] == ["abs/shoot/a.jpg", "escape.jpg", "照片/猫.jpg"]
    folder = runner.root / batch["id"] / "input"
    stored = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert stored == ["abs/shoot/a.jpg", "escape.jpg", "照片/猫.jpg"]
    assert not (runner.root.parent / "escape.jpg").exists()


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ("a\x00b.jpg", "control characters"),
        ("..", "no file name"),
        ("x/.git/a.jpg", "hidden"),
        ("c:x.jpg", "':'"),
        ("__MACOSX/a.jpg", "archiver metadata"),
    ],
)
def test_safe_name_refuses(raw, words):
    from retouch.web.uploads import UploadError, safe_name

    with pytest.raises(UploadError) as info:
        safe_name(raw)
    assert info.value.status == 400 and words in info.value.message


@pytest.mark.parametrize("fails_at", ["write", "close"])
def test_a_full_disk_during_the_upload_is_a_507_naming_the_file(serve, monkeypatch, fails_at):
    """The disk fills up while the second file arrives (at a write, or at the flush when
    the file is closed): the answer says so and names the file, and nothing is kept."""
    import errno

    from retouch.web import uploads

    real_open = open

    class FillingDisk:
        def __init__(self, path, mode):
            self.file = real_open(path, mode)
            self.full = path.name == "b.jpg"

        def write(self, data):
            if self.full and fails_at == "write":
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.file.write(data)

        def close(self):
            self.file.close()
            if self.full and fails_at == "close":
                raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(uploads, "open", FillingDisk, raising=False)
    web = serve()
    answer = web.client.post(
        "/api/batches", files=[("files", ("a.jpg", ROCKET)), ("files", ("b.jpg", ASTRONAUT))]
    )
    assert answer.status_code == 507, answer.text
    detail = answer.json()["detail"]
    assert detail.startswith("b.jpg: cannot be stored: the server's disk is full"), detail
    assert web.client.get("/api/batches").json() == []
    assert list(web.runner.root.iterdir()) == []


def test_an_upload_cut_off_midway_leaves_nothing_and_no_error_trace(serve, capfd):
    """The browser closes the connection during an upload (cancelled, page closed)."""
    import time

    web = serve()
    host, port = web.url.removeprefix("http://").split(":")
    part = (
        b'--zz\r\nContent-Disposition: form-data; name="files"; filename="a.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + ASTRONAUT[:20000]
    )
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /api/batches HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: multipart/form-data; boundary=zz\r\n"
            b"Content-Length: 900000\r\n\r\n" + part
        )
        deadline = time.monotonic() + 10
        while not any(web.runner.root.glob(".staging-*/input/a.jpg")):
            assert time.monotonic() < deadline, "the upload never started"
            time.sleep(0.05)
    deadline = time.monotonic() + 10
    while any(web.runner.root.iterdir()):
        assert time.monotonic() < deadline, list(web.runner.root.iterdir())
        time.sleep(0.05)
    time.sleep(0.2)  # what the server logs about it comes right after
    assert "Traceback" not in capfd.readouterr().err
    assert web.client.get("/api/batches").json() == []
