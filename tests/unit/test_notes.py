"""Private notes (`notes` in the config): which advisers' messages stay in Matrix, that
commands in threads are still commands, and the line `!help` ends with. No database: the
dispatcher is given the room's conversation the way the worker hands it over."""

from __future__ import annotations

from typing import Any

import pytest

from hub.config.advisers import NotesConfig
from hub.core.bot import CommandHandler, CommandRunner, help_command, notes_line
from hub.core.commands import CommandRegistry, parse
from hub.db.conversations import RoomConversation
from hub.db.models import Conversation
from hub.jobs.job import Job
from hub.jobs.kinds import MATRIX_EVENT
from hub.matrix.dispatcher import Dispatcher, edit_of, is_note

ANNA = "@anna:shop.example"
ROOM = "!portal:shop.example"
THREAD = {"m.relates_to": {"rel_type": "m.thread", "event_id": "$root", "is_falling_back": True}}


def text(body: str, **extra: Any) -> dict[str, Any]:
    return {"msgtype": "m.text", "body": body, **extra}


@pytest.mark.parametrize(
    ("content", "prefix", "threads", "note"),
    [
        (text("// she sounds unsure"), "//", True, True),
        (text("   // leading blanks"), "//", True, True),
        (text("//"), "//", True, True),
        (text("Guten Tag // with a slash later"), "//", True, False),
        (text("/ one slash"), "//", True, False),
        (text("Guten Tag"), "//", True, False),
        # A reply from an older client quotes first: the note starts after the quote.
        (text("> <@ghost:shop.example> Hallo\n\n// not for her"), "//", True, True),
        (text("> <@ghost:shop.example> // quoted\n\nfor her"), "//", True, False),
        (text("%% internal"), "%%", True, True),
        (text("// not a note with another prefix"), "%%", True, False),
        (text("in a thread", **THREAD), "//", True, True),
        (text("in a thread, threads off", **THREAD), "//", False, False),
        (text("// prefix, threads off"), "//", False, True),
        (
            {"msgtype": "m.image", "body": "wand.png", "url": "mxc://x/y", **THREAD},
            "//",
            True,
            True,
        ),
        (
            text("a reply", **{"m.relates_to": {"m.in_reply_to": {"event_id": "$x"}}}),
            "//",
            True,
            False,
        ),
        ({"msgtype": "m.image", "url": "mxc://x/y"}, "//", True, False),
    ],
)
def test_is_note(content: dict[str, Any], prefix: str, threads: bool, note: bool) -> None:
    assert is_note(content, prefix, threads) is note


def dispatcher(notes: NotesConfig | None = None) -> Dispatcher:
    registry: CommandRegistry[CommandHandler] = CommandRegistry()
    registry.register(help_command(registry, "!", notes_prefix="//", notes_threads=True))
    runner = CommandRunner(registry, [ANNA])
    return Dispatcher(None, lambda m: False, registry, runner, "!", notes=notes)  # type: ignore[arg-type]


def job(content: dict[str, Any], n: int = 1) -> Job:
    event = {
        "event_id": f"$e{n}",
        "room_id": ROOM,
        "type": "m.room.message",
        "sender": ANNA,
        "content": content,
    }
    conversation = Conversation(id=7, identity_id=1, room_id=ROOM, meta={})
    return Job(n, MATRIX_EVENT, f"room/{ROOM}", event, 0, RoomConversation(conversation))


def kind_of(finish: Any) -> str | None:
    """What the dispatcher made of the event: a command, a message for the customer, or
    nothing (None)."""
    if finish is None:
        return None
    return "command" if "_command" in finish.__qualname__ else "message"


async def test_notes_and_threads_stay_and_commands_in_threads_still_run() -> None:
    d = dispatcher()
    assert kind_of(await d.handle(job(text("Guten Tag")))) == "message"
    assert kind_of(await d.handle(job(text("// intern: Rabatt?")))) is None
    assert kind_of(await d.handle(job(text("Rückfrage", **THREAD)))) is None
    assert kind_of(await d.handle(job(text("!help", **THREAD)))) == "command"
    assert kind_of(await d.handle(job(text("!help")))) == "command"


async def test_the_notes_settings_decide() -> None:
    d = dispatcher(NotesConfig(prefix="%%", threads=False))
    assert kind_of(await d.handle(job(text("// for the customer after all")))) == "message"
    assert kind_of(await d.handle(job(text("%% a note")))) is None
    assert kind_of(await d.handle(job(text("in a thread", **THREAD)))) == "message"


async def test_an_edit_is_never_a_new_message_nor_a_command() -> None:
    edit = {
        "msgtype": "m.text",
        "body": "!help",
        "m.new_content": {"msgtype": "m.text", "body": "!help"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": "$e0"},
    }
    finish = await dispatcher().handle(job(edit))
    assert finish is not None and "_edit" in finish.__qualname__


def test_edit_of() -> None:
    relates = {"rel_type": "m.replace", "event_id": "$orig"}
    new = {"msgtype": "m.text", "body": "neu", "format": "org.matrix.custom.html"}
    new["formatted_body"] = "<b>neu</b>"
    assert edit_of({"m.new_content": new, "m.relates_to": relates}) == (
        "$orig",
        "neu",
        "<b>neu</b>",
    )
    emote = {"msgtype": "m.emote", "body": "winkt"}
    assert edit_of({"m.new_content": emote, "m.relates_to": relates}) == ("$orig", "* winkt", None)
    assert edit_of({"m.relates_to": relates}) is None  # no new content
    assert (
        edit_of({"m.new_content": {"msgtype": "m.notice", "body": "x"}, "m.relates_to": relates})
        is None
    )
    assert edit_of({"m.new_content": new, "m.relates_to": {"rel_type": "m.thread"}}) is None


class _Ctx:
    def __init__(self) -> None:
        self.replies: list[tuple[str, str | None]] = []

    def reply(self, text: str, html: str | None = None) -> None:
        self.replies.append((text, html))


def test_help_ends_with_the_notes_line() -> None:
    registry: CommandRegistry[CommandHandler] = CommandRegistry()
    spec = help_command(registry, "!", notes_prefix="//", notes_threads=True)
    registry.register(spec)
    ctx = _Ctx()
    parsed = parse("!help", "!", registry)
    spec.handler(ctx, parsed)  # type: ignore[arg-type]
    [(body, html)] = ctx.replies
    assert body.splitlines()[-1] == notes_line("//", True)
    assert "//" in body.splitlines()[-1] and "thread" in body.splitlines()[-1]
    assert html is not None and html.endswith(f"<p>{notes_line('//', True)}</p>")
    assert "thread" not in notes_line("%%", False) and "%%" in notes_line("%%", False)
    # Without notes settings, !help is the command list alone.
    plain = help_command(registry, "!")
    ctx = _Ctx()
    plain.handler(ctx, parsed)  # type: ignore[arg-type]
    assert ctx.replies[0][0] == registry.help_text("!")
