"""Fault bench: messages in both directions while the hub is killed, the homeserver stops
and dies, and the WhatsApp API misbehaves; it counts what arrived on the other side.

    python bench/faults.py [--messages 1000] [--quick] [--rate 15] [--rooms 16]
                           [--kills 5] [--synapse-stop 60] [--seed 12]
                           [--phases kill,synapse,provider] [--drain 300] [--keep]
                           [--max-load 1.5] [--max-wait 600]

One run starts its own stack the way the other benches do (bench/common.py's start_stack:
the WhatsApp Cloud API stand-in, a throwaway Synapse, `hub run` as a child process); --rooms
customers each write a first signed webhook, so the hub opens one portal room per customer,
and the adviser (@anna) joins them (bench/webhooks.py's open_rooms). Then, per phase,
--messages texts go each way at --rate per direction, spread over the rooms, each room's
texts in order with one in flight (as Meta's deliveries of one chat and an adviser's client
queue them):

  inbound:  a signed WhatsApp webhook with a unique text, POSTed to the hub and POSTed again
            (the same bytes, the same wamid) until the hub answers 200, as Meta retries;
  outbound: the adviser's PUT /rooms/{portal}/send/m.room.message/{txn} with a unique text,
            retried with the same txn id until Synapse answers 200.

Phases (each with its own texts):

  kill:     kill -9 of the hub at --kills random moments (seeded, one per slice of the
            load), restarted at once;
  synapse:  four fifths of the texts while Synapse is stopped (SIGSTOP) for --synapse-stop
            seconds, continued, and later killed with kill -9 and started again on its
            database; once they all arrived, Synapse is restarted (SIGTERM, nothing in
            flight: it then numbers its appservice transactions from 1 again,
            element-hq/synapse#14556) and the last fifth follows;
  provider: the stand-in answers a share of the hub's sends with 500s (a gateway's page,
            or a documented Graph error), 429s with Retry-After, slow answers and answers
            that come after the hub's timeout (the message taken, or not).

After each phase's load the bench waits (at most --drain s) until every text arrived, then a
few seconds more for late copies. At the end it counts on both sides: inbound texts in each
portal room's history (GET /messages, events not sent by the adviser: how many copies of
each), outbound texts among the requests the stand-in answered 200 (what the customer got),
and the adviser's own events (one per text, or Synapse duplicated a PUT). An outbound copy
beyond the first is explained when a hub kill fell between the earlier copy's arrival at
the stand-in and KILL_WINDOW after its answer (the hub died before it could record the send:
the provider APIs have no idempotency key), or when the earlier copy was answered after the
hub's timeout (the provider took it, the hub never heard). Any other duplicate, and any
inbound duplicate, is a defect and printed as such, with where the text stopped (the hub's
own rows, read from its SQLite file after the run) and the fault nearest to it. A bench, not
a test: no timing asserts; the exit status is 1 only when messages were lost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/faults.py` puts only bench/ on the path
    sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402

from bench.common import (  # noqa: E402
    SYNC_FILTER,
    Stack,
    git_commit,
    loadavg,
    log_levels,
    pct,
    start_stack,
    wait_for_low_load,
)
from bench.webhooks import Customers, open_rooms  # noqa: E402
from hub.devserver.synapse import DEFAULT_SYNAPSE_VERSION  # noqa: E402
from tests.standins.whatsapp import Fault, Recorded, WhatsappStandin  # noqa: E402

PHASES = ("kill", "synapse", "provider")
REQUEST_TIMEOUT = 10.0  # one webhook POST / adviser PUT of the bench
RETRY_PAUSE = 0.25  # between a failed POST/PUT and its retry
GIVE_UP = 600.0  # after the load ended, a POST/PUT still failing is given up
SETTLE = 5.0  # after everything arrived: time for late copies
KILL_WINDOW = 2.0  # s after a copy's answer within which a hub kill explains its duplicate
EARLY = 0.5  # s a copy may reach the stand-in after the kill (bytes already on the wire)
HISTORY_EVERY = 15.0  # s between full history counts while draining
Copies = dict[str, list["Copy"]]  # text -> its events
MESSAGE_FILTER = json.dumps({"types": ["m.room.message"]}, separators=(",", ":"))


# -- the provider's misbehaviour --------------------------------------------------------


@dataclass(frozen=True)
class FaultKind:
    label: str
    share: float  # of the hub's POST …/messages while the phase's load runs
    make: Callable[[random.Random, float], Fault]  # (rng, the hub's timeout) -> the fault


FAULT_MIX: tuple[FaultKind, ...] = (
    FaultKind("500, a gateway's error page", 0.08, lambda r, t: Fault(http_status=500, code=None)),
    FaultKind(
        "500, Graph error 131000 (the hub waits 30 s)",
        0.02,
        lambda r, t: Fault(http_status=500, code=131000),
    ),
    FaultKind(
        "429, code 130429, Retry-After: 1",
        0.08,
        lambda r, t: Fault(http_status=429, code=130429, retry_after=1),
    ),
    FaultKind("slow answer (0.5-3 s), then 200", 0.10, lambda r, t: Fault(delay=r.uniform(0.5, 3))),
    FaultKind("no answer within the timeout, message taken", 0.03, lambda r, t: Fault(delay=t + 1)),
    FaultKind(
        "no answer within the timeout, message not taken",
        0.03,
        lambda r, t: Fault(delay=t + 1, http_status=503, code=None),
    ),
)


class ProviderFaults:
    """The stand-in's `faults` hook: a seeded share of the hub's sends misbehave."""

    def __init__(self, rng: random.Random, hub_timeout: float) -> None:
        self.rng = rng
        self.hub_timeout = hub_timeout
        self.counts: Counter[str] = Counter()

    def __call__(self, rec: Recorded) -> Fault | None:
        x = self.rng.random()
        for kind in FAULT_MIX:
            if x < kind.share:
                self.counts[kind.label] += 1
                return kind.make(self.rng, self.hub_timeout)
            x -= kind.share
        self.counts["answered at once"] += 1
        return None


# -- messages and phases ----------------------------------------------------------------


@dataclass
class Msg:
    text: str
    direction: str  # in | out
    room: int
    due: float  # s after the load's start
    acked: bool = False  # the hub answered the webhook 200 / Synapse took the adviser's PUT
    attempts: int = 0
    error: str = ""  # the last failure of a POST/PUT
    remote_id: str = ""  # inbound: the webhook's wamid
    event_id: str = ""  # outbound: the adviser's event, as Synapse answered the PUT


@dataclass(frozen=True)
class Copy:
    """One event with a bench text in a room."""

    event_id: str
    ts: float  # origin_server_ts, s since the epoch


@dataclass
class Outcome:
    """What arrived of one direction of one phase."""

    sent: int = 0
    unacked: int = 0  # never acknowledged (given up)
    arrived: int = 0  # texts that arrived at least once
    lost: list[str] = field(default_factory=list)
    extra: int = 0  # copies beyond the first
    explained_kill: int = 0
    explained_timeout: int = 0
    unexpected: list[str] = field(default_factory=list)  # lines describing each
    detail: list[str] = field(default_factory=list)  # the explained ones
    adviser_dupes: int = 0  # Synapse made two events of one adviser PUT (outbound only)

    @property
    def duplicated(self) -> int:
        return self.extra


@dataclass
class Phase:
    key: str
    title: str
    msgs: list[Msg] = field(default_factory=list)
    started: float = 0.0  # perf_counter at the load's start
    load_seconds: float = 0.0
    drain_seconds: float = 0.0
    drained: bool = False
    kills: list[tuple[float, float]] = field(default_factory=list)  # hub: (killed, up again)
    events: list[str] = field(default_factory=list)  # what was done to whom, when
    faults: Counter[str] = field(default_factory=Counter)
    inbound: Outcome = field(default_factory=Outcome)
    outbound: Outcome = field(default_factory=Outcome)

    def of(self, direction: str) -> list[Msg]:
        return [m for m in self.msgs if m.direction == direction]

    def at(self, t: float) -> str:
        return f"{t - self.started:6.1f} s"


# -- the adviser's view ------------------------------------------------------------------


class MatrixWatch:
    """The adviser's raw /sync for progress (which bench texts reached the rooms), and each
    room's whole history for the counts (a limited /sync timeline could skip events)."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str, token: str, tag: str) -> None:
        self.http = http
        self.base = base_url
        self.headers = {"Authorization": f"Bearer {token}"}
        self.tag = tag
        self.seen: set[str] = set()
        self.limited = 0
        self.errors = 0
        self._since = ""
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        doc = await self._sync(0)
        self._since = doc["next_batch"]
        self._task = asyncio.create_task(self._loop())

    async def _sync(self, timeout_ms: int) -> dict[str, Any]:
        params = {"timeout": str(timeout_ms), "filter": SYNC_FILTER}
        if self._since:
            params["since"] = self._since
        url = self.base + "/_matrix/client/v3/sync"
        timeout = aiohttp.ClientTimeout(total=timeout_ms / 1000 + 30)
        async with self.http.get(url, params=params, headers=self.headers, timeout=timeout) as r:
            raw = await r.read()
            if r.status != 200:
                raise ValueError(f"/sync answered {r.status}: {raw[:200]!r}")
        return dict(json.loads(raw))

    async def _loop(self) -> None:
        while True:
            try:
                doc = await self._sync(10_000)
            except (aiohttp.ClientError, TimeoutError, ValueError):
                self.errors += 1  # Synapse stopped or restarting: expected here
                await asyncio.sleep(1.0)
                continue
            self._since = doc.get("next_batch", self._since)
            for room in doc.get("rooms", {}).get("join", {}).values():
                timeline = room.get("timeline", {})
                self.limited += bool(timeline.get("limited"))
                for ev in timeline.get("events", []):
                    body = ev.get("content", {}).get("body")
                    if isinstance(body, str) and body.startswith(self.tag):
                        self.seen.add(body)

    async def history(self, room_id: str) -> list[tuple[str, str, Copy]]:
        """(sender, body, the event) of every bench text in the room, newest first."""
        found: list[tuple[str, str, Copy]] = []
        url = f"{self.base}/_matrix/client/v3/rooms/{quote(room_id, safe='')}/messages"
        params = {"dir": "b", "limit": "1000", "filter": MESSAGE_FILTER}
        while True:
            async with self.http.get(url, params=params, headers=self.headers) as resp:
                doc = await resp.json()
                if resp.status != 200:
                    raise ValueError(f"/messages answered {resp.status}: {doc!r:.200}")
            for ev in doc.get("chunk", []):
                body = ev.get("content", {}).get("body")
                if isinstance(body, str) and body.startswith(self.tag):
                    copy = Copy(str(ev.get("event_id")), ev.get("origin_server_ts", 0) / 1000)
                    found.append((str(ev.get("sender")), body, copy))
            if not doc.get("chunk") or not doc.get("end"):
                return found
            params["from"] = doc["end"]

    async def counts(self, rooms: list[str], adviser: str) -> tuple[Copies, Copies]:
        """The events of each bench text in the rooms: (not from the adviser, from the
        adviser), oldest first."""
        others: Copies = defaultdict(list)
        own: Copies = defaultdict(list)
        for room in rooms:
            for sender, body, copy in await self.history(room):
                (own if sender == adviser else others)[body].insert(0, copy)
        self.seen.update(others)
        return others, own

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def accepted(wa: WhatsappStandin, tag: str) -> dict[str, list[Recorded]]:
    """Bench texts the stand-in answered 200: what reached the customer, copy by copy."""
    found: dict[str, list[Recorded]] = defaultdict(list)
    for rec in list(wa.requests):
        if rec.method != "POST" or not rec.path.endswith("/messages") or rec.status != 200:
            continue
        text = rec.json.get("text") if isinstance(rec.json, dict) else None
        body = text.get("body") if isinstance(text, dict) else None
        if isinstance(body, str) and body.startswith(tag):
            found[body].append(rec)
    return found


