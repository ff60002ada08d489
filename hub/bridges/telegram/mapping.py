"""Telegram Bot API payloads ↔ hub types; pure (no aiohttp, nio or SQLAlchemy, no I/O).

Inbound: one webhook request carries one Update (https://core.telegram.org/bots/api#update).
Remote ids: a message is "<chat_id>:<message_id>" (message ids are per chat), which is also
what `send` returns for our own messages, so replies and reactions resolve both ways. Events
without a message of their own get an id from the Update: "edit:<update_id>",
"react:<update_id>", "cb:<callback id>", "u<update_id>". A redelivered Update therefore
maps to the same ids and is stored once.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from hub.core.types import (
    BlockChange,
    Button,
    Envelope,
    InboundEdit,
    InboundMessage,
    InboundReaction,
    MediaRef,
    MessageKind,
    Parsed,
    Sender,
)
from hub.i18n import _

KIND = "telegram"
# What setWebhook asks for. message_reaction must be named explicitly (not in the default).
ALLOWED_UPDATES = [
    "message",
    "edited_message",
    "callback_query",
    "message_reaction",
    "my_chat_member",
]
# Updates a user starts outside a chat: shown to advisers as "unsupported" (never silent).
USER_UPDATES = (
    "inline_query",
    "chosen_inline_result",
    "shipping_query",
    "pre_checkout_query",
    "purchased_paid_media",
)
# Message fields that describe a message rather than being its content.
_META = set(
    """
    message_id message_thread_id from sender_chat sender_boost_count sender_business_bot
    date business_connection_id chat forward_origin forward_from forward_from_chat
    forward_from_message_id forward_signature forward_sender_name forward_date
    is_topic_message is_automatic_forward reply_to_message external_reply quote
    reply_to_story via_bot edit_date has_protected_content is_from_offline media_group_id
    author_signature entities link_preview_options effect_id caption caption_entities
    show_caption_above_media has_media_spoiler reply_markup
    """.split()
)
_START = re.compile(r"^/start(?:@\w+)?(?:\s+(.*))?$", re.DOTALL)
TEXT_LIMIT = 4096  # sendMessage text, after entity parsing
CAPTION_LIMIT = 1024  # media captions
PHOTO_MAX_BYTES = 10 * 1024 * 1024  # sendPhoto; larger images go as documents
CALLBACK_DATA_MAX_BYTES = 64


def _result(
    envelopes: list[Envelope] | None = None, ignored: str | None = None, ack: str | None = None
) -> Parsed:
    """What one Update means for the hub: at most one event, or why there is none."""
    parsed = Parsed(envelopes=envelopes or [], acks=[ack] if ack else [])
    if ignored:
        parsed.skip(ignored)
    return parsed


# -- inbound ---------------------------------------------------------------------------


def parse_update(update: dict[str, Any]) -> Parsed:
    update_id = update.get("update_id")
    if not isinstance(update_id, int):
        return _result(ignored="not an Update (no update_id)")
    for key in ("message", "edited_message", "callback_query", "message_reaction"):
        if isinstance(update.get(key), dict):
            return _PARSERS[key](update_id, update[key])
    if isinstance(update.get("my_chat_member"), dict):
        return _member(update_id, update["my_chat_member"])
    for key in USER_UPDATES:
        user = (update.get(key) or {}).get("from") if isinstance(update.get(key), dict) else None
        if isinstance(user, dict) and "id" in user:
            sender = Sender(KIND, str(user["id"]), display_name(user))
            event = InboundMessage(f"u{update_id}", "unsupported", data={"type": key})
            return _result([Envelope(sender, event)])
    kinds = [k for k in update if k != "update_id"]
    return _result(ignored=f"update of type {kinds[0] if kinds else '?'}")


def display_name(user: dict[str, Any]) -> str | None:
    """First and last name, else @username (a User or a private Chat)."""
    name = " ".join(str(user[k]) for k in ("first_name", "last_name") if user.get(k)).strip()
    if name:
        return name
    return f"@{user['username']}" if user.get("username") else None


def _private_chat(msg: dict[str, Any]) -> dict[str, Any] | None:
    chat = msg.get("chat")
    if isinstance(chat, dict) and chat.get("type") == "private" and "id" in chat:
        return chat
    return None


def _sender(chat: dict[str, Any], user: dict[str, Any] | None) -> Sender:
    return Sender(KIND, str(chat["id"]), display_name(user or {}) or display_name(chat))


def message_remote_id(chat_id: Any, message_id: Any) -> str:
    return f"{chat_id}:{message_id}"


def _message(update_id: int, msg: dict[str, Any]) -> Parsed:
    chat = _private_chat(msg)
    if chat is None:
        kind = (msg.get("chat") or {}).get("type", "unknown")
        return _result(ignored=f"message from a non-private chat ({kind})")
    if not isinstance(msg.get("message_id"), int):
        return _result(ignored="message without message_id")
    event = _message_event(msg, chat)
    return _result([Envelope(_sender(chat, msg.get("from")), event)])


def _message_event(msg: dict[str, Any], chat: dict[str, Any]) -> InboundMessage:
    chat_id, mid = chat["id"], msg.get("message_id")
    reply = msg.get("reply_to_message")
    base: dict[str, Any] = {
        "remote_id": message_remote_id(chat_id, mid),
        "reply_to_remote_id": (
            message_remote_id(chat_id, reply["message_id"])
            if isinstance(reply, dict) and "message_id" in reply
            else None
        ),
        "timestamp": (
            datetime.fromtimestamp(msg["date"], UTC) if isinstance(msg.get("date"), int) else None
        ),
    }
    forwarded = _forward(msg)
    if isinstance(msg.get("text"), str):
        start = _START.match(msg["text"]) if forwarded is None else None
        if start:
            data = {"command": "start", "payload": (start.group(1) or "").strip() or None}
            return InboundMessage(kind="text", text=msg["text"], data=data, **base)
        return InboundMessage(kind="text", text=msg["text"], data=forwarded, **base)
    caption = msg.get("caption") if isinstance(msg.get("caption"), str) else None
    media = _media(msg)
    if media is not None:
        kind, ref, voice, extra = media
        merged = {**(extra or {}), **(forwarded or {})} or None
        return InboundMessage(kind=kind, text=caption, media=ref, voice=voice, data=merged, **base)
    kind, data = _structured(msg)
    return InboundMessage(kind=kind, text=caption, data=data, **base)


def _forward(msg: dict[str, Any]) -> dict[str, Any] | None:
    origin = msg.get("forward_origin")
    if isinstance(origin, dict):
        who = origin.get("sender_user") or origin.get("sender_chat") or origin.get("chat") or {}
        name = display_name(who) or who.get("title") or origin.get("sender_user_name")
        return {"forwarded_from": name}
    if isinstance(msg.get("forward_from"), dict):  # the older fields, still in the examples
        f = msg["forward_from"]
        return {"forwarded_from": display_name(f) or f.get("title")}
    return None


def _file(obj: dict[str, Any], filename: str, mimetype: str) -> MediaRef:
    size = obj.get("file_size")
    return MediaRef(
        filename=str(obj.get("file_name") or filename),
        mimetype=str(obj.get("mime_type") or mimetype),
        size=size if isinstance(size, int) else 0,
        remote_id=str(obj["file_id"]),
    )


def _photo_area(size: dict[str, Any]) -> tuple[int, int]:
    return int(size.get("width") or 0) * int(size.get("height") or 0), int(
        size.get("file_size") or 0
    )


def _media(
    msg: dict[str, Any],
) -> tuple[MessageKind, MediaRef, bool, dict[str, Any] | None] | None:
    """(kind, file, voice note?, extra data) for messages carrying a file."""
    mid = msg.get("message_id")
    photo = msg.get("photo")
    if isinstance(photo, list) and photo:
        # Telegram sends every size it made; the largest is the original.
        best = max(photo, key=_photo_area)
        return "image", _file(best, f"photo_{mid}.jpg", "image/jpeg"), False, None
    for key, kind, name, mimetype, voice in (
        ("voice", "audio", f"voice_{mid}.ogg", "audio/ogg", True),
        ("audio", "audio", f"audio_{mid}.mp3", "audio/mpeg", False),
        ("animation", "video", f"animation_{mid}.mp4", "video/mp4", False),
        ("video", "video", f"video_{mid}.mp4", "video/mp4", False),
        ("video_note", "video", f"video_note_{mid}.mp4", "video/mp4", False),
        ("document", "file", f"document_{mid}", "application/octet-stream", False),
    ):
        obj = msg.get(key)
        if isinstance(obj, dict) and "file_id" in obj:
            if key == "audio" and not obj.get("file_name") and obj.get("title"):
                name = f"{obj['title']}.mp3"
            extra = {"video_note": True} if key == "video_note" else None
            return kind, _file(obj, name, mimetype), voice, extra  # type: ignore[return-value]
    sticker = msg.get("sticker")
    if isinstance(sticker, dict) and "file_id" in sticker:
        ext, mimetype = ("webp", "image/webp")
        if sticker.get("is_animated"):
            ext, mimetype = ("tgs", "application/x-tgsticker")
        elif sticker.get("is_video"):
            ext, mimetype = ("webm", "video/webm")
        ref = _file(sticker, f"sticker_{mid}.{ext}", mimetype)
        return "sticker", ref, False, {"emoji": sticker.get("emoji")}
    return None


def _structured(msg: dict[str, Any]) -> tuple[MessageKind, dict[str, Any]]:
    venue, loc = msg.get("venue"), msg.get("location")
    if isinstance(venue, dict) and isinstance(venue.get("location"), dict):
        v = venue["location"]
        return "location", {
            "latitude": v.get("latitude"),
            "longitude": v.get("longitude"),
            "name": venue.get("title"),
            "address": venue.get("address"),
        }
    if isinstance(loc, dict):
        return "location", {"latitude": loc.get("latitude"), "longitude": loc.get("longitude")}
    contact = msg.get("contact")
    if isinstance(contact, dict):
        name = display_name(contact) or _("Contact")
        phones = [str(contact["phone_number"])] if contact.get("phone_number") else []
        emails = _vcard_emails(str(contact.get("vcard") or ""))
        return "contacts", {"contacts": [{"name": name, "phones": phones, "emails": emails}]}
    kind = next((k for k in msg if k not in _META), "unknown")
    data: dict[str, Any] = {"type": kind}
    story = msg.get("story")
    if kind == "story" and isinstance(story, dict):
        username = (story.get("chat") or {}).get("username")
        if username and story.get("id"):
            data["link"] = f"https://t.me/{username}/s/{story['id']}"
    return "unsupported", data


def _vcard_emails(vcard: str) -> list[str]:
    return [
        line.split(":", 1)[1].strip()
        for line in vcard.splitlines()
        if line.upper().startswith("EMAIL") and ":" in line
    ]


def _edited(update_id: int, msg: dict[str, Any]) -> Parsed:
    chat = _private_chat(msg)
    if chat is None or not isinstance(msg.get("message_id"), int):
        return _result(ignored="edit outside a private chat")
    text = msg.get("text") if isinstance(msg.get("text"), str) else msg.get("caption")
    if not isinstance(text, str):
        # e.g. a live location moving: Telegram reports it as an edit without text.
        return _result(ignored="edit without text (e.g. live location)")
    event = InboundEdit(
        remote_id=f"edit:{update_id}",
        target_remote_id=message_remote_id(chat["id"], msg.get("message_id")),
        text=text,
    )
    return _result([Envelope(_sender(chat, msg.get("from")), event)])


def button_title(message: dict[str, Any] | None, data: str) -> str | None:
    """The label of the inline button whose callback_data was `data`."""
    markup = (message or {}).get("reply_markup") or {}
    for row in markup.get("inline_keyboard") or []:
        for button in row or []:
            if isinstance(button, dict) and button.get("callback_data") == data:
                return str(button.get("text"))
    return None


def _callback(update_id: int, cq: dict[str, Any]) -> Parsed:
    cq_id = str(cq.get("id", ""))
    user = cq.get("from") if isinstance(cq.get("from"), dict) else {}
    message = cq.get("message") if isinstance(cq.get("message"), dict) else None
    if message is not None and _private_chat(message) is None:
        return _result(ack=cq_id, ignored="callback in a group")
    chat = _private_chat(message) if message else user
    if not chat or "id" not in chat:
        return _result(ack=cq_id, ignored="callback without user")
    data = cq.get("data")
    reply_to = message_remote_id(chat["id"], message["message_id"]) if message else None
    if not isinstance(data, str):  # a game button (game_short_name)
        event = InboundMessage(f"cb:{cq_id}", "unsupported", data={"type": "callback_game"})
    else:
        title = button_title(message, data) or data
        event = InboundMessage(
            remote_id=f"cb:{cq_id}",
            kind="interactive",
            text=title,
            reply_to_remote_id=reply_to,
            data={"id": data, "title": title},
        )
    sender = Sender(KIND, str(chat["id"]), display_name(user or {}))
    return _result([Envelope(sender, event)], ack=cq_id)


def _reaction(update_id: int, r: dict[str, Any]) -> Parsed:
    chat = _private_chat(r)
    if chat is None or not isinstance(r.get("user"), dict):
        return _result(ignored="reaction outside a private chat")
    new = [x for x in r.get("new_reaction") or [] if isinstance(x, dict)]
    emojis = [str(x["emoji"]) for x in new if x.get("type") == "emoji" and x.get("emoji")]
    if new and not emojis:
        return _result(ignored="custom emoji or paid reaction")
    event = InboundReaction(
        remote_id=f"react:{update_id}",
        target_remote_id=message_remote_id(chat["id"], r.get("message_id")),
        emoji=emojis[0] if emojis else "",
    )
    return _result([Envelope(_sender(chat, r["user"]), event)])


def _member(update_id: int, m: dict[str, Any]) -> Parsed:
    chat = _private_chat(m)
    status = (m.get("new_chat_member") or {}).get("status")
    if chat is None or status not in ("kicked", "member"):
        return _result(ignored="chat member change")
    sender = Sender(KIND, str(chat["id"]), display_name(m.get("from") or {}))
    return _result([Envelope(sender, BlockChange(status == "kicked"))])


_PARSERS = {
    "message": _message,
    "edited_message": _edited,
    "callback_query": _callback,
    "message_reaction": _reaction,
}


# -- outbound --------------------------------------------------------------------------


def chat_id(external_id: str) -> int | str:
    return int(external_id) if external_id.lstrip("-").isdigit() else external_id


def parse_message_remote_id(remote_id: str | None) -> tuple[str, int] | None:
    """(chat id, message id) of "<chat>:<message>"; None for other ids (edits, callbacks)."""
    if not remote_id:
        return None
    chat, _sep, mid = remote_id.rpartition(":")
    if not chat or not mid.isdigit() or not chat.lstrip("-").isdigit():
        return None
    return chat, int(mid)


def reply_parameters(reply_to_remote_id: str | None) -> dict[str, Any] | None:
    target = parse_message_remote_id(reply_to_remote_id)
    if target is None:
        return None
    # The customer may have deleted the message: send anyway rather than fail.
    return {"message_id": target[1], "allow_sending_without_reply": True}


def inline_keyboard(buttons: tuple[Button, ...] | list[Button]) -> dict[str, Any] | None:
    """One button per row (titles of bot flows are often long); callback_data = button id.
    Raises ValueError for an id over Telegram's 64 bytes."""
    if not buttons:
        return None
    rows = []
    for b in buttons:
        if not 1 <= len(b.id.encode()) <= CALLBACK_DATA_MAX_BYTES:
            raise ValueError(
                _("button id {id}… must be 1-64 bytes for Telegram").format(id=repr(b.id[:20]))
            )
        rows.append([{"text": b.title, "callback_data": b.id}])
    return {"inline_keyboard": rows}


