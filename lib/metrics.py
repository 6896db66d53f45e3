"""Prometheus metrics: what the runs did, read from their progress events, and what this
process holds now (memory, models, GPU).

A :class:`Metrics` owns one ``CollectorRegistry``. Runs reach it as :mod:`retouch.lib.progress`
events, from wherever they run:

* in this process: :meth:`Metrics.subscribe` (the typed events, as they are emitted);
* in another process that writes an events file (``retouch run --events FILE``, which is how
  ``retouch web`` runs each batch): :meth:`Metrics.follow` the file, :meth:`Metrics.poll` it;
* in the flow-run processes of ``retouch serve`` (Prefect starts one per flow run, so a
  listener in the serving process would hear nothing): each flow-run process calls
  :func:`record_to_spool` and writes its events to a folder that :class:`MetricsServer` reads.

Counts per image (succeeded, failed, reused, by preset and kind) and the per-phase timings are
taken from the run's manifest.json when its ``RunDone`` arrives, so they are the manifest's
own figures; the per-phase counters, video frames and steps move live with the events.
The rest is read when scraped: this process's memory (``retouch_process_*``), its children's
(the batches' and flow runs' processes), the model pool, and the GPU when CUDA is in use.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector
from pydantic import ValidationError

from retouch.lib import progress
from retouch.lib.errors import RetouchError
from retouch.lib.perf import cuda_in_use

NAMESPACE = "retouch"
IN_PROCESS = "in-process"
PHASES = ("prepare", "process", "review", "export")
SPOOL_ENV = "RETOUCH_METRICS_SPOOL"
"""Internal: the folder where the flow-run processes of ``retouch serve`` write their events
(set by :class:`MetricsServer` for the processes it starts; not a user setting)."""
POOL_LINE = "retouch-model-pool"
"""The extra line a spooled process writes before its ``RunDone``: its model pool's figures."""

# Seconds: a small image's review takes milliseconds, a video's process phase minutes.
PHASE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
RUN_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)

log = logging.getLogger("retouch.metrics")


@dataclass
class _Stream:
    """What one source of events has said about the runs still going on in it."""

    model_load_from_summary: bool  # the source's model pool is not read any other way
    seen: set[str] = field(default_factory=set)  # inputs prepared or processed by a run now
    failed: set[str] = field(default_factory=set)  # inputs already counted as failed
    frames: dict[str, int] = field(default_factory=dict)  # video -> frames done so far
    started: dict[str, progress.RunStarted] = field(default_factory=dict)  # by run id
    pool: tuple[int, float] | None = None  # the process's model pool, as it last reported


class _Tail:
    """The complete lines appended to a file since the last read."""

    def __init__(self, path: Path, from_end: bool):
        self.path = path
        self.offset = path.stat().st_size if from_end and path.exists() else 0
        self.partial = b""

    def lines(self) -> list[bytes]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        *complete, self.partial = (self.partial + data).split(b"\n")
        return [line for line in complete if line.strip()]


