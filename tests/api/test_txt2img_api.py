"""The text-to-image and img2img endpoints through gradio_client against the real launched app, serving a
tiny random Stable Diffusion pipeline (``random_pipeline``) beside the shipped checkpoints (symlinked into
a temporary ``PLAYGROUND_CHECKPOINTS``): every endpoint valid and bad, streaming order, stopping,
concurrent identical requests, and the tab without a checkpoint."""
from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from playground.core.images import read_params

ARGS = dict(prompt="a large red circle", negative_prompt="", steps=8, guidance_scale=7.5, seed=0, scheduler="DPM++ 2M")


@pytest.fixture(scope="module")
def app_url(tiny_sd_app_url: str) -> str:
    return tiny_sd_app_url


@pytest.fixture(scope="module")
def client(app_url: str) -> Client:
    return Client(app_url, verbose=False)


def _step(status: str) -> int:
    return int(re.search(r"step (\d+) /", status).group(1))


def _pixels(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _png(img: Image.Image, path: Path) -> str:
    img.save(path)
    return str(path)


# ---- the contract ---------------------------------------------------------------------------------------------
def test_api_lists_the_contract(client):
    info = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    names = lambda e: [p["parameter_name"] for p in info[e]["parameters"]]  # noqa: E731
    assert names("/txt2img") == ["prompt", "negative_prompt", "steps", "guidance_scale", "seed", "scheduler", "n"]
    assert names("/img2img")[:7] == ["image", "prompt", "strength", "steps", "guidance_scale", "seed", "scheduler"]
    assert names("/cfg_sweep") == ["prompt", "negative_prompt", "steps", "seed", "scheduler"]
    assert names("/cfg_step") == ["prompt", "negative_prompt", "steps", "seed", "step_index", "guidance_scale"]
    assert names("/read_png_params") == ["image"]
    for other in ("/vae_decode", "/gan_sample", "/denoise"):            # the other tabs are still served
        assert other in info


# ---- /txt2img --------------------------------------------------------------------------------------------------
def test_txt2img_streams_previews_in_order_then_the_gallery(client):
    outs = list(client.submit(**ARGS, n=3, api_name="/txt2img"))
    frames = [o for o in outs if o[0].startswith("step ")]
    assert len(frames) >= 2 and all(o[1] for o in frames)                # each frame carries its x̂_0 preview
    steps = [_step(o[0]) for o in frames]
    assert steps == sorted(steps) and steps[-1] == 8
    assert Image.open(frames[0][1]).size[0] > 3 * 64                      # three 64-px previews, upscaled
    status, _, gallery = outs[-1]
    assert status.startswith("**Done**") and len(gallery) == 3
    assert [g["caption"] for g in gallery] == ["seed 0", "seed 1", "seed 2"]
    params = read_params(Image.open(gallery[2]["image"]))
    assert params["prompt"] == "a large red circle" and params["seed"] == 2 and params["scheduler"] == "DPM++ 2M"
    assert Image.open(gallery[0]["image"]).size == (64, 64)


def test_txt2img_same_seed_same_pixels_distinct_files(client):
    a = client.predict(**ARGS, n=1, api_name="/txt2img")[2][0]["image"]
    b = client.predict(**ARGS, n=1, api_name="/txt2img")[2][0]["image"]
    assert np.array_equal(_pixels(a), _pixels(b))
    assert Path(a).read_bytes() != Path(b).read_bytes()                  # request ids (design §6)


def test_txt2img_notices_for_empty_and_unknown_words(client):
    status = client.predict(**(ARGS | {"prompt": "", "steps": 2}), n=1, api_name="/txt2img")[0]
    assert "unconditionally" in status
    status = client.predict(**(ARGS | {"prompt": "a red xylophone", "steps": 2}), n=1, api_name="/txt2img")[0]
    assert "xylophone" in status and "never saw" in status


@pytest.mark.parametrize("bad, message", [
    ({"steps": 0}, "less than minimum|steps"),
    ({"steps": 500}, "greater than maximum|steps"),
    ({"guidance_scale": 100}, "greater than maximum|guidance"),
    ({"guidance_scale": 0.5}, "less than minimum|guidance"),
    ({"n": 20}, "greater than maximum|number of images"),
    ({"scheduler": "PNDM"}, "not in the list of choices|scheduler"),
    ({"seed": -1}, "less than minimum|seed"),
    ({"prompt": "x" * 5000}, "characters long"),
])
def test_txt2img_bad_input(client, bad, message):
    with pytest.raises(AppError, match=message):
        client.predict(**(ARGS | {"n": 1} | bad), api_name="/txt2img")


def test_stop_ends_a_run(app_url):
    c = Client(app_url, verbose=False)
    job = c.submit(**(ARGS | {"steps": 100, "scheduler": "Euler"}), n=8, api_name="/txt2img")
    deadline = time.time() + 60
    while time.time() < deadline and not any((o[0] or "").startswith("step ") for o in job.outputs()):
        time.sleep(0.05)
    assert "Stop requested" in c.predict(api_name="/txt2img_stop")
    final = None
    for out in job:
        final = out
    assert final[0].startswith("**Stopped**") and len(final[2]) == 8
    assert c.predict(**ARGS, n=1, api_name="/txt2img")[0].startswith("**Done**")


def test_concurrent_identical_requests_all_arrive_whole(app_url):
    def call(_):
        c = Client(app_url, verbose=False)
        return _pixels(c.predict(**(ARGS | {"steps": 4}), n=1, api_name="/txt2img")[2][0]["image"])

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(call, range(6)))
    assert all(np.array_equal(results[0], r) for r in results)


