"""The order life cycle as a pure state machine, plus order numbers for humans.

    pending ──pay──► paid ──ship──► shipped ──deliver──► delivered
       │              │  └─────────deliver─────────────►    (pickup, digital goods)
       ├──cancel──► cancelled ◄──cancel── paid
       └──expire──► expired

Payment providers redeliver webhooks, and a late "paid" can arrive after an adviser already
marked the parcel shipped. Such repeats must change nothing and send nothing twice, so handlers
ask ``is_repeat`` first (skip side effects) and ``transition`` returns the current status for a
repeat instead of raising. Everything else outside the table raises InvalidTransition, whose
message is meant for the adviser ("order 42 is already delivered; it cannot be cancelled").

Shipped orders cannot be cancelled here: after shipping it is a return, which needs its own flow.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
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

# For each event, the statuses in which it has already taken effect: "pay" is done once the order
# is paid, shipped or delivered, so a redelivered payment webhook is a harmless repeat.
_ALREADY: Mapping[OrderEvent, frozenset[OrderStatus]] = MappingProxyType(
    {
        E.PAY: frozenset({S.PAID, S.SHIPPED, S.DELIVERED}),
        E.SHIP: frozenset({S.SHIPPED, S.DELIVERED}),
        E.DELIVER: frozenset({S.DELIVERED}),
        E.CANCEL: frozenset({S.CANCELLED}),
        E.EXPIRE: frozenset({S.EXPIRED}),
    }
)

TERMINAL = frozenset({S.DELIVERED, S.CANCELLED, S.EXPIRED})

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


def is_repeat(status: OrderStatus, event: OrderEvent) -> bool:
    """True if ``event`` has already taken effect (a redelivered webhook, a double command)."""
    return status in _ALREADY[OrderEvent(event)]


def transition(
    status: OrderStatus, event: OrderEvent, *, order: str | int | None = None
) -> OrderStatus:
    """The status after ``event``; a repeat returns ``status`` unchanged.

    ``order`` (the order number) only makes the error message specific.
    """
    status, event = OrderStatus(status), OrderEvent(event)
    if is_repeat(status, event):
        return status
    try:
        return TRANSITIONS[(status, event)]
    except KeyError:
        raise InvalidTransition(status, event, order) from None


def allowed_events(status: OrderStatus) -> frozenset[OrderEvent]:
    """Events that would change ``status`` (for buttons, help text and the dashboard)."""
    return frozenset(event for (state, event) in TRANSITIONS if state == status)


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
