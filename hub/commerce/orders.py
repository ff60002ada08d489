"""The order life cycle as a pure state machine, plus order numbers for humans.

    pending ──pay──► paid ──ship──► shipped ──deliver──► delivered
       │              │  └─────────deliver─────────────►    (pickup, digital goods)
       ├──cancel──► cancelled ◄──cancel── paid
       └──expire──► expired

That is an order paid before its goods go out (``PaymentTerms.PREPAID``: every online checkout,
prepayment by bank transfer). An order placed on invoice (``PaymentTerms.INVOICE``, "Rechnung")
is paid after the goods went out, with the invoice that came with them, so it may also be
shipped or delivered while pending, and its payment may arrive in any of these statuses:

    pending ──ship──► shipped ──deliver──► delivered      (the invoice is still open)
       └──deliver──────────────────────►
    shipped/delivered ──pay──► the same status, the invoice paid (``paid`` becomes True)

The status says where the goods are; whether an invoice order is paid is the separate
``paid`` flag (the order's ``paid_at``). For a prepaid order the status says both.

Payment providers redeliver webhooks, and a late "paid" can arrive after an adviser already
marked the parcel shipped. Such repeats must change nothing and send nothing twice, so handlers
ask ``is_repeat`` first (skip side effects) and ``transition`` returns the current status for a
repeat instead of raising. Everything else outside the table raises InvalidTransition, whose
message is meant for the adviser ("order 42 is already delivered; it cannot be cancelled").
``decide`` answers all of it at once (the new status, whether this event is the payment,
whether it is a repeat) for handlers that need more than the status.

Shipped orders cannot be cancelled here: after shipping it is a return, which needs its own flow.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from hub.errors import UserError
from hub.i18n import N_, _


class OrderStatus(StrEnum):
    PENDING = "pending"
    PAID = "paid"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class OrderEvent(StrEnum):
    PAY = "pay"
    SHIP = "ship"
    DELIVER = "deliver"
    CANCEL = "cancel"
    EXPIRE = "expire"


class PaymentTerms(StrEnum):
    """When the customer pays: before the goods go out, or after (on invoice)."""

    PREPAID = "prepaid"
    INVOICE = "invoice"


S, E = OrderStatus, OrderEvent

TRANSITIONS: Mapping[tuple[OrderStatus, OrderEvent], OrderStatus] = MappingProxyType(
    {
        (S.PENDING, E.PAY): S.PAID,
        (S.PENDING, E.CANCEL): S.CANCELLED,
        (S.PENDING, E.EXPIRE): S.EXPIRED,
        (S.PAID, E.SHIP): S.SHIPPED,
        (S.PAID, E.DELIVER): S.DELIVERED,
        (S.PAID, E.CANCEL): S.CANCELLED,
        (S.SHIPPED, E.DELIVER): S.DELIVERED,
    }
)

# For each event but "pay", the statuses in which it has already taken effect. "pay" is done
# once the order is paid (is_paid): for a prepaid order that is paid, shipped or delivered, so a
# redelivered payment webhook is a harmless repeat.
_ALREADY: Mapping[OrderEvent, frozenset[OrderStatus]] = MappingProxyType(
    {
        E.SHIP: frozenset({S.SHIPPED, S.DELIVERED}),
        E.DELIVER: frozenset({S.DELIVERED}),
        E.CANCEL: frozenset({S.CANCELLED}),
        E.EXPIRE: frozenset({S.EXPIRED}),
    }
)

# On invoice the goods go out first: shipping and delivering need no payment, and the payment
# of a shipped or delivered order keeps its status (it only marks the invoice paid).
INVOICE_TRANSITIONS: Mapping[tuple[OrderStatus, OrderEvent], OrderStatus] = MappingProxyType(
    {
        **TRANSITIONS,
        (S.PENDING, E.SHIP): S.SHIPPED,
        (S.PENDING, E.DELIVER): S.DELIVERED,
        (S.SHIPPED, E.PAY): S.SHIPPED,
        (S.DELIVERED, E.PAY): S.DELIVERED,
    }
)
_TABLES: Mapping[PaymentTerms, Mapping[tuple[OrderStatus, OrderEvent], OrderStatus]] = (
    MappingProxyType({PaymentTerms.PREPAID: TRANSITIONS, PaymentTerms.INVOICE: INVOICE_TRANSITIONS})
)
# Statuses that need money received, whatever the terms.
PAID_STATUSES = frozenset({S.PAID})

TERMINAL = frozenset({S.DELIVERED, S.CANCELLED, S.EXPIRED})
_GIVEN_UP = frozenset({S.CANCELLED, S.EXPIRED})

# Words an adviser may type in "!order 42 shipped" (and provider vocabulary) -> event.
_WORDS: Mapping[str, OrderEvent] = MappingProxyType(
    {
        "pay": E.PAY,
        "paid": E.PAY,
        "ship": E.SHIP,
        "shipped": E.SHIP,
        "deliver": E.DELIVER,
        "delivered": E.DELIVER,
        "cancel": E.CANCEL,
        "cancelled": E.CANCEL,
        "canceled": E.CANCEL,
        "expire": E.EXPIRE,
        "expired": E.EXPIRE,
    }
)

# A status as advisers read it ("Order 0042 is now shipped").
STATUS_LABELS: Mapping[OrderStatus, str] = MappingProxyType(
    {
        S.PENDING: N_("pending"),
        S.PAID: N_("paid"),
        S.SHIPPED: N_("shipped"),
        S.DELIVERED: N_("delivered"),
        S.CANCELLED: N_("cancelled"),
        S.EXPIRED: N_("expired"),
    }
)

# How the refusal reads: "order 42 <state phrase>; <refusal>".
_STATE_PHRASE: Mapping[OrderStatus, str] = MappingProxyType(
    {
        S.PENDING: N_("{subject} is not paid yet"),
        S.PAID: N_("{subject} is already paid"),
        S.SHIPPED: N_("{subject} has already been shipped"),
        S.DELIVERED: N_("{subject} is already delivered"),
        S.CANCELLED: N_("{subject} was cancelled"),
        S.EXPIRED: N_("{subject} has expired"),
    }
)
_EVENT_PHRASE: Mapping[OrderEvent, str] = MappingProxyType(
    {
        E.PAY: N_("it cannot be paid"),
        E.SHIP: N_("it cannot be shipped"),
        E.DELIVER: N_("it cannot be marked delivered"),
        E.CANCEL: N_("it cannot be cancelled"),
        E.EXPIRE: N_("it cannot expire"),
    }
)


def status_label(status: OrderStatus) -> str:
    """ "shipped" / "versandt": an order status in the shop's language."""
    return _(STATUS_LABELS[OrderStatus(status)])


