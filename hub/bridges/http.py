"""Helpers of the webhook channels: JSON bodies, Meta's signature check and handshake."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
from collections.abc import Mapping
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)


def verify_hub_signature(raw: bytes, header: str | None, app_secret: str) -> bool:
    """Meta's X-Hub-Signature-256: "sha256=" + HMAC-SHA256 of the raw body with the app
    secret (WhatsApp Cloud API, Messenger, Instagram). Constant-time comparison."""
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(app_secret.encode(), raw, hashlib.sha256).hexdigest()
    return same_secret(header[len("sha256=") :].strip().lower(), expected)


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison of a header or query value with a secret. Compared as
    bytes: aiohttp hands undecodable header bytes over as surrogates, and hmac refuses to
    compare non-ASCII strings."""
    return hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    )


# Deeper than any provider's payload (Telegram's reply markup in a replied-to message in a
# callback query is about 8 levels); a deeper body is not a delivery.
MAX_JSON_DEPTH = 64


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):  # 1e999: no JSON number the hub could store
        raise ValueError("number out of range")
    return number


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity: Python's extension, not JSON


def _deeper_than(doc: object, limit: int) -> bool:
    stack: list[tuple[object, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > limit:
                return True
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
    return False


def parse_json_object(raw: bytes, max_depth: int = MAX_JSON_DEPTH) -> dict[str, Any] | None:
    """The body as a JSON object, or None: malformed, not an object, broken UTF-8, numbers
    JSON cannot hold (NaN, 1e999), nested deeper than `max_depth` (or than the parser goes)."""
    try:
        doc = json.loads(raw.decode("utf-8"), parse_float=_finite, parse_constant=_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    # Every level opens a bracket: a body with few of them cannot be deep (no walk).
    if raw.count(b"{") + raw.count(b"[") > max_depth and _deeper_than(doc, max_depth):
        return None
    return doc


def meta_verification(query: Mapping[str, str], verify_token: str, kind: str) -> web.Response:
    """The GET handshake of Meta webhooks: echo hub.challenge if hub.verify_token matches."""
    mode = query.get("hub.mode")
    token = query.get("hub.verify_token", "")
    challenge = query.get("hub.challenge", "")
    if mode == "subscribe" and same_secret(token, verify_token):
        return web.Response(text=challenge, content_type="text/plain")
    log.warning("%s webhook verification refused (mode=%r)", kind, mode)
    return web.Response(status=403, text="verification failed")
