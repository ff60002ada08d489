"""The bot's open questions of a conversation (hub.consent.questions)."""

from __future__ import annotations

from hub.consent.questions import answered, asked, is_newest, newest, open_questions


def test_typed_answers_go_to_the_newest_and_an_older_one_comes_back() -> None:
    meta = {"questions": asked(None, "optin", 1)}
    meta = {"questions": asked(meta, "consent", 7)}
    assert newest(meta) == {"kind": "consent", "id": 7}
    assert is_newest(meta, "consent", 7) and not is_newest(meta, "optin")
    meta = {"questions": answered(meta, "consent", 7)}
    assert is_newest(meta, "optin", 1)
    meta = {"questions": answered(meta, "optin", 1)}
    assert newest(meta) is None


def test_asking_again_moves_the_question_up_and_the_list_stays_short() -> None:
    meta = {"questions": asked({"questions": asked(None, "optin", 1)}, "consent", 2)}
    meta = {"questions": asked(meta, "optin", 1)}
    assert open_questions(meta) == [{"kind": "consent", "id": 2}, {"kind": "optin", "id": 1}]
    for n in range(30):
        meta = {"questions": asked(meta, "consent", 100 + n)}
    assert len(open_questions(meta)) == 10


def test_junk_in_the_meta_is_no_question() -> None:
    for junk in (None, {}, {"questions": "x"}, {"questions": [1, "a", {"kind": "x"}]}):
        assert open_questions(junk) == [] and newest(junk) is None