class Metrics:
    """The metrics of one server (``retouch web``, ``retouch serve``), in its own registry.

    ``queue``: for ``retouch web``, a function giving the batches (waiting, running) now.
    """

    def __init__(self, *, queue: Callable[[], tuple[int, int]] | None = None):
        self.registry = CollectorRegistry()
        r = self.registry
        self.images = Counter(
            "retouch_images",
            "Inputs (images and videos) a run finished, by preset, kind and outcome "
            "(succeeded or failed), as the run's manifest.json counts them",
            ["preset", "kind", "outcome"],
            registry=r,
        )
        self.reused = Counter(
            "retouch_images_reused",
            "Succeeded inputs whose result came from the cache (nothing computed again)",
            ["preset", "kind"],
            registry=r,
        )
        self.skipped = Counter(
            "retouch_inputs_skipped",
            "Files a run listed but did not take (not an image, too large, ...)",
            ["preset"],
            registry=r,
        )
        self.runs = Counter(
            "retouch_runs",
            "Runs that ended: done (delivered, maybe with failed images) or error",
            ["outcome"],
            registry=r,
        )
        self.run_seconds = Histogram(
            "retouch_run_duration_seconds",
            "Wall-clock seconds of each finished run",
            ["preset"],
            buckets=RUN_BUCKETS,
            registry=r,
        )
        self.phase_seconds = Histogram(
            "retouch_phase_seconds",
            "Seconds one input spent in one phase (its manifest timings; 0 when reused from "
            "the task cache)",
            ["phase"],
            buckets=PHASE_BUCKETS,
            registry=r,
        )
        self.phase_images = Counter(
            "retouch_phase_images",
            "Inputs through each phase as it happens: ok, reused (from the cache) or failed "
            "(counted once, in the phase it failed in)",
            ["phase", "outcome"],
            registry=r,
        )
        self.frames = Counter(
            "retouch_video_frames", "Video frames through the process phase", registry=r
        )
        self.steps = Counter(
            "retouch_steps", "Recipe steps started on an input, by operation", ["op"], registry=r
        )
        ProcessCollector(namespace=NAMESPACE, registry=r)  # this process's RSS, CPU, files
        r.register(_StateCollector(self, queue))
        self._lock = threading.RLock()
        self._streams: dict[str, _Stream] = {}
        self._tails: dict[str, _Tail] = {}
        # Model loading reported by other processes (spooled pools, web runs' summaries).
        self.reported_loads = 0
        self.reported_load_seconds = 0.0

    # -- sources -----------------------------------------------------------------------------
    def listener(self, key: str = IN_PROCESS) -> progress.Listener:
        """A :mod:`progress` listener feeding this process's events in as the stream ``key``
        (its model loading is this process's pool, read when scraped)."""
        with self._lock:
            self._streams.setdefault(key, _Stream(model_load_from_summary=False))

        def listen(event: progress.Event) -> None:
            self.observe(event, key)

        return listen

    def subscribe(self) -> Callable[[], None]:
        """Count the runs of this process; returns the function that stops it."""
        return progress.subscribe(self.listener())

    def follow(self, key: str, path: Path, *, from_end: bool = True) -> None:
        """Read the events another process appends to ``path`` (from its current end: what is
        there already was counted by whoever read it before), at each :meth:`poll`."""
        with self._lock:
            self._tails[key] = _Tail(path, from_end)
            self._streams[key] = _Stream(model_load_from_summary=True)

    def poll(self, key: str, *, last: bool = False) -> int:
        """Feed the events appended to ``key``'s file since the last poll; ``last``: the writer
        has ended, forget the file afterwards. Returns how many lines were read. Never raises:
        a metric is never worth failing a batch."""
        with self._lock:
            tail = self._tails.get(key)
            if tail is None:
                return 0
            try:
                lines = tail.lines()
            except OSError as exc:
                log.warning("metrics: could not read the events of %s: %s", key, exc)
                lines = []
            for line in lines:
                try:
                    self.feed_line(line, key)
                except Exception:  # one odd line must not lose the ones after it
                    log.exception("metrics: could not count an event of %s", key)
            if last:
                self.forget(key)
            return len(lines)

    def forget(self, key: str) -> None:
        with self._lock:
            self._tails.pop(key, None)
            self._streams.pop(key, None)

    def poll_spool(self, folder: Path) -> None:
        """Follow every events file in ``folder`` (one per flow-run process) and feed what was
        added; a file whose process has ended is read to its end, then removed."""
        for path in sorted(folder.glob("*.jsonl")):
            key = f"spool:{path.name}"
            with self._lock:
                if key not in self._tails:
                    self.follow(key, path, from_end=False)
            self.poll(key)
            if not _alive(path.stem):
                self.poll(key, last=True)
                path.unlink(missing_ok=True)

    def feed_line(self, line: bytes | str, key: str) -> None:
        """One line of an events file: a progress event, a spooled pool report, else nothing
        (``retouch web`` writes its own job markers in the same file)."""
        try:
            data = json.loads(line)
        except ValueError:
            return  # a line cut by a crash
        if not isinstance(data, dict):
            return
        if data.get("event") == POOL_LINE:
            self._pool_report(key, data)
            return
        try:
            event = progress.parse(data)
        except ValidationError:
            return
        self.observe(event, key)

    # -- events ------------------------------------------------------------------------------
    def observe(self, event: progress.Event, key: str = IN_PROCESS) -> None:
        """Count one event of the stream ``key``."""
        with self._lock:
            stream = self._streams.get(key)
            if stream is None:
                stream = self._streams[key] = _Stream(model_load_from_summary=key != IN_PROCESS)
            if isinstance(event, progress.RunStarted):
                stream.started[event.run_id] = event
            elif isinstance(event, progress.ImagePhaseDone):
                self._image(stream, event)
            elif isinstance(event, progress.FramesDone):
                before = stream.frames.get(event.name, 0)
                if event.done > before:
                    self.frames.inc(event.done - before)
                stream.frames[event.name] = event.done
            elif isinstance(event, progress.StepStarted):
                self.steps.labels(event.op).inc()
            elif isinstance(event, progress.RunDone):
                self._run_done(stream, event.summary)
            elif isinstance(event, progress.RunError):
                self.runs.labels("error").inc()
                stream.seen.clear()
                stream.failed.clear()
                stream.frames.clear()
                stream.started.clear()

    def _image(self, stream: _Stream, event: progress.ImagePhaseDone) -> None:
        if event.phase in ("prepare", "process"):  # a regeneration re-exports every image
            stream.seen.add(event.name)
        if event.name in stream.failed:
            return  # a failed input goes on through the phases: it failed once
        if not event.ok:
            stream.failed.add(event.name)
            outcome = "failed"
        else:
            outcome = "reused" if event.reused else "ok"
        self.phase_images.labels(event.phase, outcome).inc()

    def _run_done(self, stream: _Stream, summary: dict[str, Any]) -> None:
        run_id = str(summary.get("run_id") or "")
        started = stream.started.pop(run_id, None)
        manifest = _read_manifest(summary.get("manifest_uri"))
        if manifest is not None:
            preset = str((manifest.get("recipe") or {}).get("name") or "unknown")
            entries = [e for e in manifest.get("images") or [] if isinstance(e, dict)]
            # A regeneration re-delivers every image of the run but re-processed only those
            # it selected (the ones it prepared or processed); a run that listed them all did
            # them all (also those whose events it never sent: a chunk task that failed).
            everything = started is not None and started.total == len(entries)
            for entry in entries:
                name = str(entry.get("name"))
                if not everything and name not in stream.seen:
                    continue
                self._count_entry(preset, entry)
            skipped = started.skipped if started else len(manifest.get("skipped") or [])
        else:  # no manifest to read (a failed delivery): the summary's totals
            preset = "unknown"
            self.images.labels(preset, "image", "succeeded").inc(int(summary.get("succeeded") or 0))
            self.images.labels(preset, "image", "failed").inc(int(summary.get("failed") or 0))
            reused = (summary.get("performance") or {}).get("reused")
            self.reused.labels(preset, "image").inc(int(reused or 0))
            skipped = len(summary.get("skipped") or [])
            entries = []
        self.skipped.labels(preset).inc(skipped)
        self.runs.labels("done").inc()
        seconds = summary.get("seconds")
        if isinstance(seconds, int | float):
            self.run_seconds.labels(preset).observe(float(seconds))
        if stream.model_load_from_summary and stream.pool is None:
            load_s = (summary.get("performance") or {}).get("model_load_s")
            if isinstance(load_s, int | float):
                self.reported_load_seconds += float(load_s)
        for entry in entries:
            name = str(entry.get("name"))
            stream.seen.discard(name)
            stream.failed.discard(name)
            stream.frames.pop(name, None)

    def _count_entry(self, preset: str, entry: dict[str, Any]) -> None:
        kind = _kind(entry)
        ok = entry.get("status") != "failed"
        self.images.labels(preset, kind, "succeeded" if ok else "failed").inc()
        if ok and entry.get("reused"):
            self.reused.labels(preset, kind).inc()
        timings = entry.get("timings") or {}
        for phase in PHASES:
            seconds = timings.get(phase)
            if isinstance(seconds, int | float):
                self.phase_seconds.labels(phase).observe(float(seconds))

    def _pool_report(self, key: str, data: dict[str, Any]) -> None:
        """A spooled process's model pool (cumulative for that process): add what is new."""
        with self._lock:
            stream = self._streams.setdefault(key, _Stream(model_load_from_summary=True))
            loads, seconds = int(data.get("loads") or 0), float(data.get("load_seconds") or 0.0)
            before = stream.pool or (0, 0.0)
            self.reported_loads += max(0, loads - before[0])
            self.reported_load_seconds += max(0.0, seconds - before[1])
            stream.pool = (loads, seconds)

    # -- exposition --------------------------------------------------------------------------
    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The metrics as a scraper asked for them (``Accept``): body and content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class _StateCollector:
    """What is read when scraped: model pool, children's memory, GPU, the web's queue."""

    def __init__(self, metrics: Metrics, queue: Callable[[], tuple[int, int]] | None):
        self.metrics = metrics
        self.queue = queue

    def describe(self) -> list[Metric]:
        return []  # names vary with the machine (GPU): nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        from retouch.lib.models.pool import default_pool

        pool = default_pool()
        # No lock: a RunDone being counted may be reading a manifest; these are plain reads.
        loads = sum(dict(pool.loads).values()) + self.metrics.reported_loads
        seconds = pool.load_seconds + self.metrics.reported_load_seconds
        yield CounterMetricFamily(
            "retouch_model_loads",
            "Models built by a model pool: this process's and its flow runs' (served); a web "
            "batch's process reports only its seconds",
            value=loads,
        )
        yield CounterMetricFamily(
            "retouch_model_load_seconds",
            "Seconds spent building models",
            value=seconds,
        )
        count, rss = _descendants_rss(os.getpid())
        yield GaugeMetricFamily(
            "retouch_children_processes",
            "Processes started under this one (batch runs, flow runs, their workers)",
            value=count,
        )
        yield GaugeMetricFamily(
            "retouch_children_resident_memory_bytes",
            "Resident memory of the processes started under this one, together",
            value=rss,
        )
        if self.queue is not None:
            waiting, running = self.queue()
            batches = GaugeMetricFamily(
                "retouch_web_batches", "Batches of retouch web now, by state", labels=["state"]
            )
            batches.add_metric(["waiting"], waiting)
            batches.add_metric(["running"], running)
            yield batches
        yield from _gpu_metrics()


