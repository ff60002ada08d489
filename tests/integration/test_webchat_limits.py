"""The widget API's rate limits (hub.bridges.webchat.limits applied by
hub.bridges.webchat.api) on the in-process API with a real database (SQLite and PostgreSQL):
over a limit 429 with Retry-After, counted, logged once however many, and nothing stored;
the client's address behind trusted proxies only."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import pytest

from hub.config import WebchatConfig
from hub.config.channels import WebchatLimits
from tests.integration.webchat_app import Sessions, WebchatApp, webchat_app

Limits = dict[str, int]


def _config(**limits: int) -> WebchatConfig:
    return WebchatConfig(limits=WebchatLimits(**limits))


@pytest.fixture
def limits() -> Limits:
    return {}


@pytest.fixture
def proxies() -> list[str]:
    return []


@pytest.fixture
async def hub(
    aiohttp_client: Any,
    db: Any,
    sessions: Sessions,
    tmp_path: Path,
    limits: Limits,
    proxies: list[str],
) -> AsyncIterator[WebchatApp]:
    async with webchat_app(
        aiohttp_client,
        db,
        sessions,
        tmp_path,
        config=_config(**limits),
        trusted_proxies=[ip_network(p) for p in proxies],
    ) as app:
        yield app


async def _refused(resp: Any, limit: str) -> int:
    """The 429's Retry-After (whole seconds), checked against its JSON."""
    assert resp.status == 429, await resp.text()
    doc = await resp.json()
    retry_after = int(resp.headers["Retry-After"])
    assert 1 <= retry_after <= 65
    assert doc["retry_after"] == retry_after
    assert doc["limit"] == limit
    assert "too many requests" in doc["error"]
    return retry_after


