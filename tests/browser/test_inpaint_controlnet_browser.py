"""A learner brushes a mask stroke over a picture on the canvas and inpaints it, then turns the same
picture's Canny edges into a ControlNet run — in Debian's Chromium, against the real app serving tiny
random pipelines (the trained ones once ``checkpoints/tiny_sd*`` exist)."""
from __future__ import annotations


import pytest
from playwright.sync_api import Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout


@pytest.fixture(scope="module")
def app_url(tiny_sd_app_url: str) -> str:
    return tiny_sd_app_url


def _canvas_box(page: Page) -> dict:
    canvas = page.locator("#inpaint-editor canvas").first
    expect(canvas).to_be_visible(timeout=30_000)
    box = canvas.bounding_box()
    assert box and box["width"] > 50
    return box


def test_draw_a_mask_inpaint_then_controlnet(page: Page, app_url: str):
    page.goto(app_url)
    page.get_by_role("tab", name="Inpainting", exact=True).click()
    page.locator("#inpaint-prompt textarea").fill("a large blue square")
    box = _canvas_box(page)
    status = page.locator("#inpaint-status")
    # One brush stroke across the middle of the picture. The canvas may still be setting up when it first
    # shows, and the editor commits a stroke asynchronously: a run that sees no stroke says "Nothing to
    # repaint", and the learner draws and presses again.
    for _ in range(4):
        page.wait_for_timeout(1500)
        x0, y0 = box["x"] + box["width"] * 0.35, box["y"] + box["height"] * 0.5
        page.mouse.move(x0, y0)
        page.mouse.down()
        for k in range(1, 11):
            page.mouse.move(x0 + box["width"] * 0.03 * k, y0 + box["height"] * 0.01 * k, steps=2)
        page.mouse.up()
        page.wait_for_timeout(1500)
        before = status.inner_text()
        page.locator("#inpaint-run").click()
        try:
            page.wait_for_function(
                "([sel, before]) => { const t = document.querySelector(sel).innerText;"
                " return t.includes('Done') || (t.includes('Nothing to repaint') && t !== before); }",
                arg=["#inpaint-status", before], timeout=30_000)
        except PlaywrightTimeout:
            pass                                                     # the same "nothing" answer again
        if "Done" in status.inner_text():
            break
    expect(status).to_contain_text("Done", timeout=90_000)
    expect(status).to_contain_text("pixels changed")
    for elem in ("#inpaint-mask img", "#inpaint-masked img", "#inpaint-result img"):
        expect(page.locator(elem)).to_be_visible(timeout=30_000)

    page.get_by_role("tab", name="ControlNet", exact=True).click()
    page.get_by_role("button", name="Use the last inpainting result").click()
    expect(page.locator("#controlnet-edges img")).to_be_visible(timeout=30_000)        # the live Canny preview
    page.locator("#controlnet-prompt textarea").fill("a large green circle")
    page.locator("#controlnet-run").click()
    expect(page.locator("#controlnet-status")).to_contain_text("Done", timeout=90_000)
    for elem in ("#controlnet-result img", "#controlnet-without img", "#controlnet-overlay img"):
        expect(page.locator(elem)).to_be_visible(timeout=30_000)
    page.screenshot(path="/tmp/inpaint_controlnet_browser.png", full_page=True)


def test_inpaint_without_a_stroke_says_nothing_changes(page: Page, app_url: str):
    page.goto(app_url)
    page.get_by_role("tab", name="Inpainting", exact=True).click()
    _canvas_box(page)
    page.locator("#inpaint-run").click()
    expect(page.locator("#inpaint-status")).to_contain_text("Nothing to repaint", timeout=60_000)
