"""Outbound benchmark: an adviser's message through the hub to the WhatsApp Cloud API, against
the earliest any bridge could forward it (a minimal appservice on the same Synapse).

    python bench/outbound.py [-n 200] [--concurrency 16] [--rounds 3] [--keep]
                             [--max-load 1.5] [--max-wait 600]

The issue: an adviser's reply reaches the customer about 1 s late, every time. A bridge
cannot forward an adviser's event before Synapse pushes it in an appservice transaction, so
that push is the yardstick, not the adviser's PUT answer.

One run starts its own stack the way tests/e2e/conftest.py does (bench/common.py's
start_stack: the WhatsApp stand-in, Synapse, `hub run` as a child process) plus the
yardstick: a tiny aiohttp appservice in this process with its own registration file (own
as/hs tokens, an exclusive user namespace `@bench_yardstick_.*`, sender `@bench_yardstick`)
listed in Synapse's app_service_config_files beside the hub's. --concurrency customers each
write a first signed webhook, so the hub opens one portal room per customer; the adviser
(@anna) joins them. The yardstick's bot opens as many rooms of the same shape (private, the
adviser invited with power 50, one of its "ghosts" joined and writing first); the adviser
joins those too. Synapse pushes the events of a room to an appservice when one of its users
is a member, so the portal rooms go to the hub only and the yardstick's rooms to the
yardstick only. Then, per round and per mode, N messages go

  hub:       PUT /rooms/{portal room}/send/m.room.message/{txn} as the adviser, timed until
             the WhatsApp stand-in reads the hub's POST /{phone-number-id}/messages carrying
             that body;
  yardstick: the same PUT into one of the yardstick's rooms, timed until the yardstick
             reads Synapse's transaction carrying the event.

Both clocks stop the same way: in this process, once the request's JSON body is read.
Separate rooms, since every message in a portal room is forwarded by the hub: a yardstick
measured there would share the machine with the hub forwarding its previous messages.

Modes: sequential (one message in flight, rotating over the rooms) and --concurrency in
flight, one worker per room. Every round runs yardstick and hub back to back per mode and
alternates which goes first; throughput is the median over rounds, latency percentiles are
over all rounds' messages; hub CPU per message is the utime+stime delta of the hub process
(/proc/<pid>/stat) over the phase divided by the messages received.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/outbound.py` puts only bench/ on the path
    sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import yaml  # noqa: E402
from aiohttp import web  # noqa: E402

from bench.common import (  # noqa: E402
    NAN,
    CpuMeter,
    Stack,
    collector_paused,
    cpu_seconds,
    git_commit,
    loadavg,
    log_levels,
    pct,
    start_stack,
    verdict,
    wait_for_low_load,
)
from bench.webhooks import open_rooms  # noqa: E402
from hub.devserver.synapse import DEFAULT_SYNAPSE_VERSION  # noqa: E402
from hub.matrix.client import MatrixClient  # noqa: E402
from hub.matrix.portal import ADVISER_POWER  # noqa: E402
from tests.e2e.conftest import DOMAIN  # noqa: E402
from tests.standins.loopback import serve_on_loopback  # noqa: E402
from tests.standins.whatsapp import Recorded, WhatsappStandin  # noqa: E402

MSG_TIMEOUT = 20.0  # one message: PUT until it arrives
SETTLE = 1.0  # between phases
TARGET_ADDED_P50_MS = 5.0  # sequential: hub p50 - yardstick p50
TARGET_RATIO = 0.9  # throughput at --concurrency in flight, hub / yardstick
TARGET_CPU_MS = 2.0  # hub CPU per message at --concurrency in flight
YARDSTICK_LOCALPART = "bench_yardstick"
PATHS = ("hub", "yardstick")


# -- where messages arrive ------------------------------------------------------------------


class Arrivals:
    """The arrival time (time.perf_counter()) of every awaited body at one end."""

    def __init__(self) -> None:
        self.pending: dict[str, asyncio.Future[float]] = {}

    def expect(self, body: str) -> asyncio.Future[float]:
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.pending[body] = fut
        return fut

    def arrived(self, body: object, at: float) -> None:
        fut = self.pending.pop(body, None) if isinstance(body, str) else None
        if fut is not None and not fut.done():
            fut.set_result(at)


def whatsapp_arrivals(wa: WhatsappStandin) -> Arrivals:
    """Texts the hub sends to the WhatsApp stand-in, as its listener reads them."""
    arrivals = Arrivals()

    def listener(rec: Recorded) -> None:
        if rec.method == "POST" and rec.path.endswith("/messages") and isinstance(rec.json, dict):
            text = rec.json.get("text")
            if isinstance(text, dict):
                arrivals.arrived(text.get("body"), rec.at)

    wa.listeners.append(listener)
    return arrivals


class Yardstick:
    """A minimal appservice: takes Synapse's transactions, notes when each awaited body
    arrived and answers at once. The earliest a bridge could forward an adviser's event."""

    def __init__(self, domain: str) -> None:
        self.domain = domain
        self.as_token = secrets.token_hex(32)
        self.hs_token = secrets.token_hex(32)
        self.bot = f"@{YARDSTICK_LOCALPART}:{domain}"
        self.arrivals = Arrivals()
        self.transactions = 0
        self.refused = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_put("/_matrix/app/v1/transactions/{txn}", self._transaction)
        self._runner, self.url = await serve_on_loopback(app)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def write_registration(self, path: Path) -> Path:
        domain = self.domain.replace(".", "\\.")
        path.write_text(
            yaml.safe_dump(
                {
                    "id": "bench-yardstick",
                    "url": self.url,
                    "as_token": self.as_token,
                    "hs_token": self.hs_token,
                    "sender_localpart": YARDSTICK_LOCALPART,
                    "rate_limited": False,
                    "receive_ephemeral": False,
                    "namespaces": {
                        "users": [
                            {"exclusive": True, "regex": f"@{YARDSTICK_LOCALPART}_.*:{domain}$"}
                        ],
                        "aliases": [],
                        "rooms": [],
                    },
                },
                sort_keys=False,
            )
        )
        return path

    async def _transaction(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.hs_token}":
            self.refused += 1
            return web.json_response({"errcode": "M_FORBIDDEN"}, status=403)
        doc = await request.json()
        at = time.perf_counter()
        self.transactions += 1
        for ev in doc.get("events", []):
            content = ev.get("content")
            if ev.get("type") == "m.room.message" and isinstance(content, dict):
                self.arrivals.arrived(content.get("body"), at)
        return web.json_response({})


