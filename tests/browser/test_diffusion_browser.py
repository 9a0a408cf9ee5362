"""A learner runs DDPM and DDIM side by side, watches both panels move, and stops the run."""
from __future__ import annotations

from playwright.sync_api import Page, expect


def test_side_by_side_run_and_stop(page: Page, app_url: str):
    page.goto(app_url)
    expect(page.locator("#vae-decoded img").first).to_be_visible(timeout=30_000)
    page.get_by_role("tab", name="Diffusion", exact=True).click()
    page.get_by_role("tab", name="DDPM vs DDIM", exact=True).click()
    page.locator("#diff-compare-run").click()
    status = page.locator("#diff-compare-status")
    expect(status).to_contain_text("step", timeout=30_000)
    expect(page.locator("#diff-ddpm-xt img")).to_be_visible(timeout=30_000)
    expect(page.locator("#diff-right-x0 img")).to_be_visible(timeout=30_000)
    first = page.locator("#diff-ddpm-x0 img").get_attribute("src")
    page.wait_for_function(
        "(old) => { const i = document.querySelector('#diff-ddpm-x0 img'); return i && i.src !== old; }",
        arg=first, timeout=30_000)
    page.locator("#diff-compare-stop").click()
    expect(page.locator("#diff-compare-stop-note")).to_contain_text("Stop requested", timeout=10_000)
    expect(status).to_contain_text("Stopped", timeout=30_000)
    expect(page.locator("#diff-compare-timing")).to_contain_text("DDPM", timeout=10_000)
    page.screenshot(path="/tmp/diffusion_browser.png")
