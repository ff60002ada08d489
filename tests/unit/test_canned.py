"""Canned replies (hub.advisers.canned, pure): the text in the shop's language, the variables
filled, unknown ones and stray braces left as written, the listing of `!t` and the ⛔ answer
for an unknown name."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from hub.advisers.canned import (
    canned_listing,
    fill_variables,
    find_canned,
    image_filename,
    pick_text,
    render_canned,
    unknown_canned,
)
from hub.config.advisers import CannedReply


@dataclass(frozen=True)
class Canned:
    name: str
    text: str | dict[str, str]
    image: str | None = None


GREETING = Canned(
    "hallo",
    {
        "en": "Hello {customer_name}, {adviser_name} of {shop_name} here.",
        "de": "Hallo {customer_name}, hier ist {adviser_name} von {shop_name}.",
    },
)
HOURS = Canned(
    "Zeiten", "Wir sind Mo–Fr 9–18 Uhr für Sie da, {customer_name}!", "https://x.test/a.png"
)


def render(canned: Canned, locale: str = "de_DE", name: str | None = "Anna Müller") -> str:
    return render_canned(
        canned, locale, customer_name=name, adviser_name="Bernd", shop_name="Farben Müller"
    )


def test_the_variables_are_filled_in_the_shops_language() -> None:
    assert render(GREETING) == "Hallo Anna Müller, hier ist Bernd von Farben Müller."
    assert render(GREETING, "en_US") == "Hello Anna Müller, Bernd of Farben Müller here."


@pytest.mark.parametrize(
    ("texts", "locale", "expected"),
    [
        ({"de": "DE", "en": "EN"}, "de_AT", "DE"),  # the language when the locale has none
        ({"de_AT": "AT", "de": "DE"}, "de_AT", "AT"),  # the exact locale first
        ({"de-at": "AT", "de": "DE"}, "de_AT", "AT"),  # spelt either way
        ({"fr": "FR", "en": "EN"}, "de_DE", "FR"),  # else the first given
        ("nur eine", "en_US", "nur eine"),
    ],
)
def test_pick_text(texts: str | dict[str, str], locale: str, expected: str) -> None:
    assert pick_text(texts, locale) == expected


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Hi {customer_name}, {unknown} stays", "Hi Anna, {unknown} stays"),
        ("{ stray brace and {{double}} and {0} and {x.y} and {shop_name!r}", None),
        ("100% {customer_name}} {", "100% Anna} {"),
        ("", ""),
    ],
)
def test_unknown_variables_and_odd_braces_stay_as_written(
    template: str, expected: str | None
) -> None:
    filled = fill_variables(template, {"customer_name": "Anna", "shop_name": "S"})
    assert filled == (template if expected is None else expected)


def test_a_customer_without_a_name_leaves_no_gap() -> None:
    assert render(GREETING, name=None) == "Hallo, hier ist Bernd von Farben Müller."
    assert render(HOURS, name="") == "Wir sind Mo–Fr 9–18 Uhr für Sie da!"
    assert render(HOURS, name="  Zoë\n山田 ") == "Wir sind Mo–Fr 9–18 Uhr für Sie da, Zoë 山田!"


def test_values_are_not_templates_themselves() -> None:
    """A customer named "{shop_name}" is just a name."""
    assert render(HOURS, name="{shop_name}") == "Wir sind Mo–Fr 9–18 Uhr für Sie da, {shop_name}!"


def test_names_are_found_ignoring_case() -> None:
    replies = [GREETING, HOURS]
    assert find_canned(replies, "ZEITEN") is HOURS
    assert find_canned(replies, "bye") is None


def test_listing_shows_names_and_first_words() -> None:
    text, html = canned_listing([HOURS, GREETING], "de_DE", "!")
    assert text.split("\n") == [
        "Canned replies (send one with !t NAME):",
        "• hallo — Hallo {customer_name}, hier ist {adviser_name} von {shop_name}.",
        "• Zeiten 🖼 — Wir sind Mo–Fr 9–18 Uhr für Sie da, …",
    ]
    assert "<code>hallo</code>" in html and "<code>Zeiten</code> 🖼" in html
    empty, _ = canned_listing([], "de_DE", "!")
    assert "canned_replies" in empty


def test_unknown_name_lists_the_names() -> None:
    text = unknown_canned("tschüss", [HOURS, GREETING])
    assert text == "There is no canned reply “tschüss”. Canned replies: hallo, Zeiten"


def test_the_configs_canned_reply_renders() -> None:
    configured = CannedReply(name="danke", text={"de": "Danke, {customer_name}!"})
    assert render(configured) == "Danke, Anna Müller!"  # type: ignore[arg-type]


def test_image_filename() -> None:
    assert image_filename("https://shop.test/img/pinsel.png?v=3", "p") == "pinsel.png"
    assert image_filename("https://shop.test/bild/", "pinsel") == "pinsel.jpg"
    assert image_filename("", "pinsel") == "pinsel.jpg"
