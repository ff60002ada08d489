"""The cart an adviser builds in a customer's room: immutable, exact, and storable as JSON.

Every operation returns a new Cart or raises CartError with text an adviser can act on, so a
refused command leaves the stored cart untouched by construction. Prices are VAT-inclusive (as
consumers see them); the VAT part is computed per line and summed, the way shop systems and
invoices do it, which can differ by a cent from VAT computed on the total.

The handler checks that a SKU exists in the catalogue (it owns the lookup) and passes the
Product; everything else about a valid cart is checked here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from typing import Any

from hub.commerce.catalogue import Product, canonical_rate
from hub.commerce.money import Money, currency_exponent, total, vat_included
from hub.errors import UserError
from hub.i18n import _

JSON_VERSION = 1
# A cart is also a Matrix state event (64 KiB at most); 50 lines of long names stay well inside,
# and no chat sale has more.
MAX_LINES = 50


class CartError(UserError):
    """The cart operation is refused; the message is shown to the adviser as is."""


@dataclass(frozen=True, slots=True)
class CartLine:
    """``quantity`` of one product at its VAT-inclusive ``unit_price``."""

    sku: str
    name: str
    quantity: int
    unit_price: Money
    vat_rate: Decimal  # percent, e.g. Decimal("19")
    variant_id: str | None = None

    def __post_init__(self) -> None:
        if type(self.quantity) is not int or self.quantity < 1:
            raise ValueError(f"quantity must be a positive int, not {self.quantity!r}")
        if not isinstance(self.vat_rate, Decimal):
            raise TypeError("vat_rate must be a Decimal percentage")

    @property
    def total(self) -> Money:
        return self.unit_price * self.quantity

    @property
    def vat(self) -> Money:
        """The VAT included in this line's total, rounded once for the line."""
        return vat_included(self.total, self.vat_rate)

    def label(self) -> str:
        return f"{self.name} ({self.sku})"