# -- the run -----------------------------------------------------------------------------


@dataclass
class Run:
    args: argparse.Namespace
    stack: Stack
    http: aiohttp.ClientSession
    wa: WhatsappStandin
    customers: Customers
    token: str
    watch: MatrixWatch
    tag: str
    rng: random.Random
    hub_timeout: float
    moments: list[tuple[float, str]] = field(default_factory=list)  # (time.time(), fault)
    restarts: list[float] = field(default_factory=list)  # s each hub restart took
    synapse_restarts: list[float] = field(default_factory=list)

    # -- senders ---------------------------------------------------------------------

    async def post_webhook(self, m: Msg, give_up: Callable[[], bool]) -> None:
        """As Meta delivers: the same signed bytes again until the hub answers 200."""
        c = self.customers
        payload, m.remote_id = self.wa.text_webhook(c.wa_ids[m.room], c.names[m.room], m.text)
        raw = json.dumps(payload, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "facebookexternalua",
            "X-Hub-Signature-256": self.wa.sign(raw),
        }
        url = f"{self.stack.hub_url}/webhooks/whatsapp"
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        while True:
            m.attempts += 1
            try:
                async with self.http.post(url, data=raw, headers=headers, timeout=timeout) as r:
                    await r.read()
                    if r.status == 200:
                        m.acked = True
                        return
                    m.error = f"HTTP {r.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                m.error = type(exc).__name__
            if give_up():
                return
            await asyncio.sleep(RETRY_PAUSE)

    async def put_adviser(self, m: Msg, give_up: Callable[[], bool]) -> None:
        """The adviser's send, retried with the same txn id until Synapse takes it."""
        assert self.stack.synapse is not None
        room = quote(self.customers.rooms[m.room], safe="")
        txn = "fault-" + m.text.replace(" ", "-")
        path = f"/_matrix/client/v3/rooms/{room}/send/m.room.message/{quote(txn, safe='')}"
        headers = {"Authorization": f"Bearer {self.token}"}
        body = {"msgtype": "m.text", "body": m.text}
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        while True:
            m.attempts += 1
            try:
                async with self.http.put(
                    self.stack.synapse.url + path, json=body, headers=headers, timeout=timeout
                ) as r:
                    answer = await r.read()
                    if r.status == 200:
                        m.acked = True
                        with contextlib.suppress(ValueError, AttributeError):
                            m.event_id = str(json.loads(answer).get("event_id", ""))
                        return
                    m.error = f"HTTP {r.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                m.error = type(exc).__name__
            if give_up():
                return
            await asyncio.sleep(RETRY_PAUSE)

    async def load(self, phase: Phase, n: int, seconds: float) -> None:
        """n texts each way over `seconds`, text i due at i·seconds/n into room i % rooms;
        one worker per room and direction sends its texts in order, one in flight. A phase
        may run several loads: their texts are numbered on."""
        rooms = len(self.customers.rooms)
        first = len(phase.msgs) // 2
        msgs = [
            Msg(f"{self.tag} {phase.key} {direction} {first + i:05d}", direction, i % rooms, 0.0)
            for direction in ("in", "out")
            for i in range(n)
        ]
        phase.msgs += msgs
        start = time.perf_counter()
        phase.started = phase.started or start
        for k, m in enumerate(msgs):
            m.due = start - phase.started + (k % n) * seconds / n
        ended: list[float] = []

        def give_up() -> bool:
            return bool(ended) and time.perf_counter() > ended[0] + GIVE_UP

        async def worker(direction: str, room: int) -> None:
            send = self.post_webhook if direction == "in" else self.put_adviser
            for m in msgs:
                if m.direction != direction or m.room != room:
                    continue
                await asyncio.sleep(max(0.0, phase.started + m.due - time.perf_counter()))
                await send(m, give_up)

        workers = [asyncio.create_task(worker(d, r)) for d in ("in", "out") for r in range(rooms)]
        await asyncio.sleep(seconds)
        ended.append(time.perf_counter())
        await asyncio.gather(*workers)
        phase.load_seconds += time.perf_counter() - start

    # -- faults ----------------------------------------------------------------------

    async def restart_hub(self, phase: Phase, planned: float) -> None:
        hub = self.stack.hub
        assert hub is not None
        killed = time.perf_counter()
        late = killed - (phase.started + planned)
        self.moments.append((time.time(), "hub kill -9"))
        hub.kill9()
        for attempt in range(5):
            try:
                await hub.start(timeout=60)
                break
            except RuntimeError as exc:
                phase.events.append(f"hub restart {attempt + 1} failed: {str(exc)[:200]}")
                await asyncio.sleep(1.0)
        up = time.perf_counter()
        phase.kills.append((killed, up))
        self.restarts.append(up - killed)
        note = f" (drawn for {planned:.1f} s: the hub was still starting)" if late > 0.2 else ""
        phase.events.append(
            f"{phase.at(killed)}  hub kill -9, up again after {up - killed:.1f} s{note}"
        )

    async def hub_kills(self, phase: Phase, seconds: float, count: int) -> None:
        """One kill at a random moment of each of `count` equal slices of the load (so they
        spread over it); a moment that comes while the hub is still restarting kills it as
        soon as it answers again."""
        span = 0.9 * seconds / max(1, count)
        moments = [0.05 * seconds + (k + self.rng.random()) * span for k in range(count)]
        for t in moments:
            await asyncio.sleep(max(0.0, phase.started + t - time.perf_counter()))
            await self.restart_hub(phase, t)

    async def synapse_outage(self, phase: Phase, seconds: float, stop_seconds: float) -> None:
        """SIGSTOP at 10 % of the load for stop_seconds, SIGCONT; kill -9 halfway through
        the rest of the load and start it again on its database."""
        syn = self.stack.synapse
        assert syn is not None
        stop_at = 0.1 * seconds
        kill_at = stop_at + stop_seconds + (0.9 * seconds - stop_seconds) / 2
        await asyncio.sleep(max(0.0, phase.started + stop_at - time.perf_counter()))
        pid = self.stack.synapse_pid
        os.kill(pid, signal.SIGSTOP)
        stopped = time.perf_counter()
        self.moments.append((time.time(), "Synapse SIGSTOP"))
        try:
            await asyncio.sleep(stop_seconds)
        finally:
            os.kill(pid, signal.SIGCONT)
            self.moments.append((time.time(), "Synapse SIGCONT"))
        phase.events.append(
            f"{phase.at(stopped)}  Synapse SIGSTOP, SIGCONT after "
            f"{time.perf_counter() - stopped:.1f} s"
        )
        await asyncio.sleep(max(0.0, phase.started + kill_at - time.perf_counter()))
        proc = syn._proc
        assert proc is not None
        killed = time.perf_counter()
        self.moments.append((time.time(), "Synapse kill -9"))
        proc.kill()
        await proc.wait()
        await syn.stop()  # forgets the dead process
        for attempt in range(10):
            try:
                await syn.start(timeout=120)
                break
            except Exception as exc:  # e.g. the port not free yet
                phase.events.append(f"Synapse restart {attempt + 1} failed: {str(exc)[:200]}")
                await asyncio.sleep(1.0)
        up = time.perf_counter()
        self.synapse_restarts.append(up - killed)
        phase.events.append(
            f"{phase.at(killed)}  Synapse kill -9, started again on its database, answering "
            f"after {up - killed:.1f} s"
        )

    async def synapse_restart(self, phase: Phase) -> None:
        """Stop Synapse (SIGTERM, as an admin restarts it) while nothing is in flight and
        start it again on its database: it then numbers its appservice transactions from 1
        again (element-hq/synapse#14556: on SQLite the next id is the highest one still
        pending), which a quiet moment makes certain."""
        syn = self.stack.synapse
        assert syn is not None
        stopped = time.perf_counter()
        self.moments.append((time.time(), "Synapse restart (SIGTERM)"))
        await syn.stop()
        await syn.start(timeout=120)
        up = time.perf_counter()
        self.synapse_restarts.append(up - stopped)
        phase.events.append(
            f"{phase.at(stopped)}  Synapse stopped (SIGTERM) with nothing in flight and started "
            f"again on its database, answering after {up - stopped:.1f} s; "
            f"then {self.args.messages - self._synapse_share(self.args.messages)} more texts "
            "each way"
        )

    @staticmethod
    def _synapse_share(n: int) -> int:
        """Texts of the synapse phase sent before its quiet restart (the rest after it)."""
        return n - max(1, n // 5) if n > 1 else n

    # -- waiting for the stragglers ----------------------------------------------------

    async def drain(self, phase: Phase, first: int = 0) -> None:
        """Wait until the texts of the phase's load(s) from `first` on all arrived."""
        start = time.perf_counter()
        deadline = start + self.args.drain
        inbound = {m.text for m in phase.msgs[first:] if m.direction == "in" and m.acked}
        outbound = {m.text for m in phase.msgs[first:] if m.direction == "out" and m.acked}
        next_history = start + HISTORY_EVERY
        told = start
        while True:
            missing_in = inbound - self.watch.seen
            missing_out = outbound - accepted(self.wa, self.tag).keys()
            now = time.perf_counter()
            if missing_in and now >= next_history:  # a limited /sync may have skipped some
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                    await self.watch.counts(self.customers.rooms, self.stack.adviser_mxid)
                missing_in = inbound - self.watch.seen
                next_history = time.perf_counter() + HISTORY_EVERY
            if not missing_in and not missing_out:
                phase.drained = first == 0 or phase.drained
                break
            if now > deadline:
                phase.drained = False
                break
            if now - told > 30:
                told = now
                print(
                    f"    draining: {len(missing_in)} inbound, {len(missing_out)} outbound "
                    f"texts not arrived yet ({now - start:.0f} s)",
                    file=sys.stderr,
                )
            await asyncio.sleep(0.5)
        phase.drain_seconds = time.perf_counter() - start
        await asyncio.sleep(SETTLE)

    # -- one phase ---------------------------------------------------------------------

    async def phase(self, key: str) -> Phase:
        n, rate = self.args.messages, self.args.rate
        seconds = n / rate
        if key == "kill":
            phase = Phase(
                key, f"hub kill -9 at {self.args.kills} random moments, restarted at once"
            )
            faults = [self.hub_kills(phase, seconds, self.args.kills)]
        elif key == "synapse":
            stop = self.args.synapse_stop
            n = self._synapse_share(n)
            seconds = max(n / rate, stop + 30.0)  # the kill must fall into the load too
            phase = Phase(
                key,
                f"Synapse stopped (SIGSTOP) {stop:.0f} s, then kill -9 and restarted on its "
                "database, during the load; once all arrived, restarted (SIGTERM) and a last "
                "fifth of the texts",
            )
            faults = [self.synapse_outage(phase, seconds, stop)]
        else:
            share = sum(k.share for k in FAULT_MIX)
            phase = Phase(
                key,
                f"WhatsApp API: {100 * share:.0f} % of the hub's sends answered with "
                "errors, slowly or too late",
            )
            provider = ProviderFaults(self.rng, self.hub_timeout)
            self.wa.faults = provider
            faults = []
        print(
            f"phase {key}: {phase.title}; {n} texts each way over {seconds:.0f} s", file=sys.stderr
        )
        try:
            await asyncio.gather(self.load(phase, n, seconds), *faults)
        finally:
            if key == "provider":
                self.wa.faults = None
                phase.faults = provider.counts
        for line in phase.events:
            print("    " + line, file=sys.stderr)
        await self.drain(phase)
        if key == "synapse" and n < self.args.messages:
            state = "all arrived" if phase.drained else "NOT all arrived"
            print(f"    {state} {phase.drain_seconds:.1f} s after the load", file=sys.stderr)
            await self.synapse_restart(phase)
            print("    " + phase.events[-1], file=sys.stderr)
            rest, first = self.args.messages - n, len(phase.msgs)
            await self.load(phase, rest, rest / rate)
            await self.drain(phase, first)
        state = "all arrived" if phase.drained else "NOT all arrived"
        print(f"    {state} {phase.drain_seconds:.1f} s after the load ended", file=sys.stderr)
        return phase

    # -- the counts --------------------------------------------------------------------

    async def count(self, phases: list[Phase], kills: list[float]) -> None:
        others, own = await self.watch.counts(self.customers.rooms, self.stack.adviser_mxid)
        copies = accepted(self.wa, self.tag)
        why = Diagnosis(self.stack.root / "hub" / "hub.db", self.moments)
        try:
            for phase in phases:
                count_inbound(phase, others, why)
                count_outbound(phase, copies, own, kills, self.hub_timeout, why)
        finally:
            why.close()


class Diagnosis:
    """Where a lost or doubled text stopped: the hub's own rows (its SQLite file, read only,
    after the run) and the nearest fault. Best effort: the schema is the hub's business."""

    def __init__(self, path: Path, moments: list[tuple[float, str]]) -> None:
        self.moments = moments
        self.db: sqlite3.Connection | None = None
        with contextlib.suppress(sqlite3.Error):
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)

    def close(self) -> None:
        if self.db is not None:
            self.db.close()

    def _row(self, sql: str, *args: str) -> tuple[Any, ...] | None:
        if self.db is None:
            return None
        try:
            row = self.db.execute(sql, args).fetchone()
        except sqlite3.Error:
            return None
        return tuple(row) if row is not None else None

    def near(self, ts: float) -> str:
        """The fault nearest to a moment (s since the epoch)."""
        if not ts or not self.moments:
            return ""
        at, what = min(self.moments, key=lambda m: abs(m[0] - ts))
        return f"{abs(at - ts):.1f} s {'before' if ts < at else 'after'} the {what}"

    def inbound_lost(self, m: Msg) -> str:
        row = self._row(
            "SELECT status, matrix_event_id FROM messages WHERE remote_id = ?", m.remote_id
        )
        if row is None:
            return "the hub has no row for its wamid"
        return f"the hub's row: status {row[0]}, event {row[1]}"

    def inbound_dupes(self, m: Msg, copies: list[Copy]) -> str:
        row = self._row("SELECT matrix_event_id FROM messages WHERE remote_id = ?", m.remote_id)
        recorded = row[0] if row else None
        parts = [
            f"{c.event_id}{' (the one the hub recorded)' if c.event_id == recorded else ''}"
            f" at {time.strftime('%H:%M:%S', time.localtime(c.ts))}.{int(c.ts * 1000) % 1000:03d}"
            for c in copies
        ]
        return "; ".join(parts) + f"; the first was created {self.near(copies[0].ts)}"

    def outbound_lost(self, m: Msg, copies: list[Copy]) -> str:
        row = self._row("SELECT status FROM messages WHERE matrix_event_id = ?", m.event_id)
        ts = copies[0].ts if copies else 0.0
        where = f"; the adviser's event {m.event_id} was created {self.near(ts)}" if ts else ""
        if row is None:
            return "the hub never stored the adviser's event (no row)" + where
        return f"stored by the hub, status {row[0]}" + where


