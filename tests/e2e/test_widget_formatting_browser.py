"""An adviser's formatting in the widget, in a real headless Chromium, on a shop page without a
Content-Security-Policy (so nothing but the widget itself stands between a message and the
page): bold, italics, links, lists, quotes and code from Element are shown formatted, script
in them never runs, a customer's markup stays text (in the widget and in Matrix), and the
pushes of an edit, a deletion and a reaction change the conversation in place.

The edit, deletion and reaction pushes are written into the widget's websocket here (through
Playwright's routing of it, the hub's own frames passed on): this tests how the widget shows
them, whatever part of the hub sends them."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, Route, WebSocketRoute, async_playwright, expect

from hub.bridges.webchat.texts import WIDGET_TEXTS
from hub.i18n import translations
from tests.browser import (
    CHROMIUM_ARGS,
    chromium_available,
    chromium_path,
    new_page,
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
SHOP = "http://shop.test/"  # an allowed origin of the stack's web chat
TYPED = "<img src=x onerror=alert(1)>"
BODY = "**Bestellung 4711** _heute_ [Link](https://shop.example/x)<script>alert(1)</script>"
FORMATTED = (
    "<strong>Bestellung 4711</strong> <em>heute</em> "
    '<a href="https://shop.example/x">Link</a><script>alert(1)</script>'
    '<img src=x onerror="window.__xss=1">'
)
LISTS = (
    "<p>Ihre <del>alte</del> Auswahl:</p>\n<ul>\n<li>Lasur <code>EI-075</code></li>\n"
    '<li>Pinsel</li>\n</ul>\n<ol start="2">\n<li>zahlen</li>\n<li>abholen</li>\n</ol>\n'
    "<blockquote>\n<p>Bitte bis Freitag</p>\n</blockquote>\n"
    '<pre><code class="language-text">Farbe: Eiche hell\n  Menge: 0,75 l\n</code></pre>\n'
    '<p>Fragen? <a href="mailto:info@shop.example">Schreiben Sie uns</a><br>'
    '<a href="javascript:window.__xss=1">nicht klickbar</a></p>\n'
)
SHOTS = Path("/tmp")


@dataclass
class Socket:
    """The widget's websocket, routed: the hub's frames pass through, recorded; `push` adds
    frames of our own."""

    route: WebSocketRoute | None = None
    from_hub: list[dict[str, Any]] = field(default_factory=list)

    def handle(self, ws: WebSocketRoute) -> None:
        self.route = ws
        server = ws.connect_to_server()

        def passed_on(message: str | bytes) -> None:
            if isinstance(message, str):
                try:
                    self.from_hub.append(json.loads(message))
                except ValueError:
                    pass
            ws.send(message)

        server.on_message(passed_on)

    def push(self, doc: dict[str, Any]) -> None:
        assert self.route is not None
        self.route.send(json.dumps(doc))

    def message(self, message_id: int) -> dict[str, Any]:
        for doc in self.from_hub:
            if doc.get("type") == "message" and doc["message"]["id"] == message_id:
                return dict(doc["message"])
        raise AssertionError(f"message {message_id} never came through the websocket")


# The shop's page is on the internet and the hub here on loopback: Chromium's Private/Local
# Network Access rules would block the page from loading a script from a "more private"
# address. In production both are public; these flags make the test's loopback hub so.
PUBLIC_HUB_ARGS = (
    "--disable-features=BlockInsecurePrivateNetworkRequests,"
    "PrivateNetworkAccessSendPreflights,LocalNetworkAccessChecks",
)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(
            executable_path=chromium_path(), headless=True, args=[*CHROMIUM_ARGS, *PUBLIC_HUB_ARGS]
        )
        try:
            yield b
        finally:
            await b.close()


def german(key: str) -> str:
    """A widget text as the German shop's widget shows it."""
    return translations("de").gettext(WIDGET_TEXTS[key])


async def _shop_page(page: Page, stack: Stack) -> None:
    """A shop's own page that embeds the widget, served without any security headers."""
    html = (
        '<!doctype html><html lang="de"><head><meta charset="utf-8"><title>Shop</title></head>'
        f'<body><h1>Farbenhaus</h1><script src="{stack.hub_url}/webchat/widget.js" async>'
        "</script></body></html>"
    )

    async def serve(route: Route) -> None:
        await route.fulfill(status=200, content_type="text/html; charset=utf-8", body=html)

    await page.route(SHOP, serve)


async def _in_messages(page: Page, tags: str) -> int:
    """How many elements of these tags the widget's message bubbles hold."""
    return int(
        await page.evaluate(
            """tags => Array.from(document.querySelector('hubchat-widget').shadowRoot
                .querySelectorAll('[data-testid=hubchat-message]'))
                .reduce((n, b) => n + b.querySelectorAll(tags).length, 0)""",
            tags,
        )
    )


