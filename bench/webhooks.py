"""Webhook benchmark: signed WhatsApp Cloud API webhooks through the hub into Synapse,
against raw appservice sends to Synapse, and how fast the hub acknowledges them.

    python bench/webhooks.py [-n 200] [--concurrency 16] [--rooms one|many|both] [--rounds 2]
                             [--profile FILE] [--keep] [--max-load 1.5] [--max-wait 600]

One run starts its own stack in a temp dir the way tests/e2e/conftest.py does (the WhatsApp
stand-in, a hub config enabling the channel, `hub generate-registration`, a LocalSynapse,
`hub run` as a child process). --concurrency customers each write a first message, so the
hub opens one portal room (and ghost) per customer; an adviser joins them and listens with a
raw /sync long-poll. Then, per round and per mode, N messages go
  hub: as a signed webhook (one text message, X-Hub-Signature-256 over the raw body, as
       Meta sends it) POSTed to the hub's /webhooks/whatsapp;
  raw: as a PUT /rooms/{room}/send as the same ghost into the same room with the as_token;
each timed from just before its POST/PUT until the adviser's /sync returns it. The POST's
answer time is the webhook's acknowledgement latency. Modes: one message in flight or
--concurrency in flight, into one room (one customer) or --concurrency rooms.

Then the acknowledgement latency while Synapse is busy: webhooks at a steady pace (open
loop) while --concurrency raw PUT loops saturate Synapse, and while Synapse is frozen
(SIGSTOP, then SIGCONT: every message must still arrive).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/webhooks.py` puts only bench/ on the path
    sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402

from bench.common import (  # noqa: E402
    NAN,
    CpuMeter,
    Receiver,
    Stack,
    collector_paused,
    find_py_spy,
    git_commit,
    loadavg,
    log_levels,
    mem_mib,
    pct,
    start_py_spy,
    start_stack,
    stop_py_spy,
    summarize_profile,
    verdict,
    wait_for_low_load,
)
from hub.devserver.synapse import DEFAULT_SYNAPSE_VERSION  # noqa: E402
from hub.matrix.client import MatrixClient  # noqa: E402
from tests.e2e.conftest import DOMAIN, PASSWORD  # noqa: E402
from tests.e2e.helpers import Adviser, is_message  # noqa: E402
from tests.standins.whatsapp import WhatsappStandin  # noqa: E402

MSG_TIMEOUT = 20.0  # one message: send until seen in /sync
SETTLE = 1.0  # between phases: let Synapse push the previous phase's echoes to the hub
TARGET_RATIO = 0.9
TARGET_ACK_MS = 20.0
REFERENCE_RATIO = 0.67  # the existing open-source WhatsApp bridge of issue 3, 16 in flight
PACE = 20.0  # webhooks per second while Synapse is busy (open loop: no waiting for answers)
SATURATED_SECONDS = 6.0
FROZEN_SECONDS = 3.0
SHARED_CORE_SHARE = 0.2  # other processes' CPU (share of a core) worth a warning

Send = Callable[[int, str], Awaitable[float]]  # (room index, body) -> answer time, s


@dataclass(frozen=True)
class Mode:
    key: str
    in_flight: int
    rooms: int

    def label(self) -> str:
        what = "sequential" if self.in_flight == 1 else f"{self.in_flight} in flight"
        where = "ONE room" if self.rooms == 1 else f"{self.rooms} rooms"
        return f"{what}, {where}"

    def room(self, worker: int, i: int) -> int:
        if self.rooms == 1:
            return 0
        return i % self.rooms if self.in_flight == 1 else worker % self.rooms


@dataclass
class Phase:
    path: str  # hub | raw | a busy scenario
    mode: str
    n: int
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)  # s, send until seen in /sync
    answers: list[float] = field(default_factory=list)  # s, until the POST/PUT is answered
    errors: Counter[str] = field(default_factory=Counter)
    cpu: dict[str, float] = field(default_factory=dict)  # s: hub, synapse, bench, others
    note: str = ""

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0


# -- senders --------------------------------------------------------------------------------


@dataclass
class Customers:
    wa_ids: list[str]
    names: list[str]
    rooms: list[str] = field(default_factory=list)
    ghosts: list[str] = field(default_factory=list)


def webhook_sender(
    http: aiohttp.ClientSession, hub_url: str, wa: WhatsappStandin, c: Customers
) -> Send:
    url = f"{hub_url}/webhooks/whatsapp"

    async def send(room: int, body: str) -> float:
        # As Meta sends it (WhatsappStandin.post_webhook): compact JSON, non-ASCII escaped,
        # the signature over exactly those bytes; a kept-alive connection, as Meta's are.
        payload, _ = wa.text_webhook(c.wa_ids[room], c.names[room], body)
        raw = json.dumps(payload, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "facebookexternalua",
            "X-Hub-Signature-256": wa.sign(raw),
        }
        t0 = time.perf_counter()
        async with http.post(url, data=raw, headers=headers) as resp:
            answer = await resp.read()
            acked = time.perf_counter() - t0
            if resp.status != 200:
                raise RuntimeError(f"hub answered {resp.status}: {answer[:200]!r}")
        return acked

    return send


def raw_sender(matrix: MatrixClient, c: Customers) -> Send:
    counter = iter(range(10**9))

    async def send(room: int, body: str) -> float:
        content = {"msgtype": "m.text", "body": body}
        t0 = time.perf_counter()
        await matrix.send_event(
            c.rooms[room], "m.room.message", content, f"wh-{next(counter)}", as_user=c.ghosts[room]
        )
        return time.perf_counter() - t0

    return send


# -- phases ---------------------------------------------------------------------------------


@dataclass
class Bench:
    rx: Receiver
    sends: dict[str, Send]  # hub | raw
    meter: CpuMeter
    rooms: int
    synapse_pid: int

    async def _one(self, phase: Phase, send: Send, room: int, body: str) -> None:
        fut = self.rx.expect(body)
        t0 = time.perf_counter()
        try:
            phase.answers.append(await asyncio.wait_for(send(room, body), MSG_TIMEOUT))
            phase.latencies.append(await asyncio.wait_for(fut, MSG_TIMEOUT) - t0)
        except Exception as exc:
            self.rx.pending.pop(body, None)
            phase.errors[type(exc).__name__ + ": " + str(exc)[:120]] += 1

    async def phase(self, path: str, mode: Mode, n: int, tag: str) -> Phase:
        """Closed loop: mode.in_flight workers, each sends its next message once the last
        one is seen in /sync."""
        phase = Phase(path, mode.key, n)
        indexes = iter(range(n))  # shared by the workers: next() never awaits
        deadline = time.perf_counter() + max(60.0, n * 0.5)

        async def worker(w: int) -> None:
            for i in indexes:
                if time.perf_counter() > deadline:
                    phase.errors["phase deadline passed"] += 1
                    continue
                body = f"bench {tag} {path} {mode.key} {i}"
                await self._one(phase, self.sends[path], mode.room(w, i), body)

        self.meter.start()
        start = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(mode.in_flight)))
        phase.elapsed = time.perf_counter() - start
        phase.cpu = self.meter.stop()
        return phase

    async def paced(self, phase: Phase, count: int, tag: str) -> None:
        """Open loop: `count` webhooks at PACE per second, whatever the answers take (a
        closed loop would send less while the hub is slow and hide its worst latencies)."""
        start = time.perf_counter()
        tasks = []
        for i in range(count):
            await asyncio.sleep(max(0.0, start + i / PACE - time.perf_counter()))
            body = f"bench {tag} {phase.path} {i}"
            tasks.append(
                asyncio.create_task(self._one(phase, self.sends["hub"], i % self.rooms, body))
            )
        await asyncio.gather(*tasks)

    async def saturated(self, workers: int) -> Phase:
        """Webhooks while `workers` raw PUT loops (as the ghosts, into the portal rooms)
        keep Synapse saturated."""
        count = int(PACE * SATURATED_SECONDS)
        phase = Phase("saturated", "paced", count)
        stop = asyncio.Event()
        loads = [0]

        async def load(w: int) -> None:
            k = 0
            while not stop.is_set():
                k += 1
                with contextlib.suppress(Exception):
                    body = f"load {w} {k}"
                    await asyncio.wait_for(self.sends["raw"](w % self.rooms, body), MSG_TIMEOUT)
                    loads[0] += 1

        loaders = [asyncio.create_task(load(w)) for w in range(workers)]
        try:
            await asyncio.sleep(1.0)  # let the load build up
            self.meter.start()
            start, before = time.perf_counter(), loads[0]
            await self.paced(phase, count, "sat")
            phase.elapsed = time.perf_counter() - start
            phase.cpu = self.meter.stop()
            phase.note = (
                f"{workers} raw PUT loops ({(loads[0] - before) / phase.elapsed:.1f} PUT/s)"
            )
        finally:
            stop.set()
            await asyncio.wait(loaders, timeout=MSG_TIMEOUT + 5)
            for t in loaders:
                t.cancel()
        return phase

    async def frozen(self) -> Phase:
        """Webhooks while Synapse is stopped (SIGSTOP) for FROZEN_SECONDS; then SIGCONT and
        every message must still arrive."""
        count = int(PACE * FROZEN_SECONDS)
        phase = Phase("frozen", "paced", count)
        self.meter.start()
        start = time.perf_counter()
        os.kill(self.synapse_pid, signal.SIGSTOP)
        try:
            sending = asyncio.create_task(self.paced(phase, count, "frz"))
            await asyncio.sleep(FROZEN_SECONDS)
        finally:
            os.kill(self.synapse_pid, signal.SIGCONT)
        resumed = time.perf_counter()
        await sending
        phase.elapsed = time.perf_counter() - start
        phase.cpu = self.meter.stop()
        # paced() returns once the last message was seen (or given up on).
        phase.note = f"all seen {time.perf_counter() - resumed:.1f} s after SIGCONT"
        return phase


# -- setup ----------------------------------------------------------------------------------


async def open_rooms(
    stack: Stack, http: aiohttp.ClientSession, count: int
) -> tuple[Customers, str]:
    """count customers each write a first webhook; the adviser joins their portals.
    -> the customers with rooms and ghosts, the adviser's access token."""
    wa: WhatsappStandin = stack.standins["whatsapp"]
    c = Customers(
        [f"4915100{k:06d}" for k in range(count)], [f"Kunde {k:02d}" for k in range(count)]
    )
    send = webhook_sender(http, stack.hub_url, wa, c)
    adviser = Adviser(stack.synapse.url if stack.synapse else "", stack.adviser_mxid)
    await adviser.login(PASSWORD)
    try:
        await asyncio.gather(*(send(k, f"hello from {c.names[k]}") for k in range(count)))
        for name in c.names:
            room_id = await adviser.wait_invite(f"WhatsApp · {name}", timeout=90)
            await adviser.join(room_id)
            ev = await adviser.wait_event(room_id, is_message(body=f"hello from {name}"), 60)
            c.rooms.append(room_id)
            c.ghosts.append(str(ev["sender"]))
        token = str(adviser.client.access_token)
    finally:
        await adviser.close()
    return c, token


