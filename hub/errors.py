"""Errors: what a human can act on (shown as is) versus internal failures (logged with a ref).

Pure: every error table of the edges (messengers, payment providers, the homeserver) builds
an `ExternalError`, and the job queue decides between retry and dead letter from it alone,
without importing any edge.
"""

from __future__ import annotations

import secrets

# ExternalError.code values the core reacts to, whatever the channel.
BLOCKED = "blocked"  # the customer blocked the shop: the conversation is marked so
WINDOW_CLOSED = "window_closed"  # the channel's reply window has closed: a template is needed


class StartupError(Exception):
    """The hub cannot start; the message says why and what to do (printed, no traceback)."""


class UserError(Exception):
    """A mistake an adviser can fix; the text is shown in the room after ⛔."""


class ExternalError(Exception):
    """Another system refused or failed a request: a messenger's API, a payment provider, the
    homeserver. `human` is shown to advisers (never a secret); `permanent` decides between
    the job queue's retry and a dead letter; `retry_after` (seconds) overrides the backoff;
    `code` is the machine-readable reason (a provider code, or BLOCKED / WINDOW_CLOSED);
    `detail` goes to the log only."""

    def __init__(
        self,
        human: str,
        *,
        permanent: bool,
        retry_after: float | None = None,
        code: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(human)
        self.human = human
        self.permanent = permanent
        self.retry_after = retry_after
        self.code = code
        self.detail = detail or human


def error_ref() -> str:
    """A short reference printed to the room and to the log so the two can be matched."""
    return secrets.token_hex(4)
