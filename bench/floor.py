"""What the stack costs before the hub does anything: reference figures for relay.py.

- **RSS floor**: a bare interpreter that imports only the runtime libraries every hub process
  needs (aiohttp's server and client, SQLAlchemy's asyncio engine on aiosqlite) and opens
  one database connection; then the same plus pydantic and PyYAML, which read the config.
  The hub's idle RSS can't go below these.
- **Cold-request CPU**: a trivial aiohttp JSON endpoint on uvloop (parse the body, answer
  JSON) served back to back and with a pause between requests. A process that sleeps
  between requests pays for cold caches on every wake-up; a message relayed sequentially
  through the hub wakes it for three HTTP exchanges, so this is the yardstick for its
  sequential CPU per message.

    .venv/bin/python bench/floor.py [--gap-ms 35] [-n 300]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

FLOOR_IMPORTS = {
    "aiohttp+SQLAlchemy+aiosqlite": "",
    "the same + pydantic+PyYAML": "import pydantic, yaml",
}
_FLOOR_SCRIPT = """
import asyncio, aiohttp.web, sqlalchemy, sqlalchemy.ext.asyncio, aiosqlite
{extra}
async def main():
    engine = sqlalchemy.ext.asyncio.create_async_engine("sqlite+aiosqlite:///{db}")
    async with engine.connect() as conn:
        await conn.execute(sqlalchemy.text("SELECT 1"))
    async with aiohttp.ClientSession():
        pass
asyncio.run(main())
for line in open("/proc/self/status"):
    if line.startswith("VmRSS:"):
        print(int(line.split()[1]) / 1024)
"""

_SERVER_SCRIPT = """
import sys, uvloop
from aiohttp import web
async def echo(request):
    body = await request.json()
    return web.json_response({"ok": True, "n": body.get("n")})
app = web.Application()
app.router.add_post("/x", echo)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None,
            loop=uvloop.new_event_loop())
"""


def rss_floor(tmp: Path) -> dict[str, float]:
    """label -> VmRSS in MiB of a fresh interpreter importing that stack."""
    out = {}
    for label, extra in FLOOR_IMPORTS.items():
        script = _FLOOR_SCRIPT.format(extra=extra, db=tmp / "floor.db")
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(script)],
            capture_output=True,
            text=True,
            check=True,
        )
        out[label] = float(done.stdout.strip())
    return out


def _sched_seconds(pid: int) -> float:
    """Time on CPU of all of pid's threads, in ns precision (/proc/<pid>/task/*/schedstat)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
    return total / 1e9


async def request_cpu(gaps_ms: list[float], n: int) -> dict[float, float]:
    """gap in ms -> server CPU ms per request of the trivial endpoint at that pace."""
    import aiohttp

    from hub.devserver.synapse import free_port

    port = free_port()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", _SERVER_SCRIPT, str(port))
    out = {}
    try:
        url = f"http://127.0.0.1:{port}/x"
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.post(url, json={"n": 0}) as resp:
                        await resp.read()
                    break
                except aiohttp.ClientConnectionError:
                    if proc.returncode is not None:
                        raise RuntimeError(f"trivial server exited: {proc.returncode}") from None
                    await asyncio.sleep(0.1)
            else:
                raise RuntimeError("trivial server did not answer within 10 s")
            for gap in gaps_ms:
                for i in range(50):  # warm-up at this pace
                    async with http.post(url, json={"n": i}) as resp:
                        await resp.read()
                before = _sched_seconds(proc.pid)
                for i in range(n):
                    async with http.post(url, json={"n": i}) as resp:
                        await resp.read()
                    if gap:
                        await asyncio.sleep(gap / 1000)
                out[gap] = (_sched_seconds(proc.pid) - before) * 1000 / n
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gap-ms", type=float, default=35.0, help="pause between requests")
    parser.add_argument("-n", type=int, default=300, help="requests per pace")
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for label, mib in rss_floor(Path(tmp)).items():
            print(f"RSS floor, {label:30} {mib:6.1f} MiB")
    cpu = asyncio.run(request_cpu([0.0, args.gap_ms], args.n))
    for gap, ms in cpu.items():
        pace = "back to back" if not gap else f"{gap:.0f} ms apart"
        print(f"trivial aiohttp JSON request, {pace:16} {ms:6.3f} ms CPU per request")
    return 0


if __name__ == "__main__":
    REPO = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(REPO))
    sys.exit(main())
