"""The one table of Telegram Bot API errors: what advisers read and whether a retry can help.

The Bot API answers every failed call with `{"ok": false, "error_code": N, "description":
"...", "parameters": {"retry_after": s}}` (https://core.telegram.org/bots/api#making-requests).
The docs warn that `error_code` may change, so rows match on the code *and* a fragment of the
description; the first matching row wins, the catch-all rows per code come last.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from hub.errors import BLOCKED, ExternalError
from hub.i18n import N_, _

# Codes the channel acts on: an edit that changes nothing, or a message already gone, is what
# a retried edit or deletion meets when its first attempt went through.
NOT_MODIFIED = "not_modified"
MESSAGE_GONE = "message_gone"


@dataclass(frozen=True)
class ErrorRow:
    status: int | None  # the Bot API's error_code; None matches any
    fragment: str | None  # lower-case part of the description; None matches any
    code: str  # our short machine code (ExternalError.code)
    human: str  # shown to advisers (an English msgid); "{description}" is Telegram's text
    permanent: bool


ERRORS: tuple[ErrorRow, ...] = (
    ErrorRow(
        403,
        "bot was blocked by the user",
        BLOCKED,
        N_(
            "The customer has blocked the shop's Telegram bot, so nothing can reach them until "
            "they unblock it (Restart in the bot's chat)."
        ),
        True,
    ),
    ErrorRow(
        403,
        "user is deactivated",
        "deactivated",
        N_("The customer's Telegram account has been deleted."),
        True,
    ),
    ErrorRow(
        403,
        "can't initiate conversation",
        "not_started",
        N_("The customer has never started a chat with the shop's Telegram bot."),
        True,
    ),
    ErrorRow(403, None, "forbidden", N_("Telegram refused: {description}"), True),
    ErrorRow(
        400,
        "chat not found",
        "chat_not_found",
        N_("Telegram does not know this chat any more (the customer may have deleted it)."),
        True,
    ),
    ErrorRow(
        400,
        "can't parse entities",
        "bad_formatting",
        N_("Telegram could not read the message's formatting: {description}"),
        True,
    ),
    ErrorRow(
        400,
        "message is too long",
        "too_long",
        N_("The message is too long for Telegram."),
        True,
    ),
    ErrorRow(
        400,
        "file is too big",
        "file_too_big",
        N_("The file is too big for the Telegram Bot API (downloads up to 20 MB)."),
        True,
    ),
    ErrorRow(
        400,
        "invalid file_id",
        "bad_file",
        N_("Telegram no longer has this file."),
        True,
    ),
    ErrorRow(
        400,
        "wrong file identifier",
        "bad_file",
        N_("Telegram no longer has this file."),
        True,
    ),
    ErrorRow(
        400,
        "reaction_invalid",
        "reaction_invalid",
        N_("Telegram does not allow this emoji as a reaction."),
        True,
    ),
    # Edits and deletions of the bot's messages (channel.edit, channel.delete).
    ErrorRow(400, "message is not modified", NOT_MODIFIED, N_("The message is unchanged."), True),
    ErrorRow(
        400,
        "message to edit not found",
        MESSAGE_GONE,
        N_("The message is no longer in the customer's Telegram chat."),
        True,
    ),
    ErrorRow(
        400,
        "message to delete not found",
        MESSAGE_GONE,
        N_("The message is no longer in the customer's Telegram chat."),
        True,
    ),
    ErrorRow(
        400,
        "message can't be deleted",
        "too_old",
        N_("Telegram lets a bot delete its messages only within 48 hours of sending them."),
        True,
    ),
    ErrorRow(
        400,
        "message can't be edited",
        "cannot_edit",
        N_("Telegram does not let the bot edit this message."),
        True,
    ),
    ErrorRow(400, None, "bad_request", N_("Telegram refused the message: {description}"), True),
    ErrorRow(
        401,
        None,
        "unauthorized",
        N_("Telegram rejects the bot token (check channels.telegram.bot_token)."),
        True,
    ),
    ErrorRow(
        404,
        None,
        "not_found",
        N_(
            "Telegram does not know this bot token or method (check channels.telegram.bot_token "
            "and api_base_url)."
        ),
        True,
    ),
    ErrorRow(
        409,
        None,
        "conflict",
        N_("Telegram reports a conflict: {description}"),
        True,
    ),
    ErrorRow(
        429,
        None,
        "rate_limited",
        N_("Telegram asks the shop to slow down; the message will be sent shortly."),
        False,
    ),
)

_RETRY_AFTER_TEXT = re.compile(r"retry after (\d+)", re.IGNORECASE)


def _retry_after(doc: dict[str, Any]) -> float | None:
    params = doc.get("parameters")
    if isinstance(params, dict) and isinstance(params.get("retry_after"), int | float):
        return float(params["retry_after"])
    # The description repeats it ("Too Many Requests: retry after 5"); use it if the
    # parameters object is missing.
    match = _RETRY_AFTER_TEXT.search(str(doc.get("description") or ""))
    return float(match.group(1)) if match else None


def classify(http_status: int, doc: dict[str, Any] | None) -> ExternalError:
    """The ExternalError for a failed Bot API call (`doc` the JSON body, if there was one)."""
    doc = doc or {}
    raw_code = doc.get("error_code")
    status = raw_code if isinstance(raw_code, int) else http_status
    description = str(doc.get("description") or f"HTTP {http_status}")
    lowered = description.lower()
    retry_after = _retry_after(doc)
    for row in ERRORS:
        if row.status is not None and row.status != status:
            continue
        if row.fragment is not None and row.fragment not in lowered:
            continue
        return ExternalError(
            _(row.human).format(description=description),
            permanent=row.permanent,
            retry_after=retry_after if status == 429 else None,
            code=row.code,
        )
    if status >= 500 or status in (420, 408):
        # Telegram's servers are struggling (5xx) or a flood wait (420): try again later.
        return ExternalError(
            _("Telegram is not available right now ({description}); will retry.").format(
                description=description
            ),
            permanent=False,
            retry_after=retry_after,
            code="unavailable",
        )
    return ExternalError(
        _("Telegram refused the request: {description}").format(description=description),
        permanent=True,
        code="refused",
    )


def network_error(kind: str) -> ExternalError:
    """No answer at all (connection refused, timeout): always worth another try later.
    `kind` never holds a URL (it would carry the bot token)."""
    return ExternalError(
        _("Telegram could not be reached ({reason}); will retry.").format(reason=kind),
        permanent=False,
        code="unreachable",
    )
