"""Order state machine: every (status, event) pair for prepaid orders and for orders on
invoice (paid or not), repeats, messages, order numbers."""

from __future__ import annotations

import itertools

import pytest

from hub.commerce.orders import (
    TERMINAL,
    Decision,
    InvalidTransition,
    OrderEvent,
    OrderStatus,
    PaymentTerms,
    allowed_events,
    decide,
    event_from_word,
    format_order_number,
    is_paid,
    is_repeat,
    parse_order_number,
    transition,
)
from hub.errors import UserError

S, E = OrderStatus, OrderEvent
INVOICE = PaymentTerms.INVOICE

# The whole table, written out independently of the module: (status, event) -> outcome, where
# the outcome is the new status, "repeat" (same status back, no side effects) or "invalid".
EXPECTED: dict[tuple[OrderStatus, OrderEvent], OrderStatus | str] = {
    (S.PENDING, E.PAY): S.PAID,
    (S.PENDING, E.SHIP): "invalid",
    (S.PENDING, E.DELIVER): "invalid",
    (S.PENDING, E.CANCEL): S.CANCELLED,
    (S.PENDING, E.EXPIRE): S.EXPIRED,
    (S.PAID, E.PAY): "repeat",
    (S.PAID, E.SHIP): S.SHIPPED,
    (S.PAID, E.DELIVER): S.DELIVERED,  # pickup in the shop, digital goods
    (S.PAID, E.CANCEL): S.CANCELLED,
    (S.PAID, E.EXPIRE): "invalid",
    (S.SHIPPED, E.PAY): "repeat",  # a payment webhook redelivered after shipping
    (S.SHIPPED, E.SHIP): "repeat",
    (S.SHIPPED, E.DELIVER): S.DELIVERED,
    (S.SHIPPED, E.CANCEL): "invalid",  # that is a return, not a cancellation
    (S.SHIPPED, E.EXPIRE): "invalid",
    (S.DELIVERED, E.PAY): "repeat",
    (S.DELIVERED, E.SHIP): "repeat",
    (S.DELIVERED, E.DELIVER): "repeat",
    (S.DELIVERED, E.CANCEL): "invalid",
    (S.DELIVERED, E.EXPIRE): "invalid",
    (S.CANCELLED, E.PAY): "invalid",
    (S.CANCELLED, E.SHIP): "invalid",
    (S.CANCELLED, E.DELIVER): "invalid",
    (S.CANCELLED, E.CANCEL): "repeat",
    (S.CANCELLED, E.EXPIRE): "invalid",
    (S.EXPIRED, E.PAY): "invalid",
    (S.EXPIRED, E.SHIP): "invalid",
    (S.EXPIRED, E.DELIVER): "invalid",
    (S.EXPIRED, E.CANCEL): "invalid",
    (S.EXPIRED, E.EXPIRE): "repeat",
}


def test_the_table_covers_every_pair() -> None:
    assert set(EXPECTED) == set(itertools.product(OrderStatus, OrderEvent))


@pytest.mark.parametrize(("status", "event"), list(EXPECTED))
def test_every_status_and_event(status: OrderStatus, event: OrderEvent) -> None:
    outcome = EXPECTED[(status, event)]
    if outcome == "invalid":
        assert not is_repeat(status, event)
        with pytest.raises(InvalidTransition) as info:
            transition(status, event, order=42)
        assert (info.value.status, info.value.event, info.value.order) == (status, event, 42)
        assert str(info.value).startswith("order 42 ")
    elif outcome == "repeat":
        assert is_repeat(status, event)
        assert transition(status, event) == status
    else:
        assert not is_repeat(status, event)
        assert transition(status, event) == outcome


