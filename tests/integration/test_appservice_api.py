"""The appservice API (hub.matrix.appservice) on an aiohttp test server with a real
database: authentication, transaction storage and dedupe, limits, and hostile input."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.db.database import Database
from hub.db.jobs import LeaseOffer
from hub.db.models import InboxTransaction, OutboxItem
from hub.jobs.kinds import MATRIX_EVENT, MATRIX_RECEIPT_IN
from hub.matrix import appservice
from hub.matrix.appservice import AppserviceApi
from tests.integration.conftest import BACKENDS

Sessions = async_sessionmaker[AsyncSession]
HS_TOKEN = "hs-token-" + "7" * 32
DOMAIN = "shop.example"
BOT = f"@shopbot:{DOMAIN}"
GHOST = f"@customer_web_k3j2:{DOMAIN}"
ANNA = f"@anna:{DOMAIN}"
AUTH = {"Authorization": f"Bearer {HS_TOKEN}"}
V1 = "/_matrix/app/v1"


@pytest.fixture
def backend() -> str:
    """SQLite only, unless a test asks for more (overrides the conftest parametrization)."""
    return "sqlite"


def is_own_user(mxid: str) -> bool:
    return mxid == BOT or (mxid.startswith("@customer_") and mxid.endswith(f":{DOMAIN}"))


def is_own_alias(alias: str) -> bool:
    return alias.startswith("#hubportal_")


@dataclass
class Api:
    client: TestClient[Any, Any]
    sessions: Sessions
    stored: list[int] = field(default_factory=list)  # one entry per commit that queued jobs
    fail_on_sender: set[str] = field(default_factory=set)

    async def put_txn(self, txn_id: str, body: Any, **kwargs: Any) -> Any:
        data = json.dumps(body) if isinstance(body, dict | list) else body
        headers = kwargs.pop("headers", AUTH)
        return await self.client.put(
            f"{V1}/transactions/{txn_id}", data=data, headers=headers, **kwargs
        )

    async def jobs(self) -> list[OutboxItem]:
        async with self.sessions() as s:
            return list(await s.scalars(select(OutboxItem).order_by(OutboxItem.id)))

    async def txn_count(self) -> int:
        async with self.sessions() as s:
            return int(await s.scalar(select(func.count()).select_from(InboxTransaction)) or 0)


class RecordingSink:
    """The job worker as the database sees it: records the commits that queued jobs."""

    def __init__(self, stored: list[int]) -> None:
        self.stored = stored

    def offer(self, urgent: bool) -> LeaseOffer | None:
        return None

    def settled(self, offer: LeaseOffer | None, queued: bool, committed: bool) -> None:
        if queued and committed:
            self.stored.append(1)


@pytest.fixture
async def api(aiohttp_client: Any, db: Database, sessions: Sessions) -> AsyncIterator[Api]:
    holder: dict[str, Api] = {}
    stored: list[int] = []
    db.sink = RecordingSink(stored)

    def own_user(mxid: str) -> bool:
        if mxid in holder["api"].fail_on_sender:
            raise RuntimeError("simulated failure while storing")
        return is_own_user(mxid)

    app = web.Application()
    AppserviceApi(db, HS_TOKEN, own_user, is_own_alias).add_routes(app)
    client = await aiohttp_client(app)
    holder["api"] = Api(client, sessions, stored)
    yield holder["api"]


def event(n: int | str, room: str = "!shop:shop.example", sender: str = ANNA, **extra: Any) -> Any:
    return {
        "event_id": f"$event{n}",
        "room_id": room,
        "type": "m.room.message",
        "sender": sender,
        "content": {"msgtype": "m.text", "body": f"message {n}"},
        "origin_server_ts": 1_700_000_000_000,
        **extra,
    }


async def assert_error(resp: Any, status: int, errcode: str) -> None:
    assert resp.status == status
    body = await resp.json()
    assert body["errcode"] == errcode
    assert isinstance(body["error"], str) and body["error"]


# --- authentication ---------------------------------------------------------------------------

ENDPOINTS = [
    ("PUT", f"{V1}/transactions/t1"),
    ("PUT", "/transactions/t1"),
    ("GET", f"{V1}/users/{GHOST}"),
    ("GET", f"/users/{GHOST}"),
    ("GET", f"{V1}/rooms/%23hubportal_1:{DOMAIN}"),
    ("GET", f"/rooms/%23hubportal_1:{DOMAIN}"),
    ("POST", f"{V1}/ping"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
async def test_missing_token_is_401(api: Api, method: str, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Basic abc"}):
        resp = await api.client.request(method, path, data="{}", headers=headers)
        await assert_error(resp, 401, "M_UNAUTHORIZED")
    assert await api.jobs() == [] and await api.txn_count() == 0


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
async def test_wrong_token_is_403(api: Api, method: str, path: str) -> None:
    for kwargs in (
        {"headers": {"Authorization": "Bearer wrong-token"}},
        {"headers": {"Authorization": f"Bearer {HS_TOKEN}x"}},
        {"params": {"access_token": "wrong-token"}},
        {"params": {"access_token": HS_TOKEN[:-1]}},
    ):
        resp = await api.client.request(method, path, data='{"events": []}', **kwargs)
        await assert_error(resp, 403, "M_FORBIDDEN")
    assert await api.txn_count() == 0


async def test_legacy_access_token_query_is_accepted(api: Api) -> None:
    resp = await api.client.put(
        "/transactions/legacy",
        data=json.dumps({"events": [event(1)]}),
        params={"access_token": HS_TOKEN},
    )
    assert resp.status == 200
    assert [j.payload["event_id"] for j in await api.jobs()] == ["$event1"]


async def test_non_utf8_token_bytes_are_forbidden_not_a_crash(api: Api) -> None:
    """aiohttp hands undecodable header bytes over as lone surrogates ("\\udcff")."""
    server = api.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(
            b"GET /_matrix/app/v1/users/@a:shop.example HTTP/1.1\r\n"
            b"Host: localhost\r\nAuthorization: Bearer \xff\xfe-not-utf8\r\n"
            b"Connection: close\r\n\r\n"
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()
    assert status_line.split()[1] == b"403", status_line


# --- transactions -----------------------------------------------------------------------------


async def test_transaction_queues_each_event_in_room_order(api: Api) -> None:
    events = [event(1), event(2, room="!other:shop.example"), event(3)]
    resp = await api.put_txn("txn-1", {"events": events})
    assert resp.status == 200
    assert await resp.json() == {}
    jobs = await api.jobs()
    assert [(j.kind, j.ordering_key, j.idempotency_key, j.payload) for j in jobs] == [
        (MATRIX_EVENT, "room:!shop:shop.example", "matrix.event/$event1", events[0]),
        (MATRIX_EVENT, "room:!other:shop.example", "matrix.event/$event2", events[1]),
        (MATRIX_EVENT, "room:!shop:shop.example", "matrix.event/$event3", events[2]),
    ]
    assert all(j.status == "pending" for j in jobs)
    assert api.stored == [1]  # the worker was woken once
    assert await api.txn_count() == 1


async def test_empty_transaction_is_acknowledged(api: Api) -> None:
    resp = await api.put_txn("empty", {"events": [], "ephemeral": []})
    assert resp.status == 200
    assert await api.jobs() == []
    assert api.stored == []


def receipt(event_id: str, reader: str = ANNA, ts: int = 1) -> Any:
    return {
        "type": "m.receipt",
        "room_id": "!shop:shop.example",
        "content": {event_id: {"m.read": {reader: {"ts": ts}}}},
    }


def appservice_logs(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "hub.matrix.appservice" and r.levelno == level
    ]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_retried_transaction_is_stored_once(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """The homeserver retries a transaction it saw no answer for: same id, same events."""
    caplog.set_level(logging.INFO, "hub.matrix.appservice")
    body = {"events": [event(1), event(2)], "ephemeral": [receipt("$c1")]}
    for _ in range(3):
        resp = await api.put_txn("10", body)
        assert resp.status == 200
        assert await resp.json() == {}
    # Synapse drops the ephemeral part when it retries after its own restart: still a retry.
    assert (await api.put_txn("10", {"events": [event(2), event(1)]})).status == 200
    assert [j.idempotency_key for j in await api.jobs()] == [
        "matrix.event/$event1",
        "matrix.event/$event2",
        f"matrix.receipt_in/edu:{appservice._digest(receipt('$c1'))}",
    ]
    assert api.stored == [1]  # the worker was woken once
    assert await api.txn_count() == 1
    assert appservice_logs(caplog, logging.WARNING) == []
    assert (
        appservice_logs(caplog, logging.INFO)
        == ["appservice: transaction 10 repeated; its events were stored already"] * 3
    )


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_reused_txn_id_with_new_events_stores_the_new_events(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """Synapse on SQLite numbers its transactions from 1 again after a restart
    (element-hq/synapse#14556): a txnId seen before carries events never seen. Each event
    is stored once, whatever transaction (id) brings it."""
    caplog.set_level(logging.INFO, "hub.matrix.appservice")
    assert (await api.put_txn("10", {"events": [event(1), event(2)]})).status == 200
    resp = await api.put_txn("10", {"events": [event(2), event(3), event(4)]})
    assert resp.status == 200
    assert await resp.json() == {}
    assert [j.payload["event_id"] for j in await api.jobs()] == [
        "$event1",
        "$event2",
        "$event3",
        "$event4",
    ]
    assert all(j.kind == MATRIX_EVENT and j.status == "pending" for j in await api.jobs())
    assert api.stored == [1, 1]
    [warning] = appservice_logs(caplog, logging.WARNING)
    assert "transaction 10 repeated with different content (2 new of 3 events)" in warning
    assert "element-hq/synapse#14556" in warning
    # The next reuses within the hour are told at INFO (a restarted Synapse repeats ids for
    # as long as it takes to pass the old ones), and still lose nothing.
    assert (await api.put_txn("11", {"events": [event(5)]})).status == 200
    assert (await api.put_txn("11", {"events": [event(6)]})).status == 200
    assert (await api.put_txn("10", {"events": [event(7)]})).status == 200
    assert len(appservice_logs(caplog, logging.WARNING)) == 1
    assert appservice_logs(caplog, logging.INFO)[-2:] == [
        "appservice: transaction 11 repeated with 1 new of 1 events; stored them",
        "appservice: transaction 10 repeated with 1 new of 1 events; stored them",
    ]
    assert [j.payload["event_id"] for j in await api.jobs()] == [f"$event{n}" for n in range(1, 8)]
    assert await api.txn_count() == 2


async def test_a_homeserver_restart_mid_conversation_loses_no_event(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The incident of issue 12, forced: five adviser replies in transactions 1-5, the
    homeserver restarts and numbers from 1 again; the next five replies all get through (4
    of 5 were dropped as "already stored" before)."""
    caplog.set_level(logging.INFO, "hub.matrix.appservice")
    for n in range(1, 6):
        assert (await api.put_txn(str(n), {"events": [event(n)]})).status == 200
    # Restarted: ids 1-5 again, with new events and receipts; one of the replies is in two
    # transactions (the homeserver may batch differently).
    for n in range(1, 6):
        body = {"events": [event(n + 5)], "ephemeral": [receipt(f"$event{n + 5}", ts=n)]}
        if n == 3:
            body["events"].append(event(9))
        assert (await api.put_txn(str(n), body)).status == 200
    assert (await api.put_txn("6", {"events": [event(10), event(9)]})).status == 200
    jobs = await api.jobs()
    events = [j.payload["event_id"] for j in jobs if j.kind == MATRIX_EVENT]
    assert events == [f"$event{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)]
    assert len([j for j in jobs if j.kind == MATRIX_RECEIPT_IN]) == 5
    [warning] = appservice_logs(caplog, logging.WARNING)
    assert warning.startswith("appservice: transaction 1 repeated with different content")
    # An hour later, the next reuse is worth a warning again, with the count in between.
    later = time.monotonic() + appservice.REUSE_WARNING_SECONDS + 1
    monkeypatch.setattr(appservice, "time", SimpleNamespace(monotonic=lambda: later))
    assert (await api.put_txn("2", {"events": [event(11)]})).status == 200
    assert (
        "4 more such transactions since the last warning"
        in (appservice_logs(caplog, logging.WARNING)[-1])
    )


async def test_receipts_are_deduplicated_by_content_not_by_txn_id(api: Api) -> None:
    """A receipt has no id; its place in a transaction is no identity once txnIds repeat."""
    first = receipt("$event1", ts=1)
    assert (await api.put_txn("20", {"events": [], "ephemeral": [first]})).status == 200
    # Reused id, new receipt at the same index: stored. The same receipt again: not.
    second = receipt("$event2", ts=2)
    assert (await api.put_txn("20", {"events": [], "ephemeral": [second]})).status == 200
    assert (await api.put_txn("21", {"events": [], "ephemeral": [second, first]})).status == 200
    # The legacy MSC2409 key is read the same way.
    third = receipt("$event3", ts=3)
    body = {"events": [], "de.sorunome.msc2409.ephemeral": [third]}
    assert (await api.put_txn("20", body)).status == 200
    receipts = [j for j in await api.jobs() if j.kind == MATRIX_RECEIPT_IN]
    assert [j.payload for j in receipts] == [first, second, third]
    assert all(j.ordering_key == "room:!shop:shop.example" for j in receipts)


async def test_the_same_event_in_a_new_transaction_is_not_duplicated(api: Api) -> None:
    assert (await api.put_txn("txn-1", {"events": [event(1)]})).status == 200
    resp = await api.put_txn("txn-2", {"events": [event(1), event(2)]})
    assert resp.status == 200
    assert [j.payload["event_id"] for j in await api.jobs()] == ["$event1", "$event2"]
    assert await api.txn_count() == 2


async def test_events_of_own_users_are_dropped(api: Api) -> None:
    events = [
        event(1, sender=BOT),
        event(2, sender=GHOST),
        event(3, sender=ANNA),
        event(4, sender="@customer_web_k3j2:elsewhere.example"),  # not ours: kept
    ]
    resp = await api.put_txn("txn-1", {"events": events})
    assert resp.status == 200
    assert [j.payload["event_id"] for j in await api.jobs()] == ["$event3", "$event4"]


async def test_only_own_events_do_not_wake_the_worker(api: Api) -> None:
    assert (await api.put_txn("txn-1", {"events": [event(1, sender=BOT)]})).status == 200
    assert api.stored == []
    assert await api.txn_count() == 0  # nothing worth a write
    assert await api.jobs() == []


async def test_malformed_events_are_skipped_and_the_rest_stored(api: Api) -> None:
    no_id = event("x")
    del no_id["event_id"]
    events = [
        "not an event",
        None,
        42,
        [event(90)],
        no_id,
        event("int-room", room=12345),  # type: ignore[arg-type]
        {**event("int-sender"), "sender": None},
        {**event("no-type"), "type": ["m.room.message"]},
        event("long-room", room="!" + "r" * 300),
        {**event(0), "event_id": "$" + "e" * 300},
        event(1),
        event(2),
    ]
    resp = await api.put_txn("txn-1", {"events": events})
    assert resp.status == 200
    assert [j.payload["event_id"] for j in await api.jobs()] == ["$event1", "$event2"]


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        (b"{not json", "M_NOT_JSON"),
        (b"", "M_NOT_JSON"),
        (b'{"events": [1, 2', "M_NOT_JSON"),
        (b"\xff\xfe\x00garbage", "M_NOT_JSON"),
        (b"[]", "M_BAD_JSON"),
        (b'"events"', "M_BAD_JSON"),
        (b"{}", "M_BAD_JSON"),
        (b'{"events": {"0": {}}}', "M_BAD_JSON"),
        (b'{"events": null}', "M_BAD_JSON"),
        (b'{"events": "[]"}', "M_BAD_JSON"),
    ],
)
async def test_bad_bodies_are_400(api: Api, body: bytes, errcode: str) -> None:
    resp = await api.put_txn("txn-bad", body)
    await assert_error(resp, 400, errcode)
    assert await api.jobs() == []
    # A refused transaction is not remembered: the same txnId with a good body is processed.
    assert (await api.put_txn("txn-bad", {"events": [event(1)]})).status == 200
    assert len(await api.jobs()) == 1


