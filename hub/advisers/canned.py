"""Canned replies (`!t NAME`): which text, in which language, with its variables. Pure.

The texts come from the shop's config (`canned_replies`), written by people who do not know
Python's format rules: a stray brace or an unknown {variable} must reach the customer as it
was written rather than break the command.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from typing import Protocol

from hub.i18n import _

PREVIEW_WORDS = 8
_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SPACE_BEFORE_MARK = re.compile(r"[ \t]+([,.!?;:])")
_SPACES = re.compile(r"[ \t]{2,}")
_COMMA_BEFORE_MARK = re.compile(r",([.!?;:])")


class CannedLike(Protocol):
    """A configured canned reply (hub.config.advisers.CannedReply)."""

    @property
    def name(self) -> str: ...

    @property
    def text(self) -> str | dict[str, str]: ...

    @property
    def image(self) -> str | None: ...


def language_of(locale: str) -> str:
    """ "de" of "de_DE" / "de-AT"."""
    return locale.replace("-", "_").split("_", 1)[0].casefold()


def pick_text(text: str | Mapping[str, str], locale: str) -> str:
    """The text in the shop's language: the exact locale's ("de_AT"), else its language's
    ("de"), else the first one given."""
    if isinstance(text, str):
        return text
    by_key = {k.replace("-", "_").casefold(): v for k, v in text.items()}
    wanted = locale.replace("-", "_").casefold()
    for key in (wanted, language_of(locale)):
        if key in by_key:
            return by_key[key]
    return next(iter(text.values()), "")


def fill_variables(template: str, values: Mapping[str, str]) -> str:
    """{name} replaced where `values` has it; anything else stays as written. An empty value
    takes the space (and a comma) before it along when punctuation follows ("Hallo
    {customer_name}!" and "Danke, {customer_name}!" for a customer without a name are
    "Hallo!" and "Danke!")."""
    emptied = False

    def replace(match: re.Match[str]) -> str:
        nonlocal emptied
        name = match.group(1)
        if name not in values:
            return match.group(0)
        value = " ".join(values[name].split())
        emptied = emptied or not value
        return value

    filled = _VARIABLE.sub(replace, template)
    if emptied:
        filled = _SPACE_BEFORE_MARK.sub(r"\1", filled)
        filled = _SPACES.sub(" ", _COMMA_BEFORE_MARK.sub(r"\1", filled))
    return filled.strip()


def render_canned(
    canned: CannedLike,
    locale: str,
    *,
    customer_name: str | None,
    adviser_name: str,
    shop_name: str,
) -> str:
    """The message the customer gets."""
    values = {
        "customer_name": customer_name or "",
        "adviser_name": adviser_name,
        "shop_name": shop_name,
    }
    return fill_variables(pick_text(canned.text, locale), values)


def find_canned(replies: Sequence[CannedLike], name: str) -> CannedLike | None:
    """A canned reply by its name, ignoring case (names are unique that way)."""
    wanted = name.casefold()
    return next((c for c in replies if c.name.casefold() == wanted), None)


def preview(text: str, words: int = PREVIEW_WORDS) -> str:
    """The first words of a text, on one line."""
    parts = text.split()
    shown = " ".join(parts[:words])
    return shown + " …" if len(parts) > words else shown


def canned_listing(replies: Sequence[CannedLike], locale: str, prefix: str) -> tuple[str, str]:
    """(plain text, HTML) of `!t`: each name with its first words."""
    if not replies:
        text = _("No canned replies are configured (canned_replies in the config).")
        return text, f"<p>{html.escape(text)}</p>"
    head = _("Canned replies (send one with {command}):").format(command=f"{prefix}t NAME")
    lines, items = [head], []
    for canned in sorted(replies, key=lambda c: c.name.casefold()):
        words = preview(pick_text(canned.text, locale))
        mark = " 🖼" if canned.image else ""
        lines.append(f"• {canned.name}{mark} — {words}")
        items.append(
            f"<li><code>{html.escape(canned.name)}</code>{mark} — {html.escape(words)}</li>"
        )
    return "\n".join(lines), f"<p>{html.escape(head)}</p><ul>{''.join(items)}</ul>"


def unknown_canned(name: str, replies: Sequence[CannedLike]) -> str:
    """The ⛔ answer to an unknown NAME: the names there are."""
    if not replies:
        return _("No canned replies are configured (canned_replies in the config).")
    names = ", ".join(sorted((c.name for c in replies), key=str.casefold))
    return _("There is no canned reply “{name}”. Canned replies: {names}").format(
        name=name, names=names
    )


def image_filename(url: str, name: str) -> str:
    """The picture's file name for the customer's channel: the URL's last part when it
    looks like a file name, else the reply's name."""
    last = url.split("?", 1)[0].split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    if "." in last and 0 < len(last) <= 100:
        return last
    return f"{name}.jpg"
