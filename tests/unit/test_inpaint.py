"""Inpainting (issue 6): masks from the editor, exact paste-back, the 9-channel U-Net, its training in
miniature (resumable), the service with both methods and the Hub path, the evaluation — all on tiny
random pipelines of the "test" size."""
from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from playground.core.errors import UserInputError
from playground.core.images import read_params
from playground.core.registry import ModelRegistry
from playground.core.settings import Settings
from playground.data.scenes import render_dataset
from playground.latent.components import build_components, get_config, random_pipeline
from playground.latent.inpaint import (MAX_BLUR, MAX_PADDING, METHOD_BLEND, METHOD_NINE, METHODS, InpaintService,
                                       box_mask, fit_mask, make_inpaint_unet, mask_from_editor, paste_back,
                                       prepare_mask)
from playground.latent.service import Txt2ImgService

torch.set_num_threads(1)
STEPS = 3


def scene(i: int = 0) -> Image.Image:
    x = render_dataset(1, seed=i).images[0]
    return Image.fromarray((x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def stroke_layer(size: int = 64, box: tuple[int, int, int, int] = (10, 20, 30, 40),
                 colour: tuple[int, int, int] = (255, 0, 0)) -> np.ndarray:
    layer = np.zeros((size, size, 4), np.uint8)
    x0, y0, x1, y1 = box
    layer[y0:y1, x0:x1] = (*colour, 255)
    return layer


def px(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.int16)


# ------------------------------------------------------------------------------------------- masks
def test_mask_is_the_union_of_rgba_layers_in_any_colour():
    a = stroke_layer(box=(0, 0, 10, 10), colour=(0, 0, 0))            # a black stroke still counts (alpha > 0)
    b = stroke_layer(box=(30, 30, 40, 50), colour=(0, 200, 50))
    b[0, 63] = (255, 255, 255, 1)                                       # faint alpha counts too
    img, mask, notes = mask_from_editor({"background": scene(), "layers": [a, b], "composite": None})
    m = np.asarray(mask)
    assert img.mode == "RGB" and img.size == (64, 64) and mask.mode == "L"
    assert set(np.unique(m)) == {0, 255}
    assert m[:10, :10].all() and m[30:50, 30:40].all() and m[0, 63] == 255
    assert (m > 0).sum() == 100 + 200 + 1 and notes == []


def test_rgb_layer_without_alpha_marks_non_black_pixels_and_paths_work(tmp_path):
    layer = np.zeros((64, 64, 3), np.uint8)
    layer[5:9, 5:60] = (10, 0, 0)
    Image.fromarray(layer).save(tmp_path / "layer.png")
    scene().save(tmp_path / "bg.png")
    _, mask, _ = mask_from_editor({"background": str(tmp_path / "bg.png"), "layers": [str(tmp_path / "layer.png")]})
    assert (np.asarray(mask) > 0).sum() == 4 * 55


@pytest.mark.parametrize("mode", ["RGBA", "L", "I;16", "RGB", "1"])
def test_uploaded_mask_in_any_mode_wins_over_layers(mode):
    inside = np.zeros((64, 64), bool)
    inside[16:48, 8:24] = True
    if mode == "RGBA":                                    # opaque black strokes on a transparent sheet
        arr = np.zeros((64, 64, 4), np.uint8)
        arr[inside] = (0, 0, 0, 255)
        up = Image.fromarray(arr, "RGBA")
    elif mode == "I;16":
        up = Image.fromarray((inside * 65535).astype(np.uint16)).convert("I;16")
    elif mode == "RGB":                                   # a light colour counts as white
        arr = np.zeros((64, 64, 3), np.uint8)
        arr[inside] = (255, 230, 200)
        up = Image.fromarray(arr)
    else:
        up = Image.fromarray(inside.astype(np.uint8) * 255).convert(mode)
    _, mask, notes = mask_from_editor({"background": scene(), "layers": [stroke_layer()]}, mask=up)
    assert np.array_equal(np.asarray(mask) > 0, inside)
    assert any("strokes painted in the editor were ignored" in n for n in notes)


def test_mask_of_another_size_is_resized_with_a_notice():
    up = Image.new("L", (32, 16), 0)
    up.paste(255, (0, 0, 16, 8))                                           # the top-left quarter
    _, mask, notes = mask_from_editor(scene(), mask=up)
    m = np.asarray(mask) > 0
    assert mask.size == (64, 64) and m[:32, :32].all() and m.sum() == 32 * 32
    assert any("resized" in n for n in notes)
    big_layer = np.zeros((128, 128, 4), np.uint8)
    big_layer[:64, :64, 3] = 255
    _, mask, notes = mask_from_editor({"background": scene(), "layers": [big_layer]})
    assert (np.asarray(mask) > 0).sum() == 32 * 32 and any("resized" in n for n in notes)


def test_empty_full_mask_and_image_with_alpha_get_notices():
    _, mask, notes = mask_from_editor({"background": scene(), "layers": [np.zeros((64, 64, 4), np.uint8)]})
    assert not np.asarray(mask).any() and any("nothing will change" in n for n in notes)
    _, mask, notes = mask_from_editor(scene(), mask=Image.new("L", (64, 64), 255))
    assert np.asarray(mask).all() and any("whole image" in n for n in notes)
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:32, :, 3] = 255                                                  # bottom half transparent
    img, _, notes = mask_from_editor({"background": rgba, "layers": []})
    assert px(img)[48, 10].tolist() == [255, 255, 255] and px(img)[10, 10].tolist() == [255, 0, 0]
    assert any("transparency" in n for n in notes)
    opaque = np.dstack([np.asarray(scene()), np.full((64, 64), 255, np.uint8)])   # the editor's RGBA canvas
    assert not [n for n in mask_from_editor({"background": opaque, "layers": []})[2] if "transparen" in n]


def test_bad_editor_values_are_user_errors(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png at all")
    with pytest.raises(UserInputError, match="upload an image"):
        mask_from_editor(None)
    with pytest.raises(UserInputError, match="upload an image"):
        mask_from_editor({"background": None, "layers": [stroke_layer()], "composite": None})
    with pytest.raises(UserInputError, match="not an image"):
        mask_from_editor({"background": str(tmp_path / "bad.png"), "layers": []})
    with pytest.raises(UserInputError, match="not an image"):
        mask_from_editor(scene(), mask=str(tmp_path / "bad.png"))
    with pytest.raises(UserInputError):
        mask_from_editor(scene(), mask=np.zeros((64, 64, 7)))


def test_prepare_mask_dilates_then_feathers_outwards_only():
    m = box_mask((24, 24, 40, 40), grow=0)
    hard = np.asarray(m) > 0
    assert np.array_equal(prepare_mask(m, 0, 0), hard.astype(np.float32))
    d = prepare_mask(m, 0, 3)
    assert d[hard].min() == 1 and d.sum() > hard.sum() and set(np.unique(d)) <= {0.0, 1.0}
    soft = prepare_mask(m, 2, 0)
    assert soft[hard].min() == 1.0                           # every painted pixel fully repainted
    ring = (soft > 0) & ~hard
    assert ring.any() and soft[ring].max() < 1 and soft[0, 0] == 0
    assert np.array_equal(np.round(soft * 255) / 255, soft)  # exact k/255 values


def test_fit_mask_follows_prepare_images_crop_and_keeps_thin_strokes():
    m = np.zeros((100, 300), np.uint8)                       # centre square = columns 100 … 199
    m[50, 120:180] = 255                                     # a 1-px stroke
    fitted = np.asarray(fit_mask(Image.fromarray(m), 64)) > 0
    assert fitted.any() and fitted.shape == (64, 64)
    m2 = np.zeros((100, 300), np.uint8)
    m2[:, :90] = 255                                         # only outside the kept square
    assert not np.asarray(fit_mask(Image.fromarray(m2), 64)).any()


def test_paste_back_is_exact_outside_the_mask():
    rng = np.random.default_rng(0)
    orig = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    gen = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    for soft in (prepare_mask(box_mask((10, 10, 30, 50)), 3, 2), rng.random((64, 64)) * (rng.random((64, 64)) > 0.5)):
        out = px(paste_back(orig, gen, soft))
        k = np.round(soft * 255)
        assert np.abs(out - px(orig))[k == 0].max() == 0
        if (k == 255).any():
            assert np.abs(out - px(gen))[k == 255].max() == 0
        mid = (k > 0) & (k < 255)
        lo, hi = np.minimum(px(orig), px(gen)), np.maximum(px(orig), px(gen))
        assert ((out >= lo) & (out <= hi))[mid].all()
    assert np.array_equal(px(paste_back(orig, gen, Image.new("L", (64, 64), 0))), px(orig))


# ---------------------------------------------------------------------------------- 9-channel U-Net
def test_nine_channel_unet_layout_and_step_zero_equality():
    unet = build_components(get_config("test"), seed=0)["unet"].eval()
    nine = make_inpaint_unet(unet).eval()
    assert nine.config.in_channels == 9 and nine.conv_in.in_channels == 9 and nine.config.out_channels == 4
    w = nine.conv_in.weight
    assert torch.equal(w[:, :4], unet.conv_in.weight) and not w[:, 4:].any()
    for (k, a), (_, b) in zip(unet.state_dict().items(), nine.state_dict().items()):
        if k != "conv_in.weight":
            assert torch.equal(a, b), k
    g = torch.Generator().manual_seed(0)
    z = torch.randn((2, 4, 16, 16), generator=g)
    mask = (torch.rand((2, 1, 16, 16), generator=g) > 0.5).float()
    zm = torch.randn((2, 4, 16, 16), generator=g)
    hidden = torch.randn((2, 77, unet.config.cross_attention_dim), generator=g)
    t = torch.tensor([10, 900])
    with torch.no_grad():
        a = unet(z, t, encoder_hidden_states=hidden).sample
        b = nine(torch.cat([z, mask, zm], 1), t, encoder_hidden_states=hidden).sample
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError):
        make_inpaint_unet(nine)


# ---------------------------------------------------------------------------------------- training
def _train(root: Path, **kw):
    from playground.latent.inpaint_train import train

    return train(out_dir=root / "tiny_sd_inpaint", base=root / "tiny_sd", preset="test", runs_dir=root / "runs",
                 progress=False, **kw)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """checkpoints/ with a random "test" tiny_sd and a tiny_sd_inpaint trained from it (test preset)."""
    root = tmp_path_factory.mktemp("ckpt")
    random_pipeline(root / "tiny_sd", preset="test", seed=0)
    record = _train(root)
    assert record["steps"] == 4
    return root


def test_training_writes_a_loadable_inpaint_pipeline_and_its_record(ckpt):
    from diffusers import StableDiffusionInpaintPipeline

    folder = ckpt / "tiny_sd_inpaint"
    record = json.loads((folder / "training.json").read_text())
    assert record["steps"] == 4 and record["batch"] == 4 and record["final_loss"] > 0
    assert {"seed", "torch_threads", "wall_minutes"} <= set(record)
    assert (folder / "history.csv").read_text().startswith("step,loss,loss_in_mask")
    card = (folder / "README.md").read_text()
    assert "python -m playground train tiny_sd_inpaint" in card
    pipe = StableDiffusionInpaintPipeline.from_pretrained(str(folder), local_files_only=True)
    assert pipe.unet.config.in_channels == 9
    base = load_file(str(ckpt / "tiny_sd" / "vae" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(v, load_file(str(folder / "vae" / "diffusion_pytorch_model.safetensors"))[k])
               for k, v in base.items())                                  # the VAE stays frozen
    out = pipe("a red circle", image=scene(), mask_image=box_mask((20, 20, 40, 40)), num_inference_steps=2,
               generator=torch.Generator().manual_seed(0), output_type="np").images
    assert out.shape == (1, 64, 64, 3)


def test_interrupted_training_resumes_to_identical_weights(ckpt, tmp_path):
    random_pipeline(tmp_path / "tiny_sd", preset="test", seed=0)
    first = _train(tmp_path, stop_after=2)
    assert first["interrupted_at"]["steps_this_run"] == 2 and not (tmp_path / "tiny_sd_inpaint" / "unet").exists()
    _train(tmp_path)
    a, b = _weights(tmp_path / "tiny_sd_inpaint"), _weights(ckpt / "tiny_sd_inpaint")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_resume_state_saved_from_another_base_is_not_resumed(ckpt, tmp_path):
    random_pipeline(tmp_path / "tiny_sd", preset="test", seed=1)            # another base, the same runs folder
    assert _train(tmp_path, stop_after=2)["interrupted_at"]["steps_this_run"] == 2
    random_pipeline(tmp_path / "tiny_sd", preset="test", seed=0)            # the base that ckpt's model was trained on
    _train(tmp_path)
    a, b = _weights(tmp_path / "tiny_sd_inpaint"), _weights(ckpt / "tiny_sd_inpaint")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)   # started over: equal to a fresh run


def test_random_masks_cover_every_kind():
    from playground.latent.inpaint_train import get_preset, random_masks

    batch = render_dataset(64, seed=3)
    masks = random_masks(batch.specs, 64, torch.Generator().manual_seed(0), get_preset("tiny_sd_inpaint"))
    cover = masks.mean(dim=(1, 2, 3))
    assert masks.shape == (64, 1, 64, 64) and set(masks.unique().tolist()) <= {0.0, 1.0}
    assert (cover == 1).any() and ((cover > 0) & (cover < 1)).float().mean() > 0.7


# ----------------------------------------------------------------------------------------- service
@pytest.fixture(scope="module")
def svc(ckpt) -> InpaintService:
    return InpaintService(Txt2ImgService(Settings(checkpoints_dir=ckpt), registry=ModelRegistry()))


def editor(img: Image.Image | None = None, box=(10, 20, 30, 40)) -> dict:
    return {"background": img or scene(), "layers": [stroke_layer(box=box)], "composite": None}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("padding", [0, 6])
def test_both_methods_keep_outside_pixels_exactly(svc, method, padding):
    r = svc.inpaint(editor(), "a red circle", steps=STEPS, seed=1, method=method, padding=padding, mask_blur=2)
    assert r["result"].size == r["input"].size == r["mask"].size == r["masked"].size == (64, 64)
    assert r["model"] == ("tiny_sd_inpaint" if method == METHOD_NINE else "tiny_sd") and r["method"] == method
    m = np.asarray(r["mask"])
    assert m[20:40, 10:30].min() == 255
    diff = np.abs(px(r["result"]) - px(r["input"]))
    assert diff[m == 0].max() == 0 and r["changed_pixels"] > 0
    assert r["changed_pixels"] == int((diff > 0).any(-1).sum()) <= int((m > 0).sum())
    assert np.abs(px(r["raw"]) - px(r["input"]))[m == 0].max() > 0 or padding    # why paste-back is needed
    params = read_params(r["result"])
    assert params["kind"] == "inpaint" and params["method"] == method and params["seed"] == 1
    assert r["skipped"] is False and svc.available() and svc.image_size() == 64


def test_same_seed_same_image_other_seed_other_image(svc):
    a = svc.inpaint(editor(), "a blue square", steps=STEPS, seed=5)["result"]
    b = svc.inpaint(editor(), "a blue square", steps=STEPS, seed=5)["result"]
    c = svc.inpaint(editor(), "a blue square", steps=STEPS, seed=6)["result"]
    assert np.array_equal(px(a), px(b)) and not np.array_equal(px(a), px(c))


def test_empty_mask_returns_the_input_without_running_the_model(svc, monkeypatch):
    monkeypatch.setattr(svc.txt2img, "_stream", lambda *a, **k: pytest.fail("the model ran"))
    empty = {"background": scene(), "layers": [np.zeros((64, 64, 4), np.uint8)]}
    r = svc.inpaint(empty, "a red circle", steps=STEPS)
    assert r["changed_pixels"] == 0 and r["skipped"] and np.array_equal(px(r["result"]), px(r["input"]))
    assert any("nothing will change" in n for n in r["notices"])


def test_full_mask_and_large_non_square_upload(svc):
    big = scene().resize((300, 200))
    r = svc.inpaint(big, "a red circle", steps=STEPS, mask=Image.new("L", (300, 200), 255))
    assert r["result"].size == (64, 64) and np.asarray(r["mask"]).all()
    notes = " ".join(r["notices"])
    assert "whole image" in notes and "cropped" in notes and "scaled down" in notes


@pytest.mark.parametrize("kwargs, match", [
    ({"steps": 0}, "steps"), ({"steps": 101}, "steps"), ({"guidance_scale": 31}, "guidance"),
    ({"guidance_scale": float("nan")}, "guidance"), ({"strength": 0}, "strength"), ({"strength": 1.5}, "strength"),
    ({"mask_blur": -1}, "mask blur"), ({"mask_blur": MAX_BLUR + 1}, "mask blur"),
    ({"padding": MAX_PADDING + 1}, "padding"),
    ({"padding": 2.5}, "padding"), ({"dilate": -1}, "dilation"), ({"method": "magic"}, "method"),
    ({"seed": -1}, "seed"), ({"scheduler": "nope"}, "scheduler"), ({"prompt": 3}, "prompt"),
    ({"editor": None}, "upload an image"),
])
def test_bad_inputs_are_user_errors(svc, kwargs, match):
    args = {"editor": editor(), "prompt": "a red circle", "steps": STEPS, **kwargs}
    with pytest.raises(UserInputError, match=match):
        svc.inpaint(**args)


def test_missing_nine_channel_checkpoint_blend_still_works(tmp_path):
    random_pipeline(tmp_path / "tiny_sd", preset="test", seed=0)
    s = InpaintService(Txt2ImgService(Settings(checkpoints_dir=tmp_path), registry=ModelRegistry()))
    assert s.methods_available() == [METHOD_BLEND] and not s.available() and s.base_available()
    assert s.image_size() == 64
    with pytest.raises(UserInputError, match="python -m playground train tiny_sd_inpaint"):
        s.inpaint(editor(), "a red circle", steps=STEPS, method=METHOD_NINE)
    assert s.inpaint(editor(), "a red circle", steps=STEPS, method=METHOD_BLEND)["changed_pixels"] > 0


def test_hub_path_with_a_tiny_local_inpainting_folder(ckpt, tmp_path):
    from playground.latent.inpaint_train import inpaint_pipeline

    parts = build_components(get_config("test"), seed=7)
    hub = tmp_path / "hub-inpaint"
    inpaint_pipeline(parts, make_inpaint_unet(parts["unet"])).save_pretrained(hub, safe_serialization=True)
    settings = Settings(checkpoints_dir=ckpt, inpaint_model=str(hub))
    s = InpaintService(Txt2ImgService(settings, registry=ModelRegistry()))
    r = s.inpaint(editor(), "a red circle", steps=STEPS, method=METHOD_NINE)
    assert r["model"] == str(hub) and s.model_note == ""
    assert np.abs(px(r["result"]) - px(r["input"]))[np.asarray(r["mask"]) == 0].max() == 0
    broken = InpaintService(Txt2ImgService(Settings(checkpoints_dir=ckpt, inpaint_model=str(tmp_path / "nope")),
                                           registry=ModelRegistry()))
    r = broken.inpaint(editor(), "a red circle", steps=STEPS, method=METHOD_NINE)
    assert r["model"] == "tiny_sd_inpaint" and "could not be loaded" in broken.model_note
    assert any("could not be loaded" in n for n in r["notices"])


# -------------------------------------------------------------------------------------- evaluation
def test_evaluation_runs_and_its_table_has_the_columns(svc, tmp_path):
    from playground.latent.inpaint_evaluate import edit_cases, evaluate, evaluate_and_card, markdown_table, speed

    cases = edit_cases(4, seed=0)
    for c in cases:
        new, old = c.edited.objects[c.target], c.scene.objects[c.target]
        assert new.colour != old.colour and new.shape != old.shape and new.box == old.box
        assert new.phrase() in c.prompt and old.phrase() not in c.prompt
    result = evaluate(svc, n=3, steps=STEPS, cache_dir=tmp_path / "cache", progress=False)
    table = markdown_table(result)
    assert table.splitlines()[0].startswith("| method | colour right (n=3) | shape right (n=3) | colour and shape")
    assert len(table.splitlines()) == 2 + len(METHODS) + 1
    for method in METHODS:
        assert result["methods"][method]["outside_max_diff"] == 0 and result["methods"][method]["n"] == 3
    assert result["reference"]["colour"] == result["reference"]["shape"] == 1.0
    again = evaluate(svc, n=3, steps=STEPS, cache_dir=tmp_path / "cache", progress=False)   # from the cache
    assert json.dumps(again["methods"]) == json.dumps(result["methods"])              # NaN-safe equality
    sp = speed(svc, repeats=1, threads=(1,))
    assert sp["nine_channel_seconds_1_thread"] > 0 and "target_met" in sp
    metrics = evaluate_and_card(svc.settings.checkpoints_dir, n=2, do_speed=False, progress=False,
                                cache_dir=tmp_path / "cache2")
    assert metrics["nine_channel"]["outside_max_diff"] == 0 and metrics["targets"]["outside_max_diff_is_0"]
    card = (svc.settings.checkpoints_dir / "tiny_sd_inpaint" / "README.md").read_text()
    assert "colour right (n=2)" in card and "latent blending" in card
