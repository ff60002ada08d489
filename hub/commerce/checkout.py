"""Checkout links (the "commerce.checkout" job) and payment webhooks, behind the one
PaymentProvider protocol of hub.commerce.providers."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from hub.commerce.cart import Cart
from hub.commerce.money import Money
from hub.commerce.orders import InvalidTransition, OrderEvent
from hub.commerce.service import fill
from hub.core.bot import enqueue_notice
from hub.core.outbox import Finish, Job, PermanentFailure, RetryLater
from hub.db import commerce_repo
from hub.db.models import ChannelIdentity, Conversation, Order
from hub.net import read_body

if TYPE_CHECKING:
    from hub.commerce.providers.base import PaymentEvent, PaymentProvider
    from hub.hub import Hub

log = logging.getLogger(__name__)

_EVENTS = {
    "paid": OrderEvent.PAY,
    "cancelled": OrderEvent.CANCEL,
    "expired": OrderEvent.EXPIRE,
    "failed": OrderEvent.CANCEL,
}


def make_provider(hub: Hub) -> PaymentProvider:
    """The configured provider, its settings validated by its own model."""
    from hub.commerce.providers import build_provider

    name = hub.config.commerce.provider
    extra: dict[str, Any] = {}
    if name == "builtin":
        extra["public_base_url"] = hub.config.http.public_base
    return build_provider(name, getattr(hub.config.commerce, name), hub.http, **extra)


class Checkout:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.provider = make_provider(hub)

    def webhook_url(self) -> str:
        return f"{self.hub.config.http.public_base}/webhooks/payments/{self.provider.name}"

    async def create(self, job: Job) -> Finish | None:
        """commerce.checkout: create the link at the provider, then send it (short link)."""
        from hub.commerce.providers.base import CheckoutRequest, ExternalError

        hub, shop = self.hub, self.hub.shop
        async with hub.sessions() as s:
            order = await s.get(Order, job.payload["order_id"])
            if order is None:
                raise PermanentFailure("the order no longer exists")
            if order.checkout_url:
                return None
            conversation = await s.get(Conversation, order.conversation_id)
            assert conversation is not None
            identity = await s.get(ChannelIdentity, conversation.identity_id)
        base = hub.config.http.public_base
        request = CheckoutRequest(
            order_id=order.id,
            order_number=shop.order_number(order),
            cart=Cart.from_json(order.cart),
            locale=shop.locale,
            customer_name=identity.display_name if identity else None,
            success_url=f"{base}/checkout/{order.reference}/done",
            cancel_url=f"{base}/checkout/{order.reference}/cancelled",
            webhook_url=self.webhook_url(),
            reference=order.reference,
        )
        try:
            link = await self.provider.create_checkout(request)
        except ExternalError as exc:
            if exc.permanent:
                raise PermanentFailure(exc.human) from exc
            raise RetryLater(exc.human, exc.retry_after) from exc

        async def finish(s: AsyncSession) -> None:
            row = await s.get(Order, order.id)
            conv = await s.get(Conversation, order.conversation_id)
            assert row is not None and conv is not None
            code = await commerce_repo.create_short_link(s, link.url, conv.id, row.id)
            row.checkout_url, row.provider_ref, row.short_code = link.url, link.provider_ref, code
            short = shop.short_url(code)
            amount = shop.money(Money(row.total_minor, row.currency))
            text = fill(
                hub.config.commerce.texts.checkout_link,
                amount=amount,
                link=short,
                number=shop.order_number(row),
            )
            await shop.tell_customer(
                s, conv, text, f"checkout-link:{row.id}", sender_mxid=row.adviser_mxid
            )
            if conv.room_id:
                await enqueue_notice(
                    s,
                    conv.room_id,
                    f"🔗 Checkout link for order {shop.order_number(row)} ({amount}) sent: {short}",
                    f"checkout-notice:{row.id}",
                )

        return finish

    async def on_dead(self, job: Job, reason: str, code: str | None) -> None:
        async with self.hub.sessions.begin() as s:
            order = await s.get(Order, job.payload["order_id"])
            conv = order and await s.get(Conversation, order.conversation_id)
            if conv is not None and conv.room_id:
                await enqueue_notice(
                    s,
                    conv.room_id,
                    f"⚠️ No checkout link could be created: {reason}",
                    f"checkout-failed:{job.payload['order_id']}",
                )
        self.hub.worker.wake()

    async def webhook(self, request: web.Request) -> web.Response:
        """POST /webhooks/payments/{provider}: verified by the provider, deduplicated by the
        provider's event id, applied through the order state machine."""
        from hub.commerce.providers.base import ExternalError, WebhookRejected

        if request.match_info["provider"] != self.provider.name:
            raise web.HTTPNotFound()
        raw = await read_body(request, self.hub.config.http.max_body_bytes)
        try:
            events = await self.provider.parse_webhook(request.headers, raw)
        except WebhookRejected as exc:
            log.warning("payment webhook (%s) rejected: %s", self.provider.name, exc.reason)
            return web.json_response({"error": exc.reason}, status=exc.status)
        except ExternalError as exc:
            log.warning("payment webhook (%s) not processed yet: %s", self.provider.name, exc.human)
            return web.json_response({"error": exc.human}, status=503)
        async with self.hub.sessions.begin() as s:
            for event in events:
                await self._apply(s, event)
        self.hub.worker.wake()
        # No events is fine too: authentic, but nothing to act on (e.g. a pending payment).
        return web.json_response({"received": len(events)})

    async def close(self) -> None:
        await self.provider.aclose()

    async def _apply(self, s: AsyncSession, event: PaymentEvent) -> None:
        order = None
        if event.reference:
            order = await commerce_repo.order_by_reference(s, event.reference)
        if order is None and event.provider_ref:
            order = await commerce_repo.order_by_provider_ref(
                s, self.provider.name, event.provider_ref
            )
        fresh = await commerce_repo.first_payment_event(
            s, self.provider.name, event.provider_event_id, order.id if order else None, event.kind
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
            detail = f"amount paid {self.hub.shop.money(event.amount)} differs from the order"
        try:
            await self.hub.shop.apply(
                s, order, _EVENTS[event.kind], source=f"via {self.provider.name}", detail=detail
            )
        except InvalidTransition as exc:
            log.warning("payment event %s refused: %s", event.provider_event_id, exc)