# -- reading -----------------------------------------------------------------------------------
def _read_manifest(uri: Any) -> dict[str, Any] | None:
    if not isinstance(uri, str) or not uri:
        return None
    from retouch.lib import storage

    try:
        data = json.loads(storage.read_bytes(uri))
    except (RetouchError, OSError, ValueError) as exc:
        log.warning("metrics: could not read the manifest %s: %s", storage.redact(uri), exc)
        return None
    return data if isinstance(data, dict) else None


def _kind(entry: dict[str, Any]) -> str:
    from retouch.lib.sources import is_video_name

    given = (entry.get("input") or {}).get("kind")
    return "video" if given == "video" or is_video_name(str(entry.get("name"))) else "image"


def _alive(pid_text: str) -> bool:
    try:
        os.kill(int(pid_text), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _proc_table() -> Iterable[tuple[int, int, int]]:
    """(pid, parent pid, resident pages) of every process (Linux /proc; nothing elsewhere)."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        # After the command's ")": state, ppid (4th field), ..., rss (24th field).
        yield int(name), int(fields[1]), int(fields[21])


def _descendants_rss(root: int) -> tuple[int, int]:
    """How many processes descend from ``root``, and their resident bytes together."""
    children: dict[int, list[tuple[int, int]]] = {}
    for pid, ppid, pages in _proc_table():
        children.setdefault(ppid, []).append((pid, pages))
    count, total, todo = 0, 0, [root]
    while todo:
        for pid, pages in children.get(todo.pop(), []):
            count += 1
            total += pages
            todo.append(pid)
    return count, total * os.sysconf("SC_PAGE_SIZE")


_nvml_state: dict[str, Any] = {}


def _nvml() -> Any:
    """The NVML bindings (``pynvml``), initialised once, or None when not installed."""
    if "module" not in _nvml_state:
        try:
            import pynvml  # type: ignore[import-not-found]

            pynvml.nvmlInit()
            _nvml_state["module"] = pynvml
        except Exception:  # not installed, no driver: utilisation is left out
            _nvml_state["module"] = None
    return _nvml_state["module"]


def _gpu_metrics() -> Iterator[Metric]:
    nvml = _nvml()
    if nvml is not None:
        util = GaugeMetricFamily(
            "retouch_gpu_utilization_percent", "GPU busy time, percent (NVML)", labels=["gpu"]
        )
        used = GaugeMetricFamily(
            "retouch_gpu_memory_used_bytes", "GPU memory in use by every process", labels=["gpu"]
        )
        total = GaugeMetricFamily(
            "retouch_gpu_memory_total_bytes", "GPU memory in all", labels=["gpu"]
        )
        try:
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                util.add_metric([str(index)], nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
                used.add_metric([str(index)], memory.used)
                total.add_metric([str(index)], memory.total)
        except Exception as exc:  # a driver hiccup must not fail the scrape
            log.warning("metrics: NVML failed: %s", exc)
        else:
            yield from (util, used, total)
    cuda = cuda_in_use()
    if cuda is None:
        return
    try:
        index = cuda.current_device()
        allocated = cuda.memory_allocated(index)
        free, size = cuda.mem_get_info(index)
    except Exception as exc:
        log.warning("metrics: CUDA memory figures failed: %s", exc)
        return
    gpu = [str(index)]
    family = GaugeMetricFamily(
        "retouch_gpu_memory_allocated_bytes",
        "GPU memory held by this process's tensors",
        labels=["gpu"],
    )
    family.add_metric(gpu, allocated)
    yield family
    if nvml is None:  # NVML said it already, for every process
        used = GaugeMetricFamily(
            "retouch_gpu_memory_used_bytes", "GPU memory in use by every process", labels=["gpu"]
        )
        used.add_metric(gpu, size - free)
        total = GaugeMetricFamily(
            "retouch_gpu_memory_total_bytes", "GPU memory in all", labels=["gpu"]
        )
        total.add_metric(gpu, size)
        yield from (used, total)


# -- served flow runs --------------------------------------------------------------------------
class _SpoolWriter:
    """A listener writing every event of this process, one JSON line each, to ``path``."""

    def __init__(self, path: Path):
        self.lock = threading.Lock()
        self.fh = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 (process-long)

    def __call__(self, event: progress.Event) -> None:
        with self.lock:
            if isinstance(event, progress.RunDone):
                # Before the RunDone: the reader then knows this process reports its models.
                from retouch.lib.models.pool import default_pool

                pool = default_pool()
                line = {
                    "event": POOL_LINE,
                    "loads": sum(pool.loads.values()),
                    "load_seconds": round(pool.load_seconds, 4),
                }
                self.fh.write(json.dumps(line) + "\n")
            self.fh.write(progress.to_json(event) + "\n")


_spooling: dict[str, Any] = {}


def record_to_spool(folder: str | Path | None = None) -> bool:
    """Write this process's events where a :class:`MetricsServer` reads them: ``folder``, else
    the one its server put in ``RETOUCH_METRICS_SPOOL``. Once per process; False when there is
    no such folder (metrics are off)."""
    where = folder or os.environ.get(SPOOL_ENV)
    if not where:
        return False
    if "writer" not in _spooling:
        writer = _SpoolWriter(Path(where) / f"{os.getpid()}.jsonl")
        _spooling["writer"] = writer
        progress.subscribe(writer)
    return True


class MetricsServer:
    """``/metrics`` on ``host:port`` (prometheus_client's HTTP server, in threads), counting the
    runs of this process and of the processes it starts (see :func:`record_to_spool`), which
    find the spool folder in their environment."""

    def __init__(self, port: int, host: str = "127.0.0.1", *, poll_s: float = 1.0):
        from prometheus_client import start_http_server

        self.metrics = Metrics()
        self.spool = Path(tempfile.mkdtemp(prefix="retouch-metrics-"))
        try:
            self.httpd, self._http_thread = start_http_server(
                port, addr=host, registry=self.metrics.registry
            )
        except OSError as exc:
            shutil.rmtree(self.spool, ignore_errors=True)
            raise RetouchError(
                f"metrics port {port} on {host}: {exc.strerror or exc}; choose another with "
                "--metrics-port or RETOUCH_METRICS_PORT (0 turns /metrics off)"
            ) from None
        self.port = int(self.httpd.server_port)
        self.host = host
        self._previous_env = os.environ.get(SPOOL_ENV)
        os.environ[SPOOL_ENV] = str(self.spool)  # inherited by the flow-run processes
        self._unsubscribe = self.metrics.subscribe()
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, name="retouch-metrics", daemon=True)
        self._reader.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def _read(self) -> None:
        # Here, not at scrape time: a RunDone reads the run's manifest, which may be remote.
        while not self._stop.wait(self.poll_s):
            self.drain()

    def drain(self) -> None:
        """Feed what the flow-run processes have written since the last time."""
        try:
            self.metrics.poll_spool(self.spool)
        except Exception:
            log.exception("metrics: could not read the spool %s", self.spool)

    def close(self) -> None:
        self._stop.set()
        self._reader.join(timeout=5)
        self._unsubscribe()
        self.httpd.shutdown()
        self.httpd.server_close()
        if os.environ.get(SPOOL_ENV) == str(self.spool):
            if self._previous_env is None:
                os.environ.pop(SPOOL_ENV, None)
            else:
                os.environ[SPOOL_ENV] = self._previous_env
        shutil.rmtree(self.spool, ignore_errors=True)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