class InvalidTransition(UserError):
    """The event does not apply to the order's status; the message is for the adviser."""

    def __init__(self, status: OrderStatus, event: OrderEvent, order: str | int | None) -> None:
        self.status, self.event, self.order = status, event, order
        # TRANSLATORS: the subject starts the sentence: "order 42 is already paid; ..."
        subject = _("order {number}").format(number=order) if order is not None else _("the order")
        state = _(_STATE_PHRASE[status]).format(subject=subject)
        message = state + "; " + _(_EVENT_PHRASE[event])
        if event is E.PAY and status in (S.CANCELLED, S.EXPIRED):
            # Money arrived for an order we gave up on: someone must refund or revive it by hand.
            message += " " + _("(a payment arrived anyway: check it and refund or fulfil by hand)")
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Decision:
    """What an event does to an order (see ``decide``)."""

    status: OrderStatus  # the status afterwards (the same one for a repeat)
    paid: bool  # whether the order is paid afterwards
    repeat: bool  # the event had already taken effect: change nothing, send nothing
    payment: bool  # this event is the order's payment (record it, thank the customer)


def is_paid(status: OrderStatus, terms: PaymentTerms, paid: bool = False) -> bool:
    """Whether the money is in: ``paid`` (the order's paid_at is set) or, for a prepaid order,
    a status only reached by paying (paid, shipped, delivered)."""
    status = OrderStatus(status)
    if paid or status in PAID_STATUSES:
        return True
    return PaymentTerms(terms) is PaymentTerms.PREPAID and status in (S.SHIPPED, S.DELIVERED)


