"""Hostile input at every endpoint of the web chat's API (hub.bridges.webchat.api), in
process with a real database (SQLite and PostgreSQL), property-based (hypothesis): any JSON
nested to any depth, wrong types at every field, huge strings, lone surrogates, invalid
UTF-8, broken multipart forms, odd websocket frames, odd media ids and tokens. Never a 5xx
and never an exception in the hub's log; every refusal a 4xx with the API's JSON error and
a log line; nothing half-written (no row without a 2xx, no file without its row)."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from yarl import URL

from hub.config import WebchatConfig
from hub.config.channels import WebchatLimits
from tests.integration.webchat_app import Sessions, WebchatApp, webchat_app

EXAMPLES = settings(
    max_examples=150,
    deadline=None,
    # The app (and its database) is made once per test and shared by its examples.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Limits out of the way: these tests are about bodies, not rates.
UNLIMITED = WebchatLimits(
    sessions_per_address=10_000,
    messages_per_visitor=10_000,
    messages_per_address=100_000,
    uploads_per_visitor=10_000,
    new_conversations=100_000,
)
CAP = 1024 * 1024  # the app's client_max_size: JSON bodies
# aiohttp warns of the odd Content-Disposition headers these tests send.
pytestmark = [
    pytest.mark.filterwarnings("ignore::aiohttp.BadContentDispositionParam"),
    pytest.mark.filterwarnings("ignore::aiohttp.BadContentDispositionHeader"),
]


class Hostile:
    def __init__(self, app: WebchatApp, caplog: pytest.LogCaptureFixture) -> None:
        self.app = app
        self.caplog = caplog
        self._who: dict[str, str] | None = None

    async def who(self) -> dict[str, str]:
        if self._who is None:
            self._who = await self.app.visitor()
        return self._who

    def no_errors_logged(self) -> None:
        bad = [r for r in self.caplog.records if r.levelno >= logging.ERROR]
        assert bad == [], [r.getMessage() for r in bad]

    async def answer(self, resp: aiohttp.ClientResponse, allowed: set[int]) -> dict[str, Any]:
        """The response's JSON, checked: never a 5xx, an expected status, every error in
        the API's shape."""
        raw = await resp.read()
        if currently_in_test_context():
            event(f"status {resp.status}")
        assert resp.status < 500, raw[:300]
        assert resp.status in allowed, (resp.status, raw[:300])
        assert resp.content_type == "application/json", (resp.status, raw[:300])
        doc = json.loads(raw)
        assert isinstance(doc, dict)
        if resp.status >= 400:
            assert isinstance(doc.get("error"), str) and doc["error"], doc
        self.no_errors_logged()
        return doc


@pytest.fixture
async def hostile(
    aiohttp_client: Any,
    db: Any,
    sessions: Sessions,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> AsyncIterator[Hostile]:
    caplog.set_level(logging.INFO)
    config = WebchatConfig(limits=UNLIMITED, max_upload_bytes=64 * 1024)
    async with webchat_app(
        aiohttp_client, db, sessions, tmp_path, config=config, client_max_size=CAP
    ) as app:
        yield Hostile(app, caplog)


# -- strategies -----------------------------------------------------------------------------

SURROGATES = st.sampled_from(["\ud83d", "\udc00", "a\ud800b", "\udcff", "😀\ud83d"])
TEXT = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=40),
    SURROGATES,
    st.sampled_from(["", " ", "\x00", "\r\n", "\u202e", "a" * 5000, "ä" * 4001]),
)
SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
)
JSON = st.recursive(
    SCALAR,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
CLIENT_IDS = st.one_of(
    st.just("valid-client-id"),
    st.uuids().map(lambda u: u.hex),
    st.uuids().map(lambda u: u.hex),
    JSON,
)


def _dumps(value: Any, ascii_only: bool) -> bytes:
    text = json.dumps(value, ensure_ascii=ascii_only)
    # Not ASCII-only: surrogates go out raw, as invalid UTF-8.
    return text.encode("utf-8", "surrogatepass")


def _nested(depth: int, opener: str) -> bytes:
    closer = {"[": "]", "{": "}"}[opener]
    if opener == "{":
        return (('{"a":' * depth) + "1" + ("}" * depth)).encode()
    return (opener * depth + closer * depth).encode()


@st.composite
def bodies(draw: st.DrawFn, fields: st.SearchStrategy[dict[str, Any]]) -> bytes:
    """A request body: the fields as JSON (with anything in them), any JSON, deep nesting,
    bytes, invalid UTF-8, or a valid body with some bytes changed."""
    kind = draw(st.sampled_from(["fields", "json", "nested", "bytes", "mutated", "huge"]))
    if kind == "fields":
        return _dumps(draw(fields), draw(st.booleans()))
    if kind == "json":
        return _dumps(draw(JSON), draw(st.booleans()))
    if kind == "nested":
        depth = draw(st.sampled_from([10, 500, 1000, 5000, 100_000]))
        body = _nested(depth, draw(st.sampled_from(["[", "{"])))
        return body if draw(st.booleans()) else body[: len(body) // 2]
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "huge":
        size = draw(st.sampled_from([CAP - 100, CAP + 1, 3 * CAP]))
        return b'{"text": "' + b"x" * size + b'", "client_id": "abcdefgh"}'
    body = bytearray(_dumps(draw(fields), True))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, max(0, len(body) - 1)))
        byte = draw(st.integers(0, 255))
        op = draw(st.sampled_from(["set", "insert", "delete"]))
        if op == "insert" or not body:
            body.insert(at, byte)
        elif op == "set":
            body[at] = byte
        else:
            del body[at]
    return bytes(body)


