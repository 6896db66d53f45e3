"""Per-run performance figures: throughput, time per phase, model loading, memory, CPU/GPU use.

A :class:`RunMeter` is started when a run starts; a background thread samples the process's
resident memory (and, on CUDA, GPU utilisation) a few times a second, because the process
peak (``ru_maxrss``) never goes down in a long-running worker and would hide whether this
run used more than the last one. :meth:`RunMeter.report` turns it and the run's records into
a plain dict that goes into the manifest and the run's performance artifact.
"""

from __future__ import annotations

import functools
import os
import resource
import sys
import threading
import time
from typing import Any

from retouch.lib.records import ImageRecord

PHASES = ("prepare", "process", "review", "export")
SAMPLE_EVERY_S = 0.25


def rss_bytes() -> int | None:
    """The process's resident memory now (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def peak_rss_bytes() -> int:
    """The process's peak resident memory since it started (``ru_maxrss``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * 1024  # kilobytes on Linux


def cuda_in_use() -> Any:
    """``torch.cuda`` when this process already uses CUDA, else None. Never imports torch nor
    starts CUDA: a run that has not imported it (classic operations only) has no GPU figures
    to report, the import costs seconds, and a metrics scrape must not cost a web server a
    GPU context (hundreds of MB)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        return torch.cuda if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    except Exception:
        return None


_workers_lock = threading.Lock()
_workers = {"cpu_s": 0.0, "peak_rss": 0, "processes": 0}


def note_worker(cpu_s: float, peak_rss: int, processes: int) -> None:
    """Work done for this process in worker processes (``retouch.lib.phases.workers``): their CPU
    seconds add to the run's CPU time, their peak memory is reported beside this process's."""
    with _workers_lock:
        _workers["cpu_s"] += cpu_s
        _workers["peak_rss"] = max(int(_workers["peak_rss"]), peak_rss)
        _workers["processes"] = max(int(_workers["processes"]), processes)


def _worker_totals() -> dict[str, float]:
    with _workers_lock:
        return dict(_workers)


@functools.cache
def _glibc(name: str, *argtypes: Any) -> Any:
    """glibc's function ``name`` with its argument types set; None off glibc. Looked up once
    per process: finding the C library runs ``ldconfig`` (about 1 ms), and workers trim
    their memory after every batch."""
    import ctypes
    import ctypes.util

    try:
        function = getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):  # not glibc
        return None
    function.argtypes = list(argtypes)
    return function


MALLOC_ARENAS = 2
"""glibc malloc arenas a retouch process may use (:func:`limit_malloc_arenas`)."""

_M_ARENA_MAX = -8  # mallopt parameter number, from glibc's malloc.h


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap the number of glibc malloc arenas for the threads this process starts from now on,
    unless the user set ``MALLOC_ARENA_MAX`` (then glibc follows that). Returns whether the cap
    was set (False off glibc).

    glibc gives each new thread its own arena, up to eight per core. Every flow run starts
    threads (task runners, Prefect's services), and memory freed in one arena cannot serve
    another, so a process running batch after batch grew by ~35 MB over the bench's 20 leak
    batches (4.6-5.3% of its size) and only levelled off after ~15. With two arenas the same
    series grew by 6 MB, at no measurable cost in speed (8-image upscale runs, 3 each way).
    """
    import ctypes

    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    mallopt = _glibc("mallopt", ctypes.c_int, ctypes.c_int)
    return mallopt is not None and bool(mallopt(_M_ARENA_MAX, arenas))


