"""Shared pieces of the benchmarks: the stack (Synapse + stand-ins + the hub as a process),
the adviser's raw /sync receiver, /proc readings, percentiles, py-spy summaries.

The stack is built the way tests/e2e/conftest.py builds it: a hub config in a temp dir ->
`hub generate-registration` -> a LocalSynapse with for_tests=True -> `hub run` as a child
process, so its CPU and memory can be read from /proc/<pid>. Channels whose loopback
stand-in is asked for (`standins=("whatsapp", ...)`) are started first and enabled in the
hub's config with their `hub_config()`, as the e2e stack does.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/x.py` puts only bench/ on the path
    sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import yaml  # noqa: E402

from hub.config import load_config  # noqa: E402
from hub.devserver.synapse import (  # noqa: E402
    LocalSynapse,
    ensure_synapse_installed,
    free_port,
    synapse_for_hub,
)
from tests.e2e.conftest import DOMAIN, PASSWORD, STANDINS  # noqa: E402
from tests.e2e.helpers import HubProcess, generate_registration  # noqa: E402

NAN = float("nan")
# The widget's limits at the highest each key accepts (hub/config/channels.py): a bench's
# visitors all come from 127.0.0.1 and would be refused as one abuser.
WIDGET_LIMITS_WIDE_OPEN = {
    "sessions_per_address": 10_000,
    "messages_per_visitor": 10_000,
    "messages_per_address": 100_000,
    "uploads_per_visitor": 10_000,
    "new_conversations": 100_000,
}
SYNC_FILTER = json.dumps(
    {
        "room": {
            "timeline": {"limit": 200, "types": ["m.room.message"]},
            "state": {"types": []},
            "ephemeral": {"types": []},
            "account_data": {"types": []},
        },
        "presence": {"types": []},
        "account_data": {"types": []},
    },
    separators=(",", ":"),
)


# -- /proc ----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of all threads of pid (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mem_mib(pid: int, key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return NAN


def private_mib(pid: int) -> float:
    """Memory only this process holds (USS): private clean + dirty pages, in MiB."""
    total = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1])
    return total / 1024


def busy_cpu_seconds() -> float:
    """CPU time the processes of the machine spent (the first line of /proc/stat). Interrupt
    time is left out: loopback traffic of the bench's own processes lands there."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system = (int(x) for x in fields[:3])
    return (user + nice + system) / os.sysconf("SC_CLK_TCK")


