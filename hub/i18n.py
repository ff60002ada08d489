"""The hub speaks the shop's language: every text people read (customers, advisers) comes
from the gettext catalogues in hub/locale (German and English complete), through Babel,
in the language of `shop.locale`; texts set in the config override them.

    from hub.i18n import _, N_, ngettext

    _("Order {number} is on its way.").format(number=n)   # translated now
    TEXT = N_("the customer blocked the shop")             # marked; translate with _(TEXT)

One language per hub (the shop's), set once at start (`set_locale`); until then, and for a
language without a catalogue, English. The catalogues are read from the .po files the
repository keeps (compiled in memory), so there is no build step. Log lines and the command
line stay English: they are for whoever runs the hub.
"""

from __future__ import annotations

import io
import logging
from functools import cache
from pathlib import Path

from babel import Locale, UnknownLocaleError
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

log = logging.getLogger(__name__)

DOMAIN = "hub"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
LANGUAGES = ("de", "en")  # complete catalogues


@cache
def translations(language: str) -> NullTranslations:
    """The catalogue of a language (English's msgids where it has none)."""
    path = LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    if not path.exists():
        return NullTranslations()
    with path.open("rb") as fp:
        catalog = read_po(fp, locale=language, domain=DOMAIN)
    buf = io.BytesIO()
    write_mo(buf, catalog, use_fuzzy=False)
    buf.seek(0)
    return Translations(buf, domain=DOMAIN)


class Texts:
    """The texts of one locale, e.g. "de_DE"."""

    def __init__(self, locale: str) -> None:
        self.locale = locale
        try:
            self.language = Locale.parse(locale).language
        except (UnknownLocaleError, ValueError):
            self.language = "en"
        if self.language not in LANGUAGES:
            log.warning(
                "no texts in %r (shop.locale %s): the hub writes English", self.language, locale
            )
        self._t = translations(self.language)

    def gettext(self, message: str) -> str:
        return self._t.gettext(message)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return self._t.ngettext(singular, plural, n)


_active = Texts("en")


def set_locale(locale: str) -> None:
    """The shop's language for every text from now on (at start, from shop.locale)."""
    global _active
    _active = Texts(locale)


def current_locale() -> str:
    """The shop's locale, for Babel's number and date formats."""
    return _active.locale


def _(message: str) -> str:
    """`message` (an English msgid) in the shop's language."""
    return _active.gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return _active.ngettext(singular, plural, n)


def N_(message: str) -> str:
    """Mark a text for the catalogue without translating it yet (module-level constants,
    tables): translate it with _() where it is used."""
    return message
