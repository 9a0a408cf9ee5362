"""The offline stand-ins for the Hub's Stable Diffusion repositories (``latent/tiny_architectures.py``): their folder
layout, the real models' architectural switches, and that every pipeline loads with ``from_pretrained(folder)``
and generates an image of the family's native size — in float32, and for SD 1.5 in float16 on the CPU."""
from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np
import pytest
import torch
from diffusers import (AutoPipelineForInpainting, AutoPipelineForText2Image, ControlNetModel, DiffusionPipeline,
                       StableDiffusionControlNetPipeline, StableDiffusionXLControlNetPipeline)
from diffusers.utils import logging as diffusers_logging
from playground.latent.tiny_architectures import FAMILIES, NATIVE_SIZE, build_family
from PIL import Image
from transformers import CLIPTokenizer

diffusers_logging.disable_progress_bar()
torch.set_num_threads(1)                # as the other unit tests: tiny models, and other jobs share the 2 cores
STEPS, GUIDANCE, PROMPT = 2, 5.0, "a red circle"

PIPELINE_CLASS = {("sd15", "txt2img"): "StableDiffusionPipeline", ("sd15", "inpaint"): "StableDiffusionInpaintPipeline",
                  ("sd21", "txt2img"): "StableDiffusionPipeline", ("sd21", "inpaint"): "StableDiffusionInpaintPipeline",
                  ("sdxl", "txt2img"): "StableDiffusionXLPipeline",
                  ("sdxl", "inpaint"): "StableDiffusionXLInpaintPipeline"}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    root = tmp_path_factory.mktemp("hub")
    return {family: build_family(root, family) for family in FAMILIES}


def config(folder: Path, part: str | None = None) -> dict:
    """A saved config: ``model_index.json`` of a pipeline, else the part's (or the model folder's) config."""
    if part is None:
        name = "model_index.json" if (folder / "model_index.json").exists() else "config.json"
        return json.loads((folder / name).read_text())
    sub = folder / part
    name = next(n for n in ("config.json", "scheduler_config.json") if (sub / n).exists())
    return json.loads((sub / name).read_text())