def modes_for(rooms: str, concurrency: int) -> list[Mode]:
    one, many = 1, concurrency
    wanted = {"one": (one,), "many": (many,), "both": (one, many)}[rooms]
    return [
        Mode(f"{'seq' if flight == 1 else 'conc'}-{'one' if r == 1 else 'many'}", flight, r)
        for flight in (1, concurrency)
        for r in wanted
    ]


async def measure(b: Bench, modes: list[Mode], args: argparse.Namespace) -> list[Phase]:
    phases: list[Phase] = []
    for rnd in range(args.rounds):
        for k, mode in enumerate(modes):
            # Alternate who goes first, so a drift of the machine's load hits both.
            for path in ("raw", "hub") if (rnd + k) % 2 == 0 else ("hub", "raw"):
                await asyncio.sleep(SETTLE)
                with collector_paused():
                    p = await b.phase(path, mode, args.n, f"r{rnd}")
                phases.append(p)
                print(
                    f"  round {rnd + 1} {path:3} {mode.label():24}: {p.rate:6.1f} msg/s, "
                    f"p50 {pct(p.latencies, 50) * 1000:6.1f} ms, answer p99 "
                    f"{pct(p.answers, 99) * 1000:6.1f} ms, lost {args.n - len(p.latencies)}",
                    file=sys.stderr,
                )
    return phases


