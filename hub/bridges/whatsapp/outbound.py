"""Request bodies of the WhatsApp Cloud API Messages API (POST /{phone-number-id}/messages)
for what the hub sends. Pure: no I/O. Shapes and limits from Meta's messages guides (text,
media by uploaded id, templates, interactive reply buttons and lists, reactions, contextual
replies, mark as read); see tests/fixtures/whatsapp/SOURCES.md.
"""

from __future__ import annotations

from typing import Any

from hub.bridges.whatsapp.mapping import base_mimetype
from hub.core.types import Button


def _envelope(to: str, reply_to: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"messaging_product": "whatsapp", "recipient_type": "individual"}
    body["to"] = to
    if reply_to:
        body["context"] = {"message_id": reply_to}
    return body


def text_payload(to: str, text: str, reply_to: str | None = None) -> dict[str, Any]:
    preview = "http://" in text or "https://" in text
    return _envelope(to, reply_to) | {
        "type": "text",
        "text": {"preview_url": preview, "body": text},
    }


def media_payload(
    to: str,
    wa_type: str,
    media_id: str,
    *,
    caption: str | None = None,
    filename: str | None = None,
    reply_to: str | None = None,
) -> dict[str, Any]:
    """image/video/document/audio/sticker by uploaded media id (audio and stickers take no
    caption; documents keep their file name)."""
    obj: dict[str, Any] = {"id": media_id}
    if caption and wa_type in ("image", "video", "document"):
        obj["caption"] = caption
    if filename and wa_type == "document":
        obj["filename"] = filename
    return _envelope(to, reply_to) | {"type": wa_type, wa_type: obj}


def template_payload(
    to: str, name: str, language: str, params: list[str] | tuple[str, ...]
) -> dict[str, Any]:
    template: dict[str, Any] = {"name": name, "language": {"code": language}}
    if params:
        template["components"] = [
            {"type": "body", "parameters": [{"type": "text", "text": str(p)} for p in params]}
        ]
    return _envelope(to, None) | {"type": "template", "template": template}


def product_payload(to: str, catalog_id: str, sku: str, body_text: str | None) -> dict[str, Any]:
    """A single-product message: the product's page from the shop's Meta catalogue."""
    interactive: dict[str, Any] = {
        "type": "product",
        "action": {"catalog_id": catalog_id, "product_retailer_id": sku},
    }
    if body_text:
        interactive["body"] = {"text": _clip(body_text, 1024)}
    return _envelope(to, None) | {"type": "interactive", "interactive": interactive}


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def buttons_payload(
    to: str, body_text: str, buttons: tuple[Button, ...], reply_to: str | None = None
) -> dict[str, Any]:
    """Reply buttons: at most 3, titles at most 20 characters, body at most 1024."""
    return _envelope(to, reply_to) | {
        "type": "interactive",
        "interactive": {
            "type": "button",
            "body": {"text": _clip(body_text or "…", 1024)},
            "action": {
                "buttons": [
                    {"type": "reply", "reply": {"id": b.id[:256], "title": _clip(b.title, 20)}}
                    for b in buttons[:3]
                ]
            },
        },
    }


def list_payload(
    to: str,
    body_text: str,
    button: str,
    rows: tuple[Button, ...],
    reply_to: str | None = None,
) -> dict[str, Any]:
    """A list message: one section of at most 10 rows (title ≤ 24, description ≤ 72)."""
    section_rows = []
    for row in rows[:10]:
        item = {"id": row.id[:200], "title": _clip(row.title, 24)}
        if row.description:
            item["description"] = _clip(row.description, 72)
        section_rows.append(item)
    return _envelope(to, reply_to) | {
        "type": "interactive",
        "interactive": {
            "type": "list",
            "body": {"text": _clip(body_text or "…", 4096)},
            "action": {
                "button": _clip(button, 20),
                "sections": [{"title": _clip(button, 24), "rows": section_rows}],
            },
        },
    }


def reaction_payload(to: str, message_id: str, emoji: str) -> dict[str, Any]:
    """An emoji reaction; an empty emoji removes the earlier reaction."""
    return _envelope(to, None) | {
        "type": "reaction",
        "reaction": {"message_id": message_id, "emoji": emoji},
    }


def read_payload(message_id: str) -> dict[str, Any]:
    """Mark a customer's message (and all before it) as read: blue ticks for the customer."""
    return {"messaging_product": "whatsapp", "status": "read", "message_id": message_id}


def sent_message_id(response: object) -> str | None:
    """The wamid of a successful Messages API response."""
    messages = response.get("messages") if isinstance(response, dict) else None
    first = messages[0] if isinstance(messages, list) and messages else None
    wamid = first.get("id") if isinstance(first, dict) else None
    return str(wamid) if wamid else None


_SENDABLE = {
    "image": frozenset({"image/jpeg", "image/png"}),
    "video": frozenset({"video/mp4", "video/3gpp"}),
    "audio": frozenset({"audio/aac", "audio/amr", "audio/mpeg", "audio/mp4", "audio/ogg"}),
    "sticker": frozenset({"image/webp"}),
}


def wa_media_type(kind: str, mimetype: str) -> str:
    """The WhatsApp message type for a hub file: formats WhatsApp cannot show inline (a GIF,
    a .mov) still reach the customer, as a document."""
    wanted = {"image": "image", "video": "video", "audio": "audio", "sticker": "sticker"}.get(kind)
    if wanted and base_mimetype(mimetype) in _SENDABLE[wanted]:
        return wanted
    return "document"
