"""Helpers of the webhook channels: JSON bodies, Meta's signature check and handshake."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
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
    return hmac.compare_digest(header[len("sha256=") :].strip().lower(), expected)


def parse_json_object(raw: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or None (malformed, not an object, broken UTF-8, nested
    deeper than the parser goes)."""
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def meta_verification(query: Mapping[str, str], verify_token: str, kind: str) -> web.Response:
    """The GET handshake of Meta webhooks: echo hub.challenge if hub.verify_token matches."""
    mode = query.get("hub.mode")
    token = query.get("hub.verify_token", "")
    challenge = query.get("hub.challenge", "")
    if mode == "subscribe" and hmac.compare_digest(token.encode(), verify_token.encode()):
        return web.Response(text=challenge, content_type="text/plain")
    log.warning("%s webhook verification refused (mode=%r)", kind, mode)
    return web.Response(status=403, text="verification failed")
