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
    NotUnderstood,
    Parsed,
    Sender,
    StatusUpdate,
)

KIND = "whatsapp"
MAX_TYPE_CHARS = 40
MAX_ORDER_QUANTITY = 1_000_000
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
    """A text field (ids, names, captions): a string, or a number written as one."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value)
    return text if text else None


def _type_name(value: object) -> str:
    """A provider's type as shown to advisers ("poll"): one short word."""
    return (_str(value) or "unknown")[:MAX_TYPE_CHARS]


def _timestamp(value: object) -> datetime | None:
    if not isinstance(value, str | int) or isinstance(value, bool):
        return None
    try:
        return datetime.fromtimestamp(int(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _coordinate(value: object, limit: float) -> float | int:
    if isinstance(value, int | float) and not isinstance(value, bool) and -limit <= value <= limit:
        return value
    raise NotUnderstood("coordinates are not numbers")


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
            field_name = _str(change.get("field")) or ""
            if field_name != "messages":
                batch.skip(f"field {field_name[:MAX_TYPE_CHARS] or '?'}")
                continue
            value = _dict(change.get("value"))
            number = _str(_dict(value.get("metadata")).get("phone_number_id"))
            if phone_number_id and number and number != phone_number_id:
                batch.skip(f"change for another phone number id {number[:40]} skipped")
                continue
            try:
                _parse_value(value, batch)
            except Exception as exc:  # a shape no branch foresaw: the rest still counts
                batch.not_understood("change", exc)
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
        remote_id = _str(msg.get("id"))
        if sender is None or remote_id is None:
            batch.skip(f"message without sender or id ({_type_name(msg.get('type'))})")
            continue
        try:
            event = parse_message(msg)
        except Exception as exc:  # wrong types in a message of a known kind
            mtype = _type_name(msg.get("type"))
            batch.not_understood(f"message ({mtype})", exc)
            data = {"type": mtype}
            event = InboundMessage(
                remote_id, "unsupported", data=data, timestamp=_timestamp(msg.get("timestamp"))
            )
        batch.envelopes.append(Envelope(sender, event))
    for raw in _list(value.get("statuses")):
        try:
            update = parse_status(_dict(raw))
        except Exception as exc:
            batch.not_understood("status", exc)
            continue
        if update is None:
            batch.skip(f"status {_type_name(_dict(raw).get('status'))} not understood")
        else:
            batch.envelopes.append(Envelope(None, update))
    for raw in _list(value.get("errors")):
        err = _dict(raw)
        said = _str(_dict(err.get("error_data")).get("details")) or _str(err.get("title"))
        batch.skip(f"WhatsApp reported error {_str(err.get('code'))}: {said or ''}")


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
    """One entry of `messages[]` as a hub event. Raises (NotUnderstood) when a message of a
    kind it knows holds what it cannot use; parse_webhook shows such a message as
    unsupported."""
    remote_id = _str(msg.get("id"))
    if remote_id is None:
        raise NotUnderstood("message without id")
    mtype = _type_name(msg.get("type"))
    timestamp = _timestamp(msg.get("timestamp"))
    context = _dict(msg.get("context"))
    reply_to = _str(context.get("id"))
    body = _dict(msg.get(mtype))
    common: dict[str, Any] = {"reply_to_remote_id": reply_to, "timestamp": timestamp}

    errors = _list(msg.get("errors"))
    if errors or mtype in ("unsupported", "unknown"):
        return _unsupported(remote_id, msg, mtype, body, errors, common)
    if mtype == "reaction":
        target = _str(body.get("message_id"))
        if target is None:
            raise NotUnderstood("reaction without message_id")
        emoji = body.get("emoji")
        return InboundReaction(
            remote_id=remote_id,
            target_remote_id=target,
            emoji=emoji if isinstance(emoji, str) else "",
        )
    if mtype == "text":
        text = body.get("body")
        if not isinstance(text, str):
            raise NotUnderstood("text without a body")
        return InboundMessage(remote_id, "text", text=text, **common)
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
        data = {"id": _str(body.get("payload")) or "", "title": _str(body.get("text")) or ""}
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
    shown_type = _type_name(body.get("type")) if mtype == "unsupported" else mtype
    data: dict[str, Any] = {"type": shown_type if shown_type != "unknown" else mtype}
    if errors:
        err = _dict(errors[0])
        code = err.get("code")
        details = _str(_dict(err.get("error_data")).get("details"))
        data["error_code"] = _str(code)
        data["error"] = human_text(
            code if isinstance(code, int) else None, details, _str(err.get("title"))
        )
    text = _str(_dict(msg.get("system")).get("body")) if mtype == "system" else None
    return InboundMessage(remote_id, "unsupported", text=text, data=data, **common)


def _media(
    remote_id: str, mtype: str, body: dict[str, Any], common: dict[str, Any]
) -> InboundMessage:
    media_id = _str(body.get("id"))
    if media_id is None:
        raise NotUnderstood(f"{mtype} without a media id")
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
    data: dict[str, Any] = {
        "latitude": _coordinate(body.get("latitude"), 90),
        "longitude": _coordinate(body.get("longitude"), 180),
    }
    for key in ("name", "address", "url"):
        if _str(body.get(key)):
            data[key] = str(body[key])
    return data


def _contact(card: dict[str, Any]) -> dict[str, Any]:
    name = _dict(card.get("name"))
    shown = _str(name.get("formatted_name")) or " ".join(
        p for p in (_str(name.get("first_name")), _str(name.get("last_name"))) if p
    )
    phones = [p for c in map(_dict, _list(card.get("phones"))) if (p := _str(c.get("phone")))]
    emails = [e for c in map(_dict, _list(card.get("emails"))) if (e := _str(c.get("email")))]
    return {"name": shown or None, "phones": phones, "emails": emails}


def _interactive(remote_id: str, body: dict[str, Any], common: dict[str, Any]) -> InboundMessage:
    itype = _type_name(body.get("type")) if body.get("type") else ""
    reply = _dict(body.get(itype))
    if itype in ("button_reply", "list_reply") and reply:
        data = {"id": _str(reply.get("id")) or "", "title": _str(reply.get("title")) or ""}
        if _str(reply.get("description")):
            data["description"] = str(reply["description"])
        return InboundMessage(remote_id, "interactive", text=data["title"], data=data, **common)
    return InboundMessage(
        remote_id, "unsupported", data={"type": f"interactive.{itype or 'unknown'}"}, **common
    )


def decimal_string(value: object) -> str | None:
    """A JSON price as an exact decimal string (30 → "30", 7.99 → "7.99"), never a float;
    None for what is no price (not a number, NaN, 1e999999: no shop's amount)."""
    if not isinstance(value, int | float | str) or isinstance(value, bool):
        return None
    try:
        # str() of a float is its shortest round-trip repr, so 7.99 stays "7.99".
        amount = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    if not amount.is_finite():
        return None
    exponent = amount.as_tuple().exponent
    if amount.adjusted() > 15 or (isinstance(exponent, int) and exponent < -20):
        return None
    return str(amount)


def _quantity(value: object) -> int:
    """How many of an order's item: a whole number (WhatsApp sends an integer; a string of
    digits is taken too)."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 9:
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if 1 <= value <= MAX_ORDER_QUANTITY:
            return value
    raise NotUnderstood("an order item's quantity is not a number")


def _order(body: dict[str, Any]) -> dict[str, Any]:
    items = []
    for item in map(_dict, _list(body.get("product_items"))):
        sku = _str(item.get("product_retailer_id"))
        if sku is None:
            raise NotUnderstood("an order item without product_retailer_id")
        price = item.get("item_price")
        unit_price = decimal_string(price)
        if price is not None and unit_price is None:
            raise NotUnderstood("an order item's price is not a number")
        items.append(
            {
                "sku": sku,
                "quantity": _quantity(item.get("quantity")),
                "unit_price": unit_price,
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
    mapped = _STATUSES.get(_str(status.get("status")) or "")
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
        error_code=_str(code),
        error_text=human_text(
            code if isinstance(code, int) else None, details, _str(err.get("title"))
        ),
    )
