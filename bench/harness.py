"""The cases: the same inputs and models through the baseline loop and through ``retouch run``.

Every run (baseline or retouch) is its own process with its own temporary ``RETOUCH_HOME``
(so its own workspace and result cache: nothing is reused across runs or cases), the shared
bench model dir, ``RETOUCH_OFFLINE=1`` and the same torch thread count (``OMP_NUM_THREADS``,
``MKL_NUM_THREADS``). retouch runs talk to one local Prefect server started for the whole
bench, as a user with a running server would, except the cold-start case, which measures
the ephemeral (embedded) server path.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import images, models
from .gpu import busy_enough
from .proc import Measured, run_measured, venv_tool
from .sizes import JPEG_TOLERANCE, RECIPES, TARGETS, Sizes
from .verdicts import (
    check_retouch,
    cuda_available,
    files_in,
    inpaint_pixels,
    leak_verdict,
    outputs_agree,
    steady_state,
    strip_detail,
    throughput,
)

REPO = Path(__file__).resolve().parent.parent


def gpu_of(row: dict[str, Any]) -> dict[str, Any] | None:
    """The GPU utilisation of a comparison row's retouch run (None when not sampled)."""
    gpu: dict[str, Any] | None = row.get("retouch", {}).get("gpu")
    return gpu


ALL_CASES = (
    "upscale", "faces", "inpaint", "restyle", "video", "classic", "classic_large", "scaling",
    "coldstart", "firstresult", "leak", "load", "soak",
)  # fmt: skip
GPU_CASES = ("upscale_gpu", "video_gpu", "inpaint_gpu", "restyle_gpu")
"""``python -m bench --gpu``: the CUDA cases alone (each skipped with a note without CUDA);
the full run also holds upscale_gpu and video_gpu, after their CPU cases."""
SERVER_CASES = (
    "upscale", "faces", "inpaint", "restyle", "video", "classic", "classic_large", "scaling",
    "leak", "soak", "upscale_gpu", "video_gpu", "inpaint_gpu",
)  # fmt: skip
NO_CUDA = "no CUDA device here (torch.cuda.is_available() is False)"
RUN_TIMEOUT_S = 1500
BACKGROUND_IDLE_S = 120
"""How long the firstresult case's background server waits unused (it is stopped at the
case's end; this only bounds a server a crashed bench leaves behind)."""


