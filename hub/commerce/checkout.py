"""Checkout links (the commerce.checkout job) and payment webhooks, behind the one
PaymentProvider protocol of hub.commerce.providers."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from hub.commerce.cart import Cart
from hub.commerce.money import Money
from hub.commerce.orders import InvalidTransition, OrderEvent
from hub.commerce.service import Shop
from hub.config import CommerceConfig
from hub.db import commerce, conversations, notices
from hub.db.database import Database, Tx
from hub.db.models import Conversation, Order
from hub.errors import ExternalError
from hub.i18n import _
from hub.jobs import kinds
from hub.jobs.job import Finish, Job, PermanentFailure, handles
from hub.net import read_body

if TYPE_CHECKING:
    import aiohttp

    from hub.commerce.providers.base import CheckoutLink, PaymentEvent, PaymentProvider

log = logging.getLogger(__name__)

_EVENTS = {
    "paid": OrderEvent.PAY,
    "cancelled": OrderEvent.CANCEL,
    "expired": OrderEvent.EXPIRE,
    "failed": OrderEvent.CANCEL,
}


def make_provider(
    config: CommerceConfig, http: aiohttp.ClientSession, public_base: str
) -> PaymentProvider:
    """The configured provider, its settings validated by its own model."""
    from hub.commerce.providers import build_provider

    name = config.provider
    extra: dict[str, Any] = {}
    if name == "builtin":
        extra["public_base_url"] = public_base
    return build_provider(name, getattr(config, name), http, **extra)


class Checkout:
    def __init__(
        self,
        db: Database,
        shop: Shop,
        provider: PaymentProvider,
        public_base: str,
        max_body_bytes: int,
    ) -> None:
        self.db = db
        self.shop = shop
        self.provider = provider
        self.public_base = public_base
        self.max_body_bytes = max_body_bytes

    def webhook_url(self) -> str:
        return f"{self.public_base}/webhooks/payments/{self.provider.name}"

    @handles(kinds.CREATE_CHECKOUT, on_dead="on_dead")
    async def create(self, job: Job) -> Finish | None:
        """Create the link at the provider, then send it (as a short link)."""
        from hub.commerce.providers.base import CheckoutRequest

        order_id = job.payload["order_id"]
        found = await self.db.read(_order_and_customer, order_id)
        if found is None:
            raise PermanentFailure(_("the order no longer exists"))
        order, customer_name = found
        if order.checkout_url:
            return None
        base = self.public_base
        request = CheckoutRequest(
            order_id=order.id,
            order_number=self.shop.order_number(order),
            cart=Cart.from_json(order.cart),
            locale=self.shop.locale,
            customer_name=customer_name,
            success_url=f"{base}/checkout/{order.reference}/done",
            cancel_url=f"{base}/checkout/{order.reference}/cancelled",
            webhook_url=self.webhook_url(),
            reference=order.reference,
        )
        link = await self.provider.create_checkout(request)

        def finish(tx: Tx) -> None:
            self._send_link(tx, order_id, link)

        return finish

    def _send_link(self, tx: Tx, order_id: int, link: CheckoutLink) -> None:
        shop = self.shop
        row = tx.orm.get(Order, order_id)
        assert row is not None
        conv = tx.orm.get(Conversation, row.conversation_id)
        assert conv is not None
        code = commerce.create_short_link(tx, link.url, conv.id, row.id)
        row.checkout_url, row.provider_ref, row.short_code = link.url, link.provider_ref, code
        short = shop.short_url(code)
        amount = shop.money(Money(row.total_minor, row.currency))
        number = shop.order_number(row)
        text = shop.checkout_link_text(row, short)
        shop.tell_customer(tx, conv, text, f"checkout-link:{row.id}", sender_mxid=row.adviser_mxid)
        if conv.room_id:
            notices.notice(
                tx,
                conv.room_id,
                "🔗 "
                + _("Checkout link for order {number} ({amount}) sent: {link}").format(
                    number=number, amount=amount, link=short
                ),
                f"checkout-notice:{row.id}",
            )

    async def on_dead(self, job: Job, reason: str, code: str | None) -> None:
        await self.db.write(_no_link, job.payload["order_id"], reason)

    async def webhook(self, request: web.Request) -> web.Response:
        """POST /webhooks/payments/{provider}: verified by the provider, deduplicated by the
        provider's event id, applied through the order state machine."""
        from hub.commerce.providers.base import WebhookRejected

        if request.match_info["provider"] != self.provider.name:
            raise web.HTTPNotFound()
        raw = await read_body(request, self.max_body_bytes)
        try:
            events = await self.provider.parse_webhook(request.headers, raw)
        except WebhookRejected as exc:
            log.warning("payment webhook (%s) rejected: %s", self.provider.name, exc.reason)
            return web.json_response({"error": exc.reason}, status=exc.status)
        except ExternalError as exc:
            log.warning("payment webhook (%s) not processed yet: %s", self.provider.name, exc.human)
            return web.json_response({"error": exc.human}, status=503)
        await self.db.write(self._apply_all, events, urgent=True)
        # No events is fine too: authentic, but nothing to act on (e.g. a pending payment).
        return web.json_response({"received": len(events)})

    async def close(self) -> None:
        await self.provider.aclose()

    def _apply_all(self, tx: Tx, events: list[PaymentEvent]) -> None:
        for event in events:
            self._apply(tx, event)

    def _apply(self, tx: Tx, event: PaymentEvent) -> None:
        name = self.provider.name
        order = commerce.order_by_reference(tx, event.reference) if event.reference else None
        if order is None and event.provider_ref:
            order = commerce.order_by_provider_ref(tx, name, event.provider_ref)
        fresh = commerce.first_payment_event(
            tx, name, event.provider_event_id, order.id if order else None, event.kind
        )
        if not fresh:
            log.info("payment event %s redelivered; already processed", event.provider_event_id)
            return
        if order is None:
            log.warning("payment event %s matches no order", event.provider_event_id)
            return
        if event.provider_order_id:
            order.provider_order_id = event.provider_order_id
        detail = ""
        if event.amount is not None and (
            event.amount.minor != order.total_minor or event.amount.currency != order.currency
        ):
            detail = _("amount paid {amount} differs from the order").format(
                amount=self.shop.money(event.amount)
            )
        source = _("via {provider}").format(provider=name)
        try:
            self.shop.apply(tx, order, _EVENTS[event.kind], source=source, detail=detail)
        except InvalidTransition as exc:
            log.warning("payment event %s refused: %s", event.provider_event_id, exc)


def _order_and_customer(tx: Tx, order_id: int) -> tuple[Order, str | None] | None:
    order = tx.orm.get(Order, order_id)
    if order is None:
        return None
    identity = conversations.conversation_with_identity(tx, order.conversation_id)[1]
    return order, identity.display_name


def _no_link(tx: Tx, order_id: int, reason: str) -> None:
    order = tx.orm.get(Order, order_id)
    conv = tx.orm.get(Conversation, order.conversation_id) if order is not None else None
    if conv is not None and conv.room_id:
        notices.notice(
            tx,
            conv.room_id,
            "⚠️ " + _("No checkout link could be created: {reason}").format(reason=reason),
            f"checkout-failed:{order_id}",
        )
