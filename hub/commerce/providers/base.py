"""The one protocol every payment provider implements, and the helpers they share.

A provider turns a cart into a link the customer opens (``create_checkout``) and turns the
provider's webhook deliveries into PaymentEvents (``parse_webhook``). Everything else (orders,
dedupe, messages, short links) is the hub's and never depends on which provider is configured.

Errors come in two kinds, both with text for humans:
- ExternalError (hub.errors): creating a checkout failed. ``human`` is shown to the adviser;
  ``permanent`` tells the job queue whether retrying can help; ``retry_after`` honours the
  provider's back-off. Secrets never appear in either text.
- WebhookRejected: a delivery is not authentic or not readable. The handler answers ``status``
  (400 malformed, 401 unsigned, 403 forged) and logs ``reason``; nothing is processed.

Helpers here are pure (no I/O) so the mapping of each provider stays testable with payloads
copied from its documentation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Protocol, runtime_checkable

from hub.commerce.cart import Cart
from hub.commerce.money import Money, MoneyError, currency_exponent, parse_money
from hub.errors import ExternalError
from hub.i18n import _

PaymentKind = Literal["paid", "cancelled", "expired", "failed"]


@dataclass(frozen=True)
class CheckoutRequest:
    order_id: int  # hub order id
    order_number: str  # shown to humans, e.g. "0042"
    cart: Cart
    locale: str  # shop locale, e.g. "de_DE"
    customer_name: str | None
    success_url: str  # where the provider sends the customer after paying (hub URL)
    cancel_url: str
    webhook_url: str  # the hub's webhook URL for this provider
    reference: str  # opaque hub reference the provider echoes back in its metadata


@dataclass(frozen=True)
class CheckoutLink:
    url: str  # the real checkout URL (the hub wraps it in a short link)
    provider_ref: str  # session id / payment id / order id; "" when the provider has none


@dataclass(frozen=True)
class PaymentEvent:
    provider_event_id: str  # dedupe key, unique per provider
    reference: str | None  # our CheckoutRequest.reference when the provider echoes it
    provider_ref: str | None  # session/payment/order id at the provider
    kind: PaymentKind
    amount: Money | None
    provider_order_id: str | None = None  # e.g. Shopify order name, shown to advisers


def require_items(req: CheckoutRequest) -> None:
    """Every provider refuses an empty cart the same way (!pay refuses it first)."""
    if req.cart.is_empty:
        raise ExternalError(_("the cart is empty; add products before !pay"), permanent=True)


class WebhookRejected(Exception):
    """A webhook delivery is refused: answer ``status`` and process nothing."""

    def __init__(self, status: Literal[400, 401, 403], reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


@runtime_checkable
class PaymentProvider(Protocol):
    name: str  # "stripe", "mollie", "shopify", "woocommerce", "builtin"

    async def create_checkout(self, req: CheckoutRequest) -> CheckoutLink:
        """The link for the customer; raises ExternalError."""
        ...

    async def parse_webhook(self, headers: Mapping[str, str], raw: bytes) -> list[PaymentEvent]:
        """Verify first (constant time), then map; raises WebhookRejected. An empty list means
        "authentic, nothing to do" (a ping, a status we do not act on): answer 200."""
        ...

    async def aclose(self) -> None:
        """Release what the provider holds (thread pools, SDK sessions) at shutdown."""
        ...


# --- shared helpers (pure) --------------------------------------------------------------------


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by name, ignoring case: aiohttp's CIMultiDict already does, a plain dict from a
    test or another framework does not."""
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lowered), None)


def hmac_sha256_base64_matches(secret: str, raw: bytes, signature: str | None) -> bool:
    """True if ``signature`` is base64(HMAC-SHA256(raw, secret)), compared in constant time.

    Shopify (X-Shopify-Hmac-Sha256) and WooCommerce (X-WC-Webhook-Signature) both sign this
    way. The comparison runs on the decoded bytes so base64 padding quirks cannot matter, and a
    header that is not base64 at all is simply a mismatch.
    """
    if not signature or not secret:
        return False
    expected = hmac.new(secret.encode(), raw, hashlib.sha256).digest()
    try:
        given = base64.b64decode(signature.strip(), validate=True)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(given, expected)


def json_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object or WebhookRejected(400) (malformed, not an object, bad UTF-8).

    Only called after the signature matched, so a 400 here is a provider bug, not an attack.
    """
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise WebhookRejected(400, "body is not JSON") from None
    if not isinstance(doc, dict):
        raise WebhookRejected(400, "body is not a JSON object")
    return doc


def money_from_text(value: object, currency: object) -> Money | None:
    """An amount a provider reports as decimal text ("84.50", "1000.00" for JPY) or None.

    Providers print trailing zeros even for zero-decimal currencies, so the text goes through
    Decimal (exact) rather than parse_money's strict text rule; a value that is not an exact
    amount of the currency gives None: the event still counts, the amount is just not shown.
    """
    if not isinstance(value, str | int) or isinstance(value, bool) or not isinstance(currency, str):
        return None
    try:
        return parse_money(Decimal(str(value).strip()), currency.strip().upper())
    except (InvalidOperation, MoneyError, TypeError, ValueError):
        return None


def major_units_text(money: Money) -> str:
    """ "12.50" for 1250 EUR cents, "1000" for JPY, "1.250" for KWD: the decimal string with
    exactly the currency's digits, as Mollie and WooCommerce expect."""
    exponent = currency_exponent(money.currency)
    return f"{money.amount:.{exponent}f}"


def lines_summary(cart: Cart, limit: int = 200) -> str:
    """ "2 × Lasur Eiche, 1 × Pinsel" cut to ``limit`` characters, for descriptions."""
    text = ", ".join(f"{line.quantity} × {line.name}" for line in cart.lines)
    return text if len(text) <= limit else text[: limit - 1] + "…"
