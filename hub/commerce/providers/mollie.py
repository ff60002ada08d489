"""Mollie: a payment through the official SDK; its webhook only names the payment, so the
status is fetched from Mollie before anything is believed.

Create (docs "Create payment", POST /v2/payments): ``amount`` as ``{"currency", "value"}`` with
the value as a string with exactly the currency's decimals ("84.50", "1000" for JPY),
``description``, ``redirectUrl``/``cancelUrl`` (hub pages), ``webhookUrl`` (the hub), and
``metadata`` with our reference. The customer is sent to ``_links.checkout.href``. Mollie picks
the checkout language from the customer's browser, so no locale is sent. An idempotency key
per order makes a job retry return the payment Mollie already created.

Webhook (docs "Webhooks"): a form POST ``id=tr_...`` with no signature, by design: the body is
not trusted, only the id. We GET the payment with our API key and map its status:
paid -> "paid", canceled -> "cancelled", expired -> "expired", failed -> "failed";
open/pending/authorized -> no event yet. Dedupe id ``<payment id>:<status>``, since Mollie calls
again for later changes of the same payment (a refund leaves it "paid": same id, no repeat).
A fetch that fails for a passing reason raises ExternalError (transient): the handler answers
5xx and Mollie retries the webhook later.

The SDK is synchronous (requests), so every call runs in a small thread pool owned by the
provider, bounded by the SDK's own connect/read timeouts and an outer asyncio timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs

from mollie.api.client import Client
from mollie.api.error import (
    Error as MollieError,
)
from mollie.api.error import (
    NotFoundError,
    RequestError,
    RequestSetupError,
    ResponseError,
    ResponseHandlingError,
    UnauthorizedError,
)

from hub.commerce.providers.base import (
    CheckoutLink,
    CheckoutRequest,
    PaymentEvent,
    PaymentKind,
    WebhookRejected,
    lines_summary,
    major_units_text,
    money_from_text,
    require_items,
)
from hub.commerce.providers.settings import MollieSettings
from hub.errors import ExternalError
from hub.i18n import _

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)

T = TypeVar("T")
_STATUS: Mapping[str, PaymentKind] = {
    "paid": "paid",
    "canceled": "cancelled",
    "expired": "expired",
    "failed": "failed",
}
_PAYMENT_ID_RE = re.compile(r"tr_[A-Za-z0-9]{1,64}")


def payment_body(settings: MollieSettings, req: CheckoutRequest) -> dict[str, Any]:
    require_items(req)
    description = settings.description.replace("{order_number}", req.order_number).replace(
        "{items}", lines_summary(req.cart)
    )
    return {
        "amount": {"currency": req.cart.currency, "value": major_units_text(req.cart.total)},
        "description": description[:255],
        "redirectUrl": req.success_url,
        "cancelUrl": req.cancel_url,
        "webhookUrl": req.webhook_url,
        "metadata": {
            "reference": req.reference,
            "order_id": req.order_id,
            "order_number": req.order_number,
        },
    }


def _reference(metadata: object) -> str | None:
    # Mollie returns metadata as sent; older integrations stored a JSON string.
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except ValueError:
            return None
    if isinstance(metadata, Mapping) and metadata.get("reference") is not None:
        return str(metadata["reference"])
    return None


def events_from_payment(payment: Mapping[str, Any]) -> list[PaymentEvent]:
    """The event a fetched payment stands for (none while it is open or pending)."""
    status = str(payment.get("status") or "")
    kind = _STATUS.get(status)
    if kind is None:
        log.info("mollie payment %s is %r; no event yet", payment.get("id"), status)
        return []
    amount = payment.get("amount")
    return [
        PaymentEvent(
            provider_event_id=f"{payment.get('id')}:{status}",
            reference=_reference(payment.get("metadata")),
            provider_ref=str(payment.get("id")),
            kind=kind,
            amount=money_from_text(amount.get("value"), amount.get("currency"))
            if isinstance(amount, Mapping)
            else None,
        )
    ]


def payment_id_from_form(raw: bytes) -> str:
    """The ``id`` of Mollie's webhook form body, or WebhookRejected(400)."""
    try:
        form = parse_qs(raw.decode("ascii"), strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        raise WebhookRejected(400, "body is not a form with an id") from None
    ids = form.get("id") or []
    if len(ids) != 1 or not _PAYMENT_ID_RE.fullmatch(ids[0]):
        raise WebhookRejected(400, "no payment id (tr_...) in the body")
    return ids[0]


# --- the provider -----------------------------------------------------------------------------


class MollieProvider:
    name = "mollie"

    def __init__(self, settings: MollieSettings, http: aiohttp.ClientSession) -> None:
        # `http` is unused: the SDK brings its own requests session (in the pool's threads).
        self.settings = settings
        timeout = settings.request_timeout_seconds
        # requests takes float (connect, read) timeouts; the SDK's hint says int.
        self._client = Client(
            api_endpoint=settings.api_base_url,
            timeout=(min(5.0, timeout), timeout),  # type: ignore[arg-type]
            retry=1,
        )
        self._client.set_api_key(settings.api_key)
        self._client.set_user_agent_component("MatrixCommerceHub", "1")
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="mollie")
        # connect + read per attempt, one connect retry, a little slack for the thread hop.
        self._deadline = 2 * (min(5.0, timeout) + timeout) + 1.0

    async def _call(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(loop.run_in_executor(self._pool, fn), self._deadline)

    async def create_checkout(self, req: CheckoutRequest) -> CheckoutLink:
        body = payment_body(self.settings, req)
        key = f"hub-checkout-{req.reference}"
        try:
            payment = await self._call(
                lambda: self._client.payments.create(body, idempotency_key=key)
            )
        except (MollieError, TimeoutError) as exc:
            raise _provider_error(exc, "create the payment") from exc
        url = payment.checkout_url
        if not url:
            raise ExternalError(
                _("Mollie created a payment without a checkout link"), permanent=True
            )
        log.info("mollie payment %s created for %s", payment.id, req.reference)
        return CheckoutLink(url=str(url), provider_ref=str(payment.id))

    async def parse_webhook(self, headers: Mapping[str, str], raw: bytes) -> list[PaymentEvent]:
        payment_id = payment_id_from_form(raw)
        try:
            payment = await self._call(lambda: self._client.payments.get(payment_id))
        except NotFoundError as exc:
            raise WebhookRejected(400, f"Mollie knows no payment {payment_id}") from exc
        except (MollieError, TimeoutError) as exc:
            raise _provider_error(exc, f"fetch payment {payment_id}") from exc
        return events_from_payment(payment)

    async def aclose(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        client_session = getattr(self._client, "_client", None)
        if client_session is not None:
            client_session.close()


def _provider_error(exc: BaseException, action: str) -> ExternalError:
    detail = f"mollie: could not {action}: {type(exc).__name__}: {exc}"
    if isinstance(exc, UnauthorizedError | RequestSetupError):
        return ExternalError(
            _("Mollie refused the API key (commerce.mollie.api_key)"),
            permanent=True,
            detail=detail,
        )
    if isinstance(exc, TimeoutError | RequestError | ResponseHandlingError):
        return ExternalError(
            _("Mollie is not reachable right now; it will be retried"),
            permanent=False,
            detail=detail,
        )
    status = getattr(exc, "status", None) if isinstance(exc, ResponseError) else None
    if isinstance(status, int) and (status == 429 or status >= 500):
        return ExternalError(
            _("Mollie is busy; it will be retried"), permanent=False, detail=detail
        )
    field = getattr(exc, "field", None)
    if field:
        human = _("Mollie refused the payment ({field}): {error}").format(field=field, error=exc)
    else:
        human = _("Mollie refused the payment: {error}").format(error=exc)
    return ExternalError(human, permanent=True, detail=detail)
