"""Federation (issue 14): an expert from another homeserver (a manufacturer's technician)
invited into one conversation speaks to the customer only if `shop.advisers` lists them.

Two real Synapses federate on loopback: the shop's (localhost:PA, with the hub's appservice)
and a remote one (localhost:PB). Server names carry their federation ports, so neither
looks up .well-known or SRV records; see hub.devserver.homeserver_yaml.FederationSettings.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import yaml

from hub.config import load_config
from hub.devserver.synapse import (
    FederationSettings,
    LocalSynapse,
    SynapseConfig,
    ensure_synapse_installed,
    free_port,
    synapse_for_hub,
)
from tests.e2e.engines import HubDatabases
from tests.e2e.helpers import (
    Adviser,
    HubProcess,
    Visitor,
    generate_registration,
    is_message,
    open_portal,
)

pytestmark = pytest.mark.e2e

PASSWORD = "federated-password-1"
# Federation converges in seconds on loopback, but the first request between two servers
# also fetches and checks signing keys: generous, bounded.
FEDERATION_WAIT = 60


@dataclass
class Federated:
    shop: LocalSynapse  # localhost:PA, the hub's homeserver
    remote: LocalSynapse  # localhost:PB
    hub: HubProcess
    anna: Adviser  # on the shop's server
    expert: Adviser  # on the remote server, listed in shop.advisers
    stranger: Adviser  # on the remote server, not listed
    bot_mxid: str


@pytest.fixture
async def federated(tmp_path: Path, hub_databases: HubDatabases) -> AsyncIterator[Federated]:
    shop_fed, remote_fed = free_port(), free_port()
    shop_name, remote_name = f"localhost:{shop_fed}", f"localhost:{remote_fed}"
    hub_port, shop_port, remote_port = free_port(), free_port(), free_port()
    config = {
        "data_dir": str(tmp_path / "hub"),
        "homeserver": {"url": f"http://127.0.0.1:{shop_port}", "domain": shop_name},
        "appservice": {"as_token": "CHANGE_ME", "hs_token": "CHANGE_ME"},
        "http": {"host": "127.0.0.1", "port": hub_port},
        "database": await hub_databases.section("federation"),
        "shop": {
            "name": "Farbenhaus Föderiert",
            "advisers": [f"@anna:{shop_name}", f"@expert:{remote_name}"],
            "locale": "de_DE",  # open_portal looks for "Webchat · NAME"
        },
        "channels": {"webchat": {"allowed_origins": ["http://shop.test"]}},
        "logging": {"level": "INFO"},
    }
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    registration = tmp_path / "registration.yaml"
    await generate_registration(config_path, registration)
    python = await ensure_synapse_installed()
    shop = synapse_for_hub(
        load_config(config_path),
        registration,
        tmp_path / "synapse-shop",
        python,
        secrets.token_hex(16),
        for_tests=True,
        federation=FederationSettings(port=shop_fed, peers=[remote_name]),
    )
    remote = LocalSynapse(
        SynapseConfig(
            data_dir=tmp_path / "synapse-remote",
            server_name=remote_name,
            port=remote_port,
            for_tests=True,
            federation=FederationSettings(port=remote_fed, peers=[shop_name]),
        ),
        python,
    )
    hub = HubProcess(config_path, f"http://127.0.0.1:{hub_port}", tmp_path / "hub.log")
    clients: list[Adviser] = []
    try:
        await asyncio.gather(shop.start(), remote.start())
        written = yaml.safe_load(config_path.read_text())  # with the registration's tokens
        written["homeserver"]["admin_token"] = await shop.admin_token()
        config_path.write_text(yaml.safe_dump(written))
        anna = await shop.register_user("anna", PASSWORD, displayname="Anna Adviser")
        expert = await remote.register_user("expert", PASSWORD, displayname="Erik Experte")
        stranger = await remote.register_user("stranger", PASSWORD, displayname="Sam Stranger")
        await hub.start()
        for synapse, mxid in ((shop, anna), (remote, expert), (remote, stranger)):
            client = Adviser(synapse.url, mxid)
            clients.append(client)
            await client.login(PASSWORD)
        anna_client, expert_client, stranger_client = clients
        yield Federated(
            shop,
            remote,
            hub,
            anna_client,
            expert_client,
            stranger_client,
            bot_mxid=f"@shopbot:{shop_name}",
        )
    finally:
        for client in clients:
            await client.close()
        await hub.stop()
        await asyncio.gather(shop.stop(), remote.stop())


async def invite(synapse: LocalSynapse, inviter: Adviser, room_id: str, mxid: str) -> None:
    """POST /invite with the inviter's token: the shop's server asks the remote one over
    federation before it answers."""
    url = f"{synapse.url}/_matrix/client/v3/rooms/{quote(room_id, safe='')}/invite"
    headers = {"Authorization": f"Bearer {inviter.client.access_token}"}
    timeout = aiohttp.ClientTimeout(total=FEDERATION_WAIT)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        async with http.post(url, json={"user_id": mxid}, headers=headers) as resp:
            assert resp.status == 200, f"{resp.status} {await resp.text()}\n{synapse.log_tail()}"


def joined(mxid: str) -> Any:
    def check(ev: dict[str, Any]) -> bool:
        return (
            ev.get("type") == "m.room.member"
            and ev.get("state_key") == mxid
            and ev.get("content", {}).get("membership") == "join"
        )

    return check


async def bring_in(fed: Federated, room_id: str, guest: Adviser) -> None:
    """Anna invites a user of the remote server, who joins over federation; both sides see
    the membership before anyone writes."""
    await invite(fed.shop, fed.anna, room_id, guest.client.user_id)
    await guest.wait_for(lambda: room_id in guest.invites, FEDERATION_WAIT)
    await guest.join(room_id)
    await fed.anna.wait_event(room_id, joined(guest.client.user_id), FEDERATION_WAIT)
    await guest.wait_event(room_id, joined(guest.client.user_id), FEDERATION_WAIT)


async def test_a_listed_remote_expert_speaks_to_the_customer_an_unlisted_one_does_not(
    federated: Federated,
) -> None:
    fed = federated
    async with aiohttp.ClientSession() as http:
        visitor = Visitor(fed.hub.url, http)
        try:
            await check_federated_conversation(fed, visitor)
        finally:
            await visitor.disconnect()


async def check_federated_conversation(fed: Federated, visitor: Visitor) -> None:
    anna, expert, stranger = fed.anna, fed.expert, fed.stranger
    room_id = await open_portal(anna, visitor, "Fernwartung", "Die Farbe blättert ab, warum?")

    # The manufacturer's technician, listed in shop.advisers, is heard by the customer.
    await bring_in(fed, room_id, expert)
    expert_text = "Technischer Dienst hier: bitte Grundierung G2 verwenden."
    await expert.send_text(room_id, expert_text)
    relayed = await visitor.wait_message(lambda m: m["text"] == expert_text, FEDERATION_WAIT)
    assert relayed["direction"] == "out"
    # Relayed as an adviser's, under the name the remote server gave the expert.
    assert relayed["sender_name"] == "Erik Experte"

    # Someone else of the same remote server stays in the room, and the room is told once.
    await bring_in(fed, room_id, stranger)
    stranger_mxid = stranger.client.user_id
    first = await stranger.send_text(room_id, "Ich kann auch helfen!")
    await stranger.send_text(room_id, "Hallo?")
    # Anna writes last: the room's events are handled in the order the shop's server
    # received them, so once her reply reached the widget, the stranger's were handled.
    await anna.wait_event(room_id, is_message(body="Hallo?"), FEDERATION_WAIT)
    await anna.send_text(room_id, "Anna hier, alles klar?")
    await visitor.wait_message(lambda m: m["text"] == "Anna hier, alles klar?", FEDERATION_WAIT)

    def about_stranger(ev: dict[str, Any]) -> bool:
        content = ev.get("content")
        return (
            is_message(sender=fed.bot_mxid, msgtype="m.notice")(ev)
            and isinstance(content, dict)
            and stranger_mxid in str(content.get("body"))
        )

    notice = await anna.wait_event(room_id, about_stranger, FEDERATION_WAIT)
    assert notice["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == first
    # The stranger, on the other server, learns it too.
    await stranger.wait_event(room_id, about_stranger, FEDERATION_WAIT)
    # Nobody is told about the expert.
    assert not anna.room_events(
        room_id,
        lambda ev: (
            is_message(sender=fed.bot_mxid, msgtype="m.notice")(ev)
            and expert.client.user_id in str(ev.get("content", {}).get("body"))
        ),
    )

    # Another round, so a duplicate relay or notice would have had time to show.
    await stranger.send_text(room_id, "Noch da?")
    await expert.send_text(room_id, "Trockenzeit 24 Stunden.")
    await visitor.wait_message(lambda m: m["text"] == "Trockenzeit 24 Stunden.", FEDERATION_WAIT)
    await anna.wait_event(room_id, is_message(body="Noch da?"), FEDERATION_WAIT)
    await anna.send_text(room_id, "Danke, Erik!")
    await visitor.wait_message(lambda m: m["text"] == "Danke, Erik!", FEDERATION_WAIT)
    assert len(anna.room_events(room_id, about_stranger)) == 1

    outgoing = [m["text"] for m in await visitor.history() if m["direction"] == "out"]
    assert outgoing == [
        expert_text,
        "Anna hier, alles klar?",
        "Trockenzeit 24 Stunden.",
        "Danke, Erik!",
    ]
    # Exactly once on the live socket too.
    assert [m["text"] for m in visitor.received].count(expert_text) == 1
