"""The newsletter's double opt-in as a pure state machine, the customer's answers (reply
buttons and words) and who a broadcast may reach.

    none ─request─► requested ─confirm─► confirmed_once ─confirm─► opted_in
                      │  ▲                   │                        │
                      │  └──────request──────┼── expired ◄─expire─────┤ (open requests only)
                      └──────────────────────┴────────────────────────┴─stop─► opted_out

- `!optin` (REQUEST) asks the first question; an open request asked again re-sends the open
  question (first or second) with a fresh expiry; a customer who is opted in is refused.
  After an expiry or an opt-out it starts over.
- CONFIRM counts only for the question that is open: the first moves to confirmed_once (the
  second question is asked, with a fresh expiry), the second to opted_in. A tap on a button
  of a question already answered, or a second "yes" within `REPEAT_WITHIN` of the first (a
  double-sent message), is a repeat: taken, nothing changes, nothing is sent.
- EXPIRE is applied lazily (`current`): an open request whose expiry has passed is expired
  the moment anything looks at it. A confirmation of an expired request does not count: the
  customer is asked to request again, the room is told (`!optin` starts over).
- STOP opts out from every state, without an earlier opt-in too, and wins over any later
  tap of an old confirm button (the customer is asked to request again).

Words are compared case-folded (NFKC), without surrounding blanks, punctuation or symbols:
"Ja!", " JA ", "„ja“", "Ｊａ" all are "ja". No I/O here: hub.consent.newsletter_flow applies
the outcomes in a unit of work.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from hub.consent import questions

BUTTON_PREFIX = "optin"
QUESTION_KIND = "optin"  # conversation.meta["question"]["kind"] while our question is open
# A second "yes" this soon after the first is the same answer sent twice, not a confirmation.
REPEAT_WITHIN = timedelta(seconds=3)
TEMPLATE_CHANNELS = frozenset({"whatsapp"})  # channels that carry approved templates


class State(StrEnum):
    NONE = "none"  # never asked (no row)
    REQUESTED = "requested"
    CONFIRMED_ONCE = "confirmed_once"
    OPTED_IN = "opted_in"
    OPTED_OUT = "opted_out"
    EXPIRED = "expired"


OPEN = frozenset({State.REQUESTED, State.CONFIRMED_ONCE})


class Event(StrEnum):
    REQUEST = "request"  # an adviser's !optin
    CONFIRM = "confirm"  # the customer's yes: a button (with its step) or a confirm word
    STOP = "stop"  # a stop word, at any time
    EXPIRE = "expire"  # the open request's time ran out


class Say(StrEnum):
    """What the customer is sent."""

    FIRST = "first"  # the opt-in request: business, purpose, button 1, the words
    SECOND = "second"  # the second question, button 2
    WELCOME = "welcome"  # subscribed
    STOPPED = "stopped"  # unsubscribed
    ASK_AGAIN = "ask_again"  # this request is no longer valid: ask us for a new one


class Note(StrEnum):
    """What the room is told (the adviser's own !optin is answered by the command)."""

    FIRST = "first"  # confirmed once, second question asked
    OPTED_IN = "opted_in"
    STOPPED = "stopped"
    STOPPED_AGAIN = "stopped_again"  # a stop word from a customer opted out already
    LATE = "late"  # a confirmation after the expiry
    AFTER_STOP = "after_stop"  # an old confirm button tapped after an opt-out


class Record(StrEnum):
    """What the row stores (see `changes`)."""

    REQUEST = "request"  # a new request: confirmations reset
    RENEW = "renew"  # the open request asked again: a fresh expiry
    FIRST = "first"
    SECOND = "second"
    STOP = "stop"
    EXPIRE = "expire"


@dataclass(frozen=True)
class Outcome:
    state: State  # after the event
    record: Record | None = None
    say: Say | None = None
    note: Note | None = None
    # Our question in the conversation's meta: True opens (or keeps) it, False clears it.
    question: bool | None = None
    taken: bool = True  # the message was an answer to the bot (automatic replies skip it)
    refused: bool = False  # REQUEST for a customer opted in already


def current(state: State, expires_at: datetime | None, now: datetime) -> State:
    """The state with an expiry applied: an open request past its time is expired."""
    if state in OPEN and expires_at is not None and now >= expires_at:
        return State.EXPIRED
    return state


def decide(
    state: State,
    event: Event,
    *,
    step: int | None = None,
    since_first: timedelta | None = None,
) -> Outcome:
    """What `event` does in `state` (expiry applied first, see `current`). `step`: the
    question a button answered (1 or 2; None for a typed word); `since_first`: how long
    after the first confirmation this one came."""
    if event is Event.EXPIRE:
        if state in OPEN:
            # The question stays: a late "yes" is still answered (see Note.LATE).
            return Outcome(State.EXPIRED, Record.EXPIRE)
        return Outcome(state, taken=False)
    if event is Event.STOP:
        if state is State.OPTED_OUT:
            return Outcome(state, None, Say.STOPPED, Note.STOPPED_AGAIN, question=False)
        return Outcome(State.OPTED_OUT, Record.STOP, Say.STOPPED, Note.STOPPED, question=False)
    if event is Event.REQUEST:
        return _request(state)
    return _confirm(state, step, since_first)


def _request(state: State) -> Outcome:
    if state is State.OPTED_IN:
        return Outcome(state, refused=True, taken=False)
    if state is State.REQUESTED:
        return Outcome(state, Record.RENEW, Say.FIRST, question=True)
    if state is State.CONFIRMED_ONCE:
        return Outcome(state, Record.RENEW, Say.SECOND, question=True)
    return Outcome(State.REQUESTED, Record.REQUEST, Say.FIRST, question=True)


def _confirm(state: State, step: int | None, since_first: timedelta | None) -> Outcome:
    if state is State.NONE:
        return Outcome(state, taken=False)
    if state is State.REQUESTED and step in (None, 1):
        return Outcome(State.CONFIRMED_ONCE, Record.FIRST, Say.SECOND, Note.FIRST, question=True)
    if state is State.CONFIRMED_ONCE and step in (None, 2):
        if step is None and since_first is not None and since_first < REPEAT_WITHIN:
            return Outcome(state)  # the first "yes" sent twice
        return Outcome(State.OPTED_IN, Record.SECOND, Say.WELCOME, Note.OPTED_IN, question=False)
    if state is State.EXPIRED:
        return Outcome(state, None, Say.ASK_AGAIN, Note.LATE, question=False)
    if state is State.OPTED_OUT:
        return Outcome(state, None, Say.ASK_AGAIN, Note.AFTER_STOP, question=False)
    # A button of a question answered before (or of an earlier round): a repeat.
    return Outcome(state)


def changes(
    outcome: Outcome,
    now: datetime,
    *,
    expire_after: timedelta,
    remote_id: str | None = None,
    requested_by: str | None = None,
    version: str | None = None,
) -> dict[str, Any]:
    """The columns of the customer's row that `outcome` sets (hub.db.models.NewsletterOptin).
    An earlier opt-out's time stays on a new request: it is the record of that opt-out."""
    record = outcome.record
    if record is None:
        return {}
    values: dict[str, Any] = {"state": outcome.state.value, "updated_at": now}
    if record is Record.REQUEST:
        values |= {
            "requested_at": now,
            "requested_by": requested_by,
            "text_version": version,
            "expires_at": now + expire_after,
            "first_confirmed_at": None,
            "first_confirm_remote_id": None,
            "confirmed_at": None,
            "confirm_remote_id": None,
        }
    elif record is Record.RENEW:
        values |= {"expires_at": now + expire_after, "requested_by": requested_by}
        if version is not None:
            values["text_version"] = version
    elif record is Record.FIRST:
        values |= {
            "first_confirmed_at": now,
            "first_confirm_remote_id": remote_id,
            "expires_at": now + expire_after,  # the second question gets its own time
        }
    elif record is Record.SECOND:
        values |= {"confirmed_at": now, "confirm_remote_id": remote_id}
    elif record is Record.STOP:
        values |= {"opted_out_at": now, "opt_out_remote_id": remote_id}
    return values


# -- the customer's answers -----------------------------------------------------------------


def _edge(ch: str) -> bool:
    """Stripped from both ends of an answer: blanks, punctuation, symbols (emoji), controls."""
    return unicodedata.category(ch)[0] in "PZSC"


def normalize(text: str) -> str:
    """An answer as it is compared: NFKC, case-folded, inner blanks single, without blanks,
    punctuation and symbols around it."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    start, end = 0, len(folded)
    while start < end and _edge(folded[start]):
        start += 1
    while end > start and _edge(folded[end - 1]):
        end -= 1
    return " ".join(folded[start:end].split())


@dataclass(frozen=True)
class Words:
    confirm: frozenset[str]
    stop: frozenset[str]

    @classmethod
    def of(cls, confirm: Iterable[str], stop: Iterable[str]) -> Words:
        return cls(
            frozenset(w for w in map(normalize, confirm) if w),
            frozenset(w for w in map(normalize, stop) if w),
        )


def button_id(row_id: int, step: int) -> str:
    """The id of a reply button: the request's row and the question (1 or 2)."""
    return f"{BUTTON_PREFIX}:{row_id}:{step}"


_BUTTON = re.compile(rf"^{BUTTON_PREFIX}:(\d+):([12])$")


def parse_button(value: object) -> tuple[int, int] | None:
    """(row id, step) of one of our buttons' ids, None for anything else."""
    found = _BUTTON.match(value) if isinstance(value, str) else None
    return (int(found[1]), int(found[2])) if found else None


@dataclass(frozen=True)
class Answer:
    event: Event  # CONFIRM or STOP
    row_id: int | None = None  # a button's request (None: a typed word)
    step: int | None = None  # the button's question (None: a typed word)

    @property
    def typed(self) -> bool:
        return self.row_id is None


def classify(
    kind: str, text: str | None, data: Mapping[str, Any] | None, words: Words
) -> Answer | None:
    """What a customer's message says to the opt-in: a tap on one of our buttons, a stop
    word (typed, or a button's title or payload), a confirm word (taken only while our
    question is the conversation's newest), or nothing (None). Stop words win over confirm
    words."""
    if kind == "interactive":
        button = data or {}
        parsed = parse_button(button.get("id"))
        if parsed is not None:
            return Answer(Event.CONFIRM, *parsed)
        # A quick-reply button of a template (the newsletter's own "Abmelden").
        labels = (normalize(str(button.get(k) or "")) for k in ("id", "title"))
        return Answer(Event.STOP) if any(w in words.stop for w in labels) else None
    if kind != "text" or not text:
        return None
    said = normalize(text)
    if said in words.stop:
        return Answer(Event.STOP)
    if said in words.confirm:
        return Answer(Event.CONFIRM)
    return None


def question_is_ours(meta: Mapping[str, Any] | None, row_id: int | None = None) -> bool:
    """The conversation's newest open question is the opt-in's (of row `row_id`, if given)."""
    return questions.is_newest(meta, QUESTION_KIND, row_id)


# -- broadcasts -----------------------------------------------------------------------------


class Skip(StrEnum):
    """Why a broadcast passes a customer by."""

    NOT_OPTED_IN = "not_opted_in"  # never asked, or the double opt-in is not complete
    OPTED_OUT = "opted_out"
    NO_TEMPLATES = "no_templates"  # opted in on a channel that cannot carry templates


def skip_reason(state: State, channel: str) -> Skip | None:
    """None: a broadcast template goes to this customer (a completed double opt-in, no
    opt-out since, on a channel with templates)."""
    if state is State.OPTED_OUT:
        return Skip.OPTED_OUT
    if state is not State.OPTED_IN:
        return Skip.NOT_OPTED_IN
    if channel not in TEMPLATE_CHANNELS:
        return Skip.NO_TEMPLATES
    return None
