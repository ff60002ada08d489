"""Money: exact minor units, strict parsing, CLDR formatting, VAT rounding."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest

from hub.commerce.money import (
    CurrencyMismatch,
    Money,
    MoneyError,
    check_locale,
    currency_exponent,
    format_money,
    format_rate,
    parse_money,
    round_half_up,
    total,
    vat_included,
)

NBSP, NNBSP = "\u00a0", "\u202f"


def eur(minor: int) -> Money:
    return Money(minor, "EUR")


# --- currencies and the value type ----------------------------------------------------------------


@pytest.mark.parametrize(("code", "exponent"), [("EUR", 2), ("USD", 2), ("JPY", 0), ("KWD", 3)])
def test_currency_exponents_follow_iso(code: str, exponent: int) -> None:
    assert currency_exponent(code) == exponent


@pytest.mark.parametrize("code", ["XYZ", "eur", "EURO", "", "€"])
def test_unknown_or_malformed_currency_is_refused(code: str) -> None:
    with pytest.raises(MoneyError):
        Money(100, code)


@pytest.mark.parametrize("minor", [1.5, 1.0, True, Decimal("1"), "100"])
def test_minor_units_must_be_a_real_int(minor: object) -> None:
    with pytest.raises(TypeError):
        Money(minor, "EUR")  # type: ignore[arg-type]


def test_amount_is_exact_decimal_in_major_units() -> None:
    assert eur(8450).amount == Decimal("84.50")
    assert str(eur(8450).amount) == "84.50"
    assert Money(1500, "JPY").amount == Decimal("1500")
    assert Money(1234, "KWD").amount == Decimal("1.234")
    assert str(eur(-5)) == "-0.05 EUR"


def test_arithmetic_stays_in_minor_units() -> None:
    assert eur(1250) + eur(99) == eur(1349)
    assert eur(1250) - eur(1300) == eur(-50)
    assert -eur(5) == eur(-5)
    assert eur(1250) * 3 == eur(3750)
    assert 3 * eur(1250) == eur(3750)
    # The float classic: 0.10 + 0.10 + 0.10 != 0.30. Not here.
    assert eur(10) + eur(10) + eur(10) == eur(30)
    assert total([eur(10)] * 3, "EUR") == eur(30)
    assert total([], "JPY") == Money(0, "JPY")


@pytest.mark.parametrize("factor", [1.5, Decimal("2"), "2"])
def test_multiplying_by_anything_but_int_is_refused(factor: object) -> None:
    with pytest.raises(TypeError):
        eur(100) * factor  # type: ignore[operator]


def test_mixing_currencies_raises() -> None:
    usd = Money(100, "USD")
    with pytest.raises(CurrencyMismatch, match="EUR and USD"):
        eur(100) + usd
    with pytest.raises(CurrencyMismatch):
        eur(100) - usd
    with pytest.raises(CurrencyMismatch):
        _ = eur(100) < usd
    with pytest.raises(CurrencyMismatch):
        total([eur(1), usd], "EUR")
    with pytest.raises(TypeError):
        eur(100) + 1  # type: ignore[operator]


def test_comparison_within_a_currency() -> None:
    assert eur(1) < eur(2) <= eur(2) < eur(3)
    assert eur(3) > eur(2) >= eur(2)
    assert max(eur(5), eur(7), eur(6)) == eur(7)
    # Equality across currencies is simply False (no exception): sets and dicts need that.
    assert eur(100) != Money(100, "USD")
    assert len({eur(1), eur(1), Money(1, "USD")}) == 2


# --- parsing --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "currency", "minor"),
    [
        ("12.50", "EUR", 1250),
        ("12,50", "EUR", 1250),
        ("12,5", "EUR", 1250),
        ("12", "EUR", 1200),
        (" 7.5 ", "EUR", 750),
        ("0", "EUR", 0),
        ("0.01", "EUR", 1),
        ("1500", "JPY", 1500),
        ("0,333", "KWD", 333),
        ("1.234", "KWD", 1234),
        (Decimal("12.5"), "EUR", 1250),
        (Decimal("12.500"), "EUR", 1250),  # a Decimal's value counts, trailing zeros are fine
        (Decimal("1E+2"), "EUR", 10000),
        (Decimal("1500"), "JPY", 1500),
        (12, "EUR", 1200),  # an int is whole major units, not minor units
        (12, "JPY", 12),
        (12, "KWD", 12000),
    ],
)
def test_parse_money_accepts(value: str | Decimal | int, currency: str, minor: int) -> None:
    assert parse_money(value, currency) == Money(minor, currency)


@pytest.mark.parametrize(
    ("value", "currency", "message"),
    [
        ("12,5x", "EUR", "'12,5x' is not an amount"),
        ("", "EUR", "is not an amount"),
        ("abc", "EUR", "is not an amount"),
        ("1e5", "EUR", "is not an amount"),
        ("12.", "EUR", "is not an amount"),
        ("€12", "EUR", "is not an amount"),
        ("١٢", "EUR", "is not an amount"),  # Arabic-Indic digits: refused, not silently read
        ("1.234,50", "EUR", "without thousands separators"),
        ("1 234,50", "EUR", "without thousands separators"),
        ("1,234.50", "EUR", "without thousands separators"),
        ("12,505", "EUR", "too many decimals; EUR has 2"),
        # Text counts digits as written: "1,000" in EUR is probably one thousand, so refuse.
        ("1,000", "EUR", "too many decimals"),
        ("12.500", "EUR", "too many decimals"),
        ("1.5", "JPY", "JPY amounts are whole numbers"),
        ("0,3333", "KWD", "KWD has 3"),
        (Decimal("0.001"), "EUR", "too many decimals"),
        (Decimal("1.5"), "JPY", "whole numbers"),
        (Decimal("NaN"), "EUR", "is not an amount"),
        (Decimal("Infinity"), "EUR", "is not an amount"),
        ("-1", "EUR", "'-1' is negative"),
        (Decimal("-0.01"), "EUR", "negative"),
        ("99999999999999999999", "EUR", "too large"),
    ],
)
def test_parse_money_refuses(value: str | Decimal, currency: str, message: str) -> None:
    with pytest.raises(MoneyError, match=message):
        parse_money(value, currency)


@pytest.mark.parametrize("value", [12.5, 0.1, True])
def test_parse_money_refuses_floats_and_bools(value: object) -> None:
    with pytest.raises(TypeError):
        parse_money(value, "EUR")  # type: ignore[arg-type]


def test_negative_amounts_only_when_allowed() -> None:
    assert parse_money("-1,50", "EUR", allow_negative=True) == eur(-150)
    assert parse_money("-0", "EUR") == eur(0)


def test_three_times_a_third() -> None:
    # A KWD price with three decimals multiplies exactly; an EUR price cannot have them.
    assert parse_money("0,333", "KWD") * 3 == Money(999, "KWD")
    with pytest.raises(MoneyError):
        parse_money("0,333", "EUR")
    assert parse_money("0.33", "EUR") * 3 == eur(99)


# --- formatting -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("money", "locale", "text"),
    [
        (eur(8450), "de_DE", f"84,50{NBSP}€"),
        (eur(8450), "en_US", "€84.50"),
        (eur(8450), "en_IE", "€84.50"),
        (eur(8450), "fr_FR", f"84,50{NBSP}€"),
        (eur(8450), "de-DE", f"84,50{NBSP}€"),  # BCP 47 spelling accepted too
        (eur(123450), "de_DE", f"1.234,50{NBSP}€"),
        (eur(123450), "en_US", "€1,234.50"),
        (eur(123450), "fr_FR", f"1{NNBSP}234,50{NBSP}€"),
        (eur(5), "de_DE", f"0,05{NBSP}€"),
        (eur(-500), "en_US", "-€5.00"),
        (Money(1500, "JPY"), "en_US", "¥1,500"),
        (Money(1500, "JPY"), "de_DE", f"1.500{NBSP}¥"),
        (Money(1234, "KWD"), "en_US", "KWD1.234"),
        (Money(1234, "KWD"), "de_DE", f"1,234{NBSP}KWD"),
        (Money(999, "USD"), "en_US", "$9.99"),
    ],
)
def test_format_money_follows_cldr(money: Money, locale: str, text: str) -> None:
    assert format_money(money, locale) == text


def test_unknown_locale_is_a_clear_error() -> None:
    with pytest.raises(MoneyError, match="not a known locale"):
        format_money(eur(1), "xx_YY")
    with pytest.raises(MoneyError):
        check_locale("klingon")
    assert check_locale("de_DE") == "de_DE"


@pytest.mark.parametrize(
    ("rate", "locale", "text"),
    [
        ("19", "de_DE", f"19{NBSP}%"),
        ("19", "en_US", "19%"),
        ("5.5", "fr_FR", f"5,5{NBSP}%"),
        ("7.5", "de_DE", f"7,5{NBSP}%"),  # not rounded to "8 %"
        ("0", "en_US", "0%"),
    ],
)
def test_format_rate(rate: str, locale: str, text: str) -> None:
    assert format_rate(Decimal(rate), locale) == text


# --- VAT ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gross", "rate", "vat"),
    [
        (eur(8450), "19", 1349),  # 1349.16
        (eur(11900), "19", 1900),
        (eur(1000), "7", 65),  # 65.42
        (eur(1000), "5.5", 52),  # 52.13
        (eur(10), "19", 2),  # 1.596: small amounts round up
        (eur(0), "19", 0),
        (eur(1234), "0", 0),
        # 20 % VAT is 1/6 of the gross: exact halves show half-up (not banker's) rounding.
        (eur(3), "20", 1),  # 0.5 -> 1
        (eur(15), "20", 3),  # 2.5 -> 3 (banker's rounding would give 2)
        (eur(-15), "20", -3),  # a refund mirrors the sale
        (Money(1100, "JPY"), "10", 100),
        (Money(1000, "KWD"), "5", 48),  # 47.619 fils
    ],
)
def test_vat_included(gross: Money, rate: str, vat: int) -> None:
    assert vat_included(gross, Decimal(rate)) == Money(vat, gross.currency)


def test_vat_rate_must_be_a_non_negative_decimal() -> None:
    with pytest.raises(MoneyError):
        vat_included(eur(100), 19)  # type: ignore[arg-type]
    with pytest.raises(MoneyError):
        vat_included(eur(100), Decimal("-1"))


def test_round_half_up() -> None:
    assert [round_half_up(Fraction(n, 2)) for n in (-3, -1, 1, 3, 5)] == [-2, -1, 1, 2, 3]
    assert round_half_up(Fraction(149, 100)) == 1
    assert round_half_up(Fraction(-149, 100)) == -1
