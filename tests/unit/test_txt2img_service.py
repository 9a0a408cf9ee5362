"""Txt2ImgService on a tiny randomly initialised Stable Diffusion pipeline (``random_pipeline``): CFG,
seeds, streaming, stopping, PNG parameters, validation, uploads, Hub models, schedulers."""
from __future__ import annotations

import io
import json
import math
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler
from PIL import Image

from playground.core.errors import UserInputError
from playground.core.images import PARAMS_KEY, png_info, with_params
from playground.core.registry import ModelRegistry
from playground.core.settings import Settings
from playground.latent.components import random_pipeline
from playground.latent.service import SCHEDULERS, StepRecorder, Txt2ImgService, as_noise, predicted_x0, to_rgb

STEPS = 6


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ckpt")
    random_pipeline(root / "tiny_sd", preset="test", seed=0)
    return root


@pytest.fixture(scope="module")
def svc(ckpt: Path) -> Txt2ImgService:
    torch.set_num_threads(1)
    return Txt2ImgService(Settings(checkpoints_dir=ckpt), registry=ModelRegistry())


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.int16)


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", pnginfo=png_info(img))
    return buf.getvalue()


# ---- guidance -------------------------------------------------------------------------------------------
def test_guidance_one_is_the_conditional_pass_alone(svc):
    m = svc.model()
    with torch.inference_mode():
        step = svc._cfg_loop(m, "a red circle", "", STEPS, 3, 1.0, stop_at=2)
        assert torch.allclose(step["guided"], step["cond"], atol=1e-6)
        assert not torch.allclose(step["uncond"], step["cond"], atol=1e-6)   # the prompt does change ε
        manual = svc._cfg_loop(m, "a red circle", "", STEPS, 3, 1.0, stop_at=None)["latents"]
        pipe = m.fresh("DDIM")                          # diffusers at s = 1: one conditional pass per step
        ref = pipe("a red circle", num_inference_steps=STEPS, guidance_scale=1.0, generator=svc._generators(3, 1),
                   output_type="latent").images
    assert torch.allclose(manual, ref, atol=1e-4, rtol=1e-4)


def test_the_step_view_is_the_pipelines_own_computation(svc):
    m = svc.model()
    with torch.inference_mode():
        manual = svc._cfg_loop(m, "a blue square", "red", STEPS, 5, 7.5, stop_at=None)["latents"]
        ref = m.fresh("DDIM")("a blue square", negative_prompt="red", num_inference_steps=STEPS, guidance_scale=7.5,
                              generator=svc._generators(5, 1), output_type="latent").images
    assert torch.equal(manual, ref)


def test_cfg_step_view_shows_three_predictions_and_their_x0(svc):
    r = svc.cfg_step_view("a red circle", "", STEPS, 0, 2, 7.5)
    assert set(r["eps"]) == set(r["x0"]) == {"uncond", "cond", "guided"}
    assert r["step"] == 2 and 0 < r["alpha_bar"] < 1 and r["t"] > 0
    assert r["x0"]["guided"].size == (64, 64) and r["x_t"].size == (64, 64)
    assert r["eps"]["cond"].mode == "L" and r["direction"].size == r["eps"]["cond"].size
    # ε̃ = ε_∅ + s (ε_y − ε_∅): its distance from ε_∅ is s times the direction's norm
    m = svc.model()
    with torch.inference_mode():
        raw = svc._cfg_loop(m, "a red circle", "", STEPS, 0, 7.5, stop_at=2)
    kind = raw["pipe"].scheduler.config.prediction_type
    eps = {k: as_noise(raw["x_t"], raw[k], raw["alpha_bar"], kind) for k in ("uncond", "guided")}
    assert (eps["guided"] - eps["uncond"]).norm().item() == pytest.approx(7.5 * r["norms"]["direction"], rel=1e-4)
    s0 = svc.cfg_step_view("a red circle", "", STEPS, 0, 2, 0.0)      # s = 0: the unconditional model
    assert s0["norms"]["guided"] == pytest.approx(s0["norms"]["uncond"], rel=1e-6)


