"""Stable Diffusion img2img (lib/models/diffusion/) on tiny random checkpoints.

The checkpoints are built here (tests/diffusion_models.py): a diffusers folder of a tiny
StableDiffusionImg2ImgPipeline (and one of SDXL), loaded through the real diffusers code
with nothing downloaded. Outputs are meaningless pictures, so the tests check sizes, ranges,
determinism, scheduler handling and the checks and errors on checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from retouch.lib.errors import ModelError, ModelNotAvailableError, UnknownNameError  # noqa: E402
from retouch.lib.models import diffusion  # noqa: E402
from retouch.lib.models.diffusion import (  # noqa: E402
    INSTALL_HINT,
    SCHEDULERS,
    check_checkpoint,
    checkpoint_id,
    img2img,
    load_pipeline,
    prompt_note,
    require_diffusers,
    seed_for,
    token_limit_note,
)
from tests import diffusion_models  # noqa: E402

RUN = {
    "prompt": "an oil painting",
    "negative_prompt": "blurry",
    "strength": 0.6,
    "steps": 4,
    "guidance": 7.5,
    "scheduler": "default",
    "seed": 7,
}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("diffusion-models")


@pytest.fixture(scope="module")
def tiny_folder(models) -> Path:
    return diffusion_models.make_tiny_pipeline_folder(models / "tiny-sd")


@pytest.fixture(scope="module")
def pipe(tiny_folder):
    return load_pipeline(str(tiny_folder), device="cpu", dtype="fp32")


@pytest.fixture
def rgb() -> np.ndarray:
    """40x56 RGB: a smooth gradient with a little noise, float32 in 0..1."""
    h, w = 40, 56
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([x / (w - 1), y / (h - 1), 0.5 + 0 * x], axis=-1)
    noise = np.random.default_rng(3).normal(0, 0.03, (h, w, 3))
    return np.clip(base + noise, 0, 1).astype(np.float32)


@pytest.fixture
def no_network(monkeypatch):
    """Any socket connection raises (and is recorded): nothing may be fetched."""
    attempts: list[object] = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access is forbidden in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


# --------------------------------------------------------------------------- running


def test_importing_the_module_imports_neither_torch_nor_diffusers():
    code = (
        "import sys\n"
        "import retouch.lib.models.diffusion\n"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]\n"
        "print(heavy)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_load_pipeline_folder_and_img2img_end_to_end(pipe, rgb):
    import torch

    assert type(pipe).__name__ == "StableDiffusionImg2ImgPipeline"
    assert pipe.safety_checker is None
    assert pipe._progress_bar_config.get("disable") is True
    assert pipe.unet.dtype == torch.float32  # fp16 asked on CPU still loads float32
    out = img2img(pipe, rgb, **RUN)
    assert out.shape == rgb.shape
    assert out.dtype == np.float32
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    assert float(np.abs(out - rgb).mean()) > 0.01  # re-drawn, not passed through


def test_same_seed_gives_identical_bytes_and_another_seed_differs(pipe, rgb):
    first = img2img(pipe, rgb, **RUN)
    again = img2img(pipe, rgb, **RUN)
    assert first.tobytes() == again.tobytes()
    other = img2img(pipe, rgb, **{**RUN, "seed": RUN["seed"] + 1})
    assert float(np.abs(other - first).max()) > 1e-3


@pytest.mark.parametrize("shape", [(33, 21, 3), (8, 8, 3), (1, 5, 3)])
def test_sides_that_are_not_multiples_of_8_come_back_at_their_size(pipe, shape):
    rgb = np.random.default_rng(0).random(shape, dtype=np.float32)
    out = img2img(pipe, rgb, **{**RUN, "steps": 2})
    assert out.shape == shape


@pytest.mark.parametrize("name", SCHEDULERS)
def test_each_scheduler_runs_and_the_checkpoints_own_stays(pipe, rgb, name):
    own = pipe.scheduler
    out = img2img(pipe, rgb, **{**RUN, "scheduler": name})
    assert out.shape == rgb.shape and 0.0 <= out.min() and out.max() <= 1.0
    assert pipe.scheduler is own  # the swap does not outlive the call
    assert type(pipe.scheduler).__name__ == "PNDMScheduler"


def test_a_swapped_scheduler_does_not_leak_into_a_later_default_call(pipe, rgb):
    before = img2img(pipe, rgb, **RUN)
    euler = img2img(pipe, rgb, **{**RUN, "scheduler": "euler_a"})
    after = img2img(pipe, rgb, **RUN)
    assert before.tobytes() == after.tobytes()
    assert euler.tobytes() != before.tobytes()


def test_img2img_refuses_unknown_schedulers_and_bad_parameters(pipe, rgb):
    with pytest.raises(UnknownNameError, match="scheduler 'karras'"):
        img2img(pipe, rgb, **{**RUN, "scheduler": "karras"})
    with pytest.raises(ValueError, match="strength"):
        img2img(pipe, rgb, **{**RUN, "strength": 0.0})
    with pytest.raises(ValueError, match="at least 10 steps"):
        img2img(pipe, rgb, **{**RUN, "strength": 0.1, "steps": 5})
    with pytest.raises(ValueError, match="HxWx3"):
        img2img(pipe, rgb[..., 0], **RUN)


def test_seed_for_is_stable_and_sensitive_to_each_input():
    base = seed_for("digest-a", '{"strength":0.5}', 0)
    assert base == seed_for("digest-a", '{"strength":0.5}', 0)
    assert 0 <= base < 2**63
    others = {
        seed_for("digest-b", '{"strength":0.5}', 0),
        seed_for("digest-a", '{"strength":0.6}', 0),
        seed_for("digest-a", '{"strength":0.5}', 1),
    }
    assert base not in others and len(others) == 3


def test_token_limit_note_on_a_long_prompt(pipe):
    assert pipe.tokenizer.model_max_length == 77
    # The tiny vocabulary has no merges: "word" is 4 tokens, plus start and end.
    note = token_limit_note(pipe, "word " * 30)
    assert note == "prompt is 122 tokens; the text encoder reads the first 77, the rest is ignored"
    assert token_limit_note(pipe, "a red barn at dusk") is None
    assert token_limit_note(pipe, "") is None


def test_prompt_note_reads_only_the_folders_tokenizer(tiny_folder, tmp_path):
    note = prompt_note(str(tiny_folder), "word " * 30)
    assert note == "prompt is 122 tokens; the text encoder reads the first 77, the rest is ignored"
    assert prompt_note(str(tiny_folder), "a red barn at dusk") is None
    # No tokenizer to read here: no note (check_checkpoint reports real problems).
    single = diffusion_models.make_tiny_single_file(tmp_path / "sd15.safetensors")
    assert prompt_note(str(single), "word " * 30) is None
    assert prompt_note(str(tmp_path / "missing"), "word " * 30) is None


def test_a_folder_saved_as_the_text_to_image_pipeline_loads_as_img2img(tiny_folder, models):
    folder = models / "as-txt2img"
    if not folder.exists():
        shutil.copytree(tiny_folder, folder)
        diffusion_models.set_class_name(folder, "StableDiffusionPipeline")
    loaded = load_pipeline(str(folder), device="cpu", dtype="fp32")
    assert type(loaded).__name__ == "StableDiffusionImg2ImgPipeline"


def test_sdxl_folder_loads_the_sdxl_pipeline_and_runs(models, rgb):
    folder = diffusion_models.make_tiny_sdxl_folder(
        models / "tiny-sdxl", class_name="StableDiffusionXLPipeline"
    )
    assert check_checkpoint(str(folder)) == "folder"
    xl = load_pipeline(str(folder), device="cpu", dtype="fp32")
    assert type(xl).__name__ == "StableDiffusionXLImg2ImgPipeline"
    first = img2img(xl, rgb, **{**RUN, "scheduler": "dpmpp"})
    assert first.shape == rgb.shape
    assert first.tobytes() == img2img(xl, rgb, **{**RUN, "scheduler": "dpmpp"}).tobytes()


# --------------------------------------------------------------------------- checking


def test_check_checkpoint_accepts_a_folder_and_single_files(tiny_folder, tmp_path):
    assert check_checkpoint(str(tiny_folder)) == "folder"
    sd = diffusion_models.make_tiny_single_file(tmp_path / "sd15.safetensors")
    xl = diffusion_models.make_tiny_single_file(tmp_path / "sdxl.safetensors", sdxl=True)
    assert check_checkpoint(str(sd)) == "file"
    assert check_checkpoint(str(xl)) == "file"
    ckpt = diffusion_models.make_tiny_ckpt(tmp_path / "sd15.ckpt")
    assert check_checkpoint(str(ckpt)) == "file"


def test_check_checkpoint_missing_path(tmp_path):
    missing = tmp_path / "nowhere" / "sd15.safetensors"
    with pytest.raises(ModelNotAvailableError) as info:
        check_checkpoint(str(missing))
    text = str(info.value)
    assert str(missing) in text and "does not exist" in text
    assert "Stable Diffusion 1.x/SDXL checkpoint" in text
    assert ".safetensors file or a diffusers folder" in text


def test_check_checkpoint_folder_without_model_index(tmp_path):
    folder = tmp_path / "some-folder"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="without model_index.json") as info:
        check_checkpoint(str(folder))
    assert str(folder) in str(info.value)


def test_check_checkpoint_model_index_of_another_pipeline(tiny_folder, tmp_path):
    folder = tmp_path / "flux"
    shutil.copytree(tiny_folder, folder)
    diffusion_models.set_class_name(folder, "FluxPipeline")
    with pytest.raises(ModelError) as info:
        check_checkpoint(str(folder))
    text = str(info.value)
    assert str(folder / "model_index.json") in text and "'FluxPipeline'" in text
    assert "not a Stable Diffusion" in text


def test_check_checkpoint_truncated_model_index(tiny_folder, tmp_path):
    folder = tmp_path / "cut-index"
    shutil.copytree(tiny_folder, folder)
    diffusion_models.truncate(folder / "model_index.json", 0.5)
    with pytest.raises(ModelError, match="unreadable or truncated") as info:
        check_checkpoint(str(folder))
    assert str(folder / "model_index.json") in str(info.value)


def test_check_checkpoint_folder_with_a_truncated_weight_file(tiny_folder, tmp_path):
    folder = tmp_path / "cut-unet"
    shutil.copytree(tiny_folder, folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    diffusion_models.truncate(weights, 0.6)
    with pytest.raises(ModelError, match="truncated or unreadable") as info:
        check_checkpoint(str(folder))
    assert str(weights) in str(info.value)


def test_check_checkpoint_folder_missing_a_component(tiny_folder, tmp_path):
    folder = tmp_path / "no-vae"
    shutil.copytree(tiny_folder, folder)
    shutil.rmtree(folder / "vae")
    with pytest.raises(ModelError, match="missing or empty") as info:
        check_checkpoint(str(folder))
    assert str(folder / "vae") in str(info.value)


def test_check_checkpoint_inpainting_unet(tiny_folder, tmp_path):
    folder = tmp_path / "inpainting"
    shutil.copytree(tiny_folder, folder)
    config_path = folder / "unet" / "config.json"
    config = json.loads(config_path.read_text())
    config["in_channels"] = 9
    config_path.write_text(json.dumps(config))
    with pytest.raises(ModelError, match="inpainting") as info:
        check_checkpoint(str(folder))
    assert str(folder) in str(info.value)


def test_check_checkpoint_safetensors_without_unet_keys(tmp_path):
    path = diffusion_models.make_not_diffusion_file(tmp_path / "upscaler.safetensors")
    with pytest.raises(ModelError) as info:
        check_checkpoint(str(path))
    text = str(info.value)
    assert str(path) in text and "model.diffusion_model." in text
    assert "not a Stable Diffusion checkpoint" in text


@pytest.mark.parametrize("name", ["sd15.safetensors", "sd15.ckpt"])
def test_check_checkpoint_truncated_single_file(tmp_path, name):
    path = tmp_path / name
    if name.endswith(".ckpt"):
        diffusion_models.make_tiny_ckpt(path)
    else:
        diffusion_models.make_tiny_single_file(path)
    diffusion_models.truncate(path, 0.7)
    with pytest.raises(ModelError, match="truncated or unreadable") as info:
        check_checkpoint(str(path))
    assert str(path) in str(info.value)


def test_check_checkpoint_other_file_types(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\0" * 16)
    with pytest.raises(ModelError, match=r"\.safetensors or \.ckpt") as info:
        check_checkpoint(str(path))
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------- identity


def test_checkpoint_id_of_a_file_is_its_sha256(tmp_path):
    path = diffusion_models.make_tiny_single_file(tmp_path / "sd15.safetensors")
    assert checkpoint_id(str(path)) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_checkpoint_id_of_a_folder_follows_configs_and_weights(tiny_folder, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(tiny_folder, folder)
    first = checkpoint_id(str(folder))
    assert len(first) == 64 and int(first, 16) >= 0
    assert checkpoint_id(str(folder)) == first
    assert checkpoint_id(str(tiny_folder)) == first  # content, not place

    config_path = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    config["steps_offset"] = 0
    config_path.write_text(json.dumps(config))
    changed_config = checkpoint_id(str(folder))
    assert changed_config != first

    weights = folder / "vae" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert checkpoint_id(str(folder)) not in (first, changed_config)


def test_checkpoint_id_missing_path(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="does not exist"):
        checkpoint_id(str(tmp_path / "gone.safetensors"))


# --------------------------------------------------------------------------- loading errors


def test_load_pipeline_single_file_needs_configs_it_would_download(
    tmp_path, monkeypatch, no_network
):
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    offline_before = hub.HF_HUB_OFFLINE
    path = diffusion_models.make_tiny_single_file(tmp_path / "sd15.safetensors")
    with pytest.raises(ModelError) as info:
        load_pipeline(str(path), device="cpu", dtype="fp32")
    text = str(info.value)
    assert str(path) in text
    assert "would download" in text and "diffusers folder" in text
    assert "save_pretrained" in text and "from_single_file" in text
    assert no_network == []  # not even tried
    assert hub.HF_HUB_OFFLINE == offline_before  # offline only during the load


def test_load_pipeline_failure_names_the_path_and_the_reason(tiny_folder, tmp_path):
    folder = tmp_path / "broken-unet"
    shutil.copytree(tiny_folder, folder)
    config_path = folder / "unet" / "config.json"
    config = json.loads(config_path.read_text())
    config["down_block_types"] = ["NoSuchBlock2D", "DownBlock2D"]
    config_path.write_text(json.dumps(config))
    assert check_checkpoint(str(folder)) == "folder"  # only a load finds this one
    with pytest.raises(ModelError) as info:
        load_pipeline(str(folder), device="cpu", dtype="fp32")
    text = str(info.value)
    assert f"could not load the Stable Diffusion checkpoint {folder}" in text
    assert "NoSuchBlock2D" in text


# --------------------------------------------------------------------------- packages


@pytest.mark.parametrize("package", ["diffusers", "transformers"])
def test_require_diffusers_names_the_install_command(monkeypatch, package, tiny_folder):
    monkeypatch.setitem(sys.modules, package, None)  # import fails as if not installed
    with pytest.raises(ModelError) as info:
        require_diffusers()
    text = str(info.value)
    assert "needs the optional packages diffusers and transformers" in text
    assert INSTALL_HINT in text and f"missing here: {package}" in text
    with pytest.raises(ModelError, match="retouch\\[diffusion\\]"):
        load_pipeline(str(tiny_folder), device="cpu", dtype="fp32")


def test_require_diffusers_passes_when_installed():
    require_diffusers()
    assert diffusion.INSTALL_HINT == "pip install 'retouch[diffusion]'"


# --------------------------------------------------------------------------- controlnet


@pytest.fixture(scope="module")
def tiny_cn(models) -> Path:
    return diffusion_models.make_tiny_controlnet_folder(models / "tiny-controlnet")


@pytest.fixture(scope="module")
def cn_pipe(tiny_folder, tiny_cn):
    return load_pipeline(str(tiny_folder), device="cpu", dtype="fp32", controlnet=str(tiny_cn))


def _step(h: int = 40, w: int = 56, column: int = 23) -> np.ndarray:
    """Dark left of ``column``, light from it on: one vertical edge."""
    rgb = np.full((h, w, 3), 0.2, np.float32)
    rgb[:, column:] = (0.9, 0.8, 0.7)
    return rgb


def test_canny_edges_are_white_on_black_along_the_pictures_edge():
    edges = diffusion.canny_edges(_step(), 100, 200)
    assert edges.shape == (40, 56, 3) and edges.dtype == np.float32
    assert set(np.unique(edges)) == {0.0, 1.0}  # white edges on black
    assert np.array_equal(edges[..., 0], edges[..., 2])
    columns = np.flatnonzero(edges[..., 0].any(axis=0))
    assert set(columns) <= {22, 23} and edges[:, 22:24, 0].any(axis=1).all()  # the whole step
    assert not diffusion.canny_edges(np.full((16, 16, 3), 0.5, np.float32)).any()
    faint = _step() * 0.1 + 0.45  # a step of ~4 levels: below the lower threshold
    assert not diffusion.canny_edges(faint, 100, 200).any()
    assert diffusion.canny_edges(faint, 1, 2).any()
    with pytest.raises(ValueError, match="HxWx3"):
        diffusion.canny_edges(_step()[..., 0])
    with pytest.raises(ValueError, match="low <= high"):
        diffusion.canny_edges(_step(), 200, 100)


def test_a_controlnet_pipeline_follows_the_control_picture(cn_pipe, pipe, rgb):
    assert type(cn_pipe).__name__ == "StableDiffusionControlNetImg2ImgPipeline"
    assert type(cn_pipe.controlnet).__name__ == "ControlNetModel"
    assert cn_pipe.safety_checker is None
    assert cn_pipe._progress_bar_config.get("disable") is True
    edges = diffusion.canny_edges(_step(), 100, 200)
    run = {**RUN, "steps": 2, "strength": 1.0}
    out = img2img(cn_pipe, rgb, **run, control=edges)
    assert out.shape == rgb.shape and out.dtype == np.float32
    assert out.tobytes() == img2img(cn_pipe, rgb, **run, control=edges).tobytes()
    plain = img2img(pipe, rgb, **run)
    assert float(np.abs(out - plain).max()) > 1e-3  # the ControlNet changed the result
    other = img2img(cn_pipe, rgb, **run, control=diffusion.canny_edges(_step(column=9)))
    assert float(np.abs(other - out).max()) > 1e-3  # and it follows the picture's edges
    # Scale 0: the ControlNet adds nothing, the result is plain img2img's.
    zero = img2img(cn_pipe, rgb, **run, control=edges, control_scale=0.0)
    assert np.allclose(zero, plain, atol=1e-5)


def test_img2img_refuses_a_control_picture_it_cannot_use(cn_pipe, pipe, rgb):
    edges = diffusion.canny_edges(rgb)
    with pytest.raises(ValueError, match="give a control picture"):
        img2img(cn_pipe, rgb, **RUN)
    with pytest.raises(ValueError, match="needs a pipeline loaded with a ControlNet"):
        img2img(pipe, rgb, **RUN, control=edges)
    with pytest.raises(ValueError, match="image's size"):
        img2img(cn_pipe, rgb, **RUN, control=edges[:-1])


def test_sdxl_with_a_controlnet_loads_the_sdxl_controlnet_pipeline(models, rgb):
    folder = models / "tiny-sdxl"
    if not folder.exists():
        diffusion_models.make_tiny_sdxl_folder(folder, class_name="StableDiffusionXLPipeline")
    cn = diffusion_models.make_tiny_controlnet_folder(models / "tiny-controlnet-xl", sdxl=True)
    assert diffusion.check_controlnet(str(cn), checkpoint=str(folder)) == "folder"
    xl = load_pipeline(str(folder), device="cpu", dtype="fp32", controlnet=str(cn))
    assert type(xl).__name__ == "StableDiffusionXLControlNetImg2ImgPipeline"
    out = img2img(xl, rgb, **{**RUN, "steps": 2}, control=diffusion.canny_edges(rgb))
    assert out.shape == rgb.shape


def test_check_controlnet_accepts_folders_and_single_files(tiny_cn, tiny_folder, tmp_path):
    assert diffusion.check_controlnet(str(tiny_cn)) == "folder"
    assert diffusion.check_controlnet(str(tiny_cn), checkpoint=str(tiny_folder)) == "folder"
    for prefix in ("control_model.", ""):  # some releases strip the prefix
        path = diffusion_models.make_tiny_controlnet_file(tmp_path / f"cn{prefix}.safetensors")
        assert diffusion.check_controlnet(str(path), checkpoint=str(tiny_folder)) == "file"


def test_check_controlnet_refuses_what_is_not_a_controlnet_naming_it(tiny_folder, tmp_path):
    missing = tmp_path / "nowhere" / "canny.safetensors"
    with pytest.raises(ModelNotAvailableError, match="does not exist") as info:
        diffusion.check_controlnet(str(missing))
    assert str(missing) in str(info.value)
    unet = tiny_folder / "unet"
    with pytest.raises(ModelError, match="'UNet2DConditionModel', not a ControlNetModel") as info:
        diffusion.check_controlnet(str(unet))
    assert str(unet) in str(info.value)
    with pytest.raises(ModelError, match="pipeline folder") as info:
        diffusion.check_controlnet(str(tiny_folder))
    upscaler = diffusion_models.make_not_diffusion_file(tmp_path / "upscaler.safetensors")
    sd = diffusion_models.make_tiny_single_file(tmp_path / "sd15.safetensors")
    for path, what in ((upscaler, "another kind of network"), (sd, "a Stable Diffusion ch")):
        with pytest.raises(ModelError, match="is not a ControlNet") as info:
            diffusion.check_controlnet(str(path))
        assert str(path) in str(info.value) and what in str(info.value)
    pth = tmp_path / "control_canny.pth"
    pth.write_bytes(b"\0" * 16)
    with pytest.raises(ModelError, match="must be .safetensors"):
        diffusion.check_controlnet(str(pth))
    cut = diffusion_models.truncate(
        diffusion_models.make_tiny_controlnet_file(tmp_path / "cut.safetensors"), 0.6
    )
    with pytest.raises(ModelError, match="truncated or unreadable"):
        diffusion.check_controlnet(str(cut))


def test_check_controlnet_refuses_one_made_for_another_model(tiny_folder, tmp_path):
    xl = diffusion_models.make_tiny_controlnet_file(tmp_path / "xl.safetensors", sdxl=True)
    with pytest.raises(ModelError, match="for SDXL.* but the checkpoint") as info:
        diffusion.check_controlnet(str(xl), checkpoint=str(tiny_folder))
    assert str(xl) in str(info.value) and str(tiny_folder) in str(info.value)
    sd15 = diffusion_models.make_tiny_controlnet_file(tmp_path / "sd15.safetensors", width=768)
    with pytest.raises(ModelError, match="for Stable Diffusion 1.x but the checkpoint"):
        diffusion.check_controlnet(str(sd15), checkpoint=str(tiny_folder))
    single = diffusion_models.make_tiny_single_file(tmp_path / "ck.safetensors")  # no width
    assert diffusion.check_controlnet(str(sd15), checkpoint=str(single)) == "file"


def test_controlnet_id_follows_the_content(tiny_cn, tmp_path):
    path = diffusion_models.make_tiny_controlnet_file(tmp_path / "cn.safetensors")
    assert diffusion.controlnet_id(str(path)) == hashlib.sha256(path.read_bytes()).hexdigest()
    folder = tmp_path / "copy"
    shutil.copytree(tiny_cn, folder)
    first = diffusion.controlnet_id(str(folder))
    assert first == diffusion.controlnet_id(str(tiny_cn)) and len(first) == 64
    weights = folder / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert diffusion.controlnet_id(str(folder)) != first
    with pytest.raises(ModelNotAvailableError, match="does not exist"):
        diffusion.controlnet_id(str(tmp_path / "gone"))


@pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks` argument is deprecated")
def test_a_single_file_controlnet_needs_configs_it_would_download(
    tiny_folder, tmp_path, monkeypatch, no_network
):
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    path = diffusion_models.make_tiny_controlnet_file(tmp_path / "canny.safetensors")
    with pytest.raises(ModelError) as info:
        load_pipeline(str(tiny_folder), device="cpu", dtype="fp32", controlnet=str(path))
    text = str(info.value)
    assert str(path) in text and "would download" in text
    assert "ControlNetModel.from_single_file" in text and "save_pretrained" in text
    assert no_network == []
