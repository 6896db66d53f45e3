"""`retouch` CLI for subprocess tests, with the tiny test models swapped in.

The registry describes the full-size networks; a separate process does not inherit a test's
monkeypatches, so this entry point applies the same test-only swaps (tiny architectures,
downloads forbidden) and then runs the real CLI with the given arguments. With
``RETOUCH_TEST_MODEL_DELAY`` set (seconds), every model forward pass sleeps that long first,
which gives a test time to interrupt a run in the middle of its model work.

Usage: ``python -m tests.robust._tiny_cli run SRC -p RECIPE -o DEST``
"""

from __future__ import annotations

import os
import sys
import time

import pytest

from retouch.lib.models import loaders
from tests.tiny_models import forbid_network, use_tiny_specs


class _Slow:
    def __init__(self, inner, delay: float):
        self.inner, self.delay = inner, delay

    def __call__(self, x):
        time.sleep(self.delay)
        return self.inner(x)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def main() -> None:
    patch = pytest.MonkeyPatch()
    use_tiny_specs(patch)
    forbid_network(patch)
    delay = float(os.environ.get("RETOUCH_TEST_MODEL_DELAY", "0") or 0)
    if delay > 0:
        real = loaders.load_realesrganer

        def slow_loader(*args, **kwargs):
            upsampler = real(*args, **kwargs)
            upsampler.model = _Slow(upsampler.model, delay)
            return upsampler

        patch.setattr(loaders, "load_realesrganer", slow_loader)
    from retouch.cli.main import main as cli_main

    cli_main(sys.argv[1:])  # the console script's own exit path


if __name__ == "__main__":
    main()
