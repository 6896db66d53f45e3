"""The model registry: every weight file retouch knows, as data.

Each :class:`ModelSpec` names one weight file, the network it belongs to, where the official
copy lives and how to check it. Code never branches on model names: loaders read ``arch`` and
``arch_kwargs`` from here. Sizes come from the official release pages; ``sha256`` is recorded
only where it was measured, never guessed (``None`` means "not known", and only the size is
checked).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from retouch.lib.errors import ModelError, UnknownNameError

ModelKind = str
"""A model family's name (:mod:`retouch.lib.models.families`)."""

_REALESRGAN = "https://github.com/xinntao/Real-ESRGAN/releases/download"
_GFPGAN = "https://github.com/TencentARC/GFPGAN/releases/download"
_FACEXLIB = "https://github.com/xinntao/facexlib/releases/download"

_REALESRGAN_LICENSE = (
    "Real-ESRGAN: BSD-3-Clause (check the upstream project for the weights' terms)"
)
_GFPGAN_LICENSE = "GFPGAN: Apache-2.0, with StyleGAN2 parts under their own terms (see upstream)"
_FACEXLIB_LICENSE = "facexlib: MIT (check the upstream project for the weights' terms)"
_LAMA = "https://github.com/Sanster/models/releases/download"
_LAMA_LICENSE = "LaMa: Apache-2.0 code, big-lama weights from the LaMa authors (see upstream)"
# The AnimeGANv2 PyTorch port keeps its released weights in the repository (torch.hub reads
# them from there). Sizes and checksums are not recorded: none was measured here.
_ANIMEGAN = "https://github.com/bryandlee/animegan2-pytorch/raw/main/weights"
_ANIMEGAN_LICENSE = "AnimeGANv2 PyTorch port: MIT (code and these weights, by the port's author)"
_ANIMEGAN_ORIGINAL_LICENSE = (
    "Converted from the original AnimeGANv2 weights: non-commercial use only "
    "(academic, teaching, research); commercial use needs its author's permission"
)


@dataclass(frozen=True)
class ModelSpec:
    """One weight file and how to build the network that reads it.

    Attributes:
        name: registry name used in recipes and on the command line.
        kind: the family that runs it (:mod:`retouch.lib.models.families`: "realesrgan",
            "gfpgan", "facexlib", "lama", "spandrel"...).
        arch: network class ("RRDBNet", "SRVGGNetCompact", "GFPGANv1Clean", ...).
        scale: native upscaling factor of the network (1 for face/helper models).
        filename: file name in the model dir, the mirror and the official URL.
        url: official download URL.
        size: file size in bytes, or None where not known.
        sha256: hex digest, or None where not known.
        arch_kwargs: keyword arguments of the network constructor.
        needs: registry names of helper models that must be present too.
        dni_partner: for denoise-strength interpolation, the "weak denoise" weights.
        description: one line for ``retouch models list``.
        license: a note on the upstream license.
        bundled: True for weights that ship inside retouch (``lib/models/weights/``): no
            download, no model dir; ``url`` is empty and ``sha256`` is still checked.
        purpose: what it is for ("upscale", "face", "inpaint", "restyle", "helper"); empty = the
            family's first purpose.
        md5: hex digest where the upstream publishes an md5 only, or None.
        origin: where the weights came from: "" for a shipped entry, the imported file's
            path or URL for a model registered by ``retouch models import``.
    """

    name: str
    kind: ModelKind
    arch: str
    scale: int
    filename: str
    url: str
    size: int | None = None
    sha256: str | None = None
    arch_kwargs: Mapping[str, Any] = field(default_factory=dict, hash=False)
    needs: tuple[str, ...] = ()
    dni_partner: str | None = None
    description: str = ""
    license: str = ""
    bundled: bool = False
    purpose: str = ""
    md5: str | None = None
    origin: str = ""

    @property
    def imported(self) -> bool:
        return bool(self.origin)


def _rrdb(num_block: int, scale: int) -> dict[str, Any]:
    return {
        "num_in_ch": 3,
        "num_out_ch": 3,
        "num_feat": 64,
        "num_block": num_block,
        "num_grow_ch": 32,
        "scale": scale,
    }