@dataclass(frozen=True, slots=True)
class Cart:
    """An ordered set of lines in one currency; SKUs are unique (ignoring case)."""

    currency: str
    lines: tuple[CartLine, ...] = ()

    def __post_init__(self) -> None:
        currency_exponent(self.currency)
        if not isinstance(self.lines, tuple):
            raise TypeError("Cart.lines must be a tuple (the cart is immutable)")
        seen: set[str] = set()
        for line in self.lines:
            if line.unit_price.currency != self.currency:
                raise ValueError(
                    f"line {line.sku} is in {line.unit_price.currency}, not {self.currency}"
                )
            if line.sku.casefold() in seen:
                raise ValueError(f"SKU {line.sku} appears twice in the cart")
            seen.add(line.sku.casefold())

    @classmethod
    def empty(cls, currency: str) -> Cart:
        return cls(currency)

    # --- reading ------------------------------------------------------------------------------

    @property
    def is_empty(self) -> bool:
        return not self.lines

    @property
    def item_count(self) -> int:
        """Number of pieces (2 × A + 1 × B is 3), as a "3 items" label counts."""
        return sum(line.quantity for line in self.lines)

    @property
    def total(self) -> Money:
        return total((line.total for line in self.lines), self.currency)

    def line_total(self, line: CartLine) -> Money:
        return line.total

    def find(self, sku: str) -> CartLine | None:
        key = sku.strip().casefold()
        return next((line for line in self.lines if line.sku.casefold() == key), None)

    def vat_breakdown(self) -> dict[Decimal, Money]:
        """VAT included per rate, highest rate first; each line rounded, then summed.

        Rates of 0 % appear with a zero amount so the caller can decide whether to print them.
        """
        result: dict[Decimal, Money] = {}
        for line in self.lines:
            rate = canonical_rate(line.vat_rate)
            result[rate] = result.get(rate, Money.zero(self.currency)) + line.vat
        return dict(sorted(result.items(), key=lambda item: item[0], reverse=True))

    # --- changing (each returns a new Cart) ---------------------------------------------------

    def add(self, product: Product, qty: int, max_qty: int, *, max_lines: int = MAX_LINES) -> Cart:
        """Add ``qty`` of ``product``; an existing line grows and takes the current price/name.

        The catalogue is the source of truth, so re-adding a product whose price changed since
        it was first added reprices the whole line rather than keeping two prices for one SKU.
        """
        _check_quantity(qty)
        if product.price.currency != self.currency:
            raise CartError(
                _("{product} ({sku}) is priced in {currency}, but this cart is in {cart}").format(
                    product=product.name,
                    sku=product.sku,
                    currency=product.price.currency,
                    cart=self.currency,
                )
            )
        if not product.in_stock:
            raise CartError(
                _("{product} ({sku}) is out of stock").format(product=product.name, sku=product.sku)
            )
        existing = self.find(product.sku)
        have = existing.quantity if existing else 0
        if have + qty > max_qty:
            if have:
                text = _(
                    "at most {max} of one product per cart; {product} ({sku}) would have {total} "
                    "({have} already in the cart)"
                )
            else:
                text = _(
                    "at most {max} of one product per cart; {product} ({sku}) would have {total}"
                )
            raise CartError(
                text.format(
                    max=max_qty, product=product.name, sku=product.sku, total=have + qty, have=have
                )
            )
        line = CartLine(
            sku=product.sku,
            name=product.name,
            quantity=have + qty,
            unit_price=product.price,
            vat_rate=product.vat_rate,
            variant_id=product.variant_id,
        )
        if existing is None:
            if len(self.lines) >= max_lines:
                raise CartError(
                    _("the cart already has {n} products, the most it can hold").format(n=max_lines)
                )
            return replace(self, lines=(*self.lines, line))
        return replace(self, lines=tuple(line if old is existing else old for old in self.lines))

    def remove(self, sku: str, qty: int | None = None) -> Cart:
        """Take ``qty`` pieces off a line, or the whole line when ``qty`` is None or too big."""
        if qty is not None:
            _check_quantity(qty)
        existing = self.find(sku)
        if existing is None:
            raise CartError(_("{sku} is not in the cart").format(sku=sku))
        if qty is None or qty >= existing.quantity:
            return replace(self, lines=tuple(old for old in self.lines if old is not existing))
        smaller = replace(existing, quantity=existing.quantity - qty)
        return replace(self, lines=tuple(smaller if old is existing else old for old in self.lines))

    def clear(self) -> Cart:
        return Cart(self.currency)

    # --- storage ------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict for the database and the room's state event.

        Keys are stable and amounts are integers in minor units. Totals and VAT are included for
        readers that do no arithmetic (dashboard, other clients); from_json ignores them and
        recomputes, so a stale or edited total can never become the truth.
        """
        return {
            "version": JSON_VERSION,
            "currency": self.currency,
            "lines": [
                {
                    "sku": line.sku,
                    "name": line.name,
                    "quantity": line.quantity,
                    "unit_price_minor": line.unit_price.minor,
                    "vat_rate": str(canonical_rate(line.vat_rate)),
                    "variant_id": line.variant_id,
                    "line_total_minor": line.total.minor,
                }
                for line in self.lines
            ],
            "total_minor": self.total.minor,
            "vat_minor": {str(rate): vat.minor for rate, vat in self.vat_breakdown().items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Cart:
        """Rebuild a cart from ``to_json`` output; ValueError if it is not one (a stored cart
        that cannot be read is an internal problem, not the adviser's)."""
        try:
            if data["version"] != JSON_VERSION:
                raise ValueError(f"unsupported cart version {data['version']!r}")
            currency = _typed(data["currency"], str, "currency")
            lines = tuple(_line_from_json(item, currency) for item in data["lines"])
            return cls(currency, lines)
        except (KeyError, TypeError, InvalidOperation) as exc:
            raise ValueError(f"not a stored cart: {exc!r}") from exc


def _check_quantity(qty: int) -> None:
    if type(qty) is not int:
        raise CartError(_("the quantity must be a whole number, not {qty}").format(qty=repr(qty)))
    if qty < 1:
        raise CartError(_("the quantity must be 1 or more, not {qty}").format(qty=qty))


def _typed(value: Any, kind: type, name: str) -> Any:
    # bool is an int; a "quantity": true must not become 1.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{name} must be {kind.__name__}, not {type(value).__name__}")
    return value


def _line_from_json(item: Mapping[str, Any], currency: str) -> CartLine:
    rate = Decimal(_typed(item["vat_rate"], str, "vat_rate"))
    if not rate.is_finite() or not 0 <= rate < 100:
        raise ValueError(f"vat_rate {rate} is not a percentage")
    variant = item.get("variant_id")
    return CartLine(
        sku=_typed(item["sku"], str, "sku"),
        name=_typed(item["name"], str, "name"),
        quantity=_typed(item["quantity"], int, "quantity"),
        unit_price=Money(_typed(item["unit_price_minor"], int, "unit_price_minor"), currency),
        vat_rate=canonical_rate(rate),
        variant_id=None if variant is None else _typed(variant, str, "variant_id"),
    )
