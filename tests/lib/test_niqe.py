"""retouch's NIQE against basicsr's ``calculate_niqe`` (the implementation it follows)."""

from __future__ import annotations

import subprocess
import sys
import warnings

import cv2
import numpy as np
import pytest

from retouch.lib.quality import measures, niqe
from tests.lib.test_analysis import _degrade, photo


def _reference(img: np.ndarray) -> float:
    from retouch.lib.models.compat import ensure_compat

    ensure_compat()
    from basicsr.metrics.niqe import calculate_niqe

    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(calculate_niqe(img, 0))


def _images() -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(11)
    out = []
    for seed, (h, w) in enumerate([(192, 192), (300, 260), (384, 256), (217, 455), (512, 384)]):
        base = cv2.resize(photo(seed=seed), (w, h), interpolation=cv2.INTER_CUBIC)
        out.append((f"photo {w}x{h}", base))
        out.append((f"blurred {w}x{h}", _degrade(base, "blur", seed % 3)))
        noisy = np.clip(base + rng.normal(0, 4 + 3 * seed, base.shape), 0, 255)
        out.append((f"noisy {w}x{h}", noisy.astype(np.uint8)))
    smooth = cv2.resize(rng.integers(0, 256, (6, 6, 3)).astype(np.uint8), (300, 240))
    out.append(("smooth gradient", smooth))
    out.append(("gray", cv2.cvtColor(out[0][1], cv2.COLOR_BGR2GRAY)))
    out.append(("odd size, partial blocks", rng.integers(0, 256, (250, 199, 3), dtype=np.uint8)))
    return out


def test_niqe_agrees_with_basicsr():
    """Same algorithm and model: the values agree to float32 rounding. basicsr halves the
    image in float32 through torch, retouch in float64; on smooth pictures (small local
    contrast) that rounding moves NIQE by up to ~0.1% (reordering basicsr's own float32 sums
    moves it as much): a hundredth on a scale where the review's verdicts differ by whole
    points."""
    values = []
    for name, img in _images():
        ours, ref = niqe.niqe(img), _reference(img)
        assert ours == pytest.approx(ref, rel=2e-3), name
        values.append(ours)
    assert len(set(np.round(values, 3))) > len(values) // 2  # the images are told apart


def test_the_review_measure_uses_it_and_refuses_what_it_cannot_measure():
    img = cv2.resize(photo(), (320, 256), interpolation=cv2.INTER_CUBIC)
    assert measures.niqe(img) == pytest.approx(_reference(img), rel=2e-3)
    with pytest.raises(ValueError, match="96x96"):
        niqe.niqe(img[:90])
    with pytest.raises(ValueError, match="uint8"):
        niqe.niqe(img.astype(np.float32))


def test_computing_niqe_imports_neither_basicsr_nor_torch():
    """A model-free run's review measures NIQE without loading the model stack."""
    code = (
        "import sys, numpy as np\n"
        "from retouch.lib.quality import measures\n"
        "rng = np.random.default_rng(0)\n"
        "img = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)\n"
        "assert measures.niqe(img) is not None\n"
        "print(sorted(m for m in ('basicsr', 'torch', 'torchvision') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr
