"""Tiny random-weight Stable Diffusion checkpoints for the diffusion img2img tests.

No download: every component is built here from a small config (UNet ~0.5M parameters, a
VAE with Stable Diffusion's 8x latent scale, a 2-layer CLIP text encoder and a CLIP BPE
tokenizer written from a byte-level vocabulary), assembled into diffusers' own
StableDiffusionImg2ImgPipeline and saved as a diffusers folder. Outputs are meaningless
pictures; the tests check shapes, ranges, determinism and the error paths.

Single-file helpers write safetensors files that only look like checkpoints from their key
names (the checks read key names and shapes, never the values).

ControlNets are diffusers' ControlNetModel built from the tiny UNet (``from_unet``), with the
zero-initialised output convolutions given random weights (a fresh ControlNet adds exactly
nothing) and a condition encoder with larger random weights, so that a ControlNet and its
condition picture visibly change a result.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

MAX_TOKENS = 77


def _bytes_to_unicode() -> list[str]:
    """The 256 printable characters CLIP's byte-level BPE maps the bytes to (GPT-2's table)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def write_tokenizer_files(folder: Path) -> Path:
    """A CLIP BPE vocabulary with no merges: every byte-level character, alone and as a word
    end (``</w>``), plus the start and end tokens (514 ids). Words tokenize one character per
    token, so a prompt's token count is its letter count plus two."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = _bytes_to_unicode()
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return folder


def tiny_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    write_tokenizer_files(folder)
    return CLIPTokenizer.from_pretrained(str(folder), model_max_length=MAX_TOKENS)


def tiny_unet():
    """The SD 1.x-like UNet of :func:`tiny_components` (~0.8M parameters, 32-wide text)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )


def tiny_sdxl_unet():
    """The SDXL-like UNet of :func:`make_tiny_sdxl_folder` (size/crop conditioning)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * 8 + 32,  # 6 size/crop ids + pooled text
        cross_attention_dim=64,  # both text encoders' hidden states side by side
        norm_num_groups=8,
    )


def tiny_components(scratch: Path) -> dict:
    """The pipeline's components, random but deterministic (torch.manual_seed(0)); the
    tokenizer's source files are written to ``scratch``."""
    from diffusers import AutoencoderKL, PNDMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_tokenizer(scratch / "tokenizer-src")
    torch.manual_seed(0)
    unet = tiny_unet()
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 16, 32, 32),  # 4 levels: the 8x latent scale of real SD
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=64,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            vocab_size=1000,
            max_position_embeddings=MAX_TOKENS,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            layer_norm_eps=1e-5,
        )
    ).eval()
    scheduler = PNDMScheduler(  # Stable Diffusion 1.5's scheduler config
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        set_alpha_to_one=False,
        skip_prk_steps=True,
        steps_offset=1,
    )
    return {
        "unet": unet.eval(),
        "vae": vae.eval(),
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "scheduler": scheduler,
    }


def set_class_name(folder: Path, class_name: str | None) -> None:
    """Rename the pipeline class in model_index.json (real checkpoints are saved as the
    text-to-image pipeline, StableDiffusionPipeline / StableDiffusionXLPipeline)."""
    if class_name is None:
        return
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text(encoding="utf-8"))
    index["_class_name"] = class_name
    index_path.write_text(json.dumps(index, indent=2), encoding="utf-8")