async def test_oversized_transactions_are_413(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    limit = 4096
    monkeypatch.setattr(appservice, "MAX_TRANSACTION_BYTES", limit)

    def body_of(size: int) -> bytes:
        padding = "x" * 100
        doc = {"events": [event(1, pad=padding)]}
        raw = json.dumps(doc).encode()
        doc["events"][0]["pad"] = padding + "y" * (size - len(raw))
        raw = json.dumps(doc).encode()
        assert len(raw) == size
        return raw

    # Declared too large by Content-Length:
    resp = await api.put_txn("big-1", body_of(limit + 1))
    await assert_error(resp, 413, "M_TOO_LARGE")

    # Too large without a Content-Length (chunked): the cap holds while reading.
    async def chunks() -> AsyncIterator[bytes]:
        data = body_of(3 * limit)
        for i in range(0, len(data), 1000):
            yield data[i : i + 1000]

    resp = await api.put_txn("big-2", chunks())
    await assert_error(resp, 413, "M_TOO_LARGE")
    assert await api.jobs() == [] and await api.txn_count() == 0

    # Exactly at the limit is fine.
    resp = await api.put_txn("fits", body_of(limit))
    assert resp.status == 200
    assert len(await api.jobs()) == 1


async def test_a_failure_while_storing_is_500_and_nothing_is_kept(api: Api) -> None:
    """The homeserver retries on 500; the retry must not be taken for a duplicate."""
    api.fail_on_sender.add("@flaky:shop.example")
    events = [event(1), event(2, sender="@flaky:shop.example")]
    resp = await api.put_txn("txn-1", {"events": events})
    assert resp.status == 500
    assert await api.jobs() == [] and await api.txn_count() == 0
    assert api.stored == []

    api.fail_on_sender.clear()
    resp = await api.put_txn("txn-1", {"events": events})
    assert resp.status == 200
    assert [j.payload["event_id"] for j in await api.jobs()] == ["$event1", "$event2"]


# --- hostile text -----------------------------------------------------------------------------

UNICODE_BODIES = [
    "emoji 👩\u200d👩\u200d👧 🇲🇹 and RTL שלום مرحبا \u202edesrever\u202c",
    "lone surrogates \ud800 and \udfff",
    "NUL \u0000 and controls \u0007\u001b[31m",
    "noncharacters \ufffe \uffff \U0010ffff",
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("text", UNICODE_BODIES, ids=["emoji-rtl", "surrogate", "nul", "nonchar"])
async def test_any_unicode_in_content_is_stored_exactly(api: Api, text: str) -> None:
    ev = event(1, content={"msgtype": "m.text", "body": text, "formatted_body": f"<b>{text}</b>"})
    # json.dumps writes the escapes (\ud800, \u0000) the way a homeserver would.
    resp = await api.put_txn("txn-u", json.dumps({"events": [ev]}))
    assert resp.status == 200
    (job,) = await api.jobs()
    assert job.payload == ev


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "where",
    ["event_id", "room_id", "sender", "type"],
)
@pytest.mark.parametrize("bad", ["\ud800", "\u0000"], ids=["lone-surrogate", "nul"])
async def test_unstorable_ids_do_not_block_the_transaction(api: Api, where: str, bad: str) -> None:
    """A string the database cannot hold in an id field (a lone surrogate cannot be encoded
    as UTF-8; PostgreSQL text cannot hold NUL) must not turn the transaction into a 500:
    the homeserver would retry it forever and every later event would wait behind it."""
    poisoned = event(1)
    poisoned[where] = poisoned[where] + bad
    resp = await api.put_txn("txn-p", json.dumps({"events": [poisoned, event(2)]}))
    assert resp.status == 200
    stored = [j.payload["event_id"] for j in await api.jobs()]
    assert "$event2" in stored


@pytest.mark.parametrize("backend", BACKENDS)
async def test_longest_accepted_ids_fit_the_database(api: Api) -> None:
    """_is_event accepts ids of up to 255 characters; storing them must not fail (the job's
    idempotency key puts "matrix.event/" before the event id)."""
    longest = event(1, room="!" + "r" * 254)
    longest["event_id"] = "$" + "e" * 254
    resp = await api.put_txn("txn-long", json.dumps({"events": [longest, event(2)]}))
    assert resp.status == 200
    assert [j.payload["event_id"] for j in await api.jobs()] == [longest["event_id"], "$event2"]


# --- queries and ping -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        f"{V1}/users/{GHOST}",
        f"{V1}/users/@stranger:other.example",
        f"/users/{GHOST}",
        f"{V1}/rooms/%23hubportal_7:{DOMAIN}",
        f"{V1}/rooms/%23random:{DOMAIN}",
        f"/rooms/%23hubportal_7:{DOMAIN}",
    ],
)
async def test_user_and_room_queries_are_404_in_matrix_shape(api: Api, path: str) -> None:
    resp = await api.client.get(path, headers=AUTH)
    await assert_error(resp, 404, "M_NOT_FOUND")
    assert resp.content_type == "application/json"


@pytest.mark.parametrize(
    "body", [b'{"transaction_id": "ping-1"}', b"", b"not json", b"[1, 2]", b'"text"']
)
async def test_ping_answers_200(api: Api, body: bytes) -> None:
    resp = await api.client.post(f"{V1}/ping", data=body, headers=AUTH)
    assert resp.status == 200
    assert await resp.json() == {}
