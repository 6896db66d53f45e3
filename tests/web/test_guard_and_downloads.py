"""What a browser can be tricked into sending is refused (cross-site requests, DNS
rebinding), every answer carries the security headers, and downloads behave as HTTP
clients expect (HEAD, ranges of every form, non-ASCII file names). The downloads come from
a finished batch laid out on disk, so no run is needed."""

from __future__ import annotations

import io
import zipfile

import pytest

from tests.web.conftest import sample_files, stored_batch

CAT = "照片/猫.jpg"
RESULTS = {CAT: bytes(range(256)) * 8, "plain.jpg": b"p" * 700}


@pytest.fixture
def done(serve):
    """A server (no token) holding one finished batch; returns (server, batch id)."""
    from retouch.lib.settings import get_settings
    from retouch.web.runner import Runner

    root = get_settings().home / "web" / "batches"
    batch_id = stored_batch(root, RESULTS)
    return serve(runner=Runner(root, max_running=0)), batch_id


def test_a_cross_site_upload_is_refused_before_anything_starts(done):
    web, _ = done
    c = web.client
    before = sorted(p.name for p in web.runner.root.iterdir())
    # A page on another site posting a form to the local server (a simple request: the
    # browser sends it without asking, with that site's Origin).
    refused = c.post(
        "/api/batches",
        files=sample_files(["rocket.jpg"]),
        headers={"Origin": "http://evil.example"},
    )
    assert refused.status_code == 403
    assert "cross-origin" in refused.json()["detail"]
    assert "evil.example" in refused.json()["detail"]
    cancel = c.post("/api/batches/b-x/cancel", headers={"Origin": "null"})
    assert cancel.status_code == 403
    assert sorted(p.name for p in web.runner.root.iterdir()) == before
    # The page's own requests carry its own origin and pass.
    own = c.post("/api/batches", files=sample_files(["rocket.jpg"]), headers={"Origin": web.url})
    assert own.status_code == 201, own.text
    assert c.get("/api/batches", headers={"Origin": web.url}).status_code == 200


def test_without_a_token_only_loopback_host_names_are_answered(serve):
    # A DNS-rebinding page reaches 127.0.0.1 under its own host name.
    c = serve().client
    rebound = c.get("/api/batches", headers={"Host": "attacker.example:8765"})
    assert rebound.status_code == 403
    assert "RETOUCH_WEB_TOKEN" in rebound.json()["detail"]
    assert c.get("/", headers={"Host": "attacker.example"}).status_code == 403
    for host in ("localhost:8765", "127.0.0.1", "[::1]:8765", "app.localhost"):
        assert c.get("/api/batches", headers={"Host": host}).status_code == 200, host


def test_with_a_token_other_host_names_are_answered(serve):
    c = serve(token="tok-123").client
    answer = c.get(
        "/api/batches", headers={"Host": "photos.example:8765", "Authorization": "Bearer tok-123"}
    )
    assert answer.status_code == 200
    assert c.get("/api/batches", headers={"Host": "photos.example"}).status_code == 401


def test_security_headers_and_a_sandboxed_report(done):
    web, batch_id = done
    c = web.client
    for url in ("/", "/api/health", f"/api/batches/{batch_id}", "/api/batches/nope"):
        answer = c.get(url)
        assert answer.headers["x-content-type-options"] == "nosniff", url
        assert answer.headers["referrer-policy"] == "no-referrer", url
        assert answer.headers["x-frame-options"] == "DENY", url
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"], url
    assert "access-control-allow-origin" not in c.get("/api/batches").headers
    report = c.get(f"/api/batches/{batch_id}/report")
    assert report.status_code == 200 and "retouch report" in report.text
    policy = report.headers["content-security-policy"]
    assert "sandbox allow-scripts" in policy and "default-src 'none'" in policy


def test_head_gives_the_size_without_the_body(done):
    web, batch_id = done
    c = web.client
    whole = c.get(f"/api/batches/{batch_id}/zip")
    head = c.head(f"/api/batches/{batch_id}/zip")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(whole.content))
    assert head.headers["accept-ranges"] == "bytes"
    assert head.headers["etag"] == whole.headers["etag"]
    one = c.head(f"/api/batches/{batch_id}/results/1")
    assert one.status_code == 200 and one.headers["content-length"] == str(len(RESULTS[CAT]))
    assert c.head(f"/api/batches/{batch_id}/results/9").status_code == 404
    assert c.head("/api/batches/nope/zip").status_code == 404


def test_ranges_of_every_form(done):
    web, batch_id = done
    c = web.client
    url = f"/api/batches/{batch_id}/results/1"
    data = RESULTS[CAT]
    size = len(data)

    def get(value: str, **headers: str):
        return c.get(url, headers={"Range": value, **headers})

    suffix = get("bytes=-100")
    assert suffix.status_code == 206 and suffix.content == data[-100:]
    assert suffix.headers["content-range"] == f"bytes {size - 100}-{size - 1}/{size}"
    assert get("bytes=1000-").content == data[1000:]
    assert get("bytes=0-0").content == data[:1]
    assert get(f"bytes=10-{size + 50}").content == data[10:]  # an end past the file: clipped
    for unsatisfiable in (f"bytes={size}-", "bytes=-0"):
        answer = get(unsatisfiable)
        assert answer.status_code == 416, unsatisfiable
        assert answer.headers["content-range"] == f"bytes */{size}"
    # A Range that cannot be parsed, or in another unit, is ignored: the whole file.
    for ignored in ("bytes=9-2", "bytes=abc", "items=0-1"):
        answer = get(ignored)
        assert (answer.status_code, answer.content) == (200, data), ignored
    etag = c.get(url).headers["etag"]
    assert get("bytes=5-9", **{"If-Range": etag}).content == data[5:10]
    stale = get("bytes=5-9", **{"If-Range": '"older"'})
    assert (stale.status_code, stale.content) == (200, data)


