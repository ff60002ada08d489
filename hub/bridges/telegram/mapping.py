"""Telegram Bot API payloads ↔ hub types; pure (no aiohttp, nio or SQLAlchemy, no I/O).

Inbound: one webhook request carries one Update (https://core.telegram.org/bots/api#update).
Remote ids: a message is "<chat_id>:<message_id>" (message ids are per chat), which is also
what `send` returns for our own messages, so replies and reactions resolve both ways. Events
without a message of their own get an id from the Update: "edit:<update_id>",
"react:<update_id>", "cb:<callback id>", "u<update_id>". A redelivered Update therefore
maps to the same ids and is stored once.

`parse_update` never raises: a field of the wrong type reads as absent, and a message of a
kind the mapping knows but cannot read (a photo without a usable size) is stored as
"unsupported" for its customer and counted in `Parsed.problems`.
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
    NotUnderstood,
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
MAX_TYPE_CHARS = 40  # a payload key shown to advisers as a type


def _result(
    envelopes: list[Envelope] | None = None, ignored: str | None = None, ack: str | None = None
) -> Parsed:
    """What one Update means for the hub: at most one event, or why there is none."""
    parsed = Parsed(envelopes=envelopes or [], acks=[ack] if ack else [])
    if ignored:
        parsed.skip(ignored)
    return parsed


# -- reading fields: the Bot API's types, or nothing ------------------------------------
# Telegram sends what its reference documents, but a body is only as good as its sender:
# a field of the wrong type reads as absent (or raises NotUnderstood where it matters).


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: object) -> int | None:
    """An Integer of the Bot API (ids, sizes, dates); never a bool."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: object, limit: float) -> float | int:
    """A coordinate: a JSON number within ±limit."""
    if isinstance(value, int | float) and not isinstance(value, bool) and -limit <= value <= limit:
        return value
    raise NotUnderstood("coordinates are not numbers")


def _when(value: object) -> datetime | None:
    seconds = _int(value)
    if seconds is None:
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):  # far beyond the years a datetime holds
        return None


def _type_name(key: str) -> str:
    """A payload key as the type shown to advisers ("photo"), never longer than a word."""
    return key[:MAX_TYPE_CHARS]


# -- inbound ---------------------------------------------------------------------------


def parse_update(update: dict[str, Any]) -> Parsed:
    """One Update. Whatever its shape, this returns: an Update the mapping cannot read is
    counted as not understood, and shown as such in the customer's room when the customer
    could be read from it."""
    try:
        return _parse_update(update)
    except Exception as exc:  # a shape no branch foresaw (the branches read defensively)
        return _unreadable(update, exc)


def _parse_update(update: dict[str, Any]) -> Parsed:
    update_id = _int(update.get("update_id"))
    if update_id is None:
        return _result(ignored="not an Update (no update_id)")
    for key in ("message", "edited_message", "callback_query", "message_reaction"):
        if isinstance(update.get(key), dict):
            return _PARSERS[key](update_id, update[key])
    if isinstance(update.get("my_chat_member"), dict):
        return _member(update_id, update["my_chat_member"])
    for key in USER_UPDATES:
        user = _dict(_dict(update.get(key)).get("from"))
        user_id = _int(user.get("id"))
        if user_id is not None:
            sender = Sender(KIND, str(user_id), display_name(user))
            event = InboundMessage(f"u{update_id}", "unsupported", data={"type": key})
            return _result([Envelope(sender, event)])
    kinds = [k for k in update if k != "update_id"]
    return _result(ignored=f"update of type {_type_name(kinds[0]) if kinds else '?'}")


# What an Update of each kind is shown as when it cannot be read.
_UNREADABLE_TYPES = {
    "message": None,  # the message's own content key ("photo")
    "edited_message": "edit",
    "callback_query": "button",
    "message_reaction": "reaction",
    **{key: key for key in USER_UPDATES},
}


