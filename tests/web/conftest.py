"""A real ``retouch web`` server (uvicorn on a free loopback port) for the API tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class WebServer:
    url: str
    client: httpx.Client
    app: Any

    @property
    def runner(self) -> Any:
        return self.app.state.runner


@pytest.fixture
def serve() -> Iterator[Callable[..., WebServer]]:
    """Start ``create_app(**kwargs)`` under uvicorn in a thread; every server is stopped (its
    lifespan runs, so running jobs are stopped too) when the test ends."""
    from retouch.web.app import create_app

    started: list[tuple[uvicorn.Server, threading.Thread, httpx.Client]] = []

    def start(**kwargs: Any) -> WebServer:
        app = create_app(**kwargs)
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the web server did not start")
            time.sleep(0.02)
        url = f"http://127.0.0.1:{port}"
        client = httpx.Client(base_url=url, timeout=60)
        started.append((server, thread, client))
        return WebServer(url, client, app)

    yield start
    for server, thread, client in started:
        client.close()
        server.should_exit = True
        thread.join(timeout=30)


def sample_files(names: list[str] | None = None, folder: str = "") -> list[tuple[str, Any]]:
    """The bundled samples as multipart ``files`` parts (``folder/name`` as the file name)."""
    chosen = names or sorted(p.name for p in SAMPLES.iterdir())
    return [("files", (f"{folder}{n}", (SAMPLES / n).read_bytes())) for n in chosen]


def wait_for(
    client: httpx.Client, batch_id: str, states: tuple[str, ...], timeout: float = 180
) -> dict[str, Any]:
    """Poll the batch until its state is one of ``states``."""
    deadline = time.monotonic() + timeout
    while True:
        batch = client.get(f"/api/batches/{batch_id}").json()
        if batch["state"] in states:
            return batch
        if time.monotonic() > deadline:
            raise AssertionError(f"batch still {batch['state']} after {timeout} s: {batch}")
        time.sleep(0.3)


def stored_batch(
    root: Path,
    results: dict[str, bytes],
    *,
    batch_id: str = "b-20260101-000000-abcdef",
    members: dict[str, bytes] | None = None,
    inputs: dict[str, bytes] | None = None,
    thumbs: dict[str, dict[str, bytes]] | None = None,
    source: str | None = None,
) -> str:
    """A finished batch on disk, as a run leaves it (batch.json, events.jsonl, out/ with a
    ZIP, manifest and report), for download tests that need no Prefect run. ``results``:
    image name -> the bytes delivered for it under the same name; ``members``: the ZIP's
    members when they should differ from ``results``; ``inputs``: image name -> its uploaded
    file (in input/); ``thumbs``: image name -> {label: JPEG bytes} of its review previews;
    ``source``: the folder the batch read (instead of its upload folder)."""
    import io
    import json
    import zipfile

    folder = root / batch_id
    out = folder / "out"
    out.mkdir(parents=True)
    read_from = Path(source) if source else folder / "input"
    for name, data in (inputs or {}).items():
        (read_from / name).parent.mkdir(parents=True, exist_ok=True)
        (read_from / name).write_bytes(data)
    thumb_paths: dict[str, dict[str, str]] = {}
    for name, labels in (thumbs or {}).items():
        for label, data in labels.items():
            path = folder / "thumbs" / f"{list(results).index(name) + 1}-{label}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            thumb_paths.setdefault(name, {})[label] = str(path)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in (members if members is not None else results).items():
            zf.writestr(name, data)
    (out / "results.zip").write_bytes(buffer.getvalue())
    manifest = {
        "images": [
            {
                "name": n,
                "status": "done",
                "source": str(read_from / n),
                "output_name": n,
                "outputs": [{"name": n, **_size(data)}],
            }
            for n, data in results.items()
        ]
    }
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (out / "report.html").write_text("<!doctype html><title>retouch report</title>")
    names = list(results)
    info = {
        "id": batch_id,
        "created": "2026-01-01T00:00:00+00:00",
        "preset": "web-ready",
        "overrides": {},
        "names": names,
        "source": str(read_from),
        "masks": False,
        "skipped": [],
        "state": "done",
        "error": None,
        "pid": None,
        "pending_job": None,
    }
    (folder / "batch.json").write_text(json.dumps(info), encoding="utf-8")
    summary = {
        "run_id": "run-1",
        "total": len(names),
        "succeeded": len(names),
        "failed": 0,
        "archives": [str(out / "results.zip")],
        "zip_uri": str(out / "results.zip"),
        "manifest_uri": str(out / "manifest.json"),
        "report_uri": str(out / "report.html"),
    }
    events = [
        {"event": "web-job", "job": 1, "kind": "run", "names": [], "overrides": {}},
        *(
            {"event": "image", "phase": "review", "name": n, "ok": True, "thumbs": labels}
            for n, labels in thumb_paths.items()
        ),
        *(
            {"event": "image", "phase": "export", "name": n, "ok": True, "output_name": n}
            for n in names
        ),
        {"event": "done", "summary": summary},
        {"event": "web-job-end", "state": "done", "error": None, "exit_code": 0},
    ]
    (folder / "events.jsonl").write_text(
        "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in events), encoding="utf-8"
    )
    return batch_id


def _size(data: bytes) -> dict[str, int]:
    """The width and height of image bytes, as the manifest records them (none for bytes
    that are not an image)."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            return {"width": im.width, "height": im.height}
    except UnidentifiedImageError:
        return {}