async def test_the_eleventh_session_from_one_address_is_refused(
    hub: WebchatApp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hub.bridges.webchat.api")
    for _ in range(10):
        resp = await hub.session()
        assert resp.status == 200
    assert await hub.visitors() == 10
    resp = await hub.session(name="Elfte")
    await _refused(resp, "sessions_per_address")
    assert await hub.visitors() == 10  # no visitor row
    assert hub.channel.limits.refused["sessions_per_address"] == 1

    # A flood of refusals: each counted, one log line.
    for _ in range(50):
        assert (await hub.session()).status == 429
    assert hub.channel.limits.refused["sessions_per_address"] == 51
    lines = [r for r in caplog.records if "sessions_per_address" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert await hub.visitors() == 10

    # The window slides: once the first sessions are a minute (and a slot) old, new ones.
    hub.clock.advance(66)
    caplog.clear()
    for _ in range(10):
        assert (await hub.session()).status == 200
    assert await hub.visitors() == 20
    # The next refusal is logged again, with how many were held back since the last line.
    for _ in range(20):
        assert (await hub.session()).status == 429
    lines = [r.getMessage() for r in caplog.records if "sessions_per_address" in r.getMessage()]
    assert len(lines) == 1 and "50 since the last line" in lines[0], lines


async def test_retry_after_is_honest(hub: WebchatApp) -> None:
    for _ in range(10):
        await hub.session()
        hub.clock.advance(3)  # 10 sessions over 27 s
    wait = await _refused(await hub.session(), "sessions_per_address")
    hub.clock.advance(wait - 1)
    assert (await hub.session()).status == 429
    hub.clock.advance(1)
    assert (await hub.session()).status == 200


async def test_known_visitors_come_back_without_counting_as_new(hub: WebchatApp) -> None:
    ana = await hub.visitor()
    token = ana["Authorization"][7:]
    for _ in range(9):
        await hub.session()  # ten new visitors from this address in all
    assert (await hub.session()).status == 429
    # Ana's page loads (and her name) still open her session: counted per visitor.
    for _ in range(10):
        resp = await hub.session(token=token, name="Ana")
        assert resp.status == 200
        assert (await resp.json())["visitor_id"] == ana["visitor_id"]
    await _refused(await hub.session(token=token), "sessions_per_visitor")
    assert await hub.visitors() == 10


@pytest.mark.parametrize("proxies", [["127.0.0.1/32"]])
async def test_behind_a_trusted_proxy_clients_are_counted_apart(hub: WebchatApp) -> None:
    one = {"X-Forwarded-For": "198.51.100.1"}
    two = {"X-Forwarded-For": "198.51.100.2"}
    for _ in range(10):
        assert (await hub.session(one)).status == 200
    await _refused(await hub.session(one), "sessions_per_address")
    # The other client behind the same proxy has its own count.
    for _ in range(10):
        assert (await hub.session(two)).status == 200
    assert (await hub.session(two)).status == 429
    # A client writing its own first entry: the proxy's entry (the last) is the client.
    forged = {"X-Forwarded-For": "203.0.113.50, 198.51.100.1"}
    assert (await hub.session(forged)).status == 429
    # Two header lines (a client's and the proxy's) are one list.
    resp = await hub.client.post(
        "/webchat/api/session",
        json={},
        headers=[("X-Forwarded-For", "203.0.113.51"), ("X-Forwarded-For", "198.51.100.2")],
    )
    assert resp.status == 429
    assert await hub.visitors() == 20
    # IPv6 clients are counted by their /64.
    for n in range(10):
        assert (await hub.session({"X-Forwarded-For": f"2001:db8:1:2::{n + 1}"})).status == 200
    assert (await hub.session({"X-Forwarded-For": "2001:db8:1:2:ffff::9"})).status == 429
    assert (await hub.session({"X-Forwarded-For": "2001:db8:1:3::1"})).status == 200


@pytest.mark.parametrize("proxies", [["10.0.0.0/8"]])
async def test_a_client_not_behind_a_trusted_proxy_cannot_spoof_its_address(
    hub: WebchatApp,
) -> None:
    # The test client connects from 127.0.0.1, which is no trusted proxy: its header is
    # ignored, whatever address it claims.
    for n in range(10):
        resp = await hub.session({"X-Forwarded-For": f"198.51.100.{n + 1}"})
        assert resp.status == 200
    resp = await hub.session({"X-Forwarded-For": "198.51.100.99"})
    await _refused(resp, "sessions_per_address")
    assert await hub.visitors() == 10


@pytest.mark.parametrize("limits", [{"new_conversations": 3}])
async def test_new_conversations_are_capped_for_the_shop(hub: WebchatApp) -> None:
    visitors = [await hub.visitor() for _ in range(5)]
    for who in visitors[:3]:
        assert (await hub.say(who, "Guten Tag")).status == 201
    assert await hub.conversations() == 3
    before = await hub.messages()

    # A fourth first message would open a fourth conversation this minute.
    resp = await hub.say(visitors[3], "Hallo?")
    await _refused(resp, "new_conversations")
    # Also as a file: refused before the file is written.
    resp = await hub.upload(visitors[4], uuid.uuid4().hex)
    await _refused(resp, "new_conversations")
    assert (await hub.conversations(), await hub.messages()) == (3, before)
    assert hub.media_files() == set() and await hub.media_rows() == set()
    assert hub.channel.limits.refused["new_conversations"] == 2

    # Visitors with a conversation write on: their messages open nothing.
    for who in visitors[:3]:
        assert (await hub.say(who, "Noch eine Frage")).status == 201
    # A minute later the refused message goes through (the widget kept it).
    hub.clock.advance(66)
    assert (await hub.say(visitors[3], "Hallo?")).status == 201
    assert await hub.conversations() == 4


@pytest.mark.parametrize("limits", [{"new_conversations": 1}])
async def test_a_conversation_known_only_to_the_database_is_not_new(hub: WebchatApp) -> None:
    ana = await hub.visitor()
    assert (await hub.say(ana, "Hallo")).status == 201
    # As another process (or this one a minute later) sees her: from the database.
    assert hub.channel.api is not None
    hub.channel.api._known.clear()
    assert (await hub.say(ana, "Ich bin es wieder")).status == 201
    assert hub.channel.limits.refused["new_conversations"] == 0


@pytest.mark.parametrize("limits", [{"messages_per_visitor": 5}])
async def test_messages_per_visitor(hub: WebchatApp) -> None:
    ana, bo = await hub.visitor(), await hub.visitor()
    for n in range(5):
        assert (await hub.say(ana, f"Nachricht {n}")).status == 201
    before = await hub.messages()
    resp = await hub.say(ana, "eine zu viel")
    await _refused(resp, "messages_per_visitor")
    # A tapped button is a message too.
    resp = await hub.say(ana, "Ja", button_id="consent.yes")
    assert resp.status == 429
    assert await hub.messages() == before
    # Another visitor from the same address is not held up.
    assert (await hub.say(bo, "Hallo")).status == 201
    assert hub.channel.limits.refused["messages_per_visitor"] == 2


@pytest.mark.parametrize("limits", [{"messages_per_address": 4}])
async def test_messages_per_address(hub: WebchatApp) -> None:
    ana, bo = await hub.visitor(), await hub.visitor()
    for who in (ana, bo, ana, bo):
        assert (await hub.say(who, "Hallo")).status == 201
    await _refused(await hub.say(ana, "Hallo"), "messages_per_address")
    await _refused(await hub.upload(bo, uuid.uuid4().hex), "messages_per_address")
    assert await hub.messages() == 4
    assert hub.media_files() == set()


@pytest.mark.parametrize("limits", [{"uploads_per_visitor": 2}])
async def test_uploads_per_visitor_nothing_written(hub: WebchatApp) -> None:
    ana = await hub.visitor()
    for _ in range(2):
        assert (await hub.upload(ana, uuid.uuid4().hex)).status == 201
    files = hub.media_files()
    assert len(files) == 2 and await hub.media_rows() == files
    await _refused(await hub.upload(ana, uuid.uuid4().hex), "uploads_per_visitor")
    assert hub.media_files() == files
    # Text messages have their own limit.
    assert (await hub.say(ana, "Und noch Text")).status == 201


@pytest.mark.parametrize("limits", [{"uploads_per_visitor": 10}])
async def test_an_upload_sent_again_leaves_no_second_file(hub: WebchatApp) -> None:
    ana = await hub.visitor()
    client_id = uuid.uuid4().hex
    first = await hub.upload(ana, client_id)
    assert first.status == 201
    again = await hub.upload(ana, client_id)
    assert again.status == 200
    assert (await again.json())["message"]["id"] == (await first.json())["message"]["id"]
    files = hub.media_files()
    assert len(files) == 1 and await hub.media_rows() == files


async def test_429_carries_the_cors_headers_the_widget_needs(hub: WebchatApp) -> None:
    shop = {"Origin": "http://hub.test"}
    for _ in range(10):
        await hub.session(shop)
    resp = await hub.session(shop)
    assert resp.status == 429
    assert resp.headers["Access-Control-Allow-Origin"] == "http://hub.test"
    assert "Retry-After" in resp.headers["Access-Control-Expose-Headers"]


@pytest.mark.parametrize("limits", [{"messages_per_visitor": 2}])
async def test_read_receipts_over_the_websocket_are_limited_too(hub: WebchatApp) -> None:
    """Messages cannot be sent over the websocket, but each read receipt that moves on is a
    write: as many per visitor as messages; the rest are dropped (a later one covers them)
    and the socket stays."""
    ana = await hub.visitor()
    ws = await hub.client.ws_connect("/webchat/ws")
    await ws.send_json({"type": "auth", "token": ana["Authorization"][7:], "after": 0})
    assert (await ws.receive_json(timeout=5)) == {"type": "ready"}
    for up_to in range(1, 6):
        await ws.send_json({"type": "read", "up_to": up_to})
    await ws.send_json({"type": "ping"})
    assert (await ws.receive_json(timeout=5)) == {"type": "pong"}
    await ws.close()
    assert hub.channel.limits.refused["reads_per_visitor"] == 3
