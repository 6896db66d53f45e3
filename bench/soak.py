"""The ``soak`` case: one ``retouch serve`` process kept busy with many small batches
through a real Prefect server, sampled as it goes, as a 24/7 worker would be.

The driver (this module, run as ``python -m bench.soak``) starts ``retouch serve`` (the
served ``enhance`` deployment, polling every second), then queues one run of 4 tiny images
at a time on it (``retouch submit --served`` does the same) with ``refresh`` (every image is
computed again, not taken from the result cache) and waits for the run to end. It stops at
``--batches`` or when ``--minutes`` are spent. At batch 1, every ``--every``-th batch and
the last: the serving process's RSS (``VmRSS``), open file descriptors, threads and live
child processes (taken once the run's flow-run process has gone, up to 15 s), the RSS of
its whole tree and, during that batch, the peak RSS of the tree with the run's own process
(Prefect starts each served run as a process of its own), the Prefect server's database
size (``prefect.db`` with its WAL) and the API latency (median of 5 ``read_flow_run``
calls). At the end ``retouch serve`` gets SIGTERM; its exit status, the time it took and
the processes it left are recorded.

Run as ``python -m bench.soak --src DIR --dest-root DIR --preset P --batches N --minutes M
--every K --server-home DIR --report FILE`` with ``PREFECT_API_URL`` set.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .proc import _children, tree_rss_kb, venv_tool

DEPLOYMENT = "retouch-enhance/enhance-served"
BATCH_TIMEOUT_S = 600
LATENCY_CALLS = 5


def _status(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "Threads"):
            out[key] = int(value.split()[0])
    return out


def descendants(pid: int) -> list[int]:
    found, todo = [], _children(pid)
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(_children(child))
    return found


def _db_mb(server_home: Path) -> float:
    return sum(p.stat().st_size for p in server_home.glob("prefect.db*") if p.is_file()) / 2**20


def _latency_ms(client: Any, run_id: Any) -> float:
    calls = []
    for _ in range(LATENCY_CALLS):
        t = time.perf_counter()
        client.read_flow_run(run_id)
        calls.append(1000 * (time.perf_counter() - t))
    return round(statistics.median(calls), 2)


def sample(pid: int, batch: int, client: Any, run_id: Any, server_home: Path) -> dict[str, Any]:
    """The serving process as it stands after ``batch`` (its run's process gone, up to 15 s)."""
    end = time.monotonic() + 15
    while descendants(pid) and time.monotonic() < end:
        time.sleep(0.1)
    status = _status(pid)
    return {
        "batch": batch,
        "rss_mb": round(status["VmRSS"] / 1024, 1),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": status["Threads"],
        "children": len(descendants(pid)),
        "tree_rss_mb": round(tree_rss_kb(pid) / 1024, 1),
        "db_mb": round(_db_mb(server_home), 2),
        "api_ms": _latency_ms(client, run_id),
    }


def _wait_served(client: Any, serve: subprocess.Popen[bytes], log: Path) -> float:
    started = time.monotonic()
    while True:
        if serve.poll() is not None:
            raise RuntimeError(
                f"retouch serve exited with {serve.returncode}:\n"
                + log.read_text(errors="replace")[-2000:]
            )
        with contextlib.suppress(Exception):
            if not client.read_deployment_by_name(DEPLOYMENT).paused:
                return time.monotonic() - started
        if time.monotonic() - started > 180:
            raise RuntimeError(f"{DEPLOYMENT} was not served within 180 s; see {log}")
        time.sleep(0.5)


def _wait_run(client: Any, run_id: Any, serve: subprocess.Popen[bytes]) -> tuple[str, float]:
    """The run's final state, and the largest RSS of the serving tree (the serving process
    and the run's own process) seen while waiting, in MB."""
    end = time.monotonic() + BATCH_TIMEOUT_S
    peak = 0
    while time.monotonic() < end:
        peak = max(peak, tree_rss_kb(serve.pid))
        state = client.read_flow_run(run_id).state
        if state is not None and state.is_final():
            return state.name or state.type.value, peak / 1024
        if serve.poll() is not None:
            return f"serve exited ({serve.returncode})", peak / 1024
        time.sleep(0.2)
    return f"not finished after {BATCH_TIMEOUT_S} s", peak / 1024


def _delivered(dest: Path) -> tuple[int, int]:
    try:
        summary = json.loads((dest / "manifest.json").read_text())["summary"]
    except (OSError, ValueError, KeyError):
        return 0, 0
    return int(summary.get("succeeded", 0)), int(summary.get("failed", 0))


def stop(serve: subprocess.Popen[bytes]) -> dict[str, Any]:
    """SIGTERM to ``retouch serve`` (as a service manager stops it): exit status, seconds,
    and the processes below it that outlived it."""
    below = descendants(serve.pid)
    t = time.perf_counter()
    serve.send_signal(signal.SIGTERM)
    try:
        serve.wait(timeout=120)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(serve.pid, signal.SIGKILL)
        serve.wait()
    seconds = time.perf_counter() - t
    time.sleep(0.5)
    left = [p for p in below if Path(f"/proc/{p}").exists()]
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return {
        "signal": "SIGTERM",
        "exit_code": serve.returncode,
        "seconds": round(seconds, 2),
        "left_running": len(left),
    }


def case(bench: Any) -> list[dict[str, Any]]:
    """The ``soak`` row: this driver in its own process (``Bench.env``, the bench's Prefect
    server), its report and the verdict."""
    from .sizes import RECIPES, TARGETS
    from .verdicts import soak_verdict

    s = bench.sizes
    preset, overrides = RECIPES["soak"]
    run_dir = bench.root / "runs" / "soak"
    report = run_dir / "soak.json"
    argv = [sys.executable, "-m", "bench.soak", "--src", str(bench.inputs["soak"])]
    argv += ["--dest-root", str(run_dir / "out"), "--preset", preset]
    for item in overrides:
        argv += ["--set", item]
    argv += ["--batches", str(s.soak_batches), "--minutes", str(s.soak_minutes)]
    argv += ["--every", str(s.soak_every), "--server-home", str(bench.server_home)]
    argv += ["--serve-log", str(run_dir / "serve.log"), "--report", str(report)]
    bench.log(
        f"  soak      up to {s.soak_batches} batches of {s.soak_images} images on one "
        f"`retouch serve`, at most {s.soak_minutes:g} min ..."
    )
    m = bench.measure(argv, run_dir, server=True, timeout_s=60 * s.soak_minutes + 900)
    result: dict[str, Any] = {
        "case": "soak",
        "preset": preset,
        "overrides": overrides,
        "images": s.soak_images,
        "every": s.soak_every,
        "budget": {"batches": s.soak_batches, "minutes": s.soak_minutes},
        "process": m.as_json(),
        "target": TARGETS["soak"],
    }
    data = json.loads(report.read_text()) if report.is_file() else {}
    if m.returncode != 0 or not data.get("samples"):
        result.update({"valid": False, "pass": False, "error": m.log[-1500:], **data})
        return [result]
    rows = data.pop("batches")
    result.update(data)
    result["batches"] = len(rows)
    result["batch_seconds"] = {
        "median": round(statistics.median(r["seconds"] for r in rows), 2),
        "max": max(r["seconds"] for r in rows),
    }
    result["failed_rows"] = [r for r in rows if r["state"] != "Completed" or r["failed"]]
    result["verdict"] = soak_verdict(data["samples"], rows, s.soak_every)
    result["valid"] = True
    result["pass"] = result["verdict"]["pass"]
    bench.log(
        f"            {len(rows)} batches in {data.get('wall_s')} s, serve RSS (MB): "
        f"{[x['rss_mb'] for x in data['samples']]}"
    )
    return [result]


def lines(rows: list[dict[str, Any]]) -> list[str]:
    """The soak case's lines under the bench's table."""
    out = []
    for r in rows:
        if "verdict" not in r:
            out.append(f"soak: ERROR: {str(r.get('error', '')).strip()[-300:]}")
            continue
        v = r["verdict"]

        def series(key: str, samples: list[dict[str, Any]] = r["samples"]) -> str:
            return "/".join(str(x[key]) for x in samples)

        flat = ", ".join(
            f"{k} {v[k]['base']}->{v[k]['last']} ({v[k]['deviation_pct']:+.1f}%): "
            f"{'pass' if v[k]['flat'] else 'FAIL'}"
            for k in ("rss_mb", "fds", "threads", "children")
        )
        api = v["api_ms"]
        stop = r.get("stop", {})
        out += [
            f"soak: {r['batches']} batches x {r['images']} images ({r['preset']}, refresh) on "
            f"one `retouch serve` in {r.get('wall_s')} s (median {r['batch_seconds']['median']}"
            f" s per batch, max {r['batch_seconds']['max']} s); samples at batches "
            f"{series('batch')}",
            f"soak: serve RSS MB {series('rss_mb')}; fds {series('fds')}; threads "
            f"{series('threads')}; children {series('children')}; tree RSS MB "
            f"{series('tree_rss_mb')}; serve + run process peak MB "
            f"{series('run_peak_tree_rss_mb')}; Prefect DB MB {series('db_mb')} "
            f"({v['db_mb_per_batch'] * 1024:.1f} KB per batch); API ms {series('api_ms')}",
            f"soak: batch {v['last_batch']} vs batch {v['base_batch']}: {flat}; API latency "
            f"median of last {api['samples_each']} {api['last_median']} ms vs first "
            f"{api['first_median']} ms (x{api['ratio']}): {'pass' if api['flat'] else 'FAIL'}; "
            f"failed batches {len(v['failed_batches'])}: "
            f"{'pass' if not v['failed_batches'] else 'FAIL'}",
            f"soak: SIGTERM to serve at the end: exit {stop.get('exit_code')} in "
            f"{stop.get('seconds')} s, {stop.get('left_running')} processes left; target "
            f"{r['target']}: {'pass' if r['pass'] else 'FAIL'}",
        ]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.soak")
    ap.add_argument("--src", required=True, type=Path)
    ap.add_argument("--dest-root", required=True, type=Path)
    ap.add_argument("--preset", required=True)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--batches", type=int, default=500)
    ap.add_argument("--minutes", type=float, default=8.0)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--server-home", required=True, type=Path)
    ap.add_argument("--serve-log", type=Path)
    ap.add_argument("--report", required=True, type=Path)
    args = ap.parse_args(argv)
    if not os.environ.get("PREFECT_API_URL"):
        raise SystemExit("bench.soak: PREFECT_API_URL must name the Prefect server")

    from prefect import get_client

    from retouch.deployments.deploy import submit

    images = len([p for p in args.src.iterdir() if p.is_file()])
    log = args.serve_log or args.report.with_name("serve.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}  # a queued run starts within 1 s
    with log.open("wb") as out:
        serve = subprocess.Popen(
            [venv_tool("retouch"), "serve"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    rows: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    report: dict[str, Any] = {"images_per_batch": images, "batches": rows, "samples": samples}
    try:
        with get_client(sync_client=True) as client:
            report["serve_ready_s"] = round(_wait_served(client, serve, log), 2)
            started = time.monotonic()
            deadline = started + 60 * args.minutes
            run_id = None
            for n in range(1, args.batches + 1):
                if time.monotonic() > deadline:
                    break
                dest = args.dest_root / f"batch-{n:04d}"
                params = {
                    "source": str(args.src),
                    "dest": str(dest),
                    "preset": args.preset,
                    "overrides": args.overrides,
                    "options": {"refresh": True},  # the pipeline runs, not the result cache
                }
                t = time.perf_counter()
                run_id = submit(DEPLOYMENT, params)
                state, peak = _wait_run(client, run_id, serve)
                ok, failed = _delivered(dest)
                rows.append(
                    {
                        "batch": n,
                        "state": state,
                        "seconds": round(time.perf_counter() - t, 2),
                        "succeeded": ok,
                        "failed": failed,
                        "peak_tree_rss_mb": round(peak, 1),
                    }
                )
                shutil.rmtree(dest, ignore_errors=True)  # disk stays flat; the DB grows
                if state != "Completed" and serve.poll() is not None:
                    break
                if n == 1 or n % args.every == 0:
                    samples.append(sample(serve.pid, n, client, run_id, args.server_home))
                    samples[-1]["run_peak_tree_rss_mb"] = round(peak, 1)
                    print(json.dumps(samples[-1]), flush=True)
            if rows and (not samples or samples[-1]["batch"] != rows[-1]["batch"]):
                if serve.poll() is None and run_id is not None:
                    samples.append(
                        sample(serve.pid, rows[-1]["batch"], client, run_id, args.server_home)
                    )
                    samples[-1]["run_peak_tree_rss_mb"] = rows[-1]["peak_tree_rss_mb"]
            report["wall_s"] = round(time.monotonic() - started, 1)
    finally:
        report["stop"] = stop(serve) if serve.poll() is None else {"exit_code": serve.returncode}
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
