"""Ghosts are registered with `inhibit_login` (issue 12): the homeserver makes no device and
no access token for them; the hub acts as them with its as_token and `?user_id=`."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from tests.e2e.conftest import Stack
from tests.e2e.helpers import Adviser, Visitor, is_message, open_portal

pytestmark = pytest.mark.e2e


async def devices(http: aiohttp.ClientSession, stack: Stack, token: str, mxid: str) -> Any:
    path = f"/_synapse/admin/v2/users/{quote(mxid)}/devices"
    async with http.get(
        stack.synapse.url + path, headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        doc = await resp.json(content_type=None)
        assert resp.status == 200, doc
        return doc


async def test_ghosts_and_the_bot_have_no_device(
    stack: Stack, adviser: Adviser, visitor: Visitor, http: aiohttp.ClientSession
) -> None:
    room_id = await open_portal(adviser, visitor, "Device Test", "Gibt es das in Blau?")
    ghost = (await adviser.wait_event(room_id, is_message(body="Gibt es das in Blau?")))["sender"]
    assert ghost.startswith("@customer_web_")
    # The ghost acted (joined, wrote, has a display name) and still has no device.
    await visitor.say("Und in Grün?")
    await adviser.wait_event(room_id, is_message(body="Und in Grün?", sender=ghost))
    token = await stack.synapse.admin_token()
    assert await devices(http, stack, token, ghost) == {"devices": [], "total": 0}
    assert await devices(http, stack, token, stack.bot_mxid) == {"devices": [], "total": 0}
    # A user who logs in has one: the check can see devices.
    found = await devices(http, stack, token, stack.adviser_mxid)
    assert found["total"] >= 1
