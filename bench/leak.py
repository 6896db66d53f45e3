"""One long-running process calling the enhance flow batch after batch, as a served worker
does, recording its memory after each batch.

Each batch recomputes every image (``refresh``), so the models and the whole pipeline run
every time rather than the result cache. After each batch: ``VmRSS`` from
``/proc/self/status`` and, on CUDA, ``torch.cuda.memory_allocated``.

Run as ``python -m bench.leak --src DIR --dest DIR --preset P --runs N --report FILE``.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path


def vm_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS in /proc/self/status")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.leak")
    ap.add_argument("--src", required=True)
    ap.add_argument("--dest", required=True, type=Path)
    ap.add_argument("--preset", required=True, help="preset name or recipe file")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="override")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--report", required=True, type=Path)
    args = ap.parse_args(argv)

    import torch

    from retouch.flows.enhance import RunOptions, enhance
    from retouch.lib.recipe import apply_overrides, load_preset

    recipe = apply_overrides(load_preset(args.preset), args.overrides)
    cuda = torch.cuda.is_available()
    rows = []
    for i in range(args.runs):
        started = time.perf_counter()
        summary = enhance(
            source=args.src,
            dest=str(args.dest / f"batch-{i:02d}"),
            recipe=recipe,
            options=RunOptions(refresh=True),
        )
        gc.collect()
        row = {
            "batch": i + 1,
            "seconds": round(time.perf_counter() - started, 3),
            "succeeded": summary.succeeded,
            "failed": summary.failed,
            "rss_mb": round(vm_rss_mb(), 1),
        }
        if cuda:
            row["cuda_allocated_mb"] = round(torch.cuda.memory_allocated() / 2**20, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    args.report.write_text(json.dumps({"batches": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
