"""The photo-consent state machine and answer words (hub.consent.photo): pure, with the
clock passed in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hub.consent.photo import (
    State,
    answer,
    button_answer,
    button_id,
    is_revocation,
    normalise,
    revoke,
    word_answer,
)

ASKED = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
EXPIRES = ASKED + timedelta(hours=72)
YES, NO, REVOKE = ["ja", "yes", "ok"], ["nein", "no"], ["widerrufen", "revoke"]


def test_yes_grants_and_no_refuses_with_deletion() -> None:
    granted = answer(State.PENDING, "yes", EXPIRES, ASKED + timedelta(minutes=5))
    assert (granted.state, granted.changed, granted.delete_images, granted.late) == (
        State.GRANTED,
        True,
        False,
        False,
    )
    refused = answer(State.PENDING, "no", EXPIRES, ASKED + timedelta(minutes=5))
    assert (refused.state, refused.delete_images, refused.what) == (
        State.REFUSED,
        True,
        "refused",
    )


def test_a_late_answer_still_counts_and_is_marked_late() -> None:
    late = answer(State.PENDING, "yes", EXPIRES, EXPIRES + timedelta(seconds=1))
    assert (late.state, late.late) == (State.GRANTED, True)
    on_time = answer(State.PENDING, "no", EXPIRES, EXPIRES)
    assert (on_time.state, on_time.late) == (State.REFUSED, False)


def test_repeated_answers_change_nothing() -> None:
    assert not answer(State.GRANTED, "yes", EXPIRES, ASKED).changed
    assert not answer(State.REFUSED, "no", EXPIRES, ASKED).changed
    assert not answer(State.REVOKED, "no", EXPIRES, ASKED).changed


def test_no_after_yes_is_a_revocation_and_yes_after_no_cannot_undelete() -> None:
    changed_mind = answer(State.GRANTED, "no", EXPIRES, ASKED)
    assert (changed_mind.state, changed_mind.delete_images, changed_mind.what) == (
        State.REVOKED,
        True,
        "revoked",
    )
    too_late = answer(State.REFUSED, "yes", EXPIRES, ASKED)
    assert (too_late.state, too_late.changed, too_late.what) == (
        State.REFUSED,
        False,
        "too_late_to_grant",
    )
    assert answer(State.REVOKED, "yes", EXPIRES, ASKED).state is State.REVOKED


@pytest.mark.parametrize(
    ("state", "after", "deletes"),
    [
        (State.PENDING, State.REVOKED, True),
        (State.GRANTED, State.REVOKED, True),
        (State.REFUSED, State.REFUSED, False),
        (State.REVOKED, State.REVOKED, False),
    ],
)
def test_revocation(state: State, after: State, deletes: bool) -> None:
    outcome = revoke(state)
    assert (outcome.state, outcome.delete_images, outcome.changed) == (after, deletes, deletes)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Ja", "yes"),
        ("  JA!  ", "yes"),
        ("ja 👍", "yes"),
        ("ＪＡ", "yes"),  # full-width letters
        ("ok.", "yes"),
        ("Nein", "no"),
        ("NEIN!!!", "no"),
        ("ja gerne, aber nur das erste", None),
        ("jaein", None),
        ("", None),
        (None, None),
        ("ja" * 40, None),
        ("\ud83d", None),  # a lone surrogate
    ],
)
def test_word_answers(text: str | None, expected: str | None) -> None:
    assert word_answer(text, YES, NO) == expected


def test_revocation_words_and_normalising() -> None:
    assert is_revocation("Widerrufen!", REVOKE)
    assert not is_revocation("ich will nicht widerrufen", REVOKE)
    assert not is_revocation(None, REVOKE)
    assert normalise("  «Ja»  ") == "ja"


def test_buttons_carry_the_request() -> None:
    assert button_answer(button_id("yes", 42)) == ("yes", 42)
    assert button_answer(button_id("no", 7)) == ("no", 7)
    for other in (
        None,
        "",
        "hub.here",
        "hub.consent.maybe.3",
        "hub.consent.yes.",
        "hub.consent.yes.x1",
        "hub.consent.yes.²",
        "hub.consent.yes.1" + "0" * 30,
    ):
        assert button_answer(other) is None
