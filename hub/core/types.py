"""Plain data passed between channels, the router and the Matrix side (no I/O here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MessageKind = Literal["text", "image", "file", "video", "audio"]


@dataclass(frozen=True)
class MediaRef:
    """A file known to the hub: `media_id` is a row of media_files, `mxc` once uploaded."""

    filename: str
    mimetype: str
    size: int
    media_id: str | None = None
    mxc: str | None = None


@dataclass(frozen=True)
class Sender:
    """Who wrote to the shop on a channel."""

    channel: str
    external_id: str
    display_name: str | None = None


@dataclass(frozen=True)
class InboundMessage:
    """A customer's message as a channel parsed it."""

    remote_id: str
    kind: MessageKind
    text: str | None = None
    media: MediaRef | None = None
    reply_to_remote_id: str | None = None


@dataclass(frozen=True)
class OutboundMessage:
    """An adviser's message on its way to the customer's channel."""

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