# On invoice ("Rechnung") the goods go out first and the invoice is paid later. Written out
# for an unpaid and a paid order: (status, event, paid) -> (status after, paid after), "repeat"
# or "invalid". A paid order's table is the prepaid one except that shipping needed no payment.
INVOICE_EXPECTED: dict[tuple[OrderStatus, OrderEvent, bool], tuple[OrderStatus, bool] | str] = {
    # not paid yet
    (S.PENDING, E.PAY, False): (S.PAID, True),
    (S.PENDING, E.SHIP, False): (S.SHIPPED, False),  # the invoice travels with the parcel
    (S.PENDING, E.DELIVER, False): (S.DELIVERED, False),  # picked up, invoice handed over
    (S.PENDING, E.CANCEL, False): (S.CANCELLED, False),
    (S.PENDING, E.EXPIRE, False): (S.EXPIRED, False),
    (S.SHIPPED, E.PAY, False): (S.SHIPPED, True),  # the invoice paid; the parcel still travels
    (S.SHIPPED, E.SHIP, False): "repeat",
    (S.SHIPPED, E.DELIVER, False): (S.DELIVERED, False),
    (S.SHIPPED, E.CANCEL, False): "invalid",  # a return, not a cancellation
    (S.SHIPPED, E.EXPIRE, False): "invalid",
    (S.DELIVERED, E.PAY, False): (S.DELIVERED, True),
    (S.DELIVERED, E.SHIP, False): "repeat",
    (S.DELIVERED, E.DELIVER, False): "repeat",
    (S.DELIVERED, E.CANCEL, False): "invalid",
    (S.DELIVERED, E.EXPIRE, False): "invalid",
    (S.CANCELLED, E.PAY, False): "invalid",  # money for a cancelled order: someone must look
    (S.CANCELLED, E.SHIP, False): "invalid",
    (S.CANCELLED, E.DELIVER, False): "invalid",
    (S.CANCELLED, E.CANCEL, False): "repeat",
    (S.CANCELLED, E.EXPIRE, False): "invalid",
    (S.EXPIRED, E.PAY, False): "invalid",
    (S.EXPIRED, E.SHIP, False): "invalid",
    (S.EXPIRED, E.DELIVER, False): "invalid",
    (S.EXPIRED, E.CANCEL, False): "invalid",
    (S.EXPIRED, E.EXPIRE, False): "repeat",
    # paid (the status is paid, or the invoice of a shipped/delivered order was paid)
    (S.PAID, E.PAY, True): "repeat",
    (S.PAID, E.SHIP, True): (S.SHIPPED, True),
    (S.PAID, E.DELIVER, True): (S.DELIVERED, True),
    (S.PAID, E.CANCEL, True): (S.CANCELLED, True),
    (S.PAID, E.EXPIRE, True): "invalid",
    (S.SHIPPED, E.PAY, True): "repeat",  # paid is paid: nothing is sent twice
    (S.SHIPPED, E.SHIP, True): "repeat",
    (S.SHIPPED, E.DELIVER, True): (S.DELIVERED, True),
    (S.SHIPPED, E.CANCEL, True): "invalid",
    (S.SHIPPED, E.EXPIRE, True): "invalid",
    (S.DELIVERED, E.PAY, True): "repeat",
    (S.DELIVERED, E.SHIP, True): "repeat",
    (S.DELIVERED, E.DELIVER, True): "repeat",
    (S.DELIVERED, E.CANCEL, True): "invalid",
    (S.DELIVERED, E.EXPIRE, True): "invalid",
    (S.CANCELLED, E.PAY, True): "invalid",  # a second payment of a refunded order
    (S.CANCELLED, E.CANCEL, True): "repeat",
}


@pytest.mark.parametrize(("status", "event", "paid"), list(INVOICE_EXPECTED))
def test_every_status_and_event_on_invoice(
    status: OrderStatus, event: OrderEvent, paid: bool
) -> None:
    outcome = INVOICE_EXPECTED[(status, event, paid)]
    if outcome == "invalid":
        assert not is_repeat(status, event, terms=INVOICE, paid=paid)
        with pytest.raises(InvalidTransition):
            decide(status, event, terms=INVOICE, paid=paid, order=42)
    elif outcome == "repeat":
        assert is_repeat(status, event, terms=INVOICE, paid=paid)
        assert decide(status, event, terms=INVOICE, paid=paid) == Decision(
            status, is_paid(status, INVOICE, paid), repeat=True, payment=False
        )
    else:
        assert isinstance(outcome, tuple)
        after, paid_after = outcome
        decision = decide(status, event, terms=INVOICE, paid=paid)
        assert decision == Decision(after, paid_after, repeat=False, payment=event is E.PAY)
        assert transition(status, event, terms=INVOICE, paid=paid) == after


def test_the_invoice_table_covers_every_pair_of_an_unpaid_order() -> None:
    # "paid" is the one status an unpaid order cannot be in.
    unpaid = {(s, e) for (s, e, paid) in INVOICE_EXPECTED if not paid}
    assert unpaid == set(itertools.product(set(OrderStatus) - {S.PAID}, OrderEvent))


@pytest.mark.parametrize(("status", "event"), list(EXPECTED))
def test_prepaid_is_the_default_and_decide_agrees_with_transition(
    status: OrderStatus, event: OrderEvent
) -> None:
    outcome = EXPECTED[(status, event)]
    if outcome == "invalid":
        with pytest.raises(InvalidTransition):
            decide(status, event, terms=PaymentTerms.PREPAID)
        return
    decision = decide(status, event, terms=PaymentTerms.PREPAID)
    assert decision.repeat is (outcome == "repeat")
    assert decision.status == (status if outcome == "repeat" else outcome)
    assert decision.payment is (event is E.PAY and outcome != "repeat")


def test_an_invoice_order_ships_unpaid_and_is_paid_later() -> None:
    shipped = decide(S.PENDING, E.SHIP, terms=INVOICE)
    assert (shipped.status, shipped.paid) == (S.SHIPPED, False)
    paid = decide(shipped.status, E.PAY, terms=INVOICE, paid=shipped.paid)
    assert (paid.status, paid.paid, paid.payment) == (S.SHIPPED, True, True)
    # A prepaid order cannot go out before its money.
    with pytest.raises(InvalidTransition, match="is not paid yet; it cannot be shipped"):
        decide(S.PENDING, E.SHIP, terms=PaymentTerms.PREPAID, order=42)