async def open_yardstick_rooms(
    http: aiohttp.ClientSession,
    synapse_url: str,
    ys: Yardstick,
    adviser: MatrixClient,
    adviser_mxid: str,
    count: int,
) -> list[str]:
    """count rooms shaped like portal rooms (the bot creates it private, invites a ghost of
    its namespace and the adviser with adviser power; the ghost joins and writes first),
    which the adviser joins."""
    bot = MatrixClient(http, synapse_url, ys.as_token, ys.bot)
    await bot.ensure_registered(YARDSTICK_LOCALPART)
    rooms = []
    for k in range(count):
        localpart = f"{YARDSTICK_LOCALPART}_{k:02d}"
        ghost = f"@{localpart}:{ys.domain}"
        await bot.ensure_registered(localpart)
        room = await bot.create_room(
            alias_localpart="",
            name=f"Yardstick · {k:02d}",
            topic="bench/outbound.py: the yardstick appservice's room",
            invite=[ghost, adviser_mxid],
            power_users={adviser_mxid: ADVISER_POWER},
        )
        await bot.join(room, ghost)
        await bot.send_event(
            room, "m.room.message", {"msgtype": "m.text", "body": "hello"}, "hello", as_user=ghost
        )
        await adviser.request("POST", f"/_matrix/client/v3/join/{quote(room, safe='')}", {})
        rooms.append(room)
    return rooms


# -- phases ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mode:
    key: str  # seq | conc
    in_flight: int

    def label(self) -> str:
        if self.in_flight == 1:
            return "sequential (1 in flight)"
        return f"{self.in_flight} in flight, {self.in_flight} rooms"


