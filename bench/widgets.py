"""Many widgets on one hub: N concurrent web-chat websockets held by one hub process.

    .venv/bin/python bench/widgets.py [-n 10000] [--step 1000] [--workers 2]
                                      [--addresses 50] [--hub-nofile N] [--no-push]
                                      [--engine sqlite|postgresql] [--drain S] [--keep]

The hub runs as its own process (`python -m hub run -c config.yaml`, SQLite by default) with
the web chat on and every `channels.webchat.limits` key at the highest value it accepts (as
tests/e2e/conftest.py does). The Matrix side is bench/growth.py's homeserver stand-in in this
process (a widget session makes no room: a conversation and its portal are made on the
visitor's first message, so only the push phase needs one; no Synapse). The visitors are
--workers client processes (aiohttp, one event loop each), spread over --addresses loopback
source addresses (127.0.0.2 ...), as customers come from many addresses.

Phases, each printed as it ends:
1. sessions: every visitor POSTs /webchat/api/session (one SQLite write each: the visitor's
   row), 32 in flight per worker: the rate and what was refused.
2. ramp: websockets opened --step at a time (auth frame, "ready", the backlog read); after
   each step: the hub's VmRSS, open file descriptors, CPU, and the event loop's lag seen as
   the time /healthz takes (median and max of 10 GETs). The ramp stops at the first step with
   more than 1 % failures: that is what broke first, and its errors are shown.
3. idle: the hub's CPU per second with every socket open (websocket heartbeats, 25 s).
4. conversations (unless --no-push): every visitor writes one message (POST
   /webchat/api/messages): N conversations, N portal rooms made on the stand-in.
5. push: one adviser reply per visitor, delivered as appservice transactions of 100 events
   (the real path: matrix.event job, the dispatcher, hub.db.outbound.adviser_message, the
   channel.send job, the websocket frame). Measured: from the first transaction's PUT until
   every visitor's widget read its frame; the hub's CPU per push. There is no broadcast to
   all widgets in the hub: one message to everyone is N adviser replies, N x 2 jobs. The
   job queue's backlog left by phase 4 is printed first; --drain S waits (up to S seconds)
   for it to empty, to time the push alone.
Memory per connection: (VmRSS with all sockets open - VmRSS before the first) / sockets.

File descriptors: the bench raises its own soft RLIMIT_NOFILE to the hard limit (the hub and
the workers inherit it) and prints the defaults; --hub-nofile gives the hub a lower limit
(e.g. 1024, systemd's default soft limit for a service) to see it break there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import resource
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/widgets.py` puts only bench/ on the path
    sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import yaml  # noqa: E402

from bench.common import (  # noqa: E402
    NAN,
    WIDGET_LIMITS_WIDE_OPEN,
    cpu_seconds,
    free_port,
    git_commit,
    loadavg,
    mem_mib,
    pct,
)

DOMAIN = "shop.example"
ADVISER = f"@anna:{DOMAIN}"
STEP_FAILURE_SHARE = 0.01


# -- the client processes -------------------------------------------------------------------------


class Widgets:
    """The visitors of one client process: sessions, websockets, frames received."""

    def __init__(self, hub_url: str, count: int, addresses: list[str], tag: str) -> None:
        self.hub_url = hub_url
        self.count = count
        self.addresses = addresses
        self.tag = tag
        self.sessions: list[aiohttp.ClientSession] = []
        self.visitors: list[tuple[str, str]] = []  # (visitor_id, token)
        self.sockets: list[aiohttp.ClientWebSocketResponse] = []
        self.readers: list[asyncio.Task[None]] = []
        self.arrived: dict[str, float] = {}  # text -> monotonic arrival
        self.closed = 0

    def http(self, k: int) -> aiohttp.ClientSession:
        return self.sessions[k % len(self.sessions)]

    async def open(self) -> None:
        for address in self.addresses:
            connector = aiohttp.TCPConnector(limit=0, local_addr=(address, 0))
            timeout = aiohttp.ClientTimeout(total=120)
            self.sessions.append(aiohttp.ClientSession(connector=connector, timeout=timeout))

    async def _bounded(self, jobs: list[Any], concurrency: int) -> tuple[int, Counter[str], float]:
        errors: Counter[str] = Counter()
        ok = 0
        it = iter(jobs)
        t0 = time.monotonic()

        async def worker() -> None:
            nonlocal ok
            for job in it:
                try:
                    await job()
                    ok += 1
                except Exception as exc:  # what broke is the result
                    errors[f"{type(exc).__name__}: {str(exc)[:120]}"] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return ok, errors, time.monotonic() - t0

    async def make_sessions(self, concurrency: int) -> tuple[int, Counter[str], float]:
        async def one(k: int) -> None:
            url = f"{self.hub_url}/webchat/api/session"
            async with self.http(k).post(url, json={"name": f"V {self.tag}{k}"}) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"session {resp.status}: {(await resp.text())[:80]}")
                doc = await resp.json()
            self.visitors.append((doc["visitor_id"], doc["token"]))

        return await self._bounded([lambda k=k: one(k) for k in range(self.count)], concurrency)

    async def connect(self, upto: int, concurrency: int) -> tuple[int, Counter[str], float]:
        ws_url = self.hub_url.replace("http", "ws", 1) + "/webchat/ws"

        async def one(k: int) -> None:
            _visitor_id, token = self.visitors[k]
            ws = await self.http(k).ws_connect(ws_url, heartbeat=None, autoping=True)
            try:
                await ws.send_json({"type": "auth", "token": token, "after": 0})
                first = await ws.receive_json(timeout=30)
                if first != {"type": "ready"}:
                    raise RuntimeError(f"first frame {first!r}"[:100])
            except BaseException:
                await ws.close()
                raise
            self.sockets.append(ws)
            self.readers.append(asyncio.create_task(self._read(ws)))

        start = len(self.sockets)
        upto = min(upto, len(self.visitors))
        return await self._bounded([lambda k=k: one(k) for k in range(start, upto)], concurrency)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                doc = msg.json()
                if doc.get("type") == "message":
                    text = doc.get("message", {}).get("text")
                    if isinstance(text, str) and text.startswith("push "):
                        self.arrived.setdefault(text, time.monotonic())
        self.closed += 1

    async def say(self, concurrency: int) -> tuple[int, Counter[str], float]:
        async def one(k: int) -> None:
            visitor_id, token = self.visitors[k]
            body = {"client_id": uuid.uuid4().hex, "text": f"hi {visitor_id}"}
            headers = {"Authorization": f"Bearer {token}"}
            url = f"{self.hub_url}/webchat/api/messages"
            async with self.http(k).post(url, json=body, headers=headers) as resp:
                if resp.status not in (200, 201):
                    raise RuntimeError(f"message {resp.status}: {(await resp.text())[:80]}")

        n = len(self.sockets)
        return await self._bounded([lambda k=k: one(k) for k in range(n)], concurrency)

    async def close(self) -> None:
        for task in self.readers:
            task.cancel()
        for ws in self.sockets:
            with contextlib.suppress(Exception):
                await ws.close()
        for s in self.sessions:
            await s.close()


def client_main(conn: Connection, hub_url: str, count: int, addresses: list[str], tag: str) -> None:
    """A client process: runs the parent's commands one after another."""
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()

    async def main() -> None:
        w = Widgets(hub_url, count, addresses, tag)
        await w.open()
        loop = asyncio.get_running_loop()
        while True:
            cmd, *args = await loop.run_in_executor(None, conn.recv)
            if cmd == "sessions":
                conn.send(await w.make_sessions(*args))
            elif cmd == "connect":
                conn.send(await w.connect(*args))
            elif cmd == "say":
                conn.send(await w.say(*args))
            elif cmd == "visitors":
                conn.send([v for v, _ in w.visitors[: len(w.sockets)]])
            elif cmd == "arrived":
                conn.send((dict(w.arrived), w.closed, mem_mib(os.getpid())))
            elif cmd == "close":
                await w.close()
                conn.send("closed")
                return

    asyncio.run(main())


