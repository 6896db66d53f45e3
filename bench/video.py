"""The ``video`` case: one H.264 + AAC clip upscaled x2, retouch against a loop written like
Real-ESRGAN's ``inference_realesrgan_video.py``.

The reference script builds ``RealESRGANer`` once, reads the clip's raw BGR frames from an
``ffmpeg`` decoder pipe, calls ``enhance()`` on one frame at a time and writes each result to
an ``ffmpeg`` encoder pipe (``libx264``, ``yuv420p``, frames at the clip's average frame rate)
that also copies the source's audio stream. There is no system ``ffmpeg`` here, so the
baseline (``python -m bench.video baseline ...``, its own process like every baseline) does
the same with PyAV, which bundles the same FFmpeg libraries: a decode loop, ``enhance()`` per
frame, a ``libx264`` encoder with the CRF and preset retouch uses for H.264 by default (read
from the recipe's ``export.video``), and the audio packets copied into the same MP4,
interleaved by time as ffmpeg's muxer would. The network is built as the script builds it
(``SRVGGNetCompact`` or ``RRDBNet`` with the registry's arguments), tile, padding and scale
come from the recipe both sides are given.

This module also makes the clips (seeded, structured: a panning gradient, moving shapes,
a frame counter and fresh noise in every frame, so the encoder has work), checks what
retouch delivered against the source (frame count, every frame time, the audio stream and
its duration) and runs the case for the harness (:func:`case`).

Run the baseline as ``python -m bench.video baseline --preset P [--set STEP.PARAM=V] --src DIR
--dest DIR --report FILE --model-path FILE [--device cpu]``.
"""

from __future__ import annotations

import time

T_START = time.time()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import zipfile  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from fractions import Fraction  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".webm", ".avi")
RUN_TIMEOUT_S = 3600
"""The long clip's retouch run takes several minutes on a 2-core CPU."""
FPS = 25
AUDIO_RATE = 48000


# -- clips ---------------------------------------------------------------------------------


