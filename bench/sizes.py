"""How much work each case does (full and ``--quick``), the recipe each case runs on both
sides, and the targets printed as pass/FAIL."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    """How much work each case does (``--quick`` shrinks everything)."""

    upscale: list[tuple[int, int]]
    faces: list[tuple[int, int]]
    classic_count: int
    classic_size: tuple[int, int]
    scaling: tuple[int, int]
    leak_runs: int
    leak_images: int
    gpu_images: int
    inpaint: tuple[int, tuple[int, int]] = (3, (960, 720))
    """Images (count, size) of the inpaint case, each with two small masked regions."""
    restyle: tuple[int, list[tuple[int, int]]] = (6, [(512, 384), (384, 512), (560, 352)])
    """Images (count, sizes cycled) of the restyle case: sides multiples of 4, as the
    AnimeGANv2 port's script needs (it does not pad)."""
    classic_large: tuple[int, tuple[int, int]] = (200, (4000, 3000))
    """Photos (count, size) of the classic_large case: 12 MP, where the work dominates."""
    gpu_size: tuple[int, int] = (1920, 1080)
    upscale_steady: int = 3
    """The steady-state comparison runs the upscale sizes this many times over (0: not run)."""
    repeats: int = 2
    """Timed runs per side in the model cases, in alternating order (the fastest counts)."""
    soak_batches: int = 500
    """Most batches the soak case queues on its one ``retouch serve`` (it also stops at
    ``soak_minutes``)."""
    soak_minutes: float = 8.0
    """The soak case's time budget (``--soak-minutes``; ``--long``: hours, no batch cap)."""
    soak_every: int = 50
    """The soak case samples the serving process after every this many batches."""
    soak_images: int = 4
    """Images per soak batch (the first of the classic images)."""
    video_seconds: tuple[float, float] = (10.0, 60.0)
    """The video case's clips (seconds at 25 fps): both sides run the short one, retouch also
    the long one (peak RSS must not grow with the clip's length)."""
    video_size: tuple[int, int] = (640, 360)
    """Frame size of the clip both sides run (frames per second)."""
    video_memory_size: tuple[int, int] = (320, 180)
    """Frame size of the two clips retouch runs for memory (the short and the long one): what
    grows with a clip's length shows at any frame size, and smaller frames keep the 60 s run
    to minutes on a 2-core CPU."""
    video_gpu_seconds: float = 2.0
    """The video_gpu clip (``gpu_size`` frames, CUDA only)."""


FULL = Sizes(
    upscale=[(64, 64), (96, 64), (64, 96), (80, 80), (96, 72), (72, 96), (96, 96), (88, 64)],
    faces=[(96, 96), (112, 96), (96, 112)],
    classic_count=2000,
    classic_size=(96, 72),
    scaling=(20, 200),
    leak_runs=20,
    leak_images=4,
    gpu_images=8,
)
QUICK = Sizes(
    upscale=[(32, 32), (40, 32)],
    faces=[(64, 64)],
    classic_count=60,
    classic_size=(96, 72),
    scaling=(10, 40),
    leak_runs=3,
    leak_images=2,
    gpu_images=2,
    inpaint=(1, (320, 240)),
    restyle=(2, [(128, 96), (96, 128)]),
    classic_large=(6, (1600, 1200)),
    upscale_steady=2,
    repeats=1,
    soak_batches=20,
    soak_minutes=6.0,
    soak_every=5,
    video_seconds=(2.0, 6.0),
    video_size=(160, 90),
    video_memory_size=(160, 90),
    video_gpu_seconds=0.4,
)

