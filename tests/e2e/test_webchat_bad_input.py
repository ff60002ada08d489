"""Bad input at the web-chat API: a clear 4xx, nothing stored, the hub keeps working."""

from __future__ import annotations

import aiohttp
import pytest

from tests.e2e.conftest import Stack
from tests.e2e.helpers import Adviser, Visitor, is_message, open_portal

pytestmark = pytest.mark.e2e


async def _post(http: aiohttp.ClientSession, url: str, **kw: object) -> tuple[int, dict]:
    async with http.post(url, **kw) as resp:  # type: ignore[arg-type]
        return resp.status, await resp.json(content_type=None)


async def test_unknown_or_missing_token_is_401(stack: Stack, http: aiohttp.ClientSession) -> None:
    url = f"{stack.hub_url}/webchat/api/messages"
    body = {"client_id": "abcdefgh1", "text": "hi"}
    status, doc = await _post(http, url, json=body)
    assert status == 401 and "token" in doc["error"]
    status, doc = await _post(http, url, json=body, headers={"Authorization": "Bearer nope"})
    assert status == 401
    async with http.get(f"{url}?after=0", headers={"Authorization": "Bearer nope"}) as resp:
        assert resp.status == 401


async def test_malformed_bodies_are_refused_and_nothing_is_stored(
    stack: Stack, visitor: Visitor
) -> None:
    await visitor.start(name="Bad Input")
    url = f"{stack.hub_url}/webchat/api/messages"
    h = {**visitor.auth, "Content-Type": "application/json"}
    # What the customer can get wrong is answered in the shop's language (German here); what
    # only a broken client sends, in English.
    cases: list[tuple[bytes, str]] = [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"client_id": "abcdefgh2", "text": 5}', "Zeichenkette"),
        (b'{"client_id": "abcdefgh3", "text": "   "}', "Der Text ist leer."),
        (b'{"client_id": "x", "text": "hi"}', "client_id"),
        (b'{"client_id": "abcdefgh4", "text": "\\ud800 broken"}', "Unicode"),
        (b'{"client_id": "abcdefgh5", "text": "' + b"a" * 4001 + b'"}', "zu lang (4.001 Zeichen"),
        # A reply button's answer: an id of a button this visitor was shown, nothing else.
        (b'{"client_id": "abcdefgh6", "text": "Ja", "button_id": 5}', "button_id must be"),
        (b'{"client_id": "abcdefgh7", "text": "Ja", "button_id": "consent.yes"}', "not a button"),
    ]
    for raw, expected in cases:
        status, doc = await _post(visitor.http, url, data=raw, headers=h)
        assert status == 400, raw[:40]
        assert expected in doc["error"], (raw[:40], doc)
    # Over the JSON body cap (1 MiB): 413 before anything is parsed.
    async with visitor.http.post(url, data=b"x" * (2 * 1024 * 1024), headers=h) as resp:
        assert resp.status == 413
    assert await visitor.history() == []


async def test_upload_limits(stack: Stack, visitor: Visitor) -> None:
    await visitor.start(name="Upload Limits")
    url = f"{stack.hub_url}/webchat/api/upload"
    form = aiohttp.FormData()
    form.add_field("client_id", "upload-limit-1")
    form.add_field("file", b"\0" * 300_000, filename="big.bin")  # cap is 200 000 in tests
    status, doc = await _post(visitor.http, url, data=form, headers=visitor.auth)
    assert status == 413 and doc["max_bytes"] == 200_000
    status, doc = await _post(visitor.http, url, data=b"plain", headers=visitor.auth)
    assert status == 400
    # A file claiming to be an image but not one is stored as a plain file, never as image.
    form = aiohttp.FormData()
    form.add_field("client_id", "upload-limit-2")
    form.add_field("file", b"<script>alert(1)</script>", filename="x.png", content_type="image/png")
    status, doc = await _post(visitor.http, url, data=form, headers=visitor.auth)
    assert status == 201
    assert doc["message"]["kind"] == "file"
    assert doc["message"]["media"]["mimetype"] == "application/octet-stream"
    async with visitor.http.get(doc["message"]["media"]["url"]) as resp:
        assert resp.headers["Content-Disposition"].startswith("attachment")
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert [m["kind"] for m in await visitor.history()] == ["file"]


async def test_non_adviser_cannot_run_commands(
    stack: Stack, adviser: Adviser, visitor: Visitor
) -> None:
    room_id = await open_portal(adviser, visitor, "Bystander Test", "hello")
    await adviser.client.room_invite(room_id, stack.other_mxid)
    bob = Adviser(stack.synapse.url, stack.other_mxid)
    await bob.login("adviser-password-1")
    try:
        await bob.join(room_id)
        event_id = await bob.send_text(room_id, "!help")
        notice = await adviser.wait_event(
            room_id, is_message(sender=stack.bot_mxid, msgtype="m.notice")
        )
        assert "Nur das Beratungsteam" in notice["content"]["body"]
        reaction = await adviser.wait_event(room_id, lambda ev: ev.get("type") == "m.reaction")
        assert reaction["content"]["m.relates_to"]["event_id"] == event_id
        assert reaction["content"]["m.relates_to"]["key"] == "⛔"
    finally:
        await bob.close()


async def test_appservice_rejects_wrong_token(stack: Stack, http: aiohttp.ClientSession) -> None:
    url = f"{stack.hub_url}/_matrix/app/v1/transactions/evil-1"
    async with http.put(url, json={"events": []}, headers={"Authorization": "Bearer x"}) as resp:
        assert resp.status == 403
        assert (await resp.json())["errcode"] == "M_FORBIDDEN"


async def test_cors_for_allowed_origins_only_even_on_errors(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    url = f"{stack.hub_url}/webchat/api/messages"
    shop = {"Origin": "http://shop.test"}
    async with http.options(url, headers={**shop, "Access-Control-Request-Method": "POST"}) as r:
        assert r.status == 204
        assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
    # A raised 401 carries the header too, or the browser would hide it from the widget.
    async with http.post(url, json={}, headers=shop) as r:
        assert r.status == 401
        assert r.headers["Access-Control-Allow-Origin"] == "http://shop.test"
    evil = {"Origin": "http://evil.test"}
    async with http.options(url, headers={**evil, "Access-Control-Request-Method": "POST"}) as r:
        assert r.status == 403
    async with http.post(url, json={}, headers=evil) as r:
        assert "Access-Control-Allow-Origin" not in r.headers
