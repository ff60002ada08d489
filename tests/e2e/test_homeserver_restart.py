"""A homeserver restart mid-conversation loses no adviser reply (issue 12).

Synapse on SQLite numbers its appservice transactions from 1 again after a restart on the
same database: its id generator starts from the highest *unsent* transaction, and sent ones
are deleted (synapse/storage/databases/main/appservice.py, LocalSequenceGenerator;
element-hq/synapse#14556). The hub used to drop every transaction whose id it had stored in
the last 7 days, so after such a restart most adviser replies never reached the customer.

The module runs a Synapse and a hub of its own (restarting the session's Synapse would
disturb the other tests): a visitor of the web chat and an adviser talk, Synapse is stopped
and started again on its own database, and they talk on; every reply reaches the widget
once, in order.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import yaml

from hub.config import load_config
from hub.devserver.synapse import (
    LocalSynapse,
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

DOMAIN = "shop.example"
PASSWORD = "adviser-password-1"
# Synapse's first transactions of a conversation carry only the hub's own events (room,
# ghost, invites: not stored), so the ids stored before the restart start at about 8: more
# replies after the restart than before make sure they run into those ids again.
REPLIES_BEFORE, REPLIES_AFTER = 5, 12


@dataclass
class OwnStack:
    synapse: LocalSynapse
    hub: HubProcess
    hub_url: str
    adviser_mxid: str


@pytest.fixture(scope="module")
async def own_stack(
    tmp_path_factory: pytest.TempPathFactory, hub_databases: HubDatabases
) -> AsyncIterator[OwnStack]:
    """Synapse (SQLite, as the demo runs it) and the hub (on each engine), for this module
    alone."""
    root = tmp_path_factory.mktemp(f"restart-{hub_databases.engine}")
    hub_port, hs_port = free_port(), free_port()
    config = {
        "data_dir": str(root / "hub"),
        "homeserver": {"url": f"http://127.0.0.1:{hs_port}", "domain": DOMAIN},
        "appservice": {"as_token": "CHANGE_ME", "hs_token": "CHANGE_ME"},
        "http": {"host": "127.0.0.1", "port": hub_port},
        "database": await hub_databases.section("restart"),
        "shop": {
            "name": "Farbenhaus Neustart",
            "advisers": [f"@anna:{DOMAIN}"],
            "locale": "de_DE",  # as the session's stack: rooms named "Webchat · …"
        },
        "outbox": {"base_delay_seconds": 0.2, "max_delay_seconds": 2},
        "channels": {"webchat": {"allowed_origins": ["http://shop.test"]}},
        "logging": {"level": "DEBUG"},  # "transaction N stored": the ids, if this fails
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
    await synapse.start()
    hub: HubProcess | None = None
    try:
        anna = await synapse.register_user("anna", PASSWORD, displayname="Anna Adviser")
        hub = HubProcess(config_path, f"http://127.0.0.1:{hub_port}", root / "hub.log")
        await hub.start()
        yield OwnStack(synapse, hub, hub.url, anna)
    finally:
        if hub is not None:
            await hub.stop()
        await synapse.stop()


@pytest.fixture
async def adviser(own_stack: OwnStack) -> AsyncIterator[Adviser]:
    client = Adviser(own_stack.synapse.url, own_stack.adviser_mxid)
    # Like any client, nio keeps retrying while the homeserver is away; waits of at most a
    # second (not a minute) keep the test short.
    client.client.config = dataclasses.replace(
        client.client.config, max_timeout_retry_wait_time=1.0
    )
    await client.login(PASSWORD)
    yield client
    await client.close()


def hub_log(stack: OwnStack) -> str:
    return Path(stack.hub.log_path).read_text(errors="replace")


async def test_adviser_replies_survive_a_homeserver_restart(
    own_stack: OwnStack, adviser: Adviser, http: aiohttp.ClientSession
) -> None:
    visitor = Visitor(own_stack.hub_url, http)
    try:
        room_id = await open_portal(adviser, visitor, "Neustart", "Ist meine Farbe unterwegs?")

        async def reply(text: str) -> None:
            await adviser.send_text(room_id, text)
            await visitor.wait_message(
                lambda m: m["direction"] == "out" and m["text"] == text, timeout=30
            )

        before = [f"Antwort {n} vor dem Neustart" for n in range(1, REPLIES_BEFORE + 1)]
        for text in before:
            await reply(text)
        assert "repeated" not in hub_log(own_stack)

        # Stopped and started again on its own database (the demo does the same).
        await own_stack.synapse.stop()
        await own_stack.synapse.start()

        # Both directions work again: the customer's message reaches the adviser's client.
        await visitor.say("Hallo, noch da?")
        await adviser.wait_event(room_id, is_message(body="Hallo, noch da?"), timeout=60)

        # Synapse numbers its transactions from 1 again; how many of them carry only the
        # hub's own echoes (not stored) before one reuses a stored id depends on what the hub
        # posts on its own (notices, room names): reply until a reused id came, at most 40.
        after: list[str] = []
        while len(after) < REPLIES_AFTER or (
            "repeated with different content" not in hub_log(own_stack) and len(after) < 40
        ):
            after.append(f"Antwort {len(after) + 1} nach dem Neustart")
            await reply(after[-1])

        # Every reply reached the customer, once, in order (the history is the hub's record).
        outgoing = [m["text"] for m in await visitor.history() if m["direction"] == "out"]
        assert outgoing == before + after
        live = [m["text"] for m in visitor.received if m["direction"] == "out"]
        assert live == before + after

        # The situation really arose: Synapse reused transaction ids the hub had stored.
        log = hub_log(own_stack)
        assert "repeated with different content" in log, own_stack.hub.log_tail()
        assert "already stored" not in log
    finally:
        await visitor.disconnect()
