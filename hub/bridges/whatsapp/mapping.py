"""WhatsApp Cloud API payloads ↔ hub types. Pure: no I/O, no aiohttp, nio or SQLAlchemy.

A `messages` webhook (object "whatsapp_business_account") carries entries, each with
changes, each with a value holding `contacts`, `messages`, `statuses` and/or `errors`; every
one of them becomes an Envelope (or a logged problem), none is dropped silently. The
request bodies the hub sends are built in `outbound`.
Field names follow Meta's webhook and Messages API references (see
tests/fixtures/whatsapp/SOURCES.md).
"""

from __future__ import annotations

import mimetypes
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from hub.bridges.whatsapp.errors import human_text
from hub.core.types import (
    DeliveryStatus,
    Envelope,
    InboundMessage,
    InboundReaction,
    MediaRef,
    Parsed,
    Sender,
    StatusUpdate,
)

KIND = "whatsapp"
MEDIA_TYPES = {"image": "image", "video": "video", "document": "file", "sticker": "sticker"}
_STATUSES: dict[str, DeliveryStatus] = {
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "played": "read",  # a voice message was played: it was certainly seen
    "failed": "failed",
}
# File name extensions for the MIME types WhatsApp documents (mimetypes' guesses vary by OS).
_EXTENSIONS = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/webp": ".webp",
    "video/mp4": ".mp4",
    "video/3gpp": ".3gp",
    "audio/ogg": ".ogg",
    "audio/mpeg": ".mp3",
    "audio/mp4": ".m4a",
    "audio/aac": ".aac",
    "audio/amr": ".amr",
    "application/pdf": ".pdf",
    "text/plain": ".txt",
}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: object) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _str(value: object) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    text = str(value)
    return text if text else None


