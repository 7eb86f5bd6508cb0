"""A real browser for admin tests: Debian's chromium, driven by Playwright.

Playwright's own browser download is never used (``executable_path``), so the
only requirement is ``apt-get install chromium`` (tests/run.sh installs it). The
tests skip, saying so, only when chromium is absent.

Screenshots go to tmp/artifacts/ (git-ignored); the key ones are copied by hand
to docs/screenshots/.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("DJANGO_JOBS_CHROMIUM") or shutil.which("chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "tmp" / "artifacts"
WIDTH, HEIGHT = 1400, 900
PASSWORD = "a-real-password-1"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM:
        pytest.skip("chromium is not installed: apt-get install chromium (tests/run.sh does)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]'")
    # Playwright's sync API keeps an event loop on this thread; the ORM calls the
    # tests make between clicks are synchronous all the same.
    unsafe = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_api.sync_playwright() as playwright:
            # --no-sandbox: the suite runs as root in CI, where chromium's sandbox refuses.
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            yield chromium
            chromium.close()
    finally:
        if unsafe is None:
            del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = unsafe


@pytest.fixture
def page(browser, live_server):
    """A fresh browser context (no cookies) at 1400 x 900 on the live server."""
    context = browser.new_context(
        base_url=live_server.url, viewport={"width": WIDTH, "height": HEIGHT}
    )
    context.set_default_timeout(15_000)
    tab = context.new_page()
    yield tab
    context.close()


def log_in(page, username: str) -> None:
    """Through the login form, as a person does."""
    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#user-tools")


def screenshot(page, name: str, *, full_page: bool = True) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{re.sub(r'[^a-z0-9_-]+', '-', name.lower())}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def scrolls_sideways(page) -> bool:
    """The page, or a box on it (the admin's result table scrolls in its own box)."""
    return page.evaluate(
        """() => [document.documentElement, ...document.querySelectorAll('.results')]
            .some(box => box.scrollWidth > box.clientWidth)"""
    )
