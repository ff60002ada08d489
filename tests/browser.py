"""Helpers for headless-Chromium browser tests (Playwright against Debian's chromium).

Usage::

    from tests.browser import chromium_page, screenshot

    async with chromium_page() as page:
        await page.goto(url)
        await screenshot(page, "demo-shop")

Browsers are never downloaded: the system binary is launched through ``executable_path``
(``/usr/bin/chromium``, override with the ``HUB_CHROMIUM`` environment variable).
Screenshots land in ``tests/.artifacts/`` which is excluded from git (the directory carries
its own ``.gitignore``).

For many tests, share one browser and give each test a fresh context::

    @pytest.fixture(scope="session")
    async def browser():
        async with chromium_browser() as b:
            yield b

    async def test_widget(browser):
        async with new_page(browser, mobile=True) as page: ...
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

DEFAULT_CHROMIUM = "/usr/bin/chromium"
ARTIFACTS_DIR = Path(__file__).resolve().parent / ".artifacts"

CHROMIUM_ARGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

DESKTOP_VIEWPORT: dict[str, int] = {"width": 1280, "height": 800}
MOBILE_VIEWPORT: dict[str, int] = {"width": 390, "height": 844}


def chromium_path() -> str:
    """Path of the Chromium binary to launch (``HUB_CHROMIUM`` overrides the default)."""
    return os.environ.get("HUB_CHROMIUM") or DEFAULT_CHROMIUM


def chromium_available() -> bool:
    """True when the Chromium binary exists and is executable (use for ``skipif``)."""
    path = chromium_path()
    resolved = path if os.path.isabs(path) else shutil.which(path)
    return bool(resolved) and os.access(resolved, os.X_OK)  # type: ignore[arg-type]


requires_chromium = pytest.mark.skipif(
    not chromium_available(), reason=f"Chromium not found at {chromium_path()} (set HUB_CHROMIUM)"
)
"""Mark for browser tests: ``@requires_chromium`` (combine with ``@pytest.mark.browser``)."""


@asynccontextmanager
async def chromium_browser() -> AsyncIterator[Browser]:
    """Launch headless Chromium once; open as many contexts/pages on it as needed."""
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=chromium_path(),
            headless=True,
            args=list(CHROMIUM_ARGS),
        )
        try:
            yield browser
        finally:
            await browser.close()


@asynccontextmanager
async def new_page(
    browser: Browser,
    *,
    mobile: bool = False,
    viewport: dict[str, int] | None = None,
    **context_options: Any,
) -> AsyncIterator[Page]:
    """A page in a fresh, isolated context (own localStorage/cookies) on ``browser``."""
    options: dict[str, Any] = {
        "viewport": viewport or (MOBILE_VIEWPORT if mobile else DESKTOP_VIEWPORT)
    }
    if mobile:
        options.update(is_mobile=True, has_touch=True, device_scale_factor=2)
    options.update(context_options)
    context: BrowserContext = await browser.new_context(**options)
    try:
        page = await context.new_page()
        yield page
    finally:
        await context.close()


@asynccontextmanager
async def chromium_page(
    *,
    mobile: bool = False,
    viewport: dict[str, int] | None = None,
    console: list[str] | None = None,
    **context_options: Any,
) -> AsyncIterator[Page]:
    """Launch Chromium and yield one Page (1280x800, or 390x844 with ``mobile=True``).

    If ``console`` is given, browser console messages and page errors are appended to it
    (handy for asserting the widget logged no errors).
    """
    async with chromium_browser() as browser:
        async with new_page(browser, mobile=mobile, viewport=viewport, **context_options) as page:
            if console is not None:
                page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
                page.on("pageerror", lambda err: console.append(f"pageerror: {err}"))
            yield page


def chromium_page_factory(
    **defaults: Any,
) -> Callable[..., AbstractAsyncContextManager[Page]]:
    """Build a ``chromium_page`` with preset options, e.g. for a pytest fixture::

    @pytest.fixture
    def open_page():
        return chromium_page_factory(mobile=True)

    async def test_x(open_page):
        async with open_page() as page: ...
    """

    def factory(**overrides: Any) -> AbstractAsyncContextManager[Page]:
        return chromium_page(**{**defaults, **overrides})

    return factory


def _artifacts_dir() -> Path:
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    ignore = ARTIFACTS_DIR / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n", encoding="utf-8")
    return ARTIFACTS_DIR


async def screenshot(page: Page, name: str, *, full_page: bool = False) -> Path:
    """Save a PNG of ``page`` as ``tests/.artifacts/<name>.png`` and return its path."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "screenshot"
    if not safe.endswith(".png"):
        safe += ".png"
    path = _artifacts_dir() / safe
    await page.screenshot(path=str(path), full_page=full_page)
    return path


async def wait_until(page: Page, expression: str, timeout: float = 15) -> None:
    """Wait until ``expression`` is truthy in the page. Unlike Playwright's
    ``wait_for_function``, whose polling evaluates the text inside the page (an eval that the
    hub's pages forbid: their policy has no 'unsafe-eval'), this asks from outside."""
    deadline = time.monotonic() + timeout
    while not await page.evaluate(expression):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{expression} did not become true in {timeout} s")
        await asyncio.sleep(0.05)