async def busy(b: Bench, workers: int) -> list[Phase]:
    out = []
    for name, run in (("saturated", lambda: b.saturated(workers)), ("frozen", b.frozen)):
        await asyncio.sleep(2 * SETTLE)
        with collector_paused():
            p = await run()
        out.append(p)
        print(
            f"  {name}: ack p50 {pct(p.answers, 50) * 1000:.1f} ms, p99 "
            f"{pct(p.answers, 99) * 1000:.1f} ms, lost {p.n - len(p.latencies)}; {p.note}",
            file=sys.stderr,
        )
    return out


# -- report ---------------------------------------------------------------------------------


@dataclass
class Facts:
    commit: str = "?"
    load_before: str = "?"  # before the stack started
    load_measuring: str = "?"  # when the measured phases began
    load_end: str = "?"
    rss: float = NAN
    hwm: float = NAN
    hub_log: Counter[str] = field(default_factory=Counter)
    sync_limited: int = 0


def ms(values: list[float], p: float) -> float:
    return pct(values, p) * 1000


def report(
    phases: list[Phase],
    busy_phases: list[Phase],
    modes: list[Mode],
    args: argparse.Namespace,
    facts: Facts,
) -> str:
    c, w = args.concurrency, 44

    def of(path: str, mode: str | None = None) -> list[Phase]:
        return [p for p in phases if p.path == path and mode in (None, p.mode)]

    def rate(path: str, mode: str) -> float:
        return statistics.median(p.rate for p in of(path, mode))

    def vals(ps: list[Phase], attr: str) -> list[float]:
        return [x for p in ps for x in getattr(p, attr)]

    elapsed = sum(p.elapsed for p in phases + busy_phases)
    others = sum(p.cpu.get("others", 0.0) for p in phases + busy_phases)
    kernel = sum(p.cpu.get("kernel", 0.0) for p in phases + busy_phases)
    out = [
        f"webhook benchmark: N={args.n} per phase, {args.rounds} round(s), concurrency {c}; "
        f"hub {facts.commit} (SQLite), Synapse {DEFAULT_SYNAPSE_VERSION} (SQLite); "
        f"{os.cpu_count()} CPUs",
        f"load average: before start {facts.load_before}; when measuring began "
        f"{facts.load_measuring}; at end {facts.load_end}",
        *machine_lines(kernel, others, elapsed),
        "hub: a signed WhatsApp Cloud API webhook (one text message, X-Hub-Signature-256)",
        "     POSTed to the hub's /webhooks/whatsapp",
        "raw: PUT /rooms/{room}/send/m.room.message as the same ghost into the same room",
        "     with the appservice's as_token",
        "a message's time: from just before its POST/PUT until the adviser's /sync returns it",
        "",
        f"{'throughput, msg/s (median of rounds)':{w}} {'hub':>7} {'raw':>7} {'hub/raw':>8}"
        "  target",
    ]
    for m in modes:
        h, r = rate("hub", m.key), rate("raw", m.key)
        ratio = h / r if r else NAN
        tgt = f"≥ {TARGET_RATIO:.2f}  {verdict(ratio >= TARGET_RATIO)}" if m.in_flight > 1 else ""
        star = " *" if m.in_flight > 1 and m.rooms == 1 else ""
        out.append(f"{m.label() + star:{w}} {h:7.1f} {r:7.1f} {ratio:8.2f}  {tgt}")
    if {"seq-one", "conc-one"} <= {m.key for m in modes}:
        # What an order-keeping sender gets from Synapse in one room: one PUT at a time.
        h, r = rate("hub", "conc-one"), rate("raw", "seq-one")
        out.append(f"{'  * vs raw sent in order (1 in flight)':{w}} {h:7.1f} {r:7.1f} {h / r:8.2f}")
    out += ["", f"{'end-to-end latency, ms (all rounds)':{w}} {'p50':>7} {'p99':>7}"]
    for m in modes:
        h, r = vals(of("hub", m.key), "latencies"), vals(of("raw", m.key), "latencies")
        out += [
            m.label(),
            f"{'  through the hub (webhook)':{w}} {ms(h, 50):7.1f} {ms(h, 99):7.1f}",
            f"{'  raw Synapse (PUT as the ghost)':{w}} {ms(r, 50):7.1f} {ms(r, 99):7.1f}",
            f"{'  added by the hub (hub - raw)':{w}} {ms(h, 50) - ms(r, 50):7.1f} "
            f"{ms(h, 99) - ms(r, 99):7.1f}",
        ]
    out += ["", *ack_lines(phases, busy_phases, w)]
    out += ["", *cpu_lines(phases, busy_phases, modes, w)]
    out += [
        f"{'hub RSS after the run, MiB':{w}} {facts.rss:7.1f}   (peak VmHWM {facts.hwm:.1f})",
        *comparison_lines(phases, busy_phases, modes),
    ]
    errors: Counter[str] = Counter()
    for p in phases + busy_phases:
        errors.update({f"{p.path} {p.mode}: {k}": v for k, v in p.errors.items()})
    if errors:
        out += ["", "lost messages:"] + [f"  {v} x {k}" for k, v in errors.items()]
    if facts.hub_log:
        out.append("hub log: " + ", ".join(f"{v} {k} lines" for k, v in facts.hub_log.items()))
    if facts.sync_limited:
        out.append(f"warning: {facts.sync_limited} /sync timelines were limited")
    if any(m.in_flight > 1 and m.rooms == 1 for m in modes):
        out += [
            "",
            f"* ONE room: one customer with {c} webhooks in flight. The hub delivers a",
            "  conversation strictly in order (one job per conversation at a time), so",
            f"  into Matrix this is sequential by design; raw Synapse gets {c} concurrent PUTs",
            "  into that room (in no guaranteed order).",
        ]
    return "\n".join(out)


