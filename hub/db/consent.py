"""Photo consent rows (hub.consent.photo decides, these store): requests, the images they
cover, deletion progress, and what `hub ugc export` may hand out. Units of work."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import and_, select, update

from hub.db.models import (
    ChannelIdentity,
    ConsentImage,
    ConsentRequest,
    Conversation,
    MediaFile,
    Message,
    utcnow,
)

if TYPE_CHECKING:
    from hub.db.database import Tx

KEPT, DELETING, DELETED = "kept", "deleting", "deleted"


def message_by_event(tx: Tx, event_id: str) -> Message | None:
    return tx.orm.scalars(select(Message).where(Message.matrix_event_id == event_id)).first()


def media_sha256(tx: Tx, message: Message) -> str | None:
    """The SHA-256 of an image the hub keeps (every customer image is fetched and kept
    before it reaches Matrix)."""
    media_id = (message.media or {}).get("media_id")
    if not media_id:
        return None
    row = tx.orm.get(MediaFile, media_id)
    return row.sha256 if row else None


def image_request(tx: Tx, message_id: int) -> ConsentRequest | None:
    """The request that covers an image, if it was asked about."""
    return tx.orm.scalars(
        select(ConsentRequest)
        .join(ConsentImage, ConsentImage.request_id == ConsentRequest.id)
        .where(ConsentImage.message_id == message_id)
    ).first()


def images_not_asked(tx: Tx, conversation_id: int) -> list[Message]:
    """The customer's images in a conversation no request covers yet, oldest first."""
    asked = select(ConsentImage.message_id)
    return list(
        tx.orm.scalars(
            select(Message)
            .where(
                Message.conversation_id == conversation_id,
                Message.direction == "in",
                Message.kind == "image",
                Message.media.is_not(None),
                Message.id.not_in(asked),
            )
            .order_by(Message.id)
        )
    )


def add_request(
    tx: Tx, values: dict[str, object], images: Sequence[tuple[int, str]]
) -> ConsentRequest:
    """A request and its images ((message id, sha256) each)."""
    request = ConsentRequest(**values, state="pending", answer_late=False)
    tx.orm.add(request)
    tx.orm.flush()
    for message_id, sha256 in images:
        tx.orm.add(ConsentImage(request_id=request.id, message_id=message_id, sha256=sha256))
    tx.orm.flush()
    return request


def request_in(tx: Tx, request_id: int, conversation_id: int) -> ConsentRequest | None:
    request = tx.orm.get(ConsentRequest, request_id)
    if request is None or request.conversation_id != conversation_id:
        return None
    return request


def requests_of(tx: Tx, conversation_id: int, states: Sequence[str]) -> list[ConsentRequest]:
    return list(
        tx.orm.scalars(
            select(ConsentRequest)
            .where(
                ConsentRequest.conversation_id == conversation_id,
                ConsentRequest.state.in_(states),
            )
            .order_by(ConsentRequest.id)
        )
    )


def images_of(tx: Tx, request_id: int) -> list[tuple[ConsentImage, Message]]:
    rows = tx.orm.execute(
        select(ConsentImage, Message)
        .join(Message, Message.id == ConsentImage.message_id)
        .where(ConsentImage.request_id == request_id)
        .order_by(ConsentImage.id)
    )
    return [(image, message) for image, message in rows]


