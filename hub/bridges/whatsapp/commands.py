"""Adviser commands of the WhatsApp channel: `!template NAME [PARAMS...]` and `!templates`.

Outside the 24-hour customer service window WhatsApp only delivers approved templates, so
advisers need a way to send one from the room. Handlers only write to the database (the
message row and its outbox job); the outbox sends it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from hub.config import WhatsappTemplate
from hub.core.bot import CommandContext
from hub.core.commands import CommandSpec, ParsedCommand, QuoteError, RestArg, WordArg, tokenize
from hub.core.router import queue_outbound
from hub.db import repo
from hub.errors import UserError

if TYPE_CHECKING:
    from hub.hub import Hub

KIND = "whatsapp"
_PLACEHOLDER = re.compile(r"\{\{\s*(\d+)\s*\}\}")


def template_usage(prefix: str, template: WhatsappTemplate) -> str:
    params = " ".join(f"P{n}" for n in range(1, template.params + 1))
    return f"{prefix}template {template.name}" + (f" {params}" if params else "")


def render_preview(template: WhatsappTemplate, params: list[str]) -> str:
    """What the advisers see in the message history: the description with {{n}} filled in
    (Meta holds the real template text), else the name and parameters."""
    if template.description:

        def fill(match: re.Match[str]) -> str:
            n = int(match.group(1))
            return params[n - 1] if 1 <= n <= len(params) else match.group(0)

        body = _PLACEHOLDER.sub(fill, template.description)
        return f"[Template {template.name}] {body}"
    shown = ", ".join(params)
    return f"[Template {template.name}]" + (f" {shown}" if shown else "")


def split_params(raw: str | None, template: WhatsappTemplate) -> list[str]:
    """The parameters as typed; a template with one parameter takes the whole rest, so
    "!template greeting Anna Müller" needs no quotes."""
    if not raw:
        return []
    if template.params == 1:
        return [raw.strip()]
    try:
        return tokenize(raw.replace("\n", " "))
    except QuoteError as exc:
        raise UserError(f"Parameters: {exc}") from None


def _configured(ctx: CommandContext) -> dict[str, WhatsappTemplate]:
    return {t.name: t for t in ctx.hub.config.channels.whatsapp.templates}


def _listing(ctx: CommandContext) -> str:
    prefix = ctx.hub.config.bot.command_prefix
    templates = ctx.hub.config.channels.whatsapp.templates
    if not templates:
        return "No templates are configured (channels.whatsapp.templates in the hub's config)."
    lines = ["WhatsApp templates:"]
    for t in templates:
        about = f" — {t.description}" if t.description else ""
        lines.append(f"• {template_usage(prefix, t)} ({t.language}){about}")
    return "\n".join(lines)


async def _template(ctx: CommandContext, parsed: ParsedCommand[Any]) -> None:
    if ctx.conversation is None:
        raise UserError("!template works only in a customer's WhatsApp conversation room.")
    conversation, identity = await repo.conversation_with_identity(ctx.session, ctx.conversation.id)
    if identity.channel != KIND:
        raise UserError("!template is only for WhatsApp conversations.")
    name = parsed.value("name", str)
    template = _configured(ctx).get(name)
    if template is None:
        raise UserError(f"No template named {name!r}. {_listing(ctx)}")
    params = split_params(parsed.optional_value("params", str), template)
    if len(params) != template.params:
        usage = template_usage(ctx.hub.config.bot.command_prefix, template)
        raise UserError(
            f"Template {name} takes {template.params} parameter(s), not {len(params)} — "
            f'usage: {usage} (quote a parameter with spaces: "Anna Müller")'
        )
    preview = render_preview(template, params)
    await queue_outbound(
        ctx.session,
        conversation,
        KIND,
        {
            "kind": "template",
            "data": {"name": template.name, "language": template.language, "params": params},
            "text": preview,
            "sender_mxid": ctx.sender,
            # The command event stands for the message: a re-run of the event is a no-op,
            # and a delivery failure is shown as a reply to it.
            "matrix_event_id": ctx.event_id,
        },
    )
    ctx.reply(f"Template {template.name} queued for the customer: {preview}")


async def _templates(ctx: CommandContext, parsed: ParsedCommand[Any]) -> None:
    ctx.reply(_listing(ctx))


def register_commands(hub: Hub) -> None:
    hub.commands.register(
        CommandSpec(
            "template",
            _template,
            args=(WordArg("name"), RestArg("params", optional=True)),
            help="Send an approved WhatsApp template (also outside the 24-hour window)",
        )
    )
    hub.commands.register(
        CommandSpec("templates", _templates, help="List the configured WhatsApp templates")
    )
