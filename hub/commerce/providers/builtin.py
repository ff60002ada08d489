"""The hub's own checkout page, for shops without a payment provider (and for the demo).

``create_checkout`` returns ``{public_base_url}/checkout/{reference}``; the page handler (hub
code) shows the cart and a form, and the customer chooses one of the shop's offline methods
(invoice, prepayment). Nothing is paid online, so there are no webhooks: the order is "placed"
when the form is accepted and "paid" when an adviser says so.

Pure helpers for the handler and the templates (web/templates/checkout.html, checkout_done.html):
- ``validate_checkout_form``: the posted form -> CheckoutDetails, or error codes per field;
- ``checkout_page_context`` / ``done_page_context``: what the templates show that depends on
  the order, formatted for the shop's locale (amounts via CLDR, words from the gettext
  catalogues), so templates do no arithmetic.
Error codes (not sentences) come back from validation so the page can show them in the shop's
language; ``ERROR_TEXTS[code]`` is the text.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from babel import Locale
from babel.core import get_global
from pydantic import BaseModel, ConfigDict, Field, field_validator

from hub.commerce.cart import Cart
from hub.commerce.money import format_money
from hub.commerce.providers.base import (
    CheckoutLink,
    CheckoutRequest,
    PaymentEvent,
    WebhookRejected,
    require_items,
)
from hub.commerce.render import item_count, vat_lines
from hub.i18n import N_, _

if TYPE_CHECKING:
    import aiohttp

MethodId = Literal["invoice", "prepayment"]
LIMITS: Mapping[str, int] = {
    "name": 100, "street": 200, "postcode": 12, "city": 100, "email": 254, "phone": 32,
}  # fmt: skip
_ALL_METHODS: list[MethodId] = ["invoice", "prepayment"]
DEFAULT_COUNTRIES = ("DE", "AT", "CH", "NL", "BE", "LU", "FR", "IT", "ES", "DK", "PL", "GB", "US")


class BuiltinSettings(BaseModel):
    """commerce.builtin in the hub's config (plus the hub's public URL)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    public_base_url: str = Field(pattern=r"^https?://[^?#\s]+$")  # http.public_base
    payment_methods: list[MethodId] = Field(
        default_factory=lambda: _ALL_METHODS.copy(), min_length=1
    )
    # None: the catalogue's text in the shop's language (INSTRUCTIONS).
    prepayment_instructions: str | None = None
    invoice_instructions: str | None = None
    # Countries offered in the address form (ISO 3166 alpha-2); the first is preselected
    # unless the shop locale names one of them.
    countries: list[str] = Field(default_factory=lambda: list(DEFAULT_COUNTRIES), min_length=1)

    @field_validator("public_base_url")
    @classmethod
    def _strip(cls, v: str) -> str:
        return v.rstrip("/")

    @field_validator("countries")
    @classmethod
    def _codes(cls, v: list[str]) -> list[str]:
        bad = [c for c in v if c.upper() not in _territory_codes()]
        if bad:
            raise ValueError(f"not ISO country codes: {', '.join(bad)}")
        return [c.upper() for c in v]


@dataclass(frozen=True, slots=True)
class CheckoutDetails:
    """What the customer entered, cleaned (NFC, single spaces); optional fields may be None."""

    name: str
    street: str
    postcode: str
    city: str
    country: str  # ISO 3166 alpha-2
    email: str | None
    phone: str | None
    payment_method: str

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)


# --- validation (pure) ------------------------------------------------------------------------

_JOINERS = frozenset("\u200c\u200d")  # ZWNJ/ZWJ belong to Persian and Indic names
_POSTCODES: Mapping[str, re.Pattern[str]] = {
    code: re.compile(pattern)
    for code, pattern in {
        "DE": r"[0-9]{5}", "FR": r"[0-9]{5}", "IT": r"[0-9]{5}", "ES": r"[0-9]{5}",
        "AT": r"[0-9]{4}", "CH": r"[0-9]{4}", "BE": r"[0-9]{4}", "DK": r"[0-9]{4}",
        "LU": r"(L-?)?[0-9]{4}", "NL": r"[0-9]{4} ?[A-Z]{2}", "PL": r"[0-9]{2}-[0-9]{3}",
        "US": r"[0-9]{5}(-[0-9]{4})?", "GB": r"[A-Z]{1,2}[0-9][A-Z0-9]? ?[0-9][A-Z]{2}",
    }.items()
}  # fmt: skip
_GENERIC_POSTCODE = re.compile(r"[A-Z0-9][A-Z0-9 \-]{1,11}")
_EMAIL_RE = re.compile(r"[^@\s]{1,64}@(?:[\w\-]+\.)+[\w\-]{2,63}")
_PHONE_RE = re.compile(r"\+?[0-9 ()\-/.]{6,31}")


