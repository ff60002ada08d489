"""Claim and assign, close and reopen (issue 14) on the real Synapse: who has a conversation
shows in its room's name, set by the bot.

The shared stack has one adviser (@anna); the test with two advisers restarts the hub with a
second one (@carl) and a cap of one open conversation, and puts the config back afterwards.
The requeue after the timeout is tested at integration level (tests/integration/
test_assignment.py): its shortest setting is a minute of real time here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
import yaml

from tests.e2e.conftest import DOMAIN, PASSWORD, Stack
from tests.e2e.helpers import Adviser, Visitor, is_message, open_portal

pytestmark = pytest.mark.e2e

ANNA_NAME = "Anna Adviser"
CARL = f"@carl:{DOMAIN}"
CARL_NAME = "Carl Colleague"


def named(name: str) -> Callable[[dict[str, Any]], bool]:
    def check(ev: dict[str, Any]) -> bool:
        return ev.get("type") == "m.room.name" and ev.get("content", {}).get("name") == name

    return check


def bot_notice(
    stack: Stack, contains: str, status: str | None = None
) -> Callable[[dict[str, Any]], bool]:
    """A notice of the bot containing `contains`; `status`: a standing notice's kind (the
    automatic assignment's notice is one: "assignment")."""

    def check(ev: dict[str, Any]) -> bool:
        notice = is_message(sender=stack.bot_mxid, msgtype="m.notice", status=status)(ev)
        return notice and contains in str(ev.get("content", {}).get("body"))

    return check


def reacted(event_id: str, key: str) -> Callable[[dict[str, Any]], bool]:
    def check(ev: dict[str, Any]) -> bool:
        rel = ev.get("content", {}).get("m.relates_to", {})
        return (
            ev.get("type") == "m.reaction"
            and rel.get("event_id") == event_id
            and rel.get("key") == key
        )

    return check


async def command(adviser: Adviser, room_id: str, body: str, outcome: str = "✅") -> str:
    event_id = await adviser.send_text(room_id, body)
    await adviser.wait_event(room_id, reacted(event_id, outcome))
    return event_id


async def test_the_room_name_follows_assignment_close_and_reopen(
    stack: Stack, adviser: Adviser, visitor: Visitor
) -> None:
    room_id = await open_portal(adviser, visitor, "Kim Label", "Hallo, ich brauche Lack")
    base = adviser.invites[room_id]["name"]
    # A new conversation goes to the only adviser: the room says so.
    await adviser.wait_event(room_id, named(f"{base} · 👤 {ANNA_NAME}"))
    await adviser.wait_event(room_id, bot_notice(stack, stack.adviser_mxid, status="assignment"))
    await command(adviser, room_id, "!unassign")
    await adviser.wait_event(room_id, named(base))
    await command(adviser, room_id, "!unassign", "⛔")
    await command(adviser, room_id, "!claim")
    await command(adviser, room_id, "!close")
    await adviser.wait_event(room_id, named(f"{base} · ✔"))
    # The customer writes again: open, routed again, named again.
    before = len(adviser.room_events(room_id, named(f"{base} · 👤 {ANNA_NAME}")))
    await visitor.say("Noch eine Frage")
    await adviser.wait_event(room_id, is_message(body="Noch eine Frage"))
    await adviser.wait_for(
        lambda: len(adviser.room_events(room_id, named(f"{base} · 👤 {ANNA_NAME}"))) > before
    )
    # Bob is not an adviser: nobody can be given the conversation who could not answer it.
    await command(adviser, room_id, "!assign @bob", "⛔")


@pytest.fixture
async def two_advisers(stack: Stack) -> AsyncIterator[Adviser]:
    """The hub restarted with Carl as a second adviser and a cap of one; Carl logged in."""
    await stack.synapse.register_user("carl", PASSWORD, displayname=CARL_NAME)
    original = stack.config_path.read_text()
    config = yaml.safe_load(original)
    config["shop"]["advisers"] = [stack.adviser_mxid, CARL]
    config["routing"] = {"max_open_per_adviser": 1}
    await stack.hub.stop()
    stack.config_path.write_text(yaml.safe_dump(config))
    carl = Adviser(stack.synapse.url, CARL)
    try:
        await stack.hub.start()
        await carl.login(PASSWORD)
        yield carl
    finally:
        await carl.close()
        await stack.hub.stop()
        stack.config_path.write_text(original)
        await stack.hub.start()


async def test_two_advisers_cap_handover_and_claim(
    stack: Stack, two_advisers: Adviser, adviser: Adviser, http: aiohttp.ClientSession
) -> None:
    carl, anna = two_advisers, adviser
    first = Visitor(stack.hub_url, http)
    second = Visitor(stack.hub_url, http)
    third = Visitor(stack.hub_url, http)
    try:
        room_a = await open_portal(anna, first, "Lea Cap", "Hallo A")
        base_a = anna.invites[room_a]["name"]
        # Anna takes A whoever got it, and gets no new ones: B can only go to Carl.
        await command(anna, room_a, "!claim")
        await anna.wait_event(room_a, named(f"{base_a} · 👤 {ANNA_NAME}"))
        await command(anna, room_a, "!unavailable")
        room_b = await open_portal(anna, second, "Max Carl", "Hallo B")
        base_b = anna.invites[room_b]["name"]
        await anna.wait_event(room_b, named(f"{base_b} · 👤 {CARL_NAME}"))
        # C: Carl is at the cap (one), Anna unavailable: it waits in the lobby, unnamed.
        room_c = await open_portal(anna, third, "Nora Lobby", "Hallo C")
        await command(anna, room_c, "!close")  # handled after C's routing (room order)
        base_c = anna.invites[room_c]["name"]
        await anna.wait_event(room_c, named(f"{base_c} · ✔"))

        def assigned(ev: dict[str, Any]) -> bool:
            if ev.get("type") == "m.room.name":
                return "👤" in str(ev.get("content", {}).get("name"))
            return any(
                bot_notice(stack, who, status)(ev)
                for who in (CARL, stack.adviser_mxid)
                for status in (None, "assignment")
            )

        assert not anna.room_events(room_c, assigned)
        # Carl hands B over to Anna with a note; she is mentioned.
        await carl.wait_for(lambda: room_b in carl.invites)
        await carl.join(room_b)
        await command(carl, room_b, f"!handover {stack.adviser_mxid} Möchte Salbei, 5 Liter")
        notice = await anna.wait_event(room_b, bot_notice(stack, "Möchte Salbei, 5 Liter"))
        assert stack.adviser_mxid in notice["content"]["body"]
        assert f"https://matrix.to/#/{stack.adviser_mxid}" in notice["content"]["formatted_body"]
        await anna.wait_event(room_b, named(f"{base_b} · 👤 {ANNA_NAME}"))
        # Carl takes it back: the answer says from whom.
        claim = await command(carl, room_b, "!claim")

        def answer(ev: dict[str, Any]) -> bool:
            reply_to = ev.get("content", {}).get("m.relates_to", {}).get("m.in_reply_to", {})
            return bot_notice(stack, stack.adviser_mxid)(ev) and reply_to.get("event_id") == claim

        await carl.wait_event(room_b, answer)
        await anna.wait_event(room_b, named(f"{base_b} · 👤 {CARL_NAME}"))
        await command(anna, room_a, "!available")
    finally:
        for v in (first, second, third):
            await v.disconnect()
