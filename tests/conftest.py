"""Shared fixtures: isolated settings, determinism, a Prefect test server, a moto S3 server."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

from tests.s3server import moto_s3_fixture  # noqa: F401  (session fixture "moto_s3")

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# A command run without the session's server starts its own and stops it at exit (no shared
# background server outliving the test); the shared server's own tests set this themselves.
os.environ.setdefault("RETOUCH_SERVER_IDLE_S", "0")


@pytest.fixture(autouse=True)
def _seeded():
    random.seed(1234)
    np.random.seed(1234)
    try:
        import torch

        torch.manual_seed(1234)
    except ImportError:
        pass


@pytest.fixture(autouse=True)
def retouch_home(tmp_path, monkeypatch):
    """Every test gets its own model dir and workspace; nothing touches ~/.cache."""
    from retouch.lib.settings import reload_settings

    home = tmp_path / "retouch-home"
    monkeypatch.setenv("RETOUCH_HOME", str(home))
    monkeypatch.delenv("RETOUCH_MODEL_DIR", raising=False)
    monkeypatch.delenv("RETOUCH_WORKSPACE", raising=False)
    monkeypatch.delenv("RETOUCH_MODEL_MIRROR", raising=False)
    monkeypatch.setenv("RETOUCH_OFFLINE", "1")
    reload_settings()
    yield home
    reload_settings()


@pytest.fixture(scope="session")
def prefect_server():
    """One Prefect test server (temporary database) for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def s3_endpoint(moto_s3):
    """The endpoint URL of the session's moto S3 server (the AWS_* variables are set)."""
    return moto_s3.endpoint_url
