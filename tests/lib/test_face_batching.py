"""Several faces per forward pass of the face network give the faces of one at a time.

Real path: tiny random-weight GFPGAN / RestoreFormer loaded by GFPGANer (tests/tiny_models.py),
the hand-set detector (``faces="one"``), which on a wide image reports a face every ~128 px,
facexlib's alignment and paste-back. The one-at-a-time reference is ``GFPGANer.enhance``
itself, on the same loaded instance (its network is called with ``randomize_noise=False``
by the loader's wrapper, in both paths).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from retouch.lib.errors import OperationError
from retouch.lib.image import Image
from retouch.lib.models import loaders
from retouch.lib.models.pool import ModelPool
from retouch.lib.ops.base import OpContext
from retouch.lib.ops.restore_faces import RestoreFaces, restore_aligned_faces

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tiny_models  # noqa: E402
from tiny_models import seeded_zero  # noqa: E402, F401  (autouse fixture "_seeded")


class Recording(nn.Module):
    """Wraps the face network; records the batch size of every real call."""

    def __init__(self, inner: nn.Module, batches: list[int], refuse_batches: bool = False):
        super().__init__()
        self.inner = inner
        self.batches = batches
        self.refuse_batches = refuse_batches

    def forward(self, x: torch.Tensor, *args, **kwargs):
        if x.device.type != "meta":
            self.batches.append(int(x.shape[0]))
            if self.refuse_batches and x.shape[0] > 1:
                raise RuntimeError("CUDA out of memory. Tried to allocate 1.50 GiB")
        return self.inner(x, *args, **kwargs)


@pytest.fixture
def face_models(tmp_path, monkeypatch):
    tiny_models.install_tiny_models(tmp_path / "models", monkeypatch, faces="one")
    batches: list[int] = []
    real = loaders.load_gfpganer

    def load(*args, **kwargs):
        restorer = real(*args, **kwargs)
        restorer.gfpgan = Recording(restorer.gfpgan, batches)
        return restorer

    monkeypatch.setattr(loaders, "load_gfpganer", load)
    return batches


def _pixels(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int64) - b.astype(np.int64))


def test_batched_faces_equal_gfpganer_one_face_at_a_time(face_models):
    batches = face_models
    pixels = _pixels(64, 320)
    ctx = OpContext(name="group.png", device="cpu", pool=ModelPool())
    op = RestoreFaces()
    out = op(Image(pixels=pixels), op.Params(model="gfpgan-v1.4", upscale=1), ctx)
    assert ctx.counters["faces"] == 3  # the wide image holds three detected faces
    assert batches == [3]  # all three in one forward pass
    assert not np.array_equal(out.pixels, pixels)

    # Reference: GFPGANer.enhance, one face per pass, on the very same loaded instance.
    restorer = next(iter(ctx.pool._entries.values())).value
    batches.clear()
    restorer.face_helper.upscale_factor = 1
    _crops, faces, reference = restorer.enhance(
        pixels.copy(), has_aligned=False, only_center_face=False, paste_back=True, weight=0.5
    )
    restorer.face_helper.clean_all()
    assert batches == [1, 1, 1] and len(faces) == 3
    # Batched convolutions may sum in another order: at most one 8-bit level apart.
    diff = _diff(out.pixels, reference)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01


@pytest.mark.parametrize("model", ["gfpgan-v1.4", "restoreformer"])
def test_face_batch_function_keeps_order_and_matches_single_passes(face_models, model):
    batches = face_models
    ctx = OpContext(name="face.png", device="cpu", pool=ModelPool())
    op = RestoreFaces()
    op(Image(pixels=_pixels(64, 64)), op.Params(model=model), ctx)  # load it
    net = next(iter(ctx.pool._entries.values())).value.gfpgan
    rng = np.random.default_rng(7)
    crops = [rng.integers(0, 256, (512, 512, 3), dtype=np.uint8) for _ in range(2)]
    crops += [np.zeros((512, 512, 3), np.uint8), np.full((512, 512, 3), 255, np.uint8)]
    batches.clear()
    singles = restore_aligned_faces(net, crops, device="cpu", batch=1)
    threes = restore_aligned_faces(net, crops, device="cpu", batch=3)
    together = restore_aligned_faces(net, crops, device="cpu", batch=8)
    assert batches == [1] * 4 + [3, 1] + [4]
    for one, three, four in zip(singles, threes, together, strict=True):
        assert one.shape == (512, 512, 3) and one.dtype == np.uint8
        assert _diff(one, three).max() <= 1 and _diff(one, four).max() <= 1
    if model == "restoreformer":
        # Each output belongs to its own input (order kept). (The tiny random GFPGAN's
        # output hardly depends on its input, so this is only checked on RestoreFormer.)
        for k in range(1, 4):
            assert _diff(singles[0], singles[k]).mean() > 10
    assert restore_aligned_faces(net, [], device="cpu") == []


def test_face_batch_out_of_memory_retries_with_fewer_faces_then_fails_clearly(face_models):
    batches = face_models
    ctx = OpContext(name="face.png", device="cpu", pool=ModelPool())
    op = RestoreFaces()
    op(Image(pixels=_pixels(64, 64)), op.Params(model="gfpgan-v1.4"), ctx)
    recording = next(iter(ctx.pool._entries.values())).value.gfpgan
    rng = np.random.default_rng(8)
    crops = [rng.integers(0, 256, (512, 512, 3), dtype=np.uint8) for _ in range(3)]
    expected = restore_aligned_faces(recording, crops, device="cpu", batch=1)
    recording.refuse_batches = True
    batches.clear()
    got = restore_aligned_faces(recording, crops, device="cpu", batch=4)
    assert batches == [3, 1, 1, 1]
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))

    def broken(x, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 1.50 GiB")

    with pytest.raises(OperationError, match=r"face network out of memory on 1 face\(s\)"):
        restore_aligned_faces(broken, crops[:1], device="cpu", batch=1)
