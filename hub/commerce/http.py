"""Commerce pages and endpoints: short links, payment webhooks, the built-in checkout."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from typing import Any

from aiohttp import web

from hub.bridges.http import same_secret
from hub.commerce.cart import Cart
from hub.commerce.checkout import Checkout
from hub.commerce.money import Money
from hub.commerce.orders import OrderStatus
from hub.commerce.service import Shop, configured, fill, order_paid
from hub.config import CommerceConfig
from hub.db import commerce, notices
from hub.db.database import Database, Tx
from hub.db.models import Conversation, Order, utcnow
from hub.http.pages import Pages
from hub.http.security import page_csp, page_headers
from hub.i18n import _

log = logging.getLogger(__name__)

_CODE = re.compile(r"^[A-Za-z0-9]{6,32}$")
_REFERENCE = re.compile(r"^hub-[0-9a-f]{20}$")


def checkout_headers() -> dict[str, str]:
    """The checkout pages' headers: the hub's page policy with their inline stylesheet
    (no scripts at all: the pages work without JavaScript)."""
    return page_headers(page_csp(script_src=("'none'",), style_inline=True))


class CommerceHttp:
    def __init__(
        self,
        db: Database,
        shop: Shop,
        checkout: Checkout,
        config: CommerceConfig,
        csrf_key: bytes,
    ) -> None:
        self.db = db
        self.shop = shop
        self.checkout = checkout
        self.config = config
        self._csrf_key = csrf_key
        self.pages = Pages()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/l/{code}", self.short_link)
        app.router.add_post("/webhooks/payments/{provider}", self.checkout.webhook)
        if self.config.provider == "builtin":
            app.router.add_get("/checkout/{reference}", self.checkout_page)
            app.router.add_post("/checkout/{reference}", self.checkout_submit)
        app.router.add_get("/checkout/{reference}/{outcome:done|cancelled}", self.after_provider)

    async def short_link(self, request: web.Request) -> web.StreamResponse:
        code = request.match_info["code"]
        if not _CODE.fullmatch(code):
            raise web.HTTPNotFound()
        url = await self.db.write(commerce.click_short_link, code)
        if url is None:
            raise web.HTTPNotFound(text=_("This link does not exist (any more)."))
        raise web.HTTPFound(
            url, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
        )

    async def _order(self, reference: str) -> Order:
        if not _REFERENCE.fullmatch(reference):
            raise web.HTTPNotFound()
        order = await self.db.read(commerce.order_by_reference, reference)
        if order is None:
            raise web.HTTPNotFound(text=_("Unknown order."))
        return order

    def _csrf(self, reference: str) -> str:
        # Bound to the order: a form posted from elsewhere lacks it.
        return hmac.new(
            self._csrf_key, f"checkout:{reference}".encode(), hashlib.sha256
        ).hexdigest()[:32]

    async def _render(self, name: str, **values: Any) -> web.Response:
        page = await self.pages.render(
            name, shop_name=self.shop.shop.name, locale=self.shop.locale, **values
        )
        return web.Response(
            text=page,
            content_type="text/html",
            headers=checkout_headers() | {"Cache-Control": "no-store"},
        )

    def _page_values(self, order: Order) -> dict[str, Any]:
        shop = self.shop
        from hub.commerce.providers.builtin import checkout_page_context

        return checkout_page_context(
            cart=Cart.from_json(order.cart),
            locale=shop.locale,
            order_number=shop.order_number(order),
            methods=self.config.builtin.payment_methods,
            settings=self.config.builtin,
        )

    async def checkout_page(self, request: web.Request) -> web.Response:
        order = await self._order(request.match_info["reference"])
        if order.status != OrderStatus.PENDING or (order.details or {}).get("placed"):
            return await self._render("checkout_done.html", **self._done_values(order))
        return await self._render(
            "checkout.html",
            csrf=self._csrf(order.reference),
            form={},
            errors={},
            **self._page_values(order),
        )

    def _done_values(self, order: Order, outcome: str = "done") -> dict[str, Any]:
        from hub.commerce.providers.builtin import done_page_context

        shop = self.shop
        method = (order.details or {}).get("payment_method")
        return done_page_context(locale=shop.locale, payment_method=method) | {
            "outcome": outcome,
            "order_number": shop.order_number(order),
            "amount": shop.money(Money(order.total_minor, order.currency)),
            "payment_method": method,
            "instructions": self._instructions(method),
            "status": order.status,
            # An order on invoice can be shipped and still unpaid: the page says "paid" only
            # when the money is in.
            "paid": order_paid(order),
        }

    def _instructions(self, method: str | None) -> str:
        from hub.commerce.providers.builtin import instructions

        return instructions(self.config.builtin, method)

    async def checkout_submit(self, request: web.Request) -> web.Response:
        from hub.commerce.providers.builtin import offered_countries, validate_checkout_form

        order = await self._order(request.match_info["reference"])
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        if not same_secret(form.get("csrf", ""), self._csrf(order.reference)):
            log.warning("checkout form for %s without a valid CSRF token", order.reference)
            raise web.HTTPForbidden(text=_("This form has expired; reload the page."))
        builtin = self.config.builtin
        # The same countries the page offers: a tampered or stale form is refused here, with
        # the reason on the page, and nothing is stored.
        details, errors = validate_checkout_form(
            form, builtin.payment_methods, countries=offered_countries(builtin)
        )
        if details is None:
            return await self._render(
                "checkout.html",
                csrf=self._csrf(order.reference),
                form=form,
                errors=errors,
                **self._page_values(order),
            )
        order = await self.db.write(self._place, order.id, details.as_dict())
        return await self._render("checkout_done.html", **self._done_values(order))

    def _place(self, tx: Tx, order_id: int, details: dict[str, Any]) -> Order:
        """The customer placed the order on the checkout page (once)."""
        row = tx.orm.get(Order, order_id)
        assert row is not None
        if not (row.details or {}).get("placed") and row.status == OrderStatus.PENDING:
            row.details = {**details, "placed": utcnow().isoformat()}
            row.updated_at = utcnow()
            self._announce(tx, row)
        return row

    def _announce(self, tx: Tx, order: Order) -> None:
        shop = self.shop
        conversation = tx.orm.get(Conversation, order.conversation_id)
        assert conversation is not None
        number = shop.order_number(order)
        amount = shop.money(Money(order.total_minor, order.currency))
        method = (order.details or {}).get("payment_method", "")
        template = configured(
            self.config.texts.order_placed,
            _("Thank you! We received order {number} ({amount}). {instructions}"),
        )
        text = fill(
            template,
            number=number,
            amount=amount,
            instructions=self._instructions(method),
        )
        shop.tell_customer(
            tx, conversation, text, f"order-placed:{order.id}", template_params=[number, text]
        )
        if conversation.room_id:
            from hub.commerce.providers.builtin import method_label

            name = (order.details or {}).get("name", "")
            placed = _("Order {number} placed on the checkout page: {amount}, {method}, {name}")
            notices.notice(
                tx,
                conversation.room_id,
                "🧾 "
                + placed.format(
                    number=number, amount=amount, method=method_label(method), name=name
                ),
                f"order-placed-notice:{order.id}",
            )

    async def after_provider(self, request: web.Request) -> web.Response:
        order = await self._order(request.match_info["reference"])
        outcome = request.match_info["outcome"]
        return await self._render("checkout_done.html", **self._done_values(order, outcome))