@dataclass
class Phase:
    path: str  # hub | yardstick
    mode: str
    n: int
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)  # s, PUT sent until it arrived
    answers: list[float] = field(default_factory=list)  # s, until Synapse answered the PUT
    errors: Counter[str] = field(default_factory=Counter)
    cpu: dict[str, float] = field(default_factory=dict)  # s: hub, synapse, bench, kernel, ...

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0


@dataclass
class Bench:
    adviser: MatrixClient  # the adviser's access token
    rooms: dict[str, list[str]]  # path -> room ids
    ends: dict[str, Arrivals]  # path -> where its messages arrive
    meter: CpuMeter

    async def _one(self, phase: Phase, room: str, body: str) -> None:
        fut = self.ends[phase.path].expect(body)
        content = {"msgtype": "m.text", "body": body}
        t0 = time.perf_counter()
        try:
            await asyncio.wait_for(
                self.adviser.send_event(room, "m.room.message", content, secrets.token_hex(8)),
                MSG_TIMEOUT,
            )
            phase.answers.append(time.perf_counter() - t0)
            phase.latencies.append(await asyncio.wait_for(fut, MSG_TIMEOUT) - t0)
        except Exception as exc:
            self.ends[phase.path].pending.pop(body, None)
            phase.errors[type(exc).__name__ + ": " + str(exc)[:120]] += 1

    async def phase(self, path: str, mode: Mode, n: int, tag: str) -> Phase:
        """Closed loop: mode.in_flight workers, each sends its next message once its last
        one arrived; one worker per room, or one worker rotating over the rooms."""
        phase = Phase(path, mode.key, n)
        rooms = self.rooms[path]
        indexes = iter(range(n))  # shared by the workers: next() never awaits
        deadline = time.perf_counter() + 60.0 + 2.5 * n  # the old hub needs ~1 s a message

        async def worker(w: int) -> None:
            for i in indexes:
                if time.perf_counter() > deadline:
                    phase.errors["phase deadline passed"] += 1
                    continue
                room = rooms[i % len(rooms)] if mode.in_flight == 1 else rooms[w % len(rooms)]
                await self._one(phase, room, f"outbound {tag} {path} {mode.key} {i}")

        self.meter.start()
        start = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(mode.in_flight)))
        phase.elapsed = time.perf_counter() - start
        phase.cpu = self.meter.stop()
        return phase


async def measure(b: Bench, modes: list[Mode], args: argparse.Namespace) -> list[Phase]:
    phases: list[Phase] = []
    for rnd in range(args.rounds):
        for k, mode in enumerate(modes):
            # Alternate who goes first, so a drift of the machine's load hits both.
            for path in PATHS[::-1] if (rnd + k) % 2 == 0 else PATHS:
                await asyncio.sleep(SETTLE)
                with collector_paused():
                    p = await b.phase(path, mode, args.n, f"r{rnd}")
                phases.append(p)
                print(
                    f"  round {rnd + 1} {path:9} {mode.label():24}: {p.rate:6.1f} msg/s, "
                    f"p50 {pct(p.latencies, 50) * 1000:7.1f} ms, hub CPU "
                    f"{1000 * p.cpu['hub'] / max(1, len(p.latencies)):5.2f} ms/msg, "
                    f"lost {args.n - len(p.latencies)}",
                    file=sys.stderr,
                )
    return phases


# -- report ---------------------------------------------------------------------------------


@dataclass
class Facts:
    commit: str = "?"
    load_before: str = "?"  # before the stack started
    load_measuring: str = "?"  # when the measured phases began
    load_end: str = "?"
    idle_cpu_ms_per_s: float = NAN  # the hub doing nothing, after the rooms were opened
    transactions: int = 0  # Synapse's transactions to the yardstick during the phases
    hub_log: Counter[str] = field(default_factory=Counter)


