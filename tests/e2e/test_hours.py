"""Business hours end to end: the hub runs with opening hours and its clock set to a Sunday
(HUB_CLOCK), customers write on WhatsApp (the stand-in records what the hub sends them),
advisers are in real Matrix rooms on the real Synapse. The hub is restarted with its clock
moved on: to Monday after the opening ("we're back", a scheduled message due while it was
down), then to Monday's lunch break.

The normal hub of the session is stopped for this module and started again after it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from tests.e2e.conftest import Stack
from tests.e2e.helpers import Adviser, HubProcess, Visitor, is_message
from tests.e2e.test_whatsapp import bot_notice, new_wa_id, post, standin, to

pytestmark = pytest.mark.e2e

BERLIN = ZoneInfo("Europe/Berlin")
SUNDAY = datetime(2026, 12, 6, 11, 0, tzinfo=BERLIN)
MONDAY_AFTER_OPENING = datetime(2026, 12, 7, 9, 31, tzinfo=BERLIN)
MONDAY_LUNCH = datetime(2026, 12, 7, 13, 20, tzinfo=BERLIN)
HOURS = {
    "weekly": {d: "9-13, 14-18" for d in ("mon", "tue", "wed", "thu", "fri", "sat")},
    "holidays": {"country": "DE", "region": "NW"},
}
HOLDING = (
    "Vielen Dank für Ihre Nachricht! Heute haben wir geschlossen. Unser Beratungsteam "
    "antwortet Ihnen ab Montag, 9:00\xa0Uhr."
)
LUNCH_HOLDING = (
    "Vielen Dank für Ihre Nachricht! Unser Geschäft ist gerade geschlossen. Unser "
    "Beratungsteam antwortet Ihnen ab Montag, 14:00\xa0Uhr."
)
BACK = (
    "Farbenhaus Test ist wieder für Sie da: Gleich meldet sich jemand aus unserem "
    "Beratungsteam bei Ihnen."
)


class ShopClock:
    """The hub with opening hours, restarted with its clock at a given moment."""

    def __init__(self, stack: Stack, root: Path) -> None:
        config = yaml.safe_load(stack.config_path.read_text())
        config["shop"]["timezone"] = "Europe/Berlin"
        config["hours"] = HOURS
        config["replies"] = {"back": {"enabled": True}}
        self.path = root / "config-hours.yaml"
        self.path.write_text(yaml.safe_dump(config))
        self.stack = stack
        self.root = root
        self.hub: HubProcess | None = None
        self.started_at = (SUNDAY, time.time())

    async def start(self, moment: datetime) -> None:
        await self.stop()
        self.hub = HubProcess(
            self.path,
            self.stack.hub_url,
            self.root / "hub-hours.log",
            env={"HUB_CLOCK": moment.isoformat()},
        )
        self.started_at = (moment, time.time())
        await self.hub.start()

    async def stop(self) -> None:
        if self.hub is not None:
            await self.hub.stop()
            self.hub = None

    def now(self) -> int:
        """The hub's clock now, as a WhatsApp timestamp: the customer writes at that time."""
        moment, real = self.started_at
        return int(moment.timestamp() + time.time() - real)


@pytest.fixture(scope="module")
async def shop(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ShopClock]:
    await stack.hub.stop()
    clock = ShopClock(stack, tmp_path_factory.mktemp("hours"))
    try:
        await clock.start(SUNDAY)
        yield clock
    finally:
        await clock.stop()
        await stack.hub.start()


async def says(stack: Stack, shop: ShopClock, wa_id: str, name: str, text: str) -> None:
    payload, _ = standin(stack).text_webhook(wa_id, name, text, timestamp=shop.now())
    assert await post(stack, payload) == 200


def texts_to(stack: Stack, wa_id: str) -> list[str]:
    return [r.json.get("text", {}).get("body", "") for r in standin(stack).sent(to(wa_id))]


