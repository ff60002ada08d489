"""Two hub processes on one PostgreSQL database, a real Synapse, the WhatsApp stand-in and a
web chat visitor (docs/deploy.md, "A second hub process").

- A visitor's websocket is held by process B while process A does all the work (B is
  frozen with SIGSTOP): every answer reaches the visitor once B runs again, through
  PostgreSQL's LISTEN/NOTIFY, in order, exactly once.
- Customers write over WhatsApp to both processes and the adviser answers while process A is
  killed with SIGKILL in the middle: every customer message reaches Matrix exactly once,
  every answer reaches WhatsApp. An answer can reach WhatsApp twice only if A had already
  handed it to WhatsApp when it died (the Cloud API has no idempotency key): the test counts
  those in-flight sends and allows no other double.

The homeserver reaches the hubs through a small fail-over proxy (first A, B when A does not
answer), as a reverse proxy with a backup upstream would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import pytest
import yaml
from aiohttp import web

from hub.config import load_config
from hub.devserver.synapse import (
    LocalSynapse,
    ensure_synapse_installed,
    free_port,
    synapse_for_hub,
)
from tests.e2e.helpers import Adviser, HubProcess, Visitor, generate_registration, is_message
from tests.pg import PostgresServer
from tests.standins.whatsapp import WhatsappStandin

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

DOMAIN = "shop.example"
PASSWORD = "adviser-password-1"


class FailoverProxy:
    """Forwards every request to the first upstream that answers (connection refused or
    reset: the next one), like nginx's `backup` server."""

    def __init__(self, upstreams: list[str]) -> None:
        self.upstreams = upstreams
        self.port = free_port()
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        app = web.Application(client_max_size=50 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._http is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host",)}
        for upstream in self.upstreams:
            try:
                async with self._http.request(
                    request.method, upstream + request.path_qs, data=body, headers=headers
                ) as resp:
                    return web.Response(
                        status=resp.status,
                        body=await resp.read(),
                        content_type=resp.content_type,
                    )
            except (aiohttp.ClientConnectionError, TimeoutError):
                continue
        return web.Response(status=502, text="no upstream")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()


@dataclass
class Pair:
    synapse: LocalSynapse
    a: HubProcess
    b: HubProcess
    standin: WhatsappStandin
    pg_url: str  # for asyncpg (counting the queue's rows)
    adviser_mxid: str


@pytest.fixture(scope="module")
async def pair(
    tmp_path_factory: pytest.TempPathFactory, pg_server: PostgresServer
) -> AsyncIterator[Pair]:
    root = tmp_path_factory.mktemp("two-hubs")
    pg = pg_server
    standin = WhatsappStandin()
    await standin.start()
    port_a, port_b, hs_port = free_port(), free_port(), free_port()
    proxy = FailoverProxy([f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"])
    await proxy.start()
    name = await pg.create_database("twohubs")
    url = pg.url(name)
    config: dict[str, Any] = {
        "data_dir": str(root / "hub"),
        "homeserver": {"url": f"http://127.0.0.1:{hs_port}", "domain": DOMAIN},
        "appservice": {"as_token": "CHANGE_ME", "hs_token": "CHANGE_ME"},
        "http": {
            "host": "127.0.0.1",
            "port": port_a,
            "appservice_url": f"http://127.0.0.1:{proxy.port}",
        },
        "database": {"url": url},
        "shop": {"name": "Farbenhaus Test", "advisers": [f"@anna:{DOMAIN}"], "locale": "de_DE"},
        # A dead process's leases run out soon (the other process of this machine also
        # releases them when it sees the process gone).
        "outbox": {"base_delay_seconds": 0.2, "max_delay_seconds": 2, "lease_seconds": 5},
        "channels": {
            "whatsapp": standin.hub_config(),
            "webchat": {
                "allowed_origins": ["http://shop.test"],
                "limits": {"sessions_per_address": 10_000, "messages_per_visitor": 10_000},
            },
        },
        "logging": {"level": "INFO"},
    }
    config_a = root / "hub-a.yaml"
    config_a.write_text(yaml.safe_dump(config))
    registration = root / "registration.yaml"
    await generate_registration(config_a, registration)
    python = await ensure_synapse_installed()
    synapse = synapse_for_hub(
        load_config(config_a), registration, root / "synapse", python, secrets.token_hex(16), True
    )
    synapse.write_config()
    await synapse.start()
    anna = await synapse.register_user("anna", PASSWORD, displayname="Anna Adviser")
    # Process B: the same file (with the tokens generate-registration wrote) but its port.
    written = yaml.safe_load(config_a.read_text())
    written["http"]["port"] = port_b
    config_b = root / "hub-b.yaml"
    config_b.write_text(yaml.safe_dump(written))
    a = HubProcess(config_a, f"http://127.0.0.1:{port_a}", root / "hub-a.log")
    b = HubProcess(config_b, f"http://127.0.0.1:{port_b}", root / "hub-b.log")
    await a.start()
    await b.start()
    try:
        yield Pair(synapse, a, b, standin, url.replace("postgresql+asyncpg", "postgresql"), anna)
    finally:
        for hub in (a, b):
            if hub.proc is not None and hub.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(hub.proc.pid, signal.SIGCONT)
            await hub.stop()
        await synapse.stop()
        await proxy.stop()
        await standin.stop()
        await pg.drop_database(name)


@pytest.fixture
async def anna(pair: Pair) -> AsyncIterator[Adviser]:
    client = Adviser(pair.synapse.url, pair.adviser_mxid)
    await client.login(PASSWORD)
    yield client
    await client.close()


def _process(hub: HubProcess) -> int:
    assert hub.proc is not None
    return hub.proc.pid


async def test_widget_pushes_reach_the_process_holding_the_socket(
    pair: Pair, anna: Adviser
) -> None:
    async with aiohttp.ClientSession() as http:
        visitor = Visitor(pair.a.url, http)  # its HTTP calls to A …
        await visitor.start(name="Mia")
        socket_holder = Visitor(pair.b.url, http)  # … its websocket on B
        socket_holder.token, socket_holder.visitor_id = visitor.token, visitor.visitor_id
        await socket_holder.connect()
        await visitor.say("Guten Tag, haben Sie Lack in Salbeigrün?")
        room = await anna.wait_invite("Webchat · Mia")
        await anna.join(room)
        await anna.wait_event(room, is_message(body="Guten Tag, haben Sie Lack in Salbeigrün?"))

        # B frozen: it claims nothing, so A sends every answer; B's socket gets them later.
        os.kill(_process(pair.b), signal.SIGSTOP)
        try:
            answers = [f"Antwort {n}: ja, Salbeigrün „matt“ ✓" for n in range(5)]
            for text in answers:
                await anna.send_text(room, text)
            await asyncio.sleep(3)  # A has sent them meanwhile (B cannot)
        finally:
            os.kill(_process(pair.b), signal.SIGCONT)
        for text in answers:
            await socket_holder.wait_message(lambda m, t=text: m.get("text") == t, timeout=20)
        await asyncio.sleep(1)  # anything doubled would have arrived by now
        texts = [m.get("text") for m in socket_holder.received]
        assert [t for t in texts if t in answers] == answers  # in order, each once
        await socket_holder.disconnect()


async def _count_a_sends_in_flight(pair: Pair, pid: int) -> int:
    conn = await asyncpg.connect(pair.pg_url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM outbox WHERE kind = 'channel.send' AND status = 'pending'"
                " AND leased_by LIKE $1 AND leased_until > now()",
                f"%.{pid}.%",
            )
        )
    finally:
        await conn.close()


async def test_a_process_killed_mid_load_loses_and_doubles_nothing(
    pair: Pair, anna: Adviser
) -> None:
    customers = [(f"4915{n:09d}", f"Kunde {n}") for n in range(1, 5)]
    per_customer = 16
    rooms: dict[str, str] = {}
    # First messages open the rooms (either process may create a portal).
    for n, (wa_id, name) in enumerate(customers):
        payload, _ = pair.standin.text_webhook(wa_id, name, f"{name}: Nachricht 0")
        target = pair.a if n % 2 == 0 else pair.b
        status, _ = await pair.standin.post_webhook(target.url, payload)
        assert status == 200
    for wa_id, name in customers:
        rooms[wa_id] = await anna.wait_invite(f"WhatsApp · {name}")
        await anna.join(rooms[wa_id])

    a_pid = _process(pair.a)
    killed = asyncio.Event()
    in_flight_at_kill = 0
    accepted: Counter[str] = Counter()  # "a", "b before", "b after" the kill

    async def post(wa_id: str, name: str, i: int) -> None:
        payload, _ = pair.standin.text_webhook(wa_id, name, f"{name}: Nachricht {i}")
        # Like a provider: to either process; a delivery that fails is delivered again
        # (to the one still answering).
        first = pair.a if (i % 2 == 0 and not killed.is_set()) else pair.b
        for target in (first, pair.b, pair.b, pair.b):
            try:
                status, _ = await pair.standin.post_webhook(target.url, payload)
            except aiohttp.ClientError:
                await asyncio.sleep(0.2)
                continue
            if status == 200:
                after = " after" if killed.is_set() else " before"
                accepted["a" if target is pair.a else "b" + after] += 1
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"webhook {name} {i} never accepted")

    async def customers_write() -> None:
        for i in range(1, per_customer):
            await asyncio.gather(*(post(w, n, i) for w, n in customers))
            await asyncio.sleep(0.1)

    async def adviser_answers() -> None:
        for i in range(per_customer):
            for wa_id, name in customers:
                await anna.send_text(rooms[wa_id], f"Antwort an {name} #{i}")
            await asyncio.sleep(0.1)

    async def kill_a() -> None:
        nonlocal in_flight_at_kill
        await asyncio.sleep(1.0)
        os.kill(a_pid, signal.SIGKILL)
        killed.set()
        in_flight_at_kill = await _count_a_sends_in_flight(pair, a_pid)

    await asyncio.gather(customers_write(), adviser_answers(), kill_a())
    pair.a.proc.wait()  # type: ignore[union-attr]
    # The kill fell in the middle: A had taken messages, B took more after it.
    assert accepted["a"] > 0 and accepted["b after"] > 0, accepted

    # Matrix: every customer message exactly once.
    for wa_id, name in customers:
        for i in range(per_customer):
            await anna.wait_event(rooms[wa_id], is_message(body=f"{name}: Nachricht {i}"), 60)
    await asyncio.sleep(2)
    seen = Counter(
        ev["content"].get("body")
        for room_id, ev in anna.events
        if room_id in rooms.values() and is_message()(ev)
    )
    customer_texts = {f"{n}: Nachricht {i}" for _w, n in customers for i in range(per_customer)}
    assert {t: seen[t] for t in customer_texts if seen[t] != 1} == {}

    # WhatsApp: every answer arrived; a double only for a send A had in flight.
    answers = {f"Antwort an {n} #{i}": w for w, n in customers for i in range(per_customer)}

    def sent_count() -> Counter[str]:
        return Counter(
            r.json.get("text", {}).get("body")
            for r in pair.standin.sent()
            if isinstance(r.json, dict) and r.json.get("type") == "text"
        )

    deadline = asyncio.get_running_loop().time() + 60
    while any(sent_count()[t] == 0 for t in answers):
        if asyncio.get_running_loop().time() > deadline:
            missing = sorted(t for t in answers if sent_count()[t] == 0)
            raise AssertionError(f"answers never sent: {missing}\n{pair.b.log_tail()}")
        await asyncio.sleep(0.2)
    await asyncio.sleep(2)
    counts = sent_count()
    doubled = {t: c for t, c in counts.items() if t in answers and c > 1}
    assert sum(c - 1 for c in doubled.values()) <= in_flight_at_kill, (doubled, in_flight_at_kill)
    for text, wa_id in answers.items():
        assert any(
            r.json.get("to") == wa_id
            for r in pair.standin.sent()
            if r.json.get("text", {}).get("body") == text
        )
