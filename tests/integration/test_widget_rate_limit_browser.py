"""The widget over the hub's rate limits, in a real headless Chromium against the in-process
API (a window of two seconds instead of a minute, so the test waits seconds): a message over
the limit says "Too many messages…", stays in the list and goes out by itself once the
Retry-After has passed; nothing is lost and nothing is sent twice."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, expect
from sqlalchemy import select

from hub.bridges.webchat.limits import WidgetLimits
from hub.db.models import Message
from tests.browser import chromium_available, chromium_browser, new_page
from tests.integration.webchat_app import Clock, Sessions, WebchatApp, webchat_app

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not chromium_available(), reason="chromium is not installed"),
]

BUBBLE = "[data-testid=hubchat-message]"


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium_browser() as b:
        yield b


@pytest.fixture
async def hub(
    aiohttp_client: Any, db: Any, sessions: Sessions, tmp_path: Path
) -> AsyncIterator[WebchatApp]:
    limits = WidgetLimits(messages_per_visitor=2, window=2.0)
    async with webchat_app(
        aiohttp_client,
        db,
        sessions,
        tmp_path,
        limits=limits,
        clock=Clock(real=True),
        page=True,
    ) as app:
        yield app


async def test_a_message_over_the_limit_waits_and_goes_out(
    hub: WebchatApp, browser: Browser
) -> None:
    async with new_page(browser) as page:
        await page.goto(str(hub.client.make_url("/")))
        await page.wait_for_function("window.HubChat && window.HubChat.isReady()")
        await page.get_by_test_id("hubchat-launcher").click()
        box = page.get_by_test_id("hubchat-input")
        for text in ("eins", "zwei", "drei"):
            await box.fill(text)
            await box.press("Enter")

        limited = page.get_by_test_id("hubchat-rate-limited")
        await expect(limited).to_have_text(
            "Too many messages — sending again in a moment…", timeout=5000
        )
        # Kept in the list while it waits, with no "Retry now" to hammer the hub with.
        third = page.locator(BUBBLE).filter(has_text="drei")
        await expect(third).to_have_count(1)
        await expect(page.get_by_test_id("hubchat-retrying")).to_have_count(0)

        # Once the Retry-After has passed it goes out by itself.
        await expect(limited).to_have_count(0, timeout=10_000)
        # Stored (no Matrix here to deliver it further).
        await expect(third).to_have_attribute("data-status", "received", timeout=5000)
        async with hub.sessions() as s:
            texts = list(await s.scalars(select(Message.text).order_by(Message.id)))
        assert texts == ["eins", "zwei", "drei"]
        assert hub.channel.limits.refused["messages_per_visitor"] >= 1
