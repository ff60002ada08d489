"""Stripe: a Checkout Session through the official SDK, reported back by signed webhooks.

The session is created with the SDK's async API (``StripeClient`` + ``AIOHTTPClient`` on the
hub's own aiohttp session), so no thread and no second connection pool are involved; the API
base is ``api_base_url`` (the loopback stand-in in tests). One line item per cart line with
``price_data`` (VAT-inclusive unit price, quantity), so Stripe charges exactly the cart total.
``client_reference_id`` and ``metadata.reference`` carry our reference. A fixed idempotency key
per order makes a job retry after a timeout return the session Stripe already created
instead of a second one.

Amounts: Stripe wants integers in *its* minor unit, which is not always ISO 4217's
(docs "Supported currencies", zero-decimal and special cases):
- zero-decimal currencies (JPY, KRW, ...) are sent in whole units;
- ISK is zero-decimal in ISO but two-decimal in the API ("100" is 1 krona), whole kronur only;
- three-decimal currencies (KWD, BHD, JOD, OMR, TND) must end in 0 (rounded to 10 fils);
- everything else has two decimals. An amount Stripe cannot take exactly is refused with a
  permanent error rather than rounded: the customer would pay something else than we said.

Webhooks are verified with the SDK (``StripeClient.construct_event``: ``Stripe-Signature``
``t=...,v1=...``, HMAC-SHA256 of "t.body", tolerance against replays). Events:
``checkout.session.completed`` with payment_status paid/no_payment_required -> "paid" (with
"unpaid", a delayed method such as SEPA debit: wait for ``async_payment_succeeded`` -> "paid"
or ``async_payment_failed`` -> "failed"); ``checkout.session.expired`` -> "expired".
Dedupe by Stripe's event id, which stays the same across Stripe's redeliveries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp
import stripe

from hub.commerce.money import Money, MoneyError
from hub.commerce.providers.base import (
    CheckoutLink,
    CheckoutRequest,
    PaymentEvent,
    PaymentKind,
    WebhookRejected,
    header,
    require_items,
)
from hub.commerce.providers.settings import StripeSettings
from hub.errors import ExternalError
from hub.i18n import _

log = logging.getLogger(__name__)

ZERO_DECIMAL = frozenset("BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF".split())
THREE_DECIMAL = frozenset("BHD JOD KWD OMR TND".split())
# Checkout's documented `locale` values (SDK SessionCreateParams); others fall back to "auto".
CHECKOUT_LOCALES = frozenset(
    "bg cs da de el en en-GB es es-419 et fi fil fr fr-CA hi-IN hr hu id it ja ko lt lv ms mt "
    "nb nl pl pt pt-BR ro ru sk sl sv th tr vi zh zh-HK zh-TW".split()
)


def stripe_exponent(currency: str) -> int:
    return 0 if currency in ZERO_DECIMAL else 3 if currency in THREE_DECIMAL else 2


def to_stripe_amount(money: Money) -> int:
    """``money`` in Stripe's integer unit; ExternalError (permanent) if not exactly possible."""
    shift = stripe_exponent(money.currency) - money.exponent
    if shift >= 0:
        amount = money.minor * 10**shift
    elif money.minor % 10**-shift:
        raise ExternalError(
            _("Stripe takes {currency} only in whole units; {amount} cannot be charged").format(
                currency=money.currency, amount=money
            ),
            permanent=True,
        )
    else:
        amount = money.minor // 10**-shift
    if money.currency in THREE_DECIMAL and amount % 10:
        raise ExternalError(
            _(
                "Stripe needs {currency} amounts rounded to 0.010 ({amount} is not); adjust the "
                "price in the catalogue"
            ).format(currency=money.currency, amount=money),
            permanent=True,
        )
    return int(amount)


