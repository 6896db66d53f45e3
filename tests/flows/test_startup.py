"""What a command-line run costs before and after its work: no heartbeat thread to join, no
interpreter teardown, model libraries imported while Prefect starts, torch left alone by
recipes that do not use it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from retouch.flows.runtime import ad_hoc_run


def _python(code: str, tmp_path, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        **kwargs,
    )


def test_ad_hoc_runs_send_no_heartbeat_unless_the_user_asked(monkeypatch):
    from prefect.settings import get_current_settings

    monkeypatch.delenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", raising=False)
    monkeypatch.delenv("PREFECT_RUNNER_HEARTBEAT_FREQUENCY", raising=False)
    default = get_current_settings().flows.heartbeat_frequency
    assert default is not None
    with ad_hoc_run():
        assert get_current_settings().flows.heartbeat_frequency is None
    assert get_current_settings().flows.heartbeat_frequency == default

    monkeypatch.setenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "60")
    with ad_hoc_run():  # the user's setting is left to Prefect: nothing is overridden
        assert get_current_settings().flows.heartbeat_frequency == default


def test_memory_is_given_back_after_a_run_except_in_a_command_line_process(monkeypatch):
    from retouch.flows import runtime
    from retouch.lib import perf

    calls: list[int] = []
    monkeypatch.setattr(perf, "release_memory", lambda: calls.append(1))
    runtime.release_memory_after_run()  # a served worker: batch after batch in one process
    assert calls == [1]
    with ad_hoc_run():  # the process exits after the run: nothing to give back
        runtime.release_memory_after_run()
        with ad_hoc_run():
            pass
        runtime.release_memory_after_run()
    assert calls == [1]
    runtime.release_memory_after_run()
    assert calls == [1, 1]


_COUNT_ARENAS = """
    import ctypes, ctypes.util, os, sys, tempfile, threading
    if os.environ["ARENAS_AFTER"] == "flows":
        import retouch.flows
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.fdopen.restype = ctypes.c_void_p
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    together = threading.Barrier(8)

    def work():
        libc.malloc(4096)  # a thread's first malloc gets it an arena
        together.wait()  # all alive at once: no arena is handed back for reuse

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with tempfile.TemporaryFile() as f:
        stream = libc.fdopen(os.dup(f.fileno()), b"w")
        libc.malloc_info(0, stream)
        libc.fclose(stream)
        f.seek(0)
        print(f.read().decode().count("<heap nr="))
"""


def _arenas(mode: str, tmp_path, **env: str) -> int:
    proc = _python(_COUNT_ARENAS, tmp_path, env={**os.environ, "ARENAS_AFTER": mode, **env})
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc arenas")
def test_a_process_running_flows_caps_its_malloc_arenas(tmp_path, monkeypatch):
    """Importing retouch.flows caps glibc's arenas (per-thread heaps whose freed memory other
    threads cannot reuse: a long-running worker's resident size crept up batch after batch);
    a user's MALLOC_ARENA_MAX wins."""
    from retouch.lib.perf import MALLOC_ARENAS

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert _arenas("flows", tmp_path) <= MALLOC_ARENAS < _arenas("plain", tmp_path)
    assert _arenas("flows", tmp_path, MALLOC_ARENA_MAX="4") == 4


@pytest.mark.parametrize(
    ("code", "status", "stderr"), [(2, 2, ""), (None, 0, ""), ("bad things", 1, "bad things")]
)
def test_exit_now_runs_exit_handlers_then_exits_with_the_code(tmp_path, code, status, stderr):
    done = tmp_path / "handler-ran"
    proc = _python(
        f"""
        import atexit, threading, time
        import torch  # with torch loaded the teardown is skipped
        from retouch.cli.main import _exit_now

        def late():
            time.sleep(0.3)
            open({str(tmp_path / "thread-done")!r}, "w").write("yes")

        threading.Thread(target=late).start()  # not a daemon: waited for, as Python would
        atexit.register(lambda: open({str(done)!r}, "w").write("yes"))
        print("buffered output", end="")
        _exit_now({code!r})
        """,
        tmp_path,
    )
    assert proc.returncode == status, proc.stderr
    assert proc.stdout == "buffered output"
    assert stderr in proc.stderr
    assert done.read_text() == "yes"
    assert (tmp_path / "thread-done").read_text() == "yes"


def test_a_classic_recipe_never_imports_torch(tmp_path):
    proc = _python(
        """
        import sys
        from retouch.lib.models.device import run_device
        from retouch.lib.recipe import load_preset
        import retouch.flows.enhance, retouch.lib.perf
        print(run_device(load_preset("web-ready"), "auto"), "torch" in sys.modules)
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["cpu", "False"]


def test_device_checks():
    from retouch.lib.errors import ModelError
    from retouch.lib.models.device import device_for, run_device
    from retouch.lib.recipe import load_preset

    assert run_device(load_preset("upscale-x4"), "cpu") == "cpu"
    assert run_device(load_preset("web-ready"), "cuda") == "cpu"  # nothing runs on a device
    with pytest.raises(ModelError, match="unknown device 'gpu'"):
        run_device(load_preset("web-ready"), "gpu")
    with pytest.raises(ModelError, match="unknown device"):
        device_for("tpu")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="CUDA is not available"):
            run_device(load_preset("upscale-x4"), "cuda")
        assert device_for("auto") == "cpu"


def test_preload_imports_the_model_libraries_in_the_background(tmp_path):
    proc = _python(
        """
        import sys
        from retouch.lib.models.compat import preload
        assert preload([]) is None
        thread = preload(["realesrgan-x4plus"])
        thread.join(300)
        print(thread.daemon, "torch" in sys.modules, "realesrgan" in sys.modules,
              "basicsr.data.degradations" in sys.modules, "scipy.stats" in sys.modules,
              "torch._dynamo" in sys.modules, "facexlib" in sys.modules)
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    # The packages' training code (datasets and their scipy.stats), torchvision's model zoo
    # (and the torch._dynamo its ops import) and the face helpers are left for later.
    assert proc.stdout.split() == ["True", "True", "True", "False", "False", "False", "False"]


def test_exit_now_stops_a_worker_pool_left_running(tmp_path):
    """A pool of worker processes still open at exit (library use outside a flow) is shut
    down first: its manager thread would otherwise be waited for forever."""
    proc = _python(
        """
        import os
        import torch
        from retouch.cli.main import _exit_now
        from retouch.lib.phases import workers

        assert workers._get_pool(2).submit(os.getpid).result(60) != os.getpid()
        _exit_now(0)
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