def count_inbound(phase: Phase, others: Copies, why: Diagnosis) -> None:
    out = phase.inbound
    for m in phase.of("in"):
        out.sent += 1
        out.unacked += not m.acked
        got = others.get(m.text, [])
        if not got:
            acked = "never acknowledged" if not m.acked else "acknowledged"
            out.lost.append(
                f"{m.text!r} ({acked}, {m.attempts} POST(s), last error {m.error!r}): "
                + why.inbound_lost(m)
            )
            continue
        out.arrived += 1
        if len(got) > 1:
            out.extra += len(got) - 1
            out.unexpected.append(
                f"{m.text!r} in the room {len(got)} times: {why.inbound_dupes(m, got)}"
            )


def count_outbound(
    phase: Phase,
    copies: dict[str, list[Recorded]],
    own: Copies,
    kills: list[float],
    hub_timeout: float,
    why: Diagnosis,
) -> None:
    out = phase.outbound
    for m in phase.of("out"):
        if not m.acked:
            out.unacked += 1  # Synapse never took it: not the hub's to send
            continue
        out.sent += 1
        out.adviser_dupes += max(0, len(own.get(m.text, [])) - 1)
        got = sorted(copies.get(m.text, []), key=lambda r: r.at)
        if not got:
            out.lost.append(f"{m.text!r}: " + why.outbound_lost(m, own.get(m.text, [])))
            continue
        out.arrived += 1
        for prev, cur in pairwise(got):
            out.extra += 1
            at = f"{prev.at - phase.started:.2f} s"
            line = (
                f"{m.text!r}: copy at {at} answered after {1000 * (prev.answered - prev.at):.0f} "
                f"ms, again at {cur.at - phase.started:.2f} s"
            )
            kill = next(
                (
                    k
                    for k in kills
                    if prev.at - EARLY <= k <= cur.at and k <= prev.answered + KILL_WINDOW
                ),
                None,
            )
            if kill is not None:
                out.explained_kill += 1
                out.detail.append(
                    f"{line}; hub killed {1000 * (kill - prev.answered):+.0f} ms after that answer"
                )
            elif prev.answered - prev.at >= hub_timeout:
                out.explained_timeout += 1
                out.detail.append(f"{line}; the hub had given up waiting ({hub_timeout:.0f} s)")
            else:
                out.unexpected.append(line)


