"""``python -m bench --gpu``: the GPU utilisation sampler (driven through a stand-in
``nvidia-smi`` that prints samples as the real one does) and the run without CUDA."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import gpu

REPO = Path(__file__).resolve().parent.parent


def test_samples_parse_as_nvidia_smi_prints_them():
    assert gpu.parse_line("87, 4123\n") == (87.0, 4123.0)
    assert gpu.parse_line("0, 1") == (0.0, 1.0)
    for junk in ("", "utilization.gpu [%], memory.used [MiB]", "[N/A], [N/A]", "No devices"):
        assert gpu.parse_line(junk) is None


def test_busy_is_read_on_the_window_where_the_gpu_worked():
    # Start-up idle, then work, then idle again while the run delivers.
    samples = (
        [(0.0, 100.0)] * 8 + [(90.0, 3000.0), (70.0, 3200.0), (95.0, 3100.0)] + [(0.0, 900.0)] * 4
    )
    got = gpu.summarise(samples, interval_ms=250)
    assert got["measured"] and got["samples"] == 15
    assert got["active_samples"] == 3 and got["active_s"] == 0.75
    assert got["active_util_mean_pct"] == 85.0
    assert got["util_mean_pct"] == 17.0
    assert got["active_busy_share"] == round(2 / 3, 3)
    assert got["memory_max_mib"] == 3200.0
    assert gpu.busy_enough(got)
    assert not gpu.busy_enough(gpu.summarise([(50.0, 1.0), (60.0, 1.0)]))
    assert not gpu.busy_enough({"measured": False, "why": "nvidia-smi is not on PATH"})
    assert gpu.summarise([])["measured"] is False
    idle = gpu.summarise([(0.0, 5.0)] * 3)
    assert idle["active_samples"] == 0 and not gpu.busy_enough(idle)
    assert "FAIL" in gpu.line("upscale_gpu retouch", idle)


def test_the_sampler_reads_a_running_nvidia_smi(tmp_path, monkeypatch):
    tool = tmp_path / "nvidia-smi"
    log = tmp_path / "argv.txt"
    tool.write_text(
        "#!/bin/sh\n"
        f'echo "$@" > {log}\n'
        'for u in 0 95 90 85 0; do echo "$u, 2048"; sleep 0.05; done\n'
        "sleep 30\n"
    )
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with gpu.GpuSampler(interval_ms=50) as sampler:
        deadline = time.monotonic() + 10
        while len(sampler.samples) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
    got = sampler.summary()
    assert got["samples"] == 5 and got["active_samples"] == 3
    assert got["active_util_mean_pct"] == 90.0
    argv = log.read_text()
    assert "--query-gpu=utilization.gpu,memory.used" in argv and "-lms=50" in argv
    # Stopped with the block: nothing of it is left running.
    assert sampler._proc is not None and sampler._proc.poll() is not None


def test_without_nvidia_smi_the_summary_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with gpu.GpuSampler() as sampler:
        pass
    assert sampler.summary() == {"measured": False, "why": "nvidia-smi is not on PATH"}


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="the GPU run itself is the bench's"
)
def test_bench_gpu_without_cuda_skips_each_case_with_a_note(tmp_path):
    out = tmp_path / "gpu.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--gpu", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["cases"] == ["upscale_gpu", "video_gpu", "inpaint_gpu", "restyle_gpu"]
    rows = {r["case"]: r for r in result["results"]}
    assert set(rows) == set(result["cases"])
    for case, row in rows.items():
        assert "no CUDA device" in row["skipped"]
        assert f"{case}: skipped: no CUDA device" in done.stdout
    assert "prefect_server_start_s" not in result  # nothing to run: no server started
