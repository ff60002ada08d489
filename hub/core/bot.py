"""Running advisers' commands: permission, ✅/⛔ feedback, replies as room notices.

Command handlers are plain functions `(ctx, parsed) -> None` running inside the unit of work
that completes the Matrix event's job, in a savepoint: a UserError rolls back the handler's
own writes but keeps the ⛔ reply. Handlers do database work only; anything slow or external
is queued as a job.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hub.core.commands import (
    ArgumentError,
    CommandRegistry,
    CommandSpec,
    ParsedCommand,
    UnknownCommand,
)
from hub.db import notices
from hub.errors import UserError, error_ref
from hub.i18n import N_, _

if TYPE_CHECKING:
    from hub.db.database import Tx
    from hub.db.models import Conversation

log = logging.getLogger(__name__)

OK, REFUSED = "✅", "⛔"


@dataclass(frozen=True)
class Reply:
    text: str
    html: str | None = None


@dataclass
class CommandContext:
    tx: Tx
    room_id: str
    event_id: str
    sender: str
    conversation: Conversation | None
    replies: list[Reply] = field(default_factory=list)
    # The event the command replies to (a Matrix reply), e.g. the image of `!consent`.
    reply_to: str | None = None

    def reply(self, text: str, html: str | None = None) -> None:
        self.replies.append(Reply(text, html))

    def customer_conversation(self) -> Conversation:
        """The conversation of the customer's room the command runs in; ⛔ elsewhere."""
        if self.conversation is None:
            raise UserError(_("This command works in a customer's room only."))
        return self.conversation


CommandHandler = Callable[[CommandContext, ParsedCommand[Any]], None]
Parsed = ParsedCommand[CommandHandler] | UnknownCommand | ArgumentError[CommandHandler]


class CommandRunner:
    """Runs parsed commands for the shop's advisers; everyone else is refused."""

    def __init__(self, registry: CommandRegistry[CommandHandler], advisers: list[str]) -> None:
        self.registry = registry
        self.advisers = frozenset(advisers)

    def run(self, ctx: CommandContext, result: Parsed) -> None:
        """Execute a parsed command (or report why it cannot run) in ctx.tx."""
        if ctx.sender not in self.advisers:
            log.info("command refused in %s: %s is not an adviser", ctx.room_id, ctx.sender)
            outcome = REFUSED
            ctx.replies = [Reply(_("Only the shop's advisers can run commands."))]
        elif isinstance(result, UnknownCommand | ArgumentError):
            outcome = REFUSED
            ctx.replies = [Reply(result.message)]
        else:
            outcome = self._execute(ctx, result)
        notices.reaction(ctx.tx, ctx.room_id, ctx.event_id, outcome)
        for n, reply in enumerate(ctx.replies):
            notices.notice(
                ctx.tx,
                ctx.room_id,
                reply.text,
                f"reply:{ctx.event_id}:{n}",
                reply.html,
                ctx.event_id,
            )

    @staticmethod
    def _execute(ctx: CommandContext, parsed: ParsedCommand[CommandHandler]) -> str:
        spec: CommandSpec[CommandHandler] = parsed.spec
        try:
            with ctx.tx.savepoint():
                spec.handler(ctx, parsed)
            return OK
        except UserError as exc:
            ctx.replies = [Reply(str(exc))]
            return REFUSED
        except Exception:
            ref = error_ref()
            log.exception("command %r failed in %s (ref %s)", spec.name, ctx.room_id, ref)
            text = _("Internal error (ref {ref}). The details are in the hub's log.")
            ctx.replies = [Reply(text.format(ref=ref))]
            return REFUSED


def notes_line(prefix: str, threads: bool) -> str:
    """The help's line about private notes (`notes` in the config)."""
    if threads:
        # TRANSLATORS: {prefix} is what starts a note, e.g. //
        text = _(
            "Private notes: a message starting with {prefix}, or written in a thread, stays "
            "in Matrix and never reaches the customer (commands work in threads too)."
        )
    else:
        # TRANSLATORS: {prefix} is what starts a note, e.g. //
        text = _(
            "Private notes: a message starting with {prefix} stays in Matrix and never "
            "reaches the customer."
        )
    return text.format(prefix=prefix)


def help_command(
    registry: CommandRegistry[CommandHandler],
    prefix: str,
    *,
    notes_prefix: str | None = None,
    notes_threads: bool = False,
) -> CommandSpec[CommandHandler]:
    """`!help`; with `notes_prefix`, its last line says how to write a private note (advisers
    who do not know would either not dare to discuss a case in its room or, worse, think a
    note stays private when it does not)."""

    def show_help(ctx: CommandContext, parsed: ParsedCommand[Any]) -> None:
        text, html_ = registry.help_text(prefix), registry.help_html(prefix)
        line = notes_line(notes_prefix, notes_threads) if notes_prefix else None
        if line:
            text += "\n\n" + line
            html_ += f"<p>{html.escape(line)}</p>"
        ctx.reply(text, html_)

    return CommandSpec("help", show_help, help=N_("List the commands of this bot"))
