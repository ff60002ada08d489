"""The widget in a real headless Chromium: the demo shop page, a customer's message, the
adviser's answer arriving live, the history after a reload."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, Page, expect

from tests.browser import (
    chromium_available,
    chromium_browser,
    new_page,
    screenshot,
    wait_until,
)
from tests.e2e.conftest import Stack
from tests.e2e.helpers import Adviser, is_message

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.browser,
    pytest.mark.skipif(not chromium_available(), reason="chromium is not installed"),
]

BUBBLE = "[data-testid=hubchat-message]"


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium_browser() as b:
        yield b


async def _open_chat(page: Page, url: str) -> None:
    await page.goto(url)
    await wait_until(page, "window.HubChat && window.HubChat.isReady()")
    await page.get_by_test_id("hubchat-launcher").click()
    await expect(page.get_by_test_id("hubchat-panel")).to_be_visible()


async def test_customer_and_adviser_talk_through_the_demo_page(
    stack: Stack, adviser: Adviser, browser: Browser
) -> None:
    async with new_page(browser) as page:
        await _open_chat(page, f"{stack.hub_url}/")
        await page.evaluate("window.HubChat.setName('Browser Kundin')")
        box = page.get_by_test_id("hubchat-input")
        await box.fill("Haben Sie Lasur in Eiche hell? 🌳")
        await box.press("Enter")

        room_id = await adviser.wait_invite("Webchat · Browser Kundin")
        await adviser.join(room_id)
        question = await adviser.wait_event(
            room_id, is_message(body="Haben Sie Lasur in Eiche hell? 🌳")
        )
        mine = page.locator(f'{BUBBLE}[data-direction="in"]')
        await expect(mine).to_have_attribute("data-status", "delivered", timeout=15000)
        await adviser.client.update_receipt_marker(room_id, question["event_id"])
        await expect(mine).to_have_attribute("data-status", "read", timeout=15000)
        answer_id = await adviser.send_text(
            room_id, "Ja, 0,75 l für 24,90 € — soll ich sie reservieren?"
        )

        answer = page.locator(f'{BUBBLE}[data-direction="out"]')
        await expect(answer).to_contain_text("0,75 l für 24,90 €", timeout=15000)
        # The open panel showed it: the adviser's client gets the customer's read receipt.
        ghost = question["sender"]
        await adviser.wait_for(lambda: (room_id, answer_id, ghost) in adviser.receipts)
        await screenshot(page, "widget-conversation")
        # The shop is German: the widget's words came with the session, the page's with it.
        await expect(page.get_by_test_id("hubchat-input")).to_have_attribute(
            "placeholder", "Nachricht schreiben …"
        )
        await expect(page.locator(".day").first).to_have_text("Heute")
        await expect(page.get_by_test_id("hubchat-welcome")).to_have_text(
            "Guten Tag! Wie können wir Ihnen heute helfen?"
        )
        assert await page.get_attribute("html", "lang") == "de"

        # Reload: same visitor (token in localStorage), the whole history is back.
        await page.reload()
        await _open_chat(page, f"{stack.hub_url}/")
        await expect(page.locator(BUBBLE)).to_have_count(2, timeout=15000)
        await expect(page.locator(f'{BUBBLE}[data-direction="in"]')).to_contain_text("Eiche hell")
        await expect(page.locator(f'{BUBBLE}[data-direction="out"]')).to_contain_text("24,90 €")
        # Exactly one customer message reached the room, whatever the widget retried.
        assert (
            len(adviser.room_events(room_id, is_message(body="Haben Sie Lasur in Eiche hell? 🌳")))
            == 1
        )


async def test_mobile_layout_sends_too(stack: Stack, adviser: Adviser, browser: Browser) -> None:
    async with new_page(browser, mobile=True) as page:
        await _open_chat(page, f"{stack.hub_url}/")
        await page.evaluate("window.HubChat.setName('Mobile Kunde')")
        await page.get_by_test_id("hubchat-input").fill("Hallo vom Handy")
        await page.get_by_test_id("hubchat-send").click()
        room_id = await adviser.wait_invite("Webchat · Mobile Kunde")
        await adviser.join(room_id)
        await adviser.wait_event(room_id, is_message(body="Hallo vom Handy"))
        await screenshot(page, "widget-mobile")
