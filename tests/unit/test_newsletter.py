"""The newsletter's double opt-in as a pure state machine (hub.consent.newsletter): the two
confirmations, STOP from every state, repeated and contradictory answers, expiry and late
confirmations, the row's columns, the answer words and buttons, who a broadcast reaches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hub.consent.newsletter import (
    OPEN,
    Answer,
    Event,
    Note,
    Outcome,
    Record,
    Say,
    Skip,
    State,
    Words,
    button_id,
    changes,
    classify,
    current,
    decide,
    normalize,
    parse_button,
    question_is_ours,
    skip_reason,
)

NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
LATER = timedelta(minutes=5)  # a second confirmation well after the first
WORDS = Words.of(["ja", "Yes", "OK"], ["stop", "Abmelden", "unsubscribe"])


def run(state: State, *events: tuple[Event, int | None]) -> State:
    for event, step in events:
        state = decide(state, event, step=step, since_first=LATER).state
    return state


# --- the double opt-in ----------------------------------------------------------------------


def test_two_confirmations_opt_in_and_each_step_says_and_records_its_part() -> None:
    asked = decide(State.NONE, Event.REQUEST)
    assert asked == Outcome(State.REQUESTED, Record.REQUEST, Say.FIRST, question=True)
    first = decide(State.REQUESTED, Event.CONFIRM)
    assert first == Outcome(State.CONFIRMED_ONCE, Record.FIRST, Say.SECOND, Note.FIRST, True)
    second = decide(State.CONFIRMED_ONCE, Event.CONFIRM, since_first=LATER)
    assert second == Outcome(State.OPTED_IN, Record.SECOND, Say.WELCOME, Note.OPTED_IN, False)


@pytest.mark.parametrize(
    "steps",
    [(None, None), (1, 2), (1, None), (None, 2)],
    ids=["words", "buttons", "button-then-word", "word-then-button"],
)
def test_buttons_and_words_confirm_alike(steps: tuple[int | None, int | None]) -> None:
    first, second = steps
    state = run(State.NONE, (Event.REQUEST, None), (Event.CONFIRM, first), (Event.CONFIRM, second))
    assert state is State.OPTED_IN


def test_one_confirmation_is_not_an_opt_in() -> None:
    assert run(State.NONE, (Event.REQUEST, None), (Event.CONFIRM, 1)) is State.CONFIRMED_ONCE
    assert skip_reason(State.CONFIRMED_ONCE, "whatsapp") is Skip.NOT_OPTED_IN


# --- STOP -----------------------------------------------------------------------------------


@pytest.mark.parametrize("state", [s for s in State if s is not State.OPTED_OUT])
def test_stop_opts_out_from_every_state_and_is_confirmed(state: State) -> None:
    outcome = decide(state, Event.STOP)
    assert outcome == Outcome(
        State.OPTED_OUT, Record.STOP, Say.STOPPED, Note.STOPPED, question=False
    )


def test_stop_when_opted_out_already_confirms_again_and_keeps_the_first_record() -> None:
    outcome = decide(State.OPTED_OUT, Event.STOP)
    assert outcome.state is State.OPTED_OUT and outcome.record is None
    assert (outcome.say, outcome.note) == (Say.STOPPED, Note.STOPPED_AGAIN)
    assert outcome.taken


def test_a_confirmation_after_stop_does_not_subscribe_and_asks_for_a_new_request() -> None:
    for step in (1, 2, None):
        outcome = decide(State.OPTED_OUT, Event.CONFIRM, step=step)
        assert outcome.state is State.OPTED_OUT and outcome.record is None
        assert (outcome.say, outcome.note) == (Say.ASK_AGAIN, Note.AFTER_STOP)


def test_stop_then_a_new_request_starts_over() -> None:
    state = run(
        State.OPTED_IN,
        (Event.STOP, None),
        (Event.REQUEST, None),
        (Event.CONFIRM, 1),
        (Event.CONFIRM, 2),
    )
    assert state is State.OPTED_IN


# --- repeated and contradictory answers ---------------------------------------------------


def test_a_repeated_button_changes_nothing_and_sends_nothing() -> None:
    # The first question's button tapped again after it was answered, and after the opt-in.
    for state, step in [(State.CONFIRMED_ONCE, 1), (State.OPTED_IN, 1), (State.OPTED_IN, 2)]:
        outcome = decide(state, Event.CONFIRM, step=step)
        assert outcome == Outcome(state)  # taken, nothing recorded, said or noted
        assert outcome.taken


def test_a_second_question_button_while_the_first_is_open_is_no_confirmation() -> None:
    # A button of an earlier round (a request asked again after an expiry).
    assert decide(State.REQUESTED, Event.CONFIRM, step=2) == Outcome(State.REQUESTED)


def test_a_yes_sent_twice_at_once_is_one_confirmation() -> None:
    twice = decide(State.CONFIRMED_ONCE, Event.CONFIRM, since_first=timedelta(seconds=1))
    assert twice == Outcome(State.CONFIRMED_ONCE)
    # The second question's button is never a repeat of the first answer.
    tapped = decide(State.CONFIRMED_ONCE, Event.CONFIRM, step=2, since_first=timedelta(0))
    assert tapped.state is State.OPTED_IN


def test_a_confirmation_without_a_request_is_not_ours() -> None:
    assert not decide(State.NONE, Event.CONFIRM).taken


# --- requests -------------------------------------------------------------------------------


def test_optin_for_a_customer_opted_in_is_refused() -> None:
    outcome = decide(State.OPTED_IN, Event.REQUEST)
    assert outcome.refused and outcome.record is None and outcome.say is None


def test_optin_while_a_request_is_open_asks_the_open_question_again() -> None:
    assert decide(State.REQUESTED, Event.REQUEST) == Outcome(
        State.REQUESTED, Record.RENEW, Say.FIRST, question=True
    )
    assert decide(State.CONFIRMED_ONCE, Event.REQUEST) == Outcome(
        State.CONFIRMED_ONCE, Record.RENEW, Say.SECOND, question=True
    )


@pytest.mark.parametrize("state", [State.NONE, State.EXPIRED, State.OPTED_OUT])
def test_optin_after_an_expiry_or_an_opt_out_is_a_new_request(state: State) -> None:
    assert decide(state, Event.REQUEST).record is Record.REQUEST


# --- expiry ---------------------------------------------------------------------------------


def test_an_open_request_expires_at_its_time_and_nothing_else_does() -> None:
    expires = NOW + timedelta(hours=72)
    for state in OPEN:
        assert current(state, expires, NOW) is state
        assert current(state, expires, expires) is State.EXPIRED
        expired = decide(state, Event.EXPIRE)
        assert (expired.state, expired.record, expired.say) == (State.EXPIRED, Record.EXPIRE, None)
    for state in (State.OPTED_IN, State.OPTED_OUT, State.EXPIRED, State.NONE):
        assert current(state, NOW - timedelta(days=1), NOW) is state
        assert decide(state, Event.EXPIRE).record is None


@pytest.mark.parametrize("step", [1, 2, None])
def test_a_late_confirmation_does_not_count_and_asks_for_a_new_request(step: int | None) -> None:
    outcome = decide(State.EXPIRED, Event.CONFIRM, step=step)
    assert outcome.state is State.EXPIRED and outcome.record is None
    assert (outcome.say, outcome.note, outcome.question) == (Say.ASK_AGAIN, Note.LATE, False)


def test_stop_after_an_expiry_opts_out() -> None:
    assert decide(State.EXPIRED, Event.STOP).state is State.OPTED_OUT


# --- the row's columns ----------------------------------------------------------------------


def test_changes_record_each_step_with_its_time_and_message_id() -> None:
    hours = timedelta(hours=72)
    request = changes(
        decide(State.NONE, Event.REQUEST), NOW, expire_after=hours, requested_by="@a:x", version="2"
    )
    assert request["state"] == "requested" and request["expires_at"] == NOW + hours
    assert request["requested_by"] == "@a:x" and request["text_version"] == "2"
    assert request["first_confirmed_at"] is None and request["confirmed_at"] is None
    assert "opted_out_at" not in request  # an earlier opt-out stays on record
    first = changes(decide(State.REQUESTED, Event.CONFIRM), NOW, expire_after=hours, remote_id="w1")
    assert first == {
        "state": "confirmed_once",
        "updated_at": NOW,
        "first_confirmed_at": NOW,
        "first_confirm_remote_id": "w1",
        "expires_at": NOW + hours,  # the second question gets its own time
    }
    second = changes(
        decide(State.CONFIRMED_ONCE, Event.CONFIRM, since_first=LATER),
        NOW,
        expire_after=hours,
        remote_id="w2",
    )
    assert second["confirmed_at"] == NOW and second["confirm_remote_id"] == "w2"
    stop = changes(decide(State.OPTED_IN, Event.STOP), NOW, expire_after=hours, remote_id="w3")
    assert stop["opted_out_at"] == NOW and stop["opt_out_remote_id"] == "w3"
    assert changes(decide(State.OPTED_IN, Event.CONFIRM, step=1), NOW, expire_after=hours) == {}


# --- words and buttons ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ja", "ja"),
        ("  JA!  ", "ja"),
        ("„Ja“", "ja"),
        ("ja 👍", "ja"),
        ("¡Sí!", "sí"),
        ("Ｊａ", "ja"),  # full width
        ("STRASSE", "strasse"),
        ("Straße", "strasse"),  # case-folded
        ("ABMELDEN.", "abmelden"),
        ("ja, bitte", "ja, bitte"),  # inner punctuation stays: not a bare "ja"
        ("opt   out", "opt out"),
        ("\u200bstop\u200b", "stop"),  # zero-width spaces
        ("", ""),
        ("!!!", ""),
    ],
)
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


def test_words_are_whole_answers_compared_case_folded() -> None:
    assert WORDS.confirm == {"ja", "yes", "ok"}
    assert classify("text", "JA!", None, WORDS) == Answer(Event.CONFIRM)
    assert classify("text", " ok. ", None, WORDS) == Answer(Event.CONFIRM)
    assert classify("text", "Ja, aber erst morgen", None, WORDS) is None
    assert classify("text", "STOP", None, WORDS) == Answer(Event.STOP)
    assert classify("text", "Abmelden!", None, WORDS) == Answer(Event.STOP)
    assert classify("text", "stop the order please", None, WORDS) is None
    assert classify("image", "stop", None, WORDS) is None  # a caption is not an answer
    assert classify("text", None, None, WORDS) is None


def test_stop_wins_over_a_word_that_is_both() -> None:
    both = Words.of(["ok", "stop"], ["stop"])
    assert classify("text", "stop", None, both) == Answer(Event.STOP)


def test_buttons_carry_their_request_and_step() -> None:
    assert button_id(42, 1) == "optin:42:1"
    assert parse_button("optin:42:2") == (42, 2)
    for other in ("optin:42:3", "optin:x:1", "hub.consent.yes.42", "hub.here", None, 7):
        assert parse_button(other) is None
    tap = classify("interactive", "Yes, subscribe", {"id": "optin:42:1"}, WORDS)
    assert tap == Answer(Event.CONFIRM, 42, 1) and not tap.typed
    assert classify("interactive", "Yes", {"id": "hub.consent.yes.42"}, WORDS) is None
    assert classify("interactive", "Later", {"id": "hub.here", "title": "Later"}, WORDS) is None


def test_a_template_quick_reply_named_like_a_stop_word_opts_out() -> None:
    # WhatsApp marketing templates carry their own unsubscribe button.
    tap = {"id": "unsubscribe", "title": "Abmelden"}
    assert classify("interactive", "Abmelden", tap, WORDS) == Answer(Event.STOP)
    tap = {"id": "promo-stop", "title": "STOP"}
    assert classify("interactive", "STOP", tap, WORDS) == Answer(Event.STOP)


def test_a_typed_answer_is_ours_only_while_our_question_is_the_newest() -> None:
    assert question_is_ours({"questions": [{"kind": "optin", "id": 3}]})
    assert question_is_ours({"questions": [{"kind": "optin", "id": 3}]}, 3)
    assert not question_is_ours({"questions": [{"kind": "optin", "id": 3}]}, 4)
    assert not question_is_ours({"questions": [{"kind": "consent", "id": 3}]})
    older = [{"kind": "optin", "id": 3}, {"kind": "consent", "id": 5}]
    assert not question_is_ours({"questions": older})
    assert not question_is_ours({"questions": None})
    assert not question_is_ours({"questions": "junk"})
    assert not question_is_ours(None)


# --- broadcasts -----------------------------------------------------------------------------


def test_a_broadcast_reaches_only_a_completed_opt_in_on_a_channel_with_templates() -> None:
    assert skip_reason(State.OPTED_IN, "whatsapp") is None
    assert skip_reason(State.OPTED_IN, "telegram") is Skip.NO_TEMPLATES
    assert skip_reason(State.OPTED_OUT, "whatsapp") is Skip.OPTED_OUT
    assert skip_reason(State.OPTED_OUT, "webchat") is Skip.OPTED_OUT
    for state in (State.NONE, State.REQUESTED, State.CONFIRMED_ONCE, State.EXPIRED):
        assert skip_reason(state, "whatsapp") is Skip.NOT_OPTED_IN