def kernel_threads_cpu() -> float:
    """CPU seconds of the kernel's threads (children of kthreadd, pid 2): I/O completion,
    journalling, loopback networking, largely on behalf of the processes measured."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if fields[1] == "2" or stat.parent.name == "2":
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds over a span of the processes named (e.g. hub, synapse, bench), of the
    kernel's threads ("kernel") and of every other process ("others": other benchmarks and
    test runs sharing the machine, also those that started and ended within the span)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._before: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        now = {k: cpu_seconds(p) for k, p in self.pids.items()}
        now["kernel"] = kernel_threads_cpu()
        now["all"] = busy_cpu_seconds()
        return now

    def start(self) -> None:
        self._before = self._now()

    def stop(self) -> dict[str, float]:
        after = self._now()
        used = {k: after[k] - self._before[k] for k in after}
        used["kernel"] = max(0.0, used["kernel"])  # a kernel thread that ended takes its CPU
        used["others"] = max(0.0, used.pop("all") - sum(used.values()))
        return used


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


async def wait_for_low_load(limit: float, max_wait: float) -> str:
    """Wait (at most max_wait seconds) until the 1-minute load average is <= limit, since
    the machine is shared with other benchmarks and test runs. -> the load average then."""
    deadline = time.monotonic() + max_wait
    told = False
    while os.getloadavg()[0] > limit and time.monotonic() < deadline:
        if not told:
            print(
                f"load average {loadavg()} > {limit}: waiting up to {max_wait:.0f} s ...",
                file=sys.stderr,
            )
            told = True
        await asyncio.sleep(5)
    if os.getloadavg()[0] > limit:
        print(f"load average still {loadavg()}: measuring anyway", file=sys.stderr)
    return loadavg()


# -- the adviser's receiving side ----------------------------------------------------------


class Receiver:
    """A raw /sync long-poll as the adviser: the arrival time of every awaited body.

    Raw JSON instead of nio, so the bench spends little CPU next to the hub and Synapse."""

    def __init__(self, base_url: str, token: str) -> None:
        self.url = base_url + "/_matrix/client/v3/sync"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.pending: dict[str, asyncio.Future[float]] = {}
        self.limited = 0  # responses whose timeline was cut: events may have been missed
        self.errors = 0
        self.syncs = 0  # /sync responses (each one Synapse work, batched or not)
        self._since = ""
        self._http: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        _, doc = await self._sync(0)
        self._since = doc["next_batch"]
        self._task = asyncio.create_task(self._loop())

    def expect(self, body: str) -> asyncio.Future[float]:
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.pending[body] = fut
        return fut

    async def _sync(self, timeout_ms: int) -> tuple[float, dict[str, Any]]:
        assert self._http is not None
        params = {"timeout": str(timeout_ms), "filter": SYNC_FILTER}
        if self._since:
            params["since"] = self._since
        async with self._http.get(self.url, params=params, headers=self.headers) as resp:
            raw = await resp.read()
            arrived = time.perf_counter()
            if resp.status != 200:
                raise ValueError(f"/sync answered {resp.status}: {raw[:200]!r}")
        return arrived, json.loads(raw)

    async def _loop(self) -> None:
        while True:
            try:
                arrived, doc = await self._sync(30_000)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                self.errors += 1
                print(f"  ! adviser /sync failed: {exc!r}", file=sys.stderr)
                await asyncio.sleep(0.5)
                continue
            self.syncs += 1
            self._since = doc.get("next_batch", self._since)
            for room in doc.get("rooms", {}).get("join", {}).values():
                timeline = room.get("timeline", {})
                self.limited += bool(timeline.get("limited"))
                for ev in timeline.get("events", []):
                    body = ev.get("content", {}).get("body")
                    fut = self.pending.pop(body, None) if isinstance(body, str) else None
                    if fut is not None and not fut.done():
                        fut.set_result(arrived)

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._http:
            await self._http.close()


# -- the stack ------------------------------------------------------------------------------


@dataclass
class Stack:
    root: Path
    synapse: LocalSynapse | None = None
    hub: HubProcess | None = None
    hub_url: str = ""
    as_token: str = ""
    adviser_mxid: str = ""
    standins: dict[str, Any] = field(default_factory=dict)

    @property
    def hub_pid(self) -> int:
        assert self.hub is not None and self.hub.proc is not None
        return self.hub.proc.pid

    @property
    def synapse_pid(self) -> int:
        # LocalSynapse has no public pid; its /proc figures are read for context only.
        assert self.synapse is not None and self.synapse._proc is not None
        return self.synapse._proc.pid

    async def stop(self) -> None:
        """Everything that was started, in reverse order; safe after a failed start."""
        if self.hub is not None:
            await self.hub.stop()
        if self.synapse is not None:
            with contextlib.suppress(ProcessLookupError, AssertionError):
                os.kill(self.synapse_pid, signal.SIGCONT)  # in case a bench froze it
            await self.synapse.stop()
        for standin in self.standins.values():
            await standin.stop()


async def start_standins(names: tuple[str, ...], into: dict[str, Any]) -> None:
    """Start the loopback stand-ins of these channels (tests/e2e/conftest.py's table)."""
    for name in names:
        module_name, class_name, kwargs = STANDINS[name]
        standin = getattr(importlib.import_module(module_name), class_name)(**kwargs)
        await standin.start()
        into[name] = standin


async def start_stack(
    stack: Stack,
    *,
    shop_name: str = "Farbenhaus Bench",
    standins: tuple[str, ...] = (),
    extra_config: dict[str, Any] | None = None,
    registrations: tuple[Path, ...] = (),
) -> Stack:
    """As tests/e2e/conftest.py's `stack` fixture, in stack.root. Fills `stack` as it goes,
    so the caller's `finally: await stack.stop()` stops whatever did start. `registrations`:
    further appservice registration files Synapse loads beside the hub's (e.g. a bench's
    yardstick appservice)."""
    root = stack.root
    hub_port, hs_port = free_port(), free_port()
    config: dict[str, Any] = {
        "data_dir": str(root / "hub"),
        "homeserver": {"url": f"http://127.0.0.1:{hs_port}", "domain": DOMAIN},
        "appservice": {"as_token": "CHANGE_ME", "hs_token": "CHANGE_ME"},
        "http": {"host": "127.0.0.1", "port": hub_port},
        "shop": {"name": shop_name, "advisers": [f"@anna:{DOMAIN}"]},
        # Every visitor of a bench comes from 127.0.0.1: the widget's per-address limits
        # (issue 12) would refuse them as one abuser.
        "channels": {"webchat": {"limits": dict(WIDGET_LIMITS_WIDE_OPEN)}},
        "logging": {"level": "INFO"},
        **(extra_config or {}),
    }
    await start_standins(standins, stack.standins)
    if stack.standins:
        channels = config.setdefault("channels", {})
        for name, standin in stack.standins.items():
            channels[name] = standin.hub_config()
    config_path = root / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    registration = root / "registration.yaml"
    await generate_registration(config_path, registration)
    hub_config = load_config(config_path)
    stack.synapse = synapse_for_hub(
        hub_config,
        registration,
        root / "synapse",
        await ensure_synapse_installed(),
        secrets.token_hex(16),
        for_tests=True,
    )
    stack.synapse.config.registration_files += registrations
    stack.as_token = hub_config.appservice.as_token
    stack.hub_url = f"http://127.0.0.1:{hub_port}"
    stack.synapse.write_config()
    await stack.synapse.start()
    stack.adviser_mxid = await stack.synapse.register_user("anna", PASSWORD, displayname="Anna")
    stack.hub = HubProcess(config_path, stack.hub_url, root / "hub.log")
    await stack.hub.start()
    return stack


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No garbage collection in the bench's own process while a phase is timed: a full
    collection of its objects took 30–55 ms and was counted as the hub's latency (a webhook
    acknowledgement "p99" of 69 ms that a trace inside the hub never saw). Collected before
    and right after instead."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


