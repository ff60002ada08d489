"""Meta webhooks (Messenger `object: page`, Instagram `object: instagram`) ↔ hub types, and
the bodies of Send API requests. Pure: no I/O, no aiohttp/nio/SQLAlchemy.

Every entry and every messaging event of a batch is looked at; what the hub cannot use
(echoes of our own sends, read watermarks, opt-ins...) is counted in `Parsed.skipped` so the
webhook handler can log it instead of dropping it silently.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any
from urllib.parse import unquote, urlsplit

from babel.dates import format_timedelta

from hub.core.types import (
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
    StatusUpdate,
)
from hub.i18n import _, current_locale

WEBHOOK_OBJECTS = {"messenger": "page", "instagram": "instagram"}
STANDARD_WINDOW = timedelta(hours=24)
HUMAN_AGENT_WINDOW = timedelta(days=7)
MAX_QUICK_REPLIES = 13
QUICK_REPLY_TITLE_CHARS = 20
QUICK_REPLY_PAYLOAD_CHARS = 1000
MAX_TYPE_CHARS = 40

# Reactions arrive with a name; the emoji field is there on recent API versions only.
_REACTION_EMOJI = {"smile": "😆", "angry": "😠", "sad": "😢", "wow": "😮", "love": "❤️"}
_REACTION_EMOJI |= {"like": "👍", "dislike": "👎"}
_MEDIA_KINDS: dict[str, MessageKind] = {"image": "image", "video": "video", "audio": "audio"}
_MEDIA_KINDS |= {"file": "file", "sticker": "sticker"}
_LINK_TYPES = {"fallback", "share", "reel", "ig_reel", "post", "ig_post"}
# A small table instead of `mimetypes` (which reads system files): the real type comes from
# the download's Content-Type later; this only names the file sensibly until then.
_EXT_TYPES = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif"}
_EXT_TYPES |= {"webp": "image/webp", "mp4": "video/mp4", "mov": "video/quicktime"}
_EXT_TYPES |= {"webm": "video/webm", "m4a": "audio/mp4", "aac": "audio/aac", "mp3": "audio/mpeg"}
_EXT_TYPES |= {"ogg": "audio/ogg", "wav": "audio/wav", "pdf": "application/pdf"}
_EXT_TYPES |= {"txt": "text/plain", "zip": "application/zip"}
_DEFAULT_TYPES = {"image": ("image/jpeg", "jpg"), "sticker": ("image/png", "png")}
_DEFAULT_TYPES |= {"video": ("video/mp4", "mp4"), "audio": ("audio/mp4", "m4a")}
_DEFAULT_TYPES |= {"file": ("application/octet-stream", "bin")}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str | None:
    return str(value) if isinstance(value, str | int) and not isinstance(value, bool) else None


def _type_name(value: Any) -> str:
    """A provider's type as shown to advisers ("story_mention"): one short word."""
    return (_str(value) or "unknown")[:MAX_TYPE_CHARS]


def _coordinate(value: Any, limit: float) -> float | int:
    if isinstance(value, int | float) and not isinstance(value, bool) and -limit <= value <= limit:
        return value
    raise NotUnderstood("coordinates are not numbers")


