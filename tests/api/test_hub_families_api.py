"""The configured ("real") Stable Diffusion models, end to end through gradio_client.

For the SD 1.5 and the SDXL family (``playground/latent/tiny_architectures.py``: tiny random weights, the real architectures'
configurations, saved as the Hub ships them), the real ``app.py`` is launched with
``PLAYGROUND_TXT2IMG_MODEL`` / ``PLAYGROUND_INPAINT_MODEL`` / ``PLAYGROUND_CONTROLNET_MODEL`` (and, for SDXL,
``PLAYGROUND_VAE_MODEL``) naming the local folders, *beside* the built-in tiny_sd models (so a silent fall-back
would be served, and seen). Every endpoint of text to image, the CFG sweep and one-step view, img2img, PNG
read-back, inpainting (both methods), Canny and ControlNet is called, and each picture is checked to be the
configured model's: its PNG parameters name it, and it has the family's native size (128 / 256 px; the
built-in model's is 64 px, shown 3× = 192 px).

Configured models load in the background after the server listens; until then the tab answers "Loading …".
:func:`call` retries through that (and only that) for up to two minutes."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
from app_launcher import checkpoints_with_tiny_sd, launch_app, stop_app
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from playground.latent.tiny_architectures import NATIVE_SIZE, build_family
from PIL import Image, PngImagePlugin

from playground.core.images import PARAMS_KEY, read_params
from playground.data import scenes
from playground.latent.inpaint import METHOD_BLEND, METHOD_NINE
from playground.ui.txt2img_tab import display_scale

LOADING_TIMEOUT = 120.0
RETRY_SECONDS = 0.5
PROMPT = "a large red circle"
STEPS = 3

# (family, api_name) -> the first answer of that endpoint: "" when it succeeded at once, else the "Loading …"
# message it gave while the configured model was still loading.
FIRST_ANSWER: dict[tuple[str, str], str] = {}


class HubApp(NamedTuple):
    client: Client
    family: str
    folders: dict[str, Path]


@pytest.fixture(scope="module", params=["sd15", "sdxl"])
def hub_app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> HubApp:
    family = request.param
    folders = build_family(tmp_path_factory.mktemp("hub"), family)
    checkpoints = checkpoints_with_tiny_sd(tmp_path_factory.mktemp("ckpt"))
    env = {
        "PLAYGROUND_PRESET": "",
        "PLAYGROUND_TXT2IMG_MODEL": str(folders["txt2img"]),
        "PLAYGROUND_INPAINT_MODEL": str(folders["inpaint"]),
        "PLAYGROUND_CONTROLNET_MODEL": str(folders["controlnet"]),
        "PLAYGROUND_VAE_MODEL": str(folders["vae"]) if "vae" in folders else "",
        "HF_HUB_OFFLINE": "1",
    }
    assert ("vae" in folders) == (family == "sdxl")
    url, proc = launch_app(tmp_path_factory.mktemp(f"app_{family}") / "app.log", checkpoints, env=env)
    try:
        yield HubApp(Client(url, verbose=False), family, folders)
    finally:
        stop_app(proc)


def _message(exc: AppError) -> str:
    return str(getattr(exc, "message", None) or exc)


def call(app: HubApp, api_name: str, *args: Any, stream: bool = False, **kwargs: Any) -> Any:
    """``predict`` (or, with ``stream``, every streamed output of ``submit``), retried every 0.5 s for up to
    two minutes while the app answers "Loading …"; any other error is raised at once."""
    deadline = time.monotonic() + LOADING_TIMEOUT
    while True:
        try:
            if stream:
                job = app.client.submit(*args, api_name=api_name, **kwargs)
                job.result()                          # raises the AppError of a failed run
                out = list(job.outputs())
            else:
                out = app.client.predict(*args, api_name=api_name, **kwargs)
            FIRST_ANSWER.setdefault((app.family, api_name), "")
            return out
        except AppError as exc:
            message = _message(exc)
            if not message.startswith("Loading") or time.monotonic() > deadline:
                raise
            FIRST_ANSWER.setdefault((app.family, api_name), message)
            time.sleep(RETRY_SECONDS)


def native(app: HubApp) -> int:
    return NATIVE_SIZE[app.family]


def shown(app: HubApp) -> int:
    """The side of a native-size picture as the tabs display it (nearest-neighbour upscaled for small ones)."""
    return native(app) * display_scale(native(app))


def model_of(path: str) -> str:
    """The "model" field of a delivered PNG's parameters (never the built-in tiny_sd)."""
    params = read_params(Image.open(path))
    assert params is not None, f"{path} carries no parameters"
    model = params.get("model")
    assert isinstance(model, str) and "tiny_sd" not in model, params
    return model


