"""The lobby's listing as it reads (hub.advisers.lobby, pure): header and count, one line per
waiting conversation with its channel, customer, waiting time, first words and room link,
"nobody waiting", the cap with "and N more", names and texts from anywhere."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hub.advisers.lobby import Waiting, first_words, render_listing, waiting_time

NOW = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


def waiting(
    n: int,
    name: str | None = "Anna Müller",
    text: str | None = "Hallo, ist die Farbe lieferbar?",
    minutes: int | None = 12,
    room: str | None = "!abc:shop.example",
    kind: str | None = "text",
    channel: str = "WhatsApp",
) -> Waiting:
    return Waiting(
        conversation_id=n,
        channel_label=channel,
        customer_name=name,
        room_id=room,
        first_text=text,
        first_kind=kind,
        since=NOW - timedelta(minutes=minutes) if minutes is not None else None,
    )


def test_one_waiting_conversation_has_every_part_in_text_and_html() -> None:
    text, html = render_listing([waiting(1)], 1, NOW, "en_US")
    head, line = text.split("\n")
    assert head == "📋 1 conversation waits for an adviser:"
    assert line == (
        "• WhatsApp · Anna Müller — waiting: 12 minutes — „Hallo, ist die Farbe lieferbar?“"
        " — https://matrix.to/#/!abc:shop.example"
    )
    assert '<a href="https://matrix.to/#/!abc:shop.example">Anna Müller</a>' in html
    assert "<strong>📋 1 conversation waits for an adviser:</strong>" in html
    assert "<em>Hallo, ist die Farbe lieferbar?</em>" in html


def test_nobody_waiting() -> None:
    text, html = render_listing([], 0, NOW, "en_US")
    assert text == "✅ Nobody is waiting for an adviser."
    assert html == "<p>✅ Nobody is waiting for an adviser.</p>"


def test_the_listing_is_capped_and_says_how_many_more() -> None:
    items = [waiting(n, name=f"Kunde {n}", minutes=100 - n) for n in range(1, 31)]
    text, html = render_listing(items, 45, NOW, "en_US")
    lines = text.split("\n")
    assert lines[0] == "📋 45 conversations wait for an adviser:"
    assert len(lines) == 1 + 30 + 1
    assert lines[-1] == "… and 15 more conversations"
    assert html.count("<li>") == 30
    assert html.endswith("<p>… and 15 more conversations</p>")
    # More given than the cap: only the cap is shown, the rest counted.
    text, _ = render_listing(items, 30, NOW, "en_US", cap=29)
    assert text.split("\n")[-1] == "… and 1 more conversation"


def test_unicode_and_markup_in_names_and_texts_are_kept_and_escaped() -> None:
    name = "Zoë <b>Ωmega</b> 山田 👩🏽‍🎨"
    text, html = render_listing(
        [waiting(1, name=name, text="<script>x</script> & 🎨")], 1, NOW, "en_US"
    )
    assert name in text
    assert "<b>" not in html and "<script>" not in html
    assert "Zoë &lt;b&gt;Ωmega&lt;/b&gt; 山田 👩🏽‍🎨" in html
    assert "&lt;script&gt;x&lt;/script&gt; &amp; 🎨" in html


def test_a_customer_without_a_name_or_room_and_a_photo_first() -> None:
    text, html = render_listing(
        [waiting(1, name=None, text=None, kind="image", room=None)], 1, NOW, "en_US"
    )
    line = text.split("\n")[1]
    assert line == "• WhatsApp · Customer — waiting: 12 minutes — 📷"
    assert "<a " not in html


def test_a_conversation_answered_last_says_so() -> None:
    text, _ = render_listing([waiting(1, text=None, kind=None, minutes=None)], 1, NOW, "en_US")
    assert text.split("\n")[1] == (
        "• WhatsApp · Anna Müller — answered — https://matrix.to/#/!abc:shop.example"
    )


def test_first_words_are_cut_on_one_line() -> None:
    long = "Guten Tag,\nich hätte gern   eine Beratung zu Ihren Farben für den Außenbereich"
    assert first_words(long, "text") == "Guten Tag, ich hätte gern eine Beratung zu …"
    assert first_words("x" * 100, "text") == "x" * 60 + " …"
    assert first_words("  ", "file") == "📎"
    assert first_words(None, None) == ""


def test_waiting_time_in_the_shops_words(shop_language: Callable[[str], None]) -> None:
    assert waiting_time(NOW - timedelta(seconds=20), NOW, "en_US") == "1 minute"
    assert waiting_time(NOW - timedelta(minutes=95), NOW, "en_US") == "95 minutes"
    assert waiting_time(NOW - timedelta(hours=5), NOW, "de_DE") == "5 Stunden"
    assert waiting_time(NOW - timedelta(days=3), NOW, "de_DE") == "3 Tage"
    # A clock that went back never makes a negative wait.
    assert waiting_time(NOW + timedelta(minutes=5), NOW, "en_US") == "1 minute"
    shop_language("de_DE")
    text, _ = render_listing([waiting(1, minutes=120 + 60)], 1, NOW, "de_DE")
    assert "3 Stunden" in text


def test_the_listing_changes_with_the_waiting_time_only_when_the_words_do() -> None:
    a, _ = render_listing([waiting(1, minutes=12)], 1, NOW, "en_US")
    b, _ = render_listing([waiting(1, minutes=12)], 1, NOW + timedelta(seconds=20), "en_US")
    c, _ = render_listing([waiting(1, minutes=12)], 1, NOW + timedelta(minutes=1), "en_US")
    assert a == b
    assert a != c


def test_lobby_canned_and_context_renderers_are_pure() -> None:
    """No I/O modules imported, transitively (as tests/unit/test_boundaries.py checks its
    list)."""
    probe = "import importlib, json, sys\nfor m in sys.argv[1:]: importlib.import_module(m)\n"
    probe += "print(json.dumps(sorted(sys.modules)))"
    modules = ["hub.advisers.lobby", "hub.advisers.canned", "hub.advisers.context"]
    out = subprocess.run(
        [sys.executable, "-c", probe, *modules], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout)
    forbidden = ("aiohttp", "sqlalchemy", "nio", "asyncpg", "aiosqlite", "hub.db", "hub.net")
    bad = [m for m in loaded if any(m == f or m.startswith(f + ".") for f in forbidden)]
    assert bad == []
