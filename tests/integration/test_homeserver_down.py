"""Starting the hub while the homeserver is not there (issue 16): at the first failed attempt
one human line says what the hub waits for and what to check, later attempts a short line
each, and when the homeserver answers, how long it took; no traceback, no exception repr.

In-process: the matrix step's check (hub.app.check_homeserver with a real MatrixClient)
against a closed port, stand-ins that answer as Synapse does without the registration
(401 M_UNKNOWN_TOKEN), as a proxy in front of a stopped Synapse (502), as a web server that
is no homeserver (404), one that never answers, a host name that does not resolve and
https:// for an http:// listener. As an admin sees it: `python -m hub run` in a subprocess,
its stderr read line by line, then SIGTERM.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.client_reqrep import ConnectionKey

from hub.app import check_homeserver
from hub.config import Config
from hub.devserver.synapse import free_port
from hub.matrix.client import MatrixClient
from hub.net import network_cause
from tests.standins.loopback import serve_on_loopback

REPO = Path(__file__).resolve().parents[2]
DOMAIN = "shop.example"
BOT = f"@shopbot:{DOMAIN}"
AS_TOKEN = "a" * 32
FIRST_LINE_SECONDS = 2.0
# The subprocess imports the hub and migrates a new database (in a child process) before
# the matrix step: allowed on top of FIRST_LINE_SECONDS on a slow machine.
PROCESS_START_SECONDS = 30.0

# Synapse's answer to a token it does not know (no registration has it, and no user).
UNKNOWN_TOKEN = {"errcode": "M_UNKNOWN_TOKEN", "error": "Invalid access token passed."}
NGINX_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.24.0</center>\r\n"
    "</body>\r\n</html>\r\n"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def unknown_token(request: web.Request) -> web.StreamResponse:
    return web.json_response(UNKNOWN_TOKEN, status=401)


async def bad_gateway(request: web.Request) -> web.StreamResponse:
    return web.Response(status=502, text=NGINX_502, content_type="text/html")


async def not_found(request: web.Request) -> web.StreamResponse:
    return web.Response(status=404, text="<h1>Not Found</h1>", content_type="text/html")


@asynccontextmanager
async def standin(handler: Handler) -> AsyncIterator[str]:
    """A homeserver stand-in answering every request with `handler`; its base URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner, url = await serve_on_loopback(app)
    try:
        yield url
    finally:
        await runner.cleanup()