def start_deleting(tx: Tx, request_id: int) -> int:
    """Mark a request's kept images for deletion; how many."""
    result = tx.orm.execute(
        update(ConsentImage)
        .where(ConsentImage.request_id == request_id, ConsentImage.status == KEPT)
        .values(status=DELETING)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class ImageToDelete:
    """An image on its way out, with everything the deletion needs (plain values)."""

    image_id: int
    message_id: int
    room_id: str | None
    event_id: str | None
    ghost_localpart: str
    media_id: str | None
    mxc: list[str]


def deletion_of(tx: Tx, request_id: int) -> tuple[ConsentRequest, list[ImageToDelete]] | None:
    """A request's images still being deleted, with their places in Matrix and on disk."""
    request = tx.orm.get(ConsentRequest, request_id)
    if request is None:
        return None
    rows = tx.orm.execute(
        select(ConsentImage, Message, Conversation, ChannelIdentity)
        .join(Message, Message.id == ConsentImage.message_id)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .join(ChannelIdentity, ChannelIdentity.id == Conversation.identity_id)
        .where(and_(ConsentImage.request_id == request_id, ConsentImage.status == DELETING))
        .order_by(ConsentImage.id)
    )
    found = []
    for image, message, conversation, identity in rows:
        media = message.media or {}
        media_id = media.get("media_id")
        mxc = {str(media["mxc"])} if media.get("mxc") else set()
        if media_id:
            row = tx.orm.get(MediaFile, media_id)
            if row is not None and row.mxc_uri:
                mxc.add(row.mxc_uri)
        found.append(
            ImageToDelete(
                image.id,
                message.id,
                conversation.room_id,
                message.matrix_event_id,
                identity.ghost_localpart,
                str(media_id) if media_id else None,
                sorted(mxc),
            )
        )
    return request, found


def finish_deletion(tx: Tx, images: Sequence[ImageToDelete]) -> int:
    """The images are gone from Matrix and disk: their rows say so, the messages keep no
    trace of the file. How many were still marked deleting (0: finished before)."""
    done = 0
    now = utcnow()
    for item in images:
        result = tx.orm.execute(
            update(ConsentImage)
            .where(ConsentImage.id == item.image_id, ConsentImage.status == DELETING)
            .values(status=DELETED, deleted_at=now)
        )
        if not result.rowcount:  # type: ignore[attr-defined]
            continue
        done += 1
        message = tx.orm.get(Message, item.message_id)
        if message is not None:
            message.media = None
            message.text = None
            message.data = {**(message.data or {}), "deleted": "consent"}
        if item.media_id:
            row = tx.orm.get(MediaFile, item.media_id)
            if row is not None:
                tx.orm.delete(row)
    tx.orm.flush()
    return done


def requests_deleting(tx: Tx) -> list[tuple[int, int]]:
    """(request id, conversation id) of requests with images whose deletion has not
    finished (resumed at start)."""
    rows = tx.orm.execute(
        select(ConsentRequest.id, ConsentRequest.conversation_id)
        .where(
            ConsentRequest.id.in_(
                select(ConsentImage.request_id).where(ConsentImage.status == DELETING)
            )
        )
        .order_by(ConsentRequest.id)
    )
    return [(request_id, conversation_id) for request_id, conversation_id in rows]


@dataclass(frozen=True)
class ApprovedImage:
    request: ConsentRequest
    image: ConsentImage
    message: Message
    media: MediaFile
    channel: str
    customer_name: str | None


def approved_images(tx: Tx) -> list[ApprovedImage]:
    """Every image whose request is granted and not revoked, with the file the hub keeps."""
    rows = tx.orm.execute(
        select(ConsentRequest, ConsentImage, Message, ChannelIdentity)
        .join(ConsentImage, ConsentImage.request_id == ConsentRequest.id)
        .join(Message, Message.id == ConsentImage.message_id)
        .join(Conversation, Conversation.id == ConsentRequest.conversation_id)
        .join(ChannelIdentity, ChannelIdentity.id == Conversation.identity_id)
        .where(ConsentRequest.state == "granted", ConsentImage.status == KEPT)
        .order_by(ConsentRequest.id, ConsentImage.id)
    )
    found = []
    for request, image, message, identity in rows:
        media_id = (message.media or {}).get("media_id")
        media = tx.orm.get(MediaFile, media_id) if media_id else None
        if media is None:
            continue
        name = identity.display_name
        found.append(ApprovedImage(request, image, message, media, identity.channel, name))
    return found


def answered(
    tx: Tx,
    request: ConsentRequest,
    state: str,
    message: Message,
    late: bool,
    at: datetime,
) -> None:
    request.state = state
    request.answered_at = at
    request.answer_message_id = message.id
    request.answer_remote_id = message.remote_id
    request.answer_late = late
    tx.orm.flush()


def revoked(tx: Tx, request: ConsentRequest, by: str, at: datetime, message_id: int | None) -> None:
    request.state = "revoked"
    request.revoked_at = at
    request.revoked_by = by
    request.revoke_message_id = message_id
    tx.orm.flush()


def channel_of(tx: Tx, conversation: Conversation) -> str:
    identity = tx.orm.get(ChannelIdentity, conversation.identity_id)
    assert identity is not None
    return identity.channel
