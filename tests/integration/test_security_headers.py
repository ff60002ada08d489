"""Every response the hub serves carries its security headers: the real application
(hub.app.create_app, every channel enabled, the demo page and the built-in checkout) is
started against a stand-in homeserver, and a request is made to every route of its router,
with the route's method and its placeholders filled (a real order's reference and short link
where there is one), plus paths no route has. Whatever the answer (a page, the widget
script, JSON, a 4xx raised by a handler, the router's own 404 and 405), it says `nosniff`
and has a Content-Security-Policy; HTML also refuses framing. A new route cannot forget them.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hub.app import DB, create_app
from hub.commerce.cart import Cart
from hub.config import Config
from hub.db import commerce, conversations, identities
from hub.db.database import Tx
from hub.http.security import STRICT_CSP
from tests.standins.loopback import serve_on_loopback

# The start-up step that waits for the hub to listen (a TestServer never says so) is cancelled
# with its coroutines unstarted at the end.
pytestmark = pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")

DOMAIN = "shop.example"
BOT = f"@shopbot:{DOMAIN}"
DUMMY_API = "http://127.0.0.1:9"  # never called while the walk runs


@pytest.fixture
def backend() -> str:
    return "sqlite"  # the headers do not depend on the database


async def homeserver() -> tuple[web.AppRunner, str]:
    """Just enough of a homeserver for the hub to start: whoami names the bot, the rest is {}."""

    async def whoami(request: web.Request) -> web.Response:
        return web.json_response({"user_id": BOT})

    async def anything(request: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/_matrix/client/v3/account/whoami", whoami)
    app.router.add_route("*", "/{tail:.*}", anything)
    return await serve_on_loopback(app)


def hub_config(tmp_path: Path, homeserver_url: str) -> Config:
    meta = {
        "enabled": True,
        "api_base_url": DUMMY_API,
        "page_id": "1",
        "page_access_token": "t",
        "app_secret": "s",
        "verify_token": "v",
    }
    return Config.model_validate(
        {
            "data_dir": str(tmp_path),
            "homeserver": {"url": homeserver_url, "domain": DOMAIN},
            "appservice": {"as_token": "a" * 32, "hs_token": "h" * 32},
            "shop": {"name": "Farben <b>Müller</b>", "advisers": [f"@anna:{DOMAIN}"]},
            "channels": {
                "webchat": {"enabled": True, "demo_page": True},
                "whatsapp": {
                    "enabled": True,
                    "api_base_url": DUMMY_API,
                    "phone_number_id": "1",
                    "access_token": "t",
                    "app_secret": "s",
                    "verify_token": "v",
                },
                "telegram": {
                    "enabled": True,
                    "api_base_url": DUMMY_API,
                    "bot_token": "1:t",
                    "webhook_secret": "s",
                },
                "messenger": meta,
                "instagram": meta,
            },
            "commerce": {"provider": "builtin"},
        }
    )


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[tuple[TestClient[Any, Any], web.Application]]:
    runner, url = await homeserver()
    app = create_app(hub_config(tmp_path, url))
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()  # runs the hub's start-up steps
    try:
        yield client, app
    finally:
        await client.close()
        await runner.cleanup()


def _an_order(tx: Tx) -> tuple[str, str]:
    found = identities.identity_conversation(tx, "webchat", "v-1", "Eve", lambda: "c1")
    order = commerce.create_order(
        tx,
        conversation_id=found.conversation_id,
        adviser_mxid=f"@anna:{DOMAIN}",
        provider="builtin",
        cart=Cart.empty("EUR"),
    )
    code = commerce.create_short_link(tx, f"https://example.test/{order.reference}", None)
    assert conversations.conversation(tx, found.conversation_id) is not None
    return order.reference, code


def _path(resource: web.AbstractResource | None, values: dict[str, str]) -> str:
    """A concrete path of a route: its placeholders filled from `values` ("x" otherwise)."""
    info = resource.get_info() if resource is not None else {"path": "/"}
    if "path" in info:
        return str(info["path"])
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m[1], "x"), str(info["formatter"]))


def _check(response_headers: Any, status: int, what: str) -> str:
    headers: dict[str, str] = dict(response_headers)
    assert headers.get("X-Content-Type-Options") == "nosniff", what
    csp = headers.get("Content-Security-Policy")
    assert csp, what
    content_type = headers.get("Content-Type", "").split(";")[0]
    if content_type == "text/html":
        assert "frame-ancestors 'none'" in csp, what
        assert headers.get("X-Frame-Options") == "DENY", what
    return content_type


async def test_every_route_answers_with_the_security_headers(
    hub: tuple[TestClient[Any, Any], web.Application],
) -> None:
    client, app = hub
    reference, code = await app[DB].write(_an_order)
    values = {
        "reference": reference,
        "outcome": "done",
        "code": code,
        "provider": "builtin",
        "media_id": "a" * 20,
        "txn_id": "1",
        "user_id": f"@customer_x:{DOMAIN}",
        "alias": f"#hubportal_x:{DOMAIN}",
        "tail": "session",
    }
    seen: dict[tuple[str, int], list[str]] = {}
    walked = 0
    for route in app.router.routes():
        path = _path(route.resource, values)
        methods = ["GET", "POST", "PUT"] if route.method == "*" else [route.method]
        for method in methods:
            async with client.request(
                method,
                path,
                data=b"{}",
                headers={"Content-Type": "application/json"},
                allow_redirects=False,
            ) as resp:
                what = f"{method} {path} -> {resp.status}"
                content_type = _check(resp.headers, resp.status, what)
                seen.setdefault((content_type, resp.status), []).append(path)
                walked += 1
    for method, path in [("GET", "/nowhere"), ("DELETE", "/healthz"), ("GET", "/checkout/x/y/z")]:
        async with client.request(method, path) as resp:
            _check(resp.headers, resp.status, f"{method} {path} -> {resp.status}")
            assert resp.headers["Content-Security-Policy"] == STRICT_CSP
    # The walk reached the pages that matter, not only errors.
    assert walked > 20
    assert "/" in seen[("text/html", 200)]  # the demo page
    assert f"/checkout/{reference}" in seen[("text/html", 200)]
    assert "/webchat/widget.js" in seen[("text/javascript", 200)]
    assert "/healthz" in seen[("application/json", 200)]
    assert f"/l/{code}" in seen[("text/plain", 302)] + seen.get(
        ("application/octet-stream", 302), []
    )


async def test_the_demo_page_allows_its_own_script_only(
    hub: tuple[TestClient[Any, Any], web.Application],
) -> None:
    client, _ = hub
    resp = await client.get("/")
    body = await resp.text()
    csp = resp.headers["Content-Security-Policy"]
    nonce = csp.split("'nonce-", 1)[1].split("'", 1)[0]
    assert f'<script nonce="{nonce}">' in body  # its inline script, by this response's nonce
    assert "'unsafe-inline'" not in csp.split("script-src", 1)[1].split(";", 1)[0]
    assert "Farben &lt;b&gt;Müller&lt;/b&gt;" in body and "<b>Müller" not in body
    again = await client.get("/")
    assert again.headers["Content-Security-Policy"] != csp  # a new nonce every time
