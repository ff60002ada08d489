"""The appservice registration file a homeserver needs (as Matrix bridges generate it)."""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import Any

import yaml

from hub.config import PLACEHOLDER_MARKER, Config


def registration(config: Config) -> dict[str, Any]:
    domain = re.escape(config.homeserver.domain)
    app = config.appservice
    doc: dict[str, Any] = {
        "id": app.id,
        "url": config.http.appservice_base,
        "as_token": app.as_token,
        "hs_token": app.hs_token,
        "sender_localpart": app.bot_localpart,
        "rate_limited": False,
        # Read receipts of advisers reach us as ephemeral events (MSC2409, stable in Synapse
        # 1.156); the widget shows them as "read".
        "receive_ephemeral": True,
        "namespaces": {
            # Regexes must match the whole MXID, dots of the server name escaped.
            "users": [{"exclusive": True, "regex": f"@{re.escape(app.ghost_prefix)}.*:{domain}$"}],
            "aliases": [
                {"exclusive": True, "regex": f"#{re.escape(app.alias_prefix)}.*:{domain}$"}
            ],
            "rooms": [],
        },
    }
    if config.encryption.enabled:
        # The bot's device lives without /sync, so the homeserver must push what /sync would
        # bring: MSC3202 adds device list changes and one-time key counts to transactions
        # (to-device messages, the room keys, come with receive_ephemeral: MSC2409).
        doc["org.matrix.msc3202"] = True
        # MSC4190: the hub creates and deletes its bot's device with the as_token, as
        # homeservers that refuse appservice logins (OAuth2 delegation) demand.
        doc["io.element.msc4190"] = True
    return doc


def write_registration(config: Config, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    # It holds both tokens: readable by the owner and its group (the homeserver's), never
    # by everyone, whatever the umask.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(yaml.safe_dump(registration(config), sort_keys=False))
    tmp.replace(path)


def fill_token_placeholders(config_path: Path) -> bool:
    """Replace CHANGE_ME tokens in the config file with random hex tokens, keeping comments.

    Hex, because a URL-safe token may start with "-" and confuse YAML and shells."""
    text = config_path.read_text(encoding="utf-8")
    changed = False

    def fill(match: re.Match[str]) -> str:
        nonlocal changed
        changed = True
        # Quoted: an all-digit hex token (or one like "1e5…") would load as a number.
        return f'{match.group(1)}"{secrets.token_hex(32)}"'

    pattern = rf"^(\s*(?:as_token|hs_token):\s*)[\"']?{PLACEHOLDER_MARKER}[^\s#\"']*[\"']?"
    text = re.sub(pattern, fill, text, flags=re.MULTILINE)
    if changed:
        config_path.write_text(text, encoding="utf-8")
    return changed