def decide(
    status: OrderStatus,
    event: OrderEvent,
    *,
    terms: PaymentTerms = PaymentTerms.PREPAID,
    paid: bool = False,
    order: str | int | None = None,
) -> Decision:
    """The outcome of ``event`` for an order in ``status`` with these payment ``terms``;
    ``paid``: the order's payment is recorded (its paid_at). InvalidTransition when the event
    does not apply; ``order`` (the order number) only makes its message specific."""
    status, event, terms = OrderStatus(status), OrderEvent(event), PaymentTerms(terms)
    was_paid = is_paid(status, terms, paid)
    if is_repeat(status, event, terms=terms, paid=paid):
        return Decision(status, was_paid, repeat=True, payment=False)
    try:
        after = _TABLES[terms][(status, event)]
    except KeyError:
        raise InvalidTransition(status, event, order) from None
    payment = event is E.PAY
    return Decision(after, was_paid or payment, repeat=False, payment=payment)


def is_repeat(
    status: OrderStatus,
    event: OrderEvent,
    *,
    terms: PaymentTerms = PaymentTerms.PREPAID,
    paid: bool = False,
) -> bool:
    """True if ``event`` has already taken effect (a redelivered webhook, a double command).
    On invoice a shipped or delivered order is not paid by being there: its payment is a
    repeat only once ``paid``."""
    status, event = OrderStatus(status), OrderEvent(event)
    if event is E.PAY:
        # Money for a cancelled or expired order is never "as expected": someone must look.
        return status not in _GIVEN_UP and is_paid(status, PaymentTerms(terms), paid)
    return status in _ALREADY[event]


def transition(
    status: OrderStatus,
    event: OrderEvent,
    *,
    order: str | int | None = None,
    terms: PaymentTerms = PaymentTerms.PREPAID,
    paid: bool = False,
) -> OrderStatus:
    """The status after ``event``; a repeat returns ``status`` unchanged.

    ``order`` (the order number) only makes the error message specific.
    """
    return decide(status, event, terms=terms, paid=paid, order=order).status


def allowed_events(
    status: OrderStatus, terms: PaymentTerms = PaymentTerms.PREPAID, paid: bool = False
) -> frozenset[OrderEvent]:
    """Events that would change the order (for buttons, help text and the dashboard)."""
    status, terms = OrderStatus(status), PaymentTerms(terms)
    return frozenset(
        event
        for (state, event) in _TABLES[terms]
        if state == status and not is_repeat(status, event, terms=terms, paid=paid)
    )


def event_from_word(word: str) -> OrderEvent:
    """ "shipped", "Delivered", "canceled" ... -> the event; ValueError naming the choices."""
    try:
        return _WORDS[word.strip().lower()]
    except KeyError:
        raise ValueError(
            _("'{word}' is not an order update; use shipped, delivered or cancelled").format(
                word=word
            )
        ) from None


# --- order numbers ----------------------------------------------------------------------------


def format_order_number(order_id: int, *, prefix: str = "", width: int = 4) -> str:
    """The number customers and advisers see: ``format_order_number(42) == "0042"``.

    Zero-padding to a minimum width makes numbers look alike in a list and avoids "order 7"
    being mistaken for a quantity; ``prefix`` (e.g. "SHOP-") tells shops' systems apart.
    """
    if type(order_id) is not int or order_id < 1:
        raise ValueError(f"order ids are positive integers, not {order_id!r}")
    return f"{prefix}{order_id:0{width}d}"


def parse_order_number(text: str, *, prefix: str = "") -> int:
    """Read what an adviser typed ("42", "0042", "#42", "SHOP-0042") back into the order id."""
    raw = text.strip().lstrip("#")
    if prefix and raw.upper().startswith(prefix.upper()):
        raw = raw[len(prefix) :]
    if not re.fullmatch(r"[0-9]{1,18}", raw) or int(raw) < 1:
        raise ValueError(_("'{text}' is not an order number").format(text=text.strip()))
    return int(raw)