@lru_cache(maxsize=1)
def _territory_codes() -> frozenset[str]:
    """ISO 3166 alpha-2 codes of real territories, from CLDR's global data (loaded for the
    currencies anyway). Not from a locale's territory names: loading one costs ≈2.4 MiB
    resident at start, and they also name groupings (EU, UN, EZ) no parcel goes to."""
    codes = get_global("territory_languages")
    return frozenset(c for c in codes if len(c) == 2 and c.isalpha())


def _clean(value: object) -> str:
    """NFC, any run of whitespace (tabs, newlines, no-break spaces) as one space, trimmed."""
    text = unicodedata.normalize("NFC", value if isinstance(value, str) else "")
    return " ".join(text.split())


def _bad_char(text: str, *, symbols: bool) -> bool:
    for ch in text:
        category = unicodedata.category(ch)
        if category[0] == "C" and ch not in _JOINERS:
            return True  # control, format, private use, unassigned: never typed by a person
        if category[0] == "S" and not symbols:
            return True  # emoji and symbols do not belong in a name or a town
    return False


def _text(value: str, field: str, *, minimum: int, symbols: bool) -> str | None:
    """An error code for a required free-text field, or None when it is fine."""
    if not value:
        return "required"
    if len(value) > LIMITS[field]:
        return "too_long"
    if len(value) < minimum:
        return "too_short"
    if _bad_char(value, symbols=symbols) or not any(ch.isalpha() for ch in value):
        return "invalid"
    return None


def _postcode(value: str, country: str) -> tuple[str, str | None]:
    # NFKC turns full-width digits (１０１１５) into ASCII ones; postcodes are compared upper.
    code = " ".join(unicodedata.normalize("NFKC", value).upper().split())
    if not code:
        return code, "required"
    if len(code) > LIMITS["postcode"]:
        return code, "too_long"
    pattern = _POSTCODES.get(country, _GENERIC_POSTCODE)
    return code, None if pattern.fullmatch(code) else "invalid_postcode"


def _email(value: str) -> tuple[str | None, str | None]:
    if not value:
        return None, None
    if len(value) > LIMITS["email"] or _bad_char(value, symbols=True):
        return value, "invalid_email"
    if not _EMAIL_RE.fullmatch(value):
        return value, "invalid_email"
    local, _at, domain = value.rpartition("@")
    return f"{local}@{domain.lower()}", None


def _phone(value: str) -> tuple[str | None, str | None]:
    phone = " ".join(unicodedata.normalize("NFKC", value).split())
    if not phone:
        return None, None
    digits = sum(ch.isdigit() for ch in phone)
    if not _PHONE_RE.fullmatch(phone) or not 6 <= digits <= 15:  # E.164: at most 15 digits
        return phone, "invalid_phone"
    return phone, None


def validate_checkout_form(
    form: Mapping[str, str],
    methods: Sequence[str],
    *,
    countries: Sequence[str] | None = None,
) -> tuple[CheckoutDetails | None, dict[str, str]]:
    """The cleaned details, or None and an error code per field (see ERROR_TEXTS).

    ``methods``: the offered payment method ids; ``countries``: the offered ISO codes (None:
    any country known to CLDR; the hub passes ``offered_countries(settings)``, the list the
    page shows: the form is checked on the server, a tampered or stale one included).
    Unknown form fields (the CSRF token) are ignored.
    """
    v = {key: _clean(form.get(key, "")) for key in (*LIMITS, "country", "payment_method")}
    errors: dict[str, str] = {}
    for field, minimum, symbols in (("name", 2, False), ("street", 3, True), ("city", 1, False)):
        if code := _text(v[field], field, minimum=minimum, symbols=symbols):
            errors[field] = code
    country = v["country"].upper()
    if not country:
        errors["country"] = "required"
    elif country not in _territory_codes():
        errors["country"] = "unknown_choice"
    elif countries and country not in {c.upper() for c in countries}:
        errors["country"] = "country_not_offered"
    postcode, code = _postcode(v["postcode"], country)
    if code:
        errors["postcode"] = code
    email, code = _email(v["email"])
    if code:
        errors["email"] = code
    phone, code = _phone(v["phone"])
    if code:
        errors["phone"] = code
    method = v["payment_method"]
    if not method:
        errors["payment_method"] = "required"
    elif method not in methods:
        errors["payment_method"] = "unknown_choice"
    if errors:
        return None, errors
    details = CheckoutDetails(
        name=v["name"], street=v["street"], postcode=postcode, city=v["city"], country=country,
        email=email, phone=phone, payment_method=method,
    )  # fmt: skip
    return details, {}


# --- what the templates show (pure) -----------------------------------------------------------

