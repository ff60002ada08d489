"""`hub gdpr erase` end to end, against the session's real Synapse and running hub: a widget
visitor writes and sends a photo, the adviser answers; the erasure (the command line, as an
admin runs it, naming the customer by the room the adviser has open) purges the room, deletes
the photo from the homeserver's media store and the hub's, deactivates the ghost, and leaves
no row in any table that refers to the customer."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import yaml
from sqlalchemy import select

from hub.config import Config, load_config
from hub.db import conversations
from hub.db.database import Database, Tx
from hub.db.engine import open_database
from hub.db.models import Base, ChannelIdentity, MediaFile, Message
from tests.e2e.conftest import Stack
from tests.e2e.helpers import REPO, Adviser, Visitor, is_message, open_portal, tiny_png

pytestmark = pytest.mark.e2e


@pytest.fixture
async def gdpr_config(stack: Stack, tmp_path: Path) -> tuple[Path, str]:
    """The stack's config with homeserver.admin_token (added here if the stack has none)."""
    data = yaml.safe_load(stack.config_path.read_text(encoding="utf-8"))
    token = (data.get("homeserver") or {}).get("admin_token")
    if token:
        return stack.config_path, str(token)
    token = await stack.synapse.admin_token()
    data["homeserver"]["admin_token"] = token
    path = tmp_path / "config-with-admin.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path, token


@pytest.fixture
async def hub_db(stack: Stack) -> AsyncIterator[tuple[Database, Config]]:
    config = load_config(stack.config_path)
    db = open_database(config.database_url)
    try:
        yield db, config
    finally:
        await db.close()


async def hub_cli(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "hub", *args],
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def admin_get(
    http: aiohttp.ClientSession, stack: Stack, token: str, path: str
) -> tuple[int, Any]:
    async with http.get(
        stack.synapse.url + path, headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        return resp.status, await resp.json(content_type=None)


def dump(tx: Tx) -> dict[str, list[dict[str, Any]]]:
    return {
        t.name: [dict(r._mapping) for r in tx.conn.execute(select(t))]
        for t in Base.metadata.sorted_tables
    }


async def test_erase_purges_the_room_media_ghost_and_every_row(
    stack: Stack,
    adviser: Adviser,
    visitor: Visitor,
    http: aiohttp.ClientSession,
    gdpr_config: tuple[Path, str],
    hub_db: tuple[Database, Config],
) -> None:
    config_path, token = gdpr_config
    db, config = hub_db
    room_id = await open_portal(adviser, visitor, "Gdpr Eraseme", "Hallo, erase-me-text")
    png = tiny_png((10, 200, 90))
    await visitor.upload(png, "erase-me.png", "image/png")
    image = await adviser.wait_event(room_id, is_message(msgtype="m.image"))
    ghost = image["sender"]
    mxc = image["content"]["url"]
    await adviser.send_text(room_id, "Thanks, erase-me-reply")
    await visitor.wait_message(lambda m: m["direction"] == "out")
    await visitor.disconnect()

    conversation = await db.read(conversations.conversation_by_room, room_id)
    assert conversation is not None

    def mine(tx: Tx) -> tuple[list[int], list[str], int]:
        messages = tx.conn.execute(
            select(Message.id).where(Message.conversation_id == conversation.id)
        ).scalars()
        files = tx.conn.execute(
            select(MediaFile.id).where(MediaFile.conversation_id == conversation.id)
        ).scalars()
        identity = tx.conn.execute(
            select(ChannelIdentity.customer_id).where(
                ChannelIdentity.id == conversation.identity_id
            )
        ).scalar_one()
        return list(messages), list(files), identity

    message_ids, file_ids, customer_id = await db.read(mine)
    assert len(message_ids) >= 3 and len(file_ids) == 1
    assert config.media_dir.joinpath(file_ids[0][:2], file_ids[0]).exists()

    # A dry run first: the plan, nothing changed.
    code, out = await hub_cli("gdpr", "erase", room_id, "-c", str(config_path), "--dry-run")
    assert code == 0, out
    assert "would erase" in out and f"messages {len(message_ids)}" in out
    assert room_id in out and ghost in out
    status, _ = await admin_get(http, stack, token, f"/_synapse/admin/v1/rooms/{quote(room_id)}")
    assert status == 200

    code, out = await hub_cli("gdpr", "erase", room_id, "-c", str(config_path), "--yes")
    assert code == 0, out
    assert "1 room purged" in out and "1 ghost deactivated" in out, out

    # The homeserver: the room is gone, the photo answers 404, the ghost is deactivated.
    status, _ = await admin_get(http, stack, token, f"/_synapse/admin/v1/rooms/{quote(room_id)}")
    assert status == 404
    server, media_id = mxc[len("mxc://") :].split("/")
    async with http.get(
        f"{stack.synapse.url}/_matrix/client/v1/media/download/{server}/{media_id}",
        headers={"Authorization": f"Bearer {adviser.client.access_token}"},
    ) as resp:
        assert resp.status == 404
    status, user = await admin_get(http, stack, token, f"/_synapse/admin/v2/users/{quote(ghost)}")
    assert status == 200 and user["deactivated"] is True
    # The hub's own copy.
    assert not config.media_dir.joinpath(file_ids[0][:2], file_ids[0]).exists()

    # No row of any table refers to the customer.
    tables = await db.read(dump)
    needles = [
        "Gdpr Eraseme",
        "erase-me",
        room_id,
        ghost.split(":")[0][1:],
        media_id,
        file_ids[0],
        str(visitor.visitor_id),
    ]
    gone = {
        "conversation_id": {conversation.id},
        "identity_id": {conversation.identity_id},
        "customer_id": {customer_id},
        "message_id": set(message_ids),
    }
    found = []
    for name, rows in tables.items():
        for row in rows:
            text = json.dumps(row, default=str, ensure_ascii=False)
            found += [f"{name}: {n!r} in {text}" for n in needles if n in text]
            for column, value in row.items():
                if isinstance(value, int) and value in gone.get(column, ()):
                    found.append(f"{name}.{column} = {value}")
            if name == "outbox":
                if row["ordering_key"] == f"conv:{conversation.id}":
                    found.append(f"outbox: job {row['id']} of the conversation")
                for key, value in row["payload"].items():
                    if isinstance(value, int) and value in gone.get(key, ()):
                        found.append(f"outbox: job {row['id']} names {key} {value}")
    assert found == []
    assert [r["reason"] for r in tables["erasures"]][-1:] == ["request"]

    # Again: nobody to find.
    code, out = await hub_cli("gdpr", "erase", room_id, "-c", str(config_path), "--yes")
    assert code == 2 and "nothing to erase" in out
