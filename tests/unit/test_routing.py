"""Who gets the next conversation, when an unanswered one goes back, and what the room's name
says (hub.advisers.routing)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hub.advisers.routing import (
    AdviserState,
    Assignment,
    display_name_fallback,
    enters_routing,
    may_answer,
    next_assignee,
    requeue_at,
    room_label,
    should_requeue,
)

ANNA, BEN, CARL = "@anna:shop.example", "@ben:shop.example", "@carl:shop.example"
TEAM = [ANNA, BEN, CARL]
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


# --- next_assignee ------------------------------------------------------------------------


def test_a_fresh_team_is_served_in_config_order() -> None:
    assert next_assignee(TEAM, {}, max_open=5) == ANNA
    assert next_assignee([CARL, ANNA, BEN], {}, max_open=5) == CARL


def test_never_assigned_advisers_come_before_everyone_who_was() -> None:
    states = {ANNA: AdviserState(last_assigned_at=at(0)), BEN: AdviserState(last_assigned_at=at(1))}
    assert next_assignee(TEAM, states, max_open=5) == CARL


def test_the_adviser_assigned_least_recently_gets_the_next_one() -> None:
    states = {
        ANNA: AdviserState(last_assigned_at=at(3)),
        BEN: AdviserState(last_assigned_at=at(1)),
        CARL: AdviserState(last_assigned_at=at(2)),
    }
    assert next_assignee(TEAM, states, max_open=5) == BEN


def test_round_robin_over_a_sequence_of_conversations() -> None:
    states: dict[str, AdviserState] = {}
    order = []
    for n in range(6):
        chosen = next_assignee(TEAM, states, max_open=10)
        assert chosen is not None
        order.append(chosen)
        old = states.get(chosen, AdviserState())
        states[chosen] = AdviserState(True, at(n), old.open_count + 1)
    assert order == [ANNA, BEN, CARL, ANNA, BEN, CARL]


def test_ties_in_time_go_by_config_order() -> None:
    same = AdviserState(last_assigned_at=at(5))
    assert next_assignee(TEAM, {ANNA: same, BEN: same, CARL: same}, max_open=5) == ANNA
    assert next_assignee([BEN, ANNA], {ANNA: same, BEN: same}, max_open=5) == BEN


def test_advisers_at_the_cap_are_passed_by() -> None:
    states = {
        ANNA: AdviserState(open_count=2),
        BEN: AdviserState(open_count=2, last_assigned_at=at(0)),
        CARL: AdviserState(open_count=1, last_assigned_at=at(9)),
    }
    assert next_assignee(TEAM, states, max_open=2) == CARL
    assert next_assignee(TEAM, states, max_open=3) == ANNA
    assert next_assignee(TEAM, states, max_open=1) is None


def test_unavailable_advisers_are_passed_by_and_nobody_available_is_none() -> None:
    away = AdviserState(available=False)
    assert next_assignee(TEAM, {ANNA: away}, max_open=5) == BEN
    assert next_assignee(TEAM, {ANNA: away, BEN: away, CARL: away}, max_open=5) is None
    assert next_assignee([], {}, max_open=5) is None


def test_the_adviser_who_let_it_wait_is_excluded() -> None:
    assert next_assignee(TEAM, {}, max_open=5, exclude=(ANNA,)) == BEN
    assert next_assignee([ANNA], {}, max_open=5, exclude=(ANNA,)) is None


# --- requeue ------------------------------------------------------------------------------


def test_requeue_at() -> None:
    assert requeue_at(T0, 15) == at(15)
    assert requeue_at(T0, 0) is None


def test_requeue_when_nobody_answered_since_the_assignment() -> None:
    a = Assignment(ANNA, T0)
    assert should_requeue(a, a, None, at(15), 15)
    # A reply from before the assignment (an earlier adviser's) does not count.
    assert should_requeue(a, a, at(-5), at(20), 15)


def test_no_requeue_after_an_answer_or_before_the_time() -> None:
    a = Assignment(ANNA, T0)
    assert not should_requeue(a, a, at(3), at(15), 15)
    assert not should_requeue(a, a, T0, at(15), 15)
    assert not should_requeue(a, a, None, at(14), 15)
    assert not should_requeue(a, a, None, at(60), 0)  # requeue off


def test_no_requeue_of_a_later_assignment_or_a_closed_or_unassigned_conversation() -> None:
    planned = Assignment(ANNA, T0)
    assert not should_requeue(Assignment(BEN, at(2)), planned, None, at(30), 15)
    assert not should_requeue(Assignment(ANNA, at(2)), planned, None, at(30), 15)  # re-claimed
    assert not should_requeue(Assignment(ANNA, T0, "closed"), planned, None, at(30), 15)
    assert not should_requeue(Assignment(None, None), planned, None, at(30), 15)


def test_a_new_or_closed_conversation_enters_routing_an_open_one_does_not() -> None:
    assert enters_routing(None)
    assert enters_routing("closed")
    assert not enters_routing("open")


# --- labels and answers -------------------------------------------------------------------


def test_room_label() -> None:
    base = "WhatsApp · Kim Müller"
    assert room_label(base, "Anna", "open") == "WhatsApp · Kim Müller · 👤 Anna"
    assert room_label(base, None, "open") == base
    assert room_label(base, "Anna", "closed") == "WhatsApp · Kim Müller · ✔"


def test_display_name_fallback() -> None:
    assert display_name_fallback(ANNA) == "anna"


def test_may_answer() -> None:
    assert may_answer(None, BEN, others_may_answer=False)
    assert may_answer(BEN, BEN, others_may_answer=False)
    assert not may_answer(ANNA, BEN, others_may_answer=False)
    assert may_answer(ANNA, BEN, others_may_answer=True)