# -- report ------------------------------------------------------------------------------


@dataclass
class Facts:
    commit: str = "?"
    load_before: str = "?"
    load_end: str = "?"
    hub_log: Counter[str] = field(default_factory=Counter)
    log_lines: Counter[str] = field(default_factory=Counter)
    sync_limited: int = 0
    sync_errors: int = 0


LOG_MARKERS = {
    "Traceback": "tracebacks",
    "dead-lettered": "jobs dead-lettered",
    "repeated": "appservice transactions repeated",
    "released": "leases released",
}


def scan_log(path: Path) -> Counter[str]:
    found: Counter[str] = Counter()
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            for marker, label in LOG_MARKERS.items():
                if marker in line:
                    found[label] += 1
    return found


def outcome_row(label: str, o: Outcome, w: int) -> str:
    return f"{label:{w}} {o.sent:6d} {o.arrived:8d} {len(o.lost):6d} {o.duplicated:11d}" + (
        f"   {o.unacked} never taken" if o.unacked else ""
    )


def dup_note(o: Outcome) -> str:
    if not o.duplicated:
        return ""
    parts = [f"{o.explained_kill} in flight at a hub kill"]
    if o.explained_timeout:
        parts.append(f"{o.explained_timeout} after a provider timeout")
    parts.append(f"{len(o.unexpected)} UNEXPECTED")
    return "duplicates: " + ", ".join(parts)