def size_of(path: str) -> tuple[int, int]:
    return Image.open(path).size


def _pixels(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _no_fallback(status: str) -> None:
    assert "tiny_sd" not in status and "built-in" not in status, status


@pytest.fixture(scope="module")
def generated(hub_app: HubApp) -> list[tuple]:
    """Every streamed output of one /txt2img run (n = 2, seed 7): the first call made to the app."""
    return call(hub_app, "/txt2img", prompt=PROMPT, negative_prompt="", steps=STEPS, guidance_scale=7.5, seed=7,
                scheduler="DPM++ 2M", n=2, stream=True)


@pytest.fixture(scope="module")
def scene(hub_app: HubApp, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, np.ndarray]:
    """A held-out scene drawn at the family's native size."""
    img = scenes.render(scenes.render_dataset(1, seed=5, split="test").specs[0], native(hub_app))
    path = tmp_path_factory.mktemp(f"scene_{hub_app.family}") / "scene.png"
    img.save(path)
    return str(path), np.asarray(img)


# ---- text to image -------------------------------------------------------------------------------------------
def test_txt2img_gallery_is_the_configured_models(hub_app, generated):
    family, folders = hub_app.family, hub_app.folders
    first = FIRST_ANSWER[(family, "/txt2img")]
    # The loading path answers clearly: the first call either already ran, or was told which model loads.
    assert first == "" or re.match(rf"Loading `{re.escape(str(folders['txt2img']))}` \([^)]*\)\. This tab answers "
                                   r"as soon as it is ready", first), first
    frames = [o for o in generated if (o[0] or "").startswith("step ")]
    assert frames and all(o[1] for o in frames)                       # streamed x̂₀ previews
    w, h = size_of(frames[-1][1])
    assert h >= native(hub_app) and w >= 2 * native(hub_app)          # a grid of the two native-size previews
    status, _, gallery = generated[-1][:3]
    assert status.startswith("**Done**"), status
    _no_fallback(status)
    assert [g["caption"] for g in gallery] == ["seed 7", "seed 8"]
    for i, g in enumerate(gallery):
        assert size_of(g["image"]) == (native(hub_app), native(hub_app))
        assert model_of(g["image"]) == str(folders["txt2img"])
        params = read_params(Image.open(g["image"]))
        assert params["prompt"] == PROMPT and params["seed"] == 7 + i and params["steps"] == STEPS


def test_cfg_sweep_every_picture_is_the_configured_models(hub_app):
    gallery, status = call(hub_app, "/cfg_sweep", prompt="a small blue square", negative_prompt="", steps=2,
                           seed=3, scheduler="DDIM")
    assert [g["caption"] for g in gallery] == ["s = 1", "s = 2", "s = 4", "s = 7.5", "s = 12"]
    _no_fallback(status)
    for g in gallery:
        assert size_of(g["image"]) == (native(hub_app), native(hub_app))
        assert model_of(g["image"]) == str(hub_app.folders["txt2img"])


def test_cfg_step_decodes_at_the_native_size(hub_app):
    out = call(hub_app, "/cfg_step", prompt="a red circle", negative_prompt="", steps=3, seed=0, step_index=1,
               guidance_scale=7.5)
    text, x_t, eps_u, eps_c, direction, eps_g, x0_u, x0_c, x0_g = out
    assert text.startswith("Step 1 of 3"), text
    _no_fallback(text)
    side = shown(hub_app)
    for path in (x_t, x0_u, x0_c, x0_g):                              # the decoded z_t and the three x̂₀
        assert size_of(path) == (side, side)
    for path in (eps_u, eps_c, direction, eps_g):                     # the latent's channel maps exist
        assert Path(path).exists()
    assert not np.array_equal(_pixels(x0_u), _pixels(x0_c))           # the prompt changes the prediction


# ---- img2img and PNG read-back ---------------------------------------------------------------------------------
def test_img2img_on_a_generated_picture(hub_app, generated):
    made = generated[-1][2][0]["image"]
    status, used, start, result = call(hub_app, "/img2img", handle_file(made), "a blue square", 0.75, 4, 7.5, 1,
                                       "DDIM")
    assert status.startswith("**Done**") and "3 of 4 steps" in status, status
    _no_fallback(status)
    assert "scaled" not in status                                      # already the model's size
    for path in (used, start, result):
        assert size_of(path) == (shown(hub_app), shown(hub_app))
    assert model_of(result) == str(hub_app.folders["txt2img"])
    params = read_params(Image.open(result))
    assert params["kind"] == "img2img" and params["strength"] == 0.75 and params["prompt"] == "a blue square"


def test_read_png_params_restores_without_a_model_warning(hub_app, generated, tmp_path):
    made = generated[-1][2][1]["image"]
    assert model_of(made) == str(hub_app.folders["txt2img"])
    message, params = call(hub_app, "/read_png_params", handle_file(made))
    assert message.startswith("Restored"), message
    assert "may differ" not in message and "tiny_sd" not in message, message
    assert params == {"prompt": PROMPT, "negative_prompt": "", "steps": STEPS, "guidance_scale": 7.5, "seed": 8,
                      "scheduler": "DPM++ 2M"}
    # The same picture claiming the built-in model: the server says it runs the configured one instead.
    info = PngImagePlugin.PngInfo()
    info.add_text(PARAMS_KEY, json.dumps({**read_params(Image.open(made)), "model": "tiny_sd"}))
    Image.open(made).save(tmp_path / "other.png", pnginfo=info)
    message, params = call(hub_app, "/read_png_params", handle_file(str(tmp_path / "other.png")))
    assert "may differ" in message and f"runs {str(hub_app.folders['txt2img'])!r}" in message, message
    assert params["seed"] == 8


# ---- inpainting ------------------------------------------------------------------------------------------------
def _editor(background: str, layer: str) -> dict:
    return {"background": handle_file(background), "layers": [handle_file(layer)],
            "composite": handle_file(background), "id": None}


@pytest.mark.parametrize("method, folder", [(METHOD_NINE, "inpaint"), (METHOD_BLEND, "txt2img")])
def test_inpaint_both_methods(hub_app, scene, tmp_path, method, folder):
    path, original = scene
    side = native(hub_app)
    box = (side * 5 // 16, side * 5 // 16, side * 11 // 16, side * 11 // 16)
    layer = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    layer.paste(Image.new("RGBA", (box[2] - box[0], box[3] - box[1]), (255, 0, 255, 190)), box[:2])
    layer.save(tmp_path / "layer.png")
    out = call(hub_app, "/inpaint", _editor(path, str(tmp_path / "layer.png")), "a large blue square",
               negative_prompt="", mask_blur=0, padding=0, strength=1.0, steps=3, guidance_scale=7.5, seed=3,
               method=method, dilate=0)
    status, mask, masked, result = out[:4]
    assert status.startswith("**Done**"), status
    _no_fallback(status)
    for p in (mask, masked, result):
        assert size_of(p) == (shown(hub_app), shown(hub_app))
    assert model_of(result) == str(hub_app.folders[folder])
    assert read_params(Image.open(result))["method"] == method
    res = _pixels(result)[::display_scale(side), ::display_scale(side)]
    m = _pixels(mask)[::display_scale(side), ::display_scale(side), 0] > 127
    assert m.sum() == (box[2] - box[0]) * (box[3] - box[1]) and m[box[1]:box[3], box[0]:box[2]].all()
    assert np.array_equal(res[~m], original[~m])                       # every pixel outside the mask kept
    assert not np.array_equal(res[m], original[m])                     # and the inside repainted


# ---- Canny and ControlNet ---------------------------------------------------------------------------------------
def test_canny_at_the_native_size(hub_app, scene):
    path, _ = scene
    edges = call(hub_app, "/canny", handle_file(path), 100, 200)
    assert size_of(edges) == (shown(hub_app), shown(hub_app))
    e = _pixels(edges)[..., 0] > 127
    assert 0 < e.sum() < 0.5 * e.size                                 # the scene's outlines


def test_controlnet_is_the_configured_pair(hub_app, scene):
    path, _ = scene
    folders = hub_app.folders
    status, edges, result, without, overlay = call(
        hub_app, "/controlnet", handle_file(path), "a large blue square", negative_prompt="", low=100, high=200,
        conditioning_scale=1.0, steps=3, guidance_scale=3.0, seed=3, scheduler="DPM++ 2M")
    assert status.startswith("**Done**"), status
    _no_fallback(status)
    for p in (edges, result, without, overlay):
        assert size_of(p) == (shown(hub_app), shown(hub_app))
    assert model_of(result) == f"{folders['txt2img']} + {folders['controlnet']}"
    assert not np.array_equal(_pixels(result), _pixels(without))      # the control changed the picture