def test_non_ascii_result_names_have_an_ascii_fallback(done):
    web, batch_id = done
    c = web.client
    answer = c.get(f"/api/batches/{batch_id}/results/1")
    disposition = answer.headers["content-disposition"]
    assert disposition == "attachment; filename=\"_.jpg\"; filename*=utf-8''%E7%8C%AB.jpg"
    plain = c.get(f"/api/batches/{batch_id}/results/2").headers["content-disposition"]
    assert plain == 'attachment; filename="plain.jpg"'
    zipped = c.get(f"/api/batches/{batch_id}/zip", params={"names": CAT})
    with zipfile.ZipFile(io.BytesIO(zipped.content)) as zf:
        assert zf.namelist() == [CAT] and zf.read(CAT) == RESULTS[CAT]


def test_a_result_name_leading_out_of_the_cache_is_never_written(serve):
    """Result names come from the batch's own ZIP; even a crafted one cannot make the
    server write a file outside the batch's cache."""
    from retouch.lib.settings import get_settings
    from retouch.web.runner import Runner

    root = get_settings().home / "web" / "batches"
    batch_id = stored_batch(root, {"../../../escape.jpg": b"x" * 50, "ok.jpg": b"o" * 50})
    web = serve(runner=Runner(root, max_running=0))
    answer = web.client.get(f"/api/batches/{batch_id}/results/1")
    assert answer.status_code == 404 and "escape.jpg" in answer.json()["detail"]
    assert web.client.get(f"/api/batches/{batch_id}/results/2").content == b"o" * 50
    written = sorted(p.name for p in root.parent.parent.rglob("escape.jpg"))
    assert written == []


def test_the_runs_do_not_inherit_the_token(monkeypatch, tmp_path):
    from retouch.web.runner import Runner

    monkeypatch.setenv("RETOUCH_WEB_TOKEN", "do-not-pass-on")
    env = Runner(tmp_path, prefect_api_url="http://127.0.0.1:1/api").environment()
    assert "RETOUCH_WEB_TOKEN" not in env
    assert env["PREFECT_API_URL"] == "http://127.0.0.1:1/api"


def test_many_different_selections_do_not_fill_the_disk(serve):
    """Each selection is a ZIP built once and kept for resumed downloads; asking for many
    keeps only the most recently used ones."""
    from retouch.lib.settings import get_settings
    from retouch.web.results import MAX_SELECTIONS
    from retouch.web.runner import Runner

    root = get_settings().home / "web" / "batches"
    results = {f"p{i:02d}.jpg": bytes([i]) * 2000 for i in range(MAX_SELECTIONS + 4)}
    batch_id = stored_batch(root, results)
    c = serve(runner=Runner(root, max_running=0)).client
    url = f"/api/batches/{batch_id}/zip"
    first = c.get(url, params={"names": "p00.jpg"})
    for name in list(results)[1:]:
        answer = c.get(url, params={"names": f"p00.jpg,{name}"})
        with zipfile.ZipFile(io.BytesIO(answer.content)) as zf:
            assert sorted(zf.namelist()) == ["p00.jpg", name]
        c.get(url, params={"names": "p00.jpg"}, headers={"Range": "bytes=0-9"})  # in use
    kept = sorted((root / batch_id / "cache").glob("selected-*.zip"))
    assert len(kept) == MAX_SELECTIONS
    # The one asked for all along is still the same file: a resume gets the same bytes.
    again = c.get(url, params={"names": "p00.jpg"}, headers={"If-Range": first.headers["etag"]})
    assert again.content == first.content
    tail = c.get(
        url,
        params={"names": "p00.jpg"},
        headers={"Range": "bytes=10-", "If-Range": first.headers["etag"]},
    )
    assert tail.status_code == 206 and tail.content == first.content[10:]


def test_a_big_batch_is_polled_compressed(serve):
    import json

    from retouch.lib.settings import get_settings
    from retouch.web.runner import Runner

    root = get_settings().home / "web" / "batches"
    batch_id = stored_batch(root, {f"shoot/day-{i:04d}.jpg": b"x" for i in range(400)})
    c = serve(runner=Runner(root, max_running=0)).client
    plain = c.get(f"/api/batches/{batch_id}", headers={"Accept-Encoding": "identity"})
    packed = c.get(f"/api/batches/{batch_id}", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in plain.headers
    assert packed.headers["content-encoding"] == "gzip"
    assert json.loads(packed.content) == plain.json()  # httpx has decompressed it
    assert len(plain.json()["images"]) == 400
    assert int(packed.headers["content-length"]) * 10 < len(plain.content)


def test_a_second_regeneration_waits_for_the_first(serve):
    """Two regenerations asked at once: the first is queued, the second is refused until
    the batch is idle again (a batch runs one job at a time)."""
    import threading

    from retouch.lib.settings import get_settings
    from retouch.web.runner import Runner

    root = get_settings().home / "web" / "batches"
    batch_id = stored_batch(root, {"a.jpg": b"a" * 10, "b.jpg": b"b" * 10})
    web = serve(runner=Runner(root, max_running=0))
    url = f"{web.url}/api/batches/{batch_id}/regenerate"
    answers: list[int] = []

    def ask(name: str) -> None:
        import httpx

        answers.append(httpx.post(url, json={"names": [name]}, timeout=30).status_code)

    threads = [threading.Thread(target=ask, args=(n,)) for n in ("a.jpg", "b.jpg")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [202, 409]
    assert [job.kind for _b, job in web.runner.queue] == ["regenerate"]
    assert web.client.get(f"/api/batches/{batch_id}").json()["state"] == "queued"
