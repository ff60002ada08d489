"""Growth on one machine: what a customer's message, an adviser's reply and `!cart add` cost
on an empty database and on a big shop's (100 000 conversations, ~1 M messages), on SQLite
and on PostgreSQL; the database's size and the hub's memory.

    .venv/bin/python bench/growth.py [-n 200] [--conversations 100000] [--messages-per 7.5]
                                     [--engines sqlite,postgresql] [--rounds 4] [--gap-ms 40]
                                     [--analyze-sqlite] [--keep]

Per engine, two states: EMPTY (a fresh database, only the -n customers the bench creates)
and SEEDED (bench/seed.py's shop bulk-loaded first: the rows of bench/kpi.py, with every
conversation's portal room, its ghost named, event and provider ids, a week of done jobs,
the advisers' space synced). Each state runs the real hub as its own process (`python -m
hub run -c config.yaml`, as tests/e2e does) against two loopback stand-ins in this process:
a homeserver (just enough of the client-server API: whoami, register, createRoom, send;
everything else answers {}) and the WhatsApp Cloud API (tests/standins/whatsapp.py). No
Synapse: the Matrix side is an in-memory answer, so what is timed is the hub (and its
database), not a homeserver.

Both states' hubs run side by side (one per database, each with its own stand-ins), so the
two are measured in the same minutes of the shared machine. -n customers per state are
taken spread over the seeded WhatsApp conversations (every k-th; EMPTY: new customers). Each
first writes one untimed warm-up message (EMPTY: this creates their conversation and portal
room; SEEDED: it reopens their closed conversation, as a returning customer would, and opens
WhatsApp's 24-hour window). Then three timed operations, one in flight, --gap-ms apart (so
each runs on an idle hub and the finishing writes of the previous one are not counted in
the next), each over all -n conversations of a state in --rounds rounds that alternate
which state goes first:

  inbound   a signed WhatsApp webhook (one text) POSTed to /webhooks/whatsapp: the time to
            its 200 (hub.db.inbound.store_events as an urgent write: the store path) and
            until the homeserver stand-in reads the ghost's PUT of that text (the
            matrix.deliver job: hand-over, send; its finishing write follows the PUT);
  reply     an adviser's m.room.message in the portal room, PUT to the hub as an appservice
            transaction: until the WhatsApp stand-in reads the text (matrix.event job: the
            dispatcher, hub.db.outbound.adviser_message; then channel.send);
  cart      `!cart add WF-W-10 2` the same way: until the bot's cart notice reaches the
            homeserver stand-in (matrix.event job: the command runner and
            hub.commerce.commands in the job's transaction; then matrix.send);
  first     a NEW customer's first message (-n more customers per state): until the bot
            posts the customer's context notice into the new portal (identity and
            conversation made, routing, the room created, the delivery, then the
            advisers.context job reading hub.db.context.customer_facts).

Printed per engine and state: median and p90 of each (ms), the hub's CPU per operation
(utime+stime of the hub process over the phase / operations; on PostgreSQL also the
server's processes), and SEEDED/EMPTY ratios (target ≤ 1.2×); the database size (SQLite:
the file with its WAL; PostgreSQL: pg_database_size); the hub's VmRSS after start (idle)
and after the phases. Timings scatter on a shared machine: compare states of one run.
Then, with the hubs stopped, the same three operations as units of work alone in this
process on each state's database (`units`: store_events with the hub's hooks; the
dispatcher on an adviser's text and on `!cart add`, its Finish written), the database's own
share without HTTP, jobs or stand-ins.
The seeded SQLite file is left without statistics (no sqlite_stat1), as a hub's own file
is: the hub never runs ANALYZE, and with statistics SQLite plans the job claim differently
(--analyze-sqlite; bench/README.md). PostgreSQL is analysed, as autovacuum would.
PostgreSQL is tests/pg.py's throwaway server (fsync, synchronous_commit and full_page_writes
off): its commits cost less than a production server's, on both states alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/growth.py` puts only bench/ on the path
    sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import yaml  # noqa: E402
from aiohttp import web  # noqa: E402

from bench.common import (  # noqa: E402
    NAN,
    cpu_seconds,
    free_port,
    git_commit,
    loadavg,
    log_levels,
    mem_mib,
    pct,
)
from bench.seed import (  # noqa: E402
    ADVISERS,
    DOMAIN,
    Rows,
    db_size_pg,
    external_id,
    files_mib,
    generate,
    load,
    room_id,
)
from tests.e2e.helpers import HubProcess  # noqa: E402
from tests.standins.loopback import serve_on_loopback  # noqa: E402
from tests.standins.whatsapp import Recorded, WhatsappStandin  # noqa: E402

BOT = f"@shopbot:{DOMAIN}"
LOBBY = f"!lobby:{DOMAIN}"
ADVISER = ADVISERS[0]
SKU = "WF-W-10"
PRODUCT = "Wandfarbe Weiß matt 10 l"
CATALOGUE = REPO / "tests" / "fixtures" / "catalogue" / "paint.csv"
TIMEOUT = 30.0
OPS = ("inbound", "reply", "cart", "first")
UNIT_OPS = ("inbound", "reply", "cart")
TARGET_RATIO = 1.2


# -- the stand-ins ------------------------------------------------------------------------------


@dataclass
class Waiter:
    room: str | None
    match: Callable[[str, dict[str, Any]], bool]  # (user_id, content) -> wanted?
    future: asyncio.Future[float]


class Homeserver:
    """Just enough of a homeserver for the hub to run: whoami names the bot, createRoom makes
    a room id, sends answer an event id; anything else is {}. Waiters hear about sends."""

    def __init__(self) -> None:
        self.url = ""
        self.requests: Counter[str] = Counter()
        self.waiters: list[Waiter] = []
        self.ghost_rooms: dict[str, str] = {}  # a ghost's text -> its room
        self._n = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=50 * 2**20)
        app.router.add_route("*", "/{tail:.*}", self._any)
        self._runner, self.url = await serve_on_loopback(app)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def expect(self, room: str | None, match: Callable[[str, dict[str, Any]], bool]) -> Any:
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiters.append(Waiter(room, match, fut))
        return fut

    async def _any(self, request: web.Request) -> web.Response:
        path = request.path
        self._n += 1
        if path.endswith("/account/whoami"):
            self.requests["whoami"] += 1
            return web.json_response({"user_id": BOT})
        if path.endswith("/createRoom"):
            self.requests["createRoom"] += 1
            return web.json_response({"room_id": f"!new{self._n}:{DOMAIN}"})
        parts = path.split("/")
        if request.method == "PUT" and "send" in parts and "rooms" in parts:
            at = time.perf_counter()
            self.requests["send"] += 1
            room = parts[parts.index("rooms") + 1]
            user = request.query.get("user_id", BOT)
            content = await request.json() if request.can_read_body else {}
            body = content.get("body") if isinstance(content, dict) else None
            if isinstance(body, str) and user != BOT:
                self.ghost_rooms[body] = room
            for w in list(self.waiters):
                if (w.room is None or w.room == room) and w.match(user, content):
                    self.waiters.remove(w)
                    if not w.future.done():
                        w.future.set_result(at)
            return web.json_response({"event_id": f"$hs{self._n}"})
        self.requests[f"{request.method} other"] += 1
        if request.can_read_body:
            await request.read()
        # State, redactions, joins: the fields callers read, the rest ignored.
        return web.json_response({"event_id": f"$hs{self._n}", "room_id": ""})


def whatsapp_waiters(wa: WhatsappStandin) -> dict[str, asyncio.Future[float]]:
    """Texts the hub sends to the WhatsApp stand-in: body -> future of its arrival."""
    pending: dict[str, asyncio.Future[float]] = {}

    def listener(rec: Recorded) -> None:
        if rec.method == "POST" and rec.path.endswith("/messages") and isinstance(rec.json, dict):
            text = rec.json.get("text")
            fut = pending.pop(text.get("body"), None) if isinstance(text, dict) else None
            if fut is not None and not fut.done():
                fut.set_result(rec.at)

    wa.listeners.append(listener)
    return pending


# -- one state: a hub on a database --------------------------------------------------------------


@dataclass
class Customer:
    wa_id: str
    name: str
    room: str = ""


@dataclass
class Result:
    engine: str
    state: str  # empty | seeded
    ms: dict[str, list[float]] = field(default_factory=dict)  # op -> latencies
    ack_ms: list[float] = field(default_factory=list)  # inbound: the webhook's 200
    cpu_ms: dict[str, float] = field(default_factory=dict)  # op -> hub CPU per operation
    db_cpu_ms: dict[str, float] = field(default_factory=dict)  # op -> PostgreSQL's CPU
    cpu_s: dict[str, float] = field(default_factory=dict)  # op -> hub CPU seconds in all
    db_cpu_s: dict[str, float] = field(default_factory=dict)
    units_ms: dict[str, list[float]] = field(default_factory=dict)  # op -> in-process
    lost: Counter[str] = field(default_factory=Counter)
    size_mib: float = NAN
    rss_idle: float = NAN
    rss_after: float = NAN
    hwm: float = NAN
    start_s: float = NAN
    log: Counter[str] = field(default_factory=Counter)
    hs_requests: Counter[str] = field(default_factory=Counter)


def pg_cpu_seconds(postmaster: int | None) -> float:
    """CPU of the PostgreSQL server: the postmaster and its children (backends, writers)."""
    if postmaster is None:
        return 0.0
    total = cpu_seconds(postmaster)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == str(postmaster):
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


class Run:
    def __init__(
        self, root: Path, url: str, args: argparse.Namespace, postmaster: int | None
    ) -> None:
        self.root = root
        self.url = url
        self.args = args
        self.postmaster = postmaster
        self.hs = Homeserver()
        self.wa = WhatsappStandin()
        self.hs_token = secrets.token_hex(20)
        self.as_token = secrets.token_hex(20)
        self.hub: HubProcess | None = None
        self.hub_url = ""
        self.http: aiohttp.ClientSession | None = None
        self.sent: dict[str, asyncio.Future[float]] = {}

    async def start(self) -> None:
        await self.hs.start()
        await self.wa.start()
        self.sent = whatsapp_waiters(self.wa)
        port = free_port()
        config = {
            "data_dir": str(self.root / "hub"),
            "database": {"url": self.url},
            "homeserver": {"url": self.hs.url, "domain": DOMAIN},
            "appservice": {"as_token": self.as_token, "hs_token": self.hs_token},
            "http": {"host": "127.0.0.1", "port": port},
            "shop": {
                "name": "Farbenhaus Growth",
                "advisers": ADVISERS,
                "lobby_room": LOBBY,
                "timezone": "Europe/Berlin",
            },
            "commerce": {"catalogue_file": str(CATALOGUE)},
            "channels": {"whatsapp": self.wa.hub_config()},
            "logging": {"level": "INFO"},
        }
        path = self.root / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        self.hub_url = f"http://127.0.0.1:{port}"
        self.hub = HubProcess(path, self.hub_url, self.root / "hub.log")
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT))
        await self.hub.start(timeout=300)

    async def stop(self) -> None:
        if self.hub is not None:
            await self.hub.stop()
        if self.http is not None:
            await self.http.close()
        await self.wa.stop()
        await self.hs.stop()

    @property
    def pid(self) -> int:
        assert self.hub is not None and self.hub.proc is not None
        return self.hub.proc.pid

    # -- the three operations ---------------------------------------------------------------

    async def webhook(self, c: Customer, text: str) -> float:
        """POST a signed text webhook; -> the time to its 200 (s)."""
        assert self.http is not None
        payload, _ = self.wa.text_webhook(c.wa_id, c.name, text)
        raw = json.dumps(payload, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": self.wa.sign(raw)}
        t0 = time.perf_counter()
        async with self.http.post(
            f"{self.hub_url}/webhooks/whatsapp", data=raw, headers=headers
        ) as r:
            answer = await r.read()
            if r.status != 200:
                raise RuntimeError(f"webhook answered {r.status}: {answer[:200]!r}")
        return time.perf_counter() - t0

    async def transaction(self, room: str, sender: str, body: str) -> None:
        assert self.http is not None
        event = {
            "event_id": f"$g{uuid.uuid4().hex}",
            "room_id": room,
            "type": "m.room.message",
            "sender": sender,
            "origin_server_ts": int(time.time() * 1000),
            "content": {"msgtype": "m.text", "body": body},
        }
        url = f"{self.hub_url}/_matrix/app/v1/transactions/{uuid.uuid4().hex}"
        headers = {"Authorization": f"Bearer {self.hs_token}"}
        async with self.http.put(url, json={"events": [event]}, headers=headers) as r:
            answer = await r.read()
            if r.status != 200:
                raise RuntimeError(f"transaction answered {r.status}: {answer[:200]!r}")

    async def inbound(self, c: Customer, text: str) -> tuple[float, float]:
        """(ack, until the ghost's send reached the homeserver), s."""
        fut = self.hs.expect(None, lambda user, content: content.get("body") == text)
        t0 = time.perf_counter()
        ack = await self.webhook(c, text)
        return ack, await asyncio.wait_for(fut, TIMEOUT) - t0

    async def reply(self, c: Customer, text: str) -> float:
        fut = self.sent[text] = asyncio.get_running_loop().create_future()
        t0 = time.perf_counter()
        await self.transaction(c.room, ADVISER, text)
        return await asyncio.wait_for(fut, TIMEOUT) - t0

    async def cart(self, c: Customer) -> float:
        def notice(user: str, content: dict[str, Any]) -> bool:
            body = content.get("body")
            return user == BOT and isinstance(body, str) and PRODUCT in body

        fut = self.hs.expect(c.room, notice)
        t0 = time.perf_counter()
        await self.transaction(c.room, ADVISER, f"!cart add {SKU} 2")
        return await asyncio.wait_for(fut, TIMEOUT) - t0

    async def first(self, c: Customer) -> float:
        """A new customer's first message: until the context notice of their new portal."""

        def context(user: str, content: dict[str, Any]) -> bool:
            return user == BOT and content.get("chat.commerce_hub.status") == "context"

        fut = self.hs.expect(None, context)
        t0 = time.perf_counter()
        await self.webhook(c, f"first {uuid.uuid4().hex[:8]}")
        return await asyncio.wait_for(fut, TIMEOUT) - t0

    async def quiet(self, seconds: float = 1.0, limit: float = 60.0) -> None:
        """Wait until the hub used no CPU for `seconds` (its start-up and earlier jobs)."""
        end = time.monotonic() + limit
        while time.monotonic() < end:
            before = cpu_seconds(self.pid)
            await asyncio.sleep(seconds)
            if cpu_seconds(self.pid) - before <= 0.02 * seconds:
                return

    async def warm_up(self, customers: list[Customer], result: Result) -> None:
        for k, c in enumerate(customers):
            text = f"warm-up {k} {uuid.uuid4().hex[:6]}"
            try:
                await self.inbound(c, text)
            except (TimeoutError, RuntimeError) as exc:
                result.lost[f"warm-up: {exc!r}"[:100]] += 1
            c.room = self.hs.ghost_rooms.get(text, c.room)

    async def phase(self, op: str, customers: list[Customer], result: Result) -> None:
        """op on each of customers in turn, one in flight; adds to result."""
        gap = self.args.gap_ms / 1000
        lat = result.ms.setdefault(op, [])
        cpu0, db0 = cpu_seconds(self.pid), pg_cpu_seconds(self.postmaster)
        for c in customers:
            tag = uuid.uuid4().hex[:8]
            try:
                if op == "inbound":
                    ack, took = await self.inbound(c, f"inbound {tag}")
                    result.ack_ms.append(ack * 1000)
                elif op == "reply":
                    took = await self.reply(c, f"reply {tag}")
                elif op == "cart":
                    took = await self.cart(c)
                else:
                    took = await self.first(c)
                lat.append(took * 1000)
            except (TimeoutError, RuntimeError) as exc:
                result.lost[f"{op}: {exc!r}"[:100]] += 1
                print(f"    ! {op}: {exc!r}"[:200], file=sys.stderr)
            await asyncio.sleep(gap)
        await asyncio.sleep(0.3)  # the last finishing writes
        result.cpu_s[op] = result.cpu_s.get(op, 0.0) + cpu_seconds(self.pid) - cpu0
        result.db_cpu_s[op] = result.db_cpu_s.get(op, 0.0) + pg_cpu_seconds(self.postmaster) - db0
        result.cpu_ms[op] = result.cpu_s[op] * 1000 / max(1, len(lat))
        result.db_cpu_ms[op] = result.db_cpu_s[op] * 1000 / max(1, len(lat))


def seeded_customers(rows: Rows, n: int) -> list[Customer]:
    """n WhatsApp customers spread evenly over the seeded ones."""
    ids = [r[0] for r in rows.tables["channel_identities"] if r[2] == "whatsapp"]
    step = max(1, len(ids) // n)
    return [Customer(external_id(cid), f"Customer {cid}", room_id(cid)) for cid in ids[::step][:n]]


def new_customers(n: int, prefix: str = "4916") -> list[Customer]:
    return [Customer(f"{prefix}{k:09d}", f"Kunde {prefix}-{k}") for k in range(n)]


async def run_engine(
    engine: str,
    urls: dict[str, str],
    tmp: Path,
    args: argparse.Namespace,
    rows: Rows,
    postmaster: int | None,
) -> list[Result]:
    """Both states' hubs side by side; each operation's rounds alternate which goes first,
    so a change of the shared machine's load hits both states alike."""
    results = {state: Result(engine, state) for state in urls}
    customers = {"empty": new_customers(args.n), "seeded": seeded_customers(rows, args.n)}
    newcomers = {state: new_customers(args.n, "4915") for state in urls}
    runs: dict[str, Run] = {}
    try:
        for state, url in urls.items():
            root = tmp / f"{engine}-{state}"
            (root / "hub").mkdir(parents=True)
            if state == "seeded":
                print(f"  {engine}: seeding ...", file=sys.stderr)
                await load(
                    url,
                    rows,
                    say=lambda s: print("  " + s, file=sys.stderr),
                    analyze_sqlite=args.analyze_sqlite,
                )
            run = runs[state] = Run(root, url, args, postmaster)
            began = time.perf_counter()
            await run.start()
            results[state].start_s = time.perf_counter() - began
        for state, run in runs.items():
            await run.quiet(2.0)
            results[state].rss_idle = mem_mib(run.pid)
        for state, run in runs.items():
            print(f"  {engine} {state}: warm-up, {args.n} customers write once", file=sys.stderr)
            await run.warm_up(customers[state], results[state])
        for run in runs.values():
            await run.quiet()
        rounds = max(1, args.rounds)
        for i, op in enumerate(OPS):
            for r in range(rounds):
                order = list(runs) if (i + r) % 2 == 0 else list(runs)[::-1]
                for state in order:
                    who = newcomers[state] if op == "first" else customers[state]
                    await runs[state].phase(op, who[r::rounds], results[state])
            e, s_ = results["empty"].ms[op], results["seeded"].ms[op]
            print(
                f"  {engine} {op:8}: p50 empty {pct(e, 50):6.1f} ms, seeded {pct(s_, 50):6.1f} "
                f"ms; hub CPU {results['empty'].cpu_ms[op]:5.2f} -> "
                f"{results['seeded'].cpu_ms[op]:5.2f} ms/op",
                file=sys.stderr,
            )
        for state, run in runs.items():
            results[state].rss_after = mem_mib(run.pid)
            results[state].hwm = mem_mib(run.pid, "VmHWM")
            results[state].hs_requests = run.hs.requests
    finally:
        for state, run in runs.items():
            await run.stop()
            if run.hub is not None:
                results[state].log = log_levels(run.hub.log_path)
    for state, url in urls.items():
        if url.startswith("sqlite"):
            results[state].size_mib = files_mib(tmp / f"{engine}-{state}", "hub.db*")
        else:
            results[state].size_mib = await db_size_pg(url)
    for state, url in urls.items():
        print(f"  {engine} {state}: the units of work in this process", file=sys.stderr)
        results[state].units_ms = await units(
            url, customers[state], tmp / f"{engine}-{state}" / "config.yaml"
        )
    return list(results.values())


# -- the units of work alone, in this process ------------------------------------------------------


async def units(url: str, customers: list[Customer], config_path: Path) -> dict[str, list[float]]:
    """The database work of the three operations without HTTP, jobs or the hub's process:
    hub.db.inbound.store_events with the policy the hub builds (assignment, consent,
    newsletter and automation hooks), the dispatcher's handling of an adviser's text and of
    `!cart add` with its Finish written, as tests/integration/test_dispatcher.py runs them;
    op -> ms per call, over the customers in turn (after one untimed round)."""
    from datetime import timedelta

    from hub.advisers.assignment import Assignment
    from hub.app import make_automations
    from hub.commerce.commands import CommerceCommands
    from hub.commerce.service import Shop
    from hub.config import load_config
    from hub.consent.newsletter_flow import Newsletter
    from hub.consent.photo_flow import PhotoConsent
    from hub.core.bot import CommandHandler, CommandRunner, help_command
    from hub.core.commands import CommandRegistry
    from hub.core.types import Envelope, InboundMessage, Sender
    from hub.db import inbound
    from hub.db.engine import open_database
    from hub.db.jobs import room_key
    from hub.jobs.job import Job
    from hub.jobs.kinds import MATRIX_EVENT
    from hub.matrix.dispatcher import Dispatcher

    config = load_config(config_path)
    automations = make_automations(config, None)
    assignment = Assignment(config.routing, list(config.shop.advisers))
    photo = PhotoConsent(config.consent, config.shop.name, lambda kind: True, can_delete=False)
    newsletter = Newsletter(config.newsletter, config.shop, lambda kind: True, lambda k: k)
    policy = inbound.InboundPolicy(
        channel="whatsapp",
        code="wa",
        label="WhatsApp",
        ghost_prefix=config.appservice.ghost_prefix,
        domain=DOMAIN,
        shop_name=config.shop.name,
        reply_window=timedelta(hours=24),
        after_message=(
            assignment.after_message,
            photo.after_message,
            newsletter.after_message,
            automations.after_message,
        ),
    )
    shop = Shop(
        config.shop,
        config.commerce,
        config.channels.whatsapp,
        {"whatsapp": timedelta(hours=24)},
        config.http.public_base,
    )
    registry: CommandRegistry[CommandHandler] = CommandRegistry()
    registry.register(help_command(registry, "!"))
    for spec in CommerceCommands(shop).specs():
        registry.register(spec)
    db = open_database(url)
    dispatcher = Dispatcher(
        db,
        lambda mxid: mxid.startswith("@" + config.appservice.ghost_prefix) or mxid == BOT,
        registry,
        CommandRunner(registry, list(config.shop.advisers)),
        "!",
        advisers=list(config.shop.advisers),
    )
    out: dict[str, list[float]] = {op: [] for op in UNIT_OPS}
    jobs = iter(range(1, 10**9))

    async def event(room: str, body: str) -> None:
        ev = {
            "event_id": f"$u{uuid.uuid4().hex}",
            "room_id": room,
            "type": "m.room.message",
            "sender": ADVISER,
            "content": {"msgtype": "m.text", "body": body},
        }
        finish = await dispatcher.handle(Job(next(jobs), MATRIX_EVENT, room_key(room), ev, 0))
        if finish is not None:
            await db.write(finish)

    try:
        for timed in (False, True):
            for op in UNIT_OPS:
                for c in customers:
                    t0 = time.perf_counter()
                    if op == "inbound":
                        sender = Sender("whatsapp", c.wa_id, c.name)
                        msg = InboundMessage(f"wamid.u{uuid.uuid4().hex}", "text", text="hello")
                        await db.write(
                            inbound.store_events, policy, [Envelope(sender, msg)], urgent=True
                        )
                    elif op == "reply":
                        await event(c.room, f"reply {uuid.uuid4().hex[:8]}")
                    else:
                        await event(c.room, f"!cart add {SKU} 2")
                    if timed:
                        out[op].append((time.perf_counter() - t0) * 1000)
    finally:
        await db.close()
    return out


# -- report ---------------------------------------------------------------------------------------


def report(results: list[Result], args: argparse.Namespace, counts: dict[str, int]) -> str:
    out = [
        f"growth benchmark: hub {git_commit()}, {os.cpu_count()} CPUs, load average at end "
        f"{loadavg()}; -n {args.n} operations per phase, one in flight, {args.gap_ms:.0f} ms "
        "apart",
        f"seeded: {counts.get('conversations', 0)} conversations, "
        f"{counts.get('messages', 0)} messages, {counts.get('outbox', 0)} done jobs, "
        f"{counts.get('orders', 0)} orders",
        "inbound: webhook POST until the ghost's PUT reaches the homeserver stand-in "
        "(ack: until its 200)",
        "reply:   adviser's event (appservice transaction) until the WhatsApp stand-in reads it",
        "cart:    `!cart add` (appservice transaction) until the bot's cart notice is sent",
        "first:   a new customer's first webhook until the context notice of their new portal",
        "",
    ]
    for engine in dict.fromkeys(r.engine for r in results):
        by = {r.state: r for r in results if r.engine == engine}
        empty, seeded = by.get("empty"), by.get("seeded")
        out.append(f"{engine}")
        head = f"  {'ms (p50 / p90)':22} {'empty':>15} {'seeded':>15} {'ratio p50':>10}"
        head += f" {'hub CPU ms/op e → s':>20}"
        if engine == "postgresql":
            head += f" {'PG CPU ms/op e → s':>19}"
        out.append(head)
        rows_: list[tuple[str, list[float], list[float], str]] = [
            (
                "inbound, webhook ack",
                empty.ack_ms if empty else [],
                seeded.ack_ms if seeded else [],
                "",
            )
        ]
        rows_ += [
            (op, empty.ms.get(op, []) if empty else [], seeded.ms.get(op, []) if seeded else [], op)
            for op in OPS
        ]
        for label, e, s, op in rows_:
            ratio = pct(s, 50) / pct(e, 50) if e and s else NAN
            mark = "" if ratio != ratio else ("  ok" if ratio <= TARGET_RATIO else "  > 1.2")
            line = (
                f"  {label:22} {pct(e, 50):6.1f} / {pct(e, 90):6.1f} "
                f"{pct(s, 50):6.1f} / {pct(s, 90):6.1f} {ratio:9.2f}×{mark:6}"
            )
            if op:
                ce = empty.cpu_ms.get(op, NAN) if empty else NAN
                cs = seeded.cpu_ms.get(op, NAN) if seeded else NAN
                line += f" {ce:8.2f} → {cs:6.2f}"
                if engine == "postgresql":
                    de = empty.db_cpu_ms.get(op, NAN) if empty else NAN
                    ds = seeded.db_cpu_ms.get(op, NAN) if seeded else NAN
                    line += f" {de:8.2f} → {ds:6.2f}"
            out.append(line)
        out.append(f"  {'units of work alone, ms':22} {'(in this process, no HTTP or jobs)':>31}")
        for op in UNIT_OPS:
            e = empty.units_ms.get(op, []) if empty else []
            s_ = seeded.units_ms.get(op, []) if seeded else []
            ratio = pct(s_, 50) / pct(e, 50) if e and s_ else NAN
            mark = "" if ratio != ratio else ("  ok" if ratio <= TARGET_RATIO else "  > 1.2")
            out.append(
                f"  {'  ' + op:22} {pct(e, 50):6.2f} / {pct(e, 90):6.2f} "
                f"{pct(s_, 50):6.2f} / {pct(s_, 90):6.2f} {ratio:9.2f}×{mark}"
            )
        for label, attr in (
            ("database, MiB", "size_mib"),
            ("hub start (until /healthz), s", "start_s"),
            ("hub VmRSS idle after start, MiB", "rss_idle"),
            ("hub VmRSS after the phases, MiB", "rss_after"),
            ("hub VmHWM (peak), MiB", "hwm"),
        ):
            e = getattr(empty, attr) if empty else NAN
            s = getattr(seeded, attr) if seeded else NAN
            out.append(f"  {label:36} {e:9.1f} {s:9.1f}")
        for r in (empty, seeded):
            if r is not None and (r.lost or r.log):
                out.append(f"  {r.state}: lost {dict(r.lost)}; hub log {dict(r.log)}")
        out.append("")
    return "\n".join(out)


# -- main -----------------------------------------------------------------------------------------


async def bench(args: argparse.Namespace) -> int:
    engines = args.engines.split(",")
    began = time.perf_counter()
    rows = generate(args.conversations, args.messages_per)
    counts = {name: len(r) for name, r in rows.tables.items()}
    print(f"generated in {time.perf_counter() - began:.1f} s: {counts}", file=sys.stderr)
    results: list[Result] = []
    tmp = Path(tempfile.mkdtemp(prefix="hub-bench-growth-"))
    try:
        if "sqlite" in engines:
            urls = {
                state: f"sqlite+aiosqlite:///{tmp / f'sqlite-{state}' / 'hub.db'}"
                for state in ("empty", "seeded")
            }
            results += await run_engine("sqlite", urls, tmp, args, rows, None)
        if "postgresql" in engines:
            from tests.pg import PostgresServer, find_bin_dir

            bin_dir = find_bin_dir()
            if bin_dir is None:
                print("PostgreSQL: skipped (initdb/postgres not found)", file=sys.stderr)
            else:
                server = PostgresServer(bin_dir)
                server.start()
                try:
                    postmaster = server._proc.pid if server._proc is not None else None
                    urls = {
                        state: server.url(await server.create_database(f"growth_{state}"))
                        for state in ("empty", "seeded")
                    }
                    results += await run_engine("postgresql", urls, tmp, args, rows, postmaster)
                finally:
                    server.stop()
        print(report(results, args, counts))
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=200, help="operations per phase")
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--messages-per", type=float, default=7.5)
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per operation")
    parser.add_argument(
        "--analyze-sqlite",
        action="store_true",
        help="ANALYZE the seeded SQLite file (a hub never does; PostgreSQL always is)",
    )
    parser.add_argument("--gap-ms", type=float, default=40.0, help="pause between operations")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (DBs, logs)")
    args = parser.parse_args()
    return asyncio.run(bench(args))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
