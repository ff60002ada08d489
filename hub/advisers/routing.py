"""Who may do what with a conversation, and who gets the next one. Pure."""

from __future__ import annotations


def may_answer(assignee: str | None, sender: str, others_may_answer: bool) -> bool:
    """Whether an adviser's message reaches the customer: always for the assignee and for an
    unassigned conversation; for the others as `routing.others_may_answer` says."""
    return others_may_answer or assignee is None or assignee == sender
