"""hub.net: whole request bodies up to a cap, capped downloads, connect retries."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hub.errors import ExternalError
from hub.net import read_body, read_capped, with_retries

CAP = 1_048_576


async def _echo_digest(request: web.Request) -> web.Response:
    raw = await read_body(request, CAP)
    return web.json_response({"size": len(raw), "sha256": hashlib.sha256(raw).hexdigest()})


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application(client_max_size=4 * CAP)
    app.router.add_post("/", _echo_digest)
    async with TestClient(TestServer(app)) as c:
        yield c


async def _slow_chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at : at + size]
        await asyncio.sleep(0.001)  # arrives in many socket reads


async def test_a_large_body_arriving_in_pieces_is_read_whole(
    client: TestClient[web.Request, web.Application],
) -> None:
    # A 900 000-byte webhook was once read as 524 096 bytes and refused as forged.
    body = bytes(range(256)) * (900_000 // 256)
    resp = await client.post("/", data=_slow_chunks(body, 16_384))
    assert resp.status == 200
    assert await resp.json() == {
        "size": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
    }


async def test_a_body_over_the_cap_is_413_announced_or_not(
    client: TestClient[web.Request, web.Application],
) -> None:
    big = b"x" * (CAP + 1)
    assert (await client.post("/", data=big)).status == 413  # Content-Length says so
    assert (await client.post("/", data=_slow_chunks(big, 65_536))).status == 413  # chunked
    assert (await client.post("/", data=b"x" * CAP)).status == 200


async def test_capped_download_refuses_more_than_asked() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()  # no Content-Length: only counting can tell
        await resp.prepare(request)
        for _ in range(10):
            await resp.write(b"y" * 10_000)
        return resp

    app = web.Application()
    app.router.add_get("/", handler)
    async with TestClient(TestServer(app)) as c:
        resp = await c.get("/")
        with pytest.raises(ExternalError, match="too big"):
            await read_capped(resp, 50_000, lambda: ExternalError("too big", permanent=True))
        resp = await c.get("/")
        assert len(
            await read_capped(resp, 100_000, lambda: ExternalError("x", permanent=True))
        ) == (100_000)


async def test_a_refused_connection_is_retried_then_temporary() -> None:
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        async with aiohttp.ClientSession() as http:
            async with http.get("http://127.0.0.1:9/") as resp:  # discard port: refused
                return await resp.text()

    with pytest.raises(ExternalError) as caught:
        await with_retries(attempt, service="Example", timeout=1, idempotent=False)
    assert calls == 3
    assert not caught.value.permanent and caught.value.code == "unreachable"
    assert "cannot connect to Example" in caught.value.human


async def test_a_timeout_is_not_retried_for_a_request_that_may_have_arrived() -> None:
    calls = 0

    async def attempt() -> None:
        nonlocal calls
        calls += 1
        raise TimeoutError

    with pytest.raises(ExternalError) as caught:
        await with_retries(attempt, service="Example", timeout=0.5, idempotent=False)
    assert calls == 1 and caught.value.code == "timeout"
    assert "did not answer within 0.5 s" in caught.value.human
