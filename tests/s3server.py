"""A real S3 endpoint for tests: a ``moto`` server subprocess on 127.0.0.1.

``moto_s3_server()`` starts ``python -m moto.server`` on a free port, waits until it
answers HTTP, yields an :class:`S3Server` (endpoint URL and the environment s3fs needs),
and kills the process afterwards. ``moto_s3`` is a session-scoped pytest fixture around it
that also puts that environment into ``os.environ`` for the session and resets retouch's
cached filesystems, so ``s3://`` URIs in the code under test reach the server. A test
module uses it with ``from s3server import moto_s3_fixture  # noqa: F401`` (tests/ on
sys.path) or a conftest.py importing it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    env: dict[str, str]

    def boto3_client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def create_bucket(self, name: str) -> None:
        self.boto3_client().create_bucket(Bucket=name)


def s3_env(endpoint_url: str) -> dict[str, str]:
    """Environment variables pointing s3fs/botocore at ``endpoint_url`` with fake keys."""
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": endpoint_url,
        # Never wait on the EC2 metadata service looking for other credentials.
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means the server is up
    except OSError:
        return False


@contextmanager
def moto_s3_server(timeout: float = 30.0) -> Iterator[S3Server]:
    """Run a moto S3 server for the duration of the ``with`` block."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tempfile.TemporaryFile()
    env = {**os.environ, **s3_env(endpoint)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        deadline = time.monotonic() + timeout
        while not _answers(endpoint + "/moto-api/"):
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(
                    f"moto server exited with {proc.returncode}: {log.read().decode()[-2000:]}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto server did not answer on {endpoint} within {timeout} s")
            time.sleep(0.1)
        yield S3Server(endpoint, s3_env(endpoint))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


@pytest.fixture(scope="session", name="moto_s3")
def moto_s3_fixture() -> Iterator[S3Server]:
    """A moto S3 server with its environment set in ``os.environ`` for the session."""
    from retouch.lib import storage

    with moto_s3_server() as server, pytest.MonkeyPatch.context() as mp:
        for key, value in server.env.items():
            mp.setenv(key, value)
        mp.delenv("RETOUCH_S3_ENDPOINT_URL", raising=False)
        mp.delenv("AWS_ENDPOINT_URL_S3", raising=False)
        mp.delenv("AWS_PROFILE", raising=False)
        storage.reset_filesystems()
        yield server
    storage.reset_filesystems()
