"""How customers' messages look in Matrix (pure)."""

from __future__ import annotations

import json

from hub.matrix.render import (
    MAX_CHARS_PER_EVENT,
    edit_content,
    message_contents,
    reaction_content,
    split_text,
    with_reply,
)


def test_long_text_is_split_below_synapse_limit_and_keeps_everything() -> None:
    words = ("Grüße 🎨 مرحبا " * 8000).strip()
    parts = message_contents("text", words, None, None, None)
    assert len(parts) > 1
    for n, content in enumerate(parts, 1):
        assert content["body"].startswith(f"({n}/{len(parts)}) ")
        assert len(json.dumps(content, ensure_ascii=False).encode()) < 64 * 1024
    rejoined = " ".join(p["body"].split(") ", 1)[1] for p in parts)
    assert rejoined.split() == words.split()


def test_split_prefers_line_breaks_and_short_text_is_one_part() -> None:
    assert split_text("short") == ["short"]
    text = ("a" * 100 + "\n") * 200
    parts = split_text(text, limit=1000)
    assert all(len(p) <= 1000 for p in parts)
    assert all(set(p) <= {"a", "\n"} and not p.startswith("\n") for p in parts)
    assert MAX_CHARS_PER_EVENT * 4 < 64 * 1024


def test_location_contacts_order_interactive_unsupported() -> None:
    [loc] = message_contents(
        "location", None, None, {"latitude": 50.9, "longitude": 6.9, "name": "Dom"}, None
    )
    assert loc["msgtype"] == "m.location" and loc["geo_uri"] == "geo:50.9,6.9"
    [contact] = message_contents(
        "contacts", None, None, {"contacts": [{"name": "Eva", "phones": ["+49 1"]}]}, None
    )
    assert "Eva: +49 1" in contact["body"]
    [order] = message_contents(
        "order",
        None,
        None,
        {"items": [{"sku": "<X>", "quantity": 2, "unit_price": "12.50", "currency": "EUR"}]},
        None,
    )
    assert "2 × <X> at €12.50" in order["body"] and "&lt;X&gt;" in order["formatted_body"]
    [button] = message_contents("interactive", None, None, {"id": "yes", "title": "Ja"}, None)
    assert button["body"] == "↩️ Ja"
    [story] = message_contents(
        "unsupported", "Schön!", None, {"type": "story_reply", "link": "https://x/1"}, None
    )
    assert story["msgtype"] == "m.notice"
    assert story["body"].startswith("Schön!") and "https://x/1" in story["body"]


def test_media_voice_reply_reaction_edit() -> None:
    media = {"filename": "v.ogg", "mimetype": "audio/ogg", "size": 5, "voice": True}
    [voice] = message_contents("audio", None, media, None, "mxc://s/a")
    assert voice["msgtype"] == "m.audio" and "org.matrix.msc3245.voice" in voice
    assert voice["url"] == "mxc://s/a" and voice["info"] == {"mimetype": "audio/ogg", "size": 5}
    replied = with_reply({"msgtype": "m.text", "body": "x"}, "$e")
    assert replied["m.relates_to"] == {"m.in_reply_to": {"event_id": "$e"}}
    assert reaction_content("$e", "👍")["m.relates_to"]["key"] == "👍"
    edit = edit_content("$e", "neu")
    assert edit["m.new_content"] == {"msgtype": "m.text", "body": "neu"}
    assert edit["m.relates_to"] == {"rel_type": "m.replace", "event_id": "$e"}
