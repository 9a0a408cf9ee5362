"""Our tiny Stable Diffusion's parts: tokenizer, text encoder, pipeline files (the "test" preset, fast)."""
from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from playground.data import scenes
from playground.latent import components
from playground.latent.components import (CONFIGS, MAX_FILE_BYTES, assemble_pipeline, build_components,
                                          build_unet, count_params, get_config, grow_transformer_layers,
                                          load_pipeline, random_pipeline, save_pipeline, widen_unet)
from playground.latent.vocab import build_tokenizer, describe_prompt, grammar_words, vocabulary_words

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def _image(pipe: StableDiffusionPipeline, prompt: str = "a red circle above a blue square", seed: int = 0) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    return pipe(prompt, num_inference_steps=2, guidance_scale=3.0, generator=torch.Generator().manual_seed(seed),
                output_type="np").images


# ----------------------------------------------------------------------------- tokenizer

def test_every_vocabulary_word_is_one_token(tokenizer) -> None:
    assert {"red", "circle", "triangle", "above", "background", "gray", "an"} <= set(grammar_words())
    for word in vocabulary_words():
        ids = tokenizer(word, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, (word, tokenizer.convert_ids_to_tokens(ids))
        assert tokenizer.convert_ids_to_tokens(ids)[0] == word + "</w>"


def test_captions_round_trip(tokenizer) -> None:
    captions = scenes.render_dataset(40, seed=3, size=8, split="train").captions
    captions += scenes.render_dataset(20, seed=3, size=8, split="test").captions
    for caption in captions:
        ids = tokenizer(caption)["input_ids"]
        assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
        assert len(ids) == len(caption.split()) + 2                    # one token per word
        assert tokenizer.decode(ids, skip_special_tokens=True) == caption
        info = describe_prompt(tokenizer, caption)
        assert info.unknown_words == [] and not info.truncated and info.kept_text == caption


def test_special_tokens_are_clip_like(tokenizer) -> None:
    assert tokenizer.model_max_length == 77
    assert tokenizer.unk_token == "<|unk|>" and tokenizer.unk_token_id != tokenizer.eos_token_id
    assert tokenizer.pad_token_id == tokenizer.eos_token_id != 2    # eos id 2 = transformers' legacy argmax pooling
    empty = tokenizer("", padding="max_length", max_length=77)["input_ids"]
    assert empty[:2] == [tokenizer.bos_token_id, tokenizer.eos_token_id] and set(empty[1:]) == {tokenizer.eos_token_id}


def test_unknown_words_are_reported(tokenizer) -> None:
    info = describe_prompt(tokenizer, "A big RED zebra, café 7")
    assert info.unknown_words == ["zebra", "café", "7"]               # "big" is an extra vocabulary word
    assert info.n_tokens > 6 and not info.truncated
    ids = tokenizer("café", add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id in ids                              # é is not in the alphabet: <|unk|>, not EOS


def test_long_prompt_is_truncated_and_reported(tokenizer) -> None:
    prompt = " ".join(["red", "circle"] * 100)                         # 200 words, 200 tokens
    info = describe_prompt(tokenizer, prompt)
    assert info.n_tokens == 200 and info.max_tokens == 75 and info.truncated
    assert len(info.kept_text.split()) == 75 and prompt.startswith(info.kept_text)
    full = tokenizer(prompt, truncation=True, max_length=77)["input_ids"]
    assert tokenizer(info.kept_text)["input_ids"] == full             # the kept text is what the model reads


# ----------------------------------------------------------------------------- networks

def test_text_encoder_and_latent_shapes(tokenizer) -> None:
    cfg = get_config("test")
    parts = build_components(cfg, seed=0)
    ids = tokenizer(["a red circle", ""], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        out = parts["text_encoder"](ids)
        assert out.last_hidden_state.shape == (2, 77, cfg.text_hidden)
        eos = (ids == tokenizer.eos_token_id).int().argmax(-1)        # pooled = hidden state at the first EOS
        torch.testing.assert_close(out.pooler_output, out.last_hidden_state[torch.arange(2), eos])
        z = parts["vae"].encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean
        assert z.shape == (1, cfg.latent_channels, 16, 16) and cfg.latent_size == 16
        eps = parts["unet"](z, torch.tensor([10]), encoder_hidden_states=out.last_hidden_state[:1]).sample
        assert eps.shape == z.shape


def test_build_is_seeded_and_leaves_the_global_rng_alone() -> None:
    state = torch.get_rng_state()
    a, b = build_components(get_config("test"), seed=5), build_components(get_config("test"), seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    for (ka, va), (kb, vb) in zip(a["unet"].state_dict().items(), b["unet"].state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_tiny_sd_files_fit_under_10_mb() -> None:
    parts = build_components(CONFIGS["tiny_sd"], seed=0)
    for key in ("vae", "text_encoder", "unet"):
        assert 4 * count_params(parts[key]) < MAX_FILE_BYTES * 0.95, key      # float32 safetensors
    assert count_params(parts["unet"]) > 1_500_000


def test_growing_transformer_layers_keeps_the_function_and_learns() -> None:
    torch.manual_seed(0)
    unet = build_unet(get_config("test")).eval()
    for p in unet.parameters():                      # non-trivial weights everywhere (diffusers zeroes some outputs)
        p.data.add_(0.05 * torch.randn_like(p))
    grown = grow_transformer_layers(unet, (1, 2, 2), seed=3)
    assert grown.config.transformer_layers_per_block == [1, 2, 2]
    new = count_params(grown) - count_params(unet)
    per_block = count_params(grown.down_blocks[1].attentions[0].transformer_blocks[1])
    assert new == 4 * per_block                      # 8×8 down, the mid block, and the two 8×8 up attentions
    z, t, text = torch.randn(2, 4, 16, 16), torch.tensor([10, 900]), torch.randn(2, 77, 16)
    with torch.no_grad():
        assert torch.equal(grown(z, t, text).sample, unet(z, t, text).sample)
    grown.train()
    grown(z, t, text).sample.square().mean().backward()
    zeroed = grown.mid_block.attentions[0].transformer_blocks[1].attn2.to_out[0].weight
    assert float(zeroed.detach().abs().max()) == 0.0 and float(zeroed.grad.abs().max()) > 0.0
    with pytest.raises(ValueError, match="must keep"):
        grow_transformer_layers(grown, (1, 1, 1))


def test_grown_tiny_sd_unet_fits_under_10_mb() -> None:
    grown = grow_transformer_layers(build_unet(CONFIGS["tiny_sd"]), (1, 2, 2))
    assert 4 * count_params(grown) + 100_000 < MAX_FILE_BYTES                  # float32 safetensors + header


def _level_outputs(unet: torch.nn.Module, *inputs: torch.Tensor) -> list[torch.Tensor]:
    """The outputs of every down block and of the mid block."""
    outs: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: outs.append(o[0] if isinstance(o, tuple) else o))
             for m in [*unet.down_blocks, unet.mid_block]]
    try:
        with torch.no_grad():
            final = unet(*inputs).sample
    finally:
        for h in hooks:
            h.remove()
    return outs + [final]


def test_widening_the_unet_copies_each_channel_and_keeps_the_function() -> None:
    torch.manual_seed(0)
    unet = build_unet(get_config("test")).eval()
    for p in unet.parameters():                      # non-trivial weights everywhere (diffusers zeroes some outputs)
        p.data.add_(0.05 * torch.randn_like(p))
    old = tuple(unet.config.block_out_channels)
    wide = widen_unet(unet, (old[0], 2 * old[1], 2 * old[2]), seed=1).eval()
    assert tuple(wide.config.block_out_channels) == (old[0], 2 * old[1], 2 * old[2])
    assert count_params(wide) > 2.5 * count_params(unet)
    z, t, text = torch.randn(2, 4, 16, 16), torch.tensor([10, 900]), torch.randn(2, 77, 16)
    before, after = _level_outputs(unet, z, t, text), _level_outputs(wide, z, t, text)
    for level, (a, b) in enumerate(zip(before[:-1], after[:-1])):
        if b.shape[1] == a.shape[1]:
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)
        else:                                        # each channel twice, side by side
            assert b.shape[1] == 2 * a.shape[1], level
            torch.testing.assert_close(b[:, 0::2], a, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(b[:, 1::2], a, atol=1e-5, rtol=1e-4)
    # the up path's two GroupNorms over [widened path, unwidened skip] cannot align their groups: close, not equal
    error = (after[-1] - before[-1]).norm() / before[-1].norm()
    assert 0.0 < float(error) < 0.3
    # the copies are read with different weights, so their gradients differ from the first step
    conv = wide.mid_block.resnets[0].conv1
    w = conv.weight.detach()
    assert not torch.allclose(w[:, 0::2], w[:, 1::2])
    wide.train()
    wide(z, t, text).sample.square().mean().backward()
    g = conv.weight.grad
    assert float((g[0::2] - g[1::2]).abs().max()) > 1e-3 * float(g.abs().max())
    halved = widen_unet(unet, (old[0], 2 * old[1], 2 * old[2]), split=0.0).mid_block.resnets[0].conv1.weight.detach()
    torch.testing.assert_close(halved[:, 0::2], halved[:, 1::2])
    torch.testing.assert_close(w[:, 0::2] + w[:, 1::2], 2 * halved[:, 0::2], atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="keep or double"):
        widen_unet(unet, (old[0], 3 * old[1], old[2]))


def test_a_unet_over_10_mb_is_saved_in_shards(tmp_path: Path) -> None:
    unet = build_unet(CONFIGS["tiny_sd"])
    wide = widen_unet(unet, (64, 128, 128))
    assert 4 * count_params(wide) > 2 * MAX_FILE_BYTES
    save_pipeline(wide, tmp_path / "unet")
    shards = sorted((tmp_path / "unet").glob("*.safetensors"))
    assert len(shards) >= 3 and all(p.stat().st_size <= MAX_FILE_BYTES for p in shards)
    loaded = type(wide).from_pretrained(tmp_path / "unet")
    assert all(torch.equal(a, b) for a, b in zip(wide.state_dict().values(), loaded.state_dict().values()))


# ----------------------------------------------------------------------------- pipeline folder

def test_pipeline_round_trip_gives_the_same_image(tmp_path: Path) -> None:
    pipe = assemble_pipeline(build_components(get_config("test"), seed=1))
    before = _image(pipe)
    save_pipeline(pipe, tmp_path / "sd")
    files = [p for p in (tmp_path / "sd").rglob("*") if p.is_file()]
    assert any(p.suffix == ".safetensors" for p in files) and not any(p.suffix == ".bin" for p in files)
    assert all(p.stat().st_size <= MAX_FILE_BYTES for p in files)
    loaded = StableDiffusionPipeline.from_pretrained(str(tmp_path / "sd"))
    assert type(loaded.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert loaded.scheduler.config.beta_schedule == "linear" and loaded.scheduler.config.beta_end == 0.02 and loaded.tokenizer.unk_token == "<|unk|>"
    after = _image(loaded)
    assert before.shape == (1, 64, 64, 3)
    assert float(np.abs(before - after).max()) <= 1e-5
    assert float(np.abs(_image(loaded, seed=1) - after).max()) > 1e-3   # the seed matters


def test_random_pipeline_and_load_pipeline(tmp_path: Path) -> None:
    folder = random_pipeline(tmp_path / "rand", preset="test", seed=2)
    assert (folder / "model_index.json").exists()
    pipe = load_pipeline(folder)
    assert pipe.unet.training is False and _image(pipe, "a small green square").shape == (1, 64, 64, 3)
    save_pipeline(pipe, tmp_path / "again")                     # a loaded pipeline saved again: no trace of where
    configs = [json.loads(p.read_text()) for p in (tmp_path / "again").rglob("config.json")]   # it was loaded from
    assert len(configs) == 3 and not any("_name_or_path" in c for c in configs)


def test_save_refuses_big_files_and_keeps_the_old_pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = random_pipeline(tmp_path / "sd", seed=0)
    (folder / "training.json").write_text("{}")
    old = (folder / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    monkeypatch.setattr(components, "MAX_FILE_BYTES", 50_000)
    with pytest.raises(ValueError, match="over 10 MB"):
        save_pipeline(assemble_pipeline(build_components(get_config("test"), seed=9)), folder)
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == old
    assert (folder / "training.json").exists() and not list(tmp_path.glob(".sd.*"))
