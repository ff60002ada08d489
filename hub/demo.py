"""`hub demo`: a local Synapse, the hub and the demo shop page, all on loopback.

Everything lives in one data directory; running the demo again reuses it (same ports,
tokens, adviser password, rooms and history). Delete the directory to start over.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import sys
from pathlib import Path

import yaml

from hub.app import serve
from hub.config import Config, load_config
from hub.devserver.synapse import (
    ensure_synapse_installed,
    free_port,
    persistent_secret,
    synapse_for_hub,
)
from hub.matrix.registration import write_registration

DOMAIN = "localhost"
DEMO_CATALOGUE = Path(__file__).resolve().parent.parent / "web" / "demo" / "catalogue.csv"
ADVISER = "anna"


def _port(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return free_port()


def _write_first_config(path: Path) -> None:
    """A config for the demo, written once; later runs reuse it as it is."""
    from hub.http.dashboard_auth import hash_password

    hs_port, hub_port = _port(8008), _port(29330)
    dashboard_password = persistent_secret(path.parent / "dashboard-password", nbytes=9)
    config = {
        "data_dir": ".",
        "homeserver": {"url": f"http://127.0.0.1:{hs_port}", "domain": DOMAIN},
        "appservice": {"as_token": secrets.token_hex(32), "hs_token": secrets.token_hex(32)},
        "http": {"host": "127.0.0.1", "port": hub_port},
        "shop": {
            "name": "Farbenhaus Demo",
            "advisers": [f"@{ADVISER}:{DOMAIN}"],
            "locale": "de_DE",
            "currency": "EUR",
            "timezone": "Europe/Berlin",
        },
        # A German shop's week: outside it the widget gets a holding reply (try a Sunday).
        "hours": {
            "weekly": {
                **dict.fromkeys(("mon", "tue", "wed", "thu", "fri"), "9-13, 14-18"),
                "sat": "9-14",
            },
            "holidays": {"country": "DE", "region": "NW"},
        },
        "replies": {"greeting": {"enabled": True}, "back": {"enabled": True}},
        # A paint shop's products, so !catalog, !cart and !pay can be tried at once.
        "commerce": {"catalogue_file": str(DEMO_CATALOGUE), "provider": "builtin"},
        # Element and FluffyChat see a normal encrypted room; the hub's device takes part.
        "encryption": {"enabled": True},
        # The KPIs at /dashboard; plain http on loopback, so no Secure-only cookies.
        "dashboard": {
            "admins": [{"username": "admin", "password_hash": hash_password(dashboard_password)}],
            "secure_cookies": False,
        },
        "logging": {"level": "WARNING"},
    }
    path.write_text(
        "# Written by `hub demo`; see config.example.yaml for every key.\n"
        + yaml.safe_dump(config, sort_keys=False),
        encoding="utf-8",
    )


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def prepare_demo(data_dir: Path) -> tuple[Config, Path]:
    """Create (first run) or reuse the demo's config and registration; before any I/O loop."""
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    config_path = data_dir / "config.yaml"
    if not config_path.exists():
        _write_first_config(config_path)
    config = load_config(config_path)
    write_registration(config, data_dir / "registration.yaml")
    return config, data_dir


async def run_demo(config: Config, data_dir: Path) -> None:
    registration = data_dir / "registration.yaml"
    python = await ensure_synapse_installed()
    synapse = synapse_for_hub(
        config,
        registration,
        data_dir / "synapse",
        python,
        persistent_secret(data_dir / "synapse-shared-secret"),
    )
    synapse.write_config()
    _say(f"starting Synapse on {synapse.url} …")
    await synapse.start()
    hub_task: asyncio.Task[None] | None = None
    try:
        password = persistent_secret(data_dir / "adviser-password", nbytes=9)
        adviser = await synapse.register_user(ADVISER, password, displayname="Anna (adviser)")
        # A server admin's token, so refused photos can be deleted from the media store.
        admin_token = await synapse.admin_token()
        homeserver = config.homeserver.model_copy(update={"admin_token": admin_token})
        config = config.model_copy(update={"homeserver": homeserver})
        ready = asyncio.Event()
        hub_task = asyncio.create_task(serve(config, ready))
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait({hub_task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if hub_task.done():
            waiter.cancel()
            hub_task.result()  # raises the hub's startup error
        base = config.http.public_base
        print(
            "\n"
            "  Matrix commerce hub demo is running.\n\n"
            f"  Demo shop with the chat widget:  {base}/\n"
            f"  Homeserver for your Matrix client (Element, FluffyChat, Nheko…):  {synapse.url}\n"
            f"  Adviser login:  user {ADVISER}  password {password}   ({adviser})\n"
            + (
                f"  Shop KPIs:  {base}/dashboard  user admin  password "
                f"{persistent_secret(data_dir / 'dashboard-password', nbytes=9)}\n\n"
                if config.dashboard.admins
                else "\n"
            )
            + "  Write in the widget on the shop page: a room appears for the adviser.\n"
            "  Type !help in that room for the bot's commands; try !p wandfarbe,\n"
            "  !cart add WF-W-10 2 and !pay (a demo catalogue is loaded), !hours and\n"
            "  !schedule in 2min Ihre Farbe ist da! Send a photo from the widget and\n"
            "  answer it with a reply !consent to ask the customer to reuse it.\n"
            f"  Data is kept in {data_dir} (delete it to start over). Ctrl-C stops everything.\n",
            flush=True,
        )
        await hub_task
    finally:
        _say("stopping …")
        if hub_task is not None and not hub_task.done():
            hub_task.cancel()
            with contextlib.suppress(BaseException):
                await hub_task
        with contextlib.suppress(Exception):
            await synapse.stop()