def make_tiny_pipeline_folder(path: str | Path, *, class_name: str | None = None) -> Path:
    """A diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/,
    scheduler/) of a tiny random StableDiffusionImg2ImgPipeline; returns the folder.
    ``class_name`` renames the pipeline class in model_index.json."""
    from diffusers import StableDiffusionImg2ImgPipeline

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        components = tiny_components(Path(scratch))
    pipe = StableDiffusionImg2ImgPipeline(
        **components, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.save_pretrained(str(folder), safe_serialization=True)
    set_class_name(folder, class_name)
    return folder


def make_tiny_sdxl_folder(path: str | Path, *, class_name: str | None = None) -> Path:
    """A diffusers folder of a tiny random StableDiffusionXLImg2ImgPipeline (two text
    encoders, the second with a projection; a UNet with SDXL's size/crop conditioning)."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = tiny_tokenizer(Path(scratch) / "tok")
        tokenizer_2 = tiny_tokenizer(Path(scratch) / "tok2")
    torch.manual_seed(0)
    unet = tiny_sdxl_unet()
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 16, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=64,
    )
    config = CLIPTextConfig(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=1000,
        max_position_embeddings=MAX_TOKENS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        projection_dim=32,
        layer_norm_eps=1e-5,
    )
    scheduler = EulerDiscreteScheduler(  # SDXL's scheduler config
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
        timestep_spacing="leading",
    )
    pipe = StableDiffusionXLImg2ImgPipeline(
        vae=vae.eval(),
        text_encoder=CLIPTextModel(config).eval(),
        text_encoder_2=CLIPTextModelWithProjection(config).eval(),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet.eval(),
        scheduler=scheduler,
        requires_aesthetics_score=False,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    pipe.save_pretrained(str(folder), safe_serialization=True)
    set_class_name(folder, class_name)
    return folder


_ZERO_INITIALISED = ("controlnet_down_blocks.", "controlnet_mid_block.")
_CONDITION_ENCODER = "controlnet_cond_embedding."


def make_tiny_controlnet_folder(path: str | Path, *, sdxl: bool = False, seed: int = 1) -> Path:
    """A diffusers folder (config.json + diffusion_pytorch_model.safetensors) of a tiny random
    ControlNetModel made from the tiny UNet (SDXL's when ``sdxl``) with diffusers'
    ``ControlNetModel.from_unet``; its zero convolutions and its condition encoder get random
    weights from ``seed`` (the encoder's larger than torch's default: with those, the
    condition picture hardly shows through the tiny random network)."""
    from diffusers import ControlNetModel

    torch.manual_seed(0)
    unet = tiny_sdxl_unet() if sdxl else tiny_unet()
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 16, 16))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in controlnet.named_parameters():
            if name.startswith(_CONDITION_ENCODER):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
            elif name.startswith(_ZERO_INITIALISED):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    folder = Path(path)
    controlnet.eval().save_pretrained(str(folder), safe_serialization=True)
    return folder


def make_tiny_controlnet_file(
    path: str | Path, *, width: int = 32, sdxl: bool = False, prefix: str = "control_model."
) -> Path:
    """A .safetensors whose key names look like an original-format ControlNet (lllyasviel's
    layout: ``control_model.input_hint_block``, zero convs, a cross-attention of ``width``;
    SDXL ones have ``label_emb``). Enough for the key checks, not for a load."""
    tensors = {
        f"{prefix}input_hint_block.0.weight": torch.zeros(16, 3, 3, 3),
        f"{prefix}time_embed.0.weight": torch.zeros(8, 8),
        f"{prefix}zero_convs.0.0.weight": torch.zeros(8, 8, 1, 1),
        f"{prefix}input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": torch.zeros(8, width),
    }
    if sdxl:
        tensors[f"{prefix}label_emb.0.0.weight"] = torch.zeros(8, 16)
    return _save(tensors, path)


def _save(tensors: dict[str, torch.Tensor], path: str | Path) -> Path:
    from safetensors.torch import save_file

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out))
    return out


def make_tiny_single_file(path: str | Path, *, sdxl: bool = False) -> Path:
    """A .safetensors whose key names look like an original (CompVis / Stability) Stable
    Diffusion checkpoint: a few tiny tensors under ``model.diffusion_model.input_blocks``,
    the VAE's ``first_stage_model.`` and the text encoder's ``cond_stage_model.`` (SDXL:
    ``conditioner.embedders.0/1.``). Enough for the key checks, not for a real load."""
    tensors = {
        "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, 4, 3, 3),
        "model.diffusion_model.input_blocks.0.0.bias": torch.zeros(8),
        "model.diffusion_model.out.2.weight": torch.zeros(4, 8, 3, 3),
        "first_stage_model.encoder.conv_in.weight": torch.zeros(8, 3, 3, 3),
    }
    if sdxl:
        tensors[
            "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight"
        ] = torch.zeros(77, 8)
        tensors["conditioner.embedders.1.model.positional_embedding"] = torch.zeros(77, 8)
    else:
        tensors["cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"] = (
            torch.zeros(77, 8)
        )
    return _save(tensors, path)


def make_tiny_ckpt(path: str | Path) -> Path:
    """A zip-format torch checkpoint laid out like the original Stable Diffusion ``.ckpt``
    (``{"state_dict": {...}, "global_step": N}``) with a few tiny tensors."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, 4, 3, 3),
        "model.diffusion_model.out.2.weight": torch.zeros(4, 8, 3, 3),
        "first_stage_model.encoder.conv_in.weight": torch.zeros(8, 3, 3, 3),
        "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight": (
            torch.zeros(77, 8)
        ),
    }
    torch.save({"state_dict": state, "global_step": 470000}, out)
    return out


def make_not_diffusion_file(path: str | Path) -> Path:
    """A valid .safetensors of another kind of network (an ESRGAN-like upscaler's keys)."""
    return _save(
        {
            "conv_first.weight": torch.zeros(8, 3, 3, 3),
            "conv_first.bias": torch.zeros(8),
            "conv_last.weight": torch.zeros(3, 8, 3, 3),
        },
        path,
    )


def truncate(path: str | Path, keep: float = 0.5) -> Path:
    """Cut a file to ``keep`` of its size (a download that stopped half way)."""
    p = Path(path)
    data = p.read_bytes()
    p.write_bytes(data[: max(1, int(len(data) * keep))])
    return p
