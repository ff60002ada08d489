"""Reply buttons in the widget, in a real headless Chromium: the bot asks the visitor a question
with two buttons (queued in the hub's database the way hub.db.answers.bot_message does, and
sent by the hub's own worker), the widget shows them under the message, a tap posts the
answer with the button's id, the answer appears as the visitor's message, reaches the room
as a button answer and the buttons are gone, also after a reload."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from hub.bridges.webchat.texts import WIDGET_TEXTS
from hub.config import load_config
from hub.db import answers, conversations, webchat
from hub.db.database import Tx
from hub.db.engine import open_database
from hub.db.models import Message
from hub.i18n import translations
from tests.browser import chromium_available, chromium_browser, new_page, wait_until
from tests.e2e.conftest import Stack
from tests.e2e.helpers import Adviser, is_message

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.browser,
    pytest.mark.skipif(not chromium_available(), reason="chromium is not installed"),
]

BUBBLE = "[data-testid=hubchat-message]"
QUESTION = "Dürfen wir das Foto Ihrer Wand auf unserer Website zeigen?"
BUTTONS = [
    {"id": "consent.yes", "title": "Ja, gerne"},
    {"id": "consent.no", "title": "Nein, das Foto bitte nur für meine Beratung verwenden"},
]


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium_browser() as b:
        yield b


async def _open_chat(page: Page, url: str) -> None:
    await page.goto(url)
    await wait_until(page, "window.HubChat && window.HubChat.isReady()")
    await page.get_by_test_id("hubchat-launcher").click()
    await expect(page.get_by_test_id("hubchat-panel")).to_be_visible()


async def _start_conversation(page: Page, stack: Stack, adviser: Adviser, name: str) -> str:
    """The visitor writes first (their conversation and room exist); the room's id."""
    await _open_chat(page, f"{stack.hub_url}/")
    await page.evaluate(f"window.HubChat.setName({json.dumps(name)})")
    box = page.get_by_test_id("hubchat-input")
    await box.fill("Ich schicke Ihnen gleich ein Foto meiner Wand.")
    await box.press("Enter")
    room_id = await adviser.wait_invite(f"Webchat · {name}")
    await adviser.join(room_id)
    await adviser.wait_event(
        room_id, is_message(body="Ich schicke Ihnen gleich ein Foto meiner Wand.")
    )
    return room_id


async def _visitor_id(page: Page, stack: Stack) -> str:
    """The widget's visitor, found by the token it keeps (the hub keeps its hash)."""
    token = await page.evaluate("localStorage.getItem('hubchat.token')")
    assert isinstance(token, str) and token
    token_hash = hashlib.sha256(token.encode()).hexdigest()
    db = open_database(load_config(stack.config_path).database_url)
    try:
        found = await db.read(webchat.visitor_by_token_hash, token_hash)
    finally:
        await db.close()
    assert found is not None
    return found[0]


async def _bot_asks(stack: Stack, visitor_id: str, key: str) -> int:
    """The bot's question with reply buttons, queued like hub.db.answers.bot_message queues
    it (a message row and its channel.send job) in the running hub's database: the hub's
    worker finds the job at its next poll and sends it to the widget."""
    db = open_database(load_config(stack.config_path).database_url)

    def ask(tx: Tx) -> int:
        conversation = conversations.conversation_of(tx, "webchat", visitor_id)
        assert conversation is not None
        message = answers.bot_message(
            tx,
            conversation.id,
            "webchat",
            QUESTION,
            key,
            sender_name="Farbenhaus Test",
            data={"buttons": BUTTONS},
        )
        assert message is not None
        return message.id

    try:
        return int(await db.write(ask))
    finally:
        await db.close()


async def _stored(stack: Stack, visitor_id: str) -> list[Message]:
    db = open_database(load_config(stack.config_path).database_url)
    try:
        return list(await db.read(webchat.history, visitor_id, 0))
    finally:
        await db.close()


