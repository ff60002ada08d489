"""Test helpers for the end-to-end suite: the hub as a real process, a nio adviser, a visitor."""

from __future__ import annotations

import asyncio
import os
import signal
import struct
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from nio import AsyncClient, InviteMemberEvent, LoginResponse, SyncResponse

from hub.config import load_config
from hub.db import conversations
from hub.db.engine import open_database
from hub.matrix.render import STATUS_KEY

REPO = Path(__file__).resolve().parents[2]


async def generate_registration(config_path: Path, registration: Path) -> None:
    """The same command an admin runs: fills the CHANGE_ME tokens of the config and writes
    the appservice registration for the homeserver."""
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "hub", "generate-registration"],
        *["-c", str(config_path), "-o", str(registration)],
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    if proc.returncode != 0:
        raise RuntimeError(f"hub generate-registration failed: {out.decode()}")


async def wait_remote_id_stored(
    config_path: Path, channel: str, remote_id: str, timeout: float = 15
) -> None:
    """Until the hub (of the config at `config_path`) has stored `remote_id`, the id the
    messenger's API gave one of its messages.

    A stand-in records a send before the hub has read the API's answer and committed the
    id, so a status or a reaction the test posts right after `wait_sent` can reach the hub
    first and be ignored as about an unknown message (hub.db.inbound); a real messenger's
    webhooks come later."""
    db = open_database(load_config(config_path).database_url)
    try:
        deadline = time.monotonic() + timeout
        while await db.read(conversations.message_by_remote_id, channel, remote_id) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the hub did not store {channel} message id {remote_id}")
            await asyncio.sleep(0.05)
    finally:
        await db.close()


class HubProcess:
    """`hub run -c CONFIG` as a child process, so tests can kill -9 and restart it."""

    def __init__(
        self, config_path: Path, url: str, log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.config_path = config_path
        self.url = url
        self.log_path = log_path
        self.env = env  # added to the environment, e.g. HUB_CLOCK
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self, timeout: float = 30) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(  # noqa: ASYNC220 - we need Popen's synchronous kill/wait
            [sys.executable, "-m", "hub", "run", "-c", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, **self.env} if self.env else None,
        )
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"hub exited with {self.proc.returncode}: {self.log_tail()}")
                try:
                    async with http.get(f"{self.url}/healthz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"hub did not come up: {self.log_tail()}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    async def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            for _ in range(100):
                if self.proc.poll() is not None:
                    return
                await asyncio.sleep(0.1)
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class Adviser:
    """A Matrix user in a real client (matrix-nio) that records everything it syncs.

    Waiting checks everything seen since the client started, so a test can never miss an
    event that arrived before it began to wait."""

    def __init__(self, homeserver: str, mxid: str) -> None:
        self.client = AsyncClient(homeserver, mxid)
        self.events: list[tuple[str, dict[str, Any]]] = []  # (room_id, raw event)
        self.invites: dict[str, dict[str, Any]] = {}  # room_id -> {"name": ...}
        self.receipts: list[tuple[str, str, str]] = []  # (room_id, event_id, reader)
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def login(self, password: str) -> None:
        resp = await self.client.login(password, device_name="e2e")
        assert isinstance(resp, LoginResponse), resp
        first = await self.client.sync(timeout=0, full_state=True)
        assert isinstance(first, SyncResponse), first
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            resp = await self.client.sync(timeout=500)
            if not isinstance(resp, SyncResponse):
                await asyncio.sleep(0.2)
                continue
            for room_id, info in resp.rooms.invite.items():
                name = None
                for ev in info.invite_state:
                    if getattr(ev, "source", {}).get("type") == "m.room.name":
                        name = ev.source["content"].get("name")
                    if isinstance(ev, InviteMemberEvent):
                        pass
                self.invites[room_id] = {"name": name}
            for room_id, info in resp.rooms.join.items():
                for ev in info.timeline.events:
                    self.events.append((room_id, ev.source))
                for ev in info.state:
                    self.events.append((room_id, ev.source))
                for eph in info.ephemeral:
                    for r in getattr(eph, "receipts", []):
                        self.receipts.append((room_id, r.event_id, r.user_id))
            self._changed.set()

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 15) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError("condition not met in time")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), max(0.05, deadline - time.monotonic()))
            except TimeoutError:
                pass

    async def wait_invite(self, name_contains: str, timeout: float = 15) -> str:
        def found() -> str | None:
            for room_id, info in self.invites.items():
                if info.get("name") and name_contains in info["name"]:
                    return room_id
            return None

        return str(await self.wait_for(found, timeout))

    async def wait_event(
        self, room_id: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15
    ) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            for rid, ev in self.events:
                if rid == room_id and predicate(ev):
                    return ev
            return None

        return dict(await self.wait_for(found, timeout))

    def room_events(
        self, room_id: str, predicate: Callable[[dict[str, Any]], bool]
    ) -> list[dict[str, Any]]:
        return [ev for rid, ev in self.events if rid == room_id and predicate(ev)]

    async def join(self, room_id: str) -> None:
        resp = await self.client.join(room_id)
        assert getattr(resp, "room_id", None) == room_id, resp

    async def send_text(self, room_id: str, body: str, **extra: Any) -> str:
        content = {"msgtype": "m.text", "body": body, **extra}
        resp = await self.client.room_send(room_id, "m.room.message", content)
        event_id = getattr(resp, "event_id", None)
        assert event_id, resp
        return str(event_id)

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
        await self.client.close()