@asynccontextmanager
async def silent_server() -> AsyncIterator[str]:
    """Accepts connections and never answers (a homeserver whose packets are swallowed)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for writer in held:
            writer.close()
        server.close()


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


@asynccontextmanager
async def homeserver_at(serve: Handler | None) -> AsyncIterator[str]:
    """A stand-in answering with `serve`, or (None) a closed port: its URL."""
    if serve is None:
        yield closed_port_url()
        return
    async with standin(serve) as url:
        yield url


def config_doc(tmp_path: Path, homeserver_url: str, **homeserver: Any) -> dict[str, Any]:
    return {
        "data_dir": str(tmp_path),
        "homeserver": {"url": homeserver_url, "domain": DOMAIN} | homeserver,
        "appservice": {"as_token": AS_TOKEN, "hs_token": "h" * 32},
        "http": {"host": "127.0.0.1", "port": free_port()},
        "shop": {"name": "Shop", "advisers": [f"@anna:{DOMAIN}"]},
    }


def assert_human(text: str) -> None:
    for raw in ("ConnectionKey", "Traceback", "ClientConnectorError", "proxy_headers_hash"):
        assert raw not in text, text


# -- in-process: the matrix step's check ------------------------------------------------------


async def first_lines(
    url: str, caplog: pytest.LogCaptureFixture, tmp_path: Path, count: int = 1, **homeserver: Any
) -> tuple[list[str], float]:
    """Run the start-up check against `url` until it has logged `count` lines; (the lines,
    seconds until the first)."""
    config = Config.model_validate(config_doc(tmp_path, url, **homeserver))
    async with aiohttp.ClientSession() as http:
        client = MatrixClient(
            http,
            config.homeserver.base_url,
            AS_TOKEN,
            BOT,
            timeout=config.homeserver.request_timeout_seconds,
        )
        with caplog.at_level("INFO", logger="hub.matrix.client"):
            started = time.time()
            task = asyncio.create_task(check_homeserver(client, config))
            try:
                while len(caplog.records) < count:
                    assert not task.done(), task.result()
                    if time.time() - started > 60:
                        pytest.fail(f"no lines after 60 s: {caplog.text}")
                    await asyncio.sleep(0.01)
            finally:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
    records = caplog.records
    assert all(r.exc_info is None for r in records)
    assert_human(caplog.text)
    return [r.getMessage() for r in records], records[0].created - started


@pytest.mark.parametrize(
    ("serve", "reason", "hint"),
    [
        (None, "(connection refused) — ", "is Synapse running and `homeserver.url` right?"),
        (
            unknown_token,
            "(401 M_UNKNOWN_TOKEN): the homeserver does not know the hub's as_token — ",
            "listed in the homeserver's app_service_config_files, and Synapse restarted since?",
        ),
        (
            bad_gateway,
            "(502 Bad Gateway): something answers at that address, but not the homeserver",
            "is Synapse running (behind the proxy)?",
        ),
        (
            not_found,
            "(404 Not Found): this is not a Matrix homeserver's client-server API",
            "is `homeserver.url` the homeserver's own URL",
        ),
    ],
    ids=["closed-port", "unknown-token", "bad-gateway", "not-a-homeserver"],
)
async def test_the_first_line_says_why_at_once(
    serve: Handler | None,
    reason: str,
    hint: str,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    async with homeserver_at(serve) as url:
        lines, seconds = await first_lines(url, caplog, tmp_path, count=2)
    assert seconds < FIRST_LINE_SECONDS, seconds
    assert lines[0].startswith(f"waiting for the homeserver at {url} {reason}"), lines[0]
    assert hint in lines[0], lines[0]
    short = reason.split(")")[0].removeprefix("(")
    assert lines[1] == f"still waiting for the homeserver (attempt 2, {short})"


async def test_a_wrong_host_name(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    # .invalid never resolves (RFC 6761).
    lines, _ = await first_lines("http://synapse.invalid:8008", caplog, tmp_path)
    assert lines[0] == (
        "waiting for the homeserver at http://synapse.invalid:8008 (host name not found) — "
        "is the host name in `homeserver.url` right?"
    )


async def test_https_for_an_http_listener(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    async with standin(unknown_token) as url:
        https = url.replace("http://", "https://")
        lines, seconds = await first_lines(https, caplog, tmp_path)
    assert seconds < FIRST_LINE_SECONDS
    assert lines[0].startswith(f"waiting for the homeserver at {https} (TLS handshake failed")
    assert lines[0].endswith("is `homeserver.url` right (http:// or https://, the port)?")


async def test_a_homeserver_that_never_answers(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    async with silent_server() as url:
        lines, seconds = await first_lines(url, caplog, tmp_path, request_timeout_seconds=1)
    assert seconds < 1 + FIRST_LINE_SECONDS
    assert lines[0] == (
        f"waiting for the homeserver at {url} (no answer within 1 s) — "
        "is Synapse running and `homeserver.url` right?"
    )


async def test_when_the_homeserver_comes_back_one_line_says_so(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """A proxy answers 502 twice, then Synapse is up: whoami, the bot registered already."""
    calls: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        calls.append(request.path)
        if len(calls) <= 2:
            return await bad_gateway(request)
        if request.path.endswith("/account/whoami"):
            return web.json_response({"user_id": BOT})
        if request.path.endswith("/register"):
            return web.json_response(
                {"errcode": "M_USER_IN_USE", "error": "User ID already taken."}, status=400
            )
        return web.json_response({})

    config = Config.model_validate(config_doc(tmp_path, "http://placeholder"))
    async with standin(handler) as url, aiohttp.ClientSession() as http:
        client = MatrixClient(http, url, AS_TOKEN, BOT)
        with caplog.at_level("INFO", logger="hub.matrix.client"):
            await asyncio.wait_for(check_homeserver(client, config), 10)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("waiting for the homeserver at http://placeholder (502 ")
    assert lines[1] == "still waiting for the homeserver (attempt 2, 502 Bad Gateway)"
    assert re.fullmatch(r"homeserver reachable after [2-5] s", lines[2]), lines
    assert len(lines) == 3
    assert "/_matrix/client/v3/register" in calls


# -- as an admin runs it ----------------------------------------------------------------------


class HubRun:
    """`python -m hub run -c CONFIG` with its stderr read line by line."""

    def __init__(self, proc: asyncio.subprocess.Process, started: float) -> None:
        self.proc = proc
        self.started = started
        self.lines: list[tuple[float, str]] = []  # (seconds since start, line)

    async def line_with(self, text: str, timeout: float) -> tuple[float, str]:
        assert self.proc.stderr is not None
        deadline = self.started + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"no line with {text!r} in {timeout} s: {self.text()}")
            try:
                raw = await asyncio.wait_for(self.proc.stderr.readline(), left)
            except TimeoutError:
                continue
            if not raw:
                pytest.fail(f"the hub exited ({await self.proc.wait()}): {self.text()}")
            line = raw.decode().rstrip("\n")
            self.lines.append((time.monotonic() - self.started, line))
            if text in line:
                return self.lines[-1]

    async def stop(self) -> int:
        """SIGTERM, as the service manager stops it; the exit code, all of stderr read."""
        assert self.proc.stderr is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(self.proc.stderr.read(), 30)
        self.lines += [(0.0, line) for line in rest.decode().splitlines()]
        return await asyncio.wait_for(self.proc.wait(), 30)

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


@asynccontextmanager
async def hub_run(tmp_path: Path, doc: dict[str, Any]) -> AsyncIterator[HubRun]:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hub",
        "run",
        "-c",
        str(path),
        cwd=REPO,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    run = HubRun(proc, time.monotonic())
    try:
        yield run
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.parametrize(
    ("serve", "hint"),
    [
        (None, "(connection refused) — is Synapse running and `homeserver.url` right?"),
        (unknown_token, "the homeserver does not know the hub's as_token"),
        (bad_gateway, "(502 Bad Gateway): something answers at that address"),
    ],
    ids=["closed-port", "unknown-token", "bad-gateway"],
)
async def test_hub_run_says_why_it_waits(serve: Handler | None, hint: str, tmp_path: Path) -> None:
    async with homeserver_at(serve) as url, hub_run(tmp_path, config_doc(tmp_path, url)) as run:
        at, first = await run.line_with("waiting for the homeserver", PROCESS_START_SECONDS)
        assert f"WARNING hub.matrix.client: waiting for the homeserver at {url} (" in first
        assert hint in first
        # The next attempt a second later: a short line.
        second = (await run.line_with("still waiting", at + 10))[1]
        assert second.endswith(f"still waiting for the homeserver (attempt 2, {_reason(first)})")
        code = await run.stop()
    assert code == 0, run.text()  # SIGTERM while waiting: a clean stop
    assert_human(run.text())
    assert "hub cannot start" not in run.text()
    # The first line comes as soon as the first attempt failed: the time from the migration's
    # line (the step before) to it.
    migrated = next(t for t, line in run.lines if "database migrated" in line)
    assert at - migrated < FIRST_LINE_SECONDS, run.text()


def _reason(line: str) -> str:
    return line.split(" (", 1)[1].split(")", 1)[0]


async def test_hub_run_in_json_says_the_same_as_json(tmp_path: Path) -> None:
    doc = config_doc(tmp_path, closed_port_url()) | {"logging": {"format": "json"}}
    async with hub_run(tmp_path, doc) as run:
        await run.line_with("still waiting", PROCESS_START_SECONDS + 10)
        assert await run.stop() == 0
    objects = [json.loads(line) for _, line in run.lines if line.strip()]
    waiting = [o for o in objects if o["message"].startswith("waiting for the homeserver")]
    assert len(waiting) == 1
    assert waiting[0]["level"] == "WARNING"
    assert waiting[0]["logger"] == "hub.matrix.client"
    assert waiting[0]["time"].endswith("Z")
    assert "exc" not in waiting[0]
    assert_human(run.text())


# -- hub.net.network_cause on the exceptions aiohttp raises ------------------------------------


def _key() -> ConnectionKey:
    return ConnectionKey("synapse", 8008, False, True, None, None, None)


@pytest.mark.parametrize(
    ("exc", "cause"),
    [
        (TimeoutError(), "no answer within 2.5 s"),
        (
            aiohttp.ClientConnectorError(
                _key(), ConnectionRefusedError(111, "Connect call failed")
            ),
            "connection refused",
        ),
        (
            # Two addresses (::1, 127.0.0.1) failing differently.
            aiohttp.ClientConnectorError(
                _key(),
                OSError(
                    "Multiple exceptions: [Errno 99] Cannot assign requested address, "
                    "[Errno 111] Connect call failed ('127.0.0.1', 8008)"
                ),
            ),
            "connection refused",
        ),
        (
            aiohttp.ClientConnectorDNSError(_key(), socket.gaierror(-2, "Name not known")),
            "host name not found",
        ),
        (
            aiohttp.ClientConnectorDNSError(
                _key(), socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
            ),
            "name resolution failed",
        ),
        (
            aiohttp.ClientConnectorError(_key(), OSError(errno.EHOSTUNREACH, "No route")),
            "host unreachable",
        ),
        (aiohttp.ServerDisconnectedError(), "the server closed the connection"),
        (aiohttp.ClientPayloadError("broken"), "the answer broke off"),
        (aiohttp.ClientOSError(errno.ECONNRESET, "reset"), "connection reset"),
        (aiohttp.ClientError("?"), "connection failed"),
    ],
)
def test_network_cause(exc: BaseException, cause: str) -> None:
    assert network_cause(exc, 2.5) == cause
