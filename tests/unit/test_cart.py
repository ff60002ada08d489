"""Cart: immutable operations, every refusal, VAT per line, JSON round trip."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from hub.commerce.cart import MAX_LINES, Cart, CartError, CartLine
from hub.commerce.catalogue import Product
from hub.commerce.money import Money, vat_included
from hub.errors import UserError

MAX = 10


def product(
    sku: str,
    minor: int,
    *,
    vat: str = "19",
    currency: str = "EUR",
    in_stock: bool = True,
    name: str | None = None,
    variant: str | None = None,
) -> Product:
    return Product(
        sku=sku,
        name=name or f"Product {sku}",
        price=Money(minor, currency),
        vat_rate=Decimal(vat),
        variant_id=variant,
        in_stock=in_stock,
    )


PAINT = product("AC-KB-500", 1250, name="Acrylfarbe Kobaltblau 500 ml")
BRUSH = product("PI-FL-50", 695, name="Flachpinsel 50 mm", variant="9001")
BOOK = product("BK-1", 1999, vat="7", name="Farbenlehre (Buch)")
VOUCHER = product("BU-FB-100", 2500, vat="0", name="Farbberatung")
EMPTY = Cart.empty("EUR")


def eur(minor: int) -> Money:
    return Money(minor, "EUR")


def quantities(cart: Cart) -> list[tuple[str, int]]:
    return [(line.sku, line.quantity) for line in cart.lines]


# --- reading --------------------------------------------------------------------------------------


def test_empty_cart() -> None:
    assert EMPTY.is_empty
    assert EMPTY.total == eur(0)
    assert EMPTY.item_count == 0
    assert EMPTY.vat_breakdown() == {}


def test_add_creates_then_grows_a_line_and_keeps_order() -> None:
    cart = EMPTY.add(PAINT, 2, MAX).add(BRUSH, 1, MAX).add(PAINT, 1, MAX)
    assert quantities(cart) == [("AC-KB-500", 3), ("PI-FL-50", 1)]
    assert cart.item_count == 4
    assert cart.lines[1] == CartLine(
        "PI-FL-50", "Flachpinsel 50 mm", 1, eur(695), Decimal(19), "9001"
    )
    assert not cart.is_empty


def test_operations_return_new_carts_and_leave_the_old_one_alone() -> None:
    one = EMPTY.add(PAINT, 1, MAX)
    two = one.add(PAINT, 1, MAX)
    assert quantities(one) == [("AC-KB-500", 1)]
    assert quantities(two) == [("AC-KB-500", 2)]
    assert EMPTY.is_empty
    with pytest.raises(AttributeError):
        one.lines = ()  # type: ignore[misc]


def test_re_adding_takes_the_current_catalogue_price_and_name() -> None:
    cheaper = product("AC-KB-500", 999, name="Acrylfarbe Kobaltblau (Angebot)")
    cart = EMPTY.add(PAINT, 2, MAX).add(cheaper, 1, MAX)
    [line] = cart.lines
    assert (line.quantity, line.unit_price, line.name) == (3, eur(999), cheaper.name)


def test_totals() -> None:
    cart = EMPTY.add(PAINT, 3, MAX).add(BRUSH, 2, MAX)
    assert cart.line_total(cart.lines[0]) == eur(3750)
    assert cart.lines[1].total == eur(1390)
    assert cart.total == eur(5140)


# --- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("qty", "message"),
    [
        (0, "the quantity must be 1 or more, not 0"),
        (-2, "the quantity must be 1 or more, not -2"),
        (True, "the quantity must be a whole number, not True"),
        (1.5, "the quantity must be a whole number, not 1.5"),
    ],
)
def test_bad_quantities(qty: Any, message: str) -> None:
    with pytest.raises(CartError) as info:
        EMPTY.add(PAINT, qty, MAX)
    assert str(info.value) == message
    cart = EMPTY.add(PAINT, 3, MAX)
    with pytest.raises(CartError, match="quantity must"):
        cart.remove("AC-KB-500", qty)


def test_cart_errors_are_user_errors() -> None:
    # The dispatcher shows a UserError's text after ⛔; cart refusals must be shown as they are.
    assert issubclass(CartError, UserError)


def test_at_most_max_qty_per_line() -> None:
    assert quantities(EMPTY.add(PAINT, MAX, MAX)) == [("AC-KB-500", MAX)]
    with pytest.raises(CartError) as info:
        EMPTY.add(PAINT, 11, MAX)
    assert str(info.value) == (
        "at most 10 of one product per cart; Acrylfarbe Kobaltblau 500 ml (AC-KB-500) would have 11"
    )
    with pytest.raises(CartError) as info:
        EMPTY.add(PAINT, 8, MAX).add(PAINT, 3, MAX)
    assert str(info.value).endswith("would have 11 (8 already in the cart)")


def test_currency_mismatch() -> None:
    dollars = product("US-1", 500, currency="USD", name="Imported brush")
    with pytest.raises(CartError) as info:
        EMPTY.add(dollars, 1, MAX)
    assert str(info.value) == "Imported brush (US-1) is priced in USD, but this cart is in EUR"


def test_out_of_stock() -> None:
    gone = product("AC-TW-500", 1190, in_stock=False, name="Acrylfarbe Titanweiß")
    with pytest.raises(CartError) as info:
        EMPTY.add(gone, 1, MAX)
    assert str(info.value) == "Acrylfarbe Titanweiß (AC-TW-500) is out of stock"


def test_line_limit_keeps_the_state_event_small() -> None:
    cart = EMPTY
    for i in range(3):
        cart = cart.add(product(f"S{i}", 100), 1, MAX, max_lines=3)
    cart = cart.add(product("S0", 100), 1, MAX, max_lines=3)  # growing a line is fine
    with pytest.raises(CartError, match="already has 3 products, the most it can hold"):
        cart.add(product("S3", 100), 1, MAX, max_lines=3)
    assert MAX_LINES == 50


# --- removing -------------------------------------------------------------------------------------


def test_remove_some_all_or_more_than_present() -> None:
    cart = EMPTY.add(PAINT, 5, MAX).add(BRUSH, 2, MAX)
    assert quantities(cart.remove("AC-KB-500", 2)) == [("AC-KB-500", 3), ("PI-FL-50", 2)]
    assert quantities(cart.remove("AC-KB-500", 5)) == [("PI-FL-50", 2)]
    assert quantities(cart.remove("AC-KB-500", 99)) == [("PI-FL-50", 2)]
    assert quantities(cart.remove("AC-KB-500")) == [("PI-FL-50", 2)]
    assert quantities(cart.remove("ac-kb-500", 1)) == [("AC-KB-500", 4), ("PI-FL-50", 2)]


def test_remove_unknown_sku() -> None:
    with pytest.raises(CartError) as info:
        EMPTY.add(PAINT, 1, MAX).remove("PI-FL-50")
    assert str(info.value) == "PI-FL-50 is not in the cart"


def test_clear() -> None:
    cart = EMPTY.add(PAINT, 1, MAX).add(BRUSH, 1, MAX).clear()
    assert cart == Cart("EUR")
    assert cart.is_empty


# --- VAT and rounding -----------------------------------------------------------------------------


def test_vat_is_rounded_per_line_then_summed() -> None:
    # Three different 0,10 € items at 19 %: each line's VAT is 1.596 ct -> 2 ct, together 6 ct.
    # VAT computed once on the 0,30 € total would be 4.79 ct -> 5 ct. Shops print the 6.
    cart = EMPTY
    for sku in ("A", "B", "C"):
        cart = cart.add(product(sku, 10), 1, MAX)
    assert cart.vat_breakdown() == {Decimal(19): eur(6)}
    assert vat_included(cart.total, Decimal(19)) == eur(5)


def test_vat_of_a_line_is_on_the_line_total_not_per_piece() -> None:
    cart = EMPTY.add(product("A", 10), 3, MAX)
    assert cart.lines[0].vat == eur(5)  # 30 ct * 19/119 = 4.79, not 3 * 2 ct
    assert cart.vat_breakdown() == {Decimal(19): eur(5)}


def test_breakdown_per_rate_highest_first_including_zero() -> None:
    cart = EMPTY.add(VOUCHER, 1, MAX).add(BOOK, 2, MAX).add(PAINT, 3, MAX).add(BRUSH, 1, MAX)
    breakdown = cart.vat_breakdown()
    assert list(breakdown) == [Decimal(19), Decimal(7), Decimal(0)]
    # 19 %: 37,50 € -> 5,99 €; 6,95 € -> 1,11 €.  7 %: 39,98 € -> 2,62 €.
    assert breakdown == {Decimal(19): eur(599 + 111), Decimal(7): eur(262), Decimal(0): eur(0)}
    assert cart.total == eur(2500 + 3998 + 3750 + 695)


def test_equal_rates_written_differently_share_one_key() -> None:
    cart = EMPTY.add(product("A", 119, vat="19.0"), 1, MAX).add(product("B", 119), 1, MAX)
    breakdown = cart.vat_breakdown()
    assert breakdown == {Decimal(19): eur(38)}
    assert [str(rate) for rate in breakdown] == ["19"]


def test_currencies_with_zero_and_three_decimals() -> None:
    yen = Cart.empty("JPY").add(product("J", 1100, vat="10", currency="JPY"), 3, MAX)
    assert yen.total == Money(3300, "JPY")
    assert yen.vat_breakdown() == {Decimal(10): Money(300, "JPY")}
    dinar = Cart.empty("KWD").add(product("K", 333, vat="5", currency="KWD"), 3, MAX)
    assert dinar.total == Money(999, "KWD")  # 3 × 0.333 KWD, exactly
    assert dinar.vat_breakdown() == {Decimal(5): Money(48, "KWD")}  # 47.57 fils


# --- invariants -----------------------------------------------------------------------------------


def test_constructor_invariants() -> None:
    line = CartLine("A", "Alpha", 1, eur(100), Decimal(19))
    with pytest.raises(ValueError):
        CartLine("A", "Alpha", 0, eur(100), Decimal(19))
    with pytest.raises(TypeError):
        CartLine("A", "Alpha", 1, eur(100), 19)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="in USD, not EUR"):
        Cart("EUR", (CartLine("A", "Alpha", 1, Money(100, "USD"), Decimal(19)),))
    with pytest.raises(ValueError, match="appears twice"):
        Cart("EUR", (line, CartLine("a", "Alpha", 2, eur(100), Decimal(19))))
    with pytest.raises(TypeError):
        Cart("EUR", [line])  # type: ignore[arg-type]


# --- JSON -----------------------------------------------------------------------------------------


def test_to_json_has_stable_keys_and_minor_units() -> None:
    cart = EMPTY.add(PAINT, 2, MAX).add(BRUSH, 1, MAX)
    assert cart.to_json() == {
        "version": 1,
        "currency": "EUR",
        "lines": [
            {
                "sku": "AC-KB-500",
                "name": "Acrylfarbe Kobaltblau 500 ml",
                "quantity": 2,
                "unit_price_minor": 1250,
                "vat_rate": "19",
                "variant_id": None,
                "line_total_minor": 2500,
            },
            {
                "sku": "PI-FL-50",
                "name": "Flachpinsel 50 mm",
                "quantity": 1,
                "unit_price_minor": 695,
                "vat_rate": "19",
                "variant_id": "9001",
                "line_total_minor": 695,
            },
        ],
        "total_minor": 3195,
        "vat_minor": {"19": 510},
    }


@pytest.mark.parametrize(
    "cart",
    [
        EMPTY,
        EMPTY.add(PAINT, 2, MAX).add(BOOK, 1, MAX).add(VOUCHER, 3, MAX),
        Cart.empty("KWD").add(product("K", 333, vat="5.5", currency="KWD"), 3, MAX),
        Cart.empty("JPY").add(product("J", 1100, vat="10", currency="JPY", name="筆 №3"), 1, MAX),
    ],
)
def test_json_round_trip(cart: Cart) -> None:
    stored = json.loads(json.dumps(cart.to_json()))
    assert Cart.from_json(stored) == cart


def test_from_json_recomputes_instead_of_trusting_totals() -> None:
    data = EMPTY.add(PAINT, 2, MAX).to_json()
    data["total_minor"] = 1
    data["lines"][0]["line_total_minor"] = 1
    data["vat_minor"] = {"19": 0}
    assert Cart.from_json(data).total == eur(2500)


def _stored(**line: Any) -> dict[str, Any]:
    data = EMPTY.add(PAINT, 2, MAX).to_json()
    data["lines"][0].update(line)
    return data


@pytest.mark.parametrize(
    "data",
    [
        {},
        [],
        {**EMPTY.to_json(), "version": 2},
        {**EMPTY.to_json(), "currency": "EURO"},
        {**EMPTY.to_json(), "lines": "nope"},
        _stored(unit_price_minor=12.5),
        _stored(unit_price_minor="1250"),
        _stored(quantity=True),
        _stored(quantity=0),
        _stored(vat_rate=19),
        _stored(vat_rate="abc"),
        _stored(vat_rate="150"),
        _stored(sku=None),
        _stored(variant_id=123),
    ],
)
def test_from_json_refuses_what_is_not_a_stored_cart(data: Any) -> None:
    with pytest.raises(ValueError):
        Cart.from_json(data)
