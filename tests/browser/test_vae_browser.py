"""A learner opens the VAE tab, drags a latent slider and sees the digit change; then samples,
and draws a digit. Saves the README screenshot (docs/screenshot.png)."""
from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page, expect

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _src(page: Page, elem_id: str) -> str:
    return page.locator(f"#{elem_id} img").first.get_attribute("src") or ""


def test_drag_a_latent_slider_changes_the_digit(page: Page, app_url: str):
    page.goto(app_url)
    expect(page.locator("#vae-decoded img").first).to_be_visible(timeout=30_000)
    before = _src(page, "vae-decoded")
    z_before = page.locator("#vae-z textarea").input_value()
    track = page.locator("#vae-slider-0 input[type=range]")
    box = track.bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.5, y)
    page.mouse.down()
    for frac in (0.6, 0.7, 0.8, 0.9, 0.95):
        page.mouse.move(box["x"] + box["width"] * frac, y, steps=4)
    page.mouse.up()
    expect(page.locator("#vae-z textarea")).not_to_have_value(z_before, timeout=15_000)
    page.wait_for_function(
        "([id, old]) => { const i = document.querySelector(`#${id} img`); return i && i.src !== old && i.complete; }",
        arg=["vae-decoded", before], timeout=15_000)
    assert _src(page, "vae-decoded") != before
    DOCS.mkdir(exist_ok=True)
    page.screenshot(path=str(DOCS / "screenshot.png"), full_page=True)


def test_sample_ae_vs_vae_and_draw(page: Page, app_url: str):
    page.goto(app_url)
    page.get_by_role("tab", name="Sample: AE vs VAE").click()
    expect(page.locator("#vae-vae-grid img").first).to_be_visible(timeout=20_000)
    before = _src(page, "vae-vae-grid")
    page.locator("#vae-prior-seed input").fill("5")
    page.get_by_role("button", name="Sample both with the same z").click()
    page.wait_for_function(
        "(old) => { const i = document.querySelector('#vae-vae-grid img'); return i && i.src !== old; }",
        arg=before, timeout=20_000)
    expect(page.locator("#vae-ae-grid img").first).to_be_visible()

    page.get_by_role("tab", name="Draw a digit").click()
    page.locator("#vae-sketch").get_by_role("button", name="Brush").click()
    canvas = page.locator("#vae-sketch canvas").first
    expect(canvas).to_be_visible(timeout=10_000)
    box = canvas.bounding_box()
    assert box is not None
    cx, top = box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.2
    page.mouse.move(cx, top)
    page.mouse.down()
    page.mouse.move(cx - 10, box["y"] + box["height"] * 0.8, steps=15)
    page.mouse.up()
    expect(page.locator("#vae-recon img").first).to_be_visible(timeout=20_000)
    expect(page.locator("#vae-elbo")).to_contain_text("ELBO", timeout=20_000)