def report(phases: list[Phase], modes: list[Mode], args: argparse.Namespace, facts: Facts) -> str:
    w = 44
    conc = modes[-1]

    def of(path: str, mode: str) -> list[Phase]:
        return [p for p in phases if p.path == path and p.mode == mode]

    def rate(path: str, mode: str) -> float:
        return statistics.median(p.rate for p in of(path, mode))

    def lat(path: str, mode: str) -> list[float]:
        return [x * 1000 for p in of(path, mode) for x in p.latencies]

    def cpu_ms(path: str, mode: str, who: str) -> float:
        ps = of(path, mode)
        done = sum(len(p.latencies) for p in ps)
        return 1000 * sum(p.cpu.get(who, 0.0) for p in ps) / done if done else NAN

    elapsed = sum(p.elapsed for p in phases)
    others = sum(p.cpu.get("others", 0.0) for p in phases)
    out = [
        f"outbound benchmark: N={args.n} per phase, {args.rounds} round(s), concurrency "
        f"{args.concurrency}; hub {facts.commit} (SQLite), Synapse {DEFAULT_SYNAPSE_VERSION} "
        f"(SQLite); {os.cpu_count()} CPUs",
        f"load average: before start {facts.load_before}; when measuring began "
        f"{facts.load_measuring}; at end {facts.load_end}; other processes used "
        f"{100 * others / elapsed if elapsed else NAN:.0f} % of a core during the phases",
        "hub:       the adviser's PUT /rooms/{portal room}/send/m.room.message until the",
        "           WhatsApp stand-in reads the hub's POST /{phone-number-id}/messages",
        "yardstick: the adviser's PUT into a room of a minimal appservice on the same Synapse",
        "           until Synapse's transaction with the event reaches it (the earliest any",
        "           bridge could forward)",
        "",
        f"{'latency, ms (all rounds)':{w}} {'p50':>8} {'p99':>8}",
    ]
    for m in modes:
        h, y = lat("hub", m.key), lat("yardstick", m.key)
        answers = [x * 1000 for p in phases if p.mode == m.key for x in p.answers]
        out += [
            m.label(),
            f"{'  hub (PUT → WhatsApp API)':{w}} {pct(h, 50):8.1f} {pct(h, 99):8.1f}",
            f"{'  yardstick (PUT → appservice transaction)':{w}} {pct(y, 50):8.1f} "
            f"{pct(y, 99):8.1f}",
            f"{'  added by the hub (hub - yardstick)':{w}} {pct(h, 50) - pct(y, 50):+8.1f} "
            f"{pct(h, 99) - pct(y, 99):+8.1f}",
            f"{'  (Synapse answering the PUT, both paths)':{w}} {pct(answers, 50):8.1f} "
            f"{pct(answers, 99):8.1f}",
        ]
    out += [
        "",
        f"{'throughput, msg/s (median of rounds)':{w}} {'hub':>8} {'yardstick':>10} {'ratio':>6}",
    ]
    for m in modes:
        h, y = rate("hub", m.key), rate("yardstick", m.key)
        out.append(f"{m.label():{w}} {h:8.1f} {y:10.1f} {h / y if y else NAN:6.2f}")
    out += [
        "",
        f"{'CPU, ms per message':{w}} {'hub':>8} {'Synapse':>8} {'bench':>7} {'kernel':>7}"
        f" {'others':>7}",
    ]
    for path in PATHS:
        for m in modes:
            out.append(
                f"{path + ' phases, ' + m.label():{w}} {cpu_ms(path, m.key, 'hub'):8.2f} "
                f"{cpu_ms(path, m.key, 'synapse'):8.2f} {cpu_ms(path, m.key, 'bench'):7.2f} "
                f"{cpu_ms(path, m.key, 'kernel'):7.2f} {cpu_ms(path, m.key, 'others'):7.2f}"
            )
    pushed = sum(len(p.latencies) for p in phases if p.path == "yardstick")
    out += [
        f"  (idle hub: {facts.idle_cpu_ms_per_s:.1f} ms CPU/s; in yardstick phases the hub is in",
        f"  none of the rooms. Synapse pushed the yardstick {pushed} messages in "
        f"{facts.transactions} transactions)",
    ]
    added = pct(lat("hub", "seq"), 50) - pct(lat("yardstick", "seq"), 50)
    ratio = rate("hub", conc.key) / rate("yardstick", conc.key)
    cpu = cpu_ms("hub", conc.key, "hub")
    out += [
        "",
        "targets",
        f"{'  sequential: hub p50 - yardstick p50':{w}} {added:+8.1f} ms  ≤ "
        f"+{TARGET_ADDED_P50_MS:.0f} ms   {verdict(added <= TARGET_ADDED_P50_MS)}",
        f"{'  ' + conc.label() + ': hub / yardstick':{w}} {ratio:8.2f} ×   ≥ "
        f"{TARGET_RATIO:.2f} ×    {verdict(ratio >= TARGET_RATIO)}",
        f"{'  ' + conc.label() + ': hub CPU / message':{w}} {cpu:8.2f} ms  ≤ "
        f"{TARGET_CPU_MS:.0f} ms     {verdict(cpu <= TARGET_CPU_MS)}",
    ]
    errors: Counter[str] = Counter()
    for p in phases:
        errors.update({f"{p.path} {p.mode}: {k}": v for k, v in p.errors.items()})
    if errors:
        out += ["", "lost messages:"] + [f"  {v} x {k}" for k, v in errors.items()]
    if facts.hub_log:
        out.append("hub log: " + ", ".join(f"{v} {k} lines" for k, v in facts.hub_log.items()))
    return "\n".join(out)


