"""A learner types a caption, watches x̂₀ sharpen, gets the pictures, opens one step of CFG, restores
parameters from a PNG, and runs img2img on the last picture — in Debian's Chromium, against the real app
serving a tiny random Stable Diffusion pipeline (the real one once ``checkpoints/tiny_sd`` is trained)."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from playground.core.images import png_info, with_params


@pytest.fixture(scope="module")
def app_url(tiny_sd_app_url: str) -> str:
    return tiny_sd_app_url


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
