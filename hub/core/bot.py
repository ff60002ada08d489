"""Running adviser commands: permission, ✅/⛔ feedback, replies through the outbox.

Command handlers run inside the transaction that completes the Matrix event's job, in a
savepoint: a UserError rolls back the handler's own writes but keeps the ⛔ reply. Handlers
do database work only; anything slow or external is queued as an outbox job.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from hub.core.commands import ArgumentError, CommandSpec, ParsedCommand, UnknownCommand
from hub.core.outbox import enqueue
from hub.db.models import Conversation
from hub.errors import UserError, error_ref

if TYPE_CHECKING:
    from hub.hub import Hub

log = logging.getLogger(__name__)

MATRIX_SEND = "matrix.send"
OK, REFUSED = "✅", "⛔"


@dataclass(frozen=True)
class Reply:
    text: str
    html: str | None = None


@dataclass
class CommandContext:
    hub: Hub
    session: AsyncSession
    room_id: str
    event_id: str
    sender: str
    conversation: Conversation | None
    replies: list[Reply] = field(default_factory=list)

    def reply(self, text: str, html: str | None = None) -> None:
        self.replies.append(Reply(text, html))


CommandHandler = Callable[[CommandContext, ParsedCommand[Any]], Awaitable[None]]


def room_out_key(room_id: str) -> str:
    return f"room-out:{room_id}"


async def enqueue_room_event(
    s: AsyncSession,
    room_id: str,
    event_type: str,
    content: dict[str, Any],
    idempotency_key: str,
    as_user: str | None = None,
    state_key: str | None = None,
) -> None:
    """Queue an event the bot (or a ghost) sends to a room (a state event with state_key)."""
    payload: dict[str, Any] = {
        "room_id": room_id,
        "event_type": event_type,
        "content": content,
        "as_user": as_user,
    }
    if state_key is not None:
        payload["state_key"] = state_key
    await enqueue(s, MATRIX_SEND, room_out_key(room_id), payload, idempotency_key)


async def enqueue_notice(
    s: AsyncSession,
    room_id: str,
    text: str,
    idempotency_key: str,
    html: str | None = None,
    reply_to: str | None = None,
) -> None:
    content: dict[str, Any] = {"msgtype": "m.notice", "body": text}
    if html:
        content |= {"format": "org.matrix.custom.html", "formatted_body": html}
    if reply_to:
        content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to}}
    await enqueue_room_event(s, room_id, "m.room.message", content, idempotency_key)


async def _react(s: AsyncSession, room_id: str, event_id: str, key: str) -> None:
    content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": key}}
    await enqueue_room_event(s, room_id, "m.reaction", content, f"react:{event_id}")


async def run_command(
    ctx: CommandContext,
    result: ParsedCommand[CommandHandler] | UnknownCommand | ArgumentError[CommandHandler],
) -> None:
    """Execute a parsed command (or report why it cannot run) inside ctx.session."""
    s, room, event = ctx.session, ctx.room_id, ctx.event_id
    outcome = OK
    if ctx.sender not in ctx.hub.config.shop.advisers:
        log.info("command refused in %s: %s is not an adviser", room, ctx.sender)
        outcome = REFUSED
        ctx.replies = [Reply("Only the shop's advisers can run commands.")]
    elif isinstance(result, UnknownCommand | ArgumentError):
        outcome = REFUSED
        ctx.replies = [Reply(result.message)]
    else:
        outcome = await _execute(ctx, result)
    await _react(s, room, event, outcome)
    for n, reply in enumerate(ctx.replies):
        await enqueue_notice(s, room, reply.text, f"reply:{event}:{n}", reply.html, event)


async def _execute(ctx: CommandContext, parsed: ParsedCommand[CommandHandler]) -> str:
    spec: CommandSpec[CommandHandler] = parsed.spec
    try:
        async with ctx.session.begin_nested():
            await spec.handler(ctx, parsed)
        return OK
    except UserError as exc:
        ctx.replies = [Reply(str(exc))]
        return REFUSED
    except Exception:
        ref = error_ref()
        log.exception("command %r failed in %s (ref %s)", spec.name, ctx.room_id, ref)
        ctx.replies = [Reply(f"Internal error (ref {ref}). The details are in the hub's log.")]
        return REFUSED


async def _help(ctx: CommandContext, parsed: ParsedCommand[CommandHandler]) -> None:
    prefix = ctx.hub.config.bot.command_prefix
    ctx.reply(
        ctx.hub.commands.help_text(prefix),
        ctx.hub.commands.help_html(prefix),
    )


def register_core_commands(hub: Hub) -> None:
    hub.commands.register(CommandSpec("help", _help, help="List the commands of this bot"))
