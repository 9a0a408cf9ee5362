"""A learner samples digits from one GAN, switches to the conditional GAN, and gets other digits."""
from __future__ import annotations

from playwright.sync_api import Page, expect


def _gallery_srcs(page: Page) -> list[str]:
    return [img.get_attribute("src") for img in page.locator("#gan-gallery img").all()]


def test_sample_and_switch_model(page: Page, app_url: str):
    page.goto(app_url)
    expect(page.locator("#vae-decoded img").first).to_be_visible(timeout=30_000)
    page.get_by_role("tab", name="GAN", exact=True).click()
    page.get_by_role("tab", name="Sample", exact=True).click()
    page.get_by_role("button", name="Sample", exact=True).click()
    expect(page.locator("#gan-gallery img")).to_have_count(16, timeout=20_000)
    first = _gallery_srcs(page)
    dropdown = page.locator("#gan-model input")
    dropdown.click()
    page.get_by_role("option", name="Conditional GAN").click()
    expect(dropdown).to_have_value("Conditional GAN")
    page.get_by_role("button", name="Sample", exact=True).click()
    page.wait_for_function(
        "(old) => { const s = [...document.querySelectorAll('#gan-gallery img')].map(i => i.src);"
        " return s.length === 16 && s.join() !== old.join(); }", arg=first, timeout=20_000)
    page.screenshot(path="/tmp/gan_browser.png")
