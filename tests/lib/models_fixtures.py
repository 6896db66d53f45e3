"""Fixtures shared by the model-layer tests (test_models.py, test_models_runtime.py): a test
module imports them to use them."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from retouch.lib.settings import reload_settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tiny_models  # noqa: E402


@pytest.fixture(autouse=True, name="_seeded_and_clean_settings")
def seeded_and_clean_settings(monkeypatch):
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    for var in ("RETOUCH_MODEL_DIR", "RETOUCH_MODEL_MIRROR", "RETOUCH_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    yield
    monkeypatch.undo()
    reload_settings()


@pytest.fixture(name="model_dir")
def model_dir_fixture(tmp_path, monkeypatch):
    d = tmp_path / "models"
    tiny_models.point_settings_at(d, monkeypatch)
    tiny_models.forbid_network(monkeypatch)
    return d


def _set_env(monkeypatch, **env):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reload_settings()