async def test_reply_buttons_show_and_a_click_answers(
    stack: Stack, adviser: Adviser, browser: Browser, tmp_path: Path
) -> None:
    async with new_page(browser) as page:
        room_id = await _start_conversation(page, stack, adviser, "Knopf Kundin")
        visitor_id = await _visitor_id(page, stack)
        question_id = await _bot_asks(stack, visitor_id, "e2e-buttons:desktop")

        question = page.locator(f'{BUBBLE}[data-direction="out"]')
        await expect(question).to_have_text(QUESTION, timeout=15000)  # no titles in the text
        group = page.get_by_test_id("hubchat-buttons")
        await expect(group).to_be_visible()
        await expect(group).to_have_attribute("role", "group")
        # Named for screen readers in the shop's language (German), from the widget's texts.
        label = translations("de").gettext(WIDGET_TEXTS["reply_options"])
        await expect(group).to_have_attribute("aria-label", label)
        buttons = page.get_by_test_id("hubchat-button")
        await expect(buttons).to_have_count(2)
        for i, b in enumerate(BUTTONS):
            await expect(buttons.nth(i)).to_have_text(b["title"])
            await expect(buttons.nth(i)).to_have_attribute("type", "button")
            await expect(buttons.nth(i)).to_be_enabled()
        # The long title wraps inside the panel instead of overflowing it.
        long_box = await buttons.nth(1).bounding_box()
        short_box = await buttons.nth(0).bounding_box()
        panel_box = await page.get_by_test_id("hubchat-panel").bounding_box()
        assert long_box and short_box and panel_box
        assert long_box["height"] > short_box["height"] + 10  # two lines
        assert long_box["x"] + long_box["width"] <= panel_box["x"] + panel_box["width"]

        # Keyboard: from the message box, Shift+Tab reaches the buttons (attach button first),
        # and the focused one shows the widget's focus ring.
        await page.get_by_test_id("hubchat-input").focus()
        await page.keyboard.press("Shift+Tab")
        await page.keyboard.press("Shift+Tab")
        focused = await _focused(page)
        assert focused == {"testid": "hubchat-button", "button": "consent.no", "ring": True}
        shot = tmp_path / "widget-buttons.png"
        await page.screenshot(path=str(shot))
        print(f"screenshot: {shot}")

        async with page.expect_request(
            lambda r: r.url.endswith("/webchat/api/messages") and r.method == "POST"
        ) as posted:
            await buttons.nth(0).click()
        body = (await posted.value).post_data_json
        assert body is not None
        assert body["button_id"] == "consent.yes"
        assert body["text"] == "Ja, gerne"

        answer = page.locator(f'{BUBBLE}[data-direction="in"]').last
        await expect(answer).to_have_text("Ja, gerne")
        await expect(answer).to_have_attribute("data-status", "delivered", timeout=15000)
        await expect(group).to_be_hidden()
        # The advisers see the customer's button answer in the room.
        await adviser.wait_event(room_id, is_message(body="↩️ Ja, gerne"))
        # Stored as the other channels store a tap: interactive, with the button's id.
        stored = (await _stored(stack, visitor_id))[-1]
        assert (stored.direction, stored.kind, stored.text) == ("in", "interactive", "Ja, gerne")
        assert stored.data == {"id": "consent.yes", "title": "Ja, gerne"}
        assert stored.reply_to_message_id == question_id
        answered = tmp_path / "widget-buttons-answered.png"
        await page.screenshot(path=str(answered))
        print(f"screenshot: {answered}")

        # A reload: the history is back, the answered question's buttons stay away.
        await page.reload()
        await _open_chat(page, f"{stack.hub_url}/")
        await expect(page.locator(BUBBLE)).to_have_count(3, timeout=15000)
        await expect(page.get_by_test_id("hubchat-buttons")).to_be_hidden()


async def test_reply_buttons_on_a_phone_and_older_buttons_go_when_the_customer_writes(
    stack: Stack, adviser: Adviser, browser: Browser, tmp_path: Path
) -> None:
    async with new_page(browser, mobile=True) as page:
        await _start_conversation(page, stack, adviser, "Knopf Handy")
        visitor_id = await _visitor_id(page, stack)
        await _bot_asks(stack, visitor_id, "e2e-buttons:mobile")
        buttons = page.get_by_test_id("hubchat-button")
        await expect(buttons).to_have_count(2, timeout=15000)
        await expect(buttons.nth(1)).to_be_visible()
        for i in range(2):
            target = await buttons.nth(i).bounding_box()
            assert target and target["height"] >= 40  # a finger's target
        shot = tmp_path / "widget-buttons-mobile.png"
        await page.screenshot(path=str(shot))
        print(f"screenshot: {shot}")

        # Writing instead of tapping answers too: the buttons go, as WhatsApp's do.
        box = page.get_by_test_id("hubchat-input")
        await box.fill("Darf ich vorher noch etwas fragen?")
        await page.get_by_test_id("hubchat-send").click()
        await expect(page.get_by_test_id("hubchat-buttons")).to_be_hidden()
        mine = page.locator(f'{BUBBLE}[data-direction="in"]').last
        await expect(mine).to_have_text("Darf ich vorher noch etwas fragen?")
        await expect(mine).not_to_have_attribute("data-status", "sending", timeout=15000)
        # A new question brings its own buttons again; the old ones stay away.
        await _bot_asks(stack, visitor_id, "e2e-buttons:mobile-2")
        await expect(page.locator(f'{BUBBLE}[data-direction="out"]')).to_have_count(
            2, timeout=15000
        )
        groups = page.get_by_test_id("hubchat-buttons")
        await expect(groups.nth(0)).to_be_hidden()
        await expect(groups.nth(1)).to_be_visible()
        await buttons.nth(3).tap()
        await expect(page.locator(f'{BUBBLE}[data-direction="in"]').last).to_have_text(
            BUTTONS[1]["title"]
        )
        await expect(groups.nth(1)).to_be_hidden()
        stored = (await _stored(stack, visitor_id))[-1]
        assert stored.kind == "interactive" and stored.data == {
            "id": "consent.no",
            "title": BUTTONS[1]["title"],
        }


async def _focused(page: Page) -> dict[str, Any]:
    """What has the keyboard focus inside the widget's shadow root."""
    found: dict[str, Any] = await page.evaluate(
        """() => {
            const root = document.querySelector('hubchat-widget').shadowRoot;
            const el = root.activeElement;
            if (!el) return {};
            const style = getComputedStyle(el);
            return {
                testid: el.getAttribute('data-testid'),
                button: el.getAttribute('data-button-id'),
                ring: el.matches(':focus-visible') && style.outlineStyle !== 'none',
            };
        }"""
    )
    return found