def test_predicted_x0_formula_matches_ddim(svc):
    sched = DDIMScheduler.from_config(svc.model().scheduler("DDIM").config, prediction_type="epsilon")
    sched.set_timesteps(10)
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(1, 4, 16, 16, generator=g), torch.randn(1, 4, 16, 16, generator=g)
    t = sched.timesteps[3]
    out = sched.step(eps, t, x)
    assert torch.allclose(predicted_x0(x, eps, sched.alphas_cumprod[int(t)]), out.pred_original_sample, atol=1e-5)


def test_v_prediction_as_noise_matches_ddim():
    """ε̂ = √ᾱ v̂ + √(1−ᾱ) z_t, then DDPM eq. 15, gives the ẑ_0 of diffusers' DDIM for a v-predicting model."""
    sched = DDIMScheduler(beta_schedule="linear", prediction_type="v_prediction", clip_sample=False)
    sched.set_timesteps(10)
    g = torch.Generator().manual_seed(1)
    x, v = torch.randn(1, 4, 16, 16, generator=g), torch.randn(1, 4, 16, 16, generator=g)
    for t in sched.timesteps[[0, 4, 9]]:
        ab = sched.alphas_cumprod[int(t)]
        out = sched.step(v, t, x)
        assert torch.allclose(predicted_x0(x, as_noise(x, v, ab, "v_prediction"), ab), out.pred_original_sample,
                              atol=1e-5)
    assert torch.equal(as_noise(x, v, 0.3, "epsilon"), v)
    with pytest.raises(ValueError):
        as_noise(x, v, 0.3, "sample")


def test_cfg_sweep_is_txt2img_at_each_scale(svc):
    r = svc.cfg_sweep("a green triangle", "", 4, 11, "DDIM")
    assert r["scales"] == [1.0, 2.0, 4.0, 7.5, 12.0] and len(r["images"]) == 5
    single = svc.generate("a green triangle", "", 4, 7.5, 11, "DDIM", 1)["images"][0]
    assert np.array_equal(pixels(r["images"][3]), pixels(single))
    with pytest.raises(UserInputError, match="guidance scales"):
        svc.cfg_sweep("x", "", 4, 0, "DDIM", scales=[])
    with pytest.raises(UserInputError, match="guidance scale"):
        svc.cfg_sweep("x", "", 4, 0, "DDIM", scales=[2, float("nan")])


# ---- seeds and schedulers ---------------------------------------------------------------------------------
@pytest.mark.parametrize("scheduler", ["DPM++ 2M", "Euler a"])
def test_same_seed_same_first_image_whatever_n(svc, scheduler):
    one = svc.generate("a red circle", "", STEPS, 7.5, 42, scheduler, 1)["images"][0]
    three = svc.generate("a red circle", "", STEPS, 7.5, 42, scheduler, 3)["images"]
    assert np.abs(pixels(one) - pixels(three[0])).max() <= 1            # batch arithmetic, not the noise
    assert np.abs(pixels(three[1]) - pixels(three[0])).max() > 20       # image 1 has its own seed (43)
    again = svc.generate("a red circle", "", STEPS, 7.5, 43, scheduler, 1)["images"][0]
    assert np.abs(pixels(again) - pixels(three[1])).max() <= 1


def test_schedulers_differ_but_each_is_deterministic(svc):
    results = {}
    for name in SCHEDULERS:
        a = svc.generate("a small blue square", "", STEPS, 5.0, 7, name, 1)["images"][0]
        b = svc.generate("a small blue square", "", STEPS, 5.0, 7, name, 1)["images"][0]
        assert np.array_equal(pixels(a), pixels(b)), name
        results[name] = pixels(a)
    names = list(results)
    for i, x in enumerate(names):
        for y in names[i + 1:]:
            assert not np.array_equal(results[x], results[y]), (x, y)


def test_concurrent_requests_do_not_disturb_each_other(svc):
    jobs = [("DPM++ 2M", 1), ("Euler a", 2), ("UniPC", 3), ("DDIM", 4)]
    alone = {job: svc.generate("a red circle", "", STEPS, 7.5, job[1], job[0], 2)["images"] for job in jobs}
    together: dict = {}

    def run(job):
        together[job] = svc.generate("a red circle", "", STEPS, 7.5, job[1], job[0], 2)["images"]

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for job in jobs:
        for a, b in zip(alone[job], together[job]):
            assert np.abs(pixels(a) - pixels(b)).max() <= 1, job


