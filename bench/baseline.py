"""The baseline: plain loops written like the reference scripts.

``inference_realesrgan.py`` and ``inference_gfpgan.py`` build ``RealESRGANer`` / ``GFPGANer``
once, then loop ``cv2.imread -> enhance -> cv2.imwrite`` over the inputs, one tile and one
face per forward pass. The ``classic`` loop decodes with OpenCV, applies retouch's own
classic operations directly (same ops, same parameters) and encodes, so its compute is the
same as retouch's and any difference is orchestration. The ``inpaint`` loop is IOPaint's
``batch_inpaint`` with HD strategy "original": the LaMa file loaded once with spandrel's
``ModelLoader``, then each image and its mask (same stem in ``--masks``) through spandrel's
``MaskedImageModelDescriptor``, whole image, one at a time. The ``restyle`` loop is the
AnimeGANv2 PyTorch port's ``test.py``: the generator built once and the released state dict
(``paprika.pt``) loaded strictly, then per image ``cv2.imread -> BGR2RGB -> /127.5 - 1 ->
net(x, upsample_align=False) -> (out + 1) * 127.5 -> clip -> uint8 -> RGB2BGR ->
cv2.imwrite``, whole image, one per forward pass (sides must be multiples of 4: the script
does not pad). ``inpaint-op`` and ``restyle-op`` run the same loops through retouch's own
operation, so the loops then differ only in how the operation does the work.

Model settings (tile size, padding, scale) and the output format are read from the same
preset and overrides retouch is given, so both sides do the same work.

Run as ``python -m bench.baseline MODE --preset P [--set STEP.PARAM=V] --src DIR --dest DIR
--report FILE``.
"""

from __future__ import annotations

import argparse
import json
import time

T_START = time.time()

import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def _inputs(src: Path) -> list[Path]:
    return sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_EXTS)


def _writer(recipe: Any):
    """Encode like the recipe's export settings (format and JPEG/WebP quality; JPEG chroma
    at full resolution from quality 90, as retouch's encoder writes it, so both sides deliver
    the same pixels and pay for the same encoding)."""
    fmt = recipe.export.format
    quality = recipe.export.quality

    def write(path: Path, img: np.ndarray, src: Path) -> Path:
        ext = src.suffix.lower().lstrip(".") if fmt == "same" else fmt
        ext = "jpg" if ext == "jpeg" else ext
        params: list[int] = []
        if ext == "jpg":
            params = [cv2.IMWRITE_JPEG_QUALITY, quality]
            if quality >= 90:
                params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
        elif ext == "webp":
            params = [cv2.IMWRITE_WEBP_QUALITY, quality]
        out = path.with_suffix(f".{ext}")
        if not cv2.imwrite(str(out), img, params):
            raise RuntimeError(f"could not write {out}")
        return out

    return write


def _step(recipe: Any, op: str) -> Any:
    for step in recipe.steps:
        if step.op == op:
            return step.parsed()
    raise SystemExit(f"baseline: the recipe has no {op} step")


def build_upscaler(recipe: Any, model_path: str, device: str) -> Any:
    """RealESRGANer as ``inference_realesrgan.py`` builds it for RealESRGAN_x4plus."""
    import torch
    from basicsr.archs.rrdbnet_arch import RRDBNet
    from realesrgan import RealESRGANer

    p = _step(recipe, "upscale")
    model = RRDBNet(num_in_ch=3, num_out_ch=3, num_feat=64, num_block=23, num_grow_ch=32, scale=4)
    return RealESRGANer(
        scale=4,
        model_path=model_path,
        dni_weight=None,
        model=model,
        tile=p.tile,
        tile_pad=p.tile_pad,
        pre_pad=p.pre_pad,
        half=device.startswith("cuda"),
        device=torch.device(device),
    )


def build_restorer(recipe: Any, model_path: str, device: str) -> Any:
    """GFPGANer as ``inference_gfpgan.py`` builds it for v1.4 (no background upsampler, as
    the script does on CPU; the recipe's upscale factor)."""
    import torch
    from gfpgan import GFPGANer

    return GFPGANer(
        model_path=model_path,
        upscale=_step(recipe, "restore_faces").upscale,
        arch="clean",
        channel_multiplier=2,
        bg_upsampler=None,
        device=torch.device(device),
    )