# (preset, overrides) per case: retouch gets them as --preset/--set, the baseline applies the
# very same ones (bench.baseline), so configuration cannot drift between the two.
RECIPES: dict[str, tuple[str, list[str]]] = {
    "upscale": ("upscale-x4", []),
    "faces": ("portrait-restore", ["restore_faces.upscale=1"]),
    "classic": ("web-ready", ["fit.max_side=80"]),
    # Fitted inside 2048 px as the preset does: decoding, the levels and the resize of 12 MP,
    # then sharpening and encoding about 3 MP.
    "classic_large": ("web-ready", []),
    "leak": ("quick", []),
    "soak": ("quick", []),
    "inpaint": ("remove-objects", []),
    # Full size on both sides (the port's script draws at the image's own size) and PNG out
    # (the script writes the input's format; lossless, so the outputs can be compared).
    "restyle": ("anime", ["restyle.work_side=0", "export.format=png"]),
    # x2 with the compact model retouch ships (the baseline loads the same packaged file);
    # a video's encoding comes from export.video (H.264, CRF 18, x264's default preset).
    "video": ("upscale-x4", ["upscale.model=retouch-compact-x2"]),
    "video_gpu": ("upscale-x4", []),
    "firstresult": ("quick", []),
}

JPEG_TOLERANCE = 3
"""Most levels a delivered JPEG may differ from the loop's: the same pixels encoded by two
JPEG encoders (retouch's Pillow, the loop's OpenCV) at the same quality."""

TARGETS = {
    "upscale": "retouch throughput >= 1.0x baseline (CPU), steady state: per image once "
    "running, from the 8-image and 24-image runs (start-up is the coldstart case)",
    "upscale_gpu": "retouch throughput >= 2.0x baseline at 1080p (CUDA), the GPU >= 80% busy "
    "on average while it works (nvidia-smi every 250 ms, first to last busy sample)",
    "inpaint_gpu": "retouch throughput >= 2.0x baseline at 1080p (CUDA; LaMa, crop strategy "
    "against whole images); GPU utilisation reported",
    "restyle_gpu": "none (one float16 SD 1.5 UNet step at 512 px on CUDA, timed for the "
    "painting-sd estimate)",
    "inpaint": "none (reported; expected >= 3x: the crop strategy computes a fraction of "
    "the pixels)",
    "restyle": "loop ratio >= 1.0 (the script's loop vs the same loop through retouch's op; "
    "whole-run ratio reported)",
    "video": "retouch frames/s (whole run) >= 1.0x baseline (CPU); peak RSS(60 s clip) <= 1.2x "
    "peak RSS(10 s clip); every delivered file: frame count and every timestamp equal to the "
    "input's, audio present and as long (within one audio frame)",
    "video_gpu": "retouch frames/s (whole run) >= 2.0x baseline at 1080p, realesrgan-x4plus "
    "in fp16 (CUDA), the GPU >= 80% busy on average while it works; delivered file equal "
    "to the input in frames, timestamps and audio",
    "classic": "retouch throughput >= 0.7x a plain single-process loop over 2,000 small "
    "images (the flow's phases, review and versions included, on every core); outputs within "
    f"{JPEG_TOLERANCE} levels of the loop's",
    "classic_large": "retouch throughput >= 1.5x the loop over 200 photos of 12 MP; outputs "
    f"within {JPEG_TOLERANCE} levels of the loop's",
    "faces": "retouch throughput >= 1.1x the GFPGANer loop (whole run, CPU); outputs within "
    f"{JPEG_TOLERANCE} levels of the loop's",
    "firstresult": "the bundled samples through quick: a command that finds the background "
    "server running takes <= 1.5x the loop over the same ops (whole run), and its first image "
    "is reviewed <= 1.5 s after the loop's first result (both from the command's start)",
    "scaling": "peak RSS(200 images) <= 1.2x peak RSS(20 images)",
    "leak": "RSS (and CUDA memory) after every batch within 5% of the level after the first",
    "soak": "one `retouch serve` through many 4-image batches: its RSS, open fds, threads and "
    "child processes at the last sample within 5% of the sample at batch 50 (--quick: 5); no "
    "failed batch; API latency flat (median of the last 3 samples within 2x the first 3's)",
}
