"""The Telegram mapping against Telegram's documented payloads (tests/fixtures/telegram)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hub.bridges.telegram import errors, mapping
from hub.bridges.telegram.mapping import parse_update
from hub.core.types import (
    BlockChange,
    Button,
    InboundEdit,
    InboundMessage,
    InboundReaction,
    MediaRef,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "telegram"


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def only_message(name: str) -> InboundMessage:
    parsed = parse_update(load(name))
    assert parsed.skipped == {}
    assert len(parsed.envelopes) == 1
    event = parsed.envelopes[0].event
    assert isinstance(event, InboundMessage)
    return event


def test_documented_text_message() -> None:
    parsed = parse_update(load("webhooks_guide_message_text.json"))
    (env,) = parsed.envelopes
    assert env.sender is not None
    assert env.sender.channel == "telegram"
    assert env.sender.external_id == "1111111"
    assert env.sender.display_name == "Test Firstname Test Lastname"
    event = env.event
    assert isinstance(event, InboundMessage)
    assert event.remote_id == "1111111:1365"
    assert event.kind == "text"
    assert event.text == "/start"
    assert event.timestamp == datetime.fromtimestamp(1441645532, UTC)
    # /start is a normal message for the advisers, marked so the hub can greet.
    assert event.data == {"command": "start", "payload": None}
    assert parsed.envelopes[0].event.data == {"command": "start", "payload": None}  # type: ignore[union-attr]


def test_start_with_deep_link_payload() -> None:
    parsed = parse_update(load("api_message_start_payload.json"))
    event = parsed.envelopes[0].event
    assert isinstance(event, InboundMessage)
    assert event.data == {"command": "start", "payload": "campaign-42"}


def test_forwarded_start_is_not_a_command() -> None:
    parsed = parse_update(load("webhooks_guide_forwarded_message.json"))
    assert (parsed.envelopes[0].event.data or {}).get("command") is None  # type: ignore[union-attr]
    event = parsed.envelopes[0].event
    assert isinstance(event, InboundMessage)
    assert event.data == {"forwarded_from": "Forward Firstname Forward Lastname"}
    channel = only_message("webhooks_guide_forwarded_channel_message.json")
    assert channel.data == {"forwarded_from": "Test channel"}


def test_unicode_text_is_kept_exactly() -> None:
    event = only_message("api_message_text_unicode.json")
    assert event.text == "Grüße aus Köln! 🎨 مرحبا <b>not a tag</b> & more"
    assert event.data is None


def test_chat_without_type_is_not_taken_for_private() -> None:
    parsed = parse_update(load("webhooks_guide_message_text_no_chat_type.json"))
    assert parsed.envelopes == []
    assert any("non-private" in why for why in parsed.skipped)


def test_group_messages_are_ignored_with_a_reason() -> None:
    parsed = parse_update(load("api_message_group.json"))
    assert parsed.envelopes == []
    assert parsed.skipped == {"message from a non-private chat (supergroup)": 1}


def test_reply_points_at_the_message_in_the_same_chat() -> None:
    assert only_message("webhooks_guide_message_with_reply.json").reply_to_remote_id == (
        "1111111:1334"
    )
    assert only_message("api_message_reply_to_bot.json").reply_to_remote_id == "1111111:1400"


def test_edited_message_becomes_an_edit_with_its_own_id() -> None:
    parsed = parse_update(load("webhooks_guide_edited_message.json"))
    (env,) = parsed.envelopes
    assert env.event == InboundEdit(
        remote_id="edit:10000", target_remote_id="1111111:1365", text="Edited text"
    )
    assert env.sender is not None and env.sender.external_id == "1111111"


def test_live_location_edit_is_ignored_not_an_empty_edit() -> None:
    parsed = parse_update(load("api_edited_live_location.json"))
    assert parsed.envelopes == []
    assert any("live location" in why for why in parsed.skipped)


def test_photo_takes_the_largest_size_and_the_caption() -> None:
    event = only_message("api_message_photo.json")
    assert event.kind == "image"
    assert event.text == "Diese Farbe, bitte 🎨"
    assert event.media == MediaRef(
        filename="photo_1366.jpg",
        mimetype="image/jpeg",
        size=98765,
        remote_id="AgACAgIAAxkBAAIBb2large",
    )


def test_voice_note_is_audio_marked_voice() -> None:
    event = only_message("webhooks_guide_voice_message.json")
    assert event.kind == "audio"
    assert event.voice is True
    assert event.media == MediaRef(
        "voice_1365.ogg", "audio/ogg", 23000, remote_id="AwADBAADbXXXXXXXXXXXGBdhD2l6_XX"
    )


def test_audio_file_is_not_a_voice_note() -> None:
    event = only_message("webhooks_guide_message_with_audio.json")
    assert (event.kind, event.voice) == ("audio", False)
    assert event.media is not None
    assert (event.media.filename, event.media.mimetype, event.media.size) == (
        "Test music file.mp3",
        "audio/mpeg",
        3897500,
    )


def test_document_keeps_name_and_type() -> None:
    event = only_message("webhooks_guide_message_with_document.json")
    assert event.kind == "file"
    assert event.media == MediaRef(
        "Testfile.pdf", "application/pdf", 536392, remote_id="AwADBAADbXXXXXXXXXXXGBdhD2l6_XX"
    )


@pytest.mark.parametrize(
    ("fixture", "kind", "filename", "mimetype", "data"),
    [
        ("api_message_video.json", "video", "wand.mp4", "video/mp4", None),
        (
            "api_message_video_note.json",
            "video",
            "video_note_1368.mp4",
            "video/mp4",
            {"video_note": True},
        ),
        ("api_message_sticker.json", "sticker", "sticker_1369.webp", "image/webp", {"emoji": "👍"}),
    ],
)
def test_other_files(
    fixture: str, kind: str, filename: str, mimetype: str, data: dict[str, Any] | None
) -> None:
    event = only_message(fixture)
    assert event.kind == kind
    assert event.media is not None
    assert (event.media.filename, event.media.mimetype) == (filename, mimetype)
    assert event.media.remote_id
    assert event.data == data


def test_location_and_venue() -> None:
    assert only_message("api_message_location.json").data == {
        "latitude": 52.520008,
        "longitude": 13.404954,
    }
    venue = only_message("api_message_venue.json")
    assert venue.kind == "location"
    assert venue.data == {
        "latitude": 52.516275,
        "longitude": 13.377704,
        "name": "Brandenburger Tor",
        "address": "Pariser Platz, 10117 Berlin",
    }


def test_contact_with_vcard_email() -> None:
    event = only_message("api_message_contact.json")
    assert event.kind == "contacts"
    assert event.data == {
        "contacts": [
            {"name": "Anna Maler", "phones": ["+4930123456"], "emails": ["anna@maler.example"]}
        ]
    }


def test_unknown_message_type_is_unsupported_never_dropped() -> None:
    event = only_message("api_message_dice.json")
    assert event.kind == "unsupported"
    assert event.data == {"type": "dice"}
    assert event.remote_id == "1111111:1373"


def test_callback_query_with_keyboard_message() -> None:
    parsed = parse_update(load("api_callback_query_with_message.json"))
    assert parsed.acks == ["4382bfdwdsb323b2d9"]
    (env,) = parsed.envelopes
    assert env.sender is not None and env.sender.external_id == "1111111"
    assert env.event == InboundMessage(
        remote_id="cb:4382bfdwdsb323b2d9",
        kind="interactive",
        text="Rot 🔴",
        reply_to_remote_id="1111111:1400",
        data={"id": "colour:red", "title": "Rot 🔴"},
    )


def test_documented_callback_query_without_message() -> None:
    parsed = parse_update(load("webhooks_guide_callback_query.json"))
    assert parsed.acks == ["4382bfdwdsb323b2d9"]
    event = parsed.envelopes[0].event
    assert isinstance(event, InboundMessage)
    assert event.kind == "interactive"
    assert event.data == {"id": "Data from button callback", "title": "Data from button callback"}
    assert event.reply_to_remote_id is None


def test_callback_from_a_group_is_ignored_but_still_answered() -> None:
    doc = load("api_callback_query_with_message.json")
    doc["callback_query"]["message"]["chat"] = {"id": -100, "type": "group", "title": "G"}
    parsed = parse_update(doc)
    assert parsed.envelopes == []
    assert parsed.acks == ["4382bfdwdsb323b2d9"]


def test_reaction_and_its_removal() -> None:
    parsed = parse_update(load("api_message_reaction.json"))
    assert parsed.envelopes[0].event == InboundReaction(
        remote_id="react:10012", target_remote_id="1111111:1400", emoji="👍"
    )
    doc = load("api_message_reaction.json")
    doc["message_reaction"]["new_reaction"] = []
    removed = parse_update(doc).envelopes[0].event
    assert isinstance(removed, InboundReaction) and removed.emoji == ""


def test_user_blocking_the_bot_is_a_block_change() -> None:
    parsed = parse_update(load("api_my_chat_member_blocked.json"))
    (env,) = parsed.envelopes
    assert env.event == BlockChange(blocked=True)
    assert env.sender is not None and env.sender.external_id == "1111111"


@pytest.mark.parametrize(
    ("fixture", "kind"),
    [
        ("webhooks_guide_inline_query.json", "inline_query"),
        ("webhooks_guide_chosen_inline_query.json", "chosen_inline_result"),
    ],
)
def test_user_updates_outside_chats_are_unsupported_messages(fixture: str, kind: str) -> None:
    event = only_message(fixture)
    assert event.kind == "unsupported"
    assert event.data == {"type": kind}
    assert event.remote_id == "u10000"


def test_redelivered_update_maps_to_the_same_ids() -> None:
    for name in ("webhooks_guide_message_text.json", "webhooks_guide_edited_message.json"):
        first, again = parse_update(load(name)), parse_update(load(name))
        assert first.envelopes[0].event.remote_id == again.envelopes[0].event.remote_id


def test_not_an_update() -> None:
    assert parse_update({"hello": 1}).skipped == {"not an Update (no update_id)": 1}
    assert parse_update({"update_id": 5, "poll": {}}).skipped == {"update of type poll": 1}
    broken = load("webhooks_guide_message_text.json")
    del broken["message"]["message_id"]
    assert parse_update(broken).envelopes == []


# -- outbound


def test_reply_parameters_only_for_message_ids() -> None:
    assert mapping.reply_parameters("1111111:1400") == {
        "message_id": 1400,
        "allow_sending_without_reply": True,
    }
    assert mapping.reply_parameters("cb:123") is None
    assert mapping.reply_parameters("edit:55") is None
    assert mapping.reply_parameters(None) is None


def test_inline_keyboard_one_button_per_row() -> None:
    markup = mapping.inline_keyboard((Button("colour:red", "Rot"), Button("colour:blue", "Blau")))
    assert markup == {
        "inline_keyboard": [
            [{"text": "Rot", "callback_data": "colour:red"}],
            [{"text": "Blau", "callback_data": "colour:blue"}],
        ]
    }
    assert mapping.inline_keyboard(()) is None
    with pytest.raises(ValueError, match="1-64 bytes"):
        mapping.inline_keyboard((Button("ü" * 33, "too long"),))


@pytest.mark.parametrize(
    ("kind", "mimetype", "size", "expected"),
    [
        ("image", "image/jpeg", 1000, ("sendPhoto", "photo")),
        ("image", "image/png", 11 * 1024 * 1024, ("sendDocument", "document")),
        ("image", "image/gif", 1000, ("sendDocument", "document")),
        ("audio", "audio/ogg", 1000, ("sendVoice", "voice")),
        ("audio", "audio/mpeg", 1000, ("sendAudio", "audio")),
        ("audio", "audio/flac", 1000, ("sendDocument", "document")),
        ("video", "video/mp4", 1000, ("sendVideo", "video")),
        ("video", "video/webm", 1000, ("sendDocument", "document")),
        ("file", "application/pdf", 1000, ("sendDocument", "document")),
    ],
)
def test_media_method(kind: str, mimetype: str, size: int, expected: tuple[str, str]) -> None:
    assert mapping.media_method(kind, mimetype, size) == expected


def test_reaction_parameters_drop_the_emoji_variation_selector() -> None:
    assert mapping.reaction_parameters("1111111:1400", "❤\ufe0f") == {
        "chat_id": 1111111,
        "message_id": 1400,
        "reaction": [{"type": "emoji", "emoji": "❤"}],
    }
    assert mapping.reaction_parameters("1111111:1400", "")["reaction"] == []  # type: ignore[index]
    assert mapping.reaction_parameters("cb:1", "👍") is None


def test_sent_remote_id_matches_inbound_ids() -> None:
    sent = {"message_id": 1400, "chat": {"id": 1111111, "type": "private"}, "date": 1}
    assert mapping.sent_remote_id(sent) == "1111111:1400"
    with pytest.raises(ValueError):
        mapping.sent_remote_id(True)


# -- the error table


@pytest.mark.parametrize(
    ("fixture", "status", "permanent", "code", "retry_after"),
    [
        ("error_429_retry_after.json", 429, False, "rate_limited", 3.0),
        ("error_403_blocked.json", 403, True, errors.BLOCKED, None),
        ("error_400_chat_not_found.json", 400, True, "chat_not_found", None),
        ("error_401_unauthorized.json", 401, True, "unauthorized", None),
        ("error_404_not_found.json", 404, True, "not_found", None),
    ],
)
def test_error_table(
    fixture: str, status: int, permanent: bool, code: str, retry_after: float | None
) -> None:
    err = errors.classify(status, load(fixture))
    assert (err.permanent, err.code, err.retry_after) == (permanent, code, retry_after)
    assert err.human and "{description}" not in err.human


def test_blocked_has_human_text_for_advisers() -> None:
    err = errors.classify(403, load("error_403_blocked.json"))
    assert "blocked the shop's Telegram bot" in err.human


def test_unknown_bad_request_quotes_telegram() -> None:
    err = errors.classify(400, {"ok": False, "error_code": 400, "description": "Bad Request: X"})
    assert err.permanent and err.human == "Telegram refused the message: Bad Request: X"


def test_retry_after_from_description_and_server_errors() -> None:
    err = errors.classify(429, {"ok": False, "error_code": 429, "description": "retry after 7"})
    assert err.retry_after == 7.0 and not err.permanent
    assert not errors.classify(502, None).permanent
    assert errors.classify(502, None).code == "unavailable"
