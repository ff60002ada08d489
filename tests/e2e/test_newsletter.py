"""The newsletter end to end: WhatsApp customers (through the Graph API stand-in) in rooms on
the real Synapse, an adviser's `!optin`, the customers' taps on the reply buttons and a STOP,
then `hub broadcast` run beside the running hub: its worker sends the template to the one
customer who confirmed twice, counted at the stand-in."""

from __future__ import annotations

import asyncio
import secrets
import sys
from typing import Any

import pytest

from tests.e2e.conftest import Stack
from tests.e2e.helpers import REPO, Adviser
from tests.e2e.test_whatsapp import bot_notice, customer_says, new_wa_id, open_room, post, standin
from tests.e2e.test_whatsapp import to as to_customer

pytestmark = pytest.mark.e2e


async def question(stack: Stack, wa_id: str, count: int) -> dict[str, Any]:
    """The `count`-th reply-button message the customer got (the opt-in's questions)."""
    [*_, rec] = await standin(stack).wait_sent(to_customer(wa_id, kind="interactive"), count)
    return rec.json  # type: ignore[no-any-return]


async def tap(stack: Stack, wa_id: str, name: str, asked: dict[str, Any]) -> str:
    """The customer taps the question's button; the button's id."""
    wa = standin(stack)
    [button] = [b["reply"] for b in asked["interactive"]["action"]["buttons"]]
    reply = {"type": "button_reply", "button_reply": {"id": button["id"], "title": button["title"]}}
    msg = wa.message(wa_id, "interactive", reply)
    assert await post(stack, wa.webhook([wa.value([(wa_id, name)], [msg])])) == 200
    return str(button["id"])


async def optin(stack: Stack, adviser: Adviser, room_id: str) -> None:
    await adviser.send_text(room_id, "!optin")
    await adviser.wait_event(room_id, bot_notice(stack, "📰"))


def templates_to(stack: Stack, wa_id: str) -> list[Any]:
    return standin(stack).sent(lambda doc: doc.get("to") == wa_id and doc["type"] == "template")


async def broadcast(stack: Stack, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "hub", "broadcast", "-c", str(stack.config_path), *args],
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_a_broadcast_reaches_only_the_customer_who_confirmed_twice(
    stack: Stack, adviser: Adviser
) -> None:
    complete, incomplete, stopped = new_wa_id(), new_wa_id(), new_wa_id()
    room = await open_room(
        stack, adviser, complete, "Nora Newsletter", "Haben Sie einen Newsletter?"
    )
    other = await open_room(stack, adviser, incomplete, "Hans Halbherzig", "Guten Tag")

    # Complete: two taps.
    await optin(stack, adviser, room)
    first = await question(stack, complete, 1)
    assert "WhatsApp" in first["interactive"]["body"]["text"]  # the channel is named
    assert (await tap(stack, complete, "Nora Newsletter", first)).endswith(":1")
    second = await question(stack, complete, 2)
    texts = len(standin(stack).sent(to_customer(complete, kind="text")))  # a greeting, maybe
    assert (await tap(stack, complete, "Nora Newsletter", second)).endswith(":2")
    await standin(stack).wait_sent(to_customer(complete, kind="text"), texts + 1)  # subscribed
    # The room saw each step: the request, the first and the second confirmation.
    notices = bot_notice(stack, "📰")
    await adviser.wait_for(lambda: len(adviser.room_events(room, notices)) >= 3)

    # Incomplete: one tap, the second question left unanswered.
    await optin(stack, adviser, other)
    await tap(stack, incomplete, "Hans Halbherzig", await question(stack, incomplete, 1))
    await question(stack, incomplete, 2)

    # A customer who writes STOP is told so, asked or not.
    await customer_says(stack, stopped, "Stefan Stop", "STOP")
    await standin(stack).wait_sent(to_customer(stopped, kind="text"))

    broadcast_id = "e2e-" + secrets.token_hex(4)
    code, out, err = await broadcast(stack, "--template", "hello_world", "--id", broadcast_id)
    assert code == 0, err
    assert f"broadcast {broadcast_id} (template hello_world): 1 sent, 0 failed" in out
    assert "[##############################] 1/1 done (1 sent)" in err
    [sent] = templates_to(stack, complete)
    assert sent.json["template"]["name"] == "hello_world"
    assert templates_to(stack, incomplete) == [] and templates_to(stack, stopped) == []

    # Again: nobody gets it twice.
    code, out, _ = await broadcast(stack, "--template", "hello_world", "--id", broadcast_id)
    assert code == 0 and "this run queued 0" in out
    await asyncio.sleep(1.5)  # the hub's worker polls every second: nothing more comes
    assert len(templates_to(stack, complete)) == 1
