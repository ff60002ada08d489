"""Adviser commands of the WhatsApp channel: `!template NAME [PARAMS...]` and `!templates`.

Outside the 24-hour customer service window WhatsApp only delivers approved templates, so
advisers need a way to send one from the room. Handlers only write to the database (the
message row and its channel.send job); the job queue sends it.
"""

from __future__ import annotations

import re
from typing import Any

from hub.config import WhatsappTemplate
from hub.core.bot import CommandContext, CommandHandler
from hub.core.commands import CommandSpec, ParsedCommand, QuoteError, RestArg, WordArg, tokenize
from hub.db import outbound
from hub.db.conversations import conversation_with_identity
from hub.errors import UserError
from hub.i18n import N_, _, ngettext

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
        return _("[Template {name}]").format(name=template.name) + f" {body}"
    shown = ", ".join(params)
    return _("[Template {name}]").format(name=template.name) + (f" {shown}" if shown else "")


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
        raise UserError(_("Parameters: {error}").format(error=exc)) from None


class WhatsappCommands:
    def __init__(self, templates: list[WhatsappTemplate], prefix: str) -> None:
        self.templates = {t.name: t for t in templates}
        self.prefix = prefix

    def specs(self) -> list[CommandSpec[CommandHandler]]:
        return [
            CommandSpec(
                "template",
                self.template,
                args=(WordArg("name"), RestArg("params", optional=True)),
                help=N_("Send an approved WhatsApp template (also outside the 24-hour window)"),
            ),
            CommandSpec(
                "templates", self.listing, help=N_("List the configured WhatsApp templates")
            ),
        ]

    def _listing(self) -> str:
        if not self.templates:
            return _(
                "No templates are configured (channels.whatsapp.templates in the hub's config)."
            )
        lines = [_("WhatsApp templates:")]
        for t in self.templates.values():
            about = f" — {t.description}" if t.description else ""
            lines.append(f"• {template_usage(self.prefix, t)} ({t.language}){about}")
        return "\n".join(lines)

    def template(self, ctx: CommandContext, parsed: ParsedCommand[Any]) -> None:
        if ctx.conversation is None:
            raise UserError(_("!template works only in a customer's WhatsApp conversation room."))
        identity = conversation_with_identity(ctx.tx, ctx.conversation.id)[1]
        if identity.channel != KIND:
            raise UserError(_("!template is only for WhatsApp conversations."))
        name = parsed.value("name", str)
        template = self.templates.get(name)
        if template is None:
            raise UserError(
                _("No template named '{name}'.").format(name=name) + " " + self._listing()
            )
        params = split_params(parsed.optional_value("params", str), template)
        if len(params) != template.params:
            usage = template_usage(self.prefix, template)
            text = ngettext(
                "Template {name} takes {n} parameter, not {given} — usage: {usage} (quote a "
                'parameter with spaces: "Anna Müller")',
                "Template {name} takes {n} parameters, not {given} — usage: {usage} (quote a "
                'parameter with spaces: "Anna Müller")',
                template.params,
            )
            raise UserError(
                text.format(name=name, n=template.params, given=len(params), usage=usage)
            )
        preview = render_preview(template, params)
        outbound.queue(
            ctx.tx,
            ctx.conversation.id,
            KIND,
            {
                "kind": "template",
                "data": {"name": template.name, "language": template.language, "params": params},
                "text": preview,
                "sender_mxid": ctx.sender,
                # The command event stands for the message: a re-run of the event is a
                # no-op, and a delivery failure is shown as a reply to it.
                "matrix_event_id": ctx.event_id,
            },
        )
        ctx.reply(
            _("Template {name} queued for the customer: {preview}").format(
                name=template.name, preview=preview
            )
        )

    def listing(self, ctx: CommandContext, parsed: ParsedCommand[Any]) -> None:
        ctx.reply(self._listing())
