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
