"""Photo consent in the hub: the advisers' `!consent` commands and the customer's answers.

- `!consent` as a Matrix reply to a customer's image (or `!consent all`) asks the customer,
  with Yes/No buttons where the channel has them and the answer words written out where not;
  the request stores the text and its version, the images' SHA-256 and the adviser.
- `after_message` runs in the unit of work that stores a customer's message: a tap on one of
  the buttons, a yes/no word while a consent question is the conversation's open question, or
  a revocation word. Yes marks the images ✅; No or a revocation marks them 🚫 and queues their
  deletion (hub.consent.deletion), which confirms to the customer once they are gone.
- `!consent revoke` withdraws consent for the customer; `!consent list` shows the requests.

The decisions are hub.consent.photo's; the rows hub.db.consent's.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from hub.config.privacy import PhotoConsentConfig
from hub.consent import photo, questions
from hub.consent.photo import Outcome, State
from hub.core.bot import CommandContext, CommandHandler
from hub.core.commands import CommandSpec, ParsedCommand
from hub.db import consent as rows
from hub.db import conversations, notices
from hub.db.answers import bot_message
from hub.db.jobs import conversation_key, enqueue
from hub.db.models import ConsentRequest, Conversation, Message, utcnow
from hub.errors import UserError
from hub.i18n import N_, _
from hub.jobs.kinds import CONSENT_DELETE

if TYPE_CHECKING:
    from hub.db.database import Tx
    from hub.db.inbound import InboundPolicy

Parsed = ParsedCommand[CommandHandler]
QUESTION = "consent"  # its kind among the open questions (hub.consent.questions)
GRANTED_MARK, REFUSED_MARK = "✅", "🚫"


def _when(at: datetime | None) -> str:
    return f"{at:%Y-%m-%d %H:%M} UTC" if at else "?"


class PhotoConsent:
    def __init__(
        self,
        config: PhotoConsentConfig,
        shop_name: str,
        has_buttons: Callable[[str], bool],
        can_delete: bool,
    ) -> None:
        self.config = config
        self.shop_name = shop_name
        self.has_buttons = has_buttons  # channel kind -> it has reply buttons
        # A refused photo must be deletable from the homeserver: without the admin token,
        # asking would promise what the hub cannot keep.
        self.can_delete = can_delete

    # -- asking -----------------------------------------------------------------------

    def ask(self, ctx: CommandContext, parsed: Parsed) -> None:
        conversation = self._ready(ctx)
        if ctx.reply_to is None:
            raise UserError(_("Reply to the customer's photo with !consent, or use !consent all."))
        image = rows.message_by_event(ctx.tx, ctx.reply_to)
        if (
            image is None
            or image.conversation_id != conversation.id
            or image.direction != "in"
            or image.kind != "image"
        ):
            raise UserError(_("That is not a photo of this customer: reply to their photo."))
        if image.media is None:
            raise UserError(_("That photo has been deleted."))
        earlier = rows.image_request(ctx.tx, image.id)
        if earlier is not None:
            # Once per photo: the request that covers it is its proof, and a late answer to
            # it still counts (moving the photo to a new request would orphan that answer).
            raise UserError(self._asked_before(earlier))
        self._request(ctx, conversation, [image])

    def ask_all(self, ctx: CommandContext, parsed: Parsed) -> None:
        conversation = self._ready(ctx)
        images = rows.images_not_asked(ctx.tx, conversation.id)
        if not images:
            raise UserError(_("This customer has sent no photos that were not asked about."))
        self._request(ctx, conversation, images)

    def _ready(self, ctx: CommandContext) -> Conversation:
        conversation = ctx.customer_conversation()
        if not self.can_delete:
            raise UserError(
                _(
                    "Photo consent needs homeserver.admin_token in the hub's config: "
                    "without it a refused photo could not be deleted from the homeserver."
                )
            )
        if (conversation.meta or {}).get("blocked"):
            raise UserError(_("The customer has blocked the shop: they cannot be asked."))
        return conversation

    @staticmethod
    def _asked_before(request: ConsentRequest) -> str:
        texts = {
            "pending": N_("This photo was asked about in request {id} on {at}: no answer yet."),
            "granted": N_("The customer agreed to this photo in request {id} on {at}."),
            "refused": N_("The customer refused this photo in request {id} on {at}."),
            "revoked": N_("The consent for this photo was withdrawn in request {id} on {at}."),
        }
        at = request.revoked_at if request.state == "revoked" else request.answered_at
        at = at or request.requested_at
        return _(texts[request.state]).format(id=request.id, at=_when(at))

    def _request(
        self, ctx: CommandContext, conversation: Conversation, images: list[Message]
    ) -> None:
        tx = ctx.tx
        covered = []
        for image in images:
            sha256 = rows.media_sha256(tx, image)
            if sha256 is None:
                raise UserError(_("A photo has not reached the hub yet: try again in a moment."))
            covered.append((image.id, sha256))
        channel = rows.channel_of(tx, conversation)
        text = self.question(channel)
        now = utcnow()
        request = rows.add_request(
            tx,
            {
                "conversation_id": conversation.id,
                "channel": channel,
                "text": text,
                "text_version": self.config.version,
                "requested_by": ctx.sender,
                "requested_at": now,
                "expires_at": now + timedelta(hours=self.config.expire_hours),
            },
            covered,
        )
        buttons = [
            {"id": photo.button_id("yes", request.id), "title": _("Yes")},
            {"id": photo.button_id("no", request.id), "title": _("No")},
        ]
        message = bot_message(
            tx,
            conversation.id,
            channel,
            text,
            f"consent-request:{request.id}",
            sender_name=self.shop_name,
            data={"buttons": buttons, "consent_request": request.id},
        )
        request.request_message_id = message.id if message else None
        open_now = conversations.conversation(tx, conversation.id)
        conversations.set_meta(
            tx,
            conversation.id,
            **{
                questions.KEY: questions.asked(
                    open_now.meta if open_now else None, QUESTION, request.id
                )
            },
        )
        ctx.reply(
            _(
                "Asked the customer for consent to reuse {count} photo(s) "
                "(request {id}, text version {version})."
            ).format(count=len(covered), id=request.id, version=self.config.version)
        )

    def question(self, channel: str) -> str:
        """The consent text as this channel's customer gets it."""
        text = self.config.text or _(
            "May {shop} show your photo on its website and social media? "
            'You can withdraw your consent at any time by writing "{revoke}".'
        )
        text = text.replace("{shop}", self.shop_name).replace(
            "{revoke}", self.config.revoke_words[0].upper()
        )
        try:
            buttons = self.has_buttons(channel)
        except LookupError:  # the channel was disabled since: the words work anyway
            buttons = False
        if not buttons:
            text += "\n\n" + _("Answer {yes} or {no}.").format(
                yes=self.config.yes_words[0].upper(), no=self.config.no_words[0].upper()
            )
        return text

    # -- revoking and listing ------------------------------------------------------------

    def revoke(self, ctx: CommandContext, parsed: Parsed) -> None:
        conversation = self._ready(ctx)
        if ctx.reply_to is not None:
            image = rows.message_by_event(ctx.tx, ctx.reply_to)
            request = rows.image_request(ctx.tx, image.id) if image else None
            if request is None or request.conversation_id != conversation.id:
                raise UserError(_("No consent was asked for that photo."))
            targets = [request]
        else:
            targets = rows.requests_of(ctx.tx, conversation.id, ("pending", "granted"))
        changed = [r for r in targets if self._revoke(ctx.tx, r, ctx.sender, None, conversation)]
        if not changed:
            raise UserError(_("There is no consent to withdraw in this conversation."))
        ctx.reply(
            _("Consent withdrawn (request(s) {ids}): the photos are being deleted.").format(
                ids=", ".join(str(r.id) for r in changed)
            )
        )

    def show(self, ctx: CommandContext, parsed: Parsed) -> None:
        conversation = ctx.customer_conversation()
        requests = rows.requests_of(
            ctx.tx, conversation.id, ("pending", "granted", "refused", "revoked")
        )
        if not requests:
            ctx.reply(_("No photo consent was asked in this conversation."))
            return
        now = utcnow()
        lines = []
        for request in requests:
            images = rows.images_of(ctx.tx, request.id)
            state = request.state
            if state == "pending" and now > request.expires_at:
                state = "expired"
            line = _("Request {id}: {state}, {count} photo(s), asked by {adviser} on {at}").format(
                id=request.id,
                state=_(STATE_NAMES[state]),
                count=len(images),
                adviser=request.requested_by,
                at=_when(request.requested_at),
            )
            if request.answer_late:
                line += " " + _("(answered late)")
            lines.append(line)
        ctx.reply("\n".join(lines))

    def specs(self) -> list[CommandSpec[CommandHandler]]:
        return [
            CommandSpec(
                "consent",
                self.ask,
                help=N_("As a reply to a customer's photo: ask to reuse it (Yes/No)"),
            ),
            CommandSpec(
                "consent all",
                self.ask_all,
                help=N_("Ask to reuse every photo of this customer not yet asked about"),
            ),
            CommandSpec(
                "consent revoke",
                self.revoke,
                help=N_("Withdraw the customer's consent (of the photo replied to, or all)"),
            ),
            CommandSpec(
                "consent list", self.show, help=N_("Show the photo consent requests of this room")
            ),
        ]

    # -- the customer's answers -----------------------------------------------------------

    def after_message(
        self,
        tx: Tx,
        policy: InboundPolicy,
        message: Message,
        conversation: Conversation | None,
        last_inbound_at: datetime,
    ) -> bool | None:
        if conversation is None:
            return None  # a new conversation has been asked nothing
        data = message.data or {}
        tapped = photo.button_answer(data.get("id")) if message.kind == "interactive" else None
        if tapped is not None:
            given, request_id = tapped
            request = rows.request_in(tx, request_id, conversation.id)
            if request is None:
                return True  # a stale or foreign button: nothing to record, no auto-reply
            self._answer(tx, request, given, message, conversation)
            return True
        if message.kind != "text":
            return None
        if photo.is_revocation(message.text, self.config.revoke_words):
            found = rows.requests_of(tx, conversation.id, ("pending", "granted"))
            changed = [r for r in found if self._revoke(tx, r, "customer", message, conversation)]
            return bool(changed) or None
        question = questions.newest(conversation.meta)
        if question is None or question["kind"] != QUESTION:
            return None
        word = photo.word_answer(message.text, self.config.yes_words, self.config.no_words)
        if word is None:
            return None
        request = rows.request_in(tx, int(question["id"]), conversation.id)
        if request is None:
            return None
        self._answer(tx, request, word, message, conversation)
        return True

    def _answer(
        self,
        tx: Tx,
        request: ConsentRequest,
        given: photo.Answer,
        message: Message,
        conversation: Conversation,
    ) -> None:
        now = utcnow()
        outcome = photo.answer(State(request.state), given, request.expires_at, now)
        if outcome.what == "revoked":
            self._revoke(tx, request, "customer", message, conversation)
            return
        if not outcome.changed:
            if outcome.what == "too_late_to_grant":
                text = _(
                    "🤖 The customer said yes to request {id} after refusing it: "
                    "its photos were deleted already."
                ).format(id=request.id)
                notices.conversation_notice(
                    tx, conversation.id, text, f"consent-late-yes:{message.id}"
                )
            return
        rows.answered(tx, request, outcome.state.value, message, outcome.late, now)
        self._close_question(tx, conversation, request)
        images = rows.images_of(tx, request.id)
        late = " " + _("(after the request had expired)") if outcome.late else ""
        if outcome.state is State.GRANTED:
            self._mark(tx, conversation, images, GRANTED_MARK)
            text = _(
                "✅ The customer agreed to the reuse of {count} photo(s) "
                "(request {id}, text version {version})."
            ).format(count=len(images), id=request.id, version=request.text_version)
            notices.conversation_notice(
                tx, conversation.id, text + late, f"consent:{request.id}:granted"
            )
            thanks = _(
                "Thank you! We may show your photos. "
                'You can withdraw this at any time by writing "{revoke}".'
            ).format(revoke=self.config.revoke_words[0].upper())
            bot_message(
                tx,
                conversation.id,
                request.channel,
                thanks,
                f"consent-thanks:{request.id}",
                sender_name=self.shop_name,
            )
        else:
            text = _("🚫 The customer refused (request {id}): {count} photo(s) are being deleted.")
            notices.conversation_notice(
                tx,
                conversation.id,
                text.format(id=request.id, count=len(images)) + late,
                f"consent:{request.id}:refused",
            )
            self._delete(tx, conversation, request, images)

    def _revoke(
        self,
        tx: Tx,
        request: ConsentRequest,
        by: str,
        message: Message | None,
        conversation: Conversation,
    ) -> bool:
        outcome: Outcome = photo.revoke(State(request.state))
        if not outcome.changed:
            return False
        rows.revoked(tx, request, by, utcnow(), message.id if message else None)
        self._close_question(tx, conversation, request)
        images = rows.images_of(tx, request.id)
        who = _("the customer") if by == "customer" else by
        text = _(
            "🚫 Consent withdrawn by {who} (request {id}): {count} photo(s) are being deleted."
        )
        notices.conversation_notice(
            tx,
            conversation.id,
            text.format(who=who, id=request.id, count=len(images)),
            f"consent:{request.id}:revoked",
        )
        self._delete(tx, conversation, request, images)
        return True

    def _delete(
        self,
        tx: Tx,
        conversation: Conversation,
        request: ConsentRequest,
        images: list[tuple[Any, Message]],
    ) -> None:
        self._mark(tx, conversation, images, REFUSED_MARK)
        if rows.start_deleting(tx, request.id):
            enqueue_deletion(tx, request.id, conversation.id)

    @staticmethod
    def _mark(
        tx: Tx, conversation: Conversation, images: list[tuple[Any, Message]], mark: str
    ) -> None:
        """The bot's ✅/🚫 on each image in the room."""
        if not conversation.room_id:
            return
        for _image, message in images:
            if message.matrix_event_id:
                content = {
                    "m.relates_to": {
                        "rel_type": "m.annotation",
                        "event_id": message.matrix_event_id,
                        "key": mark,
                    }
                }
                key = f"consent-mark:{message.matrix_event_id}:{mark}"
                notices.room_event(tx, conversation.room_id, "m.reaction", content, key)

    @staticmethod
    def _close_question(tx: Tx, conversation: Conversation, request: ConsentRequest) -> None:
        found = conversations.conversation(tx, conversation.id)
        meta = found.meta if found is not None else None
        if any(
            q["kind"] == QUESTION and q["id"] == request.id for q in questions.open_questions(meta)
        ):
            remaining = questions.answered(meta, QUESTION, request.id)
            conversations.set_meta(tx, conversation.id, **{questions.KEY: remaining})


def enqueue_deletion(tx: Tx, request_id: int, conversation_id: int, attempt: int = 0) -> None:
    key = f"{request_id}" if not attempt else f"{request_id}:{attempt}"
    enqueue(tx, CONSENT_DELETE, conversation_key(conversation_id), {"request_id": request_id}, key)


STATE_NAMES = {
    "pending": N_("waiting for the answer"),
    "expired": N_("expired without an answer"),
    "granted": N_("agreed"),
    "refused": N_("refused, photos deleted"),
    "revoked": N_("withdrawn, photos deleted"),
}