def report(run: Run, phases: list[Phase], facts: Facts) -> str:
    args, w = run.args, 32
    head = f"{'':{w}} {'sent':>6} {'arrived':>8} {'lost':>6} {'duplicated':>11}"
    out = [
        f"fault bench: {args.messages} texts per direction per phase, {args.rooms} customers "
        f"(rooms), {args.rate:g} texts/s per direction, seed {args.seed}; hub {facts.commit} "
        f"(SQLite), Synapse {DEFAULT_SYNAPSE_VERSION} (SQLite); {os.cpu_count()} CPUs",
        f"load average: before start {facts.load_before}; at end {facts.load_end}",
        "inbound:  signed WhatsApp webhooks, the same bytes POSTed again until the hub answers",
        "          200 (as Meta retries); counted in the rooms' history (not sent by the adviser)",
        "outbound: the adviser's PUT into the portal room, retried with its txn id until Synapse",
        "          takes it; counted among the sends the WhatsApp stand-in answered 200",
    ]
    for k, phase in enumerate(phases, 1):
        inb, outb = phase.inbound, phase.outbound
        out += ["", f"phase {k} ({phase.key}): {phase.title}"]
        out += ["  " + line for line in phase.events]
        if phase.faults:
            total = phase.faults.total()
            out.append(f"  the stand-in's answers to the hub's {total} sends during the load:")
            out += [
                f"    {v:5d}  {lbl}"
                for lbl, v in sorted(phase.faults.items(), key=lambda kv: -kv[1])
            ]
        retries_in = sum(m.attempts - 1 for m in phase.of("in"))
        retries_out = sum(m.attempts - 1 for m in phase.of("out"))
        out += [
            f"  load {phase.load_seconds:.0f} s; webhook POSTs repeated {retries_in} times, "
            f"adviser PUTs {retries_out} times; "
            + (
                f"all arrived {phase.drain_seconds:.1f} s after the load"
                if phase.drained
                else f"NOT all arrived within --drain {args.drain:.0f} s of a load's end"
            ),
            head,
            outcome_row("  inbound  (WhatsApp → Matrix)", inb, w),
            outcome_row("  outbound (Matrix → WhatsApp)", outb, w),
        ]
        if dup_note(outb):
            out.append(f"  outbound {dup_note(outb)}")
        out += [f"    explained: {d}" for d in outb.detail[:20]]
        if len(outb.detail) > 20:
            out.append(f"    … and {len(outb.detail) - 20} more explained")
        if outb.adviser_dupes:
            out.append(f"  Synapse made {outb.adviser_dupes} extra events of adviser PUTs")
        for label, o in (("inbound", inb), ("outbound", outb)):
            if o.lost:
                out.append(f"  !!! {label}: {len(o.lost)} LOST, e.g.:")
                out += [f"  !!!   {x}" for x in o.lost[:10]]
            if o.unexpected:
                out.append(f"  !!! {label}: {len(o.unexpected)} UNEXPECTED DUPLICATES:")
                out += [f"  !!!   {x}" for x in o.unexpected[:20]]

    out += ["", "summary", f"{'':{w}} {'sent':>6} {'arrived':>8} {'lost':>6} {'duplicated':>11}"]
    for phase in phases:
        out.append(outcome_row(f"{phase.key}: inbound", phase.inbound, w))
        out.append(outcome_row(f"{phase.key}: outbound", phase.outbound, w))
    for label, direction in (("inbound ", "inbound"), ("outbound", "outbound")):
        os_ = [getattr(p, direction) for p in phases]
        sent = sum(o.sent for o in os_)
        arrived = sum(o.arrived for o in os_)
        lost = sum(len(o.lost) for o in os_)
        dup = sum(o.duplicated for o in os_)
        kill = sum(o.explained_kill for o in os_)
        tmo = sum(o.explained_timeout for o in os_)
        unexpected = sum(len(o.unexpected) for o in os_)
        line = (
            f"{label}: {arrived}/{sent} arrived (ratio {arrived / sent if sent else 0:.4f}), "
            f"{lost} lost, {dup} duplicated ({100 * dup / sent if sent else 0:.2f} %)"
        )
        if direction == "outbound" and dup:
            line += f": {kill} in flight at a hub kill, {tmo} after a provider timeout"
        if unexpected:
            line += f"; !!! {unexpected} UNEXPECTED"
        out.append(line)
    if run.restarts:
        out.append(
            f"hub restarts: {len(run.restarts)}, up again after p50 {pct(run.restarts, 50):.1f} s, "
            f"max {max(run.restarts):.1f} s"
        )
    if run.synapse_restarts:
        took = ", ".join(f"{x:.1f}" for x in run.synapse_restarts)
        out.append(f"Synapse restarts: {len(run.synapse_restarts)}, answering again after {took} s")
    if facts.hub_log or facts.log_lines:
        parts = [f"{v} {k}" for k, v in facts.hub_log.items()]
        parts += [f"{v} lines with {k}" for k, v in facts.log_lines.items()]
        out.append("hub log: " + ", ".join(parts))
    out.append(
        f"adviser /sync: {facts.sync_errors} failed polls (Synapse down), "
        f"{facts.sync_limited} limited timelines (counts come from the rooms' history)"
    )
    return "\n".join(out)


