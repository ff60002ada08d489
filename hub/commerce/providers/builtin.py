"""The hub's own checkout page, for shops without a payment provider (and for the demo).

``create_checkout`` returns ``{public_base_url}/checkout/{reference}``; the page handler (hub
code) shows the cart and a form, and the customer chooses one of the shop's offline methods
(invoice, prepayment). Nothing is paid online, so there are no webhooks: the order is "placed"
when the form is accepted and "paid" when an adviser says so.

Pure helpers for the handler and the templates (web/templates/checkout.html, checkout_done.html):
- ``validate_checkout_form``: the posted form -> CheckoutDetails, or error codes per field;
- ``checkout_page_context`` / ``done_page_context``: everything the templates show, formatted
  for the shop's locale (amounts via CLDR, words from LABELS), so templates do no arithmetic.
Error codes (not sentences) come back from validation so the page can show them in the shop's
language; ``LABELS[lang]["errors"][code]`` is the text.
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
from hub.commerce.money import format_money, format_rate
from hub.commerce.providers.base import (
    CheckoutLink,
    CheckoutRequest,
    PaymentEvent,
    WebhookRejected,
    require_items,
)
from hub.commerce.render import labels_for

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
    prepayment_instructions: str = "Please transfer the amount within 7 days."
    invoice_instructions: str = "You will receive the invoice with the delivery."
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
    local, _, domain = value.rpartition("@")
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
    """The cleaned details, or None and an error code per field (see LABELS[...]["errors"]).

    ``methods``: the offered payment method ids; ``countries``: the offered ISO codes (None:
    any country known to CLDR). Unknown form fields (the CSRF token) are ignored.
    """
    v = {key: _clean(form.get(key, "")) for key in (*LIMITS, "country", "payment_method")}
    errors: dict[str, str] = {}
    for field, minimum, symbols in (("name", 2, False), ("street", 3, True), ("city", 1, False)):
        if code := _text(v[field], field, minimum=minimum, symbols=symbols):
            errors[field] = code
    country = v["country"].upper()
    allowed = {c.upper() for c in countries} if countries else _territory_codes()
    if not country:
        errors["country"] = "required"
    elif country not in allowed:
        errors["country"] = "unknown_choice"
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

LABELS: Mapping[str, Mapping[str, Any]] = {
    "en": {
        "checkout": "Checkout", "your_order": "Your order", "order": "Order",
        "details": "Your details", "name": "Full name", "street": "Street and house number",
        "postcode": "Postcode", "city": "Town or city", "country": "Country",
        "email": "Email", "phone": "Phone", "optional": "optional", "required": "required",
        "payment": "Payment method", "submit": "Place order",
        "privacy": "We use your details only to process this order.",
        "error_summary": "Please check the marked fields.",
        "thanks": "Thank you for your order!", "paid": "We have received your payment.",
        "placed": "Your order has been placed.", "confirming": "We are confirming your payment.",
        "cancelled": "The payment was cancelled. You can ask us in the chat for a new link.",
        "order_number": "Order number", "amount": "Amount", "how_to_pay": "How to pay",
        "methods": {"invoice": "Invoice", "prepayment": "Prepayment (bank transfer)"},
        "errors": {
            "required": "Please fill in this field.", "too_short": "This is too short.",
            "too_long": "This is too long.", "invalid": "Please check this entry.",
            "invalid_email": "Please enter a valid email address.",
            "invalid_phone": "Please enter a valid phone number.",
            "invalid_postcode": "Please enter a valid postcode for the chosen country.",
            "unknown_choice": "Please choose one of the options.",
        },
    },
    "de": {
        "checkout": "Kasse", "your_order": "Ihre Bestellung", "order": "Bestellung",
        "details": "Ihre Angaben", "name": "Vor- und Nachname", "street": "Straße und Hausnummer",
        "postcode": "PLZ", "city": "Ort", "country": "Land",
        "email": "E-Mail", "phone": "Telefon", "optional": "optional", "required": "Pflichtfeld",
        "payment": "Zahlungsart", "submit": "Zahlungspflichtig bestellen",
        "privacy": "Wir verwenden Ihre Angaben nur für diese Bestellung.",
        "error_summary": "Bitte prüfen Sie die markierten Felder.",
        "thanks": "Vielen Dank für Ihre Bestellung!", "paid": "Ihre Zahlung ist eingegangen.",
        "placed": "Ihre Bestellung ist eingegangen.", "confirming": "Wir prüfen Ihre Zahlung.",
        "cancelled": "Die Zahlung wurde abgebrochen. Im Chat senden wir gern einen neuen Link.",
        "order_number": "Bestellnummer", "amount": "Betrag", "how_to_pay": "So bezahlen Sie",
        "methods": {"invoice": "Rechnung", "prepayment": "Vorkasse (Überweisung)"},
        "errors": {
            "required": "Bitte füllen Sie dieses Feld aus.", "too_short": "Das ist zu kurz.",
            "too_long": "Das ist zu lang.", "invalid": "Bitte prüfen Sie diese Angabe.",
            "invalid_email": "Bitte geben Sie eine gültige E-Mail-Adresse ein.",
            "invalid_phone": "Bitte geben Sie eine gültige Telefonnummer ein.",
            "invalid_postcode": "Bitte geben Sie eine gültige PLZ für das gewählte Land ein.",
            "unknown_choice": "Bitte wählen Sie eine der Möglichkeiten.",
        },
    },
    "fr": {
        "checkout": "Paiement", "your_order": "Votre commande", "order": "Commande",
        "details": "Vos coordonnées", "name": "Nom complet", "street": "Rue et numéro",
        "postcode": "Code postal", "city": "Ville", "country": "Pays",
        "email": "E-mail", "phone": "Téléphone",
        "optional": "facultatif", "required": "obligatoire",
        "payment": "Mode de paiement", "submit": "Commander",
        "privacy": "Nous utilisons vos coordonnées uniquement pour cette commande.",
        "error_summary": "Veuillez vérifier les champs signalés.",
        "thanks": "Merci pour votre commande !", "paid": "Nous avons bien reçu votre paiement.",
        "placed": "Votre commande est enregistrée.", "confirming": "Nous vérifions votre paiement.",
        "cancelled": "Le paiement a été annulé. Demandez-nous un nouveau lien dans le chat.",
        "order_number": "Numéro de commande", "amount": "Montant", "how_to_pay": "Comment payer",
        "methods": {"invoice": "Facture", "prepayment": "Paiement anticipé (virement)"},
        "errors": {
            "required": "Veuillez remplir ce champ.", "too_short": "C’est trop court.",
            "too_long": "C’est trop long.", "invalid": "Veuillez vérifier cette saisie.",
            "invalid_email": "Veuillez saisir une adresse e-mail valide.",
            "invalid_phone": "Veuillez saisir un numéro de téléphone valide.",
            "invalid_postcode": "Veuillez saisir un code postal valide pour ce pays.",
            "unknown_choice": "Veuillez choisir une des options.",
        },
    },
}  # fmt: skip


def language(locale: str) -> str:
    lang = locale.replace("-", "_").split("_", 1)[0].lower()
    return lang if lang in LABELS else "en"


def _instructions(settings: object, method: str) -> str:
    return str(getattr(settings, f"{method}_instructions", "") or "")


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
    (BuiltinSettings or the hub's commerce.builtin config section).
    """
    lang, render = language(locale), labels_for(locale)
    t = LABELS[lang]
    lines = [
        {
            "name": line.name,
            "quantity": line.quantity,
            "unit_price": format_money(line.unit_price, locale),
            "total": format_money(line.total, locale),
        }
        for line in cart.lines
    ]
    vat = [
        render.vat.format(rate=format_rate(rate, locale)) + render.colon + format_money(m, locale)
        for rate, m in cart.vat_breakdown().items()
        if not m.is_zero  # "incl. 0 % VAT: 0,00 €" says nothing
    ]
    offered = list(getattr(settings, "countries", None) or DEFAULT_COUNTRIES)
    countries, default_country = _countries(locale, offered)
    count = render.item if cart.item_count == 1 else render.items.format(n=cart.item_count)
    return {
        "t": t,
        "lang": lang,
        "order_number": order_number,
        "lines": lines,
        "item_count": count,
        "total_label": render.total,
        "each": render.each,
        "total": format_money(cart.total, locale),
        "vat": vat,
        "methods": [
            {"id": m, "label": t["methods"].get(m, m), "instructions": _instructions(settings, m)}
            for m in methods
        ],
        "countries": countries,
        "default_country": default_country,
        "limits": dict(LIMITS),
    }


def done_page_context(*, locale: str, payment_method: str | None) -> dict[str, Any]:
    """Values for checkout_done.html besides the handler's order_number, amount,
    payment_method, instructions, status (and optionally outcome="cancelled")."""
    lang = language(locale)
    t = LABELS[lang]
    label = t["methods"].get(payment_method, payment_method) if payment_method else None
    return {"t": t, "lang": lang, "method_label": label}


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
