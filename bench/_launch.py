"""Start one command, wait for it, write its wall time and peak memory as JSON.

Why a separate small process: on Linux a child's ``ru_maxrss`` starts from the high-water
mark of the process that forked it (the kernel carries the old address space's peak across
``exec``), so a command started straight from the bench, which holds models and torch,
would report the bench's own size. This launcher is a bare interpreter (``python -S``,
standard library only), so what it reports is the command's own peak: ``ru_maxrss`` from
``wait4``, which on Linux also covers every descendant the command waited for.

Usage: ``python -S bench/_launch.py REPORT.json -- ARGV...`` (exit code: the command's).
"""

import json
import os
import subprocess
import sys
import time


def main() -> int:
    report, sep, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
    if sep != "--" or not argv:
        sys.stderr.write("usage: _launch.py REPORT.json -- ARGV...\n")
        return 2
    spawn_epoch = time.time()
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    with open(report, "w") as fh:
        json.dump(
            {
                "spawn_epoch": spawn_epoch,
                "wall_s": wall,
                "returncode": proc.returncode,
                "maxrss_kb": usage.ru_maxrss,
            },
            fh,
        )
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