@dataclass
class Bench:
    root: Path
    sizes: Sizes
    threads: int
    log: Callable[[str], None] = print
    server_url: str | None = None
    server_home: Path | None = None
    """The bench's Prefect server's PREFECT_HOME (its database, for the soak case)."""
    events: bool = False
    diffusion: bool = False
    """restyle also times one Stable Diffusion 1.5 step (``bench.diffusion_step``): the full
    run always, a ``--quick`` one with ``--diffusion``."""
    model_info: dict[str, Any] = field(default_factory=dict)
    cases: list[str] = field(default_factory=list)
    """The cases of this run (a GPU case named on its own is not repeated by its CPU case)."""
    inputs: dict[str, Path] = field(default_factory=dict)

    @property
    def model_dir(self) -> Path:
        return self.root / "models"

    # -- setup ------------------------------------------------------------------------------

    def detect_events(self) -> bool:
        """Whether this retouch's ``run`` takes ``--events FILE`` (feature-detected)."""
        import subprocess

        env = {**os.environ, "COLUMNS": "300"}
        out = subprocess.run(
            [venv_tool("retouch"), "run", "--help"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.events = "--events" in out.stdout
        return self.events

    def make_inputs(self, cases: list[str]) -> dict[str, Any]:
        s, data = self.sizes, self.root / "inputs"
        made: dict[str, Any] = {}
        if "upscale" in cases or "coldstart" in cases:
            paths = images.write_set(data / "upscale", len(s.upscale), s.upscale, ext="png", seed=1)
            self.inputs["upscale"] = data / "upscale"
            if "upscale" in cases and s.upscale_steady > 1:
                more = s.upscale * s.upscale_steady
                images.write_set(data / "upscale-more", len(more), more, ext="png", seed=5)
                self.inputs["upscale_more"] = data / "upscale-more"
                made["upscale_more"] = {"count": len(more), "sizes": s.upscale, "format": "png"}
            self.inputs["coldstart"] = images.link_subset(paths[:1], data / "coldstart")
            self.inputs["upscale-warmup"] = self.inputs["coldstart"]
            made["upscale"] = {"count": len(paths), "sizes": s.upscale, "format": "png"}
            made["coldstart"] = {"count": 1, "sizes": s.upscale[:1], "format": "png"}
        if "inpaint" in cases:
            count, size = s.inpaint
            paths = images.write_set(data / "inpaint", count, [size], ext="png", seed=6)
            images.write_masks(data / "inpaint-masks", paths, size, regions=2, seed=7)
            self.inputs["inpaint"] = data / "inpaint"
            self.inputs["inpaint_masks"] = data / "inpaint-masks"
            made["inpaint"] = {
                "count": count,
                "sizes": [size],
                "format": "png",
                "masks": "2 ellipses per image, 30-70 px, white on black PNG",
            }
        if "restyle" in cases:
            count, sizes = s.restyle
            images.write_set(data / "restyle", count, sizes, ext="png", seed=8)
            self.inputs["restyle"] = data / "restyle"
            made["restyle"] = {"count": count, "sizes": sizes, "format": "png"}
        if "faces" in cases:
            images.write_set(data / "faces", len(s.faces), s.faces, ext="png", seed=2)
            self.inputs["faces"] = data / "faces"
            made["faces"] = {"count": len(s.faces), "sizes": s.faces, "format": "png"}
        if any(c in cases for c in ("classic", "scaling", "leak", "soak")):
            count = max(
                s.classic_count if "classic" in cases else 0,
                s.scaling[1] if "scaling" in cases else 0,
                s.leak_images,
                s.soak_images,
            )
            paths = images.write_set(
                data / "classic", count, [s.classic_size], ext="jpg", seed=3, prefix="photo"
            )
            self.inputs["classic"] = data / "classic"
            for n in s.scaling:
                self.inputs[f"scaling-{n}"] = images.link_subset(paths[:n], data / f"scaling-{n}")
            self.inputs["leak"] = images.link_subset(paths[: s.leak_images], data / "leak")
            self.inputs["soak"] = images.link_subset(paths[: s.soak_images], data / "soak")
            made["classic"] = {"count": count, "sizes": [s.classic_size], "format": "jpg q90"}
        if "classic_large" in cases:
            count, size = s.classic_large
            images.write_large_set(data / "classic-large", count, size, seed=16)
            self.inputs["classic_large"] = data / "classic-large"
            made["classic_large"] = {"count": count, "sizes": [size], "format": "jpg q90"}
        if "firstresult" in cases:
            self.inputs["firstresult"] = images.link_subset(
                sorted(p for p in (REPO / "samples").iterdir() if p.is_file()),
                data / "firstresult",
            )
            made["firstresult"] = {"count": len(files_in(self.inputs["firstresult"])),
                                   "what": "the bundled samples/"}  # fmt: skip
        if any(c in cases for c in ("video", "video_gpu")):
            from . import video

            made.update(video.make_inputs(self, data, cpu="video" in cases))
        if any(c in cases for c in ("upscale", "upscale_gpu")) and cuda_available():
            images.write_set(
                data / "upscale-gpu", s.gpu_images, [s.gpu_size], ext="png", seed=4, prefix="hd"
            )
            self.inputs["upscale_gpu"] = data / "upscale-gpu"
            made["upscale_gpu"] = {"count": s.gpu_images, "sizes": [s.gpu_size], "format": "png"}
        if "inpaint_gpu" in cases and cuda_available():
            paths = images.write_set(
                data / "inpaint-gpu", s.gpu_images, [s.gpu_size], ext="png", seed=14, prefix="hd"
            )
            images.write_masks(data / "inpaint-gpu-masks", paths, s.gpu_size, regions=2, seed=15)
            self.inputs["inpaint_gpu"] = data / "inpaint-gpu"
            self.inputs["inpaint_gpu_masks"] = data / "inpaint-gpu-masks"
            made["inpaint_gpu"] = {
                "count": s.gpu_images,
                "sizes": [s.gpu_size],
                "format": "png",
                "masks": "2 ellipses per image, white on black PNG",
            }
        return made

    def install_models(self, cases: list[str]) -> dict[str, Any]:
        names = models.needed(cases)
        gpu_video = any(c in cases for c in ("video", "video_gpu"))
        if gpu_video and cuda_available() and models.UPSCALE_MODEL not in names:
            names.append(models.UPSCALE_MODEL)  # video_gpu (the CPU case's model ships)
        if names:
            self.model_info = models.install(self.model_dir, self.root / "staging", names)
        return self.model_info

    # -- one run ----------------------------------------------------------------------------

    def env(
        self,
        run_dir: Path,
        *,
        server: bool,
        device: str = "cpu",
        background: Path | None = None,
    ) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("RETOUCH_", "PREFECT_")) and k not in ("OMP_NUM_THREADS",)
        }
        env.update(
            {
                "RETOUCH_HOME": str(run_dir / "home"),
                "RETOUCH_MODEL_DIR": str(self.model_dir),
                "RETOUCH_OFFLINE": "1",
                "RETOUCH_DEVICE": device,
                "OMP_NUM_THREADS": str(self.threads),
                "MKL_NUM_THREADS": str(self.threads),
                "PREFECT_HOME": str(run_dir / "prefect"),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PYTHONPATH": str(REPO),
            }
        )
        if server:
            if self.server_url is None:
                raise RuntimeError("no Prefect server is running for this case")
            env["PREFECT_API_URL"] = self.server_url
        elif background is not None:
            # The shared background server of a PREFECT_HOME the runs have in common: the
            # first command starts it, later ones use it (the firstresult case).
            env["PREFECT_HOME"] = str(background)
            env["RETOUCH_SERVER_IDLE_S"] = str(BACKGROUND_IDLE_S)
        else:
            # The coldstart case measures a command that starts its own server and stops it
            # at exit (no shared background server left behind in the run's PREFECT_HOME).
            env["RETOUCH_SERVER_IDLE_S"] = "0"
        return env

    def measure(
        self,
        argv: list[str],
        run_dir: Path,
        *,
        server: bool,
        device: str = "cpu",
        events: Path | None = None,
        timeout_s: float = RUN_TIMEOUT_S,
        background: Path | None = None,
    ) -> Measured:
        """``argv`` run from the repository root in the bench's environment for ``run_dir``
        (its log in ``run_dir/log.txt``), measured: wall time, peak RSS, events."""

        def run() -> Measured:
            return run_measured(
                argv,
                env=self.env(run_dir, server=server, device=device, background=background),
                cwd=REPO,
                log_path=run_dir / "log.txt",
                events_path=events,
                timeout_s=timeout_s,
            )

        if not device.startswith("cuda"):
            return run()
        from .gpu import GpuSampler

        with GpuSampler() as sampler:  # how busy the GPU was during a CUDA run
            measured = run()
        measured.extra["gpu"] = sampler.summary()
        return measured

    def run_retouch(
        self,
        tag: str,
        src: Path,
        preset: str,
        overrides: list[str],
        *,
        server: bool = True,
        device: str = "cpu",
        extra: list[str] | None = None,
        background: Path | None = None,
    ) -> tuple[Measured, dict[str, Any]]:
        run_dir = self.root / "runs" / tag
        dest = run_dir / "out"
        argv = [venv_tool("retouch"), "run", str(src), "--preset", preset, "--out", str(dest)]
        for item in overrides:
            argv += ["--set", item]
        argv += extra or []
        events = None
        if self.events:
            events = run_dir / "events.jsonl"
            argv += ["--events", str(events)]
        self.log(f"  retouch   {tag}: {len(files_in(src))} images ...")
        m = self.measure(
            argv, run_dir, server=server, device=device, events=events, background=background
        )
        check = check_retouch(m, dest, len(files_in(src)))
        self.log(f"            {m.wall_s:.2f} s, peak RSS {m.peak_rss_mb:.0f} MB {check['status']}")
        return m, check

    def run_baseline(
        self,
        tag: str,
        mode: str,
        src: Path,
        preset: str,
        overrides: list[str],
        model: str | None = None,
        device: str = "cpu",
        extra: list[str] | None = None,
    ) -> tuple[Measured, dict[str, Any]]:
        run_dir = self.root / "runs" / tag
        report = run_dir / "baseline.json"
        argv = [sys.executable, "-m", "bench.baseline", mode, "--preset", preset]
        for item in overrides:
            argv += ["--set", item]
        argv += ["--src", str(src), "--dest", str(run_dir / "out"), "--report", str(report)]
        argv += ["--device", device]
        argv += extra or []
        if model is not None:
            argv += ["--model-path", self.model_info[model]["path"]]
        self.log(f"  baseline  {tag}: {len(files_in(src))} images ...")
        m = self.measure(argv, run_dir, server=False, device=device)
        detail: dict[str, Any] = {}
        if m.returncode == 0 and report.is_file():
            detail = json.loads(report.read_text())
            written = len(files_in(run_dir / "out"))
            ok = detail.get("images") == len(files_in(src)) == written
            detail["status"] = "ok" if ok else f"wrote {written} of {len(files_in(src))}"
        else:
            detail["status"] = f"failed (exit {m.returncode}); log: {run_dir / 'log.txt'}"
            detail["log_tail"] = m.log[-1500:]
        self.log(
            f"            {m.wall_s:.2f} s, peak RSS {m.peak_rss_mb:.0f} MB {detail['status']}"
        )
        return m, detail

    # -- cases ------------------------------------------------------------------------------

    def warm_up(self, case: str, mode: str, model: str) -> dict[str, Any]:
        """One untimed run of each side on one image before a model case's timed runs, so
        neither side's first timed run pays for reading torch and the model from disk."""
        preset, overrides = RECIPES[case]
        src = self.inputs[case + "-warmup"]
        b, b_detail = self.run_baseline(
            f"{case}-warmup-baseline", mode, src, preset, overrides, model
        )
        r, r_check = self.run_retouch(f"{case}-warmup-retouch", src, preset, overrides)
        return {
            "baseline_wall_s": round(b.wall_s, 2),
            "retouch_wall_s": round(r.wall_s, 2),
            "valid": b_detail.get("status") == "ok" and r_check["status"] == "ok",
        }

    def compare(
        self,
        case: str,
        mode: str,
        preset: str,
        overrides: list[str],
        model: str | None,
        device: str = "cpu",
        repeats: int = 1,
        extra: list[str] | None = None,
    ) -> dict[str, Any]:
        """Both sides on the case's input, ``repeats`` times each in alternating order
        (baseline first, then retouch first, ...), so drift in the machine's load or caches
        favours neither; the fastest run of each side counts (noise only ever adds time)."""
        src = self.inputs[case]
        n = len(files_in(src))
        runs: dict[str, list[tuple[Measured, dict[str, Any]]]] = {"baseline": [], "retouch": []}
        for k in range(max(1, repeats)):
            suffix = f"-{k + 1}" if repeats > 1 else ""
            order = ("baseline", "retouch") if k % 2 == 0 else ("retouch", "baseline")
            for side in order:
                if side == "baseline":
                    runs[side].append(
                        self.run_baseline(
                            f"{case}-baseline{suffix}",
                            mode,
                            src,
                            preset,
                            overrides,
                            model,
                            device,
                            extra=extra,
                        )
                    )
                else:
                    runs[side].append(
                        self.run_retouch(
                            f"{case}-retouch{suffix}",
                            src,
                            preset,
                            overrides,
                            device=device,
                            extra=extra,
                        )
                    )
        b, b_detail = min(runs["baseline"], key=lambda run: run[0].wall_s)
        r, r_check = min(runs["retouch"], key=lambda run: run[0].wall_s)
        valid = all(d.get("status") == "ok" for _, d in runs["baseline"]) and all(
            c["status"] == "ok" for _, c in runs["retouch"]
        )
        result: dict[str, Any] = {
            "case": case,
            "images": n,
            "device": device,
            "preset": preset,
            "overrides": overrides,
            "baseline": {**b.as_json(), "detail": strip_detail(b_detail)},
            "retouch": {**r.as_json(), "check": r_check},
            "valid": valid,
        }
        if repeats > 1:
            result["repeats"] = repeats
            result["baseline_walls_s"] = [round(m.wall_s, 2) for m, _ in runs["baseline"]]
            result["retouch_walls_s"] = [round(m.wall_s, 2) for m, _ in runs["retouch"]]
        result.update(throughput(n, b.wall_s, r.wall_s))
        if "loop_s" in b_detail and n:
            result["baseline_loop_only_s_per_image"] = round(b_detail["loop_s"] / n, 4)
        return result

    def case_upscale(self) -> list[dict[str, Any]]:
        preset, overrides = RECIPES["upscale"]
        reps = self.sizes.repeats
        warm = self.warm_up("upscale", "upscale", models.UPSCALE_MODEL)
        out = [
            self.compare(
                "upscale", "upscale", preset, overrides, models.UPSCALE_MODEL, repeats=reps
            )
        ]
        out[0]["target"] = TARGETS["upscale"]
        out[0]["warm_up"] = warm
        if "upscale_more" in self.inputs:
            more = self.compare(
                "upscale_more", "upscale", preset, overrides, models.UPSCALE_MODEL, repeats=reps
            )
            more["target"] = "none (the larger run of the steady-state comparison)"
            out.append(more)
            out[0]["steady_state"] = steady_state(out[0], more)
            out[0]["pass"] = (
                out[0]["valid"] and more["valid"] and out[0]["steady_state"]["ratio"] >= 1.0
            )
        else:
            out[0]["pass"] = out[0]["valid"] and out[0]["ratio"] >= 1.0
        if "upscale_gpu" not in self.cases:  # else its own case
            out += self.case_upscale_gpu()
        return out

    def case_upscale_gpu(self) -> list[dict[str, Any]]:
        """upscale-x4 (realesrgan-x4plus) at 1080p on CUDA against the RealESRGANer loop;
        the GPU's utilisation sampled during both sides' runs."""
        preset, overrides = RECIPES["upscale"]
        if "upscale_gpu" not in self.inputs:
            return [self.gpu_skipped("upscale_gpu", "the 1080p GPU comparison runs where one is")]
        gpu = self.compare(
            "upscale_gpu", "upscale", preset, overrides, models.UPSCALE_MODEL, device="cuda"
        )
        gpu["target"] = TARGETS["upscale_gpu"]
        gpu["pass"] = gpu["valid"] and gpu["ratio"] >= 2.0 and busy_enough(gpu_of(gpu))
        return [gpu]

    def case_video_gpu(self) -> list[dict[str, Any]]:
        """The 1080p clip through realesrgan-x4plus in fp16 (``bench/video.py``)."""
        from . import video

        return video.case_gpu(self)

    def case_inpaint_gpu(self) -> list[dict[str, Any]]:
        """remove-objects (LaMa) at 1080p on CUDA against IOPaint's loop, as ``inpaint``."""
        preset, overrides = RECIPES["inpaint"]
        if "inpaint_gpu" not in self.inputs:
            return [self.gpu_skipped("inpaint_gpu", "the 1080p LaMa comparison runs where one is")]
        res = self.compare(
            "inpaint_gpu",
            "inpaint",
            preset,
            overrides,
            models.INPAINT_MODEL,
            device="cuda",
            extra=["--masks", str(self.inputs["inpaint_gpu_masks"])],
        )
        res["target"] = TARGETS["inpaint_gpu"]
        res["pass"] = res["valid"] and res["ratio"] >= 2.0
        return [res]

    def case_restyle_gpu(self) -> list[dict[str, Any]]:
        """One guided Stable Diffusion 1.5 UNet step at 512 px in float16 on CUDA."""
        if not cuda_available():
            return [self.gpu_skipped("restyle_gpu", "the float16 SD step is timed where one is")]
        return [
            {
                "case": "restyle_gpu",
                "diffusion_step_gpu": self.diffusion_step("cuda"),
                "target": TARGETS["restyle_gpu"],
            }
        ]

    @staticmethod
    def gpu_skipped(case: str, where: str) -> dict[str, Any]:
        return {"case": case, "skipped": f"{NO_CUDA}; {where}", "target": TARGETS[case]}

    def case_faces(self) -> list[dict[str, Any]]:
        preset, overrides = RECIPES["faces"]
        res = self.compare("faces", "faces", preset, overrides, models.FACE_MODEL)
        self.agreement(res, "faces", {"retouch_run": "faces-retouch"}, JPEG_TOLERANCE)
        res["target"] = TARGETS["faces"]
        res["pass"] = res["valid"] and res["ratio"] >= 1.1
        return [res]

    def op_loops(
        self,
        res: dict[str, Any],
        case: str,
        preset: str,
        overrides: list[str],
        model: str,
        extra: list[str] | None = None,
    ) -> None:
        """The same loop as the baseline's through retouch's own op (``bench.baseline
        CASE-op``: model loaded, no start-up, no Prefect), ``repeats`` times; the loop ratio
        (the baseline's loop over the fastest op loop) and its peak RSS go into ``res``."""
        ops = [
            self.run_baseline(
                f"{case}-op-{k + 1}",
                f"{case}-op",
                self.inputs[case],
                preset,
                overrides,
                model,
                extra=extra,
            )
            for k in range(max(1, self.sizes.repeats))
        ]
        op_loops = [d["loop_s"] for _, d in ops if d.get("status") == "ok"]
        loop = res["baseline"]["detail"].get("loop_s")
        res["op_loop_walls_s"] = op_loops
        res["valid"] = res["valid"] and len(op_loops) == len(ops)
        if loop and op_loops:
            res["baseline_loop_s"] = loop
            res["op_loop_s"] = min(op_loops)
            res["loop_ratio"] = round(loop / min(op_loops), 3)
            op_m = min(ops, key=lambda run: run[0].wall_s)[0]
            res["op_peak_rss_mb"] = op_m.as_json()["peak_rss_mb"]

    def case_inpaint(self) -> list[dict[str, Any]]:
        """retouch's remove-objects (LaMa, crop strategy) against IOPaint's batch loop with
        HD strategy original (whole image per call), same images, masks and weights.

        Besides the whole-process ratio (``retouch run`` against the loop), the loop ratio
        compares the baseline's loop with the same loop through retouch's inpaint
        operation (``bench.baseline inpaint-op``): model loaded, no start-up, no Prefect,
        only the fill differs. ``network_pixels`` are the pixels each side sends through
        the network (padded), from retouch's own plan of the crops."""
        preset, overrides = RECIPES["inpaint"]
        extra = ["--masks", str(self.inputs["inpaint_masks"])]
        res = self.compare(
            "inpaint",
            "inpaint",
            preset,
            overrides,
            models.INPAINT_MODEL,
            repeats=self.sizes.repeats,
            extra=extra,
        )
        self.op_loops(res, "inpaint", preset, overrides, models.INPAINT_MODEL, extra)
        res["network_pixels"] = inpaint_pixels(
            self.inputs["inpaint"], self.inputs["inpaint_masks"], preset, overrides
        )
        res["target"] = TARGETS["inpaint"]
        return [res]

    def case_restyle(self) -> list[dict[str, Any]]:
        """retouch's anime preset (AnimeGANv2 Paprika, drawn at full size) against the port's
        own ``test.py`` loop (whole image per forward pass), same images and weights.

        As for inpaint, the loop ratio compares the script's loop with the same loop through
        retouch's restyle operation (``bench.baseline restyle-op``: model loaded, no
        start-up, no Prefect). ``agreement``: retouch's delivered images and the op loop's
        against the script's, pixel by pixel (within 2 levels: retouch rounds, the script
        truncates). In the full run (a ``--quick`` one with ``--diffusion``) the row also
        holds ``diffusion_step``: one guided Stable Diffusion 1.5 UNet step at 512 px
        (``bench.diffusion_step``)."""
        preset, overrides = RECIPES["restyle"]
        reps = max(1, self.sizes.repeats)
        res = self.compare(
            "restyle", "restyle", preset, overrides, models.RESTYLE_MODEL, repeats=reps
        )
        self.op_loops(res, "restyle", preset, overrides, models.RESTYLE_MODEL)
        # The first run of each side (same inputs, same weights; every run is checked).
        runs = self.root / "runs"
        suffix = "-1" if reps > 1 else ""
        script = runs / f"restyle-baseline{suffix}" / "out"
        res["agreement"] = {
            "retouch_run": outputs_agree(
                self.inputs["restyle"], script, runs / f"restyle-retouch{suffix}" / "out"
            ),
            "op_loop": outputs_agree(self.inputs["restyle"], script, runs / "restyle-op-1" / "out"),
        }
        agree = all(a["agree"] for a in res["agreement"].values())
        self.log(
            "  agreement with the script's outputs (max level difference): retouch run "
            f"{res['agreement']['retouch_run']['max_abs_diff']}, op loop "
            f"{res['agreement']['op_loop']['max_abs_diff']}: {'ok' if agree else 'DIFFERENT'}"
        )
        res["valid"] = res["valid"] and agree
        res["target"] = TARGETS["restyle"]
        res["pass"] = res["valid"] and res.get("loop_ratio", 0.0) >= 1.0
        if self.diffusion:
            res["diffusion_step"] = self.diffusion_step()
            if cuda_available():
                res["diffusion_step_gpu"] = self.diffusion_step("cuda")
            else:
                res["diffusion_step_gpu"] = {
                    "skipped": f"{NO_CUDA}; the float16 step is timed where one is"
                }
        return [res]

    def case_video(self) -> list[dict[str, Any]]:
        """A clip upscaled x2 by retouch and by a loop like Real-ESRGAN's video script
        (``bench/video.py``); ``video_gpu`` on CUDA."""
        from . import video

        return video.case(self)

    def diffusion_step(self, device: str = "cpu") -> dict[str, Any]:
        """``python -m bench.diffusion_step`` in its own process (same environment as every
        run): seconds per guided 512 px step of a full-size SD 1.5 UNet on ``device``."""
        run_dir = self.root / "runs" / f"sd-step-{device}"
        report = run_dir / "sd-step.json"
        argv = [sys.executable, "-m", "bench.diffusion_step", "--out", str(report)]
        argv += ["--device", device]
        argv += ["--repeats", "1" if self.sizes.repeats <= 1 else "3"]
        self.log("  sd-step   one guided SD 1.5 UNet step at 512 px (build, warm-up, timed) ...")
        m = self.measure(argv, run_dir, server=False, device=device)
        if m.returncode != 0 or not report.is_file():
            self.log(f"            failed (exit {m.returncode}); log: {run_dir / 'log.txt'}")
            return {"error": m.log[-1500:], "process": m.as_json()}
        data = json.loads(report.read_text())
        data.pop("machine", None)  # the bench's JSON has it once
        self.log(f"            {data['seconds_per_step']:.2f} s per step ({data['calls_s']})")
        return {**data, "process": m.as_json()}

    def case_classic(self) -> list[dict[str, Any]]:
        return [self.classic("classic", 0.7)]

    def case_classic_large(self) -> list[dict[str, Any]]:
        return [self.classic("classic_large", 1.5)]

    def classic(self, case: str, target: float) -> dict[str, Any]:
        """The case's images through the recipe on both sides; retouch's delivered JPEGs
        against the loop's, pixel by pixel (within :data:`JPEG_TOLERANCE`)."""
        preset, overrides = RECIPES[case]
        res = self.compare(case, "classic", preset, overrides, None)
        self.agreement(res, case, {"retouch_run": f"{case}-retouch"}, JPEG_TOLERANCE)
        res["target"] = TARGETS[case]
        res["pass"] = res["valid"] and res["ratio"] >= target
        return res

    def agreement(
        self, res: dict[str, Any], case: str, runs: dict[str, str], tolerance: int
    ) -> None:
        """Each of ``runs`` (what -> run folder name)'s delivered images against the
        baseline's (``{case}-baseline``, its first run), into ``res["agreement"]``; a
        disagreement makes the row invalid: no target is met by doing other work."""
        folder = self.root / "runs"
        base = folder / f"{case}-baseline"
        if not base.exists():
            base = folder / f"{case}-baseline-1"
        res["agreement"] = {
            what: outputs_agree(
                self.inputs[case], base / "out", folder / run / "out", tolerance, input_size=False
            )
            for what, run in runs.items()
        }
        agree = all(a["agree"] for a in res["agreement"].values())
        diffs = ", ".join(f"{w} {a['max_abs_diff']}" for w, a in res["agreement"].items())
        self.log(f"  agreement with the loop's outputs (max level difference): {diffs}")
        res["valid"] = res["valid"] and agree

    def case_scaling(self) -> list[dict[str, Any]]:
        preset, overrides = RECIPES["classic"]
        small, large = self.sizes.scaling
        runs = {}
        for n in (small, large):
            m, check = self.run_retouch(
                f"scaling-{n}", self.inputs[f"scaling-{n}"], preset, overrides
            )
            runs[n] = {**m.as_json(), "check": check}
        ratio = runs[large]["peak_rss_mb"] / max(runs[small]["peak_rss_mb"], 1e-9)
        tree_ratio = runs[large]["peak_tree_rss_mb"] / max(runs[small]["peak_tree_rss_mb"], 1e-9)
        valid = all(r["check"]["status"] == "ok" for r in runs.values())
        return [
            {
                "case": "scaling",
                "preset": preset,
                "overrides": overrides,
                "images": [small, large],
                "runs": {str(k): v for k, v in runs.items()},
                "rss_ratio": round(ratio, 3),
                "tree_rss_ratio": round(tree_ratio, 3),
                "valid": valid,
                "target": TARGETS["scaling"],
                "pass": valid and ratio <= 1.2,
            }
        ]

    def case_coldstart(self) -> list[dict[str, Any]]:
        preset, overrides = RECIPES["upscale"]
        src = self.inputs["coldstart"]
        b, b_detail = self.run_baseline(
            "coldstart-baseline", "upscale", src, preset, overrides, models.UPSCALE_MODEL
        )
        r, r_check = self.run_retouch("coldstart-retouch", src, preset, overrides, server=False)
        first_b = None
        if b_detail.get("first_result_epoch"):
            first_b = b_detail["first_result_epoch"] - b.start_epoch
        if r.first_event_s is not None:
            first_r, how = r.first_event_s, "first process-phase ok event (--events)"
        else:
            first_r, how = r.wall_s, "wall time of a 1-image run (no --events)"
        return [
            {
                "case": "coldstart",
                "images": 1,
                "preset": preset,
                "overrides": overrides,
                "prefect": "ephemeral (no PREFECT_API_URL; fresh PREFECT_HOME, so its database "
                "is created in the run)",
                "baseline": {**b.as_json(), "detail": strip_detail(b_detail)},
                "retouch": {**r.as_json(), "check": r_check},
                "baseline_first_result_s": None if first_b is None else round(first_b, 3),
                "retouch_first_result_s": round(first_r, 3),
                "retouch_first_result_measured_by": how,
                # Time, not throughput: above 1.0 retouch's first result comes later.
                "first_result_time_ratio": None if not first_b else round(first_r / first_b, 2),
                "valid": b_detail.get("status") == "ok" and r_check["status"] == "ok",
                "target": "none (reported)",
            }
        ]

    def case_firstresult(self) -> list[dict[str, Any]]:
        """The bundled samples through ``quick`` from a command's start, against the loop of
        the same ops (``bench.baseline classic``: imports, the model loaded at its first
        call, read -> steps -> write): a command that starts and stops its own server
        (``RETOUCH_SERVER_IDLE_S=0``), the first command of a shared background server
        (it starts one) and the next one (it finds it running). Whole-run ratio against the
        loop and, from ``--events``, when the first image was processed and reviewed."""
        from .proc import stop_background_server

        preset, overrides = RECIPES["firstresult"]
        src = self.inputs["firstresult"]
        n = len(files_in(src))
        b, b_detail = self.run_baseline("firstresult-baseline", "classic", src, preset, overrides)
        runs: dict[str, tuple[Measured, dict[str, Any]]] = {}
        runs["per_command"] = self.run_retouch(
            "firstresult-per-command", src, preset, overrides, server=False
        )
        shared = self.root / "runs" / "firstresult-background-home"
        try:
            runs["background_cold"] = self.run_retouch(
                "firstresult-background-cold", src, preset, overrides, server=False,
                background=shared,
            )  # fmt: skip
            runs["background_warm"] = self.run_retouch(
                "firstresult-background-warm", src, preset, overrides, server=False,
                background=shared,
            )  # fmt: skip
        finally:
            stopped = stop_background_server(self.env(shared, server=False, background=shared))
        first_b = None
        if b_detail.get("first_result_epoch"):
            first_b = round(b_detail["first_result_epoch"] - b.start_epoch, 3)
        rows: dict[str, Any] = {}
        for name, (m, check) in runs.items():
            rows[name] = {
                **m.as_json(),
                "check": check,
                "ratio_to_loop": round(m.wall_s / b.wall_s, 3) if b.wall_s else None,
            }
        warm = rows["background_warm"]
        review = warm.get("first_review_event_s")
        valid = b_detail.get("status") == "ok" and all(
            c["status"] == "ok" for _, c in runs.values()
        )
        row: dict[str, Any] = {"valid": valid}
        self.agreement(
            row,
            "firstresult",
            {name: f"firstresult-{name.replace('_', '-')}" for name in runs},
            JPEG_TOLERANCE,
        )
        valid = row["valid"]
        targets = {
            "whole_run": warm["ratio_to_loop"] is not None and warm["ratio_to_loop"] <= 1.5,
            "first_review": None if review is None or first_b is None else review <= first_b + 1.5,
        }
        return [
            {
                "case": "firstresult",
                "images": n,
                "preset": preset,
                "overrides": overrides,
                "baseline": {**b.as_json(), "detail": strip_detail(b_detail)},
                "baseline_first_result_s": first_b,
                "retouch": rows,
                "background_server_stopped": stopped,
                "targets": targets,
                "agreement": row["agreement"],
                "valid": valid,
                "target": TARGETS["firstresult"],
                "pass": valid and all(v is True for v in targets.values()),
            }
        ]

    def case_load(self) -> list[dict[str, Any]]:
        from . import loading

        run_dir = self.root / "runs" / "load"
        return loading.run(run_dir, self.env(run_dir, server=False), self.sizes.repeats + 1)

    def case_soak(self) -> list[dict[str, Any]]:
        """One ``retouch serve`` through many small batches (``bench/soak.py``)."""
        from . import soak

        return soak.case(self)

    def case_leak(self) -> list[dict[str, Any]]:
        preset, overrides = RECIPES["leak"]
        run_dir = self.root / "runs" / "leak"
        report = run_dir / "leak.json"
        argv = [sys.executable, "-m", "bench.leak", "--src", str(self.inputs["leak"])]
        argv += ["--dest", str(run_dir / "out"), "--preset", preset]
        for item in overrides:
            argv += ["--set", item]
        argv += ["--runs", str(self.sizes.leak_runs), "--report", str(report)]
        device = "cuda" if cuda_available() else "cpu"
        self.log(
            f"  leak      {self.sizes.leak_runs} batches of {self.sizes.leak_images} images ..."
        )
        m = self.measure(argv, run_dir, server=True, device=device)
        result: dict[str, Any] = {
            "case": "leak",
            "preset": preset,
            "overrides": overrides,
            "images": self.sizes.leak_images,
            "batches": self.sizes.leak_runs,
            "device": device,
            "process": m.as_json(),
            "target": TARGETS["leak"],
        }
        if m.returncode != 0 or not report.is_file():
            result.update({"valid": False, "pass": False, "error": m.log[-1500:]})
            return [result]
        rows = json.loads(report.read_text())["batches"]
        result["series"] = rows
        result.update(leak_verdict(rows))
        result["valid"] = all(r["failed"] == 0 for r in rows)
        result["pass"] = result["valid"] and result["within_5pct"]
        self.log(f"            {m.wall_s:.2f} s, RSS series (MB): {[r['rss_mb'] for r in rows]}")
        return [result]
