"""Text as it may be stored and sent on: valid Unicode, no NUL, ids and names that fit their
columns (pure).

`storable_envelope` is the one place where whatever a channel parsed from a provider is made
storable, whatever the channel: every string of the event (text, ids, names, file names, the
structured `data`) and of its sender.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from hub.core.types import (
    BlockChange,
    Envelope,
    InboundEdit,
    InboundEvent,
    InboundMessage,
    InboundReaction,
    MediaRef,
    Sender,
    StatusUpdate,
)

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# Ids and names are String(255) columns (PostgreSQL refuses longer values).
MAX_ID_CHARS = 255
MAX_NAME_CHARS = 255
_DIGEST_CHARS = 32
# A message written before this was not written by a customer of today's messengers: its
# time is taken as unknown (the store path then counts from now), so a made-up date cannot
# close a reply window for good.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)


def storable(text: str) -> str:
    """Replace lone surrogates (invalid in UTF-8) with U+FFFD and drop NUL characters,
    which PostgreSQL refuses; everything else — emoji, RTL, combining marks — stays."""
    return _LONE_SURROGATE.sub("\ufffd", text).replace("\x00", "")


def storable_id(value: object, limit: int = MAX_ID_CHARS) -> str:
    """An id (a provider's message or user id) as it can be stored. One longer than its
    column keeps its start and ends in a digest of the whole: the same id always maps to
    the same value (redeliveries stay duplicates, replies find their target) and two
    different ids never become one, as cutting them would."""
    text = storable(value if isinstance(value, str) else str(value))
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:_DIGEST_CHARS]
    return f"{text[: limit - _DIGEST_CHARS - 1]}#{digest}"


def storable_name(value: object, limit: int = MAX_NAME_CHARS) -> str | None:
    """A display name or file name: storable, cut to its column ("…" at the end)."""
    if value is None:
        return None
    text = storable(value if isinstance(value, str) else str(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def storable_data(value: Any) -> Any:
    """Structured content (JSON: dicts, lists, scalars) with every string and key storable."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {storable(str(k)): storable_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable_data(v) for v in value]
    return value


def _text(value: str | None) -> str | None:
    return None if value is None else storable(value if isinstance(value, str) else str(value))


def _media(media: MediaRef | None) -> MediaRef | None:
    if media is None:
        return None
    return replace(
        media,
        filename=storable_name(media.filename) or "file",
        mimetype=storable_name(media.mimetype) or "application/octet-stream",
        # A provider's handle or URL, used to fetch the file: kept whole (a JSON field).
        remote_id=_text(media.remote_id),
    )


def _time(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment if aware >= EARLIEST else None


def _event(event: InboundEvent) -> InboundEvent:
    if isinstance(event, InboundMessage):
        return replace(
            event,
            timestamp=_time(event.timestamp),
            remote_id=storable_id(event.remote_id),
            text=_text(event.text),
            media=_media(event.media),
            reply_to_remote_id=(
                None if event.reply_to_remote_id is None else storable_id(event.reply_to_remote_id)
            ),
            data=None if event.data is None else storable_data(event.data),
        )
    if isinstance(event, InboundReaction):
        return replace(
            event,
            remote_id=storable_id(event.remote_id),
            target_remote_id=storable_id(event.target_remote_id),
            emoji=storable_name(event.emoji) or "",
        )
    if isinstance(event, InboundEdit):
        return replace(
            event,
            remote_id=storable_id(event.remote_id),
            target_remote_id=storable_id(event.target_remote_id),
            text=storable(event.text),
        )
    if isinstance(event, StatusUpdate):
        return replace(
            event,
            remote_id=storable_id(event.remote_id),
            error_code=None if event.error_code is None else storable_name(event.error_code, 64),
            error_text=_text(event.error_text),
        )
    assert isinstance(event, BlockChange)
    return event


def storable_envelope(envelope: Envelope) -> Envelope:
    """An envelope as the store path can keep it, whatever the provider sent: no lone
    surrogates or NUL anywhere, ids and names within their columns, no time before 2000."""
    sender = envelope.sender
    if sender is not None:
        sender = Sender(
            sender.channel,
            storable_id(sender.external_id),
            storable_name(sender.display_name),
        )
    return Envelope(sender, _event(envelope.event))