class Clients:
    def __init__(self, hub_url: str, n: int, workers: int, addresses: list[str]) -> None:
        ctx = mp.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs: list[Any] = []
        for w in range(workers):
            share = n // workers + (1 if w < n % workers else 0)
            mine = addresses[w::workers] or addresses[:1]
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=client_main, args=(child, hub_url, share, mine, f"w{w}-"), daemon=True
            )
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)
        self.shares = [n // workers + (1 if w < n % workers else 0) for w in range(workers)]

    async def ask(self, cmd: str, *args: Any, per_worker: list[Any] | None = None) -> list[Any]:
        for k, c in enumerate(self.conns):
            c.send((cmd, *(per_worker[k] if per_worker else args)))
        loop = asyncio.get_running_loop()
        return list(await asyncio.gather(*(loop.run_in_executor(None, c.recv) for c in self.conns)))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ask("close"), 60)
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.kill()


def merged(results: list[tuple[int, Counter[str], float]]) -> tuple[int, Counter[str], float]:
    ok = sum(r[0] for r in results)
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r[1])
    return ok, errors, max(r[2] for r in results)


# -- the hub --------------------------------------------------------------------------------------


def fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


async def healthz_lag(http: aiohttp.ClientSession, url: str, n: int = 10) -> tuple[float, float]:
    """(median, max) ms of /healthz: the hub's event loop lag as a client sees it."""
    took = []
    for _ in range(n):
        t0 = time.perf_counter()
        try:
            async with http.get(f"{url}/healthz") as resp:
                await resp.read()
        except (aiohttp.ClientError, TimeoutError):
            took.append(float("inf"))
            continue
        took.append((time.perf_counter() - t0) * 1000)
        await asyncio.sleep(0.02)
    return statistics.median(took), max(took)


