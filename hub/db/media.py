"""Rows of the files the hub keeps (hub.core.media holds the bytes). Units of work."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hub.db.conversations import update_message
from hub.db.models import MediaFile, utcnow

if TYPE_CHECKING:
    from hub.core.media import StoredFile
    from hub.db.database import Tx


def media_by_id(tx: Tx, media_id: str) -> MediaFile | None:
    return tx.orm.get(MediaFile, media_id)


def record_file(
    tx: Tx,
    stored: StoredFile,
    conversation_id: int | None,
    message_id: int,
    media: dict[str, Any],
    mxc: str | None = None,
) -> dict[str, Any]:
    """A file now on the hub's disk belongs to a message: its row, and the message's media
    pointing at it. Returns the message's new media."""
    tx.orm.add(
        MediaFile(
            id=stored.media_id,
            conversation_id=conversation_id,
            filename=stored.filename,
            mimetype=stored.mimetype,
            size=stored.size,
            sha256=stored.sha256,
            mxc_uri=mxc,
            created_at=utcnow(),
        )
    )
    media = {
        **media,
        "media_id": stored.media_id,
        "size": stored.size,
        "mimetype": stored.mimetype,
    }
    update_message(tx, message_id, media=media)
    return media


def set_mxc(tx: Tx, media_id: str, mxc: str) -> None:
    """The homeserver's copy of a file, recorded as soon as it is uploaded: a retried
    delivery reuses it instead of uploading a second copy that nothing would know of (and so
    nothing could delete: refused photos, erased customers)."""
    row = tx.orm.get(MediaFile, media_id)
    if row is not None and row.mxc_uri is None:
        row.mxc_uri = mxc