def _unreadable(update: dict[str, Any], exc: Exception) -> Parsed:
    """An Update that made the mapping fail: not understood; shown to the advisers as an
    unsupported message when its customer can be read."""
    parsed = Parsed()
    for key, shown in _UNREADABLE_TYPES.items():
        obj = update.get(key)
        if not isinstance(obj, dict):
            continue
        parsed.not_understood(f"update {key}", exc)
        update_id = _int(update.get("update_id"))
        chat = _private_chat(obj) or _private_chat(_dict(obj.get("message")))
        customer = _int(chat["id"]) if chat else _int(_dict(obj.get("from")).get("id"))
        if update_id is not None and customer is not None:
            kind = shown or _content_kind(obj)
            event = _not_shown(f"u{update_id}", kind)
            parsed.envelopes.append(Envelope(Sender(KIND, str(customer)), event))
        return parsed
    parsed.not_understood("update", exc)
    return parsed


def _not_shown(remote_id: str, kind: str, **kw: Any) -> InboundMessage:
    """What the customer sent, for the room, when the mapping could not read it."""
    return InboundMessage(remote_id, "unsupported", data={"type": kind}, **kw)


def display_name(user: object) -> str | None:
    """First and last name, else @username (a User or a private Chat)."""
    user = _dict(user)
    parts = [_str(user.get(k)) for k in ("first_name", "last_name")]
    name = " ".join(p for p in parts if p).strip()
    if name:
        return name
    username = _str(user.get("username"))
    return f"@{username}" if username else None


def _private_chat(msg: dict[str, Any]) -> dict[str, Any] | None:
    """The message's chat when it is a private chat with a readable id (the customer)."""
    chat = msg.get("chat")
    if (
        isinstance(chat, dict)
        and chat.get("type") == "private"
        and _int(chat.get("id")) is not None
    ):
        return chat
    return None


def _sender(chat: dict[str, Any], user: object) -> Sender:
    return Sender(KIND, str(chat["id"]), display_name(user) or display_name(chat))


def message_remote_id(chat_id: Any, message_id: Any) -> str:
    return f"{chat_id}:{message_id}"


def _content_kind(msg: dict[str, Any]) -> str:
    """What a message holds, by its first content key ("photo", "dice")."""
    return _type_name(next((k for k in msg if k not in _META), "unknown"))


def _message(update_id: int, msg: dict[str, Any]) -> Parsed:
    chat = _private_chat(msg)
    if chat is None:
        kind = _str(_dict(msg.get("chat")).get("type")) or "unknown"
        return _result(ignored=f"message from a non-private chat ({_type_name(kind)})")
    mid = _int(msg.get("message_id"))
    if mid is None:
        return _result(ignored="message without message_id")
    sender = _sender(chat, msg.get("from"))
    try:
        event = _message_event(msg, chat["id"], mid)
    except Exception as exc:
        kind = _content_kind(msg)
        remote_id = message_remote_id(chat["id"], mid)
        parsed = _result([Envelope(sender, _not_shown(remote_id, kind))])
        parsed.not_understood(f"message ({kind})", exc)
        return parsed
    return _result([Envelope(sender, event)])


def _message_event(msg: dict[str, Any], chat_id: int, mid: int) -> InboundMessage:
    reply = _int(_dict(msg.get("reply_to_message")).get("message_id"))
    base: dict[str, Any] = {
        "remote_id": message_remote_id(chat_id, mid),
        "reply_to_remote_id": message_remote_id(chat_id, reply) if reply is not None else None,
        "timestamp": _when(msg.get("date")),
    }
    forwarded = _forward(msg)
    text = msg.get("text")
    if isinstance(text, str):
        start = _START.match(text) if forwarded is None else None
        if start:
            data = {"command": "start", "payload": (start.group(1) or "").strip() or None}
            return InboundMessage(kind="text", text=text, data=data, **base)
        return InboundMessage(kind="text", text=text, data=forwarded, **base)
    caption = msg.get("caption") if isinstance(msg.get("caption"), str) else None
    media = _media(msg, mid)
    if media is not None:
        kind, ref, voice, extra = media
        merged = {**(extra or {}), **(forwarded or {})} or None
        return InboundMessage(kind=kind, text=caption, media=ref, voice=voice, data=merged, **base)
    kind, data = _structured(msg)
    return InboundMessage(kind=kind, text=caption, data=data, **base)