def test_prompt_checks_and_encoding_may_run_at_once(svc):
    """The fast tokenizer's settings are per object: prompt checks (no padding) racing the pipeline's
    encode_prompt (padding to 77) must not change anyone's embeddings."""
    m = svc.model()
    with torch.inference_mode():
        ref = m.fresh("DDIM").encode_prompt("a red circle", "cpu", 1, True, None)[0]
    errors: list = []

    def encode():
        pipe = m.fresh("DDIM")
        for _ in range(60):
            with torch.inference_mode():
                emb = pipe.encode_prompt("a red circle", "cpu", 1, True, None)[0]
            if emb.shape != ref.shape or not torch.equal(emb, ref):
                errors.append(tuple(emb.shape))

    def check():
        for _ in range(200):
            svc._prompt_notices(m, "a small blue square in the top left and more words", "prompt")

    threads = [threading.Thread(target=f) for f in (encode, check, encode, check)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# ---- streaming and stopping ---------------------------------------------------------------------------------
def test_a_preview_per_step_in_order_then_the_images(svc):
    items = list(svc.txt2img("a large red circle", "", STEPS, 7.5, 0, "DPM++ 2M", 2, preview_seconds=0.0))
    steps, done = items[:-1], items[-1]
    assert [s["kind"] for s in steps] == ["step"] * STEPS
    assert [s["step"] for s in steps] == list(range(1, STEPS + 1))
    assert all(s["total"] == STEPS and s["preview"] is not None for s in steps)
    assert steps[0]["preview"].size == (2 * 64 + 3, 64 + 2)                # the two x̂_0 side by side
    ts = [s["t"] for s in steps]
    assert ts == sorted(ts, reverse=True)
    assert all(s["eta_s"] >= 0 for s in steps) and steps[-1]["eta_s"] == 0
    assert done["kind"] == "done" and len(done["images"]) == 2 and done["images"][0].size == (64, 64)
    assert done["preview_decode_seconds"] > 0
    # the last preview is x̂_0 of the last step: close to the final image (the same latent, decoded)
    throttled = list(svc.txt2img("a large red circle", "", STEPS, 7.5, 0, "DPM++ 2M", 1, preview_seconds=math.inf))
    assert all(s["preview"] is None for s in throttled[:-1])


def test_stop_cancels_the_run(svc):
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) > 2

    items = list(svc.txt2img("a red circle", "", 30, 7.5, 0, "Euler", 2, should_stop=should_stop,
                             preview_seconds=0.0))
    assert [i["kind"] for i in items] == ["step", "step", "stopped"]
    stopped = items[-1]
    assert stopped["step"] == 3 and stopped["total"] == 30 and len(stopped["images"]) == 2
    assert json.loads(stopped["images"][0].info[PARAMS_KEY])["stopped_at"] == 3


def test_closing_the_stream_stops_the_worker(svc):
    it = svc.txt2img("a red circle", "", 60, 7.5, 0, "DDIM", 1, preview_seconds=0.0)
    assert next(it)["step"] == 1
    it.close()                                       # what a vanished client does to the generator
    assert not [t for t in threading.enumerate() if t.name == "txt2img-run"]


# ---- PNG parameters ----------------------------------------------------------------------------------------------
def test_png_parameters_round_trip_and_regenerate(svc):
    out = svc.generate("a small blue square in the top left", "red", 5, 4.5, 100, "Euler a", 2)
    second = out["images"][1]
    r = svc.read_png_params(png_bytes(second))
    assert r["params"] == {"prompt": "a small blue square in the top left", "negative_prompt": "red", "steps": 5,
                           "guidance_scale": 4.5, "seed": 101, "scheduler": "Euler a"}
    assert r["kind"] == "txt2img" and not r["ignored"] and "Restored" in r["message"]
    p = r["params"]
    again = svc.generate(p["prompt"], p["negative_prompt"], p["steps"], p["guidance_scale"], p["seed"],
                         p["scheduler"], 1)["images"][0]
    assert np.abs(pixels(again) - pixels(second)).max() <= 1
    # identical pictures are still distinct files (request ids)
    a = svc.generate("a red circle", "", 3, 2.0, 0, "DDIM", 1)["images"][0]
    b = svc.generate("a red circle", "", 3, 2.0, 0, "DDIM", 1)["images"][0]
    assert np.array_equal(pixels(a), pixels(b)) and png_bytes(a) != png_bytes(b)


