"""A chunk whose images are too big for the device in one pass: the process phase retries
each image with smaller tiles, every image of the chunk succeeds, and the blended tiles give
the unconstrained output to within one level of 255.

The out-of-memory condition is simulated: the shipped compact upscaler is wrapped so that
any forward pass over more than ``limit`` input pixels raises the error CUDA raises
(``is_out_of_memory`` recognises its text), as a card with little free memory would.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from retouch.lib.image import Image
from retouch.lib.imageio import encode
from retouch.lib.models import loaders
from retouch.lib.models.pool import default_pool
from retouch.lib.phases import workers
from retouch.lib.phases.context import RunConfig
from retouch.lib.phases.keys import sha256_bytes, weights_ids
from retouch.lib.recipe import recipe_from_dict
from retouch.lib.records import ImageRecord

# The bundled x2 model with the default automatic tiling (tile=0: whole image when it fits
# the memory budget) and the default 10 px tile and pre pads.
UPSCALE = {"name": "x2", "steps": [{"op": "upscale", "params": {"model": "retouch-compact-x2"}}]}
HEIGHT, WIDTH = 96, 128  # 106 x 138 after the 10 px pre-pad: 14,628 px in one pass
LIMIT = (
    90 * 90
)  # the "card" takes 8,100 px per pass: 64 px tiles + 2 x 10 px pad fit, whole images don't


class MemoryHungry(nn.Module):
    """The network, refusing passes over ``limit["pixels"]`` input pixels like a full GPU.

    Traced (meta) passes go through untouched, so the memory budget still sees the real
    network; ``seen`` records (image, pixels, refused) for every real pass.
    """

    def __init__(self, inner: nn.Module, limit: dict[str, int | None], seen: list):
        super().__init__()
        self.inner, self.limit, self.seen = inner, limit, seen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "meta":
            return self.inner(x)
        pixels = int(x.shape[0] * x.shape[2] * x.shape[3])
        refused = self.limit["pixels"] is not None and pixels > self.limit["pixels"]
        self.seen.append((pixels, refused))
        if refused:
            raise RuntimeError(
                f"CUDA out of memory. Tried to allocate {pixels * 4 * 64 // 2**20} MiB "
                f"(GPU 0; 7.79 GiB total capacity)"
            )
        return self.inner(x)


@pytest.fixture
def hungry(monkeypatch):
    """Every compact upscaler loaded from here on refuses passes over the returned limit."""
    limit: dict[str, int | None] = {"pixels": None}
    seen: list[tuple[int, bool]] = []
    real = loaders.load_realesrganer

    def load(*args, **kwargs):
        upsampler = real(*args, **kwargs)
        upsampler.model = MemoryHungry(upsampler.model, limit, seen)
        return upsampler

    monkeypatch.setattr(loaders, "load_realesrganer", load)
    default_pool().clear()  # no unwrapped model left over from another test
    yield limit, seen
    default_pool().clear()


def _photo(seed: int) -> np.ndarray:
    """A photo-like image: smooth gradients and texture with sensor-like noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = np.stack([xx * 2.0, yy * 2.5, (xx + yy) * 1.2], axis=2)
    base += 40 * (np.sin(xx / (4.0 + seed)) * np.cos(yy / 7.0))[..., None]
    return np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)


def _chunk(folder, n: int) -> list[ImageRecord]:
    folder.mkdir()
    records = []
    for i in range(n):
        path = folder / f"photo_{i}.png"
        path.write_bytes(encode(Image(_photo(i)), "png"))
        records.append(
            ImageRecord(
                index=i + 1,
                source=str(path),
                name=path.name,
                uri=str(path),
                sha256=sha256_bytes(path.read_bytes()),
            )
        )
    return records


def _process(records: list[ImageRecord], workspace) -> tuple[list[ImageRecord], dict, RunConfig]:
    """The process phase over one chunk, as ``tasks.process.process_chunk`` runs it
    (``workers.process_batch`` on copies), with a context whose counters we can read."""
    recipe = recipe_from_dict(UPSCALE)
    config = RunConfig(
        run_id="oom", workspace=str(workspace), recipe=recipe, weights=weights_ids(recipe)
    )
    ctx = config.context()
    done = workers.process_batch([r.model_copy(deep=True) for r in records], config, ctx)
    return done, ctx.counters, config


def test_a_chunk_that_runs_out_of_memory_succeeds_with_smaller_tiles(tmp_path, hungry):
    limit, seen = hungry
    records = _chunk(tmp_path / "src", 4)

    free, free_counts, free_config = _process(records, tmp_path / "ws-free")
    assert all(r.ok for r in free), [r.reason for r in free]
    assert "oom_retries" not in free_counts
    assert free_counts["forward_passes"] == 4  # one whole-image pass per image
    assert [refused for _px, refused in seen] == [False] * 4
    assert all(px > LIMIT for px, _ in seen)  # each whole pass is more than the card takes

    seen.clear()
    limit["pixels"] = LIMIT
    tight, counts, tight_config = _process(records, tmp_path / "ws-tight")

    # Every image of the chunk succeeded, none was given up.
    assert [r.ok for r in tight] == [True] * 4, [r.reason for r in tight]
    assert [r.output.width for r in tight] == [2 * WIDTH] * 4  # type: ignore[union-attr]
    assert counts["model_calls"] == 4
    # Each image was refused once whole, then retried with smaller tiles, all of which fit.
    assert counts["oom_retries"] == 4
    assert sum(refused for _px, refused in seen) == 4
    assert all(px <= LIMIT for px, refused in seen if not refused)
    assert counts["forward_passes"] == sum(not refused for _px, refused in seen) > 4

    # The blended tiles give the unconstrained result to within one level of 255.
    free_ws, tight_ws = free_config.context().workspace, tight_config.context().workspace
    for a, b in zip(free, tight, strict=True):
        assert a.result_key == b.result_key  # the same result, by content
        want = free_ws.load_result(a.result_key).pixels
        got = tight_ws.load_result(b.result_key).pixels
        assert got.shape == want.shape == (2 * HEIGHT, 2 * WIDTH, 3)
        diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
        assert diff.max() <= 1, (a.name, int(diff.max()))