# ---- CFG ----------------------------------------------------------------------------------------------------------
def test_cfg_sweep(client):
    gallery, status = client.predict(prompt="a small blue square", negative_prompt="", steps=4, seed=3,
                                     scheduler="DDIM", api_name="/cfg_sweep")
    assert [g["caption"] for g in gallery] == ["s = 1", "s = 2", "s = 4", "s = 7.5", "s = 12"]
    assert "5 runs" in status
    one = client.predict(**(ARGS | {"prompt": "a small blue square", "steps": 4, "seed": 3, "scheduler": "DDIM"}),
                         n=1, api_name="/txt2img")[2][0]["image"]
    assert np.array_equal(_pixels(gallery[3]["image"]), _pixels(one))   # s = 7.5 is txt2img's picture
    with pytest.raises(AppError, match="less than minimum|steps"):
        client.predict(prompt="x", negative_prompt="", steps=0, seed=0, scheduler="DDIM", api_name="/cfg_sweep")


def test_cfg_step(client):
    out = client.predict(prompt="a red circle", negative_prompt="", steps=10, seed=0, step_index=4,
                         guidance_scale=7.5, api_name="/cfg_step")
    assert len(out) == 9 and out[0].startswith("Step 4 of 10") and "ε_y − ε_∅" in out[0]
    assert all(Path(p).exists() for p in out[1:])
    with pytest.raises(AppError, match="step must be between 0 and 9"):
        client.predict(prompt="a red circle", negative_prompt="", steps=10, seed=0, step_index=10,
                       guidance_scale=7.5, api_name="/cfg_step")


# ---- img2img -----------------------------------------------------------------------------------------------------
def test_img2img_with_odd_uploads(client, tmp_path):
    rgba = Image.new("RGBA", (100, 80), (255, 0, 0, 0))
    status, used, start, result = client.predict(handle_file(_png(rgba, tmp_path / "a.png")), "a blue square", 0.6,
                                                 10, 7.5, 0, "DDIM", api_name="/img2img")
    assert status.startswith("**Done**") and "6 of 10 steps" in status
    assert "transparency" in status and "cropped" in status and "scaled down" in status
    assert read_params(Image.open(result))["strength"] == 0.6
    assert Image.open(start).size == Image.open(result).size
    deep = Image.fromarray(np.full((64, 64), 40000, np.uint16))
    status = client.predict(handle_file(_png(deep, tmp_path / "d.png")), "a red circle", 0.5, 4, 7.5, 0, "DDIM",
                            api_name="/img2img")[0]
    assert "I;16" in status


@pytest.mark.parametrize("strength, steps, message", [
    (0.01, 10, "less than minimum|strength"),
    (0.05, 10, "0 steps would run"),
    (2.0, 10, "greater than maximum|strength"),
])
def test_img2img_bad_strength(client, tmp_path, strength, steps, message):
    path = _png(Image.new("RGB", (64, 64), "white"), tmp_path / "w.png")
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(path), "a red circle", strength, steps, 7.5, 0, "DDIM", api_name="/img2img")


def test_img2img_bad_uploads(client, tmp_path):
    with pytest.raises(AppError, match="provide an image"):
        client.predict(None, "a red circle", 0.5, 10, 7.5, 0, "DDIM", api_name="/img2img")
    huge = Image.new("L", (5000, 8))
    with pytest.raises(AppError, match="limit is 4096"):
        client.predict(handle_file(_png(huge, tmp_path / "h.png")), "a red circle", 0.5, 10, 7.5, 0, "DDIM",
                       api_name="/img2img")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    with pytest.raises(AppError, match="not an image we can read"):
        client.predict(handle_file(str(corrupt)), "a red circle", 0.5, 10, 7.5, 0, "DDIM", api_name="/img2img")
    assert client.predict(**ARGS, n=1, api_name="/txt2img")[0].startswith("**Done**")   # still serving


# ---- /read_png_params ------------------------------------------------------------------------------------------------
def test_read_png_params(client, tmp_path):
    made = client.predict(**(ARGS | {"prompt": "a green triangle", "seed": 9, "scheduler": "UniPC"}), n=2,
                          api_name="/txt2img")[2][1]["image"]
    message, params = client.predict(handle_file(made), api_name="/read_png_params")
    assert message.startswith("Restored")
    assert params == {"prompt": "a green triangle", "negative_prompt": "", "steps": 8, "guidance_scale": 7.5,
                      "seed": 10, "scheduler": "UniPC"}
    with pytest.raises(AppError, match="no generation parameters"):
        client.predict(handle_file(_png(Image.new("RGB", (64, 64)), tmp_path / "p.png")), api_name="/read_png_params")
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("playground", '{"prompt": "a red circle", "steps": "DROP TABLE", "seed": 1e30}')
    forged = tmp_path / "forged.png"
    Image.new("RGB", (64, 64)).save(forged, pnginfo=info)
    message, params = client.predict(handle_file(str(forged)), api_name="/read_png_params")
    assert params == {"prompt": "a red circle"} and "Ignored" in message


# ---- without a checkpoint ------------------------------------------------------------------------------------------
def test_the_tabs_without_a_checkpoint_say_not_trained(tmp_path):
    import gradio as gr

    from playground.core.registry import ModelRegistry
    from playground.core.settings import Settings
    from playground.latent.service import Txt2ImgService
    from playground.ui import txt2img_tab

    service = Txt2ImgService(Settings(checkpoints_dir=tmp_path), registry=ModelRegistry())
    with gr.Blocks() as demo:
        built = txt2img_tab.build(service)
        txt2img_tab.build_img2img(service, built)
    assert built is None
    texts = [c.get("props", {}).get("value") or "" for c in demo.get_config_file()["components"]]
    assert sum("not trained yet" in str(t) for t in texts) == 2
    assert not any(d.get("api_name") in ("txt2img", "img2img") for d in demo.get_config_file()["dependencies"])