def test_png_without_or_with_forged_parameters(svc, tmp_path):
    plain = Image.new("RGB", (64, 64), "white")
    with pytest.raises(UserInputError, match="no generation parameters"):
        svc.read_png_params(png_bytes(plain))
    forged = plain.copy()
    forged.info[PARAMS_KEY] = "{not json"
    with pytest.raises(UserInputError, match="unreadable"):
        svc.read_png_params(png_bytes(forged))
    listed = plain.copy()
    listed.info[PARAMS_KEY] = "[1, 2]"
    with pytest.raises(UserInputError, match="unreadable"):
        svc.read_png_params(png_bytes(listed))
    partial = with_params(plain, {"kind": "txt2img", "prompt": "a red circle", "steps": 10**6, "seed": -5,
                                  "scheduler": "rm -rf /", "guidance_scale": "nan", "model": "tiny_sd"})
    path = tmp_path / "partial.png"
    path.write_bytes(png_bytes(partial))
    r = svc.read_png_params(str(path))
    assert r["params"] == {"prompt": "a red circle"}
    assert set(r["ignored"]) == {"steps", "seed", "scheduler", "guidance_scale"}
    assert "Ignored" in r["message"]
    useless = with_params(plain, {"steps": "many", "seed": [1]})
    with pytest.raises(UserInputError, match="nothing this tab can use"):
        svc.read_png_params(png_bytes(useless))
    other_tab = with_params(plain, {"sampler": "ddim", "steps": 50, "seed": 3, "label": 4})
    r = svc.read_png_params(png_bytes(other_tab))
    assert r["params"] == {"steps": 50, "seed": 3} and "not made by the text-to-image tab" in r["message"]
    with pytest.raises(UserInputError, match="not an image"):
        svc.read_png_params(b"this is not a png")


# ---- validation ----------------------------------------------------------------------------------------------
GOOD = dict(prompt="a red circle", negative_prompt="", steps=4, guidance_scale=7.5, seed=0, scheduler="DDIM", n=1)


@pytest.mark.parametrize("bad, message", [
    ({"steps": 0}, "steps must be between 1 and 100"),
    ({"steps": 101}, "steps must be between 1 and 100"),
    ({"steps": float("nan")}, "finite"),
    ({"steps": "many"}, "must be a number"),
    ({"steps": 2.5}, "whole number"),
    ({"guidance_scale": float("nan")}, "finite"),
    ({"guidance_scale": float("inf")}, "finite"),
    ({"guidance_scale": -1}, "between 1 and 30"),
    ({"guidance_scale": 0.5}, "conditional model alone"),
    ({"guidance_scale": 1e9}, "between 1 and 30"),
    ({"n": 0}, "number of images"),
    ({"n": 9}, "number of images must be between 1 and 8"),
    ({"seed": -1}, "seed must be between"),
    ({"seed": 2**32}, "seed must be between"),
    ({"seed": 2**32 - 1, "n": 2}, "seed can be at most"),
    ({"scheduler": "PNDM"}, "Unknown scheduler"),
    ({"scheduler": None}, "Unknown scheduler"),
    ({"prompt": 123}, "must be text"),
    ({"prompt": "a " * 1500}, "characters long"),
    ({"negative_prompt": ["x"]}, "must be text"),
])
def test_bad_generation_input(svc, bad, message):
    with pytest.raises(UserInputError, match=message):
        next(svc.txt2img(**(GOOD | bad)))


def test_bad_step_view_and_img2img_input(svc):
    with pytest.raises(UserInputError, match="step must be between 0 and 3"):
        svc.cfg_step_view("x", "", 4, 0, 4, 7.5)
    with pytest.raises(UserInputError, match="between 0 and 30"):
        svc.cfg_step_view("x", "", 4, 0, 1, -0.5)
    img = Image.new("RGB", (64, 64), "white")
    for strength, message in [(0, "0 steps would run"), (1.5, "strength must be between 0 and 1"),
                              (float("nan"), "finite"), (0.05, "0 steps would run")]:
        with pytest.raises(UserInputError, match=message):
            svc.img2img(img, "a red circle", strength, 10, 7.5, 0, "DDIM")
    with pytest.raises(UserInputError, match="provide an image"):
        svc.img2img(None, "a red circle", 0.5, 10, 7.5, 0, "DDIM")