def machine_lines(kernel: float, others: float, elapsed: float) -> list[str]:
    """CPU used beside the hub, Synapse and the bench while the phases ran."""
    if not elapsed:
        return []
    out = [
        "CPU beside hub, Synapse and bench during the phases: kernel threads "
        f"{100 * kernel / elapsed:.0f} % of one core, other processes "
        f"{100 * others / elapsed:.0f} %"
    ]
    if others / elapsed > SHARED_CORE_SHARE:
        out.append("  (the machine was shared: trust hub/raw ratios more than absolute rates)")
    return out


def ack_lines(phases: list[Phase], busy_phases: list[Phase], w: int) -> list[str]:
    hub = [p for p in phases if p.path == "hub"]
    rows: list[tuple[str, list[Phase]]] = [
        ("Synapse mostly idle: sequential phases", [p for p in hub if p.mode.startswith("seq")]),
        ("Synapse busy: in-flight phases", [p for p in hub if p.mode.startswith("conc")]),
    ]
    for p in busy_phases:
        label = {
            "saturated": "Synapse saturated by a parallel raw load **",
            "frozen": f"Synapse frozen {FROZEN_SECONDS:.0f} s (SIGSTOP) **",
        }[p.path]
        rows.append((label, [p]))
    out = [
        f"{'webhook acknowledgement, ms':{w}} {'n':>5} {'p50':>7} {'p99':>7} {'max':>7}"
        "  target p99",
        "(POST sent until the hub's 200)",
    ]
    worst_ok = True
    every: list[float] = []
    for label, ps in rows:
        acks = [x for p in ps for x in p.answers]
        every += acks
        if not acks:
            continue
        ok = ms(acks, 99) <= TARGET_ACK_MS
        worst_ok &= ok
        out.append(
            f"{'  ' + label:{w}} {len(acks):5d} {ms(acks, 50):7.1f} {ms(acks, 99):7.1f} "
            f"{max(acks) * 1000:7.1f}  ≤ {TARGET_ACK_MS:.0f}  {verdict(ok)}"
        )
    out += [
        f"{'  all webhooks':{w}} {len(every):5d} {ms(every, 50):7.1f} {ms(every, 99):7.1f} "
        f"{max(every, default=NAN) * 1000:7.1f}  ≤ {TARGET_ACK_MS:.0f}  "
        f"{verdict(ms(every, 99) <= TARGET_ACK_MS)}",
        f"{'  whatever Synapse is doing (every row)':{w}} {'':31}  ≤ {TARGET_ACK_MS:.0f}  "
        f"{verdict(worst_ok)}",
    ]
    raw = [p for p in phases if p.path == "raw"]
    seq = [x for p in raw if p.mode.startswith("seq") for x in p.answers]
    conc = [x for p in raw if p.mode.startswith("conc") for x in p.answers]
    out += [
        "for comparison, Synapse answering the raw PUT (the earliest a bridge that",
        "acknowledges only after its Matrix send could answer Meta):",
        f"{'  sequential phases':{w}} {len(seq):5d} {ms(seq, 50):7.1f} {ms(seq, 99):7.1f} "
        f"{max(seq, default=NAN) * 1000:7.1f}",
        f"{'  in-flight phases':{w}} {len(conc):5d} {ms(conc, 50):7.1f} {ms(conc, 99):7.1f} "
        f"{max(conc, default=NAN) * 1000:7.1f}",
    ]
    if busy_phases:
        out += [
            f"** {PACE:.0f} webhooks/s at a steady pace (open loop) over the customers, while",
            f"   saturated: {busy_phases[0].note} keep Synapse busy;"
            if busy_phases[0].path == "saturated"
            else "",
        ]
        for p in busy_phases:
            out.append(
                f"   {p.path}: {len(p.latencies)}/{p.n} seen by the adviser, end-to-end p50 "
                f"{ms(p.latencies, 50):.0f} ms, p99 {ms(p.latencies, 99):.0f} ms"
                + (f"; {p.note}" if p.path == "frozen" else "")
            )
    return [line for line in out if line]