def test_is_paid() -> None:
    assert is_paid(S.SHIPPED, PaymentTerms.PREPAID)  # shipping needed the money
    assert not is_paid(S.SHIPPED, INVOICE)
    assert is_paid(S.SHIPPED, INVOICE, paid=True)
    assert is_paid(S.PAID, INVOICE)
    assert not is_paid(S.PENDING, PaymentTerms.PREPAID)


def test_allowed_events_on_invoice() -> None:
    assert allowed_events(S.PENDING, INVOICE) == {E.PAY, E.SHIP, E.DELIVER, E.CANCEL, E.EXPIRE}
    assert allowed_events(S.SHIPPED, INVOICE) == {E.PAY, E.DELIVER}
    assert allowed_events(S.SHIPPED, INVOICE, paid=True) == {E.DELIVER}
    assert allowed_events(S.DELIVERED, INVOICE) == {E.PAY}
    assert allowed_events(S.DELIVERED, INVOICE, paid=True) == frozenset()


def test_the_happy_path() -> None:
    status = S.PENDING
    for event in (E.PAY, E.SHIP, E.DELIVER):
        status = transition(status, event)
    assert status is S.DELIVERED


def test_redelivered_webhooks_are_harmless() -> None:
    paid = transition(S.PENDING, E.PAY)
    assert is_repeat(paid, E.PAY)
    assert transition(paid, E.PAY) is S.PAID
    assert transition(transition(paid, E.SHIP), E.PAY) is S.SHIPPED  # never back to paid


@pytest.mark.parametrize(
    ("status", "event", "order", "message"),
    [
        (S.DELIVERED, E.CANCEL, 42, "order 42 is already delivered; it cannot be cancelled"),
        (S.PENDING, E.SHIP, "0042", "order 0042 is not paid yet; it cannot be shipped"),
        (S.SHIPPED, E.CANCEL, 7, "order 7 has already been shipped; it cannot be cancelled"),
        (S.PAID, E.EXPIRE, 7, "order 7 is already paid; it cannot expire"),
        (S.CANCELLED, E.DELIVER, 7, "order 7 was cancelled; it cannot be marked delivered"),
        (S.EXPIRED, E.SHIP, None, "the order has expired; it cannot be shipped"),
        (
            S.EXPIRED,
            E.PAY,
            9,
            "order 9 has expired; it cannot be paid "
            "(a payment arrived anyway: check it and refund or fulfil by hand)",
        ),
    ],
)
def test_refusals_read_well(
    status: OrderStatus, event: OrderEvent, order: str | int | None, message: str
) -> None:
    with pytest.raises(InvalidTransition) as info:
        transition(status, event, order=order)
    assert str(info.value) == message
    assert isinstance(info.value, UserError)  # shown to the adviser after ⛔


def test_plain_strings_from_the_database_work() -> None:
    assert transition("pending", "pay") is S.PAID  # type: ignore[arg-type]
    assert is_repeat("paid", "pay")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        transition("lost", "pay")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        transition("pending", "refund")  # type: ignore[arg-type]


def test_allowed_events_and_terminal_states() -> None:
    assert allowed_events(S.PENDING) == {E.PAY, E.CANCEL, E.EXPIRE}
    assert allowed_events(S.PAID) == {E.SHIP, E.DELIVER, E.CANCEL}
    assert allowed_events(S.SHIPPED) == {E.DELIVER}
    assert TERMINAL == {S.DELIVERED, S.CANCELLED, S.EXPIRED}
    assert all(allowed_events(status) == frozenset() for status in TERMINAL)


@pytest.mark.parametrize(
    ("word", "event"),
    [
        ("shipped", E.SHIP),
        ("Delivered", E.DELIVER),
        ("cancelled", E.CANCEL),
        ("canceled", E.CANCEL),
        (" cancel ", E.CANCEL),
        ("paid", E.PAY),
        ("expired", E.EXPIRE),
    ],
)
def test_event_words(word: str, event: OrderEvent) -> None:
    assert event_from_word(word) is event


def test_unknown_event_word() -> None:
    with pytest.raises(ValueError, match="'returned' is not an order update; use shipped"):
        event_from_word("returned")


def test_order_numbers() -> None:
    assert format_order_number(42) == "0042"
    assert format_order_number(123456) == "123456"
    assert format_order_number(42, prefix="FH-", width=6) == "FH-000042"
    assert format_order_number(7, width=0) == "7"
    for bad in (0, -1, True, 4.0):
        with pytest.raises(ValueError):
            format_order_number(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "prefix", "order_id"),
    [("42", "", 42), ("0042", "", 42), ("#42", "", 42), ("FH-0042", "FH-", 42), ("fh-7", "FH-", 7)],
)
def test_parse_order_number(text: str, prefix: str, order_id: int) -> None:
    assert parse_order_number(text, prefix=prefix) == order_id
    assert (
        parse_order_number(format_order_number(order_id, prefix=prefix), prefix=prefix) == order_id
    )


@pytest.mark.parametrize("text", ["", "0", "abc", "42a", "-3", "4 2", "FH-42", "1" * 19])
def test_parse_order_number_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="is not an order number"):
        parse_order_number(text)