def scene(size: int) -> tuple[Image.Image, Image.Image]:
    """An image (red disc on white) and a mask of its centre square, both ``size`` px."""
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2
    rgb = np.full((size, size, 3), 255, np.uint8)
    rgb[disc] = (220, 30, 30)
    mask = np.zeros((size, size), np.uint8)
    mask[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 255
    return Image.fromarray(rgb), Image.fromarray(mask)


def quiet(pipe: DiffusionPipeline) -> DiffusionPipeline:
    """``pipe`` without its per-step progress bar."""
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def check_image(images: np.ndarray, family: str) -> None:
    n = NATIVE_SIZE[family]
    assert images.shape == (1, n, n, 3), images.shape
    assert np.isfinite(images).all()


def controlnet_pipeline(hub: dict, family: str, dtype: torch.dtype = torch.float32):
    """The family's ControlNet pipeline built from its loaded txt2img components, as the app builds it."""
    base = AutoPipelineForText2Image.from_pretrained(hub[family]["txt2img"], dtype=dtype)
    controlnet = ControlNetModel.from_pretrained(hub[family]["controlnet"], dtype=dtype)
    if family == "sdxl":
        return quiet(StableDiffusionXLControlNetPipeline(**base.components, controlnet=controlnet))
    return quiet(StableDiffusionControlNetPipeline(**base.components, controlnet=controlnet,
                                                   requires_safety_checker=False))


# ----------------------------------------------------------------------------- layout and configs

def test_native_sizes_are_a_quarter_of_the_real_ones() -> None:
    """512 / 768 / 1024 px in the real families: distinct, and none is the 64 px of the repo's own model."""
    assert NATIVE_SIZE == {"sd15": 128, "sd21": 192, "sdxl": 256}


def test_folders_and_cache(hub: dict, tmp_path: Path) -> None:
    for family in FAMILIES:
        expected = {"txt2img", "inpaint", "controlnet"} | ({"vae"} if family == "sdxl" else set())
        assert set(hub[family]) == expected
        assert all(p.is_dir() and p.parent.name == family for p in hub[family].values())
    root = hub["sd15"]["txt2img"].parent.parent
    stamp = (hub["sd15"]["txt2img"] / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    assert build_family(root, "sd15") == hub["sd15"]                      # cached: same folders, not rebuilt
    assert (hub["sd15"]["txt2img"] / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError):
        build_family(root, "sd15", seed=1)                                # other weights: never silently reused
    with pytest.raises(KeyError):
        build_family(tmp_path, "sd3")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("family", FAMILIES)
def test_hub_file_layout(hub: dict, family: str) -> None:
    for kind in ("txt2img", "inpaint"):
        folder = hub[family][kind]
        index = config(folder)
        assert index["_class_name"] == PIPELINE_CLASS[family, kind]
        tokenizers = ["tokenizer", "tokenizer_2"] if family == "sdxl" else ["tokenizer"]
        for name in tokenizers:
            assert index[name] == ["transformers", "CLIPTokenizer"]
            files = {p.name for p in (folder / name).iterdir()}
            assert files == {"vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"}
        if family != "sdxl":
            assert index["safety_checker"] == [None, None] and index["requires_safety_checker"] is False
        weights = [p for p in folder.rglob("*") if p.suffix in {".safetensors", ".bin", ".pt", ".ckpt"}]
        assert weights and all(p.suffix == ".safetensors" for p in weights)
    assert (hub[family]["controlnet"] / "diffusion_pytorch_model.safetensors").exists()
    assert config(hub[family]["controlnet"])["_class_name"] == "ControlNetModel"


def test_sd15_switches(hub: dict) -> None:
    folder = hub["sd15"]["txt2img"]
    scheduler = config(folder, "scheduler")
    assert scheduler["_class_name"] == "PNDMScheduler"
    assert {k: scheduler[k] for k in ("beta_schedule", "beta_start", "beta_end", "skip_prk_steps", "steps_offset",
                                      "set_alpha_to_one", "clip_sample", "prediction_type")} == {
        "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "skip_prk_steps": True,
        "steps_offset": 1, "set_alpha_to_one": False, "clip_sample": False, "prediction_type": "epsilon"}
    unet = config(folder, "unet")
    assert unet["down_block_types"] == ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"]
    assert unet["up_block_types"] == ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3
    assert not unet["use_linear_projection"] and unet["addition_embed_type"] is None
    text = config(folder, "text_encoder")
    assert text["architectures"] == ["CLIPTextModel"] and text["hidden_act"] == "quick_gelu"
    assert unet["cross_attention_dim"] == text["hidden_size"]
    vae = config(folder, "vae")
    assert vae["scaling_factor"] == 0.18215 and len(vae["block_out_channels"]) == 4
    assert CLIPTokenizer.from_pretrained(folder / "tokenizer").pad_token == "<|endoftext|>"


def test_sd21_switches(hub: dict) -> None:
    folder = hub["sd21"]["txt2img"]
    scheduler = config(folder, "scheduler")
    assert scheduler["_class_name"] == "DDIMScheduler" and scheduler["prediction_type"] == "v_prediction"
    assert (scheduler["steps_offset"], scheduler["clip_sample"], scheduler["set_alpha_to_one"]) == (1, False, False)
    unet = config(folder, "unet")
    assert unet["use_linear_projection"] and unet["upcast_attention"]
    assert isinstance(unet["attention_head_dim"], list) and len(unet["attention_head_dim"]) == 4
    text = config(folder, "text_encoder")
    assert text["hidden_act"] == "gelu" and unet["cross_attention_dim"] == text["hidden_size"]
    assert unet["cross_attention_dim"] != config(hub["sd15"]["txt2img"], "unet")["cross_attention_dim"]
    assert config(hub["sd21"]["inpaint"], "scheduler")["prediction_type"] == "epsilon"
    assert CLIPTokenizer.from_pretrained(folder / "tokenizer").pad_token == "!"


def test_sdxl_switches(hub: dict) -> None:
    folder = hub["sdxl"]["txt2img"]
    index = config(folder)
    assert index["text_encoder_2"] == ["transformers", "CLIPTextModelWithProjection"]
    assert index["force_zeros_for_empty_prompt"] is True
    unet = config(folder, "unet")
    text, text_2 = config(folder, "text_encoder"), config(folder, "text_encoder_2")
    assert unet["addition_embed_type"] == "text_time" and unet["use_linear_projection"]
    time_ids_width = 6 * unet["addition_time_embed_dim"]                  # original size, crop, target size
    assert unet["projection_class_embeddings_input_dim"] == time_ids_width + text_2["projection_dim"]
    assert unet["cross_attention_dim"] == text["hidden_size"] + text_2["hidden_size"]
    assert unet["down_block_types"][0] == "DownBlock2D" and max(unet["transformer_layers_per_block"]) > 1
    assert (text["hidden_act"], text_2["hidden_act"]) == ("quick_gelu", "gelu")
    scheduler = config(folder, "scheduler")
    assert scheduler["_class_name"] == "EulerDiscreteScheduler"
    assert (scheduler["timestep_spacing"], scheduler["interpolation_type"], scheduler["steps_offset"]) == (
        "leading", "linear", 1)
    vae, fp16_fix = config(folder, "vae"), config(hub["sdxl"]["vae"])
    assert vae["scaling_factor"] == 0.13025 and vae["force_upcast"] is True
    assert fp16_fix["force_upcast"] is False
    assert {k: v for k, v in fp16_fix.items() if k != "force_upcast"} == \
        {k: v for k, v in vae.items() if k != "force_upcast"}
    inpaint = config(hub["sdxl"]["inpaint"])
    assert inpaint["requires_aesthetics_score"] is False and inpaint["force_zeros_for_empty_prompt"] is True
    assert CLIPTokenizer.from_pretrained(folder / "tokenizer").pad_token == "<|endoftext|>"
    assert CLIPTokenizer.from_pretrained(folder / "tokenizer_2").pad_token == "!"


@pytest.mark.parametrize("family", FAMILIES)
def test_inpaint_and_controlnet_match_the_unet(hub: dict, family: str) -> None:
    unet = config(hub[family]["txt2img"], "unet")
    inpaint_unet = config(hub[family]["inpaint"], "unet")
    assert unet["in_channels"] == 4 and inpaint_unet["in_channels"] == 9
    assert {k: v for k, v in inpaint_unet.items() if k != "in_channels"} == \
        {k: v for k, v in unet.items() if k != "in_channels"}
    controlnet = config(hub[family]["controlnet"])
    for key in ("block_out_channels", "down_block_types", "cross_attention_dim", "attention_head_dim",
                "use_linear_projection", "upcast_attention", "addition_embed_type", "addition_time_embed_dim",
                "projection_class_embeddings_input_dim", "transformer_layers_per_block", "layers_per_block"):
        assert controlnet[key] == unet[key], key
    embedding = controlnet["conditioning_embedding_out_channels"]
    assert 2 ** (len(embedding) - 1) == 8                               # downsamples 8×, like the VAE


@pytest.mark.parametrize("family", FAMILIES)
def test_whole_words_are_single_tokens(hub: dict, family: str) -> None:
    folder = hub[family]["txt2img"]
    for name in ("tokenizer", "tokenizer_2") if family == "sdxl" else ("tokenizer",):
        tokenizer = CLIPTokenizer.from_pretrained(folder / name)
        assert tokenizer.model_max_length == 77
        ids = tokenizer(PROMPT)["input_ids"]
        assert tokenizer.convert_ids_to_tokens(ids) == ["<|startoftext|>", "a</w>", "red</w>", "circle</w>",
                                                        "<|endoftext|>"]
        words = "a photo of a cat and a dog , blurry , worst quality".split()
        assert len(tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]) == len(words)
        # any text tokenizes (byte-level alphabet), letter by letter when not a vocabulary word: never unknown
        odd = tokenizer("zyx héllo 🙂", add_special_tokens=False)["input_ids"]
        assert len(odd) > 3 and tokenizer.unk_token_id not in odd
        encoder = config(folder, "text_encoder_2" if name == "tokenizer_2" else "text_encoder")
        assert encoder["vocab_size"] == len(tokenizer)
        assert (encoder["bos_token_id"], encoder["eos_token_id"]) == (tokenizer.bos_token_id, tokenizer.eos_token_id)


# ----------------------------------------------------------------------------- generation

@pytest.mark.parametrize("family", FAMILIES)
def test_txt2img_generates_native_size(hub: dict, family: str) -> None:
    pipe = quiet(AutoPipelineForText2Image.from_pretrained(hub[family]["txt2img"]))
    expected = "StableDiffusionXLPipeline" if family == "sdxl" else "StableDiffusionPipeline"
    assert type(pipe).__name__ == expected and pipe.unet.dtype == torch.float32
    assert pipe.vae_scale_factor == 8 and pipe.unet.config.sample_size * pipe.vae_scale_factor == NATIVE_SIZE[family]
    images = pipe(PROMPT, num_inference_steps=STEPS, guidance_scale=GUIDANCE, generator=generator(),
                  output_type="np").images                               # no height/width: the native size
    check_image(images, family)
    assert images.std() > 0.01                                            # an image, not a constant


@pytest.mark.parametrize("family", FAMILIES)
def test_inpaint_generates_native_size(hub: dict, family: str) -> None:
    pipe = quiet(AutoPipelineForInpainting.from_pretrained(hub[family]["inpaint"]))
    assert type(pipe).__name__ == PIPELINE_CLASS[family, "inpaint"] and pipe.unet.config.in_channels == 9
    image, mask = scene(NATIVE_SIZE[family])
    images = pipe(PROMPT, image=image, mask_image=mask, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                  generator=generator(), output_type="np").images
    check_image(images, family)


@pytest.mark.parametrize("family", FAMILIES)
def test_controlnet_generates_native_size_and_follows_the_control(hub: dict, family: str) -> None:
    pipe = controlnet_pipeline(hub, family)
    n = NATIVE_SIZE[family]
    half = np.zeros((n, n, 3), np.uint8)
    half[:, n // 2:] = 255
    outputs = [pipe(PROMPT, image=Image.fromarray(control), num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                    generator=generator(), output_type="np").images
               for control in (np.zeros((n, n, 3), np.uint8), half)]
    for images in outputs:
        check_image(images, family)
    assert np.abs(outputs[0] - outputs[1]).mean() > 1e-3                  # the control image matters


@pytest.mark.parametrize("kind", ["txt2img", "inpaint", "controlnet"])
def test_sd15_runs_in_float16_on_cpu(hub: dict, kind: str) -> None:
    """float16 on the CPU works in this torch (slowly: convolutions take the slow reference kernel) and gives
    no NaN at these weights."""
    n = NATIVE_SIZE["sd15"]
    image, mask = scene(n)
    kwargs = dict(num_inference_steps=STEPS, guidance_scale=GUIDANCE, generator=generator(), output_type="np")
    if kind == "txt2img":
        pipe = AutoPipelineForText2Image.from_pretrained(hub["sd15"]["txt2img"], dtype=torch.float16)
    elif kind == "inpaint":
        pipe = AutoPipelineForInpainting.from_pretrained(hub["sd15"]["inpaint"], dtype=torch.float16)
        kwargs.update(image=image, mask_image=mask)
    else:
        pipe = controlnet_pipeline(hub, "sd15", torch.float16)
        kwargs.update(image=image)
    assert all(m.dtype == torch.float16 for m in (pipe.unet, pipe.vae, pipe.text_encoder))
    images = quiet(pipe)(PROMPT, **kwargs).images
    check_image(images, "sd15")