def is_message(
    body: str | None = None,
    sender: str | None = None,
    msgtype: str | None = None,
    status: str | None = None,
) -> Callable[[dict[str, Any]], bool]:
    """A message event matching what is given. The bot's standing notices (who has the
    conversation, what we know of the customer: marked with STATUS_KEY) match only when
    their `status` is asked for: they are not answers to anything a test did."""

    def check(ev: dict[str, Any]) -> bool:
        if ev.get("type") != "m.room.message":
            return False
        c = ev.get("content", {})
        return (
            (body is None or c.get("body") == body)
            and (sender is None or ev.get("sender") == sender)
            and (msgtype is None or c.get("msgtype") == msgtype)
            and c.get(STATUS_KEY) == status
        )

    return check


class Visitor:
    """A web-chat customer speaking the widget's HTTP and websocket API."""

    def __init__(self, hub_url: str, http: aiohttp.ClientSession) -> None:
        self.hub_url = hub_url
        self.http = http
        self.token: str | None = None
        self.visitor_id: str | None = None
        self.received: list[dict[str, Any]] = []
        self.statuses: list[dict[str, Any]] = []  # {"type": "status", "ids": [...], "status"}
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._got = asyncio.Event()

    async def start(self, name: str | None = None) -> None:
        body: dict[str, Any] = {"token": self.token}
        if name:
            body["name"] = name
        async with self.http.post(f"{self.hub_url}/webchat/api/session", json=body) as resp:
            assert resp.status == 200, await resp.text()
            doc = await resp.json()
        self.token, self.visitor_id = doc["token"], doc["visitor_id"]

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def say(self, text: str, client_id: str | None = None) -> dict[str, Any]:
        body = {"client_id": client_id or uuid.uuid4().hex, "text": text}
        async with self.http.post(
            f"{self.hub_url}/webchat/api/messages", json=body, headers=self.auth
        ) as resp:
            assert resp.status in (200, 201), await resp.text()
            return dict((await resp.json())["message"])

    async def upload(self, data: bytes, filename: str, content_type: str) -> dict[str, Any]:
        form = aiohttp.FormData()
        form.add_field("client_id", uuid.uuid4().hex)
        form.add_field("file", data, filename=filename, content_type=content_type)
        async with self.http.post(
            f"{self.hub_url}/webchat/api/upload", data=form, headers=self.auth
        ) as resp:
            assert resp.status == 201, await resp.text()
            return dict((await resp.json())["message"])

    async def history(self) -> list[dict[str, Any]]:
        async with self.http.get(
            f"{self.hub_url}/webchat/api/messages?after=0", headers=self.auth
        ) as resp:
            assert resp.status == 200, await resp.text()
            return list((await resp.json())["messages"])

    async def connect(self, after: int = 0) -> None:
        ws_url = self.hub_url.replace("http", "ws", 1) + "/webchat/ws"
        self._ws = await self.http.ws_connect(ws_url)
        await self._ws.send_json({"type": "auth", "token": self.token, "after": after})
        first = await self._ws.receive_json(timeout=10)
        assert first == {"type": "ready"}, first
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                doc = msg.json()
                if doc.get("type") == "message":
                    self.received.append(doc["message"])
                elif doc.get("type") == "status":
                    self.statuses.append(doc)
                self._got.set()

    async def send_ws(self, doc: dict[str, Any]) -> None:
        assert self._ws is not None
        await self._ws.send_json(doc)

    async def wait_status(self, message_id: int, status: str, timeout: float = 15) -> None:
        def seen(doc: dict[str, Any]) -> bool:
            return doc["status"] == status and message_id in doc["ids"]

        await self.wait_message(seen, timeout, among=self.statuses)

    async def wait_message(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float = 15,
        among: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for m in self.received if among is None else among:
                if predicate(m):
                    return m
            if time.monotonic() > deadline:
                raise TimeoutError(f"no such message; received {self.received!r}")
            self._got.clear()
            try:
                await asyncio.wait_for(self._got.wait(), max(0.05, deadline - time.monotonic()))
            except TimeoutError:
                pass

    async def disconnect(self) -> None:
        if self._reader:
            self._reader.cancel()
        if self._ws:
            await self._ws.close()


async def open_portal(adviser: Adviser, visitor: Visitor, name: str, text: str) -> str:
    """The visitor writes; the adviser gets the invite, joins and sees the message."""
    await visitor.start(name=name)
    await visitor.connect()
    await visitor.say(text)
    room_id = await adviser.wait_invite(f"Webchat · {name}")
    await adviser.join(room_id)
    await adviser.wait_event(room_id, is_message(body=text))
    return room_id


def tiny_png(rgb: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A real 2x2 PNG, made here so the tests need no fixture file."""
    raw = b"".join(b"\x00" + bytes(rgb) * 2 for _ in range(2))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