# The templates write their own words with _() (jinja2's i18n extension, hub.http.pages); what
# depends on data comes from here, in the shop's language.
METHOD_LABELS: Mapping[str, str] = {
    "invoice": N_("Invoice"),
    "prepayment": N_("Prepayment (bank transfer)"),
}
# What the customer reads after choosing a method, unless commerce.builtin sets a text.
INSTRUCTIONS: Mapping[str, str] = {
    "prepayment": N_("Please transfer the amount within 7 days."),
    "invoice": N_("You will receive the invoice with the delivery."),
}
# validate_checkout_form's error codes as the page shows them.
ERROR_TEXTS: Mapping[str, str] = {
    "required": N_("Please fill in this field."),
    "too_short": N_("This is too short."),
    "too_long": N_("This is too long."),
    "invalid": N_("Please check this entry."),
    "invalid_email": N_("Please enter a valid email address."),
    "invalid_phone": N_("Please enter a valid phone number."),
    "invalid_postcode": N_("Please enter a valid postcode for the chosen country."),
    "unknown_choice": N_("Please choose one of the options."),
    "country_not_offered": N_(
        "We do not deliver to this country. Please choose one of the countries in the list."
    ),
}


def method_label(method: str) -> str:
    """ "Prepayment (bank transfer)" / "Vorkasse (Überweisung)"; an unknown id as it is."""
    return _(METHOD_LABELS[method]) if method in METHOD_LABELS else method


def instructions(settings: object, method: str | None) -> str:
    """How to pay with `method`: the configured text (``<method>_instructions`` of
    ``settings``), else the catalogue's; "" for no or an unknown method."""
    if not method:
        return ""
    configured = getattr(settings, f"{method}_instructions", None)
    if configured is not None:
        return str(configured)
    return _(INSTRUCTIONS[method]) if method in INSTRUCTIONS else ""


def offered_countries(settings: object) -> list[str]:
    """The ISO codes the address form offers (``countries`` of commerce.builtin, else the
    default list): what the page shows and what the server accepts."""
    return [c.upper() for c in (getattr(settings, "countries", None) or DEFAULT_COUNTRIES)]


def _countries(locale: str, offered: Sequence[str]) -> tuple[list[tuple[str, str]], str]:
    names = Locale.parse(locale.replace("-", "_")).territories
    options = [(code, names.get(code, code)) for code in offered]
    own = locale.replace("-", "_").split("_")[-1].upper()
    return options, own if own in offered else offered[0]


def checkout_page_context(
    *,
    cart: Cart,
    locale: str,
    order_number: str,
    methods: Sequence[str],
    settings: object = None,
) -> dict[str, Any]:
    """Values for checkout.html (the handler adds shop_name, csrf, form and errors).

    ``settings``: anything with ``<method>_instructions`` and optionally ``countries``
    (BuiltinSettings or the hub's commerce.builtin config section). Amounts and country names
    follow ``locale``; words are in the shop's language (hub.i18n).
    """
    lines = [
        {
            "name": line.name,
            "quantity": line.quantity,
            "unit_price": format_money(line.unit_price, locale),
            "total": format_money(line.total, locale),
        }
        for line in cart.lines
    ]
    offered = offered_countries(settings)
    countries, default_country = _countries(locale, offered)
    return {
        "order_number": order_number,
        "lines": lines,
        "item_count": item_count(cart.item_count),
        "total": format_money(cart.total, locale),
        "vat": vat_lines(cart.vat_breakdown(), locale),
        "methods": [
            {"id": m, "label": method_label(m), "instructions": instructions(settings, m)}
            for m in methods
        ],
        "countries": countries,
        "default_country": default_country,
        "limits": dict(LIMITS),
        "error_texts": {code: _(text) for code, text in ERROR_TEXTS.items()},
    }


def done_page_context(*, locale: str, payment_method: str | None) -> dict[str, Any]:
    """Values for checkout_done.html besides the handler's order_number, amount,
    payment_method, instructions, status (and optionally outcome="cancelled")."""
    return {"method_label": method_label(payment_method) if payment_method else None}


# --- the provider -----------------------------------------------------------------------------


class BuiltinProvider:
    name = "builtin"

    def __init__(self, settings: BuiltinSettings, http: aiohttp.ClientSession) -> None:
        self.settings = settings
        self.http = http  # unused: the page is served by the hub itself

    async def create_checkout(self, req: CheckoutRequest) -> CheckoutLink:
        require_items(req)
        url = f"{self.settings.public_base_url}/checkout/{quote(req.reference, safe='')}"
        return CheckoutLink(url=url, provider_ref="")

    async def parse_webhook(self, headers: Mapping[str, str], raw: bytes) -> list[PaymentEvent]:
        raise WebhookRejected(400, "the built-in checkout receives no webhooks")

    async def aclose(self) -> None:
        return None