def _forward(msg: dict[str, Any]) -> dict[str, Any] | None:
    origin = msg.get("forward_origin")
    if isinstance(origin, dict):
        keys = ("sender_user", "sender_chat", "chat")
        who: dict[str, Any] = next((origin[k] for k in keys if isinstance(origin.get(k), dict)), {})
        name = display_name(who) or _str(who.get("title")) or _str(origin.get("sender_user_name"))
        return {"forwarded_from": name}
    if isinstance(msg.get("forward_from"), dict):  # the older fields, still in the examples
        f = msg["forward_from"]
        return {"forwarded_from": display_name(f) or _str(f.get("title"))}
    return None


def _file(obj: object, filename: str, mimetype: str, what: str) -> MediaRef:
    obj = _dict(obj)
    file_id = _str(obj.get("file_id"))
    if file_id is None:
        raise NotUnderstood(f"{what} without a file_id")
    size = _int(obj.get("file_size"))
    return MediaRef(
        filename=_str(obj.get("file_name")) or filename,
        mimetype=_str(obj.get("mime_type")) or mimetype,
        size=size if size is not None and 0 < size < 2**53 else 0,
        remote_id=file_id,
    )


def _photo_area(size: dict[str, Any]) -> tuple[int, int]:
    width, height = _int(size.get("width")) or 0, _int(size.get("height")) or 0
    return width * height, _int(size.get("file_size")) or 0


def _media(
    msg: dict[str, Any], mid: int
) -> tuple[MessageKind, MediaRef, bool, dict[str, Any] | None] | None:
    """(kind, file, voice note?, extra data) for messages carrying a file. A file field
    Telegram documents but without a usable file raises NotUnderstood."""
    if msg.get("photo") is not None:
        # Telegram sends every size it made; the largest is the original.
        sizes = [s for s in _list(msg["photo"]) if isinstance(s, dict) and _str(s.get("file_id"))]
        if not sizes:
            raise NotUnderstood("photo without a usable size")
        best = max(sizes, key=_photo_area)
        return "image", _file(best, f"photo_{mid}.jpg", "image/jpeg", "photo"), False, None
    for key, kind, name, mimetype, voice in (
        ("voice", "audio", f"voice_{mid}.ogg", "audio/ogg", True),
        ("audio", "audio", f"audio_{mid}.mp3", "audio/mpeg", False),
        ("animation", "video", f"animation_{mid}.mp4", "video/mp4", False),
        ("video", "video", f"video_{mid}.mp4", "video/mp4", False),
        ("video_note", "video", f"video_note_{mid}.mp4", "video/mp4", False),
        ("document", "file", f"document_{mid}", "application/octet-stream", False),
    ):
        obj = msg.get(key)
        if obj is None:
            continue
        title = _str(_dict(obj).get("title"))
        if key == "audio" and not _str(_dict(obj).get("file_name")) and title:
            name = f"{title}.mp3"
        extra = {"video_note": True} if key == "video_note" else None
        ref = _file(obj, name, mimetype, key)
        return kind, ref, voice, extra  # type: ignore[return-value]
    sticker = msg.get("sticker")
    if sticker is not None:
        sticker = _dict(sticker)
        ext, mimetype = ("webp", "image/webp")
        if sticker.get("is_animated") is True:
            ext, mimetype = ("tgs", "application/x-tgsticker")
        elif sticker.get("is_video") is True:
            ext, mimetype = ("webm", "video/webm")
        ref = _file(sticker, f"sticker_{mid}.{ext}", mimetype, "sticker")
        return "sticker", ref, False, {"emoji": _str(sticker.get("emoji"))}
    return None


def _location(loc: object) -> dict[str, Any]:
    loc = _dict(loc)
    return {
        "latitude": _number(loc.get("latitude"), 90),
        "longitude": _number(loc.get("longitude"), 180),
    }