async def settle(condition: Callable[[], Any], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met")
        await asyncio.sleep(0.1)


async def test_sunday_holding_replies_we_are_back_and_a_scheduled_message_across_restarts(
    stack: Stack, shop: ShopClock, adviser: Adviser
) -> None:
    a, b = new_wa_id(), new_wa_id()

    # Sunday 11:00: each customer gets exactly one holding reply, each room a notice.
    await says(stack, shop, a, "Sonntag Kundin", "Haben Sie Salbeigrün da?")
    room_a = await adviser.wait_invite("WhatsApp · Sonntag Kundin")
    await adviser.join(room_a)
    await standin(stack).wait_sent(to(a, HOLDING))
    await adviser.wait_event(room_a, bot_notice(stack, HOLDING))
    await says(stack, shop, b, "Sonntag Kunde", "Hallo!")
    room_b = await adviser.wait_invite("WhatsApp · Sonntag Kunde")
    await adviser.join(room_b)
    await standin(stack).wait_sent(to(b, HOLDING))
    await says(stack, shop, a, "Sonntag Kundin", "Und in 5 Litern?")
    await adviser.wait_event(room_a, is_message(body="Und in 5 Litern?"))

    # An adviser answers B on Sunday; A gets a message scheduled for Monday 9:30.
    await adviser.send_text(room_b, "Ausnahmsweise heute: ja, haben wir.")
    await standin(stack).wait_sent(to(b, "Ausnahmsweise heute: ja, haben wir."))
    await adviser.send_text(room_a, "!schedule mo 9:30 Salbeigrün ist reserviert!")
    await adviser.wait_event(room_a, bot_notice(stack, "Salbeigrün ist reserviert!"))
    await adviser.send_text(room_a, "!hours")
    await adviser.wait_event(
        room_a, bot_notice(stack, "Montag, 7. Dezember: 09:00–13:00, 14:00–18:00")
    )
    assert texts_to(stack, a) == [HOLDING]

    # The hub is down over the opening and starts on Monday at 9:31: A gets "we're back"
    # and the scheduled message once each; B, whom an adviser answered, no "we're back".
    await shop.start(MONDAY_AFTER_OPENING)
    await standin(stack).wait_sent(to(a, "Salbeigrün ist reserviert!"))
    await standin(stack).wait_sent(to(a, BACK))
    sent = "an den Kunden gesendet: Salbeigrün ist reserviert!"
    await adviser.wait_event(room_a, bot_notice(stack, sent))
    # Restarted again: nothing is sent twice.
    await shop.start(MONDAY_AFTER_OPENING)
    await says(stack, shop, b, "Sonntag Kunde", "Danke!")  # open: no holding reply
    await adviser.wait_event(room_b, is_message(body="Danke!"))
    await asyncio.sleep(2)
    assert sorted(texts_to(stack, a)) == sorted([HOLDING, "Salbeigrün ist reserviert!", BACK])
    assert len(adviser.room_events(room_a, bot_notice(stack, sent))) == 1
    assert texts_to(stack, b) == [HOLDING, "Ausnahmsweise heute: ja, haben wir."]

    # Monday's lunch break: A (no adviser answer) gets a holding reply for this closed period;
    # B, whom an adviser answered a minute ago, does not.
    await shop.start(MONDAY_LUNCH)
    await adviser.send_text(room_b, "Gern geschehen!")
    await standin(stack).wait_sent(to(b, "Gern geschehen!"))
    await says(stack, shop, b, "Sonntag Kunde", "Noch eine Frage")
    await says(stack, shop, a, "Sonntag Kundin", "Mittagspause?")
    await standin(stack).wait_sent(to(a, LUNCH_HOLDING))
    await adviser.wait_event(room_b, is_message(body="Noch eine Frage"))
    await asyncio.sleep(1)
    assert texts_to(stack, b)[-1] == "Gern geschehen!"
    assert texts_to(stack, a).count(LUNCH_HOLDING) == 1


async def test_the_widget_gets_the_holding_reply_in_the_shops_name(
    stack: Stack, shop: ShopClock, visitor: Visitor
) -> None:
    await shop.start(MONDAY_LUNCH)
    await visitor.start(name="Mittags Besuch")
    await visitor.connect()
    await visitor.say("Hat der Laden offen?")
    got = await visitor.wait_message(lambda m: m["direction"] == "out")
    assert got["text"] == LUNCH_HOLDING
    assert got["sender_name"] == "Farbenhaus Test"
