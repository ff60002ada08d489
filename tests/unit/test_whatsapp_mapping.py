"""WhatsApp payload mapping against Meta's documented examples (tests/fixtures/whatsapp)."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hub.bridges.whatsapp import errors, mapping, outbound
from hub.core.types import Button, InboundMessage, InboundReaction, StatusUpdate

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "whatsapp"
SHEENA = "16505551234"


def load(name: str) -> dict[str, Any]:
    return dict(json.loads((FIXTURES / name).read_text(encoding="utf-8")))


def only_message(name: str) -> InboundMessage:
    batch = mapping.parse_webhook(load(name))
    assert len(batch.envelopes) == 1, batch
    env = batch.envelopes[0]
    assert env.sender is not None
    assert env.sender.channel == "whatsapp"
    assert isinstance(env.event, InboundMessage)
    return env.event


def test_text_message_sender_and_fields() -> None:
    batch = mapping.parse_webhook(load("text.json"))
    [env] = batch.envelopes
    assert env.sender is not None
    assert env.sender.external_id == SHEENA
    assert env.sender.display_name == "Sheena Nelson"
    msg = env.event
    assert isinstance(msg, InboundMessage)
    assert msg.remote_id == "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="
    assert msg.kind == "text"
    assert msg.text == "Does it come in another color?"
    assert msg.timestamp == datetime.fromtimestamp(1749416383, UTC)
    assert msg.reply_to_remote_id is None
    assert batch.skipped == {}


def test_message_business_button_keeps_context() -> None:
    msg = only_message("text_message_business_button.json")
    assert msg.text == "Is this still available?"
    assert msg.reply_to_remote_id == "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGA9wcm9kdWN0X2lucXVpcnkA"


def test_image_is_a_media_ref_with_caption() -> None:
    msg = only_message("image.json")
    assert msg.kind == "image"
    assert msg.text == "Taj Mahal"
    assert msg.media is not None
    assert msg.media.remote_id == "1003383421387256"
    assert msg.media.mimetype == "image/jpeg"
    assert msg.media.filename == "image-1003383421387256.jpg"
    assert msg.media.media_id is None and msg.media.mxc is None


def test_voice_note_is_audio_with_voice_flag() -> None:
    msg = only_message("audio_voice.json")
    assert msg.kind == "audio"
    assert msg.voice is True
    assert msg.media is not None
    assert msg.media.mimetype == "audio/ogg"  # "; codecs=opus" dropped
    assert msg.media.filename == "audio-1908647269898587.ogg"
    assert msg.media.remote_id == "1908647269898587"


def test_audio_file_is_not_a_voice_note() -> None:
    doc = load("audio_voice.json")
    del doc["entry"][0]["changes"][0]["value"]["messages"][0]["audio"]["voice"]
    msg = mapping.parse_webhook(doc).envelopes[0].event
    assert isinstance(msg, InboundMessage)
    assert msg.kind == "audio" and msg.voice is False


def test_document_keeps_its_filename() -> None:
    msg = only_message("document.json")
    assert msg.kind == "file"
    assert msg.text == "my receipt"
    assert msg.media is not None
    assert msg.media.filename == "receipt.pdf"
    assert msg.media.mimetype == "application/pdf"
    assert msg.media.remote_id == "622684793477189"


def test_video_and_sticker() -> None:
    video = only_message("video.json")
    assert video.kind == "video"
    assert video.text == "Timelapse of growth"
    assert video.media is not None and video.media.filename == "video-731675419373506.mp4"
    sticker = only_message("sticker.json")
    assert sticker.kind == "sticker"
    assert sticker.text is None
    assert sticker.media is not None
    assert sticker.media.mimetype == "image/webp"
    assert sticker.media.filename.endswith(".webp")


def test_location() -> None:
    msg = only_message("location.json")
    assert msg.kind == "location"
    assert msg.data == {
        "latitude": 37.44221496582,
        "longitude": -122.16165924072,
        "name": "Philz Coffee",
        "address": "101 Forest Ave, Palo Alto, CA 94301",
        "url": "https://philzcoffee.com/",
    }


def test_contacts() -> None:
    msg = only_message("contacts.json")
    assert msg.kind == "contacts"
    assert msg.data == {
        "contacts": [{"name": "Barbara J. Johnson", "phones": ["+1 (415) 555-0829"], "emails": []}]
    }


def test_interactive_replies_and_legacy_button() -> None:
    button = only_message("interactive_button_reply.json")
    assert button.kind == "interactive"
    assert button.data == {"id": "change-button", "title": "Change"}
    assert button.text == "Change"
    assert button.reply_to_remote_id == "wamid.HBgLMTY0NjcwNDM1OTUVAgARGBJBM0Y4RUU0RUNFQkFDMjYzQUMA"

    row = only_message("interactive_list_reply.json")
    assert row.data == {
        "id": "priority_express",
        "title": "Priority Mail Express",
        "description": "Next Day to 2 Days",
    }

    legacy = only_message("button.json")
    assert legacy.kind == "interactive"
    assert legacy.data == {"id": "Unsubscribe", "title": "Unsubscribe"}


def test_reaction_and_its_removal() -> None:
    [env] = mapping.parse_webhook(load("reaction.json")).envelopes
    assert isinstance(env.event, InboundReaction)
    assert env.event.emoji == "👍"
    assert env.event.target_remote_id == (
        "wamid.HBgLMTQxMjU1NTA4MjkVAgASGBQzQUNCNjk5RDUwNUZGMUZEM0VBRAA="
    )
    assert env.event.remote_id == "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA="
    [removed] = mapping.parse_webhook(load("reaction_removed.json")).envelopes
    assert isinstance(removed.event, InboundReaction)
    assert removed.event.emoji == ""


def test_order_prices_are_decimal_strings() -> None:
    msg = only_message("order.json")
    assert msg.kind == "order"
    assert msg.text == "Love these!"
    assert msg.data == {
        "catalog_id": "194836987003835",
        "text": "Love these!",
        "items": [
            {"sku": "di9ozbzfi4", "quantity": 2, "unit_price": "30", "currency": "USD"},
            {"sku": "nqryix03ez", "quantity": 1, "unit_price": "25", "currency": "USD"},
        ],
    }


def test_fractional_price_stays_exact() -> None:
    doc = load("order.json")
    item = doc["entry"][0]["changes"][0]["value"]["messages"][0]["order"]["product_items"][0]
    item["item_price"] = 7.99
    msg = mapping.parse_webhook(doc).envelopes[0].event
    assert isinstance(msg, InboundMessage) and msg.data is not None
    assert msg.data["items"][0]["unit_price"] == "7.99"
    assert isinstance(msg.data["items"][0]["unit_price"], str)


def test_unsupported_names_the_real_type_and_error() -> None:
    msg = only_message("unsupported.json")
    assert msg.kind == "unsupported"
    assert msg.data == {
        "type": "edit",
        "error_code": "131051",
        "error": errors.ERRORS[131051].human,
    }


def test_unknown_type_is_unsupported_not_dropped() -> None:
    doc = load("text.json")
    m = doc["entry"][0]["changes"][0]["value"]["messages"][0]
    m["type"] = "poll_vote"
    m["poll_vote"] = {"anything": 1}
    msg = mapping.parse_webhook(doc).envelopes[0].event
    assert isinstance(msg, InboundMessage)
    assert msg.kind == "unsupported"
    assert msg.data == {"type": "poll_vote"}


def test_message_with_errors_array_is_unsupported() -> None:
    doc = load("image.json")
    m = doc["entry"][0]["changes"][0]["value"]["messages"][0]
    m["errors"] = [{"code": 131052, "title": "Media download error"}]
    msg = mapping.parse_webhook(doc).envelopes[0].event
    assert isinstance(msg, InboundMessage)
    assert msg.kind == "unsupported"
    assert msg.data is not None and msg.data["type"] == "image"
    assert msg.data["error_code"] == "131052"


def test_statuses() -> None:
    [sent] = mapping.parse_webhook(load("status_sent.json")).envelopes
    assert sent.sender is None
    assert sent.event == StatusUpdate(
        "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA=", "sent"
    )
    [v24] = mapping.parse_webhook(load("status_sent_v24.json")).envelopes
    assert isinstance(v24.event, StatusUpdate) and v24.event.status == "sent"
    [failed] = mapping.parse_webhook(load("status_failed.json")).envelopes
    assert failed.event == StatusUpdate(
        "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI0QUQ2MjA4NEYyRkExNjMyREUA",
        "failed",
        error_code="131049",
        error_text=errors.ERRORS[131049].human,
    )


@pytest.mark.parametrize(("raw", "expected"), [("delivered", "delivered"), ("read", "read")])
def test_delivered_read_and_played(raw: str, expected: str) -> None:
    doc = load("status_sent_v24.json")
    doc["entry"][0]["changes"][0]["value"]["statuses"][0]["status"] = raw
    [env] = mapping.parse_webhook(doc).envelopes
    assert isinstance(env.event, StatusUpdate) and env.event.status == expected
    doc["entry"][0]["changes"][0]["value"]["statuses"][0]["status"] = "played"
    [played] = mapping.parse_webhook(doc).envelopes
    assert isinstance(played.event, StatusUpdate) and played.event.status == "read"


def test_window_closed_failure_tells_advisers_to_use_a_template() -> None:
    doc = load("status_failed.json")
    err = doc["entry"][0]["changes"][0]["value"]["statuses"][0]["errors"][0]
    err["code"] = 131047
    [env] = mapping.parse_webhook(doc).envelopes
    assert isinstance(env.event, StatusUpdate)
    assert env.event.error_code == "131047"
    assert env.event.error_text == (
        "More than 24 hours have passed since the customer last replied: only an approved "
        "template can be sent now (use !template)"
    )


def test_system_level_errors_are_reported_not_delivered() -> None:
    batch = mapping.parse_webhook(load("errors_system.json"))
    assert batch.envelopes == []
    assert batch.skipped == {
        "WhatsApp reported error 130429: Message failed to send because there were too many "
        "messages sent from this phone number in a short period of time": 1
    }


def test_every_entry_change_and_message_of_a_batch() -> None:
    """Two entries; the first change carries two customers with one message each."""
    doc = load("text.json")
    value = doc["entry"][0]["changes"][0]["value"]
    value["contacts"].append({"profile": {"name": "Jürgen Ölfarbe"}, "wa_id": "4915112345678"})
    second = copy.deepcopy(value["messages"][0])
    second |= {"from": "4915112345678", "id": "wamid.second", "text": {"body": "Grüße 👋"}}
    value["messages"].append(second)
    other = load("image.json")["entry"][0]
    other["changes"].append(load("status_sent.json")["entry"][0]["changes"][0])
    doc["entry"].append(other)
    batch = mapping.parse_webhook(doc)
    who = [
        (e.sender.external_id, e.sender.display_name) if e.sender else None for e in batch.envelopes
    ]
    assert who == [
        (SHEENA, "Sheena Nelson"),
        ("4915112345678", "Jürgen Ölfarbe"),
        (SHEENA, "Sheena Nelson"),
        None,
    ]
    kinds = [type(e.event).__name__ for e in batch.envelopes]
    assert kinds == ["InboundMessage", "InboundMessage", "InboundMessage", "StatusUpdate"]


def test_other_phone_numbers_and_fields_are_skipped() -> None:
    batch = mapping.parse_webhook(load("text.json"), phone_number_id="999")
    assert batch.envelopes == []
    assert any("another phone number" in why for why in batch.skipped)
    doc = load("text.json")
    doc["entry"][0]["changes"][0]["field"] = "account_update"
    batch = mapping.parse_webhook(doc)
    assert batch.envelopes == [] and batch.skipped == {"field account_update": 1}


def test_from_with_plus_maps_to_wa_id() -> None:
    doc = load("text.json")
    doc["entry"][0]["changes"][0]["value"]["messages"][0]["from"] = "+16505551234"
    [env] = mapping.parse_webhook(doc).envelopes
    assert env.sender is not None and env.sender.external_id == SHEENA


def test_malformed_documents_never_raise() -> None:
    for doc in ({}, {"entry": "x"}, {"entry": [{"changes": [None, 3]}]}, {"entry": [None]}):
        assert mapping.parse_webhook(doc).envelopes == []


# --- outbound ----------------------------------------------------------------------------


def test_text_payload_with_context() -> None:
    assert outbound.text_payload("16505551234", "Hallo", "wamid.X") == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "16505551234",
        "context": {"message_id": "wamid.X"},
        "type": "text",
        "text": {"preview_url": False, "body": "Hallo"},
    }
    assert outbound.text_payload("1", "see https://x.example")["text"]["preview_url"] is True


def test_media_payloads() -> None:
    doc = outbound.media_payload("1", "document", "99", caption="Rechnung", filename="r.pdf")
    assert doc["type"] == "document"
    assert doc["document"] == {"id": "99", "caption": "Rechnung", "filename": "r.pdf"}
    audio = outbound.media_payload("1", "audio", "98", caption="ignored", filename="a.ogg")
    assert audio["audio"] == {"id": "98"}
    assert outbound.wa_media_type("image", "image/png") == "image"
    assert outbound.wa_media_type("image", "image/gif") == "document"
    assert outbound.wa_media_type("video", "video/quicktime") == "document"
    assert outbound.wa_media_type("audio", "audio/ogg; codecs=opus") == "audio"
    assert outbound.wa_media_type("file", "application/pdf") == "document"


def test_template_payload() -> None:
    doc = outbound.template_payload("1", "order_update", "de", ["Anna", "4711"])
    assert doc["type"] == "template"
    assert doc["template"] == {
        "name": "order_update",
        "language": {"code": "de"},
        "components": [
            {
                "type": "body",
                "parameters": [{"type": "text", "text": "Anna"}, {"type": "text", "text": "4711"}],
            }
        ],
    }
    assert "components" not in outbound.template_payload("1", "hello", "en_US", [])["template"]


def test_buttons_and_list_limits() -> None:
    buttons = tuple(Button(f"b{i}", f"A very long button title {i}") for i in range(4))
    doc = outbound.buttons_payload("1", "Choose", buttons)
    sent = doc["interactive"]["action"]["buttons"]
    assert len(sent) == 3
    assert all(len(b["reply"]["title"]) <= 20 for b in sent)
    assert sent[0] == {"type": "reply", "reply": {"id": "b0", "title": "A very long button …"}}
    rows = tuple(Button(f"r{i}", f"Row {i}", "d" * 100) for i in range(12))
    lst = outbound.list_payload("1", "Pick", "Options", rows)["interactive"]
    assert lst["type"] == "list"
    assert lst["action"]["button"] == "Options"
    [section] = lst["action"]["sections"]
    assert len(section["rows"]) == 10
    assert len(section["rows"][0]["description"]) == 72


def test_reaction_and_read_payloads() -> None:
    assert outbound.reaction_payload("1", "wamid.A", "")["reaction"] == {
        "message_id": "wamid.A",
        "emoji": "",
    }
    assert outbound.read_payload("wamid.A") == {
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": "wamid.A",
    }
    assert outbound.sent_message_id(load("send_response.json")) == (
        "wamid.HBgLMTY0NjcwNDM1OTUVAgARGBI1RjQyNUE3NEYxMzAzMzQ5MkEA"
    )


# --- the error table -----------------------------------------------------------------------


def test_graph_error_body_is_parsed() -> None:
    err = errors.parse_error_body(load("graph_error_response.json"))
    assert err == errors.GraphError(
        code=190,
        message="Message describing the error",
        type="OAuthException",
        details=None,
        subcode=460,
        fbtrace_id="EJplcsCHuLu",
    )
    c = errors.classify(400, load("graph_error_response.json"))
    assert c.permanent is True and c.code == "190"
    assert "access token" in c.human


@pytest.mark.parametrize(
    ("status", "code", "header", "wait"),
    [
        (429, 130429, "7", 7.0),
        (400, 130429, None, 15.0),
        (400, 131056, None, 10.0),
        (429, None, None, 30.0),
    ],
)
def test_rate_limits_are_temporary(
    status: int, code: int | None, header: str | None, wait: float
) -> None:
    body = {"error": {"message": "x", "code": code}} if code else None
    c = errors.classify(status, body, header)
    assert c.permanent is False
    assert c.retry_after == wait


@pytest.mark.parametrize("code", [131047, 131026, 100, 190, 132001, 131048, 250])
def test_permanent_codes(code: int) -> None:
    c = errors.classify(400, {"error": {"message": "x", "code": code}})
    assert c.permanent is True
    assert c.retry_after is None
    assert c.code == str(code)


def test_unknown_code_shows_meta_details_and_5xx_is_temporary() -> None:
    body = {"error": {"message": "(#999) Odd", "code": 999, "error_data": {"details": "odd"}}}
    c = errors.classify(400, body)
    assert c.permanent is True and c.human == "WhatsApp refused the message: odd"
    assert errors.classify(502, None).permanent is False
    assert errors.classify(503, "not json").permanent is False
