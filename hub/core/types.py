"""Plain data passed between channels, the store path and the Matrix side (no I/O here).

A channel's pure mapping module turns a provider payload into `Parsed`: `Envelope`s (who,
what) and what it skipped; hub.db.inbound stores them in one transaction. Outbound, the hub
hands a channel an `OutboundMessage` and the channel maps it to the provider's request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

MessageKind = Literal[
    "text",
    "image",
    "file",
    "video",
    "audio",
    "sticker",
    "location",
    "contacts",
    "interactive",  # a button or list reply of the customer
    "order",  # a cart sent from a WhatsApp catalogue
    "template",  # outbound only: an approved WhatsApp template
    "product",  # outbound only: a catalogue product card (WhatsApp single-product message)
    "unsupported",
]
DeliveryStatus = Literal["sent", "delivered", "read", "failed"]


@dataclass(frozen=True)
class MediaRef:
    """A file: `media_id` is a row of media_files (bytes on our disk), `mxc` once in Matrix,
    `remote_id` the provider's handle, fetched lazily through `Channel.fetch_media`."""

    filename: str
    mimetype: str
    size: int
    media_id: str | None = None
    mxc: str | None = None
    remote_id: str | None = None
    # Set for a file the hub just received itself (a widget upload, already on disk): its
    # media_files row is written with the message.
    sha256: str | None = None


@dataclass(frozen=True)
class Sender:
    """Who wrote to the shop on a channel."""

    channel: str
    external_id: str
    display_name: str | None = None


@dataclass(frozen=True)
class InboundMessage:
    """A customer's message as a channel parsed it.

    `data` carries structured content by kind:
    location: {"latitude", "longitude", "name"?, "address"?, "url"?}
    contacts: {"contacts": [{"name", "phones": [...], "emails": [...]}]}
    interactive: {"id", "title", "description"?}
    order: {"catalog_id"?, "text"?, "items": [{"sku", "quantity", "unit_price", "currency"}]}
           (unit_price a decimal string, never a float)
    unsupported: {"type": provider's type, "link"?: URL, e.g. of a story}; also what a
                 mapping could not understand, by the type the customer sent ("photo")
    """

    remote_id: str
    kind: MessageKind
    text: str | None = None
    media: MediaRef | None = None
    reply_to_remote_id: str | None = None
    voice: bool = False  # a voice note (push-to-talk), not a music file
    data: dict[str, Any] | None = None
    timestamp: datetime | None = None


@dataclass(frozen=True)
class InboundReaction:
    """The customer reacted to a message (`emoji` empty: the reaction was removed)."""

    remote_id: str
    target_remote_id: str
    emoji: str


@dataclass(frozen=True)
class InboundEdit:
    """The customer edited an earlier message."""

    remote_id: str  # unique per edit (e.g. the provider's update id)
    target_remote_id: str
    text: str


@dataclass(frozen=True)
class StatusUpdate:
    """What happened to a message the shop sent (by its remote id)."""

    remote_id: str
    status: DeliveryStatus
    error_code: str | None = None
    error_text: str | None = None  # human text, from the channel's error table


@dataclass(frozen=True)
class BlockChange:
    """The customer blocked (or unblocked) the shop's account on the channel."""

    blocked: bool


InboundEvent = InboundMessage | InboundReaction | InboundEdit | StatusUpdate | BlockChange


@dataclass(frozen=True)
class Envelope:
    """One parsed event with its sender (`None` for status updates of our own messages)."""

    sender: Sender | None
    event: InboundEvent


class NotUnderstood(ValueError):
    """Raised inside a mapping: a field of a kind it knows holds what it cannot use (a wrong
    type, a photo without a file id). The mapping turns it into `Parsed.not_understood`."""


@dataclass
class Parsed:
    """What a channel's webhook delivery holds, whatever the channel."""

    envelopes: list[Envelope] = field(default_factory=list)
    # Why parts were not stored -> how often (logged once per delivery).
    skipped: dict[str, int] = field(default_factory=dict)
    # Tokens the channel acknowledges to its provider once the delivery is stored
    # (Telegram's callback query ids: the tapped button stops spinning).
    acks: list[str] = field(default_factory=list)
    # What the mapping did not understand (a shape it does not know, a wrong type) -> how
    # often: logged once per delivery as a warning. The delivery is still acknowledged, and
    # an event whose sender could be read is stored as an "unsupported" message, so the
    # room shows that something could not be shown.
    problems: dict[str, int] = field(default_factory=dict)

    def skip(self, why: str, count: int = 1) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + count

    def not_understood(self, what: str, exc: BaseException | None = None) -> None:
        """Count a part the mapping could not read: `what` names it ("message",
        "status"...), `exc` (if any) says why, briefly (never the payload itself)."""
        if exc is None:
            why = what
        elif isinstance(exc, NotUnderstood):  # the mapping's own words say it all
            why = f"{what}: {exception_summary(exc, with_type=False)}"
        else:
            why = f"{what}: {exception_summary(exc)}"
        self.problems[why] = self.problems.get(why, 0) + 1


def exception_summary(exc: BaseException, limit: int = 80, *, with_type: bool = True) -> str:
    """`TypeError at mapping.py:123: 'str' object has no attribute 'get'`: the type, where
    it was raised and the start of its message, on one line; for logs."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = ""
    if tb is not None:
        filename = tb.tb_frame.f_code.co_filename.rsplit("/", 1)[-1]
        where = f" at {filename}:{tb.tb_lineno}"
    try:
        message = " ".join(str(exc).split())
    except Exception:  # an exception whose text cannot be made
        message = ""
    if len(message) > limit:
        message = message[: limit - 1] + "…"
    message = "".join(c if c.isprintable() else "?" for c in message)
    if not with_type:
        return message or type(exc).__name__
    return f"{type(exc).__name__}{where}" + (f": {message}" if message else "")


@dataclass(frozen=True)
class Button:
    id: str
    title: str
    description: str | None = None  # list rows only


@dataclass(frozen=True)
class OutboundMessage:
    """A message on its way to the customer's channel (from an adviser or the bot).

    `data` for kind "template": {"name", "language", "params": [str, ...]};
    for kind "product": {"catalog_id", "sku"} (`text` is the card as text, for other views).
    `buttons`: reply buttons (or list rows when `list_button` is set) for bot flows.
    """

    message_id: int
    conversation_id: int
    external_id: str
    kind: MessageKind
    text: str | None
    html: str | None
    media: MediaRef | None
    reply_to_remote_id: str | None
    sender_mxid: str | None
    sender_name: str | None
    last_inbound_at: datetime | None = None
    data: dict[str, Any] | None = None
    buttons: tuple[Button, ...] = field(default_factory=tuple)
    list_button: str | None = None