def test_prompt_notices(svc):
    first = next(svc.txt2img("", "", 2, 7.5, 0, "DDIM", 1))
    assert any("unconditionally" in n for n in first["notices"])
    long = " ".join(["a red circle and a blue square"] * 20)
    notes = next(svc.txt2img(long, "", 2, 7.5, 0, "DDIM", 1))["notices"]
    assert any("reads only the first 75" in n for n in notes)
    notes = next(svc.txt2img("a red zebra circle", "", 2, 7.5, 0, "DDIM", 1))["notices"]
    assert any("never saw" in n and "zebra" in n for n in notes)
    assert next(svc.txt2img("a red circle", "", 2, 7.5, 0, "DDIM", 1))["notices"] == []


# ---- uploads for img2img ---------------------------------------------------------------------------------------
def _modes() -> list[tuple[str, Image.Image]]:
    rgba = Image.new("RGBA", (64, 64), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (16, 16, 48, 48))
    pal = Image.new("RGB", (64, 64), "green").convert("P")
    return [("RGBA", rgba), ("L", Image.new("L", (64, 64), 100)),
            ("I;16", Image.fromarray(np.full((64, 64), 32768, np.uint16))),
            ("CMYK", Image.new("CMYK", (64, 64), (0, 255, 255, 0))), ("P", pal),
            ("F", Image.fromarray(np.full((64, 64), 0.25, np.float32))), ("1", Image.new("1", (64, 64), 1))]


@pytest.mark.parametrize("mode, img", _modes(), ids=[m for m, _ in _modes()])
def test_any_image_mode_becomes_rgb(svc, mode, img):
    out, notes = svc.prepare_image(img)
    assert out.mode == "RGB" and out.size == (64, 64)
    assert notes and mode in notes[0]


def test_image_modes_keep_their_meaning():
    rgb, _ = to_rgb(Image.fromarray(np.full((4, 4), 32768, np.uint16)))
    assert abs(int(np.asarray(rgb)[0, 0, 0]) - 128) <= 1                  # mid-gray, not clipped to white
    rgb, note = to_rgb(Image.new("RGBA", (4, 4), (0, 0, 0, 0)))
    assert np.asarray(rgb).min() == 255 and "white" in note                # transparency -> white
    rgb, _ = to_rgb(Image.fromarray(np.full((4, 4), 0.5, np.float32)))
    assert abs(int(np.asarray(rgb)[0, 0, 0]) - 128) <= 1
    same, note = to_rgb(Image.new("RGB", (4, 4)))
    assert note is None


def test_image_sizes_and_corrupt_uploads(svc):
    big, notes = svc.prepare_image(Image.new("RGB", (640, 640), "red"))
    assert big.size == (64, 64) and "scaled down from 640×640" in notes[0]
    tiny, notes = svc.prepare_image(Image.new("RGB", (8, 8), "red"))
    assert tiny.size == (64, 64) and "upscaled" in notes[0]
    wide, notes = svc.prepare_image(Image.new("RGB", (200, 100), "red"))
    assert wide.size == (64, 64) and "cropped to its centre 100×100" in notes[0]
    with pytest.raises(UserInputError, match="limit is 4096"):
        svc.prepare_image(Image.new("RGB", (5000, 4)))
    with pytest.raises(UserInputError, match="not an image we can read"):
        svc.prepare_image(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    truncated = png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)))[:300]
    with pytest.raises(UserInputError, match="not an image we can read"):
        svc.prepare_image(truncated)


