"""The lobby's listing of the conversations nobody has: what it says. Pure.

The listing is one message of the bot in the advisers' room, edited whenever it changes
(hub.advisers.space.LobbyListing keeps it current), so it must read well both as plain text
(the body every client shows in notifications) and as HTML.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from babel.dates import format_timedelta

from hub.i18n import _, ngettext

# More lines make the message a wall no one reads, and every edit re-sends all of it.
MAX_LINES = 30
FIRST_WORDS = 8
FIRST_CHARS = 60
# What a first message that is not text looks like (no words to translate).
KIND_ICONS = {
    "image": "📷",
    "video": "🎬",
    "audio": "🎤",
    "file": "📎",
    "location": "📍",
    "order": "🛒",
    "contact": "👤",
    "sticker": "🙂",
}


@dataclass(frozen=True)
class Waiting:
    """An open conversation without an assignee, as the lobby lists it."""

    conversation_id: int
    channel_label: str  # "WhatsApp", "Webchat": an English msgid, translated when rendered
    customer_name: str | None
    room_id: str | None  # None until its first message reached Matrix
    first_text: str | None  # the first message the customer is waiting with an answer to
    first_kind: str | None
    since: datetime | None  # when they wrote it; None: nothing unanswered


def room_link(room_id: str) -> str:
    return f"https://matrix.to/#/{room_id}"


def first_words(text: str | None, kind: str | None) -> str:
    """The start of a message, on one line: "Hallo, ich hätte gern eine Frage zu …"."""
    words = (text or "").split()
    if not words:
        return KIND_ICONS.get(kind or "", "💬") if kind else ""
    shown = " ".join(words[:FIRST_WORDS])
    cut = len(words) > FIRST_WORDS or len(shown) > FIRST_CHARS
    if len(shown) > FIRST_CHARS:
        shown = shown[:FIRST_CHARS].rstrip()
    return shown + " …" if cut else shown


def waiting_time(since: datetime, now: datetime, locale: str) -> str:
    """ "12 minutes", "3 Stunden": CLDR's words; minutes up to two hours, hours up to two
    days (an adviser reads "1 hour" for 50 minutes as an exaggeration)."""
    # Never "0 minutes" (or a negative wait from a clock that went back): they just wrote.
    age = max(now - since, timedelta(seconds=1))
    return format_timedelta(age, granularity="minute", threshold=2, locale=locale)


def _line_parts(item: Waiting, now: datetime, locale: str) -> tuple[str, str, str, str]:
    """(channel, name, waiting, first words), translated, not escaped."""
    name = " ".join((item.customer_name or "").split()) or _("Customer")
    waited = (
        _("waiting: {duration}").format(duration=waiting_time(item.since, now, locale))
        if item.since is not None
        else _("answered")
    )
    return _(item.channel_label), name, waited, first_words(item.first_text, item.first_kind)


def _text_line(item: Waiting, now: datetime, locale: str) -> str:
    channel, name, waited, words = _line_parts(item, now, locale)
    line = f"• {channel} · {name} — {waited}"
    if words:
        line += f" — „{words}“" if item.first_text and item.first_text.strip() else f" — {words}"
    if item.room_id:
        line += f" — {room_link(item.room_id)}"
    return line


def _html_line(item: Waiting, now: datetime, locale: str) -> str:
    channel, name, waited, words = _line_parts(item, now, locale)
    who = html.escape(name)
    if item.room_id:
        who = f'<a href="{html.escape(room_link(item.room_id))}">{who}</a>'
    line = f"{html.escape(channel)} · {who} — {html.escape(waited)}"
    if words:
        line += f" — <em>{html.escape(words)}</em>"
    return f"<li>{line}</li>"


def render_listing(
    waiting: Sequence[Waiting], total: int, now: datetime, locale: str, cap: int = MAX_LINES
) -> tuple[str, str]:
    """(plain text, HTML) of the listing: a header with the count, one line per
    conversation (the longest waiting first, as given), at most `cap` lines and then how many
    more. `total` counts every waiting conversation, `waiting` may hold only the first."""
    total = max(total, len(waiting))
    if total == 0:
        text = "✅ " + _("Nobody is waiting for an adviser.")
        return text, f"<p>{html.escape(text)}</p>"
    head = "📋 " + ngettext(
        "{n} conversation waits for an adviser:", "{n} conversations wait for an adviser:", total
    ).format(n=total)
    shown = list(waiting[:cap])
    lines = [_text_line(item, now, locale) for item in shown]
    items = "".join(_html_line(item, now, locale) for item in shown)
    body_html = f"<p><strong>{html.escape(head)}</strong></p><ul>{items}</ul>"
    more = total - len(shown)
    if more > 0:
        tail = ngettext("… and {n} more conversation", "… and {n} more conversations", more).format(
            n=more
        )
        lines.append(tail)
        body_html += f"<p>{html.escape(tail)}</p>"
    return "\n".join([head, *lines]), body_html