def cpu_lines(
    phases: list[Phase], busy_phases: list[Phase], modes: list[Mode], w: int
) -> list[str]:
    out = [
        f"{'CPU, ms per message':{w}} {'hub':>7} {'Synapse':>8} {'bench':>7} {'kernel':>7}"
        f" {'others':>7}"
    ]
    for path in ("hub", "raw"):
        for m in modes:
            ps = [p for p in phases if p.path == path and p.mode == m.key]
            out.append(cpu_row(f"{path} phases, {m.label()}", ps, w))
    for p in busy_phases:
        out.append(cpu_row(f"{p.path} (webhooks only counted)", [p], w))
    return out


def cpu_row(label: str, ps: list[Phase], w: int) -> str:
    done = sum(len(p.latencies) for p in ps)

    def per(who: str) -> float:
        return 1000 * sum(p.cpu.get(who, 0.0) for p in ps) / done if done else NAN

    return (
        f"{label:{w}} {per('hub'):7.2f} {per('synapse'):8.2f} {per('bench'):7.2f} "
        f"{per('kernel'):7.2f} {per('others'):7.2f}"
    )


def comparison_lines(phases: list[Phase], busy_phases: list[Phase], modes: list[Mode]) -> list[str]:
    def ratio(key: str) -> float:
        h = [p.rate for p in phases if p.path == "hub" and p.mode == key]
        r = [p.rate for p in phases if p.path == "raw" and p.mode == key]
        return statistics.median(h) / statistics.median(r) if h and r else NAN

    conc = [m for m in modes if m.in_flight > 1]
    ours = "; ".join(f"{ratio(m.key):.2f} × raw ({m.label()})" for m in conc)
    frozen = [p for p in busy_phases if p.path == "frozen"]
    frozen_ack = f"{ms(frozen[0].answers, 99):.0f} ms" if frozen else "not measured"
    return [
        "",
        "compared with issue 3's reference, an existing open-source WhatsApp Cloud API bridge:",
        f"  throughput at 16 in flight: it ~{REFERENCE_RATIO:.2f} × raw; the hub here",
        f"  {ours}",
        "  acknowledgement: it answers Meta only after its Matrix send (so never faster than",
        "  the raw PUT times above, and not at all while Synapse hangs); the hub stores first,",
        f"  and answered p99 {frozen_ack} while Synapse was frozen",
    ]