def _maybe(key: str, values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """The field, with any of `values`; missing at times."""
    present = values.map(lambda v: {key: v})
    return st.one_of(st.just({}), present, present, present)


# Mostly the right type, anything at times.
PLAIN = st.text(st.characters(categories=("L", "N", "P", "Zs", "So")), min_size=1, max_size=60)
STRINGS = st.one_of(PLAIN, PLAIN, TEXT, TEXT, JSON)
SESSION_FIELDS = st.builds(
    lambda a, b, extra: {**a, **b, **extra},
    _maybe("name", STRINGS),
    _maybe("token", STRINGS),
    st.dictionaries(TEXT, JSON, max_size=2),
)
MESSAGE_FIELDS = st.one_of(
    # What the widget sends, with any text (well-formed always maps).
    st.builds(
        lambda client_id, text: {"client_id": client_id, "text": text},
        st.uuids().map(lambda u: u.hex),
        st.one_of(PLAIN, TEXT),
    ),
    st.builds(
        lambda a, b, c, extra: {**a, **b, **c, **extra},
        _maybe("client_id", CLIENT_IDS),
        _maybe("text", STRINGS),
        st.one_of(st.just({}), st.just({}), st.just({}), _maybe("button_id", STRINGS)),
        st.dictionaries(TEXT, JSON, max_size=2),
    ),
)
CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/json; charset=latin-1",
        "application/json; charset=no-such-charset",
        "text/plain",
        "multipart/form-data; boundary=x",
        "",
    ]
)


# -- session and messages --------------------------------------------------------------------


@EXAMPLES
@given(body=bodies(SESSION_FIELDS), content_type=CONTENT_TYPES)
async def test_session_with_any_body(hostile: Hostile, body: bytes, content_type: str) -> None:
    before = await hostile.app.visitors()
    headers = {"Content-Type": content_type} if content_type else {}
    resp = await hostile.app.client.post("/webchat/api/session", data=body, headers=headers)
    doc = await hostile.answer(resp, {200, 400, 413})
    if resp.status == 200:
        assert isinstance(doc["token"], str) and doc["token"].isascii()
    else:
        assert await hostile.app.visitors() == before  # nothing written


@EXAMPLES
@given(body=bodies(MESSAGE_FIELDS), content_type=CONTENT_TYPES)
async def test_message_post_with_any_body(hostile: Hostile, body: bytes, content_type: str) -> None:
    who = await hostile.who()
    before = await hostile.app.messages()
    headers = {"Authorization": who["Authorization"]}
    if content_type:
        headers["Content-Type"] = content_type
    resp = await hostile.app.client.post("/webchat/api/messages", data=body, headers=headers)
    doc = await hostile.answer(resp, {200, 201, 400, 413})
    after = await hostile.app.messages()
    if resp.status == 201:
        assert after == before + 1
        assert doc["message"]["kind"] == "text"
        text = doc["message"]["text"]
        assert text.strip() and "\x00" not in text
        text.encode("utf-8")  # no lone surrogate made it in
    else:
        assert after == before


@EXAMPLES
@given(fields=MESSAGE_FIELDS)
async def test_message_fields_of_any_type(hostile: Hostile, fields: dict[str, Any]) -> None:
    """Well-formed JSON with anything at every field: a valid text always maps (201, or
    200 for a client_id sent before), anything else is a 400."""
    who = await hostile.who()
    resp = await hostile.app.client.post(
        "/webchat/api/messages",
        data=_dumps(fields, True),
        headers={"Authorization": who["Authorization"], "Content-Type": "application/json"},
    )
    await hostile.answer(resp, {200, 201, 400})
    text, client_id = fields.get("text"), fields.get("client_id")
    valid = (
        fields.get("button_id") is None
        and isinstance(client_id, str)
        and (client_id == "valid-client-id" or len(client_id) == 32)
        and isinstance(text, str)
        and 0 < len(text.replace("\x00", "").strip()) <= 4000
        and not any(0xD800 <= ord(c) <= 0xDFFF for c in text)
    )
    if valid:
        assert resp.status in (200, 201)


