"""What to do with a Matrix event the homeserver pushed: a command, a reply, or nothing.

Runs as the matrix.event job handler, so events of one room are handled in order and a
crash mid-way re-runs the event (every effect is idempotent by event id).

Only the shop's advisers speak to the customer. A message, file or reaction of anyone else
in a portal room stays in the room: the room is told once per sender and conversation (the
conversation's `meta` remembers whom it told).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

from hub.core.bot import CommandContext, CommandHandler, CommandRunner
from hub.core.commands import CommandRegistry, NotACommand, parse
from hub.core.text import storable
from hub.db import conversations, notices, outbound
from hub.db.database import Database, Tx
from hub.db.models import Conversation
from hub.i18n import _
from hub.jobs import kinds
from hub.jobs.job import Finish, Job, handles

log = logging.getLogger(__name__)

_KINDS = {
    "m.text": "text",
    "m.emote": "text",
    "m.image": "image",
    "m.file": "file",
    "m.video": "video",
    "m.audio": "audio",
}
# conversation.meta[_TOLD]: the senders the room was told do not reach the customer.
_TOLD = "not_advisers_told"
_REPLY_FALLBACK = re.compile(r"^(> .*\n)+\n", re.MULTILINE)
_HTML_REPLY_FALLBACK = re.compile(r"^<mx-reply>.*?</mx-reply>", re.DOTALL)


def _object(value: object) -> dict[str, Any]:
    """A JSON object of an event, or an empty one (events come from anyone's client)."""
    return value if isinstance(value, dict) else {}


def strip_reply_fallback(body: str, html: str | None) -> tuple[str, str | None]:
    """Older clients quote the replied-to message in the body; the customer needs no quote."""
    if body.startswith("> "):
        body = _REPLY_FALLBACK.sub("", body, count=1)
    if html:
        html = _HTML_REPLY_FALLBACK.sub("", html, count=1)
    return body, html


def outbound_values(event: dict[str, Any], conversation: Conversation) -> dict[str, Any] | None:
    """The message row for an adviser's event, or None when it is not for the customer."""
    content = event.get("content")
    if not isinstance(content, dict):
        return None
    kind = _KINDS.get(str(content.get("msgtype")))
    body = content.get("body")
    if kind is None or not isinstance(body, str):
        return None  # notices (bots), unknown msgtypes, redacted events
    relates = _object(content.get("m.relates_to"))
    if relates.get("rel_type") == "m.replace":
        return None  # edits are not sent on yet
    html = (
        content.get("formatted_body") if content.get("format") == "org.matrix.custom.html" else None
    )
    body, html = strip_reply_fallback(
        storable(body), storable(html) if isinstance(html, str) else None
    )
    values: dict[str, Any] = {
        "conversation_id": conversation.id,
        "direction": "out",
        "kind": kind,
        "matrix_event_id": event["event_id"],
        "sender_mxid": event["sender"],
        "status": "pending",
    }
    if kind == "text":
        if content.get("msgtype") == "m.emote":
            body = f"* {body}"
        values |= {"text": body, "html": html}
    else:
        url = content.get("url")
        if not isinstance(url, str) or not url.startswith("mxc://"):
            return None  # encrypted media (file) cannot be read by the hub
        info = _object(content.get("info"))
        filename = content.get("filename") if isinstance(content.get("filename"), str) else body
        caption = body if content.get("filename") and body != filename else None
        values |= {
            "text": caption,
            "media": {
                "filename": filename,
                "mimetype": str(info.get("mimetype") or "application/octet-stream"),
                "size": int(info.get("size") or 0),
                "mxc": url,
                "media_id": None,
            },
        }
    in_reply = relates.get("m.in_reply_to")
    if isinstance(in_reply, dict) and isinstance(in_reply.get("event_id"), str):
        values["_reply_event"] = in_reply["event_id"]
    return values


def _reply_target(content: dict[str, Any]) -> str | None:
    """The event a message replies to (m.in_reply_to), if any."""
    in_reply = _object(_object(content.get("m.relates_to")).get("m.in_reply_to"))
    target = in_reply.get("event_id")
    return target if isinstance(target, str) else None


def _reaction_of(event: dict[str, Any]) -> tuple[str, str] | None:
    """(the event reacted to, the emoji) of an m.reaction a customer's channel could show."""
    rel = _object(_object(event.get("content")).get("m.relates_to"))
    target, emoji = rel.get("event_id"), rel.get("key")
    if rel.get("rel_type") != "m.annotation" or not isinstance(target, str):
        return None
    if not isinstance(emoji, str) or not emoji or len(emoji) > 16:
        return None
    return target, emoji


class Dispatcher:
    def __init__(
        self,
        db: Database,
        is_own: Callable[[str], bool],
        commands: CommandRegistry[CommandHandler],
        runner: CommandRunner,
        prefix: str,
        advisers: Iterable[str] | None = None,
    ) -> None:
        """`advisers`: who speaks to the customer (default: those the runner lets run
        commands, i.e. `shop.advisers`)."""
        self.db = db
        self.is_own = is_own
        self.commands = commands
        self.runner = runner
        self.prefix = prefix
        self.advisers = runner.advisers if advisers is None else frozenset(advisers)

    @handles(kinds.MATRIX_EVENT, preload=conversations.preload_room)
    async def handle(self, job: Job) -> Finish | None:
        event = job.payload
        if self.is_own(event["sender"]):
            return None
        if event["type"] == "m.reaction":
            reaction = _reaction_of(event)
            if reaction is None:
                return None
            if event["sender"] not in self.advisers:
                return self._not_relayed(event, await self._conversation(job))
            return self._reaction(event["event_id"], *reaction)
        if event["type"] != "m.room.message":
            return None
        content = _object(event.get("content"))
        conversation = await self._conversation(job)
        body = content.get("body")
        if content.get("msgtype") == "m.text" and isinstance(body, str):
            reply_to = _reply_target(content)
            if reply_to is not None:
                # Older clients quote the replied-to message above the command.
                body = strip_reply_fallback(body, None)[0]
            parsed = parse(body, self.prefix, self.commands)
            if not isinstance(parsed, NotACommand):
                return self._command(event, conversation, parsed, reply_to)
        if conversation is None:
            return None
        values = outbound_values(event, conversation)
        if values is None:
            return None
        if event["sender"] not in self.advisers:
            return self._not_relayed(event, conversation)
        reply_event = values.pop("_reply_event", None)

        def finish(tx: Tx) -> None:
            outbound.adviser_message(tx, conversation.id, values, reply_event)

        return finish

    def _command(
        self,
        event: dict[str, Any],
        conversation: Conversation | None,
        parsed: Any,
        reply_to: str | None,
    ) -> Finish:
        def finish(tx: Tx) -> None:
            ctx = CommandContext(
                tx,
                event["room_id"],
                event["event_id"],
                event["sender"],
                conversation,
                reply_to=reply_to,
            )
            self.runner.run(ctx, parsed)

        return finish

    async def _conversation(self, job: Job) -> Conversation | None:
        """The conversation of the event's room (read where the job was leased), if any."""
        if isinstance(job.context, conversations.RoomConversation):
            return job.context.conversation
        return await self.db.read(conversations.conversation_by_room, job.payload["room_id"])

    @staticmethod
    def _reaction(event_id: str, target_event: str, emoji: str) -> Finish:
        """An adviser reacted to a customer's message: pass it on where the channel can."""

        def finish(tx: Tx) -> None:
            outbound.adviser_reaction(tx, target_event, emoji, event_id)

        return finish

    @staticmethod
    def _not_relayed(event: dict[str, Any], conversation: Conversation | None) -> Finish | None:
        """Someone who is not an adviser wrote (or reacted) in a portal room: it stays in
        the room, and the room is told once per sender and conversation."""
        if conversation is None:
            return None  # not a portal: nothing would have been relayed anyway
        sender, room_id = event["sender"], event["room_id"]
        log.info(
            "%s from %s in %s not relayed to the customer: not an adviser",
            event["event_id"],
            sender,
            room_id,
        )

        def finish(tx: Tx) -> None:
            current = conversations.conversation(tx, conversation.id)
            if current is None:
                return
            told = (current.meta or {}).get(_TOLD)
            told = [m for m in told if isinstance(m, str)] if isinstance(told, list) else []
            if sender in told:
                return
            conversations.set_meta(tx, current.id, **{_TOLD: [*told, sender]})
            # TRANSLATORS: {sender} is a Matrix ID (@bob:example.org) in the portal room.
            text = _(
                "{sender} is not one of the shop's advisers: their messages do not reach "
                "the customer."
            )
            notices.notice(
                tx,
                room_id,
                text.format(sender=sender),
                f"not-adviser:{current.id}:{sender}",
                reply_to=event["event_id"],
            )

        return finish
