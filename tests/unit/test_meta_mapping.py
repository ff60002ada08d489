"""The pure Meta mapping: documented webhook payloads (tests/fixtures/meta, see SOURCES.md)
→ hub envelopes, and the outbound helpers (text, splitting, quick replies, reply window)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hub.bridges.meta.mapping import (
    html_to_text,
    messaging_fields,
    parse_webhook,
    quick_replies,
    split_text,
    utf8_len,
    window_closed_text,
)
from hub.core.types import (
    Button,
    InboundEdit,
    InboundMessage,
    InboundReaction,
    StatusUpdate,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "meta"


def fixture(name: str) -> dict[str, Any]:
    return dict(json.loads((FIXTURES / name).read_text(encoding="utf-8")))


def only_message(doc: dict[str, Any], channel: str = "messenger") -> InboundMessage:
    parsed = parse_webhook(doc, channel)
    assert len(parsed.envelopes) == 1, parsed
    event = parsed.envelopes[0].event
    assert isinstance(event, InboundMessage)
    return event


def test_quick_reply_is_interactive_with_payload_and_title() -> None:
    parsed = parse_webhook(fixture("messenger_text_quick_reply.json"), "messenger")
    env = parsed.envelopes[0]
    assert env.sender is not None
    assert (env.sender.channel, env.sender.external_id) == ("messenger", "6543210987654321")
    assert env.sender.display_name is None  # no profile lookup in the webhook
    msg = env.event
    assert isinstance(msg, InboundMessage)
    assert msg.remote_id == "mid.1457764197618:41d102a3e1ae206a38"
    assert msg.kind == "interactive"
    assert msg.data == {"id": "DEVELOPER_DEFINED_PAYLOAD", "title": "hello, world!"}
    assert msg.timestamp == datetime.fromtimestamp(1458692752.478, UTC)


def test_text_reply_to_maps_reply_remote_id() -> None:
    msg = only_message(fixture("messenger_text_reply_to.json"))
    assert (msg.kind, msg.text) == ("text", "hello, world!")
    assert msg.remote_id == "m_1457764197618:41d102a3e1ae206a38"
    assert msg.reply_to_remote_id == "m_1fTq8oLumEyIp3Q2MR-aY7IfLZDamVrALniheU"


def test_image_attachment_is_a_media_ref_by_url() -> None:
    msg = only_message(fixture("messenger_attachment_image.json"))
    assert msg.kind == "image"
    assert msg.remote_id == "mid.$cAAJdkrCd2ORnva8ErFhjGm0X_Q_c"
    assert msg.media is not None
    assert msg.media.remote_id is not None
    assert msg.media.remote_id.startswith("https://scontent.xx.fbcdn.net/v/t1.15752-9/")
    assert (msg.media.filename, msg.media.mimetype) == ("28379480_n.jpg", "image/jpeg")
    assert msg.media.media_id is None


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("messenger_echo.json", "echo"),
        ("messenger_echo_standby.json", "echo"),
        ("instagram_echo.json", "echo"),
        ("messenger_read.json", "read watermark"),
    ],
)
def test_echoes_and_watermarks_are_skipped_and_counted(name: str, reason: str) -> None:
    channel = "instagram" if name.startswith("instagram") else "messenger"
    parsed = parse_webhook(fixture(name), channel)
    assert parsed.envelopes == []
    assert parsed.skipped == {reason: 1}


def test_reaction_and_unreaction() -> None:
    react = parse_webhook(fixture("messenger_reaction.json"), "messenger").envelopes[0]
    assert isinstance(react.event, InboundReaction)
    assert react.event.target_remote_id == "m_1457764197618:41d102a3e1ae206a38"
    assert react.event.emoji == "❤️"
    unreact = parse_webhook(fixture("messenger_unreaction.json"), "messenger").envelopes[0]
    assert isinstance(unreact.event, InboundReaction)
    assert unreact.event.emoji == ""
    assert unreact.event.target_remote_id == react.event.target_remote_id
    assert unreact.event.remote_id != react.event.remote_id
    # A redelivery yields the same id (the dedupe key).
    again = parse_webhook(fixture("messenger_reaction.json"), "messenger").envelopes[0]
    assert again.event == react.event


def test_reaction_without_emoji_uses_the_named_one() -> None:
    doc = fixture("messenger_reaction.json")
    del doc["entry"][0]["messaging"][0]["reaction"]["emoji"]
    doc["entry"][0]["messaging"][0]["reaction"]["reaction"] = "like"
    event = parse_webhook(doc, "messenger").envelopes[0].event
    assert isinstance(event, InboundReaction) and event.emoji == "👍"


def test_delivery_becomes_status_updates_without_sender() -> None:
    parsed = parse_webhook(fixture("messenger_delivery.json"), "messenger")
    assert [(e.sender, e.event) for e in parsed.envelopes] == [
        (None, StatusUpdate("mid.1458668856218:ed81099e15d3f4f233", "delivered"))
    ]


def test_instagram_seen_is_read_status() -> None:
    parsed = parse_webhook(fixture("instagram_seen.json"), "instagram")
    assert [e.event for e in parsed.envelopes] == [StatusUpdate("aWdfZAG1faXRlbTo5", "read")]


def test_edit() -> None:
    event = parse_webhook(fixture("messenger_edit.json"), "messenger").envelopes[0].event
    assert event == InboundEdit(
        "m_1457764197618:41d102a3e1ae206a38:edit:1",
        "m_1457764197618:41d102a3e1ae206a38",
        "hello, world (edited)",
    )


def test_postback_in_changes_form_with_user_ref() -> None:
    parsed = parse_webhook(fixture("messenger_postback.json"), "messenger")
    env = parsed.envelopes[0]
    assert env.sender is not None and env.sender.external_id == "USER-REF-ID"
    msg = env.event
    assert isinstance(msg, InboundMessage)
    assert (msg.remote_id, msg.kind) == ("m_MESSAGE-ID", "interactive")
    assert msg.data == {"id": "USER-DEFINED-PAYLOAD", "title": "TITLE-FOR-THE-CTA"}
    assert msg.timestamp == datetime(2018, 5, 27, 22, 23, 44, tzinfo=UTC)  # seconds, string


def test_instagram_quick_reply() -> None:
    msg = only_message(fixture("instagram_quick_reply.json"), "instagram")
    assert (msg.kind, msg.data) == ("interactive", {"id": "COLOR_RED", "title": "Red"})


def test_instagram_story_mention_is_unsupported_with_link() -> None:
    msg = only_message(fixture("instagram_story_mention.json"), "instagram")
    assert msg.kind == "unsupported"
    assert msg.data == {
        "type": "story_mention",
        "link": "https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=17900000000000001&signature=abc",
    }
    assert msg.media is None  # a story must not be stored by us


def test_instagram_story_reply_keeps_text_and_link() -> None:
    msg = only_message(fixture("instagram_story_reply.json"), "instagram")
    assert msg.kind == "unsupported"
    assert msg.text == "Is this dress still available?"
    assert msg.data is not None and msg.data["type"] == "story_reply"
    assert msg.data["link"].endswith("asset_id=17900000000000002&signature=def")
    assert msg.reply_to_remote_id is None


def test_instagram_reaction() -> None:
    event = parse_webhook(fixture("instagram_reaction.json"), "instagram").envelopes[0].event
    assert isinstance(event, InboundReaction)
    assert (event.target_remote_id, event.emoji) == ("aWdfZAG1faXRlbTo4", "❤️")


def _with_message(message: dict[str, Any]) -> dict[str, Any]:
    doc = fixture("messenger_text_reply_to.json")
    doc["entry"][0]["messaging"][0]["message"] = message
    return doc


def test_every_entry_and_event_of_a_batch() -> None:
    one = fixture("messenger_text_reply_to.json")["entry"][0]
    two = json.loads(json.dumps(one))
    two["messaging"][0]["sender"]["id"] = "999"
    two["messaging"][0]["message"]["mid"] = "m_second"
    two["messaging"].append(fixture("messenger_delivery.json")["entry"][0]["messaging"][0])
    parsed = parse_webhook({"object": "page", "entry": [one, two]}, "messenger")
    ids = [
        (e.sender.external_id if e.sender else None, e.event.remote_id) for e in parsed.envelopes
    ]
    assert ids == [
        ("6543210987654321", "m_1457764197618:41d102a3e1ae206a38"),
        ("999", "m_second"),
        (None, "mid.1458668856218:ed81099e15d3f4f233"),
    ]


LATLONG = {"lat": 52.52, "long": 13.4}


@pytest.mark.parametrize(
    ("attachment", "kind", "expected"),
    [
        (
            {"type": "location", "title": "Shop", "payload": {"coordinates": LATLONG}},
            "location",
            {"latitude": 52.52, "longitude": 13.4, "name": "Shop"},
        ),
        (
            {"type": "fallback", "payload": {"url": "https://example.com/a", "title": "A page"}},
            "text",
            "A page\nhttps://example.com/a",
        ),
        (
            {"type": "share", "payload": {"url": "https://www.instagram.com/p/xyz/"}},
            "text",
            "https://www.instagram.com/p/xyz/",
        ),
        ({"type": "fallback"}, "unsupported", {"type": "fallback"}),
        ({"type": "ephemeral", "payload": {}}, "unsupported", {"type": "ephemeral"}),
    ],
)
def test_other_attachment_kinds(attachment: dict[str, Any], kind: str, expected: Any) -> None:
    msg = only_message(_with_message({"mid": "m_x", "attachments": [attachment]}))
    assert msg.kind == kind
    assert (msg.text if kind == "text" else msg.data) == expected


def test_several_attachments_get_distinct_remote_ids_and_one_caption() -> None:
    photo = {"type": "image", "payload": {"url": "https://cdn.example/1/a.png?x=1"}}
    clip = {"type": "audio", "payload": {"url": "https://cdn.example/2/audioclip-1.mp4?y=2"}}
    parsed = parse_webhook(
        _with_message({"mid": "m_x", "text": "look", "attachments": [photo, clip]}), "messenger"
    )
    events = [e.event for e in parsed.envelopes]
    assert [(m.remote_id, m.kind, m.text) for m in events] == [  # type: ignore[union-attr]
        ("m_x", "image", "look"),
        ("m_x#1", "audio", None),
    ]
    audio = events[1]
    assert isinstance(audio, InboundMessage) and audio.voice
    assert audio.media is not None and audio.media.mimetype == "video/mp4"


def test_sticker_sent_twice_during_transition_is_one_sticker() -> None:
    url = "https://cdn.example/s/369239263222822.png"
    both = [
        {"type": "sticker", "payload": {"url": url, "sticker_id": 369239263222822}},
        {"type": "image", "payload": {"url": url, "sticker_id": 369239263222822}},
    ]
    msg = only_message(_with_message({"mid": "m_s", "attachments": both}))
    assert msg.kind == "sticker"


def test_unsupported_and_deleted_instagram_messages() -> None:
    msg = only_message(_with_message({"mid": "m_u", "is_unsupported": True}), "instagram")
    assert (msg.kind, msg.data) == ("unsupported", {"type": "unsupported"})
    deleted = parse_webhook(_with_message({"mid": "m_d", "is_deleted": True}), "instagram")
    assert deleted.envelopes == [] and deleted.skipped == {"deleted message": 1}


def test_own_messages_without_echo_flag_are_skipped() -> None:
    doc = fixture("messenger_text_reply_to.json")
    doc["entry"][0]["messaging"][0]["sender"]["id"] = doc["entry"][0]["id"]
    assert parse_webhook(doc, "messenger").skipped == {"own message": 1}


def test_html_to_text_keeps_links_and_lines() -> None:
    html = (
        "<p>Hallo <b>Jürgen</b>,</p><p>see <a href='https://shop.example/p/1'>our offer</a>"
        " and <a href='https://shop.example'>https://shop.example</a><br>"
        "<a href='https://matrix.to/#/@anna:shop.example'>Anna</a> &amp; team 🎨</p>"
        "<ul><li>one</li><li>two</li></ul>"
    )
    assert html_to_text(html) == (
        "Hallo Jürgen,\n\nsee our offer (https://shop.example/p/1) and https://shop.example\n"
        "Anna & team 🎨\n\n• one\n• two"
    )


def test_split_text_by_characters_and_by_utf8_bytes() -> None:
    words = " ".join(["Grüße"] * 600)  # 3599 characters
    parts = split_text(words, 2000)
    assert all(len(p) <= 2000 for p in parts) and len(parts) == 2
    assert " ".join(parts) == words
    emoji = "🎨" * 600  # 600 characters, 2400 bytes, no spaces: hard cuts
    byte_parts = split_text(emoji, 1000, utf8_len)
    assert [utf8_len(p) for p in byte_parts] == [1000, 1000, 400]
    assert "".join(byte_parts) == emoji
    assert split_text("kurz", 2000) == ["kurz"]


def test_quick_replies_limits() -> None:
    buttons = [Button(f"id-{n}", f"Option number {n} with a long title") for n in range(15)]
    replies = quick_replies(buttons)
    assert len(replies) == 13
    assert replies[0] == {
        "content_type": "text",
        "title": "Option number 0 with",
        "payload": "id-0",
    }


NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TAGGED = {"messaging_type": "MESSAGE_TAG", "tag": "HUMAN_AGENT"}


@pytest.mark.parametrize(
    ("age", "tag", "expected"),
    [
        (timedelta(hours=23, minutes=59), False, {"messaging_type": "RESPONSE"}),
        (timedelta(hours=25), True, TAGGED),
        (timedelta(days=6, hours=23), True, TAGGED),
        (timedelta(hours=25), False, None),
        (timedelta(days=7, minutes=1), True, None),
    ],
)
def test_reply_window(age: timedelta, tag: bool, expected: dict[str, str] | None) -> None:
    assert messaging_fields(NOW - age, NOW, tag) == expected


def test_unknown_last_message_lets_meta_decide() -> None:
    assert messaging_fields(None, NOW, False) == {"messaging_type": "RESPONSE"}


def test_window_closed_texts() -> None:
    text = window_closed_text(NOW - timedelta(hours=30), NOW, False, "messenger")
    assert text.startswith("the 24-hour window has closed (the customer last wrote 30 hours ago")
    assert "channels.messenger.human_agent_tag" in text
    tagged = window_closed_text(NOW - timedelta(days=9), NOW, True, "instagram")
    assert "9 days ago" in tagged and "beyond the 7 days" in tagged
