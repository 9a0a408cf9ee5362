"""A learner opens the GAN tab, starts live training, sees the picture move, and pauses it."""
from __future__ import annotations

from playwright.sync_api import Page, expect


def test_play_and_pause_live_training(page: Page, app_url: str):
    page.goto(app_url)
    expect(page.locator("#vae-decoded img").first).to_be_visible(timeout=30_000)
    page.get_by_role("tab", name="GAN", exact=True).click()
    page.get_by_role("tab", name="Train live (2-D)").click()
    page.locator("#gan-live-play").click()
    stats = page.locator("#gan-live-stats")
    expect(stats).to_contain_text("steps/s", timeout=20_000)
    first = page.locator("#gan-live-picture img").first.get_attribute("src")
    page.wait_for_function(
        "(old) => { const i = document.querySelector('#gan-live-picture img'); return i && i.src !== old; }",
        arg=first, timeout=20_000)
    page.locator("#gan-live-pause").click()
    page.wait_for_timeout(1500)
    paused = stats.inner_text()
    page.wait_for_timeout(1500)
    assert stats.inner_text() == paused, "the picture stops changing once paused"
    page.screenshot(path="/tmp/gan_live_browser.png")