def pending_jobs(db_url: str) -> Counter[str]:
    """Pending jobs by kind (SQLite: read-only, beside the hub; PostgreSQL: not read)."""
    import sqlite3

    if not db_url.startswith("sqlite"):
        return Counter()
    path = db_url.split("///", 1)[1]
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        rows = conn.execute(
            "SELECT kind, count(*) FROM outbox WHERE status = 'pending' GROUP BY kind"
        ).fetchall()
    finally:
        conn.close()
    return Counter({str(k): int(n) for k, n in rows})


def set_nofile(soft: int) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, hard), hard))


async def bench(args: argparse.Namespace) -> int:
    from bench.growth import Homeserver
    from tests.e2e.helpers import HubProcess

    default_soft, default_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    print(
        f"widgets benchmark: hub {git_commit()}, {os.cpu_count()} CPUs, load average "
        f"{loadavg()}; N={args.n}, {args.workers} client processes, {args.addresses} source "
        f"addresses; RLIMIT_NOFILE default soft {default_soft}, hard {default_hard}",
        flush=True,
    )
    root = Path(tempfile.mkdtemp(prefix="hub-bench-widgets-"))
    hs = Homeserver()
    await hs.start()
    hub = None
    clients = None
    pg = None
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    try:
        if args.engine == "postgresql":
            from tests.pg import PostgresServer, find_bin_dir

            bin_dir = find_bin_dir()
            assert bin_dir is not None, "PostgreSQL not installed"
            pg = PostgresServer(bin_dir)
            pg.start()
            db_url = pg.url(await pg.create_database("widgets"))
        else:
            db_url = f"sqlite+aiosqlite:///{root / 'hub.db'}"
        port = free_port()
        hs_token = secrets.token_hex(20)
        config = {
            "data_dir": str(root / "hub"),
            "database": {"url": db_url},
            "homeserver": {"url": hs.url, "domain": DOMAIN},
            "appservice": {"as_token": secrets.token_hex(20), "hs_token": hs_token},
            "http": {"host": "127.0.0.1", "port": port},
            "shop": {"name": "Farbenhaus Widgets", "advisers": [ADVISER]},
            "channels": {"webchat": {"limits": dict(WIDGET_LIMITS_WIDE_OPEN)}},
            "logging": {"level": "WARNING"},
        }
        (root / "hub").mkdir()
        (root / "config.yaml").write_text(yaml.safe_dump(config))
        hub_url = f"http://127.0.0.1:{port}"
        hub = HubProcess(root / "config.yaml", hub_url, root / "hub.log")
        set_nofile(args.hub_nofile or default_hard)
        await hub.start(timeout=120)
        set_nofile(default_hard)  # the bench and its client processes
        assert hub.proc is not None
        pid = hub.proc.pid
        hub_soft = resource.prlimit(pid, resource.RLIMIT_NOFILE)[0]
        await asyncio.sleep(2)
        rss0 = mem_mib(pid)
        say(
            f"hub pid {pid}: RLIMIT_NOFILE soft {hub_soft}; VmRSS idle {rss0:.1f} MiB, "
            f"{fds(pid)} fds"
        )

        addresses = [f"127.0.0.{2 + k}" for k in range(args.addresses)]
        clients = Clients(hub_url, args.n, args.workers, addresses)

        # 1. sessions
        cpu0 = cpu_seconds(pid)
        ok, errors, took = merged(await clients.ask("sessions", 32))
        say(
            f"sessions: {ok} in {took:.1f} s ({ok / took:.0f}/s), hub CPU "
            f"{(cpu_seconds(pid) - cpu0) * 1000 / max(1, ok):.2f} ms each, refused/failed "
            f"{sum(errors.values())} {dict(errors.most_common(3))}"
        )
        rss_sessions = mem_mib(pid)

        # 2. ramp
        say(
            f"{'sockets':>8} {'VmRSS MiB':>10} {'fds':>6} {'step s':>7} {'CPU ms/conn':>12} "
            f"{'healthz p50':>12} {'max ms':>8}  failures"
        )
        target = 0
        broke = ""
        connected = 0
        before_ramp = mem_mib(pid)
        while target < args.n:
            target = min(args.n, target + args.step)
            per = [min(s, -(-target * s // args.n)) for s in clients.shares]
            cpu0 = cpu_seconds(pid)
            ok, errors, took = merged(
                await clients.ask("connect", per_worker=[(p, 32) for p in per])
            )
            connected += ok
            lag50, lagmax = await healthz_lag(http, hub_url)
            step_n = ok + sum(errors.values())
            cpu = (cpu_seconds(pid) - cpu0) * 1000 / max(1, ok)
            say(
                f"{connected:8d} {mem_mib(pid):10.1f} {fds(pid):6d} {took:7.1f} {cpu:12.2f} "
                f"{lag50:12.1f} {lagmax:8.1f}  {sum(errors.values())} "
                f"{dict(errors.most_common(2)) if errors else ''}"
            )
            if step_n and sum(errors.values()) > STEP_FAILURE_SHARE * step_n:
                broke = f"at {connected} sockets: {errors.most_common(3)}"
                break
        rss_all = mem_mib(pid)
        per_conn_kib = (rss_all - before_ramp) * 1024 / max(1, connected)
        say(
            f"all connected: {connected} sockets; VmRSS {before_ramp:.1f} -> {rss_all:.1f} MiB "
            f"= {per_conn_kib:.1f} KiB per connection (sessions made VmRSS {rss0:.1f} -> "
            f"{rss_sessions:.1f} MiB); hub fds {fds(pid)}"
        )
        if broke:
            say(f"BROKE FIRST {broke}")
            log_tail = hub.log_tail(8)
            say("hub log tail:\n" + log_tail)
        cpu0 = cpu_seconds(pid)
        await asyncio.sleep(30)  # more than one heartbeat period (25 s)
        say(
            f"idle with {connected} sockets: hub CPU {(cpu_seconds(pid) - cpu0) * 1000 / 30:.1f} "
            f"ms/s (heartbeats every 25 s)"
        )

        if not args.no_push and connected:
            # 4. conversations
            cpu0 = cpu_seconds(pid)
            t0 = time.monotonic()
            ok, errors, took = merged(await clients.ask("say", 16))
            visitors = [v for vs in await clients.ask("visitors") for v in vs]
            wanted = {f"hi {v}" for v in visitors}
            deadline = time.monotonic() + max(120, len(visitors) * 0.1)
            while time.monotonic() < deadline and not wanted.issubset(hs.ghost_rooms):  # noqa: ASYNC110
                await asyncio.sleep(0.5)
            missing = len(wanted - set(hs.ghost_rooms))
            took = time.monotonic() - t0
            say(
                f"conversations: {ok} first messages posted ({sum(errors.values())} failed "
                f"{dict(errors.most_common(2))}), {len(visitors) - missing} delivered into new "
                f"portal rooms in {took:.1f} s ({(len(visitors) - missing) / took:.0f}/s), hub "
                f"CPU {(cpu_seconds(pid) - cpu0) * 1000 / max(1, ok):.2f} ms each; VmRSS "
                f"{mem_mib(pid):.1f} MiB"
            )
            await asyncio.sleep(5)
            waiting = pending_jobs(db_url)
            say(
                f"job queue after the conversations: {sum(waiting.values())} pending "
                f"{dict(waiting.most_common(4))}"
            )
            if args.drain:
                t0 = time.monotonic()
                while sum(waiting.values()) and time.monotonic() - t0 < args.drain:
                    await asyncio.sleep(5)
                    waiting = pending_jobs(db_url)
                say(
                    f"waited {time.monotonic() - t0:.0f} s for the queue: {sum(waiting.values())} "
                    f"pending {dict(waiting.most_common(4))}"
                )

            # 5. push: one adviser reply per visitor
            rooms = [
                (hs.ghost_rooms[f"hi {v}"], v) for v in visitors if f"hi {v}" in hs.ghost_rooms
            ]
            cpu0 = cpu_seconds(pid)
            t0 = time.monotonic()
            for k in range(0, len(rooms), 100):
                events = [
                    {
                        "event_id": f"$p{uuid.uuid4().hex}",
                        "room_id": room,
                        "type": "m.room.message",
                        "sender": ADVISER,
                        "origin_server_ts": int(time.time() * 1000),
                        "content": {"msgtype": "m.text", "body": f"push {v}"},
                    }
                    for room, v in rooms[k : k + 100]
                ]
                url = f"{hub_url}/_matrix/app/v1/transactions/{uuid.uuid4().hex}"
                async with http.put(
                    url, json={"events": events}, headers={"Authorization": f"Bearer {hs_token}"}
                ) as resp:
                    await resp.read()
            sent = time.monotonic() - t0
            arrived: dict[str, float] = {}
            closed = 0
            deadline = time.monotonic() + max(120, len(rooms) * 0.1)
            while time.monotonic() < deadline:
                got = await clients.ask("arrived")
                arrived = {k: v for d, _, _ in got for k, v in d.items()}
                closed = sum(c for _, c, _ in got)
                if len(arrived) >= len(rooms):
                    break
                await asyncio.sleep(1)
            times = sorted(v - t0 for v in arrived.values())
            cpu = (cpu_seconds(pid) - cpu0) * 1000 / max(1, len(times))
            say(
                f"push: {len(rooms)} adviser replies in {len(rooms) // 100 + 1} transactions "
                f"(PUT took {sent:.1f} s); {len(times)} widgets got theirs: first "
                f"{times[0] if times else NAN:.2f} s, p50 {pct(times, 50):.2f} s, p99 "
                f"{pct(times, 99):.2f} s, all {times[-1] if times else NAN:.2f} s "
                f"({len(times) / times[-1] if times else NAN:.0f}/s); hub CPU {cpu:.2f} ms per "
                f"push; {closed} sockets closed meanwhile; VmRSS {mem_mib(pid):.1f} MiB, VmHWM "
                f"{mem_mib(pid, 'VmHWM'):.1f} MiB"
            )
            worker_rss = [r for _, _, r in await clients.ask("arrived")]
            say(f"client processes' VmRSS: {', '.join(f'{r:.0f}' for r in worker_rss)} MiB")
        return 0
    finally:
        if clients is not None:
            await clients.close()
        await http.close()
        if hub is not None:
            await hub.stop()
        await hs.stop()
        if pg is not None:
            pg.stop()
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=10_000, help="websockets (visitors)")
    parser.add_argument("--step", type=int, default=1000, help="sockets opened per ramp step")
    parser.add_argument("--workers", type=int, default=2, help="client processes")
    parser.add_argument("--addresses", type=int, default=50, help="loopback source addresses")
    parser.add_argument("--hub-nofile", type=int, default=0, help="the hub's soft fd limit")
    parser.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--no-push", action="store_true", help="skip conversations and push")
    parser.add_argument(
        "--drain",
        type=float,
        default=0,
        help="before the push, wait up to this many seconds for the job queue to empty",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
