"""Photo consent as a state machine, free of I/O: what a customer's answer (or an adviser's
revocation) does to a request, and which words answer it.

A request covers one or more of the customer's images. It starts `pending`; the customer's
Yes makes it `granted`, No `refused`; a later revocation (by the customer's words or an
adviser's `!consent revoke`) makes a granted or pending request `revoked`. Refused and revoked
requests delete their images everywhere the hub put them. An answer after `expires_at` still
counts and is recorded as late. Nothing turns a refusal or a revocation back into consent:
the images are gone, a new Yes would cover nothing.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal

# Button ids: "hub.consent.yes.<request id>"; the id makes a tap unambiguous.
BUTTON_PREFIX = "hub.consent."

Answer = Literal["yes", "no"]


class State(StrEnum):
    PENDING = "pending"
    GRANTED = "granted"
    REFUSED = "refused"
    REVOKED = "revoked"


@dataclass(frozen=True)
class Outcome:
    """What an event does to a request: its new state, whether its images must now be deleted,
    and what happened, for the room's notice (`changed` False: nothing to record)."""

    state: State
    changed: bool
    delete_images: bool = False
    late: bool = False
    # granted | refused | revoked | repeated | too_late_to_grant | already_revoked
    what: str = "repeated"


def answer(state: State, given: Answer, expires_at: datetime, now: datetime) -> Outcome:
    """The customer answered a request (by button or word)."""
    late = now > expires_at
    if state is State.PENDING:
        if given == "yes":
            return Outcome(State.GRANTED, True, late=late, what="granted")
        return Outcome(State.REFUSED, True, delete_images=True, late=late, what="refused")
    if state is State.GRANTED:
        if given == "yes":
            return Outcome(state, False)
        # A No after a Yes to the same question is a change of mind: a revocation.
        return Outcome(State.REVOKED, True, delete_images=True, what="revoked")
    if state is State.REFUSED:
        if given == "no":
            return Outcome(state, False)
        return Outcome(state, False, what="too_late_to_grant")
    return Outcome(state, False, what="already_revoked")


def revoke(state: State) -> Outcome:
    """The customer (by word) or an adviser withdraws the consent of a request."""
    if state in (State.PENDING, State.GRANTED):
        return Outcome(State.REVOKED, True, delete_images=True, what="revoked")
    return Outcome(state, False, what="already_revoked")


def normalise(text: str) -> str:
    """A short answer as compared with the configured words: NFKC, case-folded, without
    surrounding blanks, punctuation and emoji ("Ja!", " JA 👍" → "ja")."""
    text = unicodedata.normalize("NFKC", text).casefold().strip()
    return re.sub(r"^[\W_]+|[\W_]+$", "", text)


def word_answer(
    text: str | None, yes_words: Iterable[str], no_words: Iterable[str]
) -> Answer | None:
    """Yes or No when the whole message is one of the words; None otherwise."""
    if not text or len(text) > 64:
        return None
    word = normalise(text)
    if word in yes_words:
        return "yes"
    if word in no_words:
        return "no"
    return None


def is_revocation(text: str | None, revoke_words: Iterable[str]) -> bool:
    return bool(text) and len(text or "") <= 64 and normalise(text or "") in revoke_words


def button_id(given: Answer, request_id: int) -> str:
    return f"{BUTTON_PREFIX}{given}.{request_id}"


def button_answer(button: str | None) -> tuple[Answer, int] | None:
    """(answer, request id) of one of our buttons; None for anything else."""
    if not button or not button.startswith(BUTTON_PREFIX):
        return None
    given, _, number = button[len(BUTTON_PREFIX) :].partition(".")
    if given not in ("yes", "no") or not (number.isascii() and number.isdigit()):
        return None
    if len(number) > 18:
        return None
    return ("yes" if given == "yes" else "no"), int(number)