def _timestamp(value: object) -> datetime | None:
    try:
        return datetime.fromtimestamp(int(str(value)), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def base_mimetype(mimetype: str | None) -> str:
    """ "audio/ogg; codecs=opus" → "audio/ogg"."""
    return (mimetype or "application/octet-stream").split(";", 1)[0].strip().lower()


def made_up_filename(kind: str, media_id: str, mimetype: str) -> str:
    """Only documents carry a file name; others get one from their type and id."""
    ext = _EXTENSIONS.get(mimetype) or mimetypes.guess_extension(mimetype) or ".bin"
    safe_id = "".join(c for c in media_id if c.isalnum())[:40] or "file"
    return f"{kind}-{safe_id}{ext}"


def parse_webhook(doc: Mapping[str, Any], phone_number_id: str | None = None) -> Parsed:
    """Every entry, change, message, status and error of one webhook delivery.

    Changes for another business phone number (the same app may serve several) are skipped
    when `phone_number_id` is given, so they never land in this shop's rooms."""
    batch = Parsed()
    for entry in _list(doc.get("entry")):
        for change in _list(_dict(entry).get("changes")):
            change = _dict(change)
            field_name = str(change.get("field") or "")
            if field_name != "messages":
                batch.skip(f"field {field_name or '?'}")
                continue
            value = _dict(change.get("value"))
            number = _str(_dict(value.get("metadata")).get("phone_number_id"))
            if phone_number_id and number and number != phone_number_id:
                batch.skip(f"change for another phone number id {number} skipped")
                continue
            _parse_value(value, batch)
    return batch


def _parse_value(value: dict[str, Any], batch: Parsed) -> None:
    names: dict[str, str | None] = {}
    contact_ids: list[str] = []
    for contact in _list(value.get("contacts")):
        contact = _dict(contact)
        wa_id = _str(contact.get("wa_id"))
        if wa_id:
            contact_ids.append(wa_id)
            names[wa_id] = _str(_dict(contact.get("profile")).get("name"))
    for raw in _list(value.get("messages")):
        msg = _dict(raw)
        sender = _sender(msg, names, contact_ids)
        if sender is None or not _str(msg.get("id")):
            batch.skip(f"message without sender or id ({msg.get('type')!r})")
            continue
        batch.envelopes.append(Envelope(sender, parse_message(msg)))
    for raw in _list(value.get("statuses")):
        update = parse_status(_dict(raw))
        if update is None:
            batch.skip(f"status {_dict(raw).get('status')!r} not understood")
        else:
            batch.envelopes.append(Envelope(None, update))
    for raw in _list(value.get("errors")):
        err = _dict(raw)
        batch.skip(
            f"WhatsApp reported error {err.get('code')}: "
            f"{_dict(err.get('error_data')).get('details') or err.get('title') or ''}"
        )


def _sender(
    msg: dict[str, Any], names: dict[str, str | None], contact_ids: list[str]
) -> Sender | None:
    """The customer: their wa_id (contacts[].wa_id; `from` may carry a leading +)."""
    sent_from = _str(msg.get("from"))
    wa_id = sent_from.lstrip("+") if sent_from else None
    if (wa_id is None or wa_id not in names) and len(contact_ids) == 1:
        wa_id = contact_ids[0]
    if not wa_id:
        return None
    return Sender(KIND, wa_id, names.get(wa_id))


def parse_message(msg: dict[str, Any]) -> InboundMessage | InboundReaction:
    """One entry of `messages[]` as a hub event."""
    remote_id = str(msg["id"])
    mtype = str(msg.get("type") or "unknown")
    timestamp = _timestamp(msg.get("timestamp"))
    context = _dict(msg.get("context"))
    reply_to = _str(context.get("id"))
    body = _dict(msg.get(mtype))
    common: dict[str, Any] = {"reply_to_remote_id": reply_to, "timestamp": timestamp}

    errors = _list(msg.get("errors"))
    if errors or mtype in ("unsupported", "unknown"):
        return _unsupported(remote_id, msg, mtype, body, errors, common)
    if mtype == "reaction":
        return InboundReaction(
            remote_id=remote_id,
            target_remote_id=str(body.get("message_id") or ""),
            emoji=str(body.get("emoji") or ""),
        )
    if mtype == "text":
        return InboundMessage(remote_id, "text", text=str(body.get("body") or ""), **common)
    if mtype in MEDIA_TYPES or mtype == "audio":
        return _media(remote_id, mtype, body, common)
    if mtype == "location":
        return InboundMessage(remote_id, "location", data=_location(body), **common)
    if mtype == "contacts":
        cards = [_contact(_dict(c)) for c in _list(msg.get("contacts"))]
        return InboundMessage(remote_id, "contacts", data={"contacts": cards}, **common)
    if mtype == "interactive":
        return _interactive(remote_id, body, common)
    if mtype == "button":  # a quick-reply button of a template
        data = {"id": str(body.get("payload") or ""), "title": str(body.get("text") or "")}
        return InboundMessage(remote_id, "interactive", text=data["title"], data=data, **common)
    if mtype == "order":
        return InboundMessage(
            remote_id, "order", text=_str(body.get("text")), data=_order(body), **common
        )
    return _unsupported(remote_id, msg, mtype, body, [], common)


def _unsupported(
    remote_id: str,
    msg: dict[str, Any],
    mtype: str,
    body: dict[str, Any],
    errors: list[Any],
    common: dict[str, Any],
) -> InboundMessage:
    # The unsupported object names what the customer actually sent (e.g. "edit", "poll").
    shown_type = _str(body.get("type")) if mtype == "unsupported" else mtype
    data: dict[str, Any] = {"type": shown_type or mtype}
    if errors:
        err = _dict(errors[0])
        code = err.get("code")
        details = _str(_dict(err.get("error_data")).get("details"))
        data["error_code"] = str(code) if code is not None else None
        data["error"] = human_text(
            code if isinstance(code, int) else None, details, _str(err.get("title"))
        )
    text = _str(_dict(msg.get("system")).get("body")) if mtype == "system" else None
    return InboundMessage(remote_id, "unsupported", text=text, data=data, **common)


def _media(
    remote_id: str, mtype: str, body: dict[str, Any], common: dict[str, Any]
) -> InboundMessage:
    media_id = str(body.get("id") or "")
    mimetype = base_mimetype(_str(body.get("mime_type")))
    filename = _str(body.get("filename")) if mtype == "document" else None
    kind = MEDIA_TYPES.get(mtype, "audio")
    media = MediaRef(
        filename=filename or made_up_filename(mtype, media_id, mimetype),
        mimetype=mimetype,
        size=0,  # not in the webhook; known once downloaded
        remote_id=media_id,
    )
    return InboundMessage(
        remote_id,
        kind,  # type: ignore[arg-type]
        text=_str(body.get("caption")),
        media=media,
        voice=mtype == "audio" and body.get("voice") is True,
        **common,
    )


def _location(body: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {"latitude": body.get("latitude"), "longitude": body.get("longitude")}
    for key in ("name", "address", "url"):
        if _str(body.get(key)):
            data[key] = str(body[key])
    return data


def _contact(card: dict[str, Any]) -> dict[str, Any]:
    name = _dict(card.get("name"))
    shown = _str(name.get("formatted_name")) or " ".join(
        p for p in (_str(name.get("first_name")), _str(name.get("last_name"))) if p
    )
    phones = [str(p["phone"]) for p in map(_dict, _list(card.get("phones"))) if p.get("phone")]
    emails = [str(e["email"]) for e in map(_dict, _list(card.get("emails"))) if e.get("email")]
    return {"name": shown or None, "phones": phones, "emails": emails}


def _interactive(remote_id: str, body: dict[str, Any], common: dict[str, Any]) -> InboundMessage:
    itype = str(body.get("type") or "")
    reply = _dict(body.get(itype))
    if itype in ("button_reply", "list_reply") and reply:
        data = {"id": str(reply.get("id") or ""), "title": str(reply.get("title") or "")}
        if _str(reply.get("description")):
            data["description"] = str(reply["description"])
        return InboundMessage(remote_id, "interactive", text=data["title"], data=data, **common)
    return InboundMessage(
        remote_id, "unsupported", data={"type": f"interactive.{itype or 'unknown'}"}, **common
    )


def decimal_string(value: object) -> str | None:
    """A JSON price as an exact decimal string (30 → "30", 7.99 → "7.99"), never a float."""
    if value is None or isinstance(value, bool):
        return None
    try:
        # str() of a float is its shortest round-trip repr, so 7.99 stays "7.99".
        return str(Decimal(str(value)))
    except (InvalidOperation, ValueError):
        return None


def _order(body: dict[str, Any]) -> dict[str, Any]:
    items = []
    for item in map(_dict, _list(body.get("product_items"))):
        quantity = item.get("quantity")
        items.append(
            {
                "sku": str(item.get("product_retailer_id") or ""),
                "quantity": int(quantity) if isinstance(quantity, int | str) else quantity,
                "unit_price": decimal_string(item.get("item_price")),
                "currency": _str(item.get("currency")),
            }
        )
    data: dict[str, Any] = {"items": items}
    if _str(body.get("catalog_id")):
        data["catalog_id"] = str(body["catalog_id"])
    if _str(body.get("text")):
        data["text"] = str(body["text"])
    return data


def parse_status(status: dict[str, Any]) -> StatusUpdate | None:
    """One entry of `statuses[]`; failures carry the code and the hub's human text."""
    mapped = _STATUSES.get(str(status.get("status") or ""))
    remote_id = _str(status.get("id"))
    if mapped is None or remote_id is None:
        return None
    if mapped != "failed":
        return StatusUpdate(remote_id, mapped)
    err = _dict((_list(status.get("errors")) or [{}])[0])
    code = err.get("code")
    details = _str(_dict(err.get("error_data")).get("details"))
    return StatusUpdate(
        remote_id,
        "failed",
        error_code=str(code) if code is not None else None,
        error_text=human_text(
            code if isinstance(code, int) else None, details, _str(err.get("title"))
        ),
    )
