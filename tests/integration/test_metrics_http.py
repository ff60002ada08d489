"""Monitoring over HTTP (issue 15): /metrics, /healthz and /readyz of the real application
(hub.app.create_app with the web chat and Telegram, a stand-in homeserver), read the way
Prometheus reads them: prometheus-client's own parser.

- /metrics parses, and its counters move when a webhook, a homeserver transaction or a
  failing job arrives; the queue's figures are the database's; the widget's websockets are
  counted while open.
- Only `metrics.allowed` reads it: 403 for anyone else, and an X-Forwarded-For from a peer
  that is not a trusted proxy changes nothing (from a trusted one, it decides).
- A slow database never hangs the scrape: `hub_job_queue_up 0` instead.
- /readyz is 200 while the database and the homeserver answer, 503 naming the homeserver once
  its port is closed, 503 naming the database when it fails.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from hub.app import DB, WORKER, create_app
from hub.bridges.telegram.channel import SECRET_HEADER
from hub.config import Config, OutboxConfig
from hub.db import jobs
from hub.db.database import Database, Tx
from hub.errors import ExternalError
from hub.http.metrics import MetricsEndpoint
from hub.http.pages import Readiness
from hub.jobs.job import Job, PermanentFailure
from hub.jobs.worker import Worker
from tests.standins.loopback import serve_on_loopback
from tests.standins.telegram import TelegramStandin

# The start-up step that waits for the hub to listen (a TestServer never says so) is cancelled
# with its coroutines unstarted at the end.
pytestmark = pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")

DOMAIN = "shop.example"
BOT = f"@shopbot:{DOMAIN}"
HS_TOKEN = "h" * 32
Client = TestClient[Any, Any]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def backend() -> str:
    return "sqlite"  # the full app runs on its data_dir's SQLite; `backlog` runs on both below


async def homeserver() -> tuple[web.AppRunner, str]:
    """Just enough of a homeserver for the hub to start: whoami names the bot, the rest is {}
    (so /_matrix/client/versions answers 200)."""

    async def whoami(request: web.Request) -> web.Response:
        return web.json_response({"user_id": BOT})

    async def anything(request: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/_matrix/client/v3/account/whoami", whoami)
    app.router.add_route("*", "/{tail:.*}", anything)
    return await serve_on_loopback(app)


def hub_config(
    tmp_path: Path, homeserver_url: str, telegram: TelegramStandin, **sections: Any
) -> Config:
    return Config.model_validate(
        {
            "data_dir": str(tmp_path),
            "homeserver": {"url": homeserver_url, "domain": DOMAIN},
            "appservice": {"as_token": "a" * 32, "hs_token": HS_TOKEN},
            "shop": {"name": "Shop", "advisers": [f"@anna:{DOMAIN}"]},
            "channels": {
                "webchat": {"enabled": True},
                "telegram": {
                    "enabled": True,
                    "api_base_url": "http://127.0.0.1:9",  # never called here
                    "bot_token": telegram.token,
                    "webhook_secret": telegram.secret,
                },
            },
        }
        | sections
    )


Hub = Callable[..., Any]


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    """Start the hub with extra config sections: `async with hub(metrics=...) as (client, app,
    the homeserver's runner, the Telegram stand-in)`."""
    telegram = TelegramStandin()

    @asynccontextmanager
    async def start(
        **sections: Any,
    ) -> AsyncIterator[tuple[Client, web.Application, web.AppRunner, TelegramStandin]]:
        runner, url = await homeserver()
        app = create_app(hub_config(tmp_path, url, telegram, **sections))
        client: Client = TestClient(TestServer(app))
        await client.start_server()  # runs the hub's start-up steps
        try:
            yield client, app, runner, telegram
        finally:
            await client.close()
            await runner.cleanup()

    return start


async def scrape(client: Client, **kwargs: Any) -> Samples:
    resp = await client.get("/metrics", **kwargs)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(await resp.text())


def parse(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def post_telegram(client: Client, telegram: TelegramStandin, secret: str) -> int:
    raw = json.dumps(telegram.text_update(424242, "Hallo")).encode()
    resp = await client.post(
        "/webhooks/telegram",
        data=raw,
        headers={"Content-Type": "application/json", SECRET_HEADER: secret},
    )
    await resp.read()
    return resp.status


async def test_metrics_parse_and_the_webhook_counter_moves(hub: Hub) -> None:
    async with hub() as (client, _app, _hs, telegram):
        before = await scrape(client)
        # The families the issue asks for are there before anything happened.
        names = {name for name, _ in before}
        assert {"hub_job_queue_up", "hub_webchat_connections", "process_open_fds"} <= names
        assert value(before, "hub_job_queue_up") == 1

        assert await post_telegram(client, telegram, telegram.secret) == 200
        assert await post_telegram(client, telegram, "wrong") == 403
        after = await scrape(client)
        ok = {"channel": "telegram", "status": "200"}
        forged = {"channel": "telegram", "status": "403"}
        name = "hub_webhook_requests_total"
        assert value(after, name, **ok) == value(before, name, **ok) + 1
        assert value(after, name, **forged) == value(before, name, **forged) + 1


async def test_queue_depth_reflects_queued_jobs(hub: Hub) -> None:
    async with hub() as (client, app, _hs, _tg):

        def queue(tx: Tx) -> None:
            # Due in an hour: the worker leaves them waiting while the test looks.
            for n in range(3):
                jobs.enqueue(tx, "test.metrics", f"k{n}", {}, f"m{n}", delay=3600)

        await app[DB].write(queue)
        samples = await scrape(client)
        assert value(samples, "hub_job_queue_up") == 1
        assert value(samples, "hub_job_queue_depth", kind="test.metrics") == 3
        age = value(samples, "hub_job_queue_oldest_age_seconds", kind="test.metrics")
        assert 0 <= age < 60
        # Every kind the worker handles is listed, at 0 when none waits.
        assert app[WORKER].handlers
        for kind in app[WORKER].handlers:
            assert ("hub_job_queue_depth", (("kind", kind),)) in samples


async def test_only_allowed_networks_read_metrics(hub: Hub) -> None:
    # The test client comes from 127.0.0.1, outside the allowed network.
    async with hub(metrics={"allowed": ["192.0.2.0/24"]}) as (client, _app, _hs, _tg):
        assert (await client.get("/metrics")).status == 403
        # The peer is no trusted proxy: its X-Forwarded-For is not believed.
        spoofed = await client.get("/metrics", headers={"X-Forwarded-For": "192.0.2.7"})
        assert spoofed.status == 403
        assert await spoofed.json() == {"error": "forbidden"}


async def test_a_forwarded_request_without_trusted_proxies_is_refused(hub: Hub) -> None:
    """A reverse proxy on the hub's host makes every visitor 127.0.0.1 (allowed by default):
    without http.trusted_proxies a forwarded request cannot be told from the internet."""
    async with hub() as (client, _app, _hs, _tg):
        await scrape(client)  # loopback itself, not forwarded: allowed
        for header in ({"X-Forwarded-For": "203.0.113.9"}, {"Forwarded": "for=203.0.113.9"}):
            assert (await client.get("/metrics", headers=header)).status == 403


async def test_behind_a_trusted_proxy_the_forwarded_client_decides(hub: Hub) -> None:
    async with hub(
        metrics={"allowed": ["192.0.2.0/24"]}, http={"trusted_proxies": ["127.0.0.1/32"]}
    ) as (client, _app, _hs, _tg):
        await scrape(client, headers={"X-Forwarded-For": "192.0.2.7"})
        outsider = await client.get("/metrics", headers={"X-Forwarded-For": "198.51.100.1"})
        assert outsider.status == 403
        # The client wrote a fake first entry; the proxy's own entry is the address.
        faked = await client.get("/metrics", headers={"X-Forwarded-For": "192.0.2.7, 198.51.100.1"})
        assert faked.status == 403
        assert (await client.get("/metrics")).status == 403  # the proxy itself is not allowed


async def test_a_homeserver_transaction_is_counted_with_its_lag(hub: Hub) -> None:
    async with hub() as (client, _app, _hs, _tg):
        before = await scrape(client)
        sent = int(time.time() * 1000) - 5000  # five seconds ago
        event = {
            "event_id": "$e1",
            "room_id": "!r:shop.example",
            "type": "m.room.message",
            "sender": f"@anna:{DOMAIN}",
            "origin_server_ts": sent,
            "content": {"msgtype": "m.text", "body": "hi"},
        }
        resp = await client.put(
            "/_matrix/app/v1/transactions/t1",
            json={"events": [event]},
            headers={"Authorization": f"Bearer {HS_TOKEN}"},
        )
        assert resp.status == 200
        after = await scrape(client)
        assert value(after, "hub_matrix_transactions_total") == (
            value(before, "hub_matrix_transactions_total") + 1
        )
        lag = "hub_matrix_transaction_lag_seconds"
        assert value(after, f"{lag}_count") == value(before, f"{lag}_count") + 1
        added = value(after, f"{lag}_sum") - value(before, f"{lag}_sum")
        assert 5 <= added < 65
        # At most 10 s late: in the 10 s bucket, not in the 2.5 s one.
        assert (
            value(after, f"{lag}_bucket", le="10.0")
            == value(before, f"{lag}_bucket", le="10.0") + 1
        )
        assert value(after, f"{lag}_bucket", le="2.5") == value(before, f"{lag}_bucket", le="2.5")


async def test_widget_connections_are_counted_while_open(hub: Hub) -> None:
    async with hub() as (client, _app, _hs, _tg):
        session = await (await client.post("/webchat/api/session", json={})).json()
        assert value(await scrape(client), "hub_webchat_connections") == 0
        ws = await client.ws_connect("/webchat/ws")
        await ws.send_json({"type": "auth", "token": session["token"]})
        assert (await ws.receive_json())["type"] == "ready"
        assert value(await scrape(client), "hub_webchat_connections") == 1
        await ws.close()
        for _ in range(50):  # the server's side of the close runs after ours
            if value(await scrape(client), "hub_webchat_connections") == 0:
                break
            await asyncio.sleep(0.02)
        assert value(await scrape(client), "hub_webchat_connections") == 0


async def test_healthz_and_readyz(hub: Hub) -> None:
    async with hub() as (client, _app, homeserver_runner, _tg):
        health = await client.get("/healthz")
        assert health.status == 200 and await health.json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status == 200, await ready.text()
        assert await ready.json() == {"status": "ready"}

        await homeserver_runner.cleanup()  # the homeserver's port is closed now
        # An answer is reused for a second (a flood of probes makes one check a second).
        assert (await client.get("/readyz")).status == 200
        await asyncio.sleep(1.05)
        ready = await client.get("/readyz")
        assert ready.status == 503
        body = await ready.json()
        assert body["not_ready"] == ["homeserver"]
        assert body["problems"] == {"homeserver": "unreachable"}
        assert (await client.get("/healthz")).status == 200  # the process itself is up


# -- parts on their own: a slow or failing database, failing jobs, both engines -------------


class SlowDatabase:
    """A database whose reads take `seconds`, or fail."""

    def __init__(self, seconds: float = 0.0, fails: bool = False) -> None:
        self.seconds = seconds
        self.fails = fails

    async def read(self, fn: Callable[..., Any], *args: Any) -> Any:
        await asyncio.sleep(self.seconds)
        if self.fails:
            raise OSError("database is gone")
        return [] if fn is jobs.backlog else None


@asynccontextmanager
async def serve(setup: Callable[[web.Application], None]) -> AsyncIterator[Client]:
    app = web.Application()
    setup(app)
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def test_a_slow_database_never_hangs_the_scrape() -> None:
    slow: Any = SlowDatabase(seconds=30)
    endpoint = MetricsEndpoint(slow, [ip_network("127.0.0.0/8")], timeout=0.2)
    async with serve(endpoint.add_routes) as client:
        started = time.monotonic()
        samples = await scrape(client)
        assert time.monotonic() - started < 5
        assert value(samples, "hub_job_queue_up") == 0
        assert not any(name == "hub_job_queue_depth" for name, _ in samples)
        # The process-wide counters are still answered.
        assert ("hub_matrix_transactions_total", ()) in samples


async def test_readyz_names_a_failing_database() -> None:
    async with aiohttp.ClientSession() as http:
        runner, url = await homeserver()
        try:
            failing: Any = SlowDatabase(fails=True)
            readiness = Readiness(failing, http, url)
            async with serve(readiness.add_routes) as client:
                resp = await client.get("/readyz")
                assert resp.status == 503
                assert (await resp.json())["not_ready"] == ["database"]
            late: Any = SlowDatabase(seconds=30)
            slow = Readiness(late, http, url, timeout=0.2)
            async with serve(slow.add_routes) as client:
                resp = await client.get("/readyz")
                assert resp.status == 503
                assert (await resp.json())["problems"] == {"database": "timeout"}
        finally:
            await runner.cleanup()


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
async def test_backlog_counts_waiting_and_dead_jobs_by_kind(db: Database) -> None:
    def queue(tx: Tx) -> list[int | None]:
        return [
            jobs.enqueue(tx, "a.kind", "k1", {}, "1", delay=3600),
            jobs.enqueue(tx, "a.kind", "k2", {}, "2"),
            jobs.enqueue(tx, "b.kind", "k3", {}, "3"),
        ]

    ids = await db.write(queue)
    assert ids[2] is not None
    await db.write(jobs.fail, ids[2], 1, "gone", True, None)  # b.kind: dead
    got = {b.kind: b for b in await db.read(jobs.backlog)}
    assert got.keys() == {"a.kind", "b.kind"}
    assert (got["a.kind"].pending, got["a.kind"].dead) == (2, 0)
    assert 0 <= got["a.kind"].oldest_pending_seconds < 60
    assert (got["b.kind"].pending, got["b.kind"].dead) == (0, 1)
    assert got["b.kind"].oldest_pending_seconds == 0


class Failing:
    """Job handlers that fail the way the worker's reasons tell apart."""

    def __init__(self) -> None:
        self.failures: dict[str, BaseException] = {
            "test.blocked": PermanentFailure("blocked", code="blocked"),
            "test.timeout": ExternalError("slow", permanent=True, code="timeout"),
            "test.bug": KeyError("bug"),
        }

    def handler(self, kind: str) -> Callable[[Job], Awaitable[None]]:
        async def fail(job: Job) -> None:
            raise self.failures[kind]

        return fail


async def test_job_failures_are_counted_by_kind_and_reason(db: Database) -> None:
    from prometheus_client import REGISTRY

    def count(kind: str, reason: str) -> float:
        got = REGISTRY.get_sample_value(
            "hub_delivery_failures_total", {"kind": kind, "reason": reason}
        )
        return got or 0.0

    expected = [("test.blocked", "blocked"), ("test.timeout", "timeout"), ("test.bug", "internal")]
    before = {pair: count(*pair) for pair in expected}
    # One attempt each: the internal error is dead-lettered at once too.
    worker = Worker(db, OutboxConfig(max_attempts=1))
    failing = Failing()
    for kind in failing.failures:
        worker.register(kind, failing.handler(kind))

    def queue(tx: Tx) -> None:
        for kind in failing.failures:
            jobs.enqueue(tx, kind, kind, {}, "1")

    await db.write(queue)
    task = asyncio.create_task(worker.run())
    try:
        await worker.drain()
    finally:
        await worker.stop()
        task.cancel()
    for pair in expected:
        assert count(*pair) == before[pair] + 1, pair
