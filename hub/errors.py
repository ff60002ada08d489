"""Errors: what a human can act on (shown as is) versus internal failures (logged with a ref)."""

from __future__ import annotations

import secrets


class StartupError(Exception):
    """The hub cannot start; the message says why and what to do (printed, no traceback)."""


class UserError(Exception):
    """A mistake an adviser can fix; the text is shown in the room after ⛔."""


def error_ref() -> str:
    """A short reference printed to the room and to the log so the two can be matched."""
    return secrets.token_hex(4)
