"""How a customer's message looks in Matrix: pure functions from stored fields to event
content (no I/O). Synapse refuses events over 64 KiB, so long texts are split."""

from __future__ import annotations

import html
from decimal import Decimal, InvalidOperation
from typing import Any

from babel.numbers import UnknownCurrencyError, format_currency

from hub.i18n import _, current_locale, ngettext

_MSGTYPES = {
    "image": "m.image",
    "sticker": "m.image",
    "file": "m.file",
    "video": "m.video",
    "audio": "m.audio",
}
# Characters per event: 4 bytes per character at worst stays far below Synapse's 64 KiB.
MAX_CHARS_PER_EVENT = 12_000


def split_text(text: str, limit: int = MAX_CHARS_PER_EVENT) -> list[str]:
    """Split a long text into parts at line or word boundaries where possible."""
    parts: list[str] = []
    while len(text) > limit:
        cut = text.rfind("\n", limit // 2, limit)
        if cut < 0:
            cut = text.rfind(" ", limit // 2, limit)
        if cut < 0:
            cut = limit
        parts.append(text[:cut])
        text = text[cut:].lstrip("\n ")
    parts.append(text)
    return parts


def _notice(body: str, html_body: str | None = None) -> dict[str, Any]:
    content: dict[str, Any] = {"msgtype": "m.notice", "body": body}
    if html_body:
        content |= {"format": "org.matrix.custom.html", "formatted_body": html_body}
    return content


def _location(data: dict[str, Any]) -> dict[str, Any]:
    lat, lon = data.get("latitude"), data.get("longitude")
    label = ", ".join(str(x) for x in (data.get("name"), data.get("address")) if x)
    shown = label or _("Location")
    body = f"📍 {shown} — https://www.openstreetmap.org/?mlat={lat}&mlon={lon}"
    return {
        "msgtype": "m.location",
        "body": body,
        "geo_uri": f"geo:{lat},{lon}",
        "org.matrix.msc3488.location": {"uri": f"geo:{lat},{lon}", "description": label},
    }


def _contacts(data: dict[str, Any]) -> dict[str, Any]:
    contacts = data.get("contacts", [])
    lines = ["📇 " + ngettext("Shared contact:", "Shared contacts:", len(contacts))]
    for c in contacts:
        details = ", ".join([*c.get("phones", []), *c.get("emails", [])])
        name = c.get("name") or _("Contact")
        lines.append(f"• {name}" + (f": {details}" if details else ""))
    return {"msgtype": "m.text", "body": "\n".join(lines)}


def _order(data: dict[str, Any]) -> dict[str, Any]:
    items = data.get("items", [])
    n = len(items)
    heading = ngettext(
        "Order from the catalogue ({n} item):", "Order from the catalogue ({n} items):", n
    ).format(n=n)
    lines = [f"🛒 {heading}"]
    rows = []
    for it in items:
        line = _("{quantity} × {sku} at {price}").format(
            quantity=it.get("quantity"),
            sku=it.get("sku"),
            price=_price(it.get("unit_price"), it.get("currency")),
        )
        lines.append(f"• {line}")
        rows.append(f"<li>{html.escape(line)}</li>")
    note = _("Note: {text}").format(text=data["text"]) if data.get("text") else None
    if note:
        lines.append(note)
    html_body = f"<p>🛒 {html.escape(heading)}</p><ul>{''.join(rows)}</ul>"
    if note:
        html_body += f"<p>{html.escape(note)}</p>"
    return {
        "msgtype": "m.text",
        "body": "\n".join(lines),
        "format": "org.matrix.custom.html",
        "formatted_body": html_body,
    }


def _price(amount: object, currency: object) -> str:
    """A catalogue order's unit price the way the shop's locale writes it ("12,50 €"); as
    received when it is not an amount in a known currency."""
    try:
        return format_currency(Decimal(str(amount)), str(currency), locale=current_locale())
    except (InvalidOperation, UnknownCurrencyError, ValueError):
        return f"{amount} {currency}"


def _unsupported(data: dict[str, Any], text: str | None) -> dict[str, Any]:
    kind = str(data.get("type") or "unknown").replace("_", " ")
    link = data.get("link")
    body = _("The customer sent a {kind} message, which cannot be shown here.").format(kind=kind)
    if link:
        body += " " + _("Link: {link}").format(link=link)
    if text:  # e.g. the words of an Instagram story reply
        body = f"{text}\n\n{body}"
    return _notice(body)


def message_contents(
    kind: str,
    text: str | None,
    media: dict[str, Any] | None,
    data: dict[str, Any] | None,
    mxc: str | None,
    file: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Contents of the m.room.message events for one customer message (usually one).
    `file`: the encrypted upload of an encrypted room (its `url` instead of `mxc`)."""
    data = data or {}
    if kind == "location":
        return [_location(data)]
    if kind == "contacts":
        return [_contacts(data)]
    if kind == "order":
        return [_order(data)]
    if kind == "interactive":
        return [{"msgtype": "m.text", "body": f"↩️ {data.get('title') or text or ''}".strip()}]
    if kind == "unsupported":
        return [_unsupported(data, text)]
    if kind in _MSGTYPES and media and mxc:
        content: dict[str, Any] = {
            "msgtype": _MSGTYPES[kind],
            "body": text or media["filename"],
            "filename": media["filename"],
            "url": mxc,
            "info": {"mimetype": media["mimetype"], "size": media["size"]},
        }
        if file is not None:
            del content["url"]
            content["file"] = file
        if media.get("voice"):
            # MSC3245: clients show a voice message player instead of a file.
            content |= {"org.matrix.msc3245.voice": {}, "org.matrix.msc1767.audio": {}}
        return [content]
    parts = split_text(text or "")
    contents = [{"msgtype": "m.text", "body": p} for p in parts]
    if len(parts) > 1:
        for n, c in enumerate(contents, 1):
            c["body"] = f"({n}/{len(parts)}) " + c["body"]
    return contents


# A standing notice of the bot (who has the conversation, what we know of the customer) says
# what it is in this content key, so clients, scripts and tests can tell it from answers.
STATUS_KEY = "chat.commerce_hub.status"


def with_reply(content: dict[str, Any], reply_event: str | None) -> dict[str, Any]:
    if reply_event:
        return {**content, "m.relates_to": {"m.in_reply_to": {"event_id": reply_event}}}
    return content


def reaction_content(target_event: str, emoji: str) -> dict[str, Any]:
    return {"m.relates_to": {"rel_type": "m.annotation", "event_id": target_event, "key": emoji}}


def edit_content(target_event: str, text: str) -> dict[str, Any]:
    new = {"msgtype": "m.text", "body": text}
    return {
        "msgtype": "m.text",
        "body": f"* {text}",
        "m.new_content": new,
        "m.relates_to": {"rel_type": "m.replace", "event_id": target_event},
    }