def _compact() -> dict[str, Any]:
    return {
        "num_in_ch": 3,
        "num_out_ch": 3,
        "num_feat": 64,
        "num_conv": 32,
        "upscale": 4,
        "act_type": "prelu",
    }


def _retouch_compact(scale: int) -> dict[str, Any]:
    # Small enough for a laptop CPU: a 512x512 image upscales x2 in well under a second here.
    return {
        "num_in_ch": 3,
        "num_out_ch": 3,
        "num_feat": 32,
        "num_conv": 10,
        "upscale": scale,
        "act_type": "prelu",
    }


_RETOUCH_LICENSE = (
    "retouch's own weights, same license as retouch (see docs/models/retouch-compact.md)"
)

_FACE_HELPERS = ("retinaface-resnet50", "parsenet")

_ALL: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="realesrgan-x4plus",
        kind="realesrgan",
        arch="RRDBNet",
        scale=4,
        filename="RealESRGAN_x4plus.pth",
        url=f"{_REALESRGAN}/v0.1.0/RealESRGAN_x4plus.pth",
        size=67_040_989,
        arch_kwargs=_rrdb(23, 4),
        description="General photos, x4 (RRDBNet, 23 blocks)",
        license=_REALESRGAN_LICENSE,
    ),
    ModelSpec(
        name="realesrgan-x2plus",
        kind="realesrgan",
        arch="RRDBNet",
        scale=2,
        filename="RealESRGAN_x2plus.pth",
        url=f"{_REALESRGAN}/v0.2.1/RealESRGAN_x2plus.pth",
        size=67_061_725,
        sha256="49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb",
        arch_kwargs=_rrdb(23, 2),
        description="General photos, x2 (RRDBNet, 23 blocks)",
        license=_REALESRGAN_LICENSE,
    ),
    ModelSpec(
        name="realesrnet-x4plus",
        kind="realesrgan",
        arch="RRDBNet",
        scale=4,
        filename="RealESRNet_x4plus.pth",
        url=f"{_REALESRGAN}/v0.1.1/RealESRNet_x4plus.pth",
        size=None,
        arch_kwargs=_rrdb(23, 4),
        description="General photos, x4, PSNR-oriented (smoother, fewer invented details)",
        license=_REALESRGAN_LICENSE,
    ),
    ModelSpec(
        name="realesrgan-x4plus-anime-6b",
        kind="realesrgan",
        arch="RRDBNet",
        scale=4,
        filename="RealESRGAN_x4plus_anime_6B.pth",
        url=f"{_REALESRGAN}/v0.2.2.4/RealESRGAN_x4plus_anime_6B.pth",
        size=17_938_799,
        arch_kwargs=_rrdb(6, 4),
        description="Anime and illustrations, x4 (RRDBNet, 6 blocks)",
        license=_REALESRGAN_LICENSE,
    ),
    ModelSpec(
        name="realesr-general-x4v3",
        kind="realesrgan",
        arch="SRVGGNetCompact",
        scale=4,
        filename="realesr-general-x4v3.pth",
        url=f"{_REALESRGAN}/v0.2.5.0/realesr-general-x4v3.pth",
        size=4_885_111,
        arch_kwargs=_compact(),
        dni_partner="realesr-general-wdn-x4v3",
        description="Small, fast general model, x4; supports denoise strength",
        license=_REALESRGAN_LICENSE,
    ),
    ModelSpec(
        name="realesr-general-wdn-x4v3",
        kind="realesrgan",
        arch="SRVGGNetCompact",
        scale=4,
        filename="realesr-general-wdn-x4v3.pth",
        url=f"{_REALESRGAN}/v0.2.5.0/realesr-general-wdn-x4v3.pth",
        size=4_885_111,
        arch_kwargs=_compact(),
        description="Weak-denoise variant of realesr-general-x4v3 (used for denoise strength)",
        license=_REALESRGAN_LICENSE,
    ),
    ModelSpec(
        name="retouch-compact-x2",
        kind="realesrgan",
        arch="SRVGGNetCompact",
        scale=2,
        filename="retouch-compact-x2.pth",
        url="",
        size=399_869,
        sha256="b126399515acbb121532a1f5f81aa6a489e11fee08630ecbc258316364a61b47",
        arch_kwargs=_retouch_compact(2),
        description="retouch's own small upscaler, x2; ships with retouch (fast on CPU)",
        license=_RETOUCH_LICENSE,
        bundled=True,
    ),
    ModelSpec(
        name="retouch-compact-x4",
        kind="realesrgan",
        arch="SRVGGNetCompact",
        scale=4,
        filename="retouch-compact-x4.pth",
        url="",
        size=441_533,
        sha256="f76051aa9b630d06e25ec1393641c038809d6462fa3f04006b6e71c0f0ba7eaa",
        arch_kwargs=_retouch_compact(4),
        description="retouch's own small upscaler, x4; ships with retouch (fast on CPU)",
        license=_RETOUCH_LICENSE,
        bundled=True,
    ),
    ModelSpec(
        name="gfpgan-v1.3",
        kind="gfpgan",
        arch="GFPGANv1Clean",
        scale=1,
        filename="GFPGANv1.3.pth",
        url=f"{_GFPGAN}/v1.3.0/GFPGANv1.3.pth",
        size=348_632_874,
        needs=_FACE_HELPERS,
        description="Face restoration, natural look",
        license=_GFPGAN_LICENSE,
    ),
    ModelSpec(
        name="gfpgan-v1.4",
        kind="gfpgan",
        arch="GFPGANv1Clean",
        scale=1,
        filename="GFPGANv1.4.pth",
        url=f"{_GFPGAN}/v1.3.0/GFPGANv1.4.pth",
        size=348_632_874,
        needs=_FACE_HELPERS,
        description="Face restoration, more detail than v1.3",
        license=_GFPGAN_LICENSE,
    ),
    ModelSpec(
        name="restoreformer",
        kind="gfpgan",
        arch="RestoreFormer",
        scale=1,
        filename="RestoreFormer.pth",
        url=f"{_GFPGAN}/v1.3.4/RestoreFormer.pth",
        size=290_785_322,
        needs=_FACE_HELPERS,
        description="Face restoration with RestoreFormer (run through GFPGAN's helper)",
        license=_GFPGAN_LICENSE,
    ),
    ModelSpec(
        name="retinaface-resnet50",
        kind="facexlib",
        arch="retinaface_resnet50",
        scale=1,
        filename="detection_Resnet50_Final.pth",
        url=f"{_FACEXLIB}/v0.1.0/detection_Resnet50_Final.pth",
        size=109_497_761,
        description="Face detector used by the face restoration models",
        license=_FACEXLIB_LICENSE,
    ),
    ModelSpec(
        name="parsenet",
        kind="facexlib",
        arch="parsenet",
        scale=1,
        filename="parsing_parsenet.pth",
        url=f"{_FACEXLIB}/v0.2.2/parsing_parsenet.pth",
        size=85_331_193,
        description="Face parsing used to blend restored faces back",
        license=_FACEXLIB_LICENSE,
    ),
    ModelSpec(
        name="big-lama",
        kind="lama",
        arch="LaMa",
        scale=1,
        filename="big-lama.pt",
        url=f"{_LAMA}/add_big_lama/big-lama.pt",
        md5="e3aa4aaa15225a33ec84f9f4bc47e500",
        description="Object and watermark removal (LaMa, 51M parameters; TorchScript file)",
        license=_LAMA_LICENSE,
    ),
    ModelSpec(
        name="animeganv2-face-paint-v2",
        kind="animegan",
        arch="AnimeGANv2",
        scale=1,
        filename="face_paint_512_v2.pt",
        url=f"{_ANIMEGAN}/face_paint_512_v2.pt",
        description="Portrait to painted anime face, v2 (AnimeGANv2 generator, trained on 512 px faces)",
        license=_ANIMEGAN_LICENSE,
    ),
    ModelSpec(
        name="animeganv2-face-paint-v1",
        kind="animegan",
        arch="AnimeGANv2",
        scale=1,
        filename="face_paint_512_v1.pt",
        url=f"{_ANIMEGAN}/face_paint_512_v1.pt",
        description="Portrait to painted anime face, v1 (stronger stylisation than v2)",
        license=_ANIMEGAN_LICENSE,
    ),
    ModelSpec(
        name="animeganv2-celeba-distill",
        kind="animegan",
        arch="AnimeGANv2",
        scale=1,
        filename="celeba_distill.pt",
        url=f"{_ANIMEGAN}/celeba_distill.pt",
        description="Faces to webtoon-like drawing (AnimeGANv2 generator, 256 px faces)",
        license=_ANIMEGAN_LICENSE,
    ),
    ModelSpec(
        name="animeganv2-paprika",
        kind="animegan",
        arch="AnimeGANv2",
        scale=1,
        filename="paprika.pt",
        url=f"{_ANIMEGAN}/paprika.pt",
        # Converted from TensorFlow, whose resize is not align-corners: the port's own
        # script runs these weights with scale-factor upsampling.
        arch_kwargs={"align_corners": False},
        description="Scenes and photos to anime (Paprika style, AnimeGANv2)",
        license=_ANIMEGAN_ORIGINAL_LICENSE,
    ),
)