# -- main -----------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, facts: Facts) -> int:
    root = Path(tempfile.mkdtemp(prefix="hub-bench-webhooks-"))
    stack = Stack(root)
    rx: Receiver | None = None
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
    try:
        facts.load_before = await wait_for_low_load(args.max_load, args.max_wait)
        print(f"starting the WhatsApp stand-in, Synapse and the hub in {root} ...", file=sys.stderr)
        await start_stack(stack, standins=("whatsapp",))
        await asyncio.sleep(2)  # let the start-up work (migrations, ping) finish
        rooms_needed = 1 if args.rooms == "one" else args.concurrency
        print(f"opening {rooms_needed} WhatsApp portal rooms ...", file=sys.stderr)
        customers, token = await open_rooms(stack, http, rooms_needed)
        rx = Receiver(stack.synapse.url if stack.synapse else "", token)
        await rx.start()
        matrix = MatrixClient(
            http, stack.synapse.url if stack.synapse else "", stack.as_token, f"@shopbot:{DOMAIN}"
        )
        wa: WhatsappStandin = stack.standins["whatsapp"]
        sends = {
            "hub": webhook_sender(http, stack.hub_url, wa, customers),
            "raw": raw_sender(matrix, customers),
        }
        pids = {"hub": stack.hub_pid, "synapse": stack.synapse_pid, "bench": os.getpid()}
        b = Bench(rx, sends, CpuMeter(pids), rooms_needed, stack.synapse_pid)
        modes = modes_for(args.rooms, args.concurrency)
        print("warming up ...", file=sys.stderr)
        for path in ("raw", "hub"):
            await b.phase(path, modes[-1], 2 * rooms_needed, "warmup")
        facts.load_measuring = loadavg()
        phases = await measure(b, modes, args)
        busy_phases = await busy(b, args.concurrency)
        await asyncio.sleep(SETTLE)
        facts.load_end = loadavg()
        facts.rss, facts.hwm = mem_mib(stack.hub_pid), mem_mib(stack.hub_pid, "VmHWM")
        assert stack.hub is not None
        facts.hub_log = log_levels(stack.hub.log_path)
        facts.sync_limited = rx.limited
        print(report(phases, busy_phases, modes, args, facts))
        if args.profile:
            await profile(b, modes[-1], args.profile, 2 * args.n)
        return 0
    finally:
        if rx is not None:
            await rx.close()
        await http.close()
        await stack.stop()
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