async def test_formatting_reaches_the_widget_and_markup_never_runs(
    stack: Stack, adviser: Adviser, browser: Browser
) -> None:
    async with new_page(browser) as page:
        dialogs: list[str] = []

        async def dismiss(dialog: Any) -> None:
            dialogs.append(dialog.message)
            await dialog.dismiss()

        page.on("dialog", dismiss)
        socket = Socket()
        await page.route_web_socket(re.compile(r"/webchat/ws$"), socket.handle)
        await _shop_page(page, stack)
        await page.goto(SHOP)
        await wait_until(page, "window.HubChat && window.HubChat.isReady()")
        await page.get_by_test_id("hubchat-launcher").click()
        await page.evaluate("window.HubChat.setName('Format Kundin')")

        # The customer types markup: it is text in the widget...
        box = page.get_by_test_id("hubchat-input")
        await box.fill(TYPED)
        await box.press("Enter")
        mine = page.locator(f'{BUBBLE}[data-direction="in"]')
        await expect(mine).to_have_text(TYPED)
        # ...and in Matrix: a plain body, no formatted_body a client would render.
        room_id = await adviser.wait_invite("Webchat · Format Kundin")
        await adviser.join(room_id)
        question = await adviser.wait_event(room_id, is_message(body=TYPED))
        assert "formatted_body" not in question["content"]
        assert "format" not in question["content"]
        await expect(mine).to_have_attribute("data-status", "delivered", timeout=15000)

        # The adviser formats in Element: Markdown body, HTML formatted_body.
        await adviser.send_text(
            room_id, BODY, format="org.matrix.custom.html", formatted_body=FORMATTED
        )
        answer = page.locator(f'{BUBBLE}[data-direction="out"]').first
        await expect(answer.locator("strong")).to_have_text("Bestellung 4711", timeout=15000)
        await expect(answer.locator("em")).to_have_text("heute")
        link = answer.locator("a")
        await expect(link).to_have_text("Link")
        await expect(link).to_have_attribute("href", "https://shop.example/x")
        await expect(link).to_have_attribute("target", "_blank")
        await expect(link).to_have_attribute("rel", "noopener noreferrer")
        await expect(answer).to_have_text("Bestellung 4711 heute Link")
        assert "**" not in await answer.inner_text()

        await adviser.send_text(
            room_id,
            "Ihre ~~alte~~ Auswahl: …",
            format="org.matrix.custom.html",
            formatted_body=LISTS,
        )
        lists = page.locator(f'{BUBBLE}[data-direction="out"]').nth(1)
        await expect(lists.locator("li")).to_have_count(4, timeout=15000)
        await expect(lists.locator("ul > li").first).to_have_text("Lasur EI-075")
        await expect(lists.locator("ol")).to_have_attribute("start", "2")
        await expect(lists.locator("del")).to_have_text("alte")
        await expect(lists.locator("blockquote")).to_have_text("Bitte bis Freitag")
        await expect(lists.locator("pre")).to_contain_text("Farbe: Eiche hell\n  Menge: 0,75 l")
        await expect(lists.locator("a")).to_have_count(1)  # the javascript: one is text
        await expect(lists.locator("a")).to_have_attribute("href", "mailto:info@shop.example")
        await expect(lists).to_contain_text("nicht klickbar")

        # Nothing ran, nothing but the allowed tags is in the widget.
        assert await _in_messages(page, "script, img, iframe, object, embed, svg, style") == 0
        assert await page.evaluate("window.__xss") is None
        assert dialogs == []

        # The shop reacts to the customer's message.
        mine_id = int(await mine.get_attribute("data-id") or "0")
        socket.push({"type": "reaction", "id": mine_id, "emoji": "👍"})
        reaction = page.get_by_test_id("hubchat-reaction")
        await expect(reaction).to_have_text("👍")
        await expect(reaction).to_have_attribute(
            "aria-label", german("reaction").format(emoji="👍")
        )
        await page.screenshot(path=str(SHOTS / "widget-formatting.png"))

        # The adviser edits the first answer: the new version in its place, marked.
        first_id = int(await answer.get_attribute("data-id") or "0")
        edited = socket.message(first_id) | {
            "text": "**Bestellung 4712** ist unterwegs",
            "formatted": [{"t": "strong", "c": ["Bestellung 4712"]}, " ist unterwegs"],
            "edited": True,
        }
        socket.push({"type": "message_edited", "message": edited})
        await expect(answer.locator("strong")).to_have_text("Bestellung 4712")
        await expect(answer.get_by_test_id("hubchat-edited")).to_have_text(german("edited"))
        await expect(answer).to_have_text(f"Bestellung 4712 ist unterwegs{german('edited')}")
        await expect(page.locator(BUBBLE)).to_have_count(3)

        # ...and deletes the second: it says so in its place.
        lists_id = int(await lists.get_attribute("data-id") or "0")
        socket.push({"type": "message_deleted", "id": lists_id})
        await expect(lists).to_have_attribute("data-deleted", "true")
        await expect(lists).to_have_text(german("deleted"))
        await expect(page.locator(BUBBLE)).to_have_count(3)

        # The reaction is taken back.
        socket.push({"type": "reaction", "id": mine_id, "emoji": ""})
        await expect(reaction).to_have_count(0)

        # A formatted tree the hub would never send: the widget's own allow-list holds.
        hostile = socket.message(first_id) | {
            "id": 10**9,
            "text": "x",
            "edited": False,
            "formatted": [
                {"t": "img", "src": "x", "onerror": "window.__xss=1", "c": ["bild"]},
                {"t": "a", "href": "javascript:window.__xss=1", "c": [" js"]},
                {"t": "a", "href": "data:text/html,<script>alert(1)</script>", "c": [" data"]},
                {"t": "script", "c": [" window.__xss=1"]},
                {"t": "iframe", "c": [" rahmen"]},
                {"t": "__proto__", "c": [" proto"]},
                {"t": "b", "onclick": "window.__xss=1", "style": "x", "c": [" fett"]},
                "<img src=x onerror=alert(1)>",
            ],
        }
        socket.push({"type": "message", "message": hostile})
        last = page.locator(f'{BUBBLE}[data-id="{10**9}"]')
        await expect(last).to_have_text(
            "bild js data window.__xss=1 rahmen proto fett<img src=x onerror=alert(1)>"
        )
        assert await _in_messages(page, "script, img, iframe, object, embed, svg, style") == 0
        await expect(last.locator("a")).to_have_count(0)
        await expect(last.locator("b")).to_have_count(1)
        assert await last.locator("b").get_attribute("onclick") is None
        assert await page.evaluate("window.__xss") is None
        assert dialogs == []
        await page.screenshot(path=str(SHOTS / "widget-formatting-edited.png"))


