"""The bot's open questions in a conversation (photo consent, newsletter opt-in), newest
last, in `conversation.meta["questions"]`. Pure.

A button names its question itself; a typed answer ("ja") goes to the newest open question
only. When a question is answered it leaves the list, so an older one still open is the
newest again: answering the photo question does not lose the newsletter's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

KEY = "questions"
LIMIT = 10  # a conversation never has more open; older ones drop off


def open_questions(meta: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    found = (meta or {}).get(KEY)
    if not isinstance(found, list):
        return []
    return [q for q in found if isinstance(q, dict) and "kind" in q and "id" in q]


def newest(meta: Mapping[str, Any] | None) -> dict[str, Any] | None:
    found = open_questions(meta)
    return found[-1] if found else None


def is_newest(meta: Mapping[str, Any] | None, kind: str, question_id: int | None = None) -> bool:
    """The newest open question is of `kind` (and `question_id`, if given)."""
    last = newest(meta)
    if last is None or last["kind"] != kind:
        return False
    return question_id is None or last["id"] == question_id


def asked(meta: Mapping[str, Any] | None, kind: str, question_id: int) -> list[dict[str, Any]]:
    """The list after asking: this question newest (an earlier one of the same kind and id
    moves up)."""
    rest = [q for q in open_questions(meta) if not (q["kind"] == kind and q["id"] == question_id)]
    return [*rest, {"kind": kind, "id": question_id}][-LIMIT:]


def answered(meta: Mapping[str, Any] | None, kind: str, question_id: int) -> list[dict[str, Any]]:
    return [q for q in open_questions(meta) if not (q["kind"] == kind and q["id"] == question_id)]