# -- main -----------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, facts: Facts) -> int:
    root = Path(tempfile.mkdtemp(prefix="hub-bench-outbound-"))
    stack = Stack(root)
    ys = Yardstick(DOMAIN)
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
    try:
        facts.load_before = await wait_for_low_load(args.max_load, args.max_wait)
        await ys.start()
        registration = ys.write_registration(root / "yardstick-registration.yaml")
        print(
            f"starting the WhatsApp stand-in, Synapse (with the yardstick appservice) and the "
            f"hub in {root} ...",
            file=sys.stderr,
        )
        await start_stack(stack, standins=("whatsapp",), registrations=(registration,))
        assert stack.synapse is not None and stack.hub is not None
        await asyncio.sleep(2)  # let the start-up work (migrations, ping) finish
        print(f"opening {args.concurrency} WhatsApp portal rooms ...", file=sys.stderr)
        customers, token = await open_rooms(stack, http, args.concurrency)
        adviser = MatrixClient(http, stack.synapse.url, token, stack.adviser_mxid)
        print(f"opening {args.concurrency} yardstick rooms ...", file=sys.stderr)
        mirror = await open_yardstick_rooms(
            http, stack.synapse.url, ys, adviser, stack.adviser_mxid, args.concurrency
        )
        await asyncio.sleep(2)
        before = cpu_seconds(stack.hub_pid)
        await asyncio.sleep(5)  # /proc counts in 10 ms ticks
        facts.idle_cpu_ms_per_s = (cpu_seconds(stack.hub_pid) - before) * 1000 / 5
        pids = {"hub": stack.hub_pid, "synapse": stack.synapse_pid, "bench": os.getpid()}
        b = Bench(
            adviser,
            {"hub": customers.rooms, "yardstick": mirror},
            {"hub": whatsapp_arrivals(stack.standins["whatsapp"]), "yardstick": ys.arrivals},
            CpuMeter(pids),
        )
        modes = [Mode("seq", 1), Mode("conc", args.concurrency)]
        print("warming up ...", file=sys.stderr)
        for path in PATHS:
            await b.phase(path, modes[-1], 2 * args.concurrency, "warmup")
        facts.load_measuring = loadavg()
        transactions = ys.transactions
        phases = await measure(b, modes, args)
        facts.transactions = ys.transactions - transactions
        facts.load_end = loadavg()
        facts.hub_log = log_levels(stack.hub.log_path)
        print(report(phases, modes, args, facts))
        if ys.refused:
            print(f"warning: the yardstick refused {ys.refused} transactions", file=sys.stderr)
        return 0
    finally:
        await http.close()
        await stack.stop()
        await ys.stop()
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=200, help="messages per phase (default 200)")
    parser.add_argument(
        "--concurrency", type=int, default=16, help="in flight / rooms (default 16)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="repeat every phase (median)")
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
    return asyncio.run(bench(args, Facts(commit=git_commit())))


if __name__ == "__main__":
    sys.exit(main())
