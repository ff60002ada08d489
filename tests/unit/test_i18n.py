"""The gettext catalogues (hub/locale) against the code: every text marked with _(), N_() or
ngettext() in hub/ and in web/templates is translated in German and English, nothing stale is
kept, and each translation has the placeholders of its text; and the hub really writes German
for a German shop (hub.i18n), with texts set in the config still winning.

When this fails after a code change: run `bash scripts/update_catalogues.sh`, translate what
it reports in hub/locale/de/LC_MESSAGES/hub.po and hub/locale/en/LC_MESSAGES/hub.po.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from babel.messages.catalog import Catalog, Message
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from hub import i18n

ROOT = Path(__file__).resolve().parents[2]
LANGUAGES = ("de", "en")
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")

SetLocale = Callable[[str], None]


def _extracted() -> dict[str, tuple[str, ...]]:
    """msgid (the singular of a plural) -> all its forms, extracted the way babel.cfg says."""
    with (ROOT / "babel.cfg").open(encoding="utf-8") as fp:
        method_map, options_map = parse_mapping_cfg(fp, "babel.cfg")
    found: dict[str, tuple[str, ...]] = {}
    for _filename, _lineno, message, _comments, _context in extract_from_dir(
        str(ROOT), method_map, options_map
    ):
        forms = (message,) if isinstance(message, str) else tuple(message)
        found[forms[0]] = forms
    return found


EXTRACTED = _extracted()


def _catalog(language: str) -> Catalog:
    path = ROOT / "hub" / "locale" / language / "LC_MESSAGES" / "hub.po"
    with path.open("rb") as fp:
        return read_po(fp, locale=language)


def _messages(catalog: Catalog) -> dict[str, Message]:
    return {m.id if isinstance(m.id, str) else m.id[0]: m for m in catalog if m.id}


def _strings(message: Message) -> tuple[str, ...]:
    return (message.string,) if isinstance(message.string, str) else tuple(message.string)


def test_the_code_has_texts_to_translate() -> None:
    # A broken babel.cfg (or extractor) would make every other check here pass vacuously.
    assert len(EXTRACTED) > 300
    assert "Order {number} has been delivered. Enjoy!" in EXTRACTED  # python, _()
    assert "Prepayment (bank transfer)" in EXTRACTED  # python, N_()
    assert EXTRACTED["{n} item"] == ("{n} item", "{n} items")  # ngettext
    assert "Place order" in EXTRACTED  # jinja2 template


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_text_is_translated(language: str) -> None:
    messages = _messages(_catalog(language))
    missing = sorted(set(EXTRACTED) - set(messages))
    assert missing == [], f"{language}: not in the catalogue (run scripts/update_catalogues.sh)"
    untranslated = sorted(
        msgid
        for msgid in EXTRACTED
        if not all(s.strip() for s in _strings(messages[msgid])) or messages[msgid].fuzzy
    )
    assert untranslated == [], f"{language}: empty or fuzzy translations"
    plural_mismatch = sorted(
        msgid
        for msgid, forms in EXTRACTED.items()
        if (len(forms) > 1) != isinstance(messages[msgid].id, tuple)
    )
    assert plural_mismatch == [], f"{language}: singular/plural differs from the code"


@pytest.mark.parametrize("language", LANGUAGES)
def test_no_obsolete_texts(language: str) -> None:
    catalog = _catalog(language)
    stale = sorted(set(_messages(catalog)) - set(EXTRACTED))
    assert stale == [], f"{language}: texts no longer in the code"
    assert not catalog.obsolete, f"{language}: obsolete (#~) entries"


@pytest.mark.parametrize("language", LANGUAGES)
def test_translations_have_the_placeholders_of_their_text(language: str) -> None:
    wrong = []
    for msgid, message in _messages(_catalog(language)).items():
        forms = EXTRACTED.get(msgid, (msgid,))
        for n, string in enumerate(_strings(message)):
            original = forms[min(n, len(forms) - 1)]
            if set(PLACEHOLDER.findall(string)) != set(PLACEHOLDER.findall(original)):
                wrong.append((language, msgid, string))
    assert wrong == []


def test_english_is_the_code_s_own_wording() -> None:
    # msgids are English: the English catalogue repeats them unless it improves one.
    messages = _messages(_catalog("en"))
    assert messages["Your cart is empty."].string == "Your cart is empty."


def _py_files() -> Iterator[Path]:
    yield from (p for p in (ROOT / "hub").rglob("*.py") if "migrations" not in p.parts)


def test_no_text_hides_in_an_f_string() -> None:
    """Python 3.11 tokenises an f-string as one string: a _("…") inside it is translated at
    run time but never extracted, so it would silently stay English."""
    hidden = []
    for path in _py_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.JoinedStr):
                continue
            for inner in ast.walk(node):
                if (
                    isinstance(inner, ast.Call)
                    and isinstance(inner.func, ast.Name)
                    and inner.func.id in ("_", "N_", "ngettext")
                    and any(isinstance(a, ast.Constant) for a in inner.args)
                ):
                    hidden.append(f"{path.relative_to(ROOT)}:{inner.lineno}")
    assert hidden == []


def test_no_function_hides_the_gettext_underscore() -> None:
    """`_, x = pair` in a function that also calls _() makes _ a local: the call fails."""
    clashes = []
    for path in _py_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            nodes = list(ast.walk(fn))
            binds = any(isinstance(n, ast.Name) and n.id == "_" and isinstance(n.ctx, ast.Store)
                        for n in nodes)  # fmt: skip
            calls = any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                        and n.func.id == "_" for n in nodes)  # fmt: skip
            if binds and calls:
                clashes.append(f"{path.relative_to(ROOT)}:{fn.lineno} {fn.name}")
    assert clashes == []


# --- the hub writes the shop's language ----------------------------------------------------


def test_english_until_a_locale_is_set() -> None:
    assert i18n.current_locale() == "en"
    assert i18n._("Your cart is empty.") == "Your cart is empty."


def test_a_language_without_catalogue_falls_back_to_english(shop_language: SetLocale) -> None:
    shop_language("ja_JP")
    assert i18n._("Your cart is empty.") == "Your cart is empty."
    assert i18n.current_locale() == "ja_JP"  # Japanese numbers and dates all the same


def _cart() -> Any:
    from hub.commerce.cart import Cart
    from hub.commerce.catalogue import Product
    from hub.commerce.money import Money

    paint = Product("AC-KB-500", "Acrylfarbe Kobaltblau", Money(1250, "EUR"), Decimal("19"))
    return Cart.empty("EUR").add(paint, 2, 10)


@pytest.mark.parametrize(
    ("locale", "heading", "total"),
    [
        ("de_DE", "🛒 Warenkorb: 2 Artikel", "Gesamt: 25,00\u00a0€"),
        ("en_US", "🛒 Cart: 2 items", "Total: €25.00"),
    ],
)
def test_cart_notice(shop_language: SetLocale, locale: str, heading: str, total: str) -> None:
    from hub.commerce.render import cart_notice

    shop_language(locale)
    plain, _html = cart_notice(_cart(), locale)
    assert plain.split("\n")[0] == heading
    assert total in plain


@pytest.mark.parametrize(
    ("locale", "text"),
    [
        ("de_DE", "Gute Nachrichten: Ihre Bestellung 0042 ist unterwegs. https://t.example/1"),
        ("en_US", "Good news: order 0042 is on its way. https://t.example/1"),
    ],
)
def test_order_update_for_the_customer(shop_language: SetLocale, locale: str, text: str) -> None:
    from hub.commerce.orders import OrderStatus
    from hub.commerce.service import Shop
    from hub.config.commerce import CommerceConfig

    shop_language(locale)
    shop = Shop(None, CommerceConfig(), None, {}, "http://hub")  # type: ignore[arg-type]
    shipped = shop._order_text(OrderStatus.SHIPPED, "0042", "84,50 €", "https://t.example/1", "")
    assert shipped == text


def test_configured_texts_win_over_the_catalogue(shop_language: SetLocale) -> None:
    from hub.commerce.orders import OrderStatus
    from hub.commerce.service import Shop
    from hub.config.commerce import CommerceConfig, CommerceTexts

    shop_language("de_DE")
    texts = CommerceTexts(delivered="Paket {number} ist da!")
    shop = Shop(None, CommerceConfig(texts=texts), None, {}, "http://hub")  # type: ignore[arg-type]
    assert shop._order_text(OrderStatus.DELIVERED, "0042", "", None, "") == "Paket 0042 ist da!"
    paid = shop._order_text(OrderStatus.PAID, "0042", "84,50 €", None, "")
    assert paid == "Vielen Dank! Ihre Zahlung für die Bestellung 0042 (84,50 €) ist eingegangen."


@pytest.mark.parametrize(
    ("locale", "fragment"),
    [
        ("de_DE", "Die letzte Antwort des Kunden ist mehr als 24 Stunden her"),
        ("en_US", "More than 24 hours have passed since the customer last replied"),
    ],
)
def test_whatsapp_error_text(shop_language: SetLocale, locale: str, fragment: str) -> None:
    from hub.bridges.whatsapp import errors

    shop_language(locale)
    error = errors.classify(400, {"error": {"code": errors.WINDOW_CLOSED}})
    assert error.human.startswith(fragment)
    assert errors.human_text(errors.WINDOW_CLOSED).startswith(fragment)


@pytest.mark.parametrize(
    ("locale", "message"),
    [
        ("de_DE", "QTY muss eine ganze Zahl ≥ 1 sein – Aufruf: !cart add SKU [QTY]"),
        ("en_US", "QTY must be a whole number ≥ 1 — usage: !cart add SKU [QTY]"),
    ],
)
def test_command_usage_error(shop_language: SetLocale, locale: str, message: str) -> None:
    from hub.core.commands import ArgumentError, CommandRegistry, CommandSpec, IntArg, WordArg
    from hub.core.commands import parse as parse_command

    shop_language(locale)
    registry: CommandRegistry[None] = CommandRegistry()
    registry.register(
        CommandSpec(
            "cart add", None, args=(WordArg("sku"), IntArg("qty", min_value=1, optional=True))
        )
    )
    result = parse_command("!cart add AC-1 zwei", "!", registry)
    assert isinstance(result, ArgumentError)
    assert result.message == message


def test_help_texts_follow_the_language(shop_language: SetLocale) -> None:
    from hub.core.commands import CommandRegistry, CommandSpec
    from hub.i18n import N_

    registry: CommandRegistry[None] = CommandRegistry()
    registry.register(CommandSpec("cart", None, help=N_("Show the cart")))  # specs made once
    assert registry.help_text("!") == "Commands:\n!cart — Show the cart"
    shop_language("de_DE")
    assert registry.help_text("!") == "Befehle:\n!cart — Den Warenkorb anzeigen"


def test_widget_texts(shop_language: SetLocale) -> None:
    from hub.bridges.webchat.texts import WIDGET_TEXTS, widget_texts

    assert widget_texts()["today"] == "Today"
    shop_language("de_DE")
    german = widget_texts()
    assert german.keys() == WIDGET_TEXTS.keys()
    assert german["today"] == "Heute"
    assert german["retrying"] == "Nicht gesendet – neuer Versuch …"
    widget = (ROOT / "web" / "static" / "widget.js").read_text(encoding="utf-8")
    used = set(re.findall(r'\bT\("(\w+)"', widget))
    assert used == set(WIDGET_TEXTS), "widget.js and WIDGET_TEXTS disagree on the keys"


async def test_checkout_page_in_german(shop_language: SetLocale) -> None:
    from hub.commerce.providers.builtin import checkout_page_context
    from hub.http.pages import templates

    shop_language("de_DE")
    context = checkout_page_context(
        cart=_cart(), locale="de_DE", order_number="0042", methods=["prepayment"]
    )
    page = await (
        templates()
        .get_template("checkout.html")
        .render_async(shop_name="Farbenhaus", csrf="x", form={}, errors={"city": "required"},
                      **context)
    )  # fmt: skip
    assert '<html lang="de">' in page
    assert "Zahlungspflichtig bestellen" in page and "Vorkasse (Überweisung)" in page
    assert "Bitte überweisen Sie den Betrag innerhalb von 7 Tagen." in page
    assert "Ort: Bitte füllen Sie dieses Feld aus." in page
    assert "je 12,50\u00a0€" in page and "2 Artikel" in page