def make_clip(
    path: Path, *, seconds: float, size: tuple[int, int], seed: int, fps: int = FPS
) -> dict[str, Any]:
    """Write a seeded test clip: H.264 (libx264, yuv420p) at ``fps`` in an MP4, with a stereo
    AAC track as long as the video. Every frame differs: a gradient panning sideways, a
    ball and a box moving on their own paths, the frame number drawn in, and fresh noise
    (about +-10 levels of luma), so neither the encoder nor a motion search has it easy.
    Returns what the clip holds."""
    import av
    import cv2
    import numpy as np

    width, height = size
    frames = round(seconds * fps)
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    # A gradient twice as wide as the frame, so a window of it can pan without a seam.
    wide = np.zeros((height, 2 * width, 3), np.uint8)
    xx = np.concatenate([x, x[:, ::-1]], axis=1)
    yy = np.concatenate([y, y], axis=1)
    wide[..., 0] = (xx * 255 // max(1, width - 1)).astype(np.uint8)
    wide[..., 1] = (yy * 255 // max(1, height - 1)).astype(np.uint8)
    wide[..., 2] = ((xx + yy) * 128 // max(1, width + height)).astype(np.uint8) + 60
    radius = max(3, height // 8)
    speed = np.array([rng.uniform(1.5, 3.5), rng.uniform(1.0, 2.5)]) * max(1, width // 160)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = av.open(str(path), "w", format="mp4")
    v = out.add_stream("libx264", rate=fps, options={"crf": "23", "preset": "fast"})
    v.width, v.height, v.pix_fmt = width, height, "yuv420p"
    a = out.add_stream("aac", rate=AUDIO_RATE)
    a.layout = "stereo"
    per_frame = AUDIO_RATE // fps
    t = np.arange(per_frame) / AUDIO_RATE
    for i in range(frames):
        shift = (i * max(1, width // 160)) % width
        img = np.ascontiguousarray(wide[:, shift : shift + width])
        bx, by = (speed * i) % (2 * np.array([width, height]))  # bounce off the edges
        bx = int(bx if bx < width else 2 * width - bx)
        by = int(by if by < height else 2 * height - by)
        cv2.circle(img, (bx, by), radius, (30, 200, 240), -1, lineType=cv2.LINE_AA)
        box = (i * 2) % max(1, width - radius)
        cv2.rectangle(img, (box, height - 2 * radius), (box + radius, height - radius),
                      (200, 40, 60), -1)  # fmt: skip
        scale = max(0.3, height / 240)
        cv2.putText(img, f"{i:05d}", (4, max(12, height // 6)), cv2.FONT_HERSHEY_SIMPLEX,
                    scale, (255, 255, 255), max(1, round(scale)), cv2.LINE_AA)  # fmt: skip
        noise = rng.integers(-10, 11, size=(height, width, 1), dtype=np.int16)
        img = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="bgr24")
        frame.pts = i
        frame.time_base = Fraction(1, fps)
        for packet in v.encode(frame):
            out.mux(packet)
        # The audio of the same 1/fps seconds: a tone gliding 220-660 Hz, a little noise.
        start = i * per_frame
        hz = 220 + 440 * (i % (4 * fps)) / (4 * fps)
        tone = 0.25 * np.sin(2 * np.pi * hz * (t + start / AUDIO_RATE))
        hiss = rng.normal(0, 0.01, size=(2, per_frame))
        samples = (np.stack([tone, 0.8 * tone]) + hiss).astype(np.float32)
        chunk = av.AudioFrame.from_ndarray(samples, format="fltp", layout="stereo")
        chunk.sample_rate = AUDIO_RATE
        chunk.pts = start
        chunk.time_base = Fraction(1, AUDIO_RATE)
        for packet in a.encode(chunk):
            out.mux(packet)
    for stream in (v, a):
        for packet in stream.encode():
            out.mux(packet)
    out.close()
    return {
        "file": path.name,
        "seconds": seconds,
        "frames": frames,
        "fps": fps,
        "size": [width, height],
        "video": "h264 (libx264 crf 23, preset fast) yuv420p",
        "audio": f"aac stereo {AUDIO_RATE} Hz",
        "bytes": path.stat().st_size,
        "seed": seed,
    }


def make_inputs(bench: Any, data: Path, cpu: bool = True) -> dict[str, Any]:
    """The case's clips, each alone in its folder (``retouch run DIR``): with ``cpu``, the
    short one (both sides), a short and a long one at the memory size (retouch only, for
    memory); where CUDA is, the 1080p one."""
    from .verdicts import cuda_available

    s = bench.sizes
    short, long = s.video_seconds
    mem = s.video_memory_size
    made: dict[str, Any] = {}
    if cpu:
        made["video"] = make_clip(
            data / "video" / f"clip-{short:g}s.mp4", seconds=short, size=s.video_size, seed=11
        )
        made["video_short"] = make_clip(
            data / "video-short" / f"clip-{short:g}s.mp4", seconds=short, size=mem, seed=12
        )
        made["video_long"] = make_clip(
            data / "video-long" / f"clip-{long:g}s.mp4", seconds=long, size=mem, seed=12
        )
        bench.inputs["video"] = data / "video"
        bench.inputs["video_short"] = data / "video-short"
        bench.inputs["video_long"] = data / "video-long"
    if cuda_available():
        made["video_gpu"] = make_clip(
            data / "video-gpu" / f"clip-{s.video_gpu_seconds:g}s-hd.mp4",
            seconds=s.video_gpu_seconds,
            size=s.gpu_size,
            seed=13,
        )
        bench.inputs["video_gpu"] = data / "video-gpu"
    return made


def the_clip(folder: Path) -> Path:
    """The one video file in ``folder``."""
    clips = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_EXTS)
    if len(clips) != 1:
        raise SystemExit(f"bench.video: {folder} must hold exactly one video, found {len(clips)}")
    return clips[0]


# -- what a file holds ---------------------------------------------------------------------


def media_facts(path: Path) -> dict[str, Any]:
    """Every decoded frame's presentation time (exact, in seconds) and, per audio stream, its
    span (first packet's start to the end of the last), sample rate and frame size. Read with
    PyAV directly, not with retouch's own helpers, so the check is independent of them."""
    import av

    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        vs.thread_type = "AUTO"
        tb = Fraction(str(vs.time_base))
        times = [None if f.pts is None else Fraction(f.pts) * tb for f in c.decode(vs)]
    audio = []
    with av.open(str(path)) as c:
        for s in c.streams.audio:
            first = last = None
            for p in c.demux(s):
                if p.pts is None:
                    continue
                start = Fraction(p.pts) * Fraction(p.time_base)
                end = start + Fraction(p.duration or 0) * Fraction(p.time_base)
                first = start if first is None else min(first, start)
                last = end if last is None else max(last, end)
            c.seek(0)
            ctx = s.codec_context
            audio.append(
                {
                    "span": (last or Fraction(0)) - (first or Fraction(0)),
                    "sample_rate": int(ctx.sample_rate or 0),
                    "frame_size": int(ctx.frame_size or 0),
                    "codec": ctx.name,
                }
            )
    return {"times": times, "audio": audio}


def delivered_video(dest: Path, name: str, into: Path) -> Path | None:
    """The video ``name`` a run delivered under ``dest``: a loose file, or the member of a ZIP
    there (extracted into ``into``)."""
    stem = Path(name).stem
    for path in sorted(dest.rglob("*")) if dest.is_dir() else []:
        if path.is_file() and path.suffix.lower() in VIDEO_EXTS and path.stem == stem:
            return path
    for archive in sorted(dest.rglob("*.zip")) if dest.is_dir() else []:
        with zipfile.ZipFile(archive) as z:
            for member in z.namelist():
                p = Path(member)
                if p.suffix.lower() in VIDEO_EXTS and p.stem == stem:
                    into.mkdir(parents=True, exist_ok=True)
                    target = into / p.name
                    with z.open(member) as fh, target.open("wb") as out:
                        shutil.copyfileobj(fh, out, 1 << 20)
                    return target
    return None


def check_delivery(src: Path, dest: Path, scratch: Path) -> dict[str, Any]:
    """The delivered video of ``src`` (found under ``dest``) against ``src`` itself."""
    from .verdicts import video_delivery

    got = delivered_video(dest, src.name, scratch)
    if got is None:
        return {"ok": False, "error": f"no delivered video for {src.name} under {dest}"}
    try:
        result = video_delivery(media_facts(src), media_facts(got))
    except Exception as exc:  # an unreadable delivery is a failed check, not a crash
        return {"ok": False, "error": f"{got.name}: {type(exc).__name__}: {exc}"}
    result["file"] = str(got)
    return result


# -- the baseline (its own process) ----------------------------------------------------------


def _network(spec: Any) -> Any:
    """The network the reference script builds for this model: the registry's arguments to
    the same constructors (``SRVGGNetCompact`` for the compact models, ``RRDBNet`` else)."""
    from basicsr.archs.rrdbnet_arch import RRDBNet
    from realesrgan.archs.srvgg_arch import SRVGGNetCompact

    archs = {"SRVGGNetCompact": SRVGGNetCompact, "RRDBNet": RRDBNet}
    if spec.arch not in archs:
        raise SystemExit(
            f"bench.video baseline: {spec.name} is a {spec.arch}, not a Real-ESRGAN net"
        )
    return archs[spec.arch](**dict(spec.arch_kwargs))


def _audio_packets(path: Path) -> tuple[Any, Any, Iterator[Any]]:
    """A second reader of the clip for its first audio stream (the script hands ffmpeg the
    file's audio as a second input): the container, the stream and its packets."""
    import av

    c = av.open(str(path))
    if not c.streams.audio:
        c.close()
        return None, None, iter(())
    stream = c.streams.audio[0]
    packets = (p for p in c.demux(stream) if p.dts is not None or p.pts is not None)
    return c, stream, packets


def baseline(args: argparse.Namespace) -> int:
    import av
    import numpy as np

    from retouch.lib.recipe import apply_overrides, load_preset
    from retouch.lib.video.media import DEFAULT_CRF

    recipe = apply_overrides(load_preset(args.preset), args.overrides)
    step = next((s.parsed() for s in recipe.steps if s.op == "upscale"), None)
    if step is None or len(recipe.steps) != 1:
        raise SystemExit("bench.video baseline: the recipe must be one upscale step")
    settings = recipe.export.video
    if settings.codec != "h264":
        raise SystemExit("bench.video baseline: the reference script encodes H.264 only")
    crf = settings.crf if settings.crf is not None else DEFAULT_CRF["h264"]
    options = {"crf": str(crf)}
    if settings.preset:
        options["preset"] = settings.preset
    clip = the_clip(args.src)
    args.dest.mkdir(parents=True, exist_ok=True)
    dst = args.dest / f"{clip.stem}.mp4"

    import torch

    from retouch.lib.models.compat import ensure_compat

    ensure_compat(lean=False)  # the packages import everything, as for the script
    from realesrgan import RealESRGANer

    from retouch.lib.models.specs import get_spec

    t_imported = time.time()
    spec = get_spec(step.model)
    upsampler = RealESRGANer(
        scale=spec.scale,
        model_path=args.model_path,
        dni_weight=None,
        model=_network(spec),
        tile=step.tile,
        tile_pad=step.tile_pad,
        pre_pad=step.pre_pad,
        half=args.device.startswith("cuda"),
        device=torch.device(args.device),
    )
    outscale = step.outscale or spec.scale
    t_loaded = time.time()

    inp = av.open(str(clip))
    vs = inp.streams.video[0]
    vs.thread_type = "AUTO"  # ffmpeg's decoder threads by default
    fps = Fraction(vs.average_rate or vs.guessed_rate or 24)
    width, height = int(vs.codec_context.width), int(vs.codec_context.height)
    audio_in, audio_stream, audio = _audio_packets(clip)
    out = av.open(str(dst), "w", format="mp4")
    vout = out.add_stream("libx264", rate=fps, options=options)
    vout.width, vout.height = int(width * outscale), int(height * outscale)
    vout.pix_fmt = "yuv420p"
    aout = out.add_stream_from_template(audio_stream) if audio_stream is not None else None
    pending = next(audio, None)

    def mux_audio(until: Fraction | None) -> None:
        """Copy the audio packets that start before ``until`` (None: all the rest)."""
        nonlocal pending
        while pending is not None:
            ts = pending.dts if pending.dts is not None else pending.pts
            if until is not None and Fraction(ts) * Fraction(pending.time_base) >= until:
                return
            pending.stream = aout
            out.mux(pending)
            pending = next(audio, None)

    per_frame: list[float] = []
    enhance_s = 0.0
    first_result: float | None = None
    frames = 0
    for frame in inp.decode(vs):
        started = time.perf_counter()
        img = frame.to_ndarray(format="bgr24")
        t = time.perf_counter()
        output, _ = upsampler.enhance(img, outscale=outscale)
        enhance_s += time.perf_counter() - t
        vf = av.VideoFrame.from_ndarray(output.astype(np.uint8), format="bgr24")
        vf.pts = frames  # the raw pipe carries no times: frame n is at n / fps
        vf.time_base = 1 / fps
        for packet in vout.encode(vf):
            out.mux(packet)
        frames += 1
        mux_audio(frames / fps)
        per_frame.append(time.perf_counter() - started)
        if first_result is None:
            first_result = time.time()
    for packet in vout.encode():
        out.mux(packet)
    mux_audio(None)
    out.close()
    inp.close()
    if audio_in is not None:
        audio_in.close()
    t_done = time.time()
    loop = t_done - t_loaded
    report = {
        "mode": "video",
        "frames": frames,
        "images": frames,
        "device": args.device,
        "model": step.model,
        "encoder": {"codec": "libx264", **options, "pix_fmt": "yuv420p", "fps": str(fps)},
        "audio_copied": audio_stream is not None,
        "torch_threads": torch.get_num_threads(),
        "import_s": round(t_imported - T_START, 3),
        "load_s": round(t_loaded - t_imported, 3),
        "loop_s": round(loop, 3),
        "enhance_s": round(enhance_s, 3),
        "loop_fps": round(frames / loop, 3) if loop > 0 else None,
        "per_frame_s_min": round(min(per_frame), 4) if per_frame else None,
        "per_frame_s_max": round(max(per_frame), 4) if per_frame else None,
        "first_result_epoch": first_result,
        "start_epoch": T_START,
        "output": dst.name,
    }
    if args.device.startswith("cuda"):
        report["cuda_max_memory_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    args.report.write_text(json.dumps(report, indent=1))
    return 0


# -- the case (in the bench's process) -------------------------------------------------------


def _model_path(bench: Any, name: str) -> str:
    """The weight file both sides load: a shipped model's packaged file, else the bench's."""
    from retouch.lib.models.fetch import bundled_path
    from retouch.lib.models.specs import get_spec

    spec = get_spec(name)
    return str(bundled_path(spec)) if spec.bundled else bench.model_info[name]["path"]


def _recipe_model(preset: str, overrides: list[str]) -> str:
    from retouch.lib.recipe import apply_overrides, load_preset

    recipe = apply_overrides(load_preset(preset), overrides)
    return next(s.parsed().model for s in recipe.steps if s.op == "upscale")


def _compute_seconds(check: dict[str, Any]) -> tuple[float | None, str]:
    """Seconds retouch spent on the clip once running: its manifest's prepare-to-review span
    (probe, every frame through the steps, encode, remux, read-back, review; segments made
    by tasks of their own included), else the sum of those phases' times."""
    perf = check.get("performance") or {}
    span = (perf.get("spans") or {}).get("prepare-process-review")
    if span:
        return float(span), "manifest performance.spans.prepare-process-review"
    phases = check.get("phase_seconds_sum") or {}
    total = sum(phases.get(k, 0.0) for k in ("prepare", "process", "review"))
    return (total or None), "manifest per-image prepare + process + review"


def run_retouch(
    bench: Any, tag: str, src: Path, preset: str, overrides: list[str], device: str = "cpu"
) -> dict[str, Any]:
    """``retouch run SRC --preset P --set ... --out DEST`` against the bench's Prefect server,
    measured; then the delivered clip checked against the source."""
    from .proc import venv_tool
    from .verdicts import check_retouch

    run_dir = bench.root / "runs" / tag
    dest = run_dir / "out"
    argv = [venv_tool("retouch"), "run", str(src), "--preset", preset, "--out", str(dest)]
    for item in overrides:
        argv += ["--set", item]
    events = None
    if bench.events:
        events = run_dir / "events.jsonl"
        argv += ["--events", str(events)]
    clip = the_clip(src)
    bench.log(f"  retouch   {tag}: {clip.name} ...")
    m = bench.measure(argv, run_dir, server=True, device=device, events=events)
    check = check_retouch(m, dest, 1)
    delivery = check_delivery(clip, dest, run_dir / "delivered")
    compute_s, measured_by = _compute_seconds(check)
    bench.log(
        f"            {m.wall_s:.2f} s, peak RSS {m.peak_rss_mb:.0f} MB {check['status']}; "
        f"delivery {'ok' if delivery.get('ok') else 'FAIL'}"
    )
    return {
        **m.as_json(),
        "check": check,
        "delivery": delivery,
        "compute_s": compute_s,
        "compute_measured_by": measured_by,
        "delivered": delivery.get("file"),
    }


def run_baseline(
    bench: Any, tag: str, src: Path, preset: str, overrides: list[str], device: str = "cpu"
) -> dict[str, Any]:
    """``python -m bench.video baseline ...`` in its own process, measured; its output
    checked against the source as retouch's is (reported, not judged: the script writes
    frames at the average frame rate, not at their own times)."""

    run_dir = bench.root / "runs" / tag
    report = run_dir / "baseline.json"
    argv = [sys.executable, "-m", "bench.video", "baseline", "--preset", preset]
    for item in overrides:
        argv += ["--set", item]
    argv += ["--src", str(src), "--dest", str(run_dir / "out"), "--report", str(report)]
    argv += ["--model-path", _model_path(bench, _recipe_model(preset, overrides))]
    argv += ["--device", device]
    clip = the_clip(src)
    bench.log(f"  baseline  {tag}: {clip.name} ...")
    m = bench.measure(argv, run_dir, server=False, device=device)
    detail: dict[str, Any] = {}
    delivery: dict[str, Any] = {}
    if m.returncode == 0 and report.is_file():
        detail = json.loads(report.read_text())
        delivery = check_delivery(clip, run_dir / "out", run_dir / "delivered")
        ok = delivery.get("frames_equal") is True
        detail["status"] = "ok" if ok else "wrong frame count: " + json.dumps(delivery)[:300]
    else:
        detail["status"] = f"failed (exit {m.returncode}); log: {run_dir / 'log.txt'}"
        detail["log_tail"] = m.log[-1500:]
    bench.log(f"            {m.wall_s:.2f} s, peak RSS {m.peak_rss_mb:.0f} MB {detail['status']}")
    return {**m.as_json(), "detail": detail, "delivery": delivery}


def _fps(frames: int, seconds: float | None) -> float | None:
    return round(frames / seconds, 3) if seconds else None


def compare(bench: Any, key: str, preset: str, overrides: list[str], device: str) -> dict[str, Any]:
    """Both sides on the clip of ``bench.inputs[key]``: frames per second of the whole runs
    and of their steady parts (the baseline's loop once the model is loaded: decode,
    enhance, encode, mux; retouch's prepare-to-review span: probe, steps, encode, remux,
    read-back, review)."""
    src = bench.inputs[key]
    frames = len(media_facts(the_clip(src))["times"])
    b = run_baseline(bench, f"{key}-baseline", src, preset, overrides, device)
    r = run_retouch(bench, f"{key}-retouch", src, preset, overrides, device)
    loop = b["detail"].get("loop_s")
    res: dict[str, Any] = {
        "case": key,
        "device": device,
        "preset": preset,
        "overrides": overrides,
        "model": _recipe_model(preset, overrides),
        "frames": frames,
        "baseline": b,
        "retouch": r,
        "baseline_fps": _fps(frames, b["wall_s"]),
        "retouch_fps": _fps(frames, r["wall_s"]),
        "ratio": round(b["wall_s"] / r["wall_s"], 3) if r["wall_s"] else None,
        "baseline_loop_fps": _fps(frames, loop),
        "retouch_compute_fps": _fps(frames, r["compute_s"]),
        "valid": b["detail"].get("status") == "ok" and r["check"]["status"] == "ok",
    }
    if loop and r["compute_s"]:
        res["steady_ratio"] = round(loop / r["compute_s"], 3)
    return res


def case(bench: Any) -> list[dict[str, Any]]:
    """The ``video`` row (and ``video_gpu``: run on CUDA, else skipped with a note).

    Order: retouch on the long clip first (it also reads torch, PyAV and the model from disk
    for both sides), then the baseline and retouch on the short clip."""
    from .sizes import RECIPES, TARGETS
    from .verdicts import video_verdict

    preset, overrides = RECIPES["video"]
    long = run_retouch(bench, "video_long-retouch", bench.inputs["video_long"], preset, overrides)
    short = run_retouch(
        bench, "video_short-retouch", bench.inputs["video_short"], preset, overrides
    )
    res = compare(bench, "video", preset, overrides, "cpu")
    res["case"] = "video"
    long_frames = len(media_facts(the_clip(bench.inputs["video_long"]))["times"])
    short_frames = len(media_facts(the_clip(bench.inputs["video_short"]))["times"])
    res["memory_size"] = list(bench.sizes.video_memory_size)
    res["retouch_short"] = short
    res["retouch_long"] = long
    res["short_frames"] = short_frames
    res["long_frames"] = long_frames
    res["retouch_long_fps"] = _fps(long_frames, long["wall_s"])
    extra = long_frames - short_frames
    if extra > 0 and long["wall_s"] > short["wall_s"]:
        # Frames per second once running: the long run's extra frames over its extra time.
        res["retouch_marginal_fps"] = _fps(extra, long["wall_s"] - short["wall_s"])
    short_rss, long_rss = short["peak_rss_mb"], long["peak_rss_mb"]
    res["rss"] = {
        "short_mb": short_rss,
        "long_mb": long_rss,
        "ratio": round(long_rss / max(short_rss, 1e-9), 3),
        "tree_ratio": round(long["peak_tree_rss_mb"] / max(short["peak_tree_rss_mb"], 1e-9), 3),
    }
    res["delivery"] = {
        "clip": res["retouch"]["delivery"],
        "short": short["delivery"],
        "long": long["delivery"],
    }
    res["valid"] = (
        res["valid"] and long["check"]["status"] == "ok" and short["check"]["status"] == "ok"
    )
    res.update(video_verdict(res["ratio"], res["rss"]["ratio"], res["delivery"]))
    res["pass"] = res["valid"] and res["pass"]
    res["target"] = TARGETS["video"]
    rows = [res]
    if "video_gpu" not in bench.cases:  # else its own case
        rows += case_gpu(bench)
    return rows


def case_gpu(bench: Any) -> list[dict[str, Any]]:
    """The ``video_gpu`` row: the 1080p clip through realesrgan-x4plus in fp16 on CUDA
    against the script's loop, the GPU's utilisation sampled; skipped without CUDA."""
    from .gpu import busy_enough
    from .sizes import RECIPES, TARGETS
    from .verdicts import cuda_available

    if "video_gpu" not in bench.inputs or not cuda_available():
        return [
            {
                "case": "video_gpu",
                "skipped": "no CUDA device here (torch.cuda.is_available() is False); the "
                "1080p clip through realesrgan-x4plus in fp16 runs where one is",
                "target": TARGETS["video_gpu"],
            }
        ]
    gpu_preset, gpu_overrides = RECIPES["video_gpu"]
    gpu = compare(bench, "video_gpu", gpu_preset, gpu_overrides, "cuda")
    deliveries = {"gpu": gpu["retouch"]["delivery"]}
    gpu["delivery"] = deliveries
    ok = bool(gpu["ratio"]) and gpu["ratio"] >= 2.0
    gpu["targets"] = {
        "throughput": ok,
        "delivery": bool(deliveries["gpu"].get("ok")),
        "gpu_busy": busy_enough(gpu["retouch"].get("gpu")),
    }
    gpu["pass"] = gpu["valid"] and all(gpu["targets"].values())
    gpu["target"] = TARGETS["video_gpu"]
    return [gpu]


def _yes(value: Any) -> str:
    return "pass" if value else "FAIL"


def lines(rows: list[dict[str, Any]]) -> list[str]:
    """The video rows' lines under the bench's table."""
    out: list[str] = []
    for r in rows:
        case = r.get("case", "video")
        if "skipped" in r or "error" in r:
            continue  # the table prints these itself
        b, rt = r["baseline"], r["retouch"]
        line = (
            f"{case}: {r['frames']} frames ({r['model']}, {r['device']}): whole run baseline "
            f"{b['wall_s']:.1f} s = {r['baseline_fps']} fps, retouch {rt['wall_s']:.1f} s = "
            f"{r['retouch_fps']} fps: ratio {r['ratio']}; steady (baseline loop, retouch "
            f"prepare-to-review): {r['baseline_loop_fps']} vs {r['retouch_compute_fps']} fps, "
            f"ratio {r.get('steady_ratio')}; peak RSS baseline {b['peak_rss_mb']:.0f} MB, "
            f"retouch {rt['peak_rss_mb']:.0f} MB"
        )
        out.append(line)
        if "rss" in r:
            rss = r["rss"]
            out.append(
                f"{case}: memory, retouch at {r['memory_size'][0]}x{r['memory_size'][1]}: "
                f"{r['short_frames']} frames {r['retouch_short']['wall_s']:.1f} s, "
                f"{r['long_frames']} frames {r['retouch_long']['wall_s']:.1f} s (extra frames at "
                f"{r.get('retouch_marginal_fps')} fps); peak RSS {rss['short_mb']:.0f} MB -> "
                f"{rss['long_mb']:.0f} MB: ratio {rss['ratio']} (process tree {rss['tree_ratio']})"
            )
        for which, d in (r.get("delivery") or {}).items():
            if "error" in d:
                out.append(f"{case}: delivered file ({which} clip): ERROR: {d['error']}")
                continue
            out.append(
                f"{case}: delivered file ({which} clip): frames {d['frames_out']}/{d['frames_in']} "
                f"{_yes(d['frames_equal'])}, every timestamp equal {_yes(d['timestamps_equal'])}, "
                f"audio present {_yes(d['audio_present'])}, audio duration "
                f"{d.get('audio_out_s')} s vs {d.get('audio_in_s')} s (within one audio frame "
                f"{d.get('audio_frame_s')} s) {_yes(d['audio_duration_equal'])}"
            )
        targets = ", ".join(f"{k} {_yes(v)}" for k, v in (r.get("targets") or {}).items())
        verdict = "INVALID" if not r.get("valid", True) else _yes(r.get("pass"))
        out.append(f"{case}: target {r['target']}: {targets}: {verdict}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.video")
    ap.add_argument("mode", choices=["baseline"])
    ap.add_argument("--preset", required=True, help="preset name or recipe file (as retouch's)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="override")
    ap.add_argument("--src", required=True, type=Path, help="folder holding the one clip")
    ap.add_argument("--dest", required=True, type=Path)
    ap.add_argument("--report", required=True, type=Path)
    ap.add_argument("--model-path", required=True, help="weight file")
    ap.add_argument("--device", default="cpu")
    return baseline(ap.parse_args(argv))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
