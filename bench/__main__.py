"""``python -m bench``: retouch against a reference-style baseline loop, in one run.

See bench/README.md for what each case measures and how to read the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import harness, machine, verdicts
from .gpu import line as gpu_line
from .proc import prefect_server
from .sizes import FULL, QUICK, TARGETS

RESULTS = Path(__file__).resolve().parent / "results"

ISOLATION = (
    "every baseline and retouch run is its own process with its own temporary RETOUCH_HOME "
    "(workspace and result cache), so nothing is cached across runs or cases; all runs read "
    "the same generated images and the same model files; RETOUCH_OFFLINE=1; the same torch "
    "thread count (OMP_NUM_THREADS/MKL_NUM_THREADS) for every run; retouch runs use one local "
    "Prefect server started for the bench (PREFECT_API_URL), except coldstart (ephemeral)"
)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark retouch against a baseline written like the reference scripts.",
    )
    ap.add_argument(
        "--cases",
        default=",".join(harness.ALL_CASES),
        help=f"comma-separated subset of {','.join(harness.ALL_CASES)} (default: all)",
    )
    ap.add_argument("--quick", action="store_true", help="tiny sizes, for a fast smoke run")
    ap.add_argument(
        "--gpu",
        action="store_true",
        help=f"the CUDA cases only ({','.join(harness.GPU_CASES)}): ratios and the GPU's "
        "utilisation, under 10 minutes on one GPU; each is skipped with a note without CUDA",
    )
    ap.add_argument(
        "--out", type=Path, help="JSON file (default bench/results/<date>-<machine>.json)"
    )
    ap.add_argument(
        "--threads",
        type=int,
        help="torch threads for every run (default: torch's default on this machine)",
    )
    ap.add_argument("--tmp", type=Path, help="where to put the temporary tree (default: system)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary tree (logs, outputs)")
    ap.add_argument(
        "--diffusion",
        action="store_true",
        help="time one guided Stable Diffusion 1.5 UNet step at 512 px in the restyle case "
        "of a --quick run too (bench.diffusion_step: about 1 minute and 5 GB of memory on a "
        "2-core CPU; the full run always times it)",
    )
    ap.add_argument(
        "--long",
        action="store_true",
        help="the soak case for hours: no batch cap, --soak-minutes (default 240) of batches",
    )
    ap.add_argument(
        "--soak-minutes",
        type=float,
        help="the soak case's time budget in minutes (default 8, --quick 6, --long 240)",
    )
    args = ap.parse_args(argv)
    known = (*harness.ALL_CASES, *harness.GPU_CASES)
    if args.gpu:
        args.cases = ",".join(harness.GPU_CASES)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in known]
    if unknown or not cases:
        ap.error(f"unknown case(s) {unknown}; choose from {', '.join(known)}")
    args.case_list = [c for c in known if c in cases]
    return args


def needs_server(cases: list[str], cuda: bool) -> bool:
    """Whether the run starts the bench's Prefect server: a case that runs ``retouch run``
    (a GPU case only where CUDA is; without it the case is a skip note)."""
    return any(c in harness.SERVER_CASES and (cuda or c not in harness.GPU_CASES) for c in cases)


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _verdict(row: dict[str, Any]) -> str:
    if "skipped" in row:
        return "skipped"
    if "error" in row and "pass" not in row:
        return "ERROR"
    if not row.get("valid", True):
        return "INVALID"
    if "pass" not in row:
        return "-"
    return "pass" if row["pass"] else "FAIL"


def table(rows: list[dict[str, Any]]) -> str:
    """The comparison table, then the lines of scaling, coldstart, load, leak, soak and
    video."""
    head = (
        f"{'case':<12} {'images':>6} {'base s/img':>10} {'rtch s/img':>10} {'base img/s':>10} "
        f"{'rtch img/s':>10} {'ratio':>6} {'ovh ms/img':>10} {'base RSS':>8} {'rtch RSS':>8}  verdict"
    )
    lines = [head, "-" * len(head)]
    notes: list[str] = []
    for r in rows:
        case = r.get("case", "?")
        if "skipped" in r:
            notes.append(f"{case}: skipped: {r['skipped']}")
            continue
        if "error" in r and case not in ("leak", "soak"):
            notes.append(f"{case}: ERROR: {r['error'].strip().splitlines()[-1]}")
            continue
        for side in ("baseline", "retouch"):
            if isinstance(r.get(side), dict) and "gpu" in r[side]:
                notes.append(gpu_line(f"{case} {side}", r[side]["gpu"]))
        if case == "restyle_gpu":
            sd = r.get("diffusion_step_gpu") or {}
            if "seconds_per_step" in sd:
                notes.append(
                    f"restyle_gpu: one guided SD 1.5 UNet step at {sd['side']} px "
                    f"({sd['dtype']} on {sd.get('device', 'cuda')}): "
                    f"{sd['seconds_per_step']:.3f} s"
                )
            else:
                notes.append(f"restyle_gpu: SD step: ERROR: {str(sd.get('error', ''))[-300:]}")
            continue
        if case in (
            "upscale", "upscale_gpu", "faces", "inpaint", "inpaint_gpu", "restyle", "classic",
            "classic_large",
        ):  # fmt: skip
            lines.append(
                f"{case:<12} {r['images']:>6} {r['baseline_s_per_image']:>10.4f} "
                f"{r['retouch_s_per_image']:>10.4f} {r['baseline_images_per_s']:>10.3f} "
                f"{r['retouch_images_per_s']:>10.3f} {r['ratio']:>6.2f} "
                f"{r['overhead_ms_per_image']:>+10.1f} {r['baseline']['peak_rss_mb']:>8.0f} "
                f"{r['retouch']['peak_rss_mb']:>8.0f}  {_verdict(r)}"
            )
            steady = r.get("steady_state")
            if steady:
                notes.append(
                    f"{case} steady state ({steady['extra_images']} extra images): baseline "
                    f"{steady['baseline_s_per_image']:.3f} s/img, retouch "
                    f"{steady['retouch_s_per_image']:.3f} s/img, ratio {steady['ratio']:.2f}; "
                    f"fixed cost per run: baseline {steady['baseline_fixed_s']:.1f} s, retouch "
                    f"{steady['retouch_fixed_s']:.1f} s (whole {r['images']}-image run: ratio "
                    f"{r['ratio']:.2f})"
                )
            if "loop_ratio" in r:
                line = (
                    f"{case}: loops only (model loaded, no start-up): baseline "
                    f"{r['baseline_loop_s']:.2f} s, retouch's op {r['op_loop_s']:.2f} s "
                    f"(peak RSS {r['op_peak_rss_mb']:.0f} MB): ratio {r['loop_ratio']:.2f}"
                )
                px = r.get("network_pixels")
                if px:
                    line += (
                        f"; network pixels: baseline {px['baseline']}, retouch "
                        f"{px['retouch']} ({px['ratio']:.2f}x fewer)"
                    )
                notes.append(line)
            for what, a in (r.get("agreement") or {}).items():
                notes.append(
                    f"{case}: {what.replace('_', ' ')} vs the baseline's outputs: "
                    f"{a['compared']} of {a['images']} images compared, max difference "
                    f"{_fmt(a['max_abs_diff'], 'd')} levels (tolerance "
                    f"{a['tolerance_levels']}): {'agree' if a['agree'] else 'DIFFERENT'}"
                )
            for key in ("diffusion_step", "diffusion_step_gpu"):
                sd = r.get(key)
                if sd and "seconds_per_step" in sd:
                    notes.append(
                        f"{case}: one guided SD 1.5 UNet step at {sd['side']} px "
                        f"({sd['parameters'] / 1e6:.0f}M parameters, {sd['dtype']} on "
                        f"{sd.get('device', 'cpu')}, {sd['torch_threads']} threads): "
                        f"{sd['seconds_per_step']:.2f} s (calls {sd['calls_s']} s; load "
                        f"average {sd['load_avg_at_start']})"
                    )
                elif sd and "skipped" in sd:
                    notes.append(f"{case}: SD step on a GPU: skipped: {sd['skipped']}")
                elif sd:
                    notes.append(f"{case}: SD step: ERROR: {sd['error'].strip()[-300:]}")
            if r.get("repeats"):
                notes.append(
                    f"{case}: {r['repeats']} runs per side in alternating order, wall s: "
                    f"baseline {r['baseline_walls_s']}, retouch {r['retouch_walls_s']} "
                    "(the fastest of each side counts)"
                )
            if r.get("target") and "none" not in r["target"]:
                notes.append(f"{case}: target {r['target']}: {_verdict(r)}")
        elif case == "scaling":
            small, large = r["images"]
            rs = r["runs"]
            notes.append(
                f"scaling: peak RSS {small} images {rs[str(small)]['peak_rss_mb']:.0f} MB, "
                f"{large} images {rs[str(large)]['peak_rss_mb']:.0f} MB: ratio {r['rss_ratio']:.2f} "
                f"(process tree {r['tree_rss_ratio']:.2f}); target {r['target']}: {_verdict(r)}"
            )
        elif case == "coldstart":
            notes.append(
                f"coldstart: first result: baseline {_fmt(r['baseline_first_result_s'], '.2f')} s "
                f"(start-up, model load, first image), retouch "
                f"{_fmt(r['retouch_first_result_s'], '.2f')} s "
                f"[{r['retouch_first_result_measured_by']}; {r['prefect']}]; retouch whole "
                f"1-image run {r['retouch']['wall_s']:.2f} s; {_verdict(r)}"
            )
        elif case == "firstresult":
            rr = r["retouch"]
            parts = []
            for name in ("per_command", "background_cold", "background_warm"):
                run = rr[name]
                parts.append(
                    f"{name.replace('_', ' ')} {run['wall_s']:.2f} s = "
                    f"{_fmt(run['ratio_to_loop'], '.2f')}x (first result "
                    f"{_fmt(run['first_result_event_s'], '.2f')} s, reviewed "
                    f"{_fmt(run.get('first_review_event_s'), '.2f')} s)"
                )
            notes.append(
                f"firstresult: {r['images']} samples, {r['preset']}: loop "
                f"{r['baseline']['wall_s']:.2f} s (first result "
                f"{_fmt(r['baseline_first_result_s'], '.2f')} s); " + "; ".join(parts)
            )
            for what, a in (r.get("agreement") or {}).items():
                notes.append(
                    f"firstresult: {what.replace('_', ' ')} vs the loop's outputs: max difference "
                    f"{_fmt(a['max_abs_diff'], 'd')} levels (tolerance {a['tolerance_levels']}): "
                    f"{'agree' if a['agree'] else 'DIFFERENT'}"
                )
            t = r["targets"]
            notes.append(
                f"firstresult: target {r['target']}: whole run "
                f"{'pass' if t['whole_run'] else 'FAIL'}, first review "
                f"{'-' if t['first_review'] is None else ('pass' if t['first_review'] else 'FAIL')}"
                f": {_verdict(r)}"
            )
        elif case == "load":
            from .loading import lines as load_lines

            notes.extend(load_lines([r]))
        elif case == "soak":
            from .soak import lines as soak_lines

            notes.extend(soak_lines([r]))
        elif case in ("video", "video_gpu"):
            from .video import lines as video_lines

            notes.extend(video_lines([r]))
        elif case == "leak":
            if "series" not in r:
                notes.append(f"leak: ERROR: {r.get('error', '').strip()[-300:]}")
                continue
            rss = [b["rss_mb"] for b in r["series"]]
            line = (
                f"leak: {r['batches']} batches x {r['images']} images ({r['preset']}, one process)"
                f", RSS after each batch (MB): {rss}; max deviation from batch 1 "
                f"{r['rss_max_deviation_pct']:.1f}%"
            )
            if "cuda_max_deviation_pct" in r:
                cuda = [b["cuda_allocated_mb"] for b in r["series"]]
                line += f"; CUDA allocated (MB): {cuda}, max deviation {r['cuda_max_deviation_pct']:.1f}%"
            notes.append(f"{line}; target {r['target']}: {_verdict(r)}")
    return "\n".join(lines + [""] + notes)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    started = time.perf_counter()
    import torch

    threads = args.threads or torch.get_num_threads()
    info = machine.describe(harness.REPO, threads)
    sizes = QUICK if args.quick else FULL
    if args.long:
        sizes = dataclasses.replace(sizes, soak_batches=10**9, soak_minutes=240.0)
    if args.soak_minutes is not None:
        sizes = dataclasses.replace(sizes, soak_minutes=args.soak_minutes)
    root = Path(tempfile.mkdtemp(prefix="retouch-bench-", dir=args.tmp))
    bench = harness.Bench(
        root=root,
        sizes=sizes,
        threads=threads,
        log=_log,
        diffusion=args.diffusion or not args.quick,
        cases=args.case_list,
    )
    result: dict[str, Any] = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "quick": args.quick,
        "long": args.long,
        "cases": args.case_list,
        "machine": info,
        "isolation": ISOLATION,
        "targets": TARGETS,
        "results": [],
    }
    _log(
        f"bench: {', '.join(args.case_list)}{' (quick)' if args.quick else ''}; "
        f"{info['cpu_model']}, {info['cpus_usable']} cpus, torch {info['torch']} "
        f"({threads} threads), GPU: {info['gpu']['name'] if info['gpu'] else 'none'}; tmp {root}"
    )
    try:
        bench.detect_events()
        result["retouch_run_has_events_option"] = bench.events
        t = time.perf_counter()
        result["inputs"] = bench.make_inputs(args.case_list)
        _log(f"setup: images generated in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        result["models"] = bench.install_models(args.case_list)
        if result["models"]:
            _log(
                f"setup: full-size random-weight models built and imported in "
                f"{time.perf_counter() - t:.1f} s: {', '.join(result['models'])}"
            )
        with contextlib.ExitStack() as stack:
            if needs_server(args.case_list, bool(info["gpu"])):
                t = time.perf_counter()
                server = prefect_server(
                    root / "prefect-server", dict(os.environ), root / "server.log"
                )
                bench.server_url = stack.enter_context(server)
                bench.server_home = root / "prefect-server"
                result["prefect_server_start_s"] = round(time.perf_counter() - t, 2)
                _log(
                    f"setup: Prefect server at {bench.server_url} in {result['prefect_server_start_s']} s"
                )
            for case in args.case_list:
                _log(f"case {case}")
                t = time.perf_counter()
                try:
                    rows = getattr(bench, f"case_{case}")()
                except Exception as exc:  # one broken case must not lose the others' numbers
                    rows = [
                        {
                            "case": case,
                            "error": f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}",
                        }
                    ]
                for row in rows:
                    row.setdefault("case_wall_s", round(time.perf_counter() - t, 2))
                result["results"].extend(rows)
    finally:
        if not args.keep:
            verdicts.cleanup(root)
    total = time.perf_counter() - started
    result["total_wall_s"] = round(total, 1)
    result["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if args.keep:
        result["kept_tmp"] = str(root)

    out = args.out
    if out is None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        stem = f"{datetime.now(UTC):%Y-%m-%d}-{machine.slug(info)}{'-quick' if args.quick else ''}"
        out = RESULTS / f"{stem}.json"
        n = 2
        while out.exists():
            out = RESULTS / f"{stem}-{n}.json"
            n += 1
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")

    print()
    print(table(result["results"]))
    print()
    print(f"RSS in MB (largest process of each run's tree). {ISOLATION}.")
    print(f"load average at start {info['load_avg_at_start']}, at end {result['load_avg_at_end']}")
    print(f"total wall time {total:.1f} s; JSON: {out}")
    return 0


def _log(message: str) -> None:
    print(message, flush=True)


if __name__ == "__main__":
    sys.exit(main())