# Looked up at call time (never captured), so tests can swap an entry with monkeypatch.setitem.
SPECS: dict[str, ModelSpec] = {spec.name: spec for spec in _ALL}


def _registered() -> dict[str, ModelSpec]:
    """The shipped specs followed by the models this machine imported (model dir)."""
    from retouch.lib.models.imported import imported_specs

    extra = imported_specs()
    if not extra:
        return SPECS
    return {**SPECS, **{k: v for k, v in extra.items() if k not in SPECS}}


def get_spec(name: str) -> ModelSpec:
    """The spec registered under ``name``; raises UnknownNameError listing the valid names."""
    found = SPECS.get(name)
    if found is not None:
        return found
    registered = _registered()
    try:
        return registered[name]
    except KeyError:
        raise UnknownNameError("model", name, registered) from None


def all_specs() -> list[ModelSpec]:
    """Every registered spec (shipped, then imported), in registry order."""
    return list(_registered().values())


def purpose_of(spec: ModelSpec) -> str:
    """What ``spec`` is for: its own ``purpose``, else its family's first purpose."""
    from retouch.lib.models.families import get_family

    return get_family(spec.kind).purpose(spec)


def names(kind: ModelKind | None = None, *, purpose: str | None = None) -> list[str]:
    """Registry names, optionally only those of one family (``kind``) or one purpose.

    Weak-denoise partners and helpers are listed under their own purpose, so an op's list of
    choices (``purpose="upscale"``) is every model that op can run.
    """
    return [
        s.name
        for s in _registered().values()
        if (kind is None or s.kind == kind) and (purpose is None or purpose_of(s) == purpose)
    ]


def check_purpose(name: str, purpose: str) -> str:
    """``name`` when it is a registered model of ``purpose``, else UnknownNameError listing
    the models that are (a pydantic validator of every op's ``model`` parameter)."""
    from retouch.lib.models.families import PURPOSE_WORDS

    registered = _registered()
    spec = registered.get(name)
    word = PURPOSE_WORDS.get(purpose, "model")
    if spec is None:
        raise UnknownNameError(word, name, names(purpose=purpose))
    other = purpose_of(spec)
    if other != purpose:
        valid = ", ".join(sorted(names(purpose=purpose)))
        raise ModelError(
            f"{name!r} is an {PURPOSE_WORDS.get(other, other)}, not an {word}; "
            f"valid {word}s: {valid}"
        )
    return name


def spec_for_filename(filename: str) -> ModelSpec | None:
    """The spec whose weight file is called ``filename`` (used by the facexlib redirect)."""
    for spec in SPECS.values():
        if spec.filename == filename:
            return spec
    return None


def required_models(name: str) -> list[str]:
    """``name`` followed by the helper models it needs, without duplicates."""
    spec = get_spec(name)
    out = [spec.name]
    for helper in spec.needs:
        if helper not in out:
            out.append(helper)
    return out
