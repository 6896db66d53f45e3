"""The GPU memory cap (RETOUCH_GPU_MEMORY_FRACTION): a forward pass's budget keeps what the
process's tensors hold under that share of the card, read from the device at every call.

There is no GPU here: the card is simulated by replacing the torch.cuda functions the budget
reads (free and total memory, what torch's allocator has allocated and reserved).
"""

from __future__ import annotations

import pydantic
import pytest
import torch

from retouch.lib.models import budget, loaders, specs
from retouch.lib.models.tiling import MIN_TILE, plan_tiles
from retouch.lib.settings import get_settings, reload_settings

GIB = 2**30


class Card:
    """A simulated 16 GiB card; the test changes what is used on it between calls."""

    def __init__(self, monkeypatch, total: int = 16 * GIB):
        self.total = total
        self.others = 0  # held by other processes
        self.allocated = 0  # this process's live tensors
        self.reserved = 0  # what this process's allocator holds (allocated + its cache)
        self.calls = 0
        monkeypatch.setattr(torch.cuda, "mem_get_info", self.mem_get_info)
        monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: self.allocated)
        monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: self.reserved)

    def mem_get_info(self, device=None) -> tuple[int, int]:
        self.calls += 1
        return self.total - self.others - self.reserved, self.total

    def use(self, allocated: float, cached: float = 0, others: float = 0) -> Card:
        self.allocated = int(allocated * GIB)
        self.reserved = int((allocated + cached) * GIB)
        self.others = int(others * GIB)
        return self


@pytest.fixture
def card(monkeypatch) -> Card:
    return Card(monkeypatch)


def _fraction(monkeypatch, value: str) -> None:
    monkeypatch.setenv("RETOUCH_GPU_MEMORY_FRACTION", value)
    reload_settings()


def test_the_default_cap_is_80_percent_and_only_binds_when_the_process_holds_a_lot(card):
    assert get_settings().gpu_memory_fraction == 0.8
    # An empty card: half of what is free (8 GiB) is well under the cap (12.8 GiB).
    assert budget.memory_budget("cuda") == int(budget.CUDA_BUDGET_FRACTION * 16 * GIB)
    # The process holds 11 GiB of models and images: half of the 5 GiB free would be 2.5 GiB,
    # but 12.8 - 11 = 1.8 GiB is all that keeps the process under 80% of the card.
    card.use(allocated=11)
    assert budget.memory_budget("cuda") == int(0.8 * 16 * GIB - 11 * GIB)


def test_the_cap_follows_the_setting_and_what_is_in_use_at_each_call(card, monkeypatch):
    _fraction(monkeypatch, "0.5")
    card.use(allocated=6)
    assert budget.memory_budget("cuda") == 2 * GIB  # 8 GiB cap - 6 GiB in use
    # Cached blocks the allocator keeps can be reused by the pass: they are not "in use".
    card.use(allocated=6, cached=3)
    assert budget.memory_budget("cuda") == 2 * GIB
    # Another process filling the card is the free-memory rule's business, not the cap's.
    card.use(allocated=1, others=12)
    assert budget.memory_budget("cuda") == int(budget.CUDA_BUDGET_FRACTION * 3 * GIB)
    calls = card.calls
    card.use(allocated=7.5)
    assert budget.memory_budget("cuda") == GIB // 2  # asked again: the device is read again
    assert card.calls == calls + 1


@pytest.mark.parametrize("allocated", [8, 8.5, 15])
def test_at_or_over_the_cap_the_budget_is_zero_and_tiles_are_the_smallest(
    card, monkeypatch, allocated
):
    _fraction(monkeypatch, "0.5")
    card.use(allocated=allocated)
    assert budget.memory_budget("cuda") == 0
    # What a zero budget means for an upscale: the smallest tiles, one per pass.
    plan = plan_tiles(1000, 1500, tile=0, tile_pad=10, bytes_per_pixel=4000.0, budget=0)
    assert plan.tile == MIN_TILE and plan.batch == 1 and plan.count > 1


def test_a_6000x4000_upscale_plan_fits_under_the_cap_of_a_busy_card(card, monkeypatch):
    # The full-size RealESRGAN_x4plus network (random weights: the shape is what counts).
    net = loaders.build_sr_network(specs.get_spec("realesrgan-x4plus"))
    bpp = budget.sr_bytes_per_pixel(net, scale=4, elem_bytes=2)
    card.use(allocated=2)
    roomy = budget.memory_budget("cuda")
    roomy_plan = plan_tiles(4010, 6010, tile=0, tile_pad=10, bytes_per_pixel=bpp, budget=roomy)
    card.use(allocated=12)  # other models and frames of this process on the card
    tight = budget.memory_budget("cuda")
    assert tight == int(0.8 * 16 * GIB - 12 * GIB) < roomy
    plan = plan_tiles(4010, 6010, tile=0, tile_pad=10, bytes_per_pixel=bpp, budget=tight)
    # One pass of the plan keeps the process under 80% of the card ...
    assert card.allocated + plan.patch_h * plan.patch_w * bpp * plan.batch <= 0.8 * card.total
    # ... by passing fewer pixels at a time than with the card to itself.
    passed = plan.patch_h * plan.patch_w * plan.batch
    assert passed < roomy_plan.patch_h * roomy_plan.patch_w * roomy_plan.batch


def test_cpu_budget_ignores_the_gpu_setting(card, monkeypatch):
    _fraction(monkeypatch, "0.1")
    card.use(allocated=15)
    assert budget.memory_budget("cpu") == budget.CPU_BUDGET_BYTES
    assert card.calls == 0  # the card is not even asked


@pytest.mark.parametrize("value", ["0", "1.5", "-0.2"])
def test_a_fraction_outside_0_to_1_is_refused(monkeypatch, value):
    monkeypatch.setenv("RETOUCH_GPU_MEMORY_FRACTION", value)
    with pytest.raises(pydantic.ValidationError, match="gpu_memory_fraction"):
        reload_settings()
    monkeypatch.delenv("RETOUCH_GPU_MEMORY_FRACTION")  # before the fixtures re-read settings
