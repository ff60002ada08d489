"""Deleting refused or withdrawn photos everywhere the hub put them: a job of the queue
(`consent.delete`), so a restart or a homeserver outage only delays it.

For each image: its event in the room is redacted by the bot, its file deleted from the
homeserver's media store through the Synapse admin API (the media URL then answers 404), and
the hub's own copy removed. Every step is idempotent, so a retry repeats what may have been
done. Once all images are gone, the rows say so, the messages keep no trace of the file, the
customer gets the confirmation and the room a notice. A deletion the queue gives up on is
queued again at the next start (`resume`): the photos are never left half-deleted for good.
"""

from __future__ import annotations

import logging

from hub.consent.photo_flow import enqueue_deletion
from hub.core.media import MediaStore
from hub.db import consent as rows
from hub.db import notices
from hub.db.answers import bot_message
from hub.db.database import Database, Tx
from hub.db.models import ConsentRequest, utcnow
from hub.i18n import _
from hub.jobs import kinds
from hub.jobs.job import Finish, Job, handles
from hub.matrix.admin import HomeserverAdmin
from hub.matrix.client import MatrixClient, MatrixError

log = logging.getLogger(__name__)


class PhotoDeletion:
    def __init__(
        self,
        db: Database,
        matrix: MatrixClient,
        admin: HomeserverAdmin | None,
        store: MediaStore,
        shop_name: str,
    ) -> None:
        self.db = db
        self.matrix = matrix
        self.admin = admin
        self.store = store
        self.shop_name = shop_name

    @handles(kinds.CONSENT_DELETE, on_dead="on_dead")
    async def delete(self, job: Job) -> Finish | None:
        found = await self.db.read(rows.deletion_of, job.payload["request_id"])
        if found is None:
            return None  # erased with its customer
        request, images = found
        if not images:
            return None
        if self.admin is None:
            raise MatrixError(503, "M_UNKNOWN", "homeserver.admin_token is not configured")
        for image in images:
            if image.room_id and image.event_id:
                try:
                    await self.matrix.redact(
                        image.room_id, image.event_id, f"hub-consent-{image.message_id}"
                    )
                except MatrixError as exc:
                    # The room is gone (purged) or the event was redacted by someone: fine.
                    if exc.status not in (404,):
                        raise
            for mxc in image.mxc:
                await self.admin.delete_media(mxc)
            if image.media_id:
                await self.store.delete(image.media_id)
        log.info(
            "consent request %s: %d photo(s) deleted in room %s",
            request.id,
            len(images),
            images[0].room_id,
        )

        def finish(tx: Tx) -> None:
            if rows.finish_deletion(tx, images):
                self._confirm(tx, request, len(images))

        return finish

    def _confirm(self, tx: Tx, request: ConsentRequest, count: int) -> None:
        text = (
            _("Your photos have been deleted. We will not use them.")
            if request.state == "refused"
            else _("Your consent is withdrawn and your photos have been deleted.")
        )
        bot_message(
            tx,
            request.conversation_id,
            request.channel,
            text,
            f"consent-deleted:{request.id}",
            sender_name=self.shop_name,
        )
        notice = _(
            "🗑 {count} photo(s) of request {id} deleted: from this room, the homeserver's "
            "media store and the hub."
        ).format(count=count, id=request.id)
        notices.conversation_notice(
            tx, request.conversation_id, notice, f"consent-deleted:{request.id}"
        )

    async def on_dead(self, job: Job, reason: str, code: str | None) -> None:
        request_id = job.payload["request_id"]
        log.error("consent request %s: deleting its photos failed: %s", request_id, reason)

        def tell(tx: Tx) -> None:
            found = rows.deletion_of(tx, request_id)
            if found is None:
                return
            request, _images = found
            text = _(
                "⚠️ Deleting the photos of request {id} failed ({reason}). "
                "The hub tries again at its next start."
            ).format(id=request_id, reason=reason)
            notices.conversation_notice(tx, request.conversation_id, text, f"consent-dead:{job.id}")

        await self.db.write(tell)

    async def resume(self) -> int:
        """Queue again the deletions the queue gave up on (at start)."""

        def requeue(tx: Tx) -> int:
            # A new idempotency key per start: the earlier job under the old key may be dead.
            attempt = int(utcnow().timestamp())
            found = rows.requests_deleting(tx)
            for request_id, conversation_id in found:
                enqueue_deletion(tx, request_id, conversation_id, attempt=attempt)
            return len(found)

        return await self.db.write(requeue)
