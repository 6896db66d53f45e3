"""Shared by the Dask tests: a run's delivered images and a worker's model-pool builds."""

from __future__ import annotations

import zipfile
from pathlib import Path


def delivered_images(dest: Path) -> dict[str, bytes]:
    """Every file in the run's ZIPs, by name."""
    out = {}
    for archive in sorted(dest.glob("*.zip")):
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                if not name.endswith("/"):
                    out[name] = zf.read(name)
    return out


def pool_loads() -> dict[str, int]:
    """How often each model was built in this process (run on a Dask worker)."""
    from retouch.lib.models.pool import default_pool

    return {repr(k): v for k, v in default_pool().loads.items()}