def media_method(kind: str, mimetype: str, size: int) -> tuple[str, str]:
    """(Bot API method, file field) for an outbound file, by what Telegram can show."""
    mimetype = mimetype.lower()
    if kind == "image" and mimetype in ("image/jpeg", "image/png", "image/webp"):
        if size <= PHOTO_MAX_BYTES:
            return "sendPhoto", "photo"
    if kind == "audio" or mimetype.startswith("audio/"):
        if mimetype in ("audio/ogg", "audio/opus"):
            return "sendVoice", "voice"  # voice notes are OGG/Opus
        if mimetype in ("audio/mpeg", "audio/mp3", "audio/mp4", "audio/m4a", "audio/x-m4a"):
            return "sendAudio", "audio"  # the music player takes MP3 and M4A only
    if kind == "video" and mimetype == "video/mp4":
        return "sendVideo", "video"
    return "sendDocument", "document"


def reaction_parameters(target_remote_id: str, emoji: str) -> dict[str, Any] | None:
    target = parse_message_remote_id(target_remote_id)
    if target is None:
        return None
    # Matrix clients add U+FE0F (emoji presentation); Telegram's reaction list has none.
    emoji = emoji.replace("\ufe0f", "")
    reaction = [{"type": "emoji", "emoji": emoji}] if emoji else []
    return {"chat_id": chat_id(target[0]), "message_id": target[1], "reaction": reaction}


def sent_remote_id(result: Any) -> str:
    """The remote id of a Message returned by a send method."""
    if isinstance(result, dict) and isinstance(result.get("chat"), dict):
        return message_remote_id(result["chat"].get("id"), result.get("message_id"))
    raise ValueError("Telegram's answer has no message")