async def profile(b: Bench, mode: Mode, out: Path, n: int) -> None:
    """One extra hub phase under py-spy; not part of the figures above, since sampling slows
    the hub down."""
    spy = find_py_spy()
    if spy is None:
        print("\n--profile needs py-spy: pip install py-spy", file=sys.stderr)
        return
    proc = await start_py_spy(spy, b.meter.pids["hub"], out)
    try:
        p = await b.phase("hub", mode, n, "profile")
    finally:
        err = await stop_py_spy(proc)
    print(
        f"\npy-spy profile of the hub during {n} webhooks ({mode.label()}; "
        f"{p.rate:.1f} msg/s, ack p99 {ms(p.answers, 99):.1f} ms under sampling), "
        f"raw stacks in {out}"
    )
    print(summarize_profile(out, err))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=200, help="messages per phase (default 200)")
    parser.add_argument("--concurrency", type=int, default=16, help="in flight / customers")
    parser.add_argument(
        "--rooms",
        choices=["one", "many", "both"],
        default="both",
        help="one customer (one room), --concurrency customers (rooms), or both",
    )
    parser.add_argument("--rounds", type=int, default=2, help="repeat every phase (median)")
    parser.add_argument("--profile", metavar="FILE", type=Path, help="then py-spy the hub")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, DBs)")
    parser.add_argument(
        "--max-load", type=float, default=1.5, help="wait for a lower 1-min load average"
    )
    parser.add_argument(
        "--max-wait", type=float, default=600, help="seconds to wait for it at most"
    )
    args = parser.parse_args()
    if args.n < 1 or args.concurrency < 2 or args.rounds < 1:
        parser.error("-n and --rounds must be positive, --concurrency at least 2")
    if args.profile:
        args.profile = args.profile.absolute()
    return asyncio.run(bench(args, Facts(commit=git_commit())))


if __name__ == "__main__":
    sys.exit(main())