_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers, from glibc's malloc.h
_M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Let glibc reuse freed memory for the next large array instead of handing it back to
    the operating system and asking for fresh zeroed pages (for an image worker process;
    :func:`trim_memory` gives it back between batches). Returns whether it was set (False
    off glibc, or when these are tuned with ``GLIBC_TUNABLES`` or ``MALLOC_*_``: Dask's workers
    set ``MALLOC_TRIM_THRESHOLD_``).

    By default every array over 32 MB (a 12 MP image at 8 bits is 36 MB; as float32, 144 MB)
    is its own ``mmap``: each is page-faulted in on first touch and unmapped when freed, so a
    classic recipe pays for fresh pages on every step. ``web-ready`` on a 12 MP photo took
    1.19 s per photo that way and 0.73 s from the heap (one process, 4 photos twice, this
    project's 2-core AMD EPYC), for 9% more peak memory (916 MB against 836).
    """
    import ctypes

    tuned = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_")
    if "malloc" in os.environ.get("GLIBC_TUNABLES", "") or any(k in os.environ for k in tuned):
        return False
    mallopt = _glibc("mallopt", ctypes.c_int, ctypes.c_int)
    if mallopt is None:
        return False
    # Never trim the heap's top on free (trim_memory does, explicitly); large blocks come
    # from the heap, not from mmap, so they can be reused.
    return bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)) and bool(mallopt(_M_MMAP_MAX, 0))


def release_memory() -> None:
    """Give memory freed by a finished run back to the operating system.

    A long-running worker (``retouch serve``) runs batch after batch; glibc keeps freed heap
    memory in its per-thread arenas, so the resident size crept up by ~50 MB over the first
    ten batches of the bench's leak case before levelling off. A garbage collection, then
    ``malloc_trim(0)`` (glibc only; elsewhere nothing), returns it.
    """
    import gc

    gc.collect()
    trim_memory()


def trim_memory() -> None:
    """``malloc_trim(0)``: free heap memory back to the operating system (glibc only; a few
    hundredths of a millisecond when there is little to give back)."""
    import ctypes

    trim = _glibc("malloc_trim", ctypes.c_size_t)
    if trim is not None:
        trim(0)


class RunMeter:
    """Wall clock, CPU time and sampled memory of one run (see the module docstring)."""

    def __init__(self, sample_every: float = SAMPLE_EVERY_S) -> None:
        self.started = time.time()
        self._cpu0 = time.process_time()
        self._workers0 = _worker_totals()
        with _workers_lock:
            _workers["peak_rss"] = 0  # per run: the peak of this run's workers
            _workers["processes"] = 0
        self.spans: dict[str, float] = {}
        self._span_start: dict[str, float] = {}
        self.rss_start = rss_bytes()
        self.rss_peak = self.rss_start or 0
        self._gpu_util: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._sample, args=(sample_every,), name="retouch-meter", daemon=True
        )
        self._thread.start()

    def _sample(self, every: float) -> None:
        while not self._stop.wait(every):
            now = rss_bytes()
            if now is not None and now > self.rss_peak:
                self.rss_peak = now
            cuda = cuda_in_use()
            if cuda is not None:
                try:
                    self._gpu_util.append(float(cuda.utilization()))
                except Exception:  # needs the NVML bindings; memory figures still come
                    pass

    def start(self, span: str) -> None:
        self._span_start[span] = time.time()

    def stop(self, span: str) -> None:
        began = self._span_start.pop(span, None)
        if began is not None:
            self.spans[span] = round(self.spans.get(span, 0.0) + time.time() - began, 3)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def report(self, records: list[ImageRecord], *, workers: int) -> dict[str, Any]:
        """The run's figures so far (the meter keeps sampling until :meth:`close`).

        ``phase_seconds`` adds up each image's own time in a phase (work done, across all
        workers); ``spans`` are wall-clock stretches of the flow (phases overlap, so they are
        not a sum of the former).
        """
        seconds = max(time.time() - self.started, 1e-9)
        now = rss_bytes()
        if now is not None:
            self.rss_peak = max(self.rss_peak, now)
        done = [r for r in records if r.ok]
        workers_now = _worker_totals()
        worker_cpu = workers_now["cpu_s"] - self._workers0["cpu_s"]
        phase_seconds = {
            phase: round(sum(float(r.timings.get(phase) or 0.0) for r in records), 3)
            for phase in PHASES
        }
        out: dict[str, Any] = {
            "images": len(records),
            "succeeded": len(done),
            "reused": sum(1 for r in records if r.reused),
            "seconds": round(seconds, 3),
            "images_per_s": round(len(done) / seconds, 3),
            "spans": dict(self.spans),
            "phase_seconds": phase_seconds,
            "model_load_s": round(sum(float(r.timings.get("model_load") or 0) for r in records), 3),
            "model_calls": sum(r.model_calls for r in records),
            "workers": workers,
            "cpu_percent": round(
                100 * (time.process_time() - self._cpu0 + worker_cpu) / seconds, 1
            ),
            "cores": os.cpu_count(),
            "rss_start_mb": _mb(self.rss_start),
            "rss_peak_mb": _mb(self.rss_peak),
            "process_peak_rss_mb": _mb(peak_rss_bytes()),
        }
        if workers_now["processes"]:
            out["worker_processes"] = int(workers_now["processes"])
            out["worker_cpu_s"] = round(worker_cpu, 2)
            out["worker_peak_rss_mb"] = _mb(int(workers_now["peak_rss"]))
        cuda = cuda_in_use()
        if cuda is not None:
            try:
                out["gpu"] = {
                    "name": cuda.get_device_name(),
                    "max_memory_allocated_mb": _mb(cuda.max_memory_allocated()),
                    "memory_reserved_mb": _mb(cuda.memory_reserved()),
                    "utilization_mean_percent": (
                        round(sum(self._gpu_util) / len(self._gpu_util), 1)
                        if self._gpu_util
                        else None
                    ),
                }
            except Exception as exc:  # never fail a run over a figure
                out["gpu"] = {"error": str(exc)}
        return out


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / (1 << 20), 1)


def markdown(perf: dict[str, Any]) -> str:
    """The performance artifact's text."""
    lines = [
        "# Performance",
        "",
        "| images | seconds | images/s | model load s | peak memory MB | CPU % |",
        "|---|---|---|---|---|---|",
        f"| {perf.get('images')} | {perf.get('seconds')} | {perf.get('images_per_s')} | "
        f"{perf.get('model_load_s')} | {perf.get('rss_peak_mb')} | {perf.get('cpu_percent')} |",
        "",
        "| phase | image-seconds (all workers) |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in (perf.get("phase_seconds") or {}).items()]
    if perf.get("spans"):
        lines += ["", "| stretch of the flow | wall seconds |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in perf["spans"].items()]
    gpu = perf.get("gpu")
    if gpu:
        lines += ["", "| GPU | utilisation % (mean) | max allocated MB | reserved MB |"]
        lines += ["|---|---|---|---|"]
        lines += [
            f"| {gpu.get('name')} | {gpu.get('utilization_mean_percent')} | "
            f"{gpu.get('max_memory_allocated_mb')} | {gpu.get('memory_reserved_mb')} |"
        ]
    return "\n".join(lines)
