"""The built-in checkout page in headless Chromium, standalone: a tiny aiohttp app renders the
real templates with the real context and validation (no Synapse, no database; the hub's own
route is tested end to end elsewhere). It serves the page with the hub's own headers
(hub.commerce.http.checkout_headers), so a style or script the policy would block shows up
here. A product named like a script and a customer typing markup stay text: checked without
the policy too, so the escaping alone is what keeps them harmless.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Page, expect

from hub.commerce.cart import Cart
from hub.commerce.catalogue import Product
from hub.commerce.http import checkout_headers
from hub.commerce.money import Money, format_money
from hub.commerce.providers.builtin import (
    BuiltinSettings,
    checkout_page_context,
    done_page_context,
    validate_checkout_form,
)
from hub.http.pages import templates
from tests.browser import chromium_available, chromium_browser, new_page, screenshot

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not chromium_available(), reason="chromium is not installed"),
    pytest.mark.one_engine(reason="the page's templates alone: no hub, no database"),
]

REFERENCE = "hub-00112233445566778899"
CSRF = "csrf-0123456789abcdef"
SETTINGS = BuiltinSettings(
    public_base_url="http://127.0.0.1",
    prepayment_instructions="Bitte überweisen Sie den Betrag auf\nIBAN DE02 1203 0000 0000 2020 51",
)
CART = (
    Cart.empty("EUR")
    .add(Product("LA-1", "Lasur Eiche <hell>", Money(2490, "EUR"), Decimal("19")), 2, 99)
    .add(Product("PI-2", "Pinsel", Money(450, "EUR"), Decimal("7")), 1, 99)
)
SCRIPT = "<script>window.pwned = 1; alert(1)</script>"
HOSTILE_CART = Cart.empty("EUR").add(
    Product("XSS-1", SCRIPT, Money(990, "EUR"), Decimal("19")), 1, 99
)


class CheckoutApp:
    """GET/POST /checkout/{reference} as the hub's handler does it, with the page's pieces."""

    def __init__(self, cart: Cart = CART, *, policy: bool = True) -> None:
        self.env = templates()
        self.cart = cart
        self.policy = policy  # the hub's headers, or none (to see what escaping alone does)
        self.placed: dict[str, Any] | None = None

    async def render(self, name: str, **values: Any) -> web.Response:
        page = await self.env.get_template(name).render_async(shop_name="Farben & Co", **values)
        headers = checkout_headers() if self.policy else {}
        headers["Cache-Control"] = "no-store"
        return web.Response(text=page, content_type="text/html", headers=headers)

    def page_values(self) -> dict[str, Any]:
        return checkout_page_context(
            cart=self.cart,
            locale="de_DE",
            order_number="0042",
            methods=SETTINGS.payment_methods,
            settings=SETTINGS,
        )

    async def show(self, request: web.Request) -> web.Response:
        return await self.render(
            "checkout.html", csrf=CSRF, form={}, errors={}, **self.page_values()
        )

    async def submit(self, request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        if not hmac.compare_digest(form.get("csrf", ""), CSRF):
            raise web.HTTPForbidden()
        details, errors = validate_checkout_form(
            form, SETTINGS.payment_methods, countries=SETTINGS.countries
        )
        if details is None:
            return await self.render(
                "checkout.html", csrf=CSRF, form=form, errors=errors, **self.page_values()
            )
        self.placed = details.as_dict()
        method = details.payment_method
        return await self.render(
            "checkout_done.html",
            order_number="0042",
            amount=format_money(self.cart.total, "de_DE"),
            payment_method=method,
            instructions=getattr(SETTINGS, f"{method}_instructions"),
            status="pending",
            **done_page_context(locale="de_DE", payment_method=method),
        )


async def serve(checkout: CheckoutApp) -> tuple[str, TestServer]:
    app = web.Application()
    app.router.add_get("/checkout/{reference}", checkout.show)
    app.router.add_post("/checkout/{reference}", checkout.submit)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return str(server.make_url(f"/checkout/{REFERENCE}")), server


@pytest.fixture
async def site(shop_language: Callable[[str], None]) -> AsyncIterator[tuple[str, CheckoutApp]]:
    shop_language("de_DE")  # a German shop: the page's words (hub.i18n) and amounts
    checkout = CheckoutApp()
    url, server = await serve(checkout)
    yield url, checkout
    await server.close()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium_browser() as b:
        yield b


async def _no_horizontal_scroll(page: Page) -> None:
    width = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert width <= 0, f"page is {width}px wider than the phone"


async def test_customer_orders_on_a_phone(site: tuple[str, CheckoutApp], browser: Browser) -> None:
    url, checkout = site
    async with new_page(browser, mobile=True) as page:
        problems: list[str] = []
        page.on("pageerror", lambda err: problems.append(str(err)))
        # Chromium asks for /favicon.ico on its own; any other failing load is a bug.
        page.on(
            "response",
            lambda r: (
                problems.append(f"{r.status} {r.url}")
                if r.status >= 400 and not r.url.endswith("/favicon.ico")
                else None
            ),
        )
        page.on(
            "console",
            lambda m: (
                problems.append(m.text)
                if m.type == "error" and "Failed to load resource" not in m.text
                else None
            ),
        )
        await page.goto(url)
        await expect(page.get_by_test_id("total")).to_have_text("54,30\u00a0€")
        await expect(page.get_by_test_id("cart")).to_contain_text("2 × Lasur Eiche <hell>")
        await _no_horizontal_scroll(page)
        # The inline stylesheet survived the CSP: the button has the brand colour.
        colour = await page.get_by_test_id("place-order").evaluate(
            "el => getComputedStyle(el).backgroundColor"
        )
        assert colour == "rgb(31, 92, 79)"

        # Sending the empty form: every problem named, at the top and at the field.
        await page.get_by_test_id("place-order").click()
        summary = page.get_by_test_id("error-summary")
        await expect(summary).to_be_visible()
        await expect(summary).to_contain_text(
            "Vor- und Nachname: Bitte füllen Sie dieses Feld aus."
        )
        await expect(page.get_by_label("PLZ")).to_have_attribute("aria-invalid", "true")
        await screenshot(page, "checkout-errors-mobile", full_page=True)

        # Filling it in through the labels, as a screen reader user would find the fields.
        await page.get_by_label("Vor- und Nachname").fill("Zoë Ødegård")
        await page.get_by_label("Straße und Hausnummer").fill("Hauptstraße 5a")
        await page.get_by_label("PLZ").fill("1010")
        await page.get_by_label("Ort").fill("Wien")
        await page.get_by_label("Land").select_option("AT")
        await page.get_by_label("E-Mail").fill("zoe@example.com")
        await page.get_by_label("Vorkasse (Überweisung)").check()
        await page.get_by_test_id("place-order").click()

        await expect(page.get_by_test_id("done-title")).to_have_text(
            "Vielen Dank für Ihre Bestellung!"
        )
        await expect(page.get_by_test_id("order-number")).to_have_text("0042")
        await expect(page.get_by_test_id("amount")).to_have_text("54,30\u00a0€")
        await expect(page.get_by_test_id("instructions")).to_contain_text("IBAN DE02 1203")
        await _no_horizontal_scroll(page)
        await screenshot(page, "checkout-done-mobile", full_page=True)
        assert problems == []

    assert checkout.placed == {
        "name": "Zoë Ødegård",
        "street": "Hauptstraße 5a",
        "postcode": "1010",
        "city": "Wien",
        "country": "AT",
        "email": "zoe@example.com",
        "phone": None,
        "payment_method": "prepayment",
    }


async def test_desktop_keeps_what_was_typed_after_an_error(
    site: tuple[str, CheckoutApp], browser: Browser
) -> None:
    url, checkout = site
    async with new_page(browser) as page:
        await page.goto(url)
        await page.get_by_label("Vor- und Nachname").fill("Anna Schmidt")
        await page.get_by_label("PLZ").fill("123")  # not a German postcode
        await page.get_by_test_id("place-order").click()
        await expect(page.get_by_label("Vor- und Nachname")).to_have_value("Anna Schmidt")
        await expect(page.locator("#error-postcode")).to_have_text(
            "Bitte geben Sie eine gültige PLZ für das gewählte Land ein."
        )
        await screenshot(page, "checkout-errors-desktop", full_page=True)
    assert checkout.placed is None


@pytest.mark.parametrize("policy", [True, False], ids=["hub-headers", "no-policy"])
async def test_a_script_in_the_catalogue_and_markup_from_the_customer_stay_text(
    shop_language: Callable[[str], None], browser: Browser, policy: bool
) -> None:
    shop_language("de_DE")
    checkout = CheckoutApp(HOSTILE_CART, policy=policy)
    url, server = await serve(checkout)
    try:
        async with new_page(browser) as page:
            dialogs: list[str] = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            await page.goto(url)
            # The product's name is shown as it was typed, as text.
            await expect(page.get_by_test_id("cart")).to_contain_text(f"1 × {SCRIPT}")
            assert await page.locator("script").count() == 0

            # A customer name with markup: refused as a name, and echoed back as text.
            typed = '"><img src=x onerror="window.pwned=2; alert(2)"><b>Eve</b>'
            await page.get_by_label("Vor- und Nachname").fill(typed)
            await page.get_by_test_id("place-order").click()
            await expect(page.get_by_test_id("error-summary")).to_be_visible()
            await expect(page.get_by_label("Vor- und Nachname")).to_have_value(typed)
            assert await page.locator("main img, main b").count() == 0
            assert await page.locator("script").count() == 0
            await page.wait_for_timeout(200)  # an onerror would have fired by now
            assert await page.evaluate("window.pwned === undefined")
            assert dialogs == []
    finally:
        await server.close()
    assert checkout.placed is None