def parse_timestamp(value: Any) -> datetime | None:
    """Meta sends milliseconds (messaging events) or, in some examples, seconds as a string."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):  # not a number, or one no float holds (10**400)
        return None
    if number > 1e11:
        number /= 1000
    try:
        return datetime.fromtimestamp(number, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def parse_webhook(doc: dict[str, Any], channel: str) -> Parsed:
    """All events of a webhook batch, for channel "messenger" or "instagram"."""
    parsed = Parsed()
    for entry in _list(doc.get("entry")):
        if not isinstance(entry, dict):
            parsed.skip("malformed entry")
            continue
        own_id = _str(entry.get("id"))
        # `standby`: events while another app holds the thread (handover protocol).
        events = [*_list(entry.get("messaging")), *_list(entry.get("standby"))]
        for change in _list(entry.get("changes")):
            value = _dict(_dict(change).get("value"))
            if "sender" in value:  # messaging events in the field/value form of newer docs
                events.append(value)
            else:
                parsed.skip(f"change {_type_name(_dict(change).get('field'))}")
        for event in events:
            ev = _dict(event)
            try:
                _event(parsed, ev, channel, own_id)
            except Exception as exc:  # a shape no branch foresaw: the rest still counts
                _unreadable(parsed, ev, channel, exc)
    return parsed


def _unreadable(parsed: Parsed, ev: dict[str, Any], channel: str, exc: Exception) -> None:
    """An event that made the mapping fail: not understood, and shown to the advisers as an
    unsupported message when its sender can be read."""
    kinds = sorted(set(ev) - {"sender", "recipient", "timestamp"})
    shown = _type_name(kinds[0] if kinds else None)
    parsed.not_understood(f"event ({shown})", exc)
    sender_doc = _dict(ev.get("sender"))
    sender_id = _str(sender_doc.get("id")) or _str(sender_doc.get("user_ref"))
    if not sender_id or _dict(ev.get("message")).get("is_echo"):
        return
    mid = _str(_dict(ev.get("message")).get("mid"))
    remote_id = mid or f"event:{sender_id}:{_str(ev.get('timestamp'))}"
    event = InboundMessage(
        remote_id,
        "unsupported",
        data={"type": shown},
        timestamp=parse_timestamp(ev.get("timestamp")),
    )
    parsed.envelopes.append(Envelope(Sender(channel, sender_id), event))


def _event(parsed: Parsed, ev: dict[str, Any], channel: str, own_id: str | None) -> None:
    if "delivery" in ev:
        mids = [m for m in _list(_dict(ev["delivery"]).get("mids")) if isinstance(m, str)]
        for delivered in mids:
            parsed.envelopes.append(Envelope(None, StatusUpdate(delivered, "delivered")))
        if not mids:
            parsed.skip("delivery watermark")
        return
    if "read" in ev:
        seen = _str(_dict(ev["read"]).get("mid"))  # Instagram's messaging_seen names the message
        if seen:
            parsed.envelopes.append(Envelope(None, StatusUpdate(seen, "read")))
        else:
            parsed.skip("read watermark")
        return
    sender_doc = _dict(ev.get("sender"))
    sender_id = _str(sender_doc.get("id")) or _str(sender_doc.get("user_ref"))
    message = _dict(ev.get("message"))
    if message.get("is_echo"):
        parsed.skip("echo")
        return
    if not sender_id:
        parsed.skip("no sender")
        return
    if own_id and sender_id == own_id:
        parsed.skip("own message")
        return
    sender = Sender(channel, sender_id)
    raw_time = ev.get("timestamp")
    when = parse_timestamp(raw_time)
    if message:
        _message(parsed, sender, message, when, channel)
    elif "postback" in ev:
        _postback(parsed, sender, _dict(ev["postback"]), raw_time, when)
    elif "reaction" in ev:
        _reaction(parsed, sender, _dict(ev["reaction"]), raw_time)
    elif "message_edit" in ev:
        edit = _dict(ev["message_edit"])
        mid, text = _str(edit.get("mid")), edit.get("text")
        if mid and isinstance(text, str):
            remote_id = f"{mid}:edit:{_str(edit.get('num_edit'))}"
            parsed.envelopes.append(Envelope(sender, InboundEdit(remote_id, mid, text)))
        else:
            parsed.skip("malformed edit")
    else:
        other = sorted(set(ev) - {"sender", "recipient", "timestamp"})
        parsed.skip(_type_name(other[0]) if other else "empty event")


def _postback(
    parsed: Parsed, sender: Sender, pb: dict[str, Any], raw_time: Any, when: datetime | None
) -> None:
    payload, title = _str(pb.get("payload")), _str(pb.get("title"))
    remote_id = _str(pb.get("mid")) or f"postback:{sender.external_id}:{_str(raw_time)}"
    data = {"id": payload or "", "title": title or payload or ""}
    msg = InboundMessage(remote_id, "interactive", text=title, data=data, timestamp=when)
    parsed.envelopes.append(Envelope(sender, msg))


def _reaction(parsed: Parsed, sender: Sender, r: dict[str, Any], raw_time: Any) -> None:
    target = _str(r.get("mid"))
    if not target:
        parsed.skip("malformed reaction")
        return
    action = _str(r.get("action")) or "react"
    emoji = ""
    if action == "react":
        name = _str(r.get("reaction")) or ""
        emoji = _str(r.get("emoji")) or _REACTION_EMOJI.get(name, "❓")
    # Stable across redeliveries: the same event has the same time and action.
    remote_id = f"{target}:{action[:MAX_TYPE_CHARS]}:{sender.external_id}:{_str(raw_time)}"
    parsed.envelopes.append(Envelope(sender, InboundReaction(remote_id, target, emoji)))


def _message(
    parsed: Parsed, sender: Sender, msg: dict[str, Any], when: datetime | None, channel: str
) -> None:
    mid = _str(msg.get("mid"))
    if not mid:
        parsed.skip("message without mid")
        return
    if msg.get("is_deleted"):
        parsed.skip("deleted message")  # Instagram: the customer unsent a message
        return
    text = _str(msg.get("text"))
    reply_to = _dict(msg.get("reply_to"))
    reply_mid = _str(reply_to.get("mid"))

    def add(kind: MessageKind, n: int = 0, **kw: Any) -> None:
        remote_id = mid if n == 0 else f"{mid}#{n}"
        kw.setdefault("text", text if n == 0 else None)
        event = InboundMessage(remote_id, kind, reply_to_remote_id=reply_mid, timestamp=when, **kw)
        parsed.envelopes.append(Envelope(sender, event))

    story = reply_to.get("story")
    if isinstance(story, dict):  # Instagram: a reply to the shop's story
        add("unsupported", data={"type": "story_reply", "link": _str(story.get("url"))})
        return
    if msg.get("is_unsupported"):
        add("unsupported", data={"type": "unsupported"})
        return
    quick = msg.get("quick_reply")
    if isinstance(quick, dict):
        payload = _str(quick.get("payload")) or ""
        add("interactive", data={"id": payload, "title": text or payload})
        return
    attachments = [a for a in _list(msg.get("attachments")) if isinstance(a, dict)]
    if not attachments:
        if text is None:
            add("unsupported", data={"type": "empty"})
        else:
            add("text")
        return
    for n, att in enumerate(_drop_sticker_images(attachments)):
        try:
            kind, kw = _attachment(att, channel)
        except Exception as exc:  # wrong types in an attachment of a known kind
            shown = _type_name(att.get("type"))
            parsed.not_understood(f"attachment ({shown})", exc)
            kind, kw = "unsupported", {"data": {"type": shown}}
        if n == 0 and text and kind == "text":
            kw["text"] = f"{text}\n{kw['text']}"
        add(kind, n, **kw)


def _drop_sticker_images(attachments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """During Meta's sticker transition a sticker comes twice (as `sticker` and `image`)."""
    if not any(a.get("type") == "sticker" for a in attachments):
        return attachments
    return [
        a
        for a in attachments
        if not (a.get("type") == "image" and _dict(a.get("payload")).get("sticker_id"))
    ]