def build_inpainter(recipe: Any, model_path: str, device: str, masks: Path) -> Any:
    """IOPaint's batch loop for LaMa with HD strategy "original": spandrel's descriptor
    loaded from the file, the whole image per call, masks binarised at 127 and grown as the
    recipe grows them; only the mask's pixels are pasted back (as IOPaint does)."""
    import torch
    from spandrel import ModelLoader

    p = _step(recipe, "inpaint")
    model = ModelLoader(device=torch.device(device)).load_from_file(model_path).eval()
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * p.dilate + 1, 2 * p.dilate + 1))
    by_stem = {m.stem: m for m in sorted(masks.iterdir())}

    def enhance(img: np.ndarray, path: Path) -> np.ndarray:
        mask = cv2.imread(str(by_stem[path.stem]), cv2.IMREAD_GRAYSCALE)
        mask = cv2.resize(mask, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_NEAREST)
        mask = np.where(mask > 127, 255, 0).astype(np.uint8)
        if p.dilate:
            mask = cv2.dilate(mask, kernel)
        rgb = torch.from_numpy(img[:, :, ::-1].copy()).permute(2, 0, 1)[None].float() / 255
        m = torch.from_numpy(mask > 0).float()[None, None]
        with torch.no_grad():
            out = model(rgb.to(device), m.to(device))
        res = (out[0].permute(1, 2, 0).clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
        res = np.ascontiguousarray(res[:, :, ::-1])
        return np.where(mask[:, :, None] > 0, res, img)

    return enhance


def build_inpaint_op(recipe: Any, device: str, masks: Path) -> Any:
    """The same loop through retouch's own inpaint operation (the recipe's parameters: the
    crop strategy), model from the model dir: the loops then differ only in the fill."""
    from retouch.lib.image import Image
    from retouch.lib.masks import MaskSource
    from retouch.lib.models.pool import ModelPool
    from retouch.lib.ops.base import OpContext
    from retouch.lib.ops.registry import registry

    op, params = registry().get("inpaint"), _step(recipe, "inpaint")
    source, pool = MaskSource(str(masks), 10**9), ModelPool()

    def enhance(img: np.ndarray, path: Path) -> np.ndarray:
        ctx = OpContext(name=path.name, device=device, pool=pool, masks=source)
        return op(Image(pixels=img), params, ctx).pixels

    # Load the model now, as the other modes do before their loop (the op's own pool entry).
    from retouch.lib.ops.inpaint import lama_entry

    pool.get(*lama_entry(params.model, device))
    return enhance


def build_stylizer(recipe: Any, model_path: str, device: str) -> Any:
    """AnimeGANv2's ``test.py`` (bryandlee/animegan2-pytorch): ``Generator()`` with the
    released state dict loaded strictly, ``.eval()``; each image converted to RGB in -1..1,
    the whole image through the generator with ``--upsample_align`` at the script's default
    (False: scale-factor upsampling, as the paprika weights need), then ``(out + 1) * 127.5``
    clipped and truncated to uint8. The port's generator is retouch's AnimeGANv2 module (the
    same module tree and state-dict keys; the port is not a package), built for the
    script's upsampling mode."""
    import torch

    from retouch.lib.models.families.animegan import _build

    p = _step(recipe, "restyle")
    if p.method != "generator" or p.work_side:
        raise SystemExit("baseline restyle: the port's script draws generators at full size")
    net = _build(align_corners=False).generator  # the script's --upsample_align default
    net.load_state_dict(torch.load(model_path, map_location="cpu"))
    net.to(device).eval()

    def enhance(img: np.ndarray, path: Path) -> np.ndarray:
        rgb = cv2.cvtColor(img.astype(np.float32), cv2.COLOR_BGR2RGB)
        image = torch.from_numpy(rgb) / 127.5 - 1.0
        with torch.no_grad():
            image = image.permute(2, 0, 1).unsqueeze(0).to(device)
            out = net(image).squeeze(0).permute(1, 2, 0).cpu().numpy()
            out = (out + 1) * 127.5
            out = np.clip(out, 0, 255).astype(np.uint8)
        return cv2.cvtColor(out, cv2.COLOR_RGB2BGR)

    return enhance


def build_restyle_op(recipe: Any, device: str) -> Any:
    """The same loop through retouch's own restyle operation (the recipe's parameters), model
    from the model dir and loaded before the loop, as the other modes load theirs."""
    from retouch.lib.image import Image
    from retouch.lib.models.families import get_family
    from retouch.lib.models.fetch import weights_key
    from retouch.lib.models.pool import ModelPool
    from retouch.lib.models.specs import get_spec
    from retouch.lib.ops.base import OpContext
    from retouch.lib.ops.registry import registry

    op, params = registry().get("restyle"), _step(recipe, "restyle")
    pool = ModelPool()

    def enhance(img: np.ndarray, path: Path) -> np.ndarray:
        ctx = OpContext(name=path.name, device=device, pool=pool)
        return op(Image(pixels=img), params, ctx).pixels

    # The pool key retouch.lib.ops.upscale.upscale_pixels uses for the generator.
    spec = get_spec(params.model)
    family = get_family(spec.kind)
    precision = family.dtype(spec, device, params.half)
    key = (params.model, device, precision, (weights_key(params.model),))
    pool.get(key, lambda: family.load(spec, device=device, dtype=precision))
    return enhance


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.baseline")
    ap.add_argument(
        "mode",
        choices=["upscale", "faces", "classic", "inpaint", "inpaint-op", "restyle", "restyle-op"],
    )
    ap.add_argument("--preset", required=True, help="preset name or recipe file (as retouch's)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="override")
    ap.add_argument("--src", required=True, type=Path)
    ap.add_argument("--dest", required=True, type=Path)
    ap.add_argument("--report", required=True, type=Path)
    ap.add_argument("--model-path", help="weight file (upscale, faces, inpaint, restyle)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--masks", type=Path, help="mask folder (inpaint)")
    args = ap.parse_args(argv)

    from retouch.lib.recipe import apply_overrides, load_preset

    recipe = apply_overrides(load_preset(args.preset), args.overrides)
    write = _writer(recipe)
    paths = _inputs(args.src)
    args.dest.mkdir(parents=True, exist_ok=True)

    torch = None
    if args.mode in (
        "upscale",
        "faces",
        "inpaint",
        "restyle",
    ):  # the classic loop does not pay for importing torch
        import torch

        # The same compatibility shim retouch uses (basicsr on current torchvision; facexlib's
        # detector and parser weights from the model dir instead of a download).
        from retouch.lib.models.compat import ensure_compat

        ensure_compat(lean=False)  # the packages import everything, as for the scripts
    t_imported = time.time()

    if args.mode == "upscale":
        upsampler = build_upscaler(recipe, args.model_path, args.device)
        outscale = _step(recipe, "upscale").outscale or 4

        def enhance(img: np.ndarray, path: Path) -> np.ndarray:
            return upsampler.enhance(img, outscale=outscale)[0]

    elif args.mode == "inpaint":
        enhance = build_inpainter(recipe, args.model_path, args.device, args.masks)

    elif args.mode == "inpaint-op":
        enhance = build_inpaint_op(recipe, args.device, args.masks)

    elif args.mode == "restyle":
        enhance = build_stylizer(recipe, args.model_path, args.device)

    elif args.mode == "restyle-op":
        enhance = build_restyle_op(recipe, args.device)

    elif args.mode == "faces":
        restorer = build_restorer(recipe, args.model_path, args.device)
        p = _step(recipe, "restore_faces")

        def enhance(img: np.ndarray, path: Path) -> np.ndarray:
            _, _, restored = restorer.enhance(
                img,
                has_aligned=False,
                only_center_face=p.only_center_face,
                paste_back=True,
                weight=p.weight,
            )
            return restored

    else:
        from retouch.lib.image import Image
        from retouch.lib.ops.base import OpContext
        from retouch.lib.ops.registry import registry

        steps = [(registry().get(s.op), s.parsed()) for s in recipe.steps]

        def enhance(img: np.ndarray, path: Path) -> np.ndarray:
            # A gray picture as three equal channels, flagged, and written back gray (as
            # retouch reads and writes one; its colour steps leave a gray image gray).
            gray = img.ndim == 2
            if gray:
                img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
            image = Image(pixels=img, is_gray=gray)
            ctx = OpContext(device=args.device)
            for op, params in steps:
                image = op(image, params, ctx)
            return image.pixels[..., 0] if gray else image.pixels

    t_loaded = time.time()
    per_image: list[float] = []
    first_result: float | None = None
    for path in paths:
        started = time.perf_counter()
        # The face and AnimeGAN scripts read with cv2.imread's default (3-channel BGR).
        colour = args.mode in ("faces", "restyle", "restyle-op")
        img = cv2.imread(str(path), cv2.IMREAD_COLOR if colour else cv2.IMREAD_UNCHANGED)
        if img is None:
            raise SystemExit(f"baseline: cannot read {path}")
        out = enhance(img, path)
        write(args.dest / path.stem, out, path)
        per_image.append(time.perf_counter() - started)
        if first_result is None:
            first_result = time.time()
    t_done = time.time()
    report = {
        "mode": args.mode,
        "images": len(paths),
        "device": args.device,
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "import_s": round(t_imported - T_START, 3),
        "load_s": round(t_loaded - t_imported, 3),
        "loop_s": round(t_done - t_loaded, 3),
        "per_image_s": [round(x, 4) for x in per_image],
        "first_result_epoch": first_result,
        "start_epoch": T_START,
    }
    if torch is not None and args.device.startswith("cuda"):
        report["cuda_max_memory_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    args.report.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
