"""The newsletter's double opt-in in the hub: `!optin`, `!optin status`, and the customer's
answers, taken in the unit of work that stores their message (`after_message`, a hook of
hub.db.inbound).

The decisions are hub.consent.newsletter's (pure); here they are applied: the row
(hub.db.newsletter), the bot's messages to the customer (with reply buttons where the channel
has them; elsewhere their titles are written out and the words work), the room's notices and
the conversation's open question.

Questions of several features (photo consent asks Yes/No too): the feature asking a
question is added to the conversation's open questions (hub.consent.questions); a typed
"yes" counts for the newest open question only, while a button names its request itself.
Stop words count always. When our question is answered (or found no longer valid) it leaves
the list, and an older question of another feature is the newest again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from babel.dates import format_datetime

from hub.config import NewsletterConfig, ShopConfig
from hub.consent import questions
from hub.consent.newsletter import (
    OPEN,
    QUESTION_KIND,
    Event,
    Note,
    Outcome,
    Say,
    State,
    Words,
    button_id,
    changes,
    classify,
    current,
    decide,
    question_is_ours,
)
from hub.core.bot import CommandContext, CommandHandler
from hub.core.commands import CommandSpec, ParsedCommand
from hub.db import conversations, newsletter, notices
from hub.db.answers import bot_message
from hub.db.models import Conversation, Message, NewsletterOptin, utcnow
from hub.errors import UserError
from hub.i18n import N_, _, current_locale

if TYPE_CHECKING:
    from hub.db.database import Tx
    from hub.db.inbound import InboundPolicy

log = logging.getLogger(__name__)

Parsed = ParsedCommand[CommandHandler]

STATE_LABELS = {
    State.NONE: N_("not asked"),
    State.REQUESTED: N_("asked, waiting for the first confirmation"),
    State.CONFIRMED_ONCE: N_("confirmed once, waiting for the second confirmation"),
    State.OPTED_IN: N_("subscribed (confirmed twice)"),
    State.OPTED_OUT: N_("unsubscribed"),
    State.EXPIRED: N_("request expired without both confirmations"),
}


class Newsletter:
    """`has_buttons` and `label` tell of a channel (by kind) whether it shows reply buttons
    and its name ("WhatsApp"), which the request names, as WhatsApp's opt-in rules require."""

    def __init__(
        self,
        config: NewsletterConfig,
        shop: ShopConfig,
        has_buttons: Callable[[str], bool],
        label: Callable[[str], str],
    ) -> None:
        self.config = config
        self.shop_name = shop.name
        self.zone = ZoneInfo(shop.timezone)
        self.has_buttons = has_buttons
        self.label = label
        self.words = Words.of(config.confirm_words, config.stop_words)
        self.expire_after = timedelta(hours=config.expire_hours)

    # -- a customer's message ---------------------------------------------------------

    def after_message(
        self,
        tx: Tx,
        policy: InboundPolicy,
        message: Message,
        conversation: Conversation | None,
        last_inbound_at: datetime,
    ) -> bool | None:
        """Take the message if it answers the opt-in (or is a stop word): True, and the
        automatic replies after this hook skip it."""
        answer = classify(message.kind, message.text, message.data, self.words)
        if answer is None:
            return None
        meta = conversation.meta if conversation is not None else None
        if answer.event is Event.CONFIRM and answer.typed and not question_is_ours(meta):
            return None  # a "yes" to someone else's question, or to no question
        if conversation is not None:
            identity_id = conversation.identity_id
        else:
            identity_id = newsletter.identity_of(tx, message.conversation_id).id
        if answer.event is Event.STOP:
            row: NewsletterOptin | None = newsletter.ensure_optin(
                tx, identity_id, self.config.version
            )
        else:
            row = newsletter.optin(tx, identity_id)
        if row is None or (answer.row_id is not None and answer.row_id != row.id):
            # One of our buttons, of a request that is gone: nothing to confirm.
            log.info(
                "conversation %s: opt-in button of an unknown request", message.conversation_id
            )
            return True if answer.row_id is not None else None
        now = utcnow()
        state = self._expire(tx, row, now)
        first = row.first_confirmed_at
        outcome = decide(
            state,
            answer.event,
            step=answer.step,
            since_first=now - first if first is not None else None,
        )
        if not outcome.taken:
            return None
        if answer.event is Event.STOP:
            cancelled = newsletter.cancel_queued(tx, identity_id)
            if cancelled:
                log.info(
                    "conversation %s: opted out, %d queued broadcast message(s) cancelled",
                    message.conversation_id,
                    cancelled,
                )
        self._apply(
            tx,
            row,
            outcome,
            now,
            conversation_id=message.conversation_id,
            channel=policy.channel,
            key=str(message.id),
            remote_id=message.remote_id,
            said=message.text or "",
        )
        return True

    # -- commands -----------------------------------------------------------------------

    def request(self, ctx: CommandContext, parsed: Parsed) -> None:
        """!optin: ask the customer (again)."""
        conversation = ctx.customer_conversation()
        identity = newsletter.identity_of(ctx.tx, conversation.id)
        row = newsletter.ensure_optin(ctx.tx, identity.id, self.config.version)
        now = utcnow()
        before = State(row.state)
        state = self._expire(ctx.tx, row, now)
        outcome = decide(state, Event.REQUEST)
        if outcome.refused:
            raise UserError(
                _("The customer is subscribed to the newsletter already (since {date}).").format(
                    date=self._date(row.confirmed_at)
                )
            )
        opted_out_at = row.opted_out_at if before is State.OPTED_OUT else None
        text = self._apply(
            ctx.tx,
            row,
            outcome,
            now,
            conversation_id=conversation.id,
            channel=identity.channel,
            key=ctx.event_id,
            requested_by=ctx.sender,
        )
        expires = self._date(row.expires_at)
        if state in OPEN:
            if state is State.CONFIRMED_ONCE:
                answer = _(
                    "📰 The customer confirmed once ({date}); the second question was sent "
                    "again. It now expires {expires}."
                ).format(date=self._date(row.first_confirmed_at), expires=expires)
            else:
                answer = _(
                    "📰 The newsletter request was sent again; it now expires {expires}."
                ).format(expires=expires)
        else:
            answer = _("📰 Newsletter request sent to the customer; it expires {expires}.").format(
                expires=expires
            )
            if opted_out_at is not None:
                answer += " " + _("(The customer had unsubscribed on {date}.)").format(
                    date=self._date(opted_out_at)
                )
        ctx.reply(f"{answer}\n{text}" if text else answer)

    def status(self, ctx: CommandContext, parsed: Parsed) -> None:
        """!optin status: the state with its times (read only: an expiry shows, and is
        recorded by the next answer or !optin)."""
        conversation = ctx.customer_conversation()
        identity = newsletter.identity_of(ctx.tx, conversation.id)
        row = newsletter.optin(ctx.tx, identity.id, lock=False)
        if row is None or row.state == State.NONE:
            ctx.reply(_("📰 Newsletter: not asked yet (!optin sends the request)."))
            return
        state = current(State(row.state), row.expires_at, utcnow())
        lines = [_("📰 Newsletter: {state}").format(state=_(STATE_LABELS[state]))]
        if row.requested_by:
            lines.append(
                _("Requested: {date} by {adviser} (text version {version})").format(
                    date=self._date(row.requested_at),
                    adviser=row.requested_by,
                    version=row.text_version,
                )
            )
        steps = (
            (_("First confirmation"), row.first_confirmed_at, row.first_confirm_remote_id),
            (_("Second confirmation"), row.confirmed_at, row.confirm_remote_id),
            (_("Unsubscribed"), row.opted_out_at, row.opt_out_remote_id),
        )
        for label, at, remote in steps:
            if at is not None:
                line = f"{label}: {self._date(at)}"
                lines.append(line + (f" ({remote})" if remote else ""))
        if state in OPEN or state is State.EXPIRED:
            lines.append(_("Expires: {date}").format(date=self._date(row.expires_at)))
        ctx.reply("\n".join(lines))

    def specs(self) -> list[CommandSpec[CommandHandler]]:
        return [
            CommandSpec(
                "optin",
                self.request,
                help=N_("Ask the customer to subscribe to the newsletter (double opt-in)"),
            ),
            CommandSpec(
                "optin status",
                self.status,
                help=N_("Show the customer's newsletter opt-in with its times"),
            ),
        ]

    # -- applying an outcome --------------------------------------------------------------

    def _expire(self, tx: Tx, row: NewsletterOptin, now: datetime) -> State:
        """The row's state, an open request past its time recorded as expired."""
        state = State(row.state)
        if current(state, row.expires_at, now) is state:
            return state
        outcome = decide(state, Event.EXPIRE)
        newsletter.change(tx, row, changes(outcome, now, expire_after=self.expire_after))
        return outcome.state

    def _apply(
        self,
        tx: Tx,
        row: NewsletterOptin,
        outcome: Outcome,
        now: datetime,
        *,
        conversation_id: int,
        channel: str,
        key: str,
        remote_id: str | None = None,
        requested_by: str | None = None,
        said: str = "",
    ) -> str | None:
        """Record the outcome, tell the customer and the room, open or clear our question;
        the text sent to the customer, if any."""
        before = row.opted_out_at, row.expires_at
        values = changes(
            outcome,
            now,
            expire_after=self.expire_after,
            remote_id=remote_id,
            requested_by=requested_by,
            version=self.config.version,
        )
        newsletter.change(tx, row, values)
        text = None
        if outcome.say is not None:
            text, data = self._message(outcome.say, row.id, channel)
            bot_message(
                tx,
                conversation_id,
                channel,
                text,
                f"optin:{row.id}:{outcome.say}:{key}",
                sender_name=self.shop_name,
                data=data,
            )
        if outcome.note is not None:
            note = self._note(outcome.note, said, *before)
            notices.conversation_notice(
                tx, conversation_id, note, f"optin-note:{row.id}:{outcome.note}:{key}"
            )
        if outcome.question is not None:
            found = conversations.conversation(tx, conversation_id)
            meta = found.meta if found is not None else None
            change = questions.asked if outcome.question else questions.answered
            conversations.set_meta(
                tx, conversation_id, **{questions.KEY: change(meta, QUESTION_KIND, row.id)}
            )
        return text

    # -- texts --------------------------------------------------------------------------

    def _message(self, say: Say, row_id: int, channel: str) -> tuple[str, dict[str, Any] | None]:
        """A text for the customer, with its reply button where the channel shows buttons
        (elsewhere the text names the word to answer)."""
        try:
            label, buttons = _(self.label(channel)), self.has_buttons(channel)
        except LookupError:  # a channel no longer enabled: the send will say so
            label, buttons = channel, False
        values = {
            "business": self.config.business_name or self.shop_name,
            "channel": label,
            "yes": self.config.confirm_words[0].upper(),
            "stop": self.config.stop_words[0].upper(),
        }
        if say is Say.FIRST:
            purpose = self.config.purpose or _("news about our products, offers and events.")
            # TRANSLATORS: a reply button: at most 20 characters
            title = _("Yes, subscribe")
            ask = (
                _("Would you like to receive it? Then tap “{button}” (step 1 of 2).")
                if buttons
                else _("Would you like to receive it? Then answer {yes} (step 1 of 2).")
            )
            text = "\n\n".join(
                [
                    _("{business} would like to send you its newsletter on {channel}: {purpose}"),
                    ask + " " + _("You can unsubscribe at any time by writing {stop}."),
                ]
            ).format(purpose=purpose, button=title, **values)
            return text, _buttons(button_id(row_id, 1), title) if buttons else None
        if say is Say.SECOND:
            # TRANSLATORS: a reply button: at most 20 characters
            title = _("Yes, confirm")
            ask = (
                _("Please tap “{button}” (step 2 of 2).")
                if buttons
                else _("Please answer {yes} again (step 2 of 2).")
            )
            text = " ".join(
                [
                    _(
                        "Thank you! Please confirm once more that {business} may send you its "
                        "newsletter on {channel}."
                    ),
                    ask,
                ]
            ).format(button=title, **values)
            return text, _buttons(button_id(row_id, 2), title) if buttons else None
        if say is Say.WELCOME:
            text = _(
                "Thank you, you are now subscribed to the newsletter of {business}. You can "
                "unsubscribe at any time by writing {stop}."
            )
        elif say is Say.STOPPED:
            text = _(
                "You are unsubscribed: {business} will not send you its newsletter. If you "
                "change your mind, just ask us."
            )
        else:
            text = _(
                "This newsletter request is no longer valid, so you are not subscribed. If "
                "you would like to receive our newsletter, just ask us for a new request."
            )
        return text.format(**values), None

    def _note(
        self, note: Note, said: str, opted_out_at: datetime | None, expires_at: datetime | None
    ) -> str:
        """The room's notice of a step the customer took."""
        if note is Note.FIRST:
            return _(
                "📰 Newsletter: the customer confirmed once; the second confirmation was asked."
            )
        if note is Note.OPTED_IN:
            return _("📰 Newsletter: the customer confirmed twice and is subscribed.")
        if note is Note.STOPPED:
            return _("📰 Newsletter: the customer unsubscribed (wrote “{text}”).").format(text=said)
        if note is Note.STOPPED_AGAIN:
            return _(
                "📰 Newsletter: the customer wrote “{text}” again; unsubscribed since {date}."
            ).format(text=said, date=self._date(opted_out_at))
        if note is Note.LATE:
            return _(
                "📰 Newsletter: the customer confirmed after the request expired ({date}); "
                "not subscribed. Send !optin to ask again."
            ).format(date=self._date(expires_at))
        return _(
            "📰 Newsletter: the customer confirmed an old request after unsubscribing "
            "({date}); not subscribed. Send !optin to ask again if they want it."
        ).format(date=self._date(opted_out_at))

    def _date(self, moment: datetime | None) -> str:
        if moment is None:
            return "—"
        return format_datetime(moment, "short", tzinfo=self.zone, locale=current_locale())


def _buttons(button: str, title: str) -> dict[str, Any]:
    return {"buttons": [{"id": button, "title": title}]}