def _attachment(att: dict[str, Any], channel: str) -> tuple[MessageKind, dict[str, Any]]:
    kind = _type_name(att.get("type"))
    payload = _dict(att.get("payload"))
    url = _str(payload.get("url")) or _str(att.get("url"))
    if kind == "image" and payload.get("sticker_id"):
        kind = "sticker"
    if kind in _MEDIA_KINDS and url:
        media = media_ref(_MEDIA_KINDS[kind], url)
        voice = kind == "audio" and (channel == "instagram" or media.filename.startswith("audio"))
        return _MEDIA_KINDS[kind], {"media": media, "voice": voice}
    if kind == "location":
        coords = _dict(payload.get("coordinates"))
        if "lat" in coords and "long" in coords:
            data: dict[str, Any] = {
                "latitude": _coordinate(coords["lat"], 90),
                "longitude": _coordinate(coords["long"], 180),
            }
            data |= {k: v for k, v in (("name", _str(att.get("title"))), ("url", url)) if v}
            return "location", {"data": data}
    if kind == "story_mention":
        return "unsupported", {"data": {"type": "story_mention", "link": url}}
    if kind in _LINK_TYPES and url:
        title = _str(payload.get("title")) or _str(att.get("title"))
        return "text", {"text": "\n".join(x for x in (title, url) if x)}
    if kind == "template":
        product = _dict(payload.get("product"))
        lines = [
            "🛍️ "
            + (_str(e.get("title")) or _("Product"))
            + f" ({_str(e.get('retailer_id')) or _str(e.get('id'))})"
            for e in _list(product.get("elements"))
            if isinstance(e, dict)
        ]
        if lines:
            return "text", {"text": "\n".join(lines)}
    return "unsupported", {"data": {"type": kind}}


