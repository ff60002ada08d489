"""The shop's order rules through the command runner and the built-in checkout's handlers, on
SQLite and PostgreSQL, without a homeserver: `!pay` makes the cart the order (a second `!pay`
is refused and says how to send the link again), an order on invoice ships before it is paid
and the customer's thanks say what was paid, `!orders` in the shop's time zone, and the
checkout page refusing a country the shop does not deliver to and escaping what the catalogue
and the customer typed."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.commerce.catalogue import Product
from hub.commerce.checkout import Checkout, make_provider
from hub.commerce.commands import CommerceCommands
from hub.commerce.http import CommerceHttp
from hub.commerce.money import Money
from hub.commerce.service import CART_STATE_EVENT, Shop
from hub.config import Config
from hub.core import clock
from hub.core.bot import OK, REFUSED, CommandContext, CommandHandler, CommandRunner
from hub.core.commands import CommandRegistry, NotACommand, parse
from hub.db import commerce, conversations, identities
from hub.db.database import Database, Tx
from hub.db.models import Message, Order, OutboxItem
from hub.http.security import install_security_headers
from hub.jobs.job import Job
from hub.jobs.kinds import CREATE_CHECKOUT, MATRIX_SEND

Sessions = async_sessionmaker[AsyncSession]
ROOM = "!shop:shop.example"
ADVISER = "@anna:shop.example"
PUBLIC = "http://hub.test"
XSS = "<script>alert(1)</script>"


def config(timezone: str = "Europe/Berlin") -> Config:
    return Config.model_validate(
        {
            "homeserver": {"url": "http://127.0.0.1:1", "domain": "shop.example"},
            "appservice": {"as_token": "a" * 32, "hs_token": "h" * 32},
            "shop": {"name": "Farben Müller", "timezone": timezone, "advisers": [ADVISER]},
            "commerce": {"builtin": {"countries": ["DE", "AT"]}},
        }
    )


PRODUCTS = [
    Product("LA-1", "Lasur Eiche", Money(2490, "EUR"), Decimal("19")),
    Product("PI-2", "Pinsel", Money(450, "EUR"), Decimal("7")),
    Product("XSS-1", XSS, Money(100, "EUR"), Decimal("19")),
]


@dataclass
class ShopHub:
    db: Database
    sessions: Sessions
    shop: Shop
    checkout: Checkout
    http: CommerceHttp
    cid: int
    events: int = 0

    def _run(self, tx: Tx, body: str, event: str) -> None:
        registry: CommandRegistry[CommandHandler] = CommandRegistry()
        for spec in CommerceCommands(self.shop).specs():
            registry.register(spec)
        result = parse(body, "!", registry)
        assert not isinstance(result, NotACommand)
        ctx = CommandContext(tx, ROOM, event, ADVISER, conversations.conversation(tx, self.cid))
        CommandRunner(registry, [ADVISER]).run(ctx, result)

    async def command(self, body: str) -> tuple[str, str]:
        """(✅ or ⛔, the bot's answer) of a command in the customer's room."""
        self.events += 1
        event = f"$cmd{self.events}"
        await self.db.write(self._run, body, event)
        sent = await self.sent()
        reaction = sent[f"{MATRIX_SEND}/react:{event}"]["content"]["m.relates_to"]["key"]
        return reaction, sent[f"{MATRIX_SEND}/reply:{event}:0"]["content"]["body"]

    async def sent(self) -> dict[str, dict[str, Any]]:
        """The bot's Matrix events queued so far, by idempotency key."""
        async with self.sessions() as s:
            rows = await s.scalars(select(OutboxItem).where(OutboxItem.kind == MATRIX_SEND))
            return {j.idempotency_key: j.payload for j in rows}

    async def room_notices(self) -> list[str]:
        return [
            p["content"]["body"]
            for key, p in (await self.sent()).items()
            if key.startswith(f"{MATRIX_SEND}/order:")
        ]

    async def jobs(self, kind: str) -> list[OutboxItem]:
        async with self.sessions() as s:
            query = select(OutboxItem).where(OutboxItem.kind == kind).order_by(OutboxItem.id)
            return list(await s.scalars(query))

    async def to_customer(self) -> list[str]:
        async with self.sessions() as s:
            query = select(Message).where(
                Message.direction == "out", Message.conversation_id == self.cid
            )
            return [m.text or "" for m in await s.scalars(query.order_by(Message.id))]

    async def orders(self) -> list[Order]:
        async with self.sessions() as s:
            return list(await s.scalars(select(Order).order_by(Order.id)))

    async def make_link(self, order_id: int) -> None:
        """What the worker does with the commerce.checkout job."""
        job = Job(1, CREATE_CHECKOUT, f"conversation/{self.cid}", {"order_id": order_id}, 0)
        finish = await self.checkout.create(job)
        if finish is not None:
            await self.db.write(finish)

    async def place(self, order_id: int, method: str) -> None:
        """The customer placed the order on the checkout page with `method`."""
        details = {
            "name": "Zoë Müller",
            "street": "Farbweg 3",
            "postcode": "50667",
            "city": "Köln",
            "country": "DE",
            "email": None,
            "phone": None,
            "payment_method": method,
        }
        await self.db.write(self.http._place, order_id, details)


def _customer(tx: Tx) -> int:
    found = identities.identity_conversation(tx, "whatsapp", "4915112345678", "Ana", lambda: "c1")
    conversations.set_room(tx, found.conversation_id, ROOM, "Ana")
    commerce.replace_catalogue(tx, PRODUCTS)
    return found.conversation_id


@pytest.fixture
async def hub(db: Database, sessions: Sessions) -> AsyncIterator[ShopHub]:
    yield await make_hub(db, sessions, config())


async def make_hub(db: Database, sessions: Sessions, cfg: Config) -> ShopHub:
    shop = Shop(cfg.shop, cfg.commerce, cfg.channels.whatsapp, {"whatsapp": None}, PUBLIC)
    http = aiohttp.ClientSession()
    provider = make_provider(cfg.commerce, http, PUBLIC)
    await http.close()  # the built-in provider never calls out
    checkout = Checkout(db, shop, provider, PUBLIC, 1_048_576)
    pages = CommerceHttp(db, shop, checkout, cfg.commerce, b"csrf-key")
    cid = await db.write(_customer)
    return ShopHub(db, sessions, shop, checkout, pages, cid)


async def order_with(hub: ShopHub, *lines: str) -> Order:
    for line in lines:
        assert (await hub.command(f"!cart add {line}"))[0] == OK
    outcome, _ = await hub.command("!pay")
    assert outcome == OK
    return (await hub.orders())[-1]


# --- !pay: the cart becomes the order ----------------------------------------------------------


async def test_pay_makes_the_cart_the_order_and_a_second_pay_is_refused(hub: ShopHub) -> None:
    assert (await hub.command("!cart add LA-1 2"))[0] == OK
    outcome, answer = await hub.command("!pay")
    assert outcome == OK
    assert answer.startswith("Order 0001 for €49.80 created")
    assert "2 × Lasur Eiche: €49.80" in answer  # what was ordered

    # The cart is empty now, in the database and in the room's state event.
    cart = await hub.db.read(commerce.get_cart, hub.cid, "EUR")
    assert cart.is_empty
    states = [p for p in (await hub.sent()).values() if p["event_type"] == CART_STATE_EVENT]
    assert states[-1]["content"]["lines"] == []

    # A second !pay orders nothing again: it names the open order and how to resend its link.
    outcome, answer = await hub.command("!pay")
    assert outcome == REFUSED
    assert "order 0001 (€49.80)" in answer and "!pay 0001" in answer
    assert len(await hub.orders()) == 1
    assert len(await hub.jobs(CREATE_CHECKOUT)) == 1

    # A new cart is a new order.
    assert (await hub.command("!cart add PI-2"))[0] == OK
    assert (await hub.command("!pay"))[0] == OK
    assert [o.total_minor for o in await hub.orders()] == [4980, 450]


async def test_an_empty_cart_without_an_open_order_says_how_to_fill_it(hub: ShopHub) -> None:
    outcome, answer = await hub.command("!pay")
    assert outcome == REFUSED
    assert answer == "The cart is empty — add products with !cart add SKU [QTY]"


async def test_pay_with_an_order_number_sends_its_link_again(hub: ShopHub) -> None:
    order = await order_with(hub, "LA-1 1")
    # Before the job made the link: asking again makes it again (a failed job is retried so).
    outcome, answer = await hub.command("!pay 0001")
    assert outcome == OK and "goes to the customer in a moment" in answer
    assert len(await hub.jobs(CREATE_CHECKOUT)) == 2
    await hub.make_link(order.id)
    await hub.make_link(order.id)  # the second job finds the link made
    [link_text] = await hub.to_customer()
    short = re.search(r"http://hub\.test/l/\w+", link_text)
    assert short is not None

    outcome, answer = await hub.command("!pay 1")
    assert outcome == OK
    assert answer == f"Checkout link for order 0001 sent again: {short[0]}"
    assert await hub.to_customer() == [link_text, link_text]

    outcome, answer = await hub.command("!pay 0002")
    assert outcome == REFUSED and "No order 0002" in answer

    await hub.place(order.id, "invoice")
    outcome, answer = await hub.command("!pay 0001")
    assert outcome == REFUSED and "already placed on the checkout page" in answer
    outcome, answer = await hub.command("!pay")
    assert outcome == REFUSED and "placed on the checkout page" in answer


async def test_a_paid_order_has_no_link_to_send(hub: ShopHub) -> None:
    await order_with(hub, "LA-1 1")
    assert (await hub.command("!order 0001 paid"))[0] == OK
    outcome, answer = await hub.command("!pay 0001")
    assert outcome == REFUSED
    assert answer == "Order 0001 is paid: it has no checkout link to send any more."
    # Nothing open any more: the empty cart's refusal is the plain one.
    assert (await hub.command("!pay"))[1].startswith("The cart is empty — add products")


# --- payment methods: invoice ships first; each thanks says what was paid ----------------------


async def test_an_invoice_order_ships_before_it_is_paid(hub: ShopHub) -> None:
    order = await order_with(hub, "LA-1 2", "PI-2 1")  # €54.30
    await hub.place(order.id, "invoice")

    outcome, answer = await hub.command("!order 0001 shipped https://track.example/1")
    assert (outcome, answer) == (OK, "Order 0001 is now shipped.")
    outcome, answer = await hub.command("!orders")
    assert "0001 — shipped, invoice open — €54.30 — builtin (Invoice) — " in answer

    outcome, answer = await hub.command("!order 0001 paid")
    assert (outcome, answer) == (
        OK,
        "The invoice of order 0001 is now paid; the order stays shipped.",
    )
    [row] = await hub.orders()
    assert row.status == "shipped" and row.paid_at is not None
    customer = await hub.to_customer()
    assert (
        customer[-1]
        == "Thank you! We received the payment of your invoice for order 0001 (€54.30)."
    )
    assert not any("We received the payment for order" in text for text in customer)
    assert any("invoice paid (€54.30)" in note for note in await hub.room_notices())

    # Paid is paid: a second "paid" sends nothing.
    outcome, answer = await hub.command("!order 0001 paid")
    assert (outcome, answer) == (OK, "Order 0001 is already paid.")
    assert len(await hub.to_customer()) == len(customer)

    assert (await hub.command("!order 0001 delivered"))[0] == OK
    assert "0001 — delivered, invoice paid — " in (await hub.command("!orders"))[1]


async def test_an_invoice_order_can_be_delivered_unpaid_and_paid_later(hub: ShopHub) -> None:
    order = await order_with(hub, "LA-1 1")
    await hub.place(order.id, "invoice")
    assert (await hub.command("!order 0001 delivered"))[0] == OK  # picked up in the shop
    outcome, answer = await hub.command("!order 0001 cancelled")
    assert outcome == REFUSED and "it cannot be cancelled" in answer
    assert (await hub.command("!order 0001 paid"))[1] == (
        "The invoice of order 0001 is now paid; the order stays delivered."
    )


async def test_an_invoice_order_paid_before_shipping_is_simply_paid(hub: ShopHub) -> None:
    order = await order_with(hub, "LA-1 1")
    await hub.place(order.id, "invoice")
    assert (await hub.command("!order 0001 paid"))[1] == "Order 0001 is now paid."
    assert (await hub.to_customer())[-1] == (
        "Thank you! We received the payment of your invoice for order 0001 (€24.90)."
    )
    assert (await hub.command("!order 0001 shipped"))[1] == "Order 0001 is now shipped."


async def test_prepayment_is_paid_before_shipping_and_the_thanks_name_the_transfer(
    hub: ShopHub,
) -> None:
    order = await order_with(hub, "LA-1 1")
    await hub.place(order.id, "prepayment")
    outcome, answer = await hub.command("!order 0001 shipped")
    assert outcome == REFUSED
    assert answer == "order 0001 is not paid yet; it cannot be shipped"
    assert (await hub.command("!order 0001 paid"))[0] == OK
    assert (await hub.to_customer())[-1] == (
        "Thank you! Your bank transfer for order 0001 (€24.90) has arrived."
    )
    assert (await hub.command("!order 0001 shipped"))[0] == OK
    assert (
        "0001 — shipped — €24.90 — builtin (Prepayment (bank transfer)) — "
        in (await hub.command("!orders"))[1]
    )


async def test_an_order_not_placed_on_the_page_gets_the_plain_thanks(hub: ShopHub) -> None:
    await order_with(hub, "LA-1 1")
    assert (await hub.command("!order 0001 shipped"))[0] == REFUSED  # prepaid: not yet
    assert (await hub.command("!order 0001 paid"))[0] == OK
    assert (await hub.to_customer())[-1] == (
        "Thank you! We received the payment for order 0001 (€24.90)."
    )


# --- !orders in the shop's time zone ----------------------------------------------------------


@pytest.mark.parametrize(
    ("timezone", "shown"),
    [
        ("Europe/Berlin", "12/7/26, 10:00 AM +0100"),
        ("America/New_York", "12/7/26, 4:00 AM EST"),
        ("UTC", "12/7/26, 9:00 AM UTC"),
    ],
)
async def test_orders_show_the_shops_time_and_say_which(
    db: Database, sessions: Sessions, timezone: str, shown: str
) -> None:
    hub = await make_hub(db, sessions, config(timezone))
    clock.set_now(datetime(2026, 12, 7, 9, 0, tzinfo=UTC))
    try:
        await order_with(hub, "LA-1 1")
    finally:
        clock.reset()
    outcome, answer = await hub.command("!orders")
    assert outcome == OK
    assert answer.replace("\u202f", " ").endswith(f"0001 — pending — €24.90 — builtin — {shown}")


# --- the checkout page --------------------------------------------------------------------------


@pytest.fixture
async def page(hub: ShopHub, aiohttp_client: Any) -> TestClient[Any, Any]:
    app = web.Application()
    install_security_headers(app)
    hub.http.add_routes(app)
    client: TestClient[Any, Any] = await aiohttp_client(app)
    return client


GOOD_FORM = {
    "name": "Zoë Müller",
    "street": "Farbweg 3",
    "postcode": "1010",
    "city": "Wien",
    "country": "AT",
    "payment_method": "invoice",
}


async def open_page(page: TestClient[Any, Any], order: Order) -> tuple[str, str]:
    resp = await page.get(f"/checkout/{order.reference}")
    assert resp.status == 200
    body = await resp.text()
    csrf = re.search(r'name="csrf" value="(\w+)"', body)
    assert csrf is not None
    return body, csrf[1]


async def test_the_checkout_refuses_a_country_the_shop_does_not_deliver_to(
    hub: ShopHub, page: TestClient[Any, Any]
) -> None:
    order = await order_with(hub, "LA-1 1")
    body, csrf = await open_page(page, order)
    assert 'value="FR"' not in body  # not offered: commerce.builtin.countries is DE, AT

    # A posted form is checked on the server all the same (tampered, or a stale page).
    form = GOOD_FORM | {"csrf": csrf, "country": "FR", "postcode": "75001"}
    resp = await page.post(f"/checkout/{order.reference}", data=form)
    assert resp.status == 200
    body = await resp.text()
    assert 'id="error-country"' in body
    assert "We do not deliver to this country." in body
    [row] = await hub.orders()
    assert row.details is None  # nothing stored, nothing announced
    assert len(await hub.to_customer()) == 0

    resp = await page.post(f"/checkout/{order.reference}", data=form | {"country": "XX"})
    assert "Please choose one of the options." in await resp.text()

    resp = await page.post(f"/checkout/{order.reference}", data=GOOD_FORM | {"csrf": csrf})
    assert 'data-testid="done-title"' in await resp.text()
    [row] = await hub.orders()
    assert row.details is not None and row.details["country"] == "AT"


async def test_the_checkout_escapes_the_catalogue_and_the_customer(
    hub: ShopHub, page: TestClient[Any, Any]
) -> None:
    order = await order_with(hub, "XSS-1 1")
    body, csrf = await open_page(page, order)
    assert "<script" not in body  # the page has no scripts; the product's name is text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body

    name = '"><img src=x onerror=alert(1)><b>Eve</b>'
    form = GOOD_FORM | {"csrf": csrf, "name": name}
    resp = await page.post(f"/checkout/{order.reference}", data=form)
    body = await resp.text()
    assert 'id="error-name"' in body  # markup is no name; the form comes back with it
    assert "<img" not in body and "<b>" not in body
    assert 'value="&#34;&gt;&lt;img src=x onerror=alert(1)&gt;&lt;b&gt;Eve&lt;/b&gt;"' in body
    [row] = await hub.orders()
    assert row.details is None


async def test_checkout_pages_carry_the_security_headers(
    hub: ShopHub, page: TestClient[Any, Any]
) -> None:
    order = await order_with(hub, "LA-1 1")
    for path in (
        f"/checkout/{order.reference}",
        f"/checkout/{order.reference}/done",
        "/checkout/hub-00000000000000000000",  # unknown: a 404 raised by the handler
        "/checkout/nonsense",
    ):
        resp = await page.get(path)
        assert resp.headers["X-Content-Type-Options"] == "nosniff", path
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"], path
    resp = await page.get(f"/checkout/{order.reference}")
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'none'" in csp and "form-action 'self'" in csp
    assert resp.headers["X-Frame-Options"] == "DENY"


async def test_the_page_of_a_shipped_unpaid_invoice_order_does_not_say_paid(
    hub: ShopHub, page: TestClient[Any, Any]
) -> None:
    order = await order_with(hub, "LA-1 1")
    await hub.place(order.id, "invoice")
    assert (await hub.command("!order 0001 shipped"))[0] == OK
    body = await (await page.get(f"/checkout/{order.reference}")).text()
    assert "Your order has been placed." in body
    assert "We have received your payment." not in body
    assert (await hub.command("!order 0001 paid"))[0] == OK
    body = await (await page.get(f"/checkout/{order.reference}")).text()
    assert "We have received your payment." in body