@EXAMPLES
@given(
    after=st.one_of(
        # A request line over 8 KiB is refused by aiohttp's HTTP parser before any handler.
        TEXT.filter(lambda s: len(s.encode("utf-8", "surrogatepass")) < 2000),
        st.integers().map(str),
    )
)
async def test_message_list_with_any_after(hostile: Hostile, after: str) -> None:
    who = await hostile.who()
    safe = after.encode("utf-8", "surrogatepass")
    url = URL("/webchat/api/messages?after=" + quote(safe, safe=""), encoded=True)
    resp = await hostile.app.client.get(url, headers={"Authorization": who["Authorization"]})
    doc = await hostile.answer(resp, {200, 400})
    if resp.status == 200:
        assert isinstance(doc["messages"], list)


@EXAMPLES
@given(raw=st.binary(min_size=0, max_size=60))
async def test_message_list_with_any_query_bytes(hostile: Hostile, raw: bytes) -> None:
    who = await hostile.who()
    url = URL("/webchat/api/messages?after=" + quote(raw, safe="%&=+"), encoded=True)
    resp = await hostile.app.client.get(url, headers={"Authorization": who["Authorization"]})
    await hostile.answer(resp, {200, 400})


# -- tokens and ids --------------------------------------------------------------------------


async def _raw_request(app: WebchatApp, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """One HTTP/1.1 request written byte for byte (headers no client library would send)."""
    server = app.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(head + b"Connection: close\r\n\r\n" + body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    status = int(answer.split(b" ", 2)[1])
    return status, answer.split(b"\r\n\r\n", 1)[1]


# What reaches a handler: aiohttp's parser refuses control characters in a header itself.
TOKEN_BYTES = st.binary(min_size=1, max_size=300).map(
    lambda b: bytes(c for c in b if 0x20 <= c != 0x7F) or b"x"
)


@EXAMPLES
@given(token=TOKEN_BYTES)
async def test_any_token_bytes(hostile: Hostile, token: bytes) -> None:
    head = (
        b"GET /webchat/api/messages?after=0 HTTP/1.1\r\nHost: hub.test\r\n"
        b"Authorization: Bearer " + token + b"\r\n"
    )
    status, body = await _raw_request(hostile.app, head)
    assert status < 500
    if status == 401:  # ours (aiohttp itself refuses some header bytes with a bare 400)
        assert json.loads(body)["error"] == "unknown or missing session token"
    hostile.no_errors_logged()


@EXAMPLES
@given(
    media_id=st.one_of(
        TEXT.filter(lambda s: len(s.encode("utf-8", "surrogatepass")) < 2000),
        st.binary(max_size=80).map(lambda b: b.decode("latin-1")),
    )
)
async def test_media_with_any_id(hostile: Hostile, media_id: str) -> None:
    path = quote(media_id.encode("utf-8", "surrogatepass"), safe="")
    if not path:
        return
    resp = await hostile.app.client.get(URL(f"/webchat/media/{path}", encoded=True))
    await hostile.answer(resp, {404})


# -- uploads ---------------------------------------------------------------------------------

DISPOSITION_NAMES = st.sampled_from([b"file", b"client_id", b"caption", b"other", b"", b'fi"le'])
PART_HEADERS = st.lists(
    st.one_of(
        st.tuples(st.just(b"Content-Type"), st.binary(max_size=40)),
        st.tuples(
            st.just(b"Content-Transfer-Encoding"),
            st.sampled_from([b"base64", b"quoted-printable", b"binary", b"x-unknown"]),
        ),
        st.tuples(st.just(b"Content-Encoding"), st.sampled_from([b"gzip", b"deflate", b"br"])),
        st.tuples(st.sampled_from([b"X-Odd", b"Content-Length"]), st.binary(max_size=20)),
    ),
    max_size=3,
)


@st.composite
def multipart(draw: st.DrawFn) -> tuple[bytes, str]:
    """A multipart body (mostly almost right) and its Content-Type header."""
    boundary = draw(
        st.one_of(
            st.just(uuid.uuid4().hex),
            st.text("abcXYZ0123-_'()+,./:=? ", min_size=1, max_size=90),
        )
    )
    bnd = boundary.encode()
    parts = []
    for _ in range(draw(st.integers(0, 5))):
        name = draw(DISPOSITION_NAMES)
        disposition = b'Content-Disposition: form-data; name="' + name + b'"'
        if draw(st.booleans()):
            filename = draw(
                st.one_of(
                    st.binary(max_size=60).filter(lambda b: b'"' not in b and b"\r\n" not in b),
                    st.sampled_from([b"../../etc/passwd", b"\xff\xfe.png", b"a\x00b.txt"]),
                )
            )
            disposition += b'; filename="' + filename + b'"'
        if draw(st.booleans()):
            disposition += b"; filename*=" + draw(st.sampled_from([b"UTF-8''%FF%FE", b"x''y"]))
        headers = [disposition] + [k + b": " + v for k, v in draw(PART_HEADERS)]
        headers = [h for h in headers if b"\r" not in h and b"\n" not in h]
        if name == b"client_id" and draw(st.booleans()):
            payload = uuid.uuid4().hex.encode()
        else:
            payload = draw(
                st.one_of(
                    st.binary(max_size=200),
                    st.just(b"\x89PNG\r\n\x1a\n" + b"\0" * 40),
                    st.just(b"x" * (70 * 1024)),  # over the upload cap
                    st.just(b"\xed\xa0\xbd"),  # a surrogate, as bytes
                )
            )
        parts.append(b"--" + bnd + b"\r\n" + b"\r\n".join(headers) + b"\r\n\r\n" + payload)
    if draw(st.integers(0, 3)) == 0:  # the widget's own form, with anything in the file
        parts = [
            b"--"
            + bnd
            + b'\r\nContent-Disposition: form-data; name="client_id"\r\n\r\n'
            + uuid.uuid4().hex.encode(),
            b"--"
            + bnd
            + b'\r\nContent-Disposition: form-data; name="file"; filename="'
            + draw(st.sampled_from([b"photo.png", b"\xc3\xa4 \xff.txt", b"", b"..\\x"]))
            + b'"\r\nContent-Type: '
            + draw(st.sampled_from([b"image/png", b"text/plain", b"x"]))
            + b"\r\n\r\n"
            + draw(st.binary(min_size=1, max_size=300)),
        ]
    body = b"\r\n".join(parts) + b"\r\n--" + bnd + b"--\r\n"
    mutation = draw(st.sampled_from(["none", "none", "truncate", "garbage", "long-line", "lf"]))
    if mutation == "truncate":
        body = body[: draw(st.integers(0, len(body)))]
    elif mutation == "garbage":
        at = draw(st.integers(0, len(body)))
        body = body[:at] + draw(st.binary(min_size=1, max_size=50)) + body[at:]
    elif mutation == "long-line":
        body = b"--" + bnd + b'\r\nContent-Disposition: form-data; name="' + b"n" * 20_000
    elif mutation == "lf":
        body = body.replace(b"\r\n", b"\n")
    content_type = draw(
        st.sampled_from(
            [
                f"multipart/form-data; boundary={boundary}",
                f'multipart/form-data; boundary="{boundary}"',
                "multipart/form-data",
                "multipart/form-data; boundary=",
                "multipart/mixed; boundary=other",
                "application/json",
                "text/plain; charset=utf-8",
            ]
        )
    )
    return body, content_type


@EXAMPLES
@given(form=multipart())
async def test_upload_with_any_body(hostile: Hostile, form: tuple[bytes, str]) -> None:
    body, content_type = form
    who = await hostile.who()
    before = await hostile.app.messages()
    resp = await hostile.app.client.post(
        "/webchat/api/upload",
        data=body,
        headers={"Authorization": who["Authorization"], "Content-Type": content_type},
    )
    doc = await hostile.answer(resp, {200, 201, 400, 413})
    if resp.status == 201:
        assert await hostile.app.messages() == before + 1
        media = doc["message"]["media"]
        assert media["filename"] and "/" not in media["filename"]
        media["filename"].encode("utf-8")
        assert media["mimetype"].isascii() and "/" in media["mimetype"]
    elif resp.status != 200:
        assert await hostile.app.messages() == before
    # Nothing half-written: every file in the store has its row, every row its file.
    assert hostile.app.media_files() == await hostile.app.media_rows()


# -- the websocket ---------------------------------------------------------------------------

FRAME = st.one_of(
    st.builds(lambda v: ("text", json.dumps(v)), JSON),
    st.builds(
        lambda kind, up_to: ("text", json.dumps({"type": kind, "up_to": up_to})),
        st.sampled_from(["read", "ping", "auth", "", None]),
        JSON,
    ),
    st.builds(lambda n: ("text", "[" * n + "]" * n), st.sampled_from([10, 2000])),
    st.builds(lambda t: ("text", t), st.text(max_size=200)),
    st.builds(lambda b: ("bytes", b), st.binary(max_size=200)),
    st.just(("text", "x" * 5000)),  # over the frame limit: the server closes
)


async def _send(ws: aiohttp.ClientWebSocketResponse, frame: tuple[str, Any]) -> None:
    kind, data = frame
    if kind == "text":
        await ws.send_str(data)
    else:
        await ws.send_bytes(data)


async def _pong(ws: aiohttp.ClientWebSocketResponse) -> bool:
    """True once the server answers a ping (skipping what it pushes meanwhile)."""
    await ws.send_json({"type": "ping"})
    while True:
        msg = await ws.receive(timeout=5)
        if msg.type != aiohttp.WSMsgType.TEXT:
            return False
        if json.loads(msg.data).get("type") == "pong":
            return True


@EXAMPLES
@given(
    auth=st.one_of(
        st.just("valid"),
        st.builds(lambda v: ("text", json.dumps(v)), JSON),
        st.builds(
            lambda token, after: (
                "text",
                json.dumps({"type": "auth", "token": token, "after": after}),
            ),
            JSON,
            JSON,
        ),
        FRAME,
    ),
    after=JSON,
    frames=st.lists(FRAME, max_size=6),
)
async def test_websocket_with_any_frames(
    hostile: Hostile, auth: Any, after: Any, frames: list[tuple[str, Any]]
) -> None:
    who = await hostile.who()
    ws = await hostile.app.client.ws_connect("/webchat/ws")
    try:
        if auth == "valid":
            token = who["Authorization"][7:]
            frame = json.dumps({"type": "auth", "token": token, "after": after})
            await ws.send_str(frame)
            if len(frame.encode()) > 4096:  # over the frame limit: closed (1009)
                assert (await ws.receive(timeout=5)).type == aiohttp.WSMsgType.CLOSE
                return
            first = await ws.receive_json(timeout=5)
            assert first == {"type": "ready"}
            oversized = False
            for frame in frames:
                oversized |= len(str(frame[1]).encode()) > 4096
                await _send(ws, frame)
            if not oversized:
                assert await _pong(ws)
        else:
            await _send(ws, auth)
            msg = await ws.receive(timeout=5)
            if msg.type == aiohttp.WSMsgType.TEXT:
                assert json.loads(msg.data)["type"] == "error"
            else:
                assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    finally:
        await ws.close()
    await asyncio.sleep(0)
    hostile.no_errors_logged()


# -- the named cases, and their log lines ---------------------------------------------------


async def test_named_hostile_bodies_are_4xx_with_a_log_line(hostile: Hostile) -> None:
    app = hostile.app
    who = await hostile.who()
    auth = {"Authorization": who["Authorization"]}
    cases: list[tuple[str, bytes, dict[str, str], int, str, str]] = [
        (
            "/webchat/api/messages",
            b"[" * 100_000,
            auth,
            400,
            "nested too deeply",
            "JSON nested too deeply",
        ),
        (
            "/webchat/api/session",
            b'{"name": "\xff\xfe"}',
            {},
            400,
            "not valid JSON",
            "malformed JSON",
        ),
        (
            "/webchat/api/upload",
            b"no boundary here",
            {**auth, "Content-Type": "multipart/form-data; boundary=abc"},
            400,
            "multipart",
            "Could not find starting boundary",
        ),
        (
            "/webchat/api/upload",
            b'--abc\r\nContent-Disposition: form-data; name="' + b"n" * 20_000,
            {**auth, "Content-Type": "multipart/form-data; boundary=abc"},
            400,
            "multipart",
            "LineTooLong",
        ),
        (
            "/webchat/api/session",
            b'{"token": "\\ud83d"}',
            {},
            200,
            "",
            "",
        ),
    ]
    for path, body, headers, status, error, logged in cases:
        hostile.caplog.clear()
        resp = await app.client.post(path, data=body, headers=headers)
        doc = await hostile.answer(resp, {status})
        if error:
            assert error in doc["error"], (path, doc)
            lines = [r.getMessage() for r in hostile.caplog.records]
            assert any(logged in line for line in lines), (logged, lines)
    # A lone surrogate in a text is the customer's to read about.
    resp = await app.say(who, "\ud83d")
    assert resp.status == 400 and "lone surrogate" in (await resp.json())["error"]
    assert await app.messages() == 0
    assert app.media_files() == set()
