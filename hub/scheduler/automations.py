"""The bot's answers that depend on the time, applied in units of work:

- `after_message` runs in the transaction that stores a customer's message (hub.db.inbound):
  greeting, holding reply (with the reply-window note and its one-tap button), the room's
  notice of it, and the timers for "we're back" and the missed-conversation check;
- `fire` runs a due timer (hub.scheduler.runner calls it): a scheduled message, "we're back"
  or the closed-window notice at an opening, the lobby's list of closed windows, a missed
  conversation.

Decisions are pure (hub.scheduler.policy); texts come from hub.scheduler.render.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from hub.config.hours import HoursConfig, MissedConfig, RepliesConfig, ScheduledConfig
from hub.db import conversations, notices, outbound, timers
from hub.db.answers import bot_message
from hub.db.models import Conversation, Message, Timer, utcnow
from hub.i18n import _
from hub.scheduler import render
from hub.scheduler.hours import Schedule
from hub.scheduler.policy import ConversationState, ReplyRules, decide

if TYPE_CHECKING:
    from hub.db.database import Tx
    from hub.db.inbound import InboundPolicy

log = logging.getLogger(__name__)

HERE_BUTTON_ID = "hub.here"  # the one-tap answer offered with the reply-window note
BACK = "back"  # a conversation's "we're back" at the next opening (a timer kind)


def _watched(meta: dict[str, Any], last_reply: datetime | None) -> bool:
    """A missed-conversation check is armed and no adviser answered since."""
    since = meta.get("missed_since")
    if not meta.get("missed") or since is None:
        return False
    return last_reply is None or last_reply < datetime.fromisoformat(since)


def _window_closed(conversation: Conversation, payload: dict[str, Any], now: datetime) -> bool:
    """The channel's reply window, counted from the customer's last message, has closed."""
    seconds = payload.get("window_seconds")
    last = conversation.last_inbound_at
    if seconds is None or last is None:
        return False
    return last + timedelta(seconds=float(seconds)) <= now


def room_link(room_id: str) -> str:
    return f"https://matrix.to/#/{room_id}"


@dataclass
class Automations:
    hours: HoursConfig
    replies: RepliesConfig
    missed: MissedConfig
    scheduled: ScheduledConfig
    schedule: Schedule
    shop_name: str
    lobby_room: str | None

    @property
    def rules(self) -> ReplyRules:
        return ReplyRules(
            schedule=self.schedule,
            hours_configured=self.hours.configured,
            greeting=self.replies.greeting.enabled,
            holding=self.replies.holding.enabled,
            quiet_after_reply=timedelta(minutes=self.replies.holding.quiet_after_reply_minutes),
            back=self.replies.back.enabled,
            missed_after_minutes=self.missed.after_minutes,
        )

    # -- a customer's message ---------------------------------------------------------

    def after_message(
        self,
        tx: Tx,
        policy: InboundPolicy,
        message: Message,
        conversation: Conversation | None,
        last_inbound_at: datetime,
    ) -> None:
        now = utcnow()
        meta = (conversation.meta if conversation else None) or {}
        away = meta.get("away_until")
        last_reply = conversation.last_adviser_reply_at if conversation else None
        state = ConversationState(
            new=conversation is None,
            last_adviser_reply_at=last_reply,
            holding_for=meta.get("holding_for"),
            away_until=datetime.fromisoformat(away) if away else None,
            reply_window=policy.reply_window,
            last_inbound_at=last_inbound_at,
            missed_pending=_watched(meta, last_reply),
        )
        decision = decide(now, self.rules, state)
        cid, changes = message.conversation_id, {}
        if decision.greeting:
            text = render.greeting_text(self.replies.greeting, policy.channel, self.shop_name)
            self._say(tx, cid, policy.channel, text, f"greeting:{cid}")
        hold = decision.hold
        if hold is not None:
            holding = self.replies.holding
            if hold.kind == "away":
                template = meta.get("away_text")
                text = render.away_text(holding, template, hold, self.schedule, self.shop_name, now)
            else:
                text = render.holding_text(holding, hold, self.schedule, self.shop_name, now)
            data = None
            if hold.window_closes is not None:
                title = render.window_button(holding)
                data = {"buttons": [{"id": HERE_BUTTON_ID, "title": title}]}
            # Once per period is the meta's `holding_for`; the key only names this reply.
            key = f"holding:{cid}:{message.id}"
            self._say(tx, cid, policy.channel, text, key, data)
            notice = _("🤖 Holding reply sent to the customer: {text}").format(text=text)
            notices.conversation_notice(tx, cid, notice, key)
            changes["holding_for"] = hold.period
            # An adviser's away ends when they say so: no "we're back" for it.
            opening = hold.next_opening
            if hold.kind != "away" and opening is not None:
                if decision.back_at or hold.window_closes:
                    closes_first = hold.window_closes is not None
                    self._plan_opening(tx, cid, opening, policy.reply_window, closes_first, now)
        if decision.missed_due is not None:
            key = f"missed:{cid}:{message.id}"
            payload = {"message_id": message.id, "since": now.isoformat()}
            timers.add(
                tx, timers.MISSED, key, decision.missed_due, conversation_id=cid, payload=payload
            )
            changes.update(missed=key, missed_since=now.isoformat())
        if changes:
            conversations.set_meta(tx, cid, **changes)

    def _say(
        self,
        tx: Tx,
        conversation_id: int,
        channel: str,
        text: str,
        key: str,
        data: dict[str, Any] | None = None,
    ) -> None:
        bot_message(tx, conversation_id, channel, text, key, sender_name=self.shop_name, data=data)

    def _plan_opening(
        self,
        tx: Tx,
        cid: int,
        opening: datetime,
        window: timedelta | None,
        closes_first: bool,
        now: datetime,
    ) -> None:
        """At the opening: this conversation's "we're back" (or, if its reply window has
        closed by then, a notice that a template is needed), and, when the window is expected
        to close first, the lobby's list of closed windows (one timer for all)."""
        payload: dict[str, Any] = {"held_at": now.isoformat()}
        if window is not None:
            payload["window_seconds"] = window.total_seconds()
        key = f"back:{cid}:{opening.isoformat()}"
        timers.add(tx, BACK, key, opening, conversation_id=cid, payload=payload)
        if closes_first and self.lobby_room:
            timers.add(tx, timers.OPENING, f"opening:{opening.isoformat()}", opening)

    # -- timers -------------------------------------------------------------------------

    def fire(self, tx: Tx, timer_id: int) -> bool:
        """Run a due timer; False if it was not pending or not due (fired elsewhere)."""
        now = utcnow()
        timer = timers.claim(tx, timer_id, now)
        if timer is None:
            return False
        if timer.kind == timers.SCHEDULED:
            self._scheduled(tx, timer, now)
        elif timer.kind == BACK:
            self._back(tx, timer, now)
        elif timer.kind == timers.OPENING:
            self._opening(tx, timer)
        elif timer.kind == timers.MISSED:
            self._missed(tx, timer)
        else:
            log.warning("timer %s of unknown kind %r ignored", timer.id, timer.kind)
        return True

    def _scheduled(self, tx: Tx, timer: Timer, now: datetime) -> None:
        assert timer.conversation_id is not None and timer.payload is not None
        late = now - timer.due_at
        text = str(timer.payload["text"])
        # A running hub fires within a sweep of the due time: only more is "was down".
        grace = timedelta(seconds=2 * self.scheduled.sweep_seconds + 5)
        if late > timedelta(minutes=self.scheduled.max_late_minutes) + grace:
            timers.finish(tx, timer, "dropped")
            notices.conversation_notice(
                tx,
                timer.conversation_id,
                _(
                    "🕒 Scheduled message #{id} was due {due} while the hub was not running; "
                    "it is {minutes} minutes late and was not sent: {text}"
                ).format(
                    id=timer.id,
                    due=render.opening(timer.due_at, self.schedule),
                    minutes=round(late.total_seconds() / 60),
                    text=text,
                ),
                f"scheduled-dropped:{timer.id}",
            )
            return
        conversation, identity = conversations.conversation_with_identity(tx, timer.conversation_id)
        outbound.queue(
            tx,
            conversation.id,
            identity.channel,
            {"kind": "text", "text": text, "sender_mxid": timer.created_by},
            idempotency=f"scheduled:{timer.id}",
        )
        # The adviser's answer, written ahead: the conversation is not missed, no "we're back".
        conversation.last_adviser_reply_at = now
        notices.conversation_notice(
            tx,
            conversation.id,
            _("🕒 Scheduled message #{id} sent to the customer: {text}").format(
                id=timer.id, text=text
            ),
            f"scheduled-sent:{timer.id}",
        )

    def _answered_since(self, tx: Tx, conversation_id: int, since: datetime) -> Conversation | None:
        """The conversation, unless an adviser answered it since `since`."""
        conversation = conversations.conversation(tx, conversation_id)
        if conversation is None:
            return None
        last = conversation.last_adviser_reply_at
        return None if last is not None and last >= since else conversation

    def _back(self, tx: Tx, timer: Timer, now: datetime) -> None:
        assert timer.conversation_id is not None and timer.payload is not None
        held_at = datetime.fromisoformat(timer.payload["held_at"])
        conversation = self._answered_since(tx, timer.conversation_id, held_at)
        if conversation is None:
            return
        if _window_closed(conversation, timer.payload, now):
            notices.conversation_notice(
                tx,
                conversation.id,
                _(
                    "⏳ The customer's reply window closed while the shop was closed: "
                    "only an approved template can reach them now (see !templates)."
                ),
                f"window-closed:{timer.id}",
            )
            return
        if self.hours.configured and not self.schedule.is_open(now):
            # Fired late (the hub was down) into the next closed period: a holding reply
            # answers the customer's next message instead.
            log.info('timer %s: the shop is closed again; no "we\'re back"', timer.id)
            return
        if self.replies.back.enabled:
            identity = conversations.conversation_with_identity(tx, conversation.id)[1]
            text = render.back_text(self.replies, self.shop_name)
            self._say(tx, conversation.id, identity.channel, text, f"back:{timer.id}")
            notices.conversation_notice(
                tx,
                conversation.id,
                _("🤖 Sent to the customer at the opening: {text}").format(text=text),
                f"back-notice:{timer.id}",
            )

    def _opening(self, tx: Tx, timer: Timer) -> None:
        """The lobby's list of the conversations whose reply window closed overnight."""
        if not self.lobby_room:
            return
        rooms = []
        for back in timers.due_at(tx, BACK, timer.due_at):
            payload = back.payload or {}
            if back.conversation_id is None or "window_seconds" not in payload:
                continue
            held_at = datetime.fromisoformat(payload["held_at"])
            conversation = self._answered_since(tx, back.conversation_id, held_at)
            if conversation is None or not conversation.room_id:
                continue
            if not _window_closed(conversation, payload, timer.due_at):
                continue  # the customer wrote again (tapped "I'm here"): the window is open
            name = conversation.room_name or conversation.room_id
            rooms.append(f"• {name}: {room_link(conversation.room_id)}")
        if rooms:
            head = _(
                "⏳ Reply windows that closed while the shop was closed (a template is needed):"
            )
            notices.notice(
                tx, self.lobby_room, "\n".join([head, *rooms]), f"opening-report:{timer.id}"
            )

    def _missed(self, tx: Tx, timer: Timer) -> None:
        assert timer.conversation_id is not None and timer.payload is not None
        since = datetime.fromisoformat(timer.payload["since"])
        current = conversations.conversation(tx, timer.conversation_id)
        if current is not None and (current.meta or {}).get("missed") == timer.key:
            conversations.set_meta(tx, current.id, missed=None, missed_since=None)
        conversation = self._answered_since(tx, timer.conversation_id, since)
        if conversation is None:
            return
        timers.record_missed(tx, conversation.id, timer.payload.get("message_id"), since)
        text = _(
            "⏰ No adviser has answered this customer for {minutes} minutes of opening time "
            "(since {since})."
        ).format(minutes=self.missed.after_minutes, since=render.opening(since, self.schedule))
        target = conversation.room_name or conversation.room_id or str(conversation.id)
        if self.lobby_room and conversation.room_id:
            lobby_text = _("⏰ Missed: {room} waits for an answer since {since}: {link}").format(
                room=target,
                since=render.opening(since, self.schedule),
                link=room_link(conversation.room_id),
            )
            notices.notice(tx, self.lobby_room, lobby_text, f"missed-lobby:{timer.id}")
        notices.conversation_notice(tx, conversation.id, text, f"missed:{timer.id}")
