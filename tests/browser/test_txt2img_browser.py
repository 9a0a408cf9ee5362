"""A learner types a caption, watches x̂₀ sharpen, gets the pictures, opens one step of CFG, restores
parameters from a PNG, and runs img2img on the last picture — in Debian's Chromium, against the real app
serving a tiny random Stable Diffusion pipeline (the real one once ``checkpoints/tiny_sd`` is trained)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from playground.core.images import png_info, with_params

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory):
    """app.py with the shipped checkpoints (symlinked) plus a random tiny_sd if the real one is absent."""
    from playground.latent.components import random_pipeline

    root = tmp_path_factory.mktemp("ckpt")
    for item in (ROOT / "checkpoints").iterdir():
        os.symlink(item, root / item.name)
    if not (root / "tiny_sd" / "model_index.json").exists():
        if (root / "tiny_sd").is_symlink():
            (root / "tiny_sd").unlink()
        random_pipeline(root / "tiny_sd", preset="test", seed=0)
    port = _free_port()
    log = tmp_path_factory.mktemp("app") / "app.log"
    env = dict(os.environ, PLAYGROUND_PORT=str(port), PLAYGROUND_HOST="127.0.0.1", GRADIO_ANALYTICS_ENABLED="False",
               PLAYGROUND_CHECKPOINTS=str(root))
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env, stdout=fh,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    import httpx

    deadline = time.time() + 180
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"app exited early:\n{log.read_text()}")
        try:
            if httpx.get(url + "gradio_api/info", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.time() > deadline:
            proc.kill()
            raise RuntimeError(f"app did not start in time:\n{log.read_text()}")
        time.sleep(0.5)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_type_a_prompt_watch_the_preview_and_get_the_pictures(page: Page, app_url: str, tmp_path: Path):
    page.goto(app_url)
    page.get_by_role("tab", name="Text to image", exact=True).click()
    expect(page.locator("#txt2img-diagram")).to_contain_text("4 × 64 × 64")          # SD 1.5's latents
    prompt = page.locator("#txt2img-prompt textarea")
    prompt.fill("a small blue square in the top left")
    page.locator("#txt2img-run").click()
    status = page.locator("#txt2img-status")
    expect(status).to_contain_text("step", timeout=30_000)
    expect(page.locator("#txt2img-preview img")).to_be_visible(timeout=30_000)
    expect(status).to_contain_text("Done", timeout=60_000)
    expect(page.locator("#txt2img-gallery img")).to_have_count(4, timeout=30_000)

    # one step of CFG, opened up
    page.locator("#txt2img-step-run").click()
    expect(page.locator("#txt2img-step-text")).to_contain_text("ε_y − ε_∅", timeout=30_000)
    expect(page.locator("#txt2img-eps-guided img")).to_be_visible(timeout=30_000)

    # restore the controls from a PNG made here
    made = with_params(Image.new("RGB", (64, 64), "white"),
                       {"kind": "txt2img", "prompt": "a green triangle above a purple circle", "steps": 12,
                        "guidance_scale": 3.5, "seed": 77, "scheduler": "Euler a", "negative_prompt": ""})
    path = tmp_path / "made.png"
    made.save(path, pnginfo=png_info(made))
    page.get_by_text("Read the parameters back from a PNG made here").click()
    page.locator("#txt2img-png input[type=file]").set_input_files(str(path))
    expect(page.locator("#txt2img-png-message")).to_contain_text("Restored", timeout=30_000)
    expect(prompt).to_have_value("a green triangle above a purple circle", timeout=10_000)

    # img2img on the last picture
    page.get_by_role("tab", name="img2img", exact=True).click()
    page.locator("#img2img-use-last").click()
    expect(page.locator("#img2img-input img")).to_be_visible(timeout=30_000)
    page.locator("#img2img-run").click()
    expect(page.locator("#img2img-status")).to_contain_text("noised to t_s", timeout=60_000)
    expect(page.locator("#img2img-start img")).to_be_visible(timeout=30_000)
    expect(page.locator("#img2img-result img")).to_be_visible(timeout=30_000)
    page.screenshot(path="/tmp/txt2img_browser.png")


def test_a_bad_input_shows_an_error_and_the_tab_keeps_working(page: Page, app_url: str):
    page.goto(app_url)
    page.get_by_role("tab", name="img2img", exact=True).click()
    page.locator("#img2img-run").click()                                       # no picture yet
    expect(page.get_by_text("Please provide an image first.")).to_be_visible(timeout=30_000)
    page.get_by_role("tab", name="Text to image", exact=True).click()
    page.locator("#txt2img-run").click()
    expect(page.locator("#txt2img-status")).to_contain_text("Done", timeout=60_000)
