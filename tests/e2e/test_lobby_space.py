"""The advisers' day on a real Synapse (issue 14): the lobby's listing kept current by edits,
the space with every portal as a child and the advisers invited, the customer's context
pinned in a new portal, `!customer`, and `!t NAME` reaching a web chat customer with its
variables filled in.

A stack of its own (as tests/e2e/test_encryption_refused.py builds one): the shared one
has no lobby room and no canned replies. The lobby is a room the bot makes before the hub
starts, as an admin would and then name in `shop.lobby_room`.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from hub.config import load_config
from hub.devserver.synapse import ensure_synapse_installed, free_port, synapse_for_hub
from tests.e2e.engines import HubDatabases
from tests.e2e.helpers import Adviser, HubProcess, Visitor, generate_registration, is_message

pytestmark = pytest.mark.e2e

DOMAIN = "shop.example"
PASSWORD = "adviser-password-1"
SHOP = "Farbenhaus Lobby"
BOT = f"@shopbot:{DOMAIN}"
ANNA = f"@anna:{DOMAIN}"


class LobbyStack:
    def __init__(self, hub_url: str, synapse_url: str, lobby: str, hub: HubProcess) -> None:
        self.hub_url, self.synapse_url, self.lobby, self.hub = hub_url, synapse_url, lobby, hub


@pytest.fixture(scope="module")
async def lobby_stack(
    tmp_path_factory: pytest.TempPathFactory, hub_databases: HubDatabases
) -> AsyncIterator[LobbyStack]:
    root = tmp_path_factory.mktemp(f"lobby-{hub_databases.engine}")
    hub_port, hs_port = free_port(), free_port()
    config: dict[str, Any] = {
        "data_dir": str(root / "hub"),
        "homeserver": {"url": f"http://127.0.0.1:{hs_port}", "domain": DOMAIN},
        "appservice": {"as_token": "CHANGE_ME", "hs_token": "CHANGE_ME"},
        "http": {"host": "127.0.0.1", "port": hub_port},
        "database": await hub_databases.section("lobby"),
        "shop": {"name": SHOP, "advisers": [ANNA], "locale": "en_US", "currency": "EUR"},
        "outbox": {"base_delay_seconds": 0.2, "max_delay_seconds": 2},
        "channels": {"webchat": {"allowed_origins": ["http://shop.test"]}},
        "routing": {"auto_assign": False},  # conversations wait in the lobby
        "canned_replies": [
            {
                "name": "hallo",
                "text": {
                    "de": "Hallo {customer_name}, hier ist {adviser_name}!",
                    "en": "Hello {customer_name}, {adviser_name} of {shop_name} here. {nope}",
                },
            }
        ],
    }
    config_path = root / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    registration = root / "registration.yaml"
    await generate_registration(config_path, registration)
    synapse = synapse_for_hub(
        load_config(config_path),
        registration,
        root / "synapse",
        await ensure_synapse_installed(),
        secrets.token_hex(16),
        for_tests=True,
    )
    synapse.write_config()
    await synapse.start()
    hub: HubProcess | None = None
    try:
        await synapse.register_user("anna", PASSWORD, displayname="Anna Adviser")
        written = yaml.safe_load(config_path.read_text())
        as_token = written["appservice"]["as_token"]
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{synapse.url}/_matrix/client/v3/createRoom",
                # Room version 11: shop.lobby_room's pattern wants a room id with a server
                # name, which rooms of version 12 no longer have.
                json={
                    "name": "Lobby",
                    "preset": "private_chat",
                    "invite": [ANNA],
                    "room_version": "11",
                },
                headers={"Authorization": f"Bearer {as_token}"},
            ) as resp:
                assert resp.status == 200, await resp.text()
                lobby = str((await resp.json())["room_id"])
        written["shop"]["lobby_room"] = lobby
        config_path.write_text(yaml.safe_dump(written))
        hub_url = f"http://127.0.0.1:{hub_port}"
        hub = HubProcess(config_path, hub_url, root / "hub.log")
        await hub.start()
        yield LobbyStack(hub_url, synapse.url, lobby, hub)
    finally:
        if hub is not None:
            await hub.stop()
        await synapse.stop()


def bot_notice(starts: str) -> Any:
    def check(ev: dict[str, Any]) -> bool:
        content = ev.get("content", {})
        return (
            ev.get("sender") == BOT
            and content.get("msgtype") == "m.notice"
            and str(content.get("body", "")).startswith(starts)
        )

    return check


def state_event(event_type: str, state_key: str | None = None) -> Any:
    def check(ev: dict[str, Any]) -> bool:
        return ev.get("type") == event_type and (
            state_key is None or ev.get("state_key") == state_key
        )

    return check


async def test_lobby_space_context_and_canned_reply(
    lobby_stack: LobbyStack, tmp_path: Path
) -> None:
    anna = Adviser(lobby_stack.synapse_url, ANNA)
    await anna.login(PASSWORD)
    try:
        async with aiohttp.ClientSession() as http:
            visitor = Visitor(lobby_stack.hub_url, http)
            try:
                await run_the_day(lobby_stack, anna, visitor)
            finally:
                await visitor.disconnect()
    finally:
        await anna.close()


async def run_the_day(stack: LobbyStack, anna: Adviser, visitor: Visitor) -> None:
    lobby = stack.lobby
    await anna.join(lobby)  # invited before she logged in
    # Posted at start, while nobody waited.
    listing = await anna.wait_event(
        lobby, bot_notice("✅ Nobody is waiting for an adviser."), timeout=30
    )
    assert listing["content"]["formatted_body"].startswith("<p>")

    # As tests.e2e.helpers.open_portal, with the channel's English label.
    await visitor.start(name="Vera Ölmann")
    await visitor.connect()
    await visitor.say("Gibt es Kobaltblau in 5 Litern?")
    room = await anna.wait_invite("Web chat · Vera Ölmann", timeout=30)
    await anna.join(room)
    await anna.wait_event(room, is_message(body="Gibt es Kobaltblau in 5 Litern?"))

    # The listing is edited (not posted again) to show her.
    def edited(ev: dict[str, Any]) -> bool:
        content = ev.get("content", {})
        new = content.get("m.new_content", {})
        return (
            ev.get("sender") == BOT
            and content.get("m.relates_to", {}).get("rel_type") == "m.replace"
            and content["m.relates_to"].get("event_id") == listing["event_id"]
            and "Vera Ölmann" in str(new.get("body"))
            and room in str(new.get("body"))
        )

    edit = await anna.wait_event(lobby, edited, timeout=30)
    body = edit["content"]["m.new_content"]["body"]
    assert body.startswith("📋 1 conversation waits for an adviser:")
    assert "Gibt es Kobaltblau in 5 Litern?" in body
    assert len(anna.room_events(lobby, bot_notice("📋"))) == 0  # never a second listing

    # The context notice in the new portal, pinned.
    context = await anna.wait_event(room, bot_notice("About this customer:"), timeout=30)
    assert "👤 Vera Ölmann via Web chat" in context["content"]["body"]
    pinned = await anna.wait_event(room, state_event("m.room.pinned_events"), timeout=30)
    assert context["event_id"] in pinned["content"]["pinned"]

    # The space (made at start, anna invited before she logged in): the portal names it as
    # its parent, and it lists the portal as its child.
    parent = await anna.wait_event(room, state_event("m.space.parent"), timeout=30)
    assert parent["content"] == {"via": [DOMAIN], "canonical": True}
    space = parent["state_key"]
    await anna.join(space)  # only an invited adviser can
    child = await anna.wait_event(space, state_event("m.space.child", room), timeout=30)
    assert child["content"]["via"] == [DOMAIN]
    created = await anna.wait_event(space, state_event("m.room.create"), timeout=30)
    assert created["content"]["type"] == "m.space"
    named = await anna.wait_event(space, state_event("m.room.name"), timeout=30)
    assert named["content"]["name"] == f"{SHOP} · Customers"

    # A canned reply reaches the customer with its variables filled in; the room says so.
    command = await anna.send_text(room, "!t hallo")
    text = f"Hello Vera Ölmann, Anna Adviser of {SHOP} here. {{nope}}"
    got = await visitor.wait_message(
        lambda m: m["direction"] == "out" and m.get("text") == text, timeout=30
    )
    assert got["kind"] == "text"
    said = await anna.wait_event(room, bot_notice("💬 Canned reply hallo sent:"), timeout=30)
    assert text in said["content"]["body"]
    assert said["content"]["m.relates_to"] == {"m.in_reply_to": {"event_id": command}}

    # !customer shows the context again, as an answer to the command.
    asked = await anna.send_text(room, "!customer")

    def answers(ev: dict[str, Any]) -> bool:
        content = ev.get("content", {})
        return bot_notice("About this customer:")(ev) and content.get("m.relates_to") == {
            "m.in_reply_to": {"event_id": asked}
        }

    again = await anna.wait_event(room, answers, timeout=30)
    assert "👤 Vera Ölmann via Web chat" in again["content"]["body"]

    # An unknown name: ⛔ and the names there are.
    wrong = await anna.send_text(room, "!t tschuess")

    def refused(ev: dict[str, Any]) -> bool:
        content = ev.get("content", {})
        return (
            ev.get("sender") == BOT
            and content.get("m.relates_to", {}).get("m.in_reply_to", {}).get("event_id") == wrong
        )

    answer = await anna.wait_event(room, refused, timeout=30)
    assert answer["content"]["body"] == "There is no canned reply “tschuess”. Canned replies: hallo"