def media_ref(kind: str, url: str) -> MediaRef:
    """A file known only by its Meta CDN URL: named after the URL path, fetched later."""
    default_type, default_ext = _DEFAULT_TYPES.get(kind, _DEFAULT_TYPES["file"])
    try:
        name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    except ValueError:  # not a URL urllib can split ("http://[::1")
        name = ""
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if not ext or len(name) > 120:
        name, ext = f"{kind}.{default_ext}", default_ext
    return MediaRef(name, _EXT_TYPES.get(ext, default_type), 0, remote_id=url)


# --- outbound -----------------------------------------------------------------------------


class _TextExtractor(HTMLParser):
    """Matrix HTML → plain text for the customer (Messenger has no markup): links keep their
    address, numbered lists their numbers, code blocks their lines; script and style go with
    their content. Whitespace is HTML's: Element's newlines between tags are not lines."""

    _BLOCKS = frozenset({"p", "div", "ul", "ol", "blockquote", "pre", "tr", "table"})
    _BLOCKS |= frozenset({f"h{n}" for n in range(1, 7)})
    _SKIP = frozenset({"mx-reply", "script", "style", "head", "title", "template", "noscript"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._links: list[tuple[str | None, int]] = []
        self._skip: list[str] = []
        self._lists: list[list[int]] = []  # per open ul/ol: [next number] (-1: bullets)
        self._pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skip or tag in self._SKIP:
            self._skip.append(tag)
        elif tag == "br":
            self.out.append("\n")
        elif tag == "li":
            indent = "  " * max(0, len(self._lists) - 1)
            counter = self._lists[-1] if self._lists else [-1]
            if counter[0] < 0:
                self.out.append(f"\n{indent}• ")
            else:
                self.out.append(f"\n{indent}{counter[0]}. ")
                counter[0] += 1
        elif tag in ("ul", "ol"):
            start = dict(attrs).get("start") or "1"
            number = int(start) if tag == "ol" and start.isdigit() else 1
            if not self._lists:  # a list in an item starts on the item's next line anyway
                self.out.append("\n")
            self._lists.append([number if tag == "ol" else -1])
        elif tag in self._BLOCKS:
            self._pre += tag == "pre"
            self.out.append("\n")
        elif tag == "a":
            self._links.append((dict(attrs).get("href"), len(self.out)))

    def handle_endtag(self, tag: str) -> None:
        if self._skip:
            if tag in self._skip:
                del self._skip[self._skip.index(tag) :]
            return
        if tag in ("ul", "ol") and self._lists:
            self._lists.pop()
            if not self._lists:
                self.out.append("\n")
        elif tag in self._BLOCKS:
            self._pre -= tag == "pre" and self._pre > 0
            self.out.append("\n")
        elif tag == "a" and self._links:
            href, start = self._links.pop()
            label = "".join(self.out[start:]).strip()
            target = (href or "").removeprefix("mailto:")
            # Matrix pills (matrix.to) mean nothing to the customer: keep the name only.
            if target and label != target and "matrix.to/#/" not in target:
                self.out.append(f" ({target})" if label else target)

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        self.out.append(data if self._pre else re.sub(r"[ \t\r\n\f]+", " ", data))


def html_to_text(html: str) -> str:
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    lines = [line.rstrip() for line in "".join(parser.out).split("\n")]
    # A space HTML would not show at a line's start ("\n" between tags became " ").
    lines = [line[1:] if line[:1] == " " and line[1:2] != " " else line for line in lines]
    text = "\n".join(lines).strip()
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def split_text(text: str, limit: int, measure: Callable[[str], int] = len) -> list[str]:
    """Parts of at most `limit` (measured by `measure`), cut at line or word ends if possible."""
    parts: list[str] = []
    text = text.strip()
    while measure(text) > limit:
        lo, hi = 1, len(text)
        while lo < hi:  # the longest prefix that fits
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if measure(text[:mid]) <= limit else (lo, mid - 1)
        cut = text.rfind("\n", lo // 2, lo + 1)
        if cut <= 0:
            cut = text.rfind(" ", lo // 2, lo + 1)
        if cut <= 0:
            cut = lo
        parts.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    if text:
        parts.append(text)
    return parts


def quick_replies(buttons: Sequence[Button]) -> list[dict[str, str]]:
    """Reply buttons as quick replies: at most 13, titles cut to Meta's 20 characters."""
    return [
        {
            "content_type": "text",
            "title": b.title[:QUICK_REPLY_TITLE_CHARS],
            "payload": b.id[:QUICK_REPLY_PAYLOAD_CHARS],
        }
        for b in buttons[:MAX_QUICK_REPLIES]
    ]


def attachment_type(mimetype: str) -> str:
    major = mimetype.split("/", 1)[0]
    return major if major in ("image", "video", "audio") else "file"


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def messaging_fields(
    last_inbound_at: datetime | None, now: datetime, human_agent_tag: bool
) -> dict[str, str] | None:
    """`messaging_type` (and tag) for a reply now, or None when no reply is allowed.
    Unknown last message time: answer as RESPONSE and let Meta's own check decide."""
    if last_inbound_at is None:
        return {"messaging_type": "RESPONSE"}
    age = _aware(now) - _aware(last_inbound_at)
    if age <= STANDARD_WINDOW:
        return {"messaging_type": "RESPONSE"}
    if human_agent_tag and age <= HUMAN_AGENT_WINDOW:
        return {"messaging_type": "MESSAGE_TAG", "tag": "HUMAN_AGENT"}
    return None


def window_closed_text(
    last_inbound_at: datetime, now: datetime, human_agent_tag: bool, kind: str
) -> str:
    # "30 hours ago" / "vor 30 Stunden": hours up to two days, then days (CLDR wording).
    age = _aware(now) - _aware(last_inbound_at)
    ago = format_timedelta(-age, threshold=2, add_direction=True, locale=current_locale())
    if human_agent_tag:
        text = _(
            "the 24-hour window has closed (the customer last wrote {ago}; also beyond the 7 "
            "days the human agent tag allows); the customer has to write again first"
        )
    else:
        text = _(
            "the 24-hour window has closed (the customer last wrote {ago}; set "
            "channels.{kind}.human_agent_tag to answer up to 7 days); the customer has to write "
            "again first"
        )
    return text.format(ago=ago, kind=kind)


def reaction_body(recipient_id: str, target_mid: str, emoji: str) -> dict[str, Any]:
    """The Send API sender action that sets the page's reaction on a customer's message
    ("react" with the emoji; "unreact", with the message id only, for "")."""
    if not emoji:
        return {
            "recipient": {"id": recipient_id},
            "sender_action": "unreact",
            "payload": {"message_id": target_mid},
        }
    return {
        "recipient": {"id": recipient_id},
        "sender_action": "react",
        "payload": {"message_id": target_mid, "reaction": emoji},
    }
