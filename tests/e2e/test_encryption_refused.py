"""Encryption is never silent (issue 13), on a real Synapse.

A hub without end-to-bridge encryption refuses to start against a homeserver that encrypts
new rooms, naming the setting of each side; and an encrypted event in a portal it cannot
read gets the room one 🔒 notice per conversation, while nothing reaches the customer.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import yaml

from hub.config import load_config
from hub.devserver.synapse import ensure_synapse_installed, free_port, synapse_for_hub
from tests.e2e.conftest import Stack
from tests.e2e.engines import HubDatabases
from tests.e2e.helpers import (
    REPO,
    Adviser,
    HubProcess,
    Visitor,
    generate_registration,
    open_portal,
)

pytestmark = pytest.mark.e2e

DOMAIN = "shop.example"
MEGOLM = "m.megolm.v1.aes-sha2"


async def test_a_hub_without_encryption_refuses_a_homeserver_that_encrypts_new_rooms(
    tmp_path: Path, hub_databases: HubDatabases
) -> None:
    """A Synapse of its own with `encryption_enabled_by_default_for_room_type: all`."""
    hub_port, hs_port = free_port(), free_port()
    config = {
        "data_dir": str(tmp_path / "hub"),
        "homeserver": {"url": f"http://127.0.0.1:{hs_port}", "domain": DOMAIN},
        "appservice": {"as_token": "CHANGE_ME", "hs_token": "CHANGE_ME"},
        "http": {"host": "127.0.0.1", "port": hub_port},
        "database": await hub_databases.section("refuses"),
        "shop": {"name": "Farbenhaus Verschlüsselt", "advisers": [f"@anna:{DOMAIN}"]},
        "channels": {"webchat": {"allowed_origins": ["http://shop.test"]}},
    }
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    registration = tmp_path / "registration.yaml"
    await generate_registration(config_path, registration)
    synapse = synapse_for_hub(
        load_config(config_path),
        registration,
        tmp_path / "synapse",
        await ensure_synapse_installed(),
        secrets.token_hex(16),
        for_tests=True,
        encrypt_new_rooms="all",
    )
    await synapse.start()
    try:
        proc = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "hub", "run", "-c", str(config_path)],
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), 90)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            pytest.fail("the hub kept running against a homeserver that encrypts new rooms")
    finally:
        await synapse.stop()
    output = out.decode(errors="replace")
    assert proc.returncode != 0, output
    assert "encryption_enabled_by_default_for_room_type" in output, output
    assert "encryption.enabled" in output, output
    assert "Traceback" not in output, output


async def test_a_homeserver_that_never_pushes_to_device_messages_is_named_at_start(
    tmp_path: Path, hub_databases: HubDatabases
) -> None:
    """Encryption on in the hub, but a Synapse without msc2409_to_device_messages_enabled:
    room keys could never arrive. The hub runs and says so in one WARNING line."""
    hub_port, hs_port = free_port(), free_port()
    config = {
        "data_dir": str(tmp_path / "hub"),
        "homeserver": {"url": f"http://127.0.0.1:{hs_port}", "domain": DOMAIN},
        "appservice": {"as_token": "CHANGE_ME", "hs_token": "CHANGE_ME"},
        "http": {"host": "127.0.0.1", "port": hub_port},
        "database": await hub_databases.section("no_to_device"),
        "shop": {"name": "Farbenhaus Halb", "advisers": [f"@anna:{DOMAIN}"]},
        "channels": {"webchat": {"allowed_origins": ["http://shop.test"]}},
        "encryption": {"enabled": True, "key_wait_seconds": 3},
    }
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    registration = tmp_path / "registration.yaml"
    await generate_registration(config_path, registration)
    synapse = synapse_for_hub(
        load_config(config_path),
        registration,
        tmp_path / "synapse",
        await ensure_synapse_installed(),
        secrets.token_hex(16),
        for_tests=True,
        appservice_encryption=False,
    )
    await synapse.start()
    hub = HubProcess(config_path, f"http://127.0.0.1:{hub_port}", tmp_path / "hub.log")
    try:
        await hub.start()
        deadline = asyncio.get_running_loop().time() + 20
        while "did not push a to-device message" not in hub.log_tail():
            assert asyncio.get_running_loop().time() < deadline, hub.log_tail()
            await asyncio.sleep(0.2)
        assert "msc2409_to_device_messages_enabled" in hub.log_tail()
    finally:
        await hub.stop()
        await synapse.stop()


async def put(
    http: aiohttp.ClientSession, stack: Stack, path: str, token: str, body: dict[str, Any]
) -> str:
    url = f"{stack.synapse.url}/_matrix/client/v3{path}"
    headers = {"Authorization": f"Bearer {token}"}
    async with http.put(url, json=body, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        return str((await resp.json())["event_id"])


def is_lock_notice(bot: str) -> Any:
    def check(ev: dict[str, Any]) -> bool:
        content = ev.get("content", {})
        return (
            ev.get("type") == "m.room.message"
            and ev.get("sender") == bot
            and content.get("msgtype") == "m.notice"
            and str(content.get("body", "")).startswith("🔒")
        )

    return check


async def test_an_unreadable_encrypted_reply_gets_one_notice_and_never_reaches_the_customer(
    stack: Stack, adviser: Adviser, visitor: Visitor, http: aiohttp.ClientSession
) -> None:
    room_id = await open_portal(adviser, visitor, "Geheim", "Ist die Farbe lieferbar?")
    as_token = yaml.safe_load(stack.config_path.read_text())["appservice"]["as_token"]
    room = quote(room_id, safe="")
    # The room turns encrypted, as an adviser's client (or the homeserver's default) makes it.
    await put(
        http, stack, f"/rooms/{room}/state/m.room.encryption/", as_token, {"algorithm": MEGOLM}
    )
    token = adviser.client.access_token

    async def send(event_type: str, content: dict[str, Any]) -> str:
        path = f"/rooms/{room}/send/{event_type}/{uuid.uuid4().hex}"
        return await put(http, stack, path, token, content)

    def ciphertext() -> dict[str, Any]:
        # What an encrypting client sends: a Megolm payload of a session the hub never got.
        return {
            "algorithm": MEGOLM,
            "ciphertext": secrets.token_urlsafe(96),
            "device_id": adviser.client.device_id,
            "sender_key": secrets.token_urlsafe(32),
            "session_id": secrets.token_urlsafe(32),
        }

    first = await send("m.room.encrypted", ciphertext())
    notice = await adviser.wait_event(room_id, is_lock_notice(stack.bot_mxid), timeout=30)
    assert notice["content"]["m.relates_to"] == {"m.in_reply_to": {"event_id": first}}

    await send("m.room.encrypted", ciphertext())
    # A clear command after it: events of a room are handled in order, so once it is
    # answered the second encrypted event has been handled too.
    command = await send("m.room.message", {"msgtype": "m.text", "body": "!help"})

    def answers_command(ev: dict[str, Any]) -> bool:
        return ev.get("sender") == stack.bot_mxid and command in json.dumps(ev.get("content"))

    await adviser.wait_event(room_id, answers_command, timeout=30)
    assert len(adviser.room_events(room_id, is_lock_notice(stack.bot_mxid))) == 1
    assert [m for m in visitor.received if m.get("direction") == "out"] == []
    assert [m for m in await visitor.history() if m.get("direction") == "out"] == []