def _structured(msg: dict[str, Any]) -> tuple[MessageKind, dict[str, Any]]:
    venue = msg.get("venue")
    if venue is not None:
        venue = _dict(venue)
        return "location", {
            **_location(venue.get("location")),
            "name": _str(venue.get("title")),
            "address": _str(venue.get("address")),
        }
    if msg.get("location") is not None:
        return "location", _location(msg["location"])
    contact = msg.get("contact")
    if isinstance(contact, dict):
        name = display_name(contact) or _("Contact")
        phone = _str(contact.get("phone_number"))
        emails = _vcard_emails(_str(contact.get("vcard")) or "")
        return "contacts", {
            "contacts": [{"name": name, "phones": [phone] if phone else [], "emails": emails}]
        }
    kind = _content_kind(msg)
    data: dict[str, Any] = {"type": kind}
    story = msg.get("story")
    if kind == "story" and isinstance(story, dict):
        username = _str(_dict(story.get("chat")).get("username"))
        story_id = _int(story.get("id"))
        if username and story_id:
            data["link"] = f"https://t.me/{username}/s/{story_id}"
    return "unsupported", data


def _vcard_emails(vcard: str) -> list[str]:
    return [
        line.split(":", 1)[1].strip()
        for line in vcard.splitlines()
        if line.upper().startswith("EMAIL") and ":" in line
    ]


def _edited(update_id: int, msg: dict[str, Any]) -> Parsed:
    chat = _private_chat(msg)
    mid = _int(msg.get("message_id"))
    if chat is None or mid is None:
        return _result(ignored="edit outside a private chat")
    text = msg.get("text") if isinstance(msg.get("text"), str) else msg.get("caption")
    if not isinstance(text, str):
        # e.g. a live location moving: Telegram reports it as an edit without text.
        return _result(ignored="edit without text (e.g. live location)")
    event = InboundEdit(
        remote_id=f"edit:{update_id}",
        target_remote_id=message_remote_id(chat["id"], mid),
        text=text,
    )
    return _result([Envelope(_sender(chat, msg.get("from")), event)])


def button_title(message: object, data: str) -> str | None:
    """The label of the inline button whose callback_data was `data`."""
    markup = _dict(_dict(message).get("reply_markup"))
    for row in _list(markup.get("inline_keyboard")):
        for button in _list(row):
            if isinstance(button, dict) and button.get("callback_data") == data:
                return _str(button.get("text"))
    return None


def _callback(update_id: int, cq: dict[str, Any]) -> Parsed:
    cq_id = _str(cq.get("id"))
    if cq_id is None:
        return _result(ignored="callback without id")
    user = _dict(cq.get("from"))
    message = cq.get("message") if isinstance(cq.get("message"), dict) else None
    if message is not None and _private_chat(message) is None:
        return _result(ack=cq_id, ignored="callback in a group")
    chat = (
        _private_chat(message) if message else (user if _int(user.get("id")) is not None else None)
    )
    if chat is None:
        return _result(ack=cq_id, ignored="callback without user")
    mid = _int(message.get("message_id")) if message else None
    reply_to = message_remote_id(chat["id"], mid) if mid is not None else None
    data = cq.get("data")
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
    sender = Sender(KIND, str(chat["id"]), display_name(user))
    return _result([Envelope(sender, event)], ack=cq_id)


def _reaction(update_id: int, r: dict[str, Any]) -> Parsed:
    chat = _private_chat(r)
    mid = _int(r.get("message_id"))
    if chat is None or not isinstance(r.get("user"), dict) or mid is None:
        return _result(ignored="reaction outside a private chat")
    new = [x for x in _list(r.get("new_reaction")) if isinstance(x, dict)]
    emojis = [e for x in new if x.get("type") == "emoji" and (e := _str(x.get("emoji")))]
    if new and not emojis:
        return _result(ignored="custom emoji or paid reaction")
    event = InboundReaction(
        remote_id=f"react:{update_id}",
        target_remote_id=message_remote_id(chat["id"], mid),
        emoji=emojis[0] if emojis else "",
    )
    return _result([Envelope(_sender(chat, r["user"]), event)])


def _member(update_id: int, m: dict[str, Any]) -> Parsed:
    chat = _private_chat(m)
    status = _dict(m.get("new_chat_member")).get("status")
    if chat is None or status not in ("kicked", "member"):
        return _result(ignored="chat member change")
    sender = Sender(KIND, str(chat["id"]), display_name(m.get("from")))
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
