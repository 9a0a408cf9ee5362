"""Canny ControlNet on tiny random "test" models: the Canny preview, the ControlNet's zero convolutions,
scale 0 = the plain pipeline, training (runs, resumes exactly, writes a loadable folder), the service
(sizes, seeds, bad input, the Hub path with local folders), edge F1 and the evaluation."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from playground.core.errors import UserInputError
from playground.core.images import PARAMS_KEY
from playground.core.registry import ModelRegistry
from playground.core.settings import Settings
from playground.data import scenes
from playground.latent.components import load_pipeline, random_pipeline
from playground.latent.controlnet import (ControlNetService, base_weights_hash, canny_array, canny_edges, check_thresholds,
                                          control_tensor, make_controlnet, zero_convolutions)
from playground.latent.controlnet_evaluate import edge_f1, evaluate_and_card, load_pipelines, speed_figures
from playground.latent.service import Txt2ImgService

STEPS = 3


def perturb(cn: torch.nn.Module, seed: int = 0, std: float = 0.05) -> torch.nn.Module:
    """Give the zero convolutions random weights, so the ControlNet changes the output (a trained one)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in zero_convolutions(cn).values():
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * std)
    return cn


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """checkpoints/ with a random "test" tiny_sd and a (perturbed) ControlNet made from its U-Net."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ckpt")
    random_pipeline(root / "tiny_sd", preset="test", seed=0)
    unet = load_pipeline(root / "tiny_sd").unet
    torch.manual_seed(0)
    perturb(make_controlnet(unet, 4)).save_pretrained(root / "tiny_sd_controlnet", safe_serialization=True)
    return root


@pytest.fixture(scope="module")
def svc(ckpt: Path) -> ControlNetService:
    t = Txt2ImgService(Settings(checkpoints_dir=ckpt), registry=ModelRegistry())
    return ControlNetService(t)


def scene(i: int = 0, split: str = "train") -> tuple[Image.Image, str]:
    b = scenes.render_dataset(1, seed=i, split=split)
    return Image.fromarray((b.images[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)), b.captions[0]


# ---- Canny ------------------------------------------------------------------------------------------------
def test_canny_finds_the_outline_of_a_single_object():
    img = Image.new("RGB", (64, 64), (128, 128, 128))                 # gray background ...
    img.paste((0, 200, 0), (20, 20, 44, 44))                           # ... a green square (luma ≈ gray)
    edges, notes = canny_edges(img, 100, 200)
    e = np.asarray(edges)
    assert edges.mode == "L" and edges.size == (64, 64) and set(np.unique(e)) <= {0, 255} and notes == []
    ring = np.zeros((64, 64), bool)
    ring[18:46, 18:46] = True
    ring[23:41, 23:41] = False
    assert e[ring].any() and not e[~ring].any()                        # edges on the outline, nowhere else
    assert (e[19:21, 20:44] > 0).any(axis=0).mean() > 0.9              # the top side is (nearly) complete


def test_canny_thresholds_swapped_out_of_range_nan():
    assert check_thresholds(200, 100) == (100, 200, [check_thresholds(200, 100)[2][0]])
    assert "swapped" in check_thresholds(200, 100)[2][0]
    assert check_thresholds(100.0, 200) == (100, 200, [])
    for low, high in ((-1, 200), (100, 256), (float("nan"), 200), (100, float("inf")), ("x", 200), (10.5, 20),
                      (None, 200)):
        with pytest.raises(UserInputError):
            check_thresholds(low, high)


def test_canny_preview_of_the_service(svc):
    img, _ = scene(3)
    r = svc.canny(img, 200, 100)
    assert r["edges"].size == (64, 64) and r["edge_pixels"] > 20 and any("swapped" in n for n in r["notices"])
    assert "controlnet/" not in " ".join(svc.registry.keys())         # the preview loads no model
    wide = Image.new("RGBA", (300, 100), (255, 255, 255, 0))           # alpha + another aspect ratio
    wide.paste((255, 0, 0, 255), (120, 20, 180, 80))
    r = svc.canny(wide)
    text = " ".join(r["notices"])
    assert r["edges"].size == (64, 64) and "transparen" in text and "cropped" in text and r["edge_pixels"] > 0
    sketch = {"background": None, "layers": [], "composite": np.asarray(wide)}   # a Gradio ImageEditor value
    assert np.array_equal(np.asarray(svc.canny(sketch)["edges"]), np.asarray(r["edges"]))
    for bad in (b"not an image", None, {"background": None, "layers": [], "composite": None}):
        with pytest.raises(UserInputError):
            svc.canny(bad)
    with pytest.raises(UserInputError):
        svc.canny(img, 100, 300)
    blank = svc.canny(Image.new("RGB", (64, 64), "white"))
    assert blank["edge_pixels"] == 0 and any("no edges" in n for n in blank["notices"])


def test_control_tensor_is_what_the_pipeline_feeds():
    e = np.zeros((2, 8, 8), np.uint8)
    e[:, 3] = 255
    c = control_tensor(e)
    assert c.shape == (2, 3, 8, 8) and c.max() == 1 and c.min() == 0 and torch.equal(c[:, 0], c[:, 2])


# ---- the model --------------------------------------------------------------------------------------------
def test_make_controlnet_copies_the_encoder_and_zero_initialises(tmp_path):
    pipe = load_pipeline(random_pipeline(tmp_path / "sd", "test", seed=1))
    cn = make_controlnet(pipe.unet, 4)
    assert tuple(cn.config.conditioning_embedding_out_channels) == (16, 32, 64)
    for name, m in zero_convolutions(cn).items():
        assert not m.weight.any() and not m.bias.any(), name
    for part in ("conv_in", "time_embedding", "down_blocks", "mid_block"):
        ours, theirs = getattr(cn, part).state_dict(), getattr(pipe.unet, part).state_dict()
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs), part
    z = torch.randn(2, 4, 16, 16)
    hidden = torch.randn(2, 77, pipe.unet.config.cross_attention_dim)
    with torch.no_grad():
        down, mid = cn(z, torch.tensor([10, 500]), encoder_hidden_states=hidden,
                       controlnet_cond=torch.rand(2, 3, 64, 64), return_dict=False)
    assert all(not d.any() for d in down) and not mid.any()           # y_c = y at initialisation (eq. 2)
    assert down[0].shape[-1] == 16                                    # 64×64 control embedded to 16×16


def test_conditioning_scale_zero_equals_the_plain_pipeline(svc):
    served = svc.model()
    base = served.base
    edges = Image.fromarray(canny_array(np.asarray(scene(1)[0]), 100, 200)).convert("RGB")
    kw = dict(prompt="a red circle", num_inference_steps=STEPS, guidance_scale=7.5, output_type="np")
    with torch.inference_mode():
        cn_pipe = base.fresh("DPM++ 2M", cls=served.pipeline_cls, controlnet=served.controlnet)
        zero = cn_pipe(image=edges, controlnet_conditioning_scale=0.0, generator=torch.Generator().manual_seed(4), **kw)
        one = cn_pipe(image=edges, controlnet_conditioning_scale=1.0, generator=torch.Generator().manual_seed(4), **kw)
        plain = base.fresh("DPM++ 2M")(generator=torch.Generator().manual_seed(4), **kw)
    assert np.abs(zero.images - plain.images).max() < 1e-5
    assert np.abs(one.images - plain.images).max() > 1e-3             # the (perturbed) ControlNet does act


# ---- training ---------------------------------------------------------------------------------------------
def test_training_test_preset_runs_resumes_exactly_and_loads(ckpt, tmp_path):
    from diffusers import ControlNetModel

    from playground.latent.controlnet_train import train

    base = ckpt / "tiny_sd"
    full = train(tmp_path / "a" / "out", base, "test", progress=False, runs_dir=tmp_path / "a" / "runs")
    assert full["steps"] == 4 and full["batch"] == 4 and full["final_loss"] > 0
    part = train(tmp_path / "b" / "out", base, "test", progress=False, stop_after=2, runs_dir=tmp_path / "b" / "runs")
    assert "interrupted_at" in part
    resumed = train(tmp_path / "b" / "out", base, "test", progress=False, runs_dir=tmp_path / "b" / "runs")
    assert resumed["steps"] == 4
    a = ControlNetModel.from_pretrained(tmp_path / "a" / "out", use_safetensors=True).state_dict()
    b = ControlNetModel.from_pretrained(tmp_path / "b" / "out", use_safetensors=True).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(a[k].any() for k in a if k.startswith("controlnet_down_blocks"))   # the zero convs moved
    out = tmp_path / "a" / "out"
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "diffusion_pytorch_model.safetensors", "training.json", "train_config.json",
            "history.csv", "README.md"} <= files
    assert json.loads((out / "config.json").read_text())["_class_name"] == "ControlNetModel"
    assert all(p.stat().st_size <= 10 * 2**20 for p in out.iterdir())
    assert "python -m playground train tiny_sd_controlnet" in (out / "README.md").read_text()
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "tiny_sd").symlink_to(base)
    (tmp_path / "ck" / "tiny_sd_controlnet").symlink_to(out)
    s = ControlNetService(Txt2ImgService(Settings(checkpoints_dir=tmp_path / "ck"), registry=ModelRegistry()))
    assert s.controlnet(scene(0)[0], "a red circle", steps=STEPS, compare=False)["result"].size == (64, 64)
    assert s.model_note == ""                                         # trained on the served base weights


# ---- the service ------------------------------------------------------------------------------------------
def test_service_generates_with_and_without_control(svc):
    img, caption = scene(2)
    r = svc.controlnet(img, caption, steps=STEPS, seed=7)
    assert r["result"].size == r["without"].size == r["overlay"].size == r["edges"].size == (64, 64)
    params = json.loads(r["result"].info[PARAMS_KEY])
    assert params["kind"] == "controlnet" and params["conditioning_scale"] == 1.0 and params["seed"] == 7
    again = svc.controlnet(img, caption, steps=STEPS, seed=7, compare=False)
    assert again["without"] is None
    assert np.array_equal(np.asarray(again["result"]), np.asarray(r["result"]))      # same seed, same image
    assert not np.array_equal(np.asarray(r["result"]), np.asarray(r["without"]))
    zero = svc.controlnet(img, caption, steps=STEPS, seed=7, conditioning_scale=0)
    assert np.abs(np.asarray(zero["result"], np.int16) - np.asarray(zero["without"], np.int16)).max() <= 1
    o = np.asarray(r["overlay"])[np.asarray(r["edges"]) > 0]
    assert (o[:, 1] > 200).all() and (o[:, 2] > 200).all()            # cyan edges over the result
    g = svc.controlnet(img, "", steps=STEPS, guidance_scale=3, guess_mode=True, control_start=0.2, control_end=0.8,
                       compare=False)
    assert g["guess_mode"] and (g["control_start"], g["control_end"]) == (0.2, 0.8)


@pytest.mark.parametrize("kwargs", [
    dict(conditioning_scale=2.5), dict(conditioning_scale=float("nan")), dict(conditioning_scale=-0.1),
    dict(control_start=0.6, control_end=0.5), dict(control_start=0.5, control_end=0.5), dict(control_end=1.2),
    dict(steps=0), dict(steps=101), dict(guidance_scale=0.5), dict(guidance_scale=31), dict(low=300),
    dict(seed=-1), dict(scheduler="nope"), dict(guess_mode="yes"), dict(prompt=3),
])
def test_service_refuses_bad_arguments(svc, kwargs):
    with pytest.raises(UserInputError):
        svc.controlnet(scene(0)[0], **{"prompt": "a red circle", "steps": STEPS, **kwargs})


def test_service_images_alpha_aspect_huge_corrupt(svc):
    rgba = Image.new("RGBA", (128, 96), (0, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (40, 20, 90, 70))
    r = svc.controlnet(rgba, "a blue square", steps=STEPS, compare=False)
    assert r["result"].size == (64, 64) and any("cropped" in n for n in r["notices"])
    buf = io.BytesIO()
    scene(0)[0].save(buf, "PNG")
    with pytest.raises(UserInputError):
        svc.controlnet(buf.getvalue()[:80], "a red circle", steps=STEPS)         # truncated file
    with pytest.raises(UserInputError):
        svc.controlnet(np.zeros((5000, 10, 3), np.uint8), "a red circle", steps=STEPS)   # over the size limit


def test_missing_controlnet_says_how_to_train_it(ckpt, tmp_path):
    (tmp_path / "tiny_sd").symlink_to(ckpt / "tiny_sd")
    s = ControlNetService(Txt2ImgService(Settings(checkpoints_dir=tmp_path), registry=ModelRegistry()))
    assert not s.available()
    with pytest.raises(UserInputError, match="python -m playground train tiny_sd_controlnet"):
        s.controlnet(scene(0)[0], "a red circle", steps=STEPS)
    assert s.canny(scene(0)[0])["edge_pixels"] > 0                    # the preview still works


def test_a_controlnet_trained_on_other_base_weights_is_flagged(ckpt, tmp_path):
    import shutil

    (tmp_path / "tiny_sd").symlink_to(ckpt / "tiny_sd")
    shutil.copytree(ckpt / "tiny_sd_controlnet", tmp_path / "tiny_sd_controlnet")
    (tmp_path / "tiny_sd_controlnet" / "training.json").write_text(json.dumps({"base_weights": "0123456789abcdef"}))
    s = ControlNetService(Txt2ImgService(Settings(checkpoints_dir=tmp_path), registry=ModelRegistry()))
    r = s.controlnet(scene(0)[0], "a red circle", steps=STEPS, compare=False)
    assert any("another version of tiny_sd" in n for n in r["notices"])


def test_the_base_identity_ignores_the_decoder_but_not_the_unet_or_encoder(ckpt):
    pipe = load_pipeline(ckpt / "tiny_sd")
    before = base_weights_hash(pipe)
    with torch.no_grad():
        pipe.vae.decoder.conv_out.bias.add_(0.1)                  # what tiny_sd's stages 3-4 fine-tune
        assert base_weights_hash(pipe) == before
        pipe.vae.encoder.conv_in.bias.add_(0.1)                   # another latent space
        after_encoder = base_weights_hash(pipe)
        pipe.unet.conv_in.bias.add_(0.1)
    assert len({before, after_encoder, base_weights_hash(pipe)}) == 3


def test_hub_path_with_local_folders(ckpt, tmp_path):
    hub_base = random_pipeline(tmp_path / "hub_sd", "test", seed=3)
    torch.manual_seed(1)
    perturb(make_controlnet(load_pipeline(hub_base).unet, 4), 1).save_pretrained(tmp_path / "hub_cn")
    settings = Settings(checkpoints_dir=ckpt, txt2img_model=str(hub_base), controlnet_model=str(tmp_path / "hub_cn"))
    s = ControlNetService(Txt2ImgService(settings, registry=ModelRegistry()))
    assert s.available()
    r = s.controlnet(scene(0)[0], "a red circle", steps=STEPS, compare=False)
    assert r["model"] == f"{hub_base} + {tmp_path / 'hub_cn'}" and s.model_note == ""
    assert not s.model().builtin
    # a ControlNet that cannot load: a clear note, and the built-in one serves
    bad = Settings(checkpoints_dir=ckpt, txt2img_model=str(hub_base), controlnet_model=str(tmp_path / "missing"))
    s = ControlNetService(Txt2ImgService(bad, registry=ModelRegistry()))
    r = s.controlnet(scene(0)[0], "a red circle", steps=STEPS, compare=False)
    assert r["model"].endswith("tiny_sd_controlnet") and "not used" in s.model_note
    assert any("not used" in n for n in r["notices"])
    # a Hub ControlNet without a Hub base model: the same
    s = ControlNetService(Txt2ImgService(Settings(checkpoints_dir=ckpt, controlnet_model=str(tmp_path / "hub_cn")),
                                         registry=ModelRegistry()))
    assert s.controlnet(scene(0)[0], "", steps=STEPS, compare=False)["model"].endswith("tiny_sd_controlnet")
    assert "Hub base model" in s.model_note


# ---- evaluation -------------------------------------------------------------------------------------------
def test_edge_f1_known_cases():
    a = np.zeros((32, 32), np.uint8)
    a[10, 5:25] = 255
    assert edge_f1(a, a)["f1"] == 1.0
    assert edge_f1(a, np.roll(a, 1, axis=0))["f1"] == 1.0             # 1 px off: within the 2 px tolerance
    assert edge_f1(a, np.roll(a, 2, axis=0))["f1"] == 1.0
    assert edge_f1(a, np.roll(a, 3, axis=0))["f1"] == 0.0
    far = np.zeros_like(a)
    far[28, 5:25] = 255
    assert edge_f1(a, far) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    half = a.copy()
    half[10, 15:25] = 0                                               # half the edge found: P = 1, R = 0.5
    r = edge_f1(a, half)
    assert r["precision"] == 1.0 and abs(r["recall"] - 0.55) < 0.06
    assert abs(r["f1"] - 2 * r["recall"] / (1 + r["recall"])) < 1e-9
    assert edge_f1(np.zeros_like(a), np.zeros_like(a))["f1"] == 1.0 and edge_f1(a, np.zeros_like(a))["f1"] == 0.0


def test_evaluation_runs_on_random_models_and_writes_the_card(ckpt, tmp_path):
    m = evaluate_and_card(ckpt, n=2, scales=(1.0, 0.0), steps=2, progress=False, cache_dir=tmp_path / "cache",
                          speed=False)
    e = m["edges"]
    assert set(e["scales"]) == {"1", "0"} and e["reference"]["real_render"]["f1"] == 1.0
    assert 0 <= e["scales"]["1"]["f1"] <= 1 and "targets_met" in e
    card = (ckpt / "tiny_sd_controlnet" / "README.md").read_text()
    assert "Edge fidelity" in card and "edge F1" in card
    assert "## Where colour fails" in card and "| conditioning scale 1 |" in card
    real = e["reference"]["real_render"]["colour_by_pair"]["held-out pairs"]
    assert real["n"] >= 2 and real["rate"] == 1.0              # every held-out scene names a held-out pair
    assert card.index("| 1 |") < card.index("| 0 |") and "Targets met: f1_at_1 " in card
    assert e["settings"]["guidance_scale"] == 3.0 and "guidance 3 (the tab's default)" in card
    other = m["edges_other_guidance"]["7.5"]                    # the same scenes at the text-to-image target's 7.5
    assert set(other["scales"]) == {"1", "0"} and other["settings"]["guidance_scale"] == 7.5
    assert card.index("Targets met:") < card.index("## The same scenes at guidance 7.5") < card.index("At guidance 7.5: f1_at_1 ")
    from playground.latent.controlnet_train import write_controlnet_card
    write_controlnet_card(ckpt / "tiny_sd_controlnet")                      # rebuilt from metrics.json alone
    assert (ckpt / "tiny_sd_controlnet" / "README.md").read_text() == card
    again = evaluate_and_card(ckpt, n=2, scales=(1.0, 0.0), steps=2, progress=False, cache_dir=tmp_path / "cache",
                              speed=False)
    assert again["edges"]["scales"]["1"]["f1"] == e["scales"]["1"]["f1"]      # from the cache


def test_speed_figures(ckpt):
    pipe, plain = load_pipelines(ckpt)
    s = speed_figures(pipe, plain, steps=2, repeats=1, threads=(1,))
    assert s["controlnet_seconds_1_thread"] > 0 and s["plain_seconds_1_thread"] > 0 and s["target_met"]
