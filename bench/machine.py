"""What the numbers were measured on: CPU, memory, torch, GPU, the code's commit."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _git(repo: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def describe(repo: Path, threads: int) -> dict[str, Any]:
    """A JSON-able description of this machine and checkout."""
    import torch

    try:
        from importlib.metadata import version

        prefect_version = version("prefect")
    except Exception:  # not installed: the retouch runs will say so
        prefect_version = None
    gpu: dict[str, Any] | None = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu = {
            "name": props.name,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "count": torch.cuda.device_count(),
            "cuda": torch.version.cuda,
        }
    status = _git(repo, "status", "--porcelain")
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "ram_gib": _ram_gib(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": threads,
        "torch_default_threads": torch.get_num_threads(),
        "prefect": prefect_version,
        "gpu": gpu,
        "git_commit": _git(repo, "rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
    }


def slug(info: dict[str, Any]) -> str:
    """A short file-name-safe machine name, e.g. ``cpu-2c`` or ``nvidia-h100-80gb-hbm3-16c``."""
    base = info["gpu"]["name"] if info.get("gpu") else "cpu"
    text = f"{base}-{info['cpus_usable']}c".lower()
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")
