"""The web demo end to end in a real browser: Debian's Chromium driven by Playwright.

Loads the page, generates a gallery pair, paints a shared region and runs a subspace gallery,
triggers a validation error, and checks that the page never requested anything but 127.0.0.1.
Saves a screenshot of the finished page to test-artifacts/app.png.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest

pytest.importorskip("playwright")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():  # `make test` installs it (.ci/browser-deps)
    if os.environ.get("CI"):  # in CI a missing browser is a failure, never a silent skip
        pytest.fail("Debian's chromium is not installed: .ci/browser-deps did not run")
    pytest.skip(
        "Debian's chromium is not installed: run bash .ci/browser-deps", allow_module_level=True
    )

import app  # noqa: E402
from couplednoise.eval.demo.engine import Models  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    demo = app.build_demo(Models(device="cpu"), runs=tmp_path_factory.mktemp("runs"))
    demo.queue(max_size=4)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **app.launch_options())
    yield url
    demo.close()


@pytest.fixture(scope="module")
def browser_page(server):
    """(page, requested URLs): one page for the module; every request is recorded, and any to a
    non-local host is aborted (so it also cannot leak)."""
    from playwright.sync_api import sync_playwright

    requested: list[str] = []

    def guard(route):
        requested.append(route.request.url)
        host = urlparse(route.request.url).hostname
        if host in LOCAL_HOSTS or route.request.url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.route("**/*", guard)
        context.on("websocket", lambda ws: requested.append(ws.url))
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(server)
        page.wait_for_selector("#generate")
        yield page, requested
        browser.close()


def choose(page, element_id: str, option: str) -> None:
    """Pick ``option`` in a Gradio dropdown."""
    field = page.locator(f"#{element_id} input")
    field.click()
    field.fill(option)
    page.get_by_role("option", name=option, exact=True).click()


def generate_and_wait(page, count: int) -> None:
    """Click Generate and wait for this run's results: each run has a new id on the download
    button; then both galleries must show ``count`` images."""
    button = page.locator("#download")
    before = button.inner_text() if button.is_visible() else ""
    page.locator("#generate").click()
    page.wait_for_function(
        "before => { const b = document.querySelector('#download');"
        " return b && b.offsetParent !== null && b.innerText !== before; }",
        arg=before,
    )
    for gallery in ("#independent", "#coupled"):
        assert page.locator(f"{gallery} .thumbnail-item img").count() == count


def expect_metrics(page, names: list[str]) -> None:
    """Wait until the metrics table lists every one of ``names``."""
    from playwright.sync_api import expect

    for name in names:
        expect(page.locator("#metrics")).to_contain_text(name)


def assert_local(requested: list[str]) -> None:
    outside = [u for u in requested if urlparse(u).hostname not in LOCAL_HOSTS | {None}]
    assert requested and not outside, f"requests to non-local hosts: {outside}"


def test_generate_fills_both_galleries_and_the_table(browser_page):
    page, requested = browser_page
    page.locator("#prompt textarea").fill("a red circle")
    choose(page, "coupling", "orthogonal")
    for slider, value in (("num_images", "6"), ("steps", "10")):
        page.locator(f"#{slider} input[type=number]").fill(value)
        page.locator(f"#{slider} input[type=number]").press("Enter")
    generate_and_wait(page, 6)
    expect_metrics(page, ["l2", "ms_ssim", "vendi_pixel", "clip_score", "lab_scenes"])
    assert page.locator("#download").is_visible()
    assert_local(requested)


def test_paint_a_mask_and_run_a_subspace_gallery(browser_page):
    page, requested = browser_page
    choose(page, "coupling", "subspace")
    canvas = page.locator("#mask canvas").first
    canvas.wait_for()
    page.locator("#mask button[aria-label='Brush']").first.click()
    box = canvas.bounding_box()
    x, y, w, h = box["x"], box["y"], box["width"], box["height"]
    page.mouse.move(x + 0.3 * w, y + 0.3 * h)
    page.mouse.down()
    for fx, fy in ((0.7, 0.3), (0.3, 0.7), (0.7, 0.7)):  # a Z over the middle (each move
        page.mouse.move(x + fx * w, y + fy * h, steps=2)  # repaints the canvas: keep them few)
    page.mouse.up()
    generate_and_wait(page, 6)
    expect_metrics(page, ["lab_alignment"])
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app.png"), full_page=True)
    assert_local(requested)


def test_a_validation_error_is_shown_as_a_message(browser_page):
    page, requested = browser_page
    page.locator("#mask button[aria-label='Clear canvas']").first.click()
    page.locator("#generate").click()
    toast = page.locator("[data-testid='toast-text']").filter(has_text="paint the shared region")
    toast.first.wait_for()
    choose(page, "coupling", "repulsive")
    page.locator("#prompt textarea").fill("a dragon")
    page.locator("#generate").click()
    toast = page.locator("[data-testid='toast-text']").filter(has_text="unknown word(s) 'dragon'")
    toast.first.wait_for()
    assert "Traceback" not in page.content()
    assert_local(requested)