# -- statistics and report helpers ---------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    if not values:
        return NAN
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo = int(k)
    return s[lo] + (s[min(lo + 1, len(s) - 1)] - s[lo]) * (k - lo)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def git_commit() -> str:
    """`git describe` of the tree measured; HUB_BENCH_COMMIT names it where there is no
    .git (a tree exported with `git archive` to measure a commit while main is edited)."""
    if os.environ.get("HUB_BENCH_COMMIT"):
        return os.environ["HUB_BENCH_COMMIT"]
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "?"
    return head.stdout.strip() or "?"


def log_levels(path: Path) -> Counter[str]:
    """WARNING and ERROR lines in the hub's log (format: time LEVEL logger: text)."""
    found: Counter[str] = Counter()
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            level = line.split(" ", 3)[2] if line.count(" ") >= 3 else ""
            if level in ("WARNING", "ERROR", "CRITICAL"):
                found[level] += 1
    return found


# -- profile --------------------------------------------------------------------------------


def find_py_spy() -> str | None:
    return shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")


async def start_py_spy(spy: str, pid: int, out: Path) -> asyncio.subprocess.Process:
    """`py-spy record --gil --format raw` on pid; stop it with stop_py_spy."""
    proc = await asyncio.create_subprocess_exec(
        *[spy, "record", "--pid", str(pid), "--rate", "250", "--gil", "--format", "raw"],
        *["--output", str(out)],
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    await asyncio.sleep(1.5)  # attach
    return proc


async def stop_py_spy(proc: asyncio.subprocess.Process) -> str:
    """SIGINT (py-spy writes its output then) -> py-spy's stderr."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGINT)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    except TimeoutError:
        proc.kill()
        _, err = await proc.communicate()
    return err.decode(errors="replace")


def summarize_profile(path: Path, err: str, top: int = 12) -> str:
    """Shares of py-spy's raw (collapsed) samples: self time by library, inclusive time by
    hub function. Recorded with --gil, so a sample is Python code running, not a thread
    parked in a queue or in epoll."""
    if not path.exists():
        return f"  py-spy wrote nothing: {err[-500:]}"
    by_lib: Counter[str] = Counter()
    by_hub: Counter[str] = Counter()
    roots: Counter[str] = Counter()  # where stacks without a hub frame start
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n, frames = int(count), stack.split(";")
        total += n
        where = frames[-1].rpartition(" (")[2].rstrip(")")  # e.g. sqlalchemy/orm/session.py:2555
        by_lib[where.split("/")[0] if "/" in where else where.split(":")[0]] += n
        hub_frames = {f.partition(" (")[0] for f in frames if " (hub/" in f}
        for name in hub_frames:
            by_hub[name] += n
        if not hub_frames:
            roots[frames[0].partition(" (")[0]] += n
    if not total:
        return "  (no samples)"
    lines = [f"  {total} samples holding the GIL; self time by library:"]
    lines += [f"    {100 * c / total:5.1f}%  {f}" for f, c in by_lib.most_common(top)]
    lines.append("  inclusive, by hub function (a sample counts once per function):")
    lines += [
        f"    {100 * c / total:5.1f}%  {f}"
        for f, c in by_hub.most_common(top * 3)
        if f not in ("<module>", "main", "cmd_run")
    ]
    # SQLAlchemy's asyncio layer runs the ORM in greenlets: py-spy shows those stacks
    # starting at Session.execute & co., with no hub frame above them.
    lines.append(f"  no hub frame on the stack: {100 * roots.total() / total:.1f}%, starting at")
    lines += [f"    {100 * c / total:5.1f}%  {f}" for f, c in roots.most_common(6)]
    return "\n".join(lines)
