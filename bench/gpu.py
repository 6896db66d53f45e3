"""How busy the GPU is while a run goes on: ``nvidia-smi`` sampled every 250 ms.

The bench's GPU cases wrap each CUDA run in :class:`GpuSampler`. The summary gives the mean
utilisation over the whole run (start-up, model loading and Prefect included) and over the
*active window*, from the first sample with the GPU doing anything to the last one (the
part of the run where the GPU could have been kept busy): the ">= 80% busy" target is read
on the active window. Without ``nvidia-smi`` the summary says it was not measured.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import threading
from typing import Any

QUERY = "utilization.gpu,memory.used"
INTERVAL_MS = 250
BUSY_TARGET_PCT = 80.0


def parse_line(line: str) -> tuple[float, float] | None:
    """One ``nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,
    nounits`` line (the first GPU's): utilisation in percent and memory used in MiB, or None
    for a line that is not such a sample (a header, ``[N/A]``, a message)."""
    parts = [p.strip() for p in line.split(",")]
    if len(parts) < 2:
        return None
    try:
        return float(parts[0]), float(parts[1])
    except ValueError:
        return None


def summarise(samples: list[tuple[float, float]], interval_ms: int = INTERVAL_MS) -> dict[str, Any]:
    """Mean utilisation over all ``samples`` and over the active window (first to last
    sample above 0%), the share of active samples at or above :data:`BUSY_TARGET_PCT`, and
    the most memory used."""
    if not samples:
        return {"measured": False, "why": "no sample arrived from nvidia-smi"}
    util = [u for u, _ in samples]
    active = [i for i, u in enumerate(util) if u > 0]
    window = util[active[0] : active[-1] + 1] if active else []
    return {
        "measured": True,
        "tool": "nvidia-smi",
        "interval_ms": interval_ms,
        "samples": len(samples),
        "util_mean_pct": round(statistics.fmean(util), 1),
        "active_samples": len(window),
        "active_s": round(len(window) * interval_ms / 1000, 2),
        "active_util_mean_pct": round(statistics.fmean(window), 1) if window else 0.0,
        "active_busy_share": (
            round(sum(u >= BUSY_TARGET_PCT for u in window) / len(window), 3) if window else 0.0
        ),
        "memory_max_mib": max(m for _, m in samples),
    }


class GpuSampler:
    """``with GpuSampler() as gpu: ...`` then ``gpu.summary()``: nvidia-smi's samples of
    the first GPU for the time inside the block."""

    def __init__(self, interval_ms: int = INTERVAL_MS) -> None:
        self.interval_ms = interval_ms
        self.samples: list[tuple[float, float]] = []
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None
        self._why: str | None = None

    def __enter__(self) -> GpuSampler:
        tool = shutil.which("nvidia-smi")
        if tool is None:
            self._why = "nvidia-smi is not on PATH"
            return self
        argv = [tool, f"--query-gpu={QUERY}", "--format=csv,noheader,nounits", "-i", "0"]
        argv.append(f"-lms={self.interval_ms}")
        try:
            self._proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
            )
        except OSError as exc:
            self._why = f"nvidia-smi did not start: {exc}"
            return self
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            sample = parse_line(line)
            if sample is not None:
                self.samples.append(sample)

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def summary(self) -> dict[str, Any]:
        if self._why is not None:
            return {"measured": False, "why": self._why}
        return summarise(list(self.samples), self.interval_ms)


def busy_enough(gpu: dict[str, Any] | None) -> bool:
    """The ">= 80% busy" target on a run's summary (False when it was not measured)."""
    return bool(gpu and gpu.get("measured") and gpu["active_util_mean_pct"] >= BUSY_TARGET_PCT)


def line(case: str, gpu: dict[str, Any] | None) -> str:
    """One line of the bench's output for a CUDA run's utilisation."""
    if not gpu:
        return f"{case}: GPU utilisation: not sampled"
    if not gpu.get("measured"):
        return f"{case}: GPU utilisation: not measured ({gpu.get('why')})"
    return (
        f"{case}: GPU busy {gpu['active_util_mean_pct']:.0f}% on average over the "
        f"{gpu['active_s']:.1f} s it worked ({gpu['active_busy_share']:.0%} of samples >= "
        f"{BUSY_TARGET_PCT:.0f}%), {gpu['util_mean_pct']:.0f}% over the whole run; memory up "
        f"to {gpu['memory_max_mib']:.0f} MiB (target >= {BUSY_TARGET_PCT:.0f}% busy: "
        f"{'pass' if busy_enough(gpu) else 'FAIL'})"
    )