def test_img2img_returns_the_noised_start_and_the_result(svc):
    src = Image.new("RGBA", (128, 128), (255, 255, 255, 255))
    r = svc.img2img(src, "a blue square", 0.5, 10, 7.5, 3, "DDIM")
    assert r["steps_run"] == 5 and 400 <= r["t_start"] <= 600 and 0 < r["alpha_bar"] < 1
    assert r["start"].size == r["result"].size == r["input"].size == (64, 64)
    assert any("transparency" in n for n in r["notices"]) and any("scaled down" in n for n in r["notices"])
    assert json.loads(r["result"].info[PARAMS_KEY])["strength"] == 0.5
    again = svc.img2img(src, "a blue square", 0.5, 10, 7.5, 3, "DDIM")
    assert np.array_equal(pixels(again["result"]), pixels(r["result"]))
    stronger = svc.img2img(src, "a blue square", 1.0, 10, 7.5, 3, "DPM++ 2M")
    assert stronger["steps_run"] == 10 and stronger["t_start"] > r["t_start"]
    restored = svc.read_png_params(png_bytes(r["result"]))["params"]
    assert restored["strength"] == 0.5 and restored["scheduler"] == "DDIM"


def test_pipeline_info_from_the_folder_equals_the_loaded_pipeline(svc):
    folder = svc._info_from_folder()
    assert folder == svc._info_from_pipe(svc.model())
    assert (folder["tokens"], folder["latent_channels"], folder["latent_side"], folder["image_side"]) == (77, 4, 16, 64)


# ---- models -----------------------------------------------------------------------------------------------------
def test_absent_checkpoint_says_not_trained(tmp_path):
    s = Txt2ImgService(Settings(checkpoints_dir=tmp_path), registry=ModelRegistry())
    assert not s.available()
    s.warmup()                                                             # nothing to warm, no error
    with pytest.raises(UserInputError, match="not trained yet"):
        next(s.txt2img("a red circle"))


def test_hub_model_path_with_a_local_pipeline_folder(ckpt, tmp_path):
    hub = random_pipeline(tmp_path / "hub_model", preset="test", seed=1)
    registry = ModelRegistry()
    s = Txt2ImgService(Settings(checkpoints_dir=tmp_path / "none", txt2img_model=str(hub)), registry=registry)
    assert s.available()
    m = s.model()
    assert not m.builtin and m.model == str(hub) and m.img2img_cls.__name__ == "StableDiffusionImg2ImgPipeline"
    out = s.generate("a red circle", "", 3, 7.5, 0, "DDIM", 1)
    assert json.loads(out["images"][0].info[PARAMS_KEY])["model"] == str(hub) and s.model_note == ""
    assert s.pipeline_info()["builtin"] is False
    assert s.img2img(out["images"][0], "a blue square", 0.5, 4, 7.5, 0, "DDIM")["result"].size == (64, 64)
    builtin = Txt2ImgService(Settings(checkpoints_dir=ckpt), registry=ModelRegistry())
    other = builtin.generate("a red circle", "", 3, 7.5, 0, "DDIM", 1)["images"][0]
    assert not np.array_equal(pixels(other), pixels(out["images"][0]))    # another model's weights


def test_a_failing_hub_model_falls_back_to_the_builtin_one(ckpt, tmp_path):
    empty = tmp_path / "not_a_pipeline"
    empty.mkdir()
    registry = ModelRegistry()
    s = Txt2ImgService(Settings(checkpoints_dir=ckpt, txt2img_model=str(empty)), registry=registry)
    m = s.model()
    assert m.builtin and "could not be loaded" in s.model_note and str(empty) in s.model_note
    assert s.model() is m and registry.keys() == [f"txt2img/{ckpt / 'tiny_sd'}"]   # not retried per request
    assert s.generate("a red circle", "", 2, 7.5, 0, "DDIM", 1)["model"] == "tiny_sd"
    alone = Txt2ImgService(Settings(checkpoints_dir=tmp_path / "none", txt2img_model=str(empty)),
                           registry=ModelRegistry())
    with pytest.raises(UserInputError, match="not trained yet"):
        alone.model()
    assert "could not be loaded" in alone.model_note


def test_step_recorder_keeps_the_generator_visible(svc):
    """The wrapped step() must keep its signature: the pipeline passes ``generator`` only to a step() that
    lists it, and ancestral sampling would otherwise draw from the global RNG."""
    import inspect

    sched = svc.model().scheduler("Euler a")
    StepRecorder(sched)
    assert "generator" in inspect.signature(sched.step).parameters