async def test_an_edit_and_a_deletion_in_element_reach_the_widget(
    stack: Stack, adviser: Adviser, browser: Browser
) -> None:
    """The same through the hub: an adviser edits a formatted message in Matrix (m.replace
    with formatted m.new_content), then deletes another (a redaction)."""
    async with new_page(browser) as page:
        await _shop_page(page, stack)
        await page.goto(SHOP)
        await wait_until(page, "window.HubChat && window.HubChat.isReady()")
        await page.get_by_test_id("hubchat-launcher").click()
        await page.evaluate("window.HubChat.setName('Edit Kunde')")
        box = page.get_by_test_id("hubchat-input")
        await box.fill("Ist die Lasur da?")
        await box.press("Enter")
        room_id = await adviser.wait_invite("Webchat · Edit Kunde")
        await adviser.join(room_id)
        await adviser.wait_event(room_id, is_message(body="Ist die Lasur da?"))

        first = await adviser.send_text(
            room_id,
            "**Ja**, ab morgen",
            format="org.matrix.custom.html",
            formatted_body="<strong>Ja</strong>, ab morgen",
        )
        second = await adviser.send_text(room_id, "Tippfehler")
        answers = page.locator(f'{BUBBLE}[data-direction="out"]')
        await expect(answers).to_have_count(2, timeout=15000)
        await expect(answers.first.locator("strong")).to_have_text("Ja")

        await adviser.send_text(
            room_id,
            "* **Ja**, ab heute",
            **{
                "m.new_content": {
                    "msgtype": "m.text",
                    "body": "**Ja**, ab heute",
                    "format": "org.matrix.custom.html",
                    "formatted_body": "<strong>Ja</strong>, ab <em>heute</em>",
                },
                "m.relates_to": {"rel_type": "m.replace", "event_id": first},
            },
        )
        await expect(answers.first.locator("em")).to_have_text("heute", timeout=15000)
        await expect(answers.first.get_by_test_id("hubchat-edited")).to_have_text(german("edited"))
        await adviser.client.room_redact(room_id, second)
        await expect(answers.nth(1)).to_have_attribute("data-deleted", "true", timeout=15000)
        await expect(answers.nth(1)).to_have_text(german("deleted"))

        # After a reload the edit stays marked and the deleted message is left out.
        await page.reload()
        await wait_until(page, "window.HubChat && window.HubChat.isReady()")
        await page.get_by_test_id("hubchat-launcher").click()
        await expect(answers).to_have_count(1, timeout=15000)
        await expect(answers.first).to_have_text(f"Ja, ab heute{german('edited')}")
