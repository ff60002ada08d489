"""Deleting refused or withdrawn photos everywhere the hub put them: a job of the queue
(`consent.delete`), so a restart or a homeserver outage only delays it.

For each image: its file is deleted from the homeserver's media store through the Synapse
admin API (the media URL then answers 404), the hub's own copy removed, and its event in the
room redacted by the bot (by the customer's ghost if the bot may not); the files go first, so
a failing redaction cannot keep them. Every step is idempotent, so a retry repeats what may
have been done. Once all images are gone, the rows say so, the messages keep no trace of the
file, the customer gets the confirmation and the room a notice. A deletion the queue gives up
on is queued again at the next start and every hour (`resume`): the photos are never left
half-deleted for good.
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
from hub.jobs.job import Finish, Job, PermanentFailure, handles
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
        domain: str,
    ) -> None:
        self.db = db
        self.matrix = matrix
        self.admin = admin
        self.store = store
        self.shop_name = shop_name
        self.domain = domain  # the homeserver's, for ghost user ids

    @handles(kinds.CONSENT_DELETE, on_dead="on_dead")
    async def delete(self, job: Job) -> Finish | None:
        found = await self.db.read(rows.deletion_of, job.payload["request_id"])
        if found is None:
            return None  # erased with its customer
        request, images = found
        if not images:
            return None
        if self.admin is None:
            # Retrying cannot help and would hold the conversation's queue: say so, once.
            raise PermanentFailure("homeserver.admin_token is not configured")
        for image in images:
            # The files first: whatever happens to the redaction, the photo is gone.
            for mxc in image.mxc:
                try:
                    await self.admin.delete_media(mxc)
                except ValueError:
                    log.warning("consent request %s: %r is no mxc URI", request.id, mxc)
            if image.media_id:
                await self.store.delete(image.media_id)
            if image.room_id and image.event_id:
                await self._redact(image)
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

    async def _redact(self, image: rows.ImageToDelete) -> None:
        assert image.room_id is not None and image.event_id is not None
        txn = f"hub-consent-{image.message_id}"
        try:
            await self.matrix.redact(image.room_id, image.event_id, txn)
        except MatrixError as exc:
            if exc.status == 404:
                return  # the room or the event is gone already
            if exc.status != 403:
                raise
            # The bot lost its power in the room: the ghost may always redact its own event.
            ghost = f"@{image.ghost_localpart}:{self.domain}"
            await self.matrix.redact(image.room_id, image.event_id, txn, as_user=ghost)

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
        """Queue again the deletions the queue gave up on (at start, then every hour: a
        homeserver outage longer than the queue's retries only delays a deletion)."""
        if self.admin is None:
            return 0

        def requeue(tx: Tx) -> int:
            # A new idempotency key per start: the earlier job under the old key may be dead.
            attempt = int(utcnow().timestamp())
            found = rows.requests_deleting(tx)
            for request_id, conversation_id in found:
                enqueue_deletion(tx, request_id, conversation_id, attempt=attempt)
            return len(found)

        return await self.db.write(requeue)