def from_stripe_amount(amount: object, currency: object) -> Money | None:
    """Stripe's integer amount as Money, or None when it is missing or not exact."""
    if type(amount) is not int or not isinstance(currency, str):
        return None
    code = currency.upper()
    try:
        exponent = Money.zero(code).exponent
    except MoneyError:
        return None
    shift = stripe_exponent(code) - exponent
    if shift >= 0:
        if amount % 10**shift:
            return None
        return Money(amount // 10**shift, code)
    return Money(amount * 10**-shift, code)


def checkout_locale(locale: str) -> str:
    tag = locale.replace("_", "-")
    language = tag.split("-", 1)[0].lower()
    return tag if tag in CHECKOUT_LOCALES else language if language in CHECKOUT_LOCALES else "auto"


def session_params(req: CheckoutRequest) -> dict[str, Any]:
    """The documented Checkout Session parameters for ``req`` (mode "payment")."""
    require_items(req)
    currency = req.cart.currency.lower()
    metadata = {
        "reference": req.reference,
        "order_id": str(req.order_id),
        "order_number": req.order_number,
    }
    return {
        "mode": "payment",
        "line_items": [
            {
                "price_data": {
                    "currency": currency,
                    "unit_amount": to_stripe_amount(line.unit_price),
                    "product_data": {"name": line.name[:250], "metadata": {"sku": line.sku}},
                },
                "quantity": line.quantity,
            }
            for line in req.cart.lines
        ],
        "success_url": req.success_url,
        "cancel_url": req.cancel_url,
        "client_reference_id": req.reference,
        "metadata": metadata,
        "payment_intent_data": {"metadata": metadata},
        "locale": checkout_locale(req.locale),
    }


def events_from_stripe_event(event: Mapping[str, Any]) -> list[PaymentEvent]:
    """The payment events one verified Stripe event stands for (none, or one)."""
    etype = event.get("type")
    data = event.get("data")
    session = data.get("object") if isinstance(data, Mapping) else None
    if not isinstance(session, Mapping) or session.get("object") != "checkout.session":
        return []
    kind: PaymentKind | None = None
    if etype == "checkout.session.completed":
        paid = session.get("payment_status") in ("paid", "no_payment_required")
        kind = "paid" if paid else None  # "unpaid": a delayed method reports later
    elif etype == "checkout.session.async_payment_succeeded":
        kind = "paid"
    elif etype == "checkout.session.async_payment_failed":
        kind = "failed"
    elif etype == "checkout.session.expired":
        kind = "expired"
    if kind is None:
        log.info("stripe event %s (%s) needs no action", event.get("id"), etype)
        return []
    metadata = session.get("metadata")
    reference = session.get("client_reference_id") or (
        metadata.get("reference") if isinstance(metadata, Mapping) else None
    )
    return [
        PaymentEvent(
            provider_event_id=str(event.get("id")),
            reference=str(reference) if reference else None,
            provider_ref=str(session.get("id")) if session.get("id") else None,
            kind=kind,
            amount=from_stripe_amount(session.get("amount_total"), session.get("currency")),
        )
    ]


# --- the provider -----------------------------------------------------------------------------


class StripeProvider:
    name = "stripe"

    def __init__(self, settings: StripeSettings, http: aiohttp.ClientSession) -> None:
        self.settings = settings
        timeout = aiohttp.ClientTimeout(total=settings.request_timeout_seconds)
        self._client = stripe.StripeClient(
            settings.secret_key,
            base_addresses={"api": settings.api_base_url},
            http_client=stripe.AIOHTTPClient(session=http, timeout=timeout),
            max_network_retries=settings.max_network_retries,
        )
        # Outer bound over the SDK's attempts and back-off sleeps.
        attempts = settings.max_network_retries + 1
        self._deadline = settings.request_timeout_seconds * attempts + 2.0 * attempts

    async def create_checkout(self, req: CheckoutRequest) -> CheckoutLink:
        params = session_params(req)
        options: stripe.RequestOptions = {"idempotency_key": f"hub-checkout-{req.reference}"}
        try:
            async with asyncio.timeout(self._deadline):
                session = await self._client.v1.checkout.sessions.create_async(
                    params=params,  # type: ignore[arg-type]
                    options=options,
                )
        except TimeoutError as exc:
            raise ExternalError(
                _("Stripe did not answer in time; the link will be retried"), permanent=False
            ) from exc
        except stripe.StripeError as exc:
            raise _provider_error(exc) from exc
        if not session.url:
            raise ExternalError(_("Stripe created a session without a URL"), permanent=True)
        log.info("stripe checkout session %s created for %s", session.id, req.reference)
        return CheckoutLink(url=str(session.url), provider_ref=str(session.id))

    async def parse_webhook(self, headers: Mapping[str, str], raw: bytes) -> list[PaymentEvent]:
        signature = header(headers, "Stripe-Signature")
        if not signature:
            raise WebhookRejected(401, "Stripe-Signature is missing")
        try:
            event = self._client.construct_event(
                raw,
                signature,
                self.settings.webhook_secret,
                tolerance=self.settings.signature_tolerance_seconds,
            )
        except stripe.SignatureVerificationError as exc:
            raise WebhookRejected(403, f"Stripe-Signature rejected: {exc.user_message}") from exc
        except ValueError as exc:  # not UTF-8 / not JSON / not an event (after the signature)
            raise WebhookRejected(400, f"not a Stripe event: {type(exc).__name__}") from exc
        return events_from_stripe_event(event.to_dict())

    async def aclose(self) -> None:
        # The HTTP session is the hub's (closed by the hub); the SDK holds nothing else.
        return None


def _provider_error(exc: stripe.StripeError) -> ExternalError:
    status = exc.http_status or 0
    detail = f"{type(exc).__name__} ({status}, request {exc.request_id}): {exc.user_message}"
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        return ExternalError(
            _("Stripe refused the API key (commerce.stripe.secret_key)"),
            permanent=True,
            detail=detail,
        )
    if isinstance(exc, stripe.RateLimitError | stripe.APIConnectionError) or status >= 500:
        return ExternalError(
            _("Stripe is not reachable right now; the link will be retried"),
            permanent=False,
            detail=detail,
        )
    return ExternalError(
        _("Stripe refused the checkout: {error}").format(
            error=exc.user_message or type(exc).__name__
        ),
        permanent=True,
        detail=detail,
    )