# -- main --------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, facts: Facts) -> int:
    root = Path(tempfile.mkdtemp(prefix="hub-bench-faults-"))
    stack = Stack(root)
    http = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=60), connector=aiohttp.TCPConnector(limit=200)
    )
    watch: MatrixWatch | None = None
    try:
        facts.load_before = await wait_for_low_load(args.max_load, args.max_wait)
        print(f"starting the WhatsApp stand-in, Synapse and the hub in {root} ...", file=sys.stderr)
        await start_stack(stack, standins=("whatsapp",))
        assert stack.synapse is not None and stack.hub is not None
        await asyncio.sleep(2)
        print(f"opening {args.rooms} WhatsApp portal rooms ...", file=sys.stderr)
        customers, token = await open_rooms(stack, http, args.rooms)
        wa: WhatsappStandin = stack.standins["whatsapp"]
        tag = f"fault-{random.Random(args.seed).getrandbits(24):06x}"
        watch = MatrixWatch(http, stack.synapse.url, token, tag)
        await watch.start()
        run = Run(
            args,
            stack,
            http,
            wa,
            customers,
            token,
            watch,
            tag,
            random.Random(args.seed),
            float(wa.hub_config()["request_timeout_seconds"]),
        )
        phases = [await run.phase(key) for key in args.phases]
        kills = [k for p in phases for k, _ in p.kills]
        await run.count(phases, kills)
        facts.load_end = loadavg()
        facts.hub_log = log_levels(stack.hub.log_path)
        facts.log_lines = scan_log(stack.hub.log_path)
        facts.sync_limited, facts.sync_errors = watch.limited, watch.errors
        print(report(run, phases, facts))
        lost = sum(len(p.inbound.lost) + len(p.outbound.lost) for p in phases)
        return 1 if lost else 0
    finally:
        if watch is not None:
            await watch.close()
        await http.close()
        await stack.stop()
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--messages", "-n", type=int, help="texts per direction per phase (default 1000)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="200 texts, 3 kills, Synapse stopped 15 s (unless given explicitly)",
    )
    parser.add_argument("--rate", type=float, default=15.0, help="texts/s per direction")
    parser.add_argument("--rooms", type=int, default=16, help="customers (portal rooms)")
    parser.add_argument("--kills", type=int, help="hub kills in the kill phase (default 5)")
    parser.add_argument(
        "--synapse-stop", type=float, help="seconds Synapse stays stopped (default 60)"
    )
    parser.add_argument("--seed", type=int, default=12, help="seeds kill moments and faults")
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help=f"comma-separated, of {', '.join(PHASES)} (default all, in that order)",
    )
    parser.add_argument(
        "--drain", type=float, default=300, help="s to wait for stragglers after each load"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, DBs)")
    parser.add_argument(
        "--max-load", type=float, default=1.5, help="wait for a lower 1-min load average"
    )
    parser.add_argument(
        "--max-wait", type=float, default=600, help="seconds to wait for it at most"
    )
    args = parser.parse_args()
    quick = args.quick
    args.messages = args.messages or (200 if quick else 1000)
    args.kills = args.kills if args.kills is not None else (3 if quick else 5)
    args.synapse_stop = args.synapse_stop or (15.0 if quick else 60.0)
    args.phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if unknown := [p for p in args.phases if p not in PHASES]:
        parser.error(f"unknown phase(s) {', '.join(unknown)}; choose from {', '.join(PHASES)}")
    if args.messages < 1 or args.rate <= 0 or args.rooms < 1 or args.kills < 0:
        parser.error("--messages, --rate and --rooms must be positive, --kills at least 0")
    return asyncio.run(bench(args, Facts(commit=git_commit())))


if __name__ == "__main__":
    sys.exit(main())
