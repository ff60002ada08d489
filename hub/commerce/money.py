"""Money as integer minor units, parsed with Decimal and formatted the way CLDR says.

A float cannot hold 0.10 exactly, and a cart total that is off by a cent is a support ticket, so
amounts live as ``int`` counts of the currency's minor unit (cents for EUR, yen for JPY, fils for
KWD). Parsing goes through ``Decimal`` and refuses anything that would have to be rounded: a price
with more decimals than the currency has is a data error to fix, not to guess. Arithmetic that
does need rounding (the VAT part of a gross price) uses exact fractions and rounds half up once,
the way shops print "incl. 19% VAT".

Currency exponents and locale formatting come from babel (CLDR data), so "84,50 €" (de_DE),
"€84.50" (en_US) and "84,50 €" with a no-break space (fr_FR) need no table of our own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache

from babel import Locale, UnknownLocaleError
from babel.numbers import (
    format_currency,
    format_percent,
    get_currency_precision,
    is_currency,
)

# Amounts are stored in a signed 64-bit column (SQLAlchemy BigInteger); refuse what would not fit
# instead of failing later inside the database.
MAX_MINOR = 2**63 - 1

# One optional minus, digits, and at most one decimal separator with digits after it. Either "."
# or "," is the separator (German Excel writes "12,50"); thousands separators are refused because
# "1,000" would otherwise mean 1000 to one person and 1.000 to another.
_AMOUNT_RE = re.compile(r"(-?)([0-9]+)(?:[.,]([0-9]+))?")
_GROUPED_RE = re.compile(r"-?[0-9]+(?:[.,' \u00a0\u202f][0-9]+){2,}")


class MoneyError(ValueError):
    """An amount cannot be used; the message names the value and says why, for a human."""


class CurrencyMismatch(MoneyError):
    """Two amounts in different currencies met in one operation (always a bug or a data error)."""


@lru_cache(maxsize=512)
def currency_exponent(currency: str) -> int:
    """Digits after the decimal point for an ISO 4217 code (EUR 2, JPY 0, KWD 3).

    Cached because every Money checks its currency and babel's lookup is not free; the cache is a
    memo over static CLDR data, not state.
    """
    if not (len(currency) == 3 and currency.isascii() and currency.isupper()):
        raise MoneyError(f"{currency!r} is not a currency code (three capital letters, like EUR)")
    if not is_currency(currency):
        raise MoneyError(f"{currency!r} is not a known currency")
    return get_currency_precision(currency)


@lru_cache(maxsize=64)
def _locale(locale: str) -> Locale:
    try:
        return Locale.parse(locale.replace("-", "_"))
    except (UnknownLocaleError, ValueError) as exc:
        raise MoneyError(f"{locale!r} is not a known locale (like de_DE or en_US)") from exc


def check_locale(locale: str) -> str:
    """Return ``locale`` if babel knows it, else raise MoneyError (for config validation)."""
    _locale(locale)
    return locale


@dataclass(frozen=True, slots=True)
class Money:
    """An amount in minor units of ``currency``. Negative values are allowed (differences)."""

    minor: int
    currency: str

    def __post_init__(self) -> None:
        # bool is an int subclass and a float sneaks in easily from JSON or YAML: refuse both.
        if type(self.minor) is not int:
            raise TypeError(f"Money.minor must be an int, not {type(self.minor).__name__}")
        currency_exponent(self.currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(0, currency)

    @property
    def exponent(self) -> int:
        return currency_exponent(self.currency)

    @property
    def amount(self) -> Decimal:
        """The value in major units, exact (Decimal('84.50') for 8450 EUR cents)."""
        return Decimal(self.minor).scaleb(-self.exponent)

    @property
    def is_zero(self) -> bool:
        return self.minor == 0

    def _same(self, other: object) -> Money:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise CurrencyMismatch(
                f"cannot combine amounts in {self.currency} and {other.currency}"
            )
        return other

    def __add__(self, other: Money) -> Money:
        return Money(self.minor + self._same(other).minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        return Money(self.minor - self._same(other).minor, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.minor, self.currency)

    def __mul__(self, factor: int) -> Money:
        # Only whole quantities: multiplying by a rate needs a rounding rule, see vat_included.
        if type(factor) is not int:
            return NotImplemented
        return Money(self.minor * factor, self.currency)

    __rmul__ = __mul__

    # Ordering across currencies has no meaning, so it raises rather than answering False.
    def __lt__(self, other: Money) -> bool:
        return self.minor < self._same(other).minor

    def __le__(self, other: Money) -> bool:
        return self.minor <= self._same(other).minor

    def __gt__(self, other: Money) -> bool:
        return self.minor > self._same(other).minor

    def __ge__(self, other: Money) -> bool:
        return self.minor >= self._same(other).minor

    def __str__(self) -> str:
        # Unambiguous and locale-free, for logs; customers see format_money.
        return f"{self.amount} {self.currency}"


def total(amounts: Iterable[Money], currency: str) -> Money:
    """Sum of ``amounts`` (zero in ``currency`` when empty); mixing currencies raises."""
    result = Money.zero(currency)
    for amount in amounts:
        result = result + amount
    return result


def parse_money(
    value: str | Decimal | int, currency: str, *, allow_negative: bool = False
) -> Money:
    """Read an amount in major units ("12.50", "12,50", Decimal("12.5"), 12) as Money.

    Rules, chosen so that a wrong file fails loudly instead of costing money:
    - floats are refused (use the text or a Decimal);
    - text may use "." or "," as decimal separator, no thousands separators, no symbols;
    - text may not have more decimal digits than the currency has ("12,500" for EUR is refused
      even though it equals 12.50: it is more likely 12500 written the English way);
    - a Decimal must be exactly representable in minor units (trailing zeros are fine);
    - negatives only with ``allow_negative``.
    """
    exponent = currency_exponent(currency)
    if isinstance(value, bool) or not isinstance(value, str | Decimal | int):
        raise TypeError(f"amounts must be text, Decimal or int, not {type(value).__name__}")
    shown = value.strip() if isinstance(value, str) else str(value)
    if isinstance(value, str):
        amount = _fraction_from_text(shown, exponent, currency)
    elif isinstance(value, Decimal) and not value.is_finite():
        raise MoneyError(f"'{shown}' is not an amount")
    else:
        amount = Fraction(value)  # exact for int and finite Decimal, no context involved
    minor = amount * 10**exponent
    if minor.denominator != 1:
        raise MoneyError(_too_many_decimals(shown, exponent, currency))
    if minor < 0 and not allow_negative:
        raise MoneyError(f"'{shown}' is negative; the amount must be 0 or more")
    if abs(minor) > MAX_MINOR:
        raise MoneyError(f"'{shown}' is too large")
    return Money(int(minor), currency)


def _fraction_from_text(shown: str, exponent: int, currency: str) -> Fraction:
    match = _AMOUNT_RE.fullmatch(shown)
    if match is None and _GROUPED_RE.fullmatch(shown):
        raise MoneyError(f"'{shown}' is not an amount; write it without thousands separators")
    if match is None:
        raise MoneyError(f"'{shown}' is not an amount")
    sign, whole, fraction = match.groups()
    # Counted on the text, not the value: "12,500" is refused for EUR (see parse_money).
    if fraction is not None and len(fraction) > exponent:
        raise MoneyError(_too_many_decimals(shown, exponent, currency))
    return Fraction(f"{sign}{whole}.{fraction or '0'}")


def _too_many_decimals(shown: str, exponent: int, currency: str) -> str:
    if exponent == 0:
        return f"'{shown}' has decimals; {currency} amounts are whole numbers"
    return f"'{shown}' has too many decimals; {currency} has {exponent}"


def format_money(money: Money, locale: str) -> str:
    """The amount as a customer in ``locale`` expects it, e.g. "84,50 €" or "€84.50".

    CLDR puts a no-break space between number and symbol where the locale has a space, so the
    amount never wraps apart in a chat bubble.
    """
    return format_currency(money.amount, money.currency, locale=_locale(locale))


def format_rate(rate: Decimal, locale: str) -> str:
    """A VAT rate given in percent as the locale writes it: "19 %" (de), "19%" (en), "%19" (tr)."""
    # decimal_quantization=False keeps 7.5 as "7,5 %"; the default pattern would print "8 %".
    return format_percent(rate / 100, locale=_locale(locale), decimal_quantization=False)


def vat_included(gross: Money, rate: Decimal) -> Money:
    """The VAT contained in a gross amount at ``rate`` percent, rounded half up to the minor unit.

    ``rate`` is a percentage (Decimal("19") for 19 %), the same convention as the catalogue.
    VAT = gross * rate / (100 + rate); computed with exact fractions so no Decimal context
    precision can change the result, then rounded once (half away from zero, as shops and tax
    offices do; a negative gross gives the mirrored value).
    """
    if not isinstance(rate, Decimal) or not rate.is_finite() or rate < 0:
        raise MoneyError(f"VAT rate must be a Decimal percentage of 0 or more, not {rate!r}")
    exact = Fraction(gross.minor) * Fraction(rate) / (100 + Fraction(rate))
    return Money(round_half_up(exact), gross.currency)


def round_half_up(value: Fraction) -> int:
    """Round to the nearest integer, halves away from zero (0.5 -> 1, -0.5 -> -1)."""
    magnitude = abs(value)
    rounded = int(magnitude + Fraction(1, 2))  # int() floors a non-negative Fraction
    return rounded if value >= 0 else -rounded
