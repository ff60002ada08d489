"""Only the shop's advisers speak to the customer (issue 12): a Matrix user in a portal room
who is not an adviser stays in the room; the room is told once."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import PASSWORD, Stack
from tests.e2e.helpers import Adviser, Visitor, is_message, open_portal

pytestmark = pytest.mark.e2e


async def test_a_non_adviser_in_the_room_does_not_reach_the_customer(
    stack: Stack, adviser: Adviser, visitor: Visitor
) -> None:
    room_id = await open_portal(adviser, visitor, "Bystander Relay", "Hallo, wer hilft mir?")
    await adviser.client.room_invite(room_id, stack.other_mxid)
    bob = Adviser(stack.synapse.url, stack.other_mxid)
    await bob.login(PASSWORD)
    try:
        await bob.join(room_id)
        first = await bob.send_text(room_id, "Hi, Bob here, I'll take this one")
        await bob.send_text(room_id, "Are you still there?")
        # The adviser writes last: the room's events are handled in order, so once her
        # reply reached the widget, Bob's messages have been handled.
        await adviser.send_text(room_id, "Guten Tag, hier ist Anna.")
        await visitor.wait_message(lambda m: m["direction"] == "out")

        def about_bob(ev: dict[str, object]) -> bool:
            content = ev.get("content")
            return (
                is_message(sender=stack.bot_mxid, msgtype="m.notice")(ev)
                and isinstance(content, dict)
                and stack.other_mxid in str(content.get("body"))
            )

        notice = await adviser.wait_event(room_id, about_bob)
        assert notice["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == first
        # Bob sees it too (he is the one to learn it), and only once.
        await bob.wait_event(room_id, about_bob)
        await bob.send_text(room_id, "Hello??")
        await adviser.send_text(room_id, "Wie kann ich helfen?")
        await visitor.wait_message(lambda m: m["text"] == "Wie kann ich helfen?")
        assert len(adviser.room_events(room_id, about_bob)) == 1

        outgoing = [m["text"] for m in await visitor.history() if m["direction"] == "out"]
        assert outgoing == ["Guten Tag, hier ist Anna.", "Wie kann ich helfen?"]
    finally:
        await bob.close()
