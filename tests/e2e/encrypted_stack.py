"""The end-to-end stack of issue 13 (end-to-bridge encryption): like conftest's `stack`, but
Synapse makes every new room encrypted and pushes to-device messages, device lists and
one-time key counts to the appservice; the hub runs with `encryption.enabled`; the adviser
Anna uses an encrypting client (tests/e2e/crypto_adviser.py).

Customers write through the WhatsApp stand-in (it records what the hub sends them, reactions
included, which the web chat does not show) and the web chat is on as well.

Module-scoped: the tests of one module share the stack; nothing here touches the `stack`
fixture of conftest.py, so both can run in one session (two Synapses, two hubs). Its hub runs
on each database engine, like every e2e hub (tests/e2e/engines.py)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from hub.config import load_config
from hub.devserver.synapse import (
    LocalSynapse,
    ensure_synapse_installed,
    free_port,
    synapse_for_hub,
)
from tests.e2e.crypto_adviser import CryptoAdviser
from tests.e2e.engines import HubDatabases
from tests.e2e.helpers import REPO, HubProcess, generate_registration
from tests.standins.whatsapp import WhatsappStandin

DOMAIN = "crypto.example"  # not conftest's: the two stacks' users must never be confused
PASSWORD = "adviser-password-1"
BOT_DEVICE = "COMMERCEHUB"


@dataclass
class EncryptedStack:
    root: Path  # the tmp dir: config, logs, client stores
    synapse: LocalSynapse
    hub: HubProcess
    config_path: Path
    hub_url: str
    bot_mxid: str
    wa: WhatsappStandin
    anna: CryptoAdviser  # logged in on device "anna-laptop", syncing

    @property
    def hub_log(self) -> Path:
        return self.hub.log_path

    def hub_log_lines(self, *needles: str, since: int = 0) -> list[str]:
        """Lines of the hub log (from byte offset `since`) with any of `needles` (all lines
        without): what a failing test prints to say why."""
        try:
            with self.hub.log_path.open("rb") as f:
                f.seek(since)
                text = f.read().decode(errors="replace")
        except OSError:
            return []
        lines = text.splitlines()
        if not needles:
            return lines
        return [line for line in lines if any(n.lower() in line.lower() for n in needles)]

    def hub_log_size(self) -> int:
        try:
            return self.hub.log_path.stat().st_size
        except OSError:
            return 0

    async def new_anna_device(self, device_name: str) -> CryptoAdviser:
        """Anna on one more device (a new nio client with a new, empty store)."""
        client = CryptoAdviser(
            self.synapse.url, f"@anna:{DOMAIN}", self.root / f"anna-{secrets.token_hex(4)}"
        )
        await client.login(PASSWORD, device_name)
        return client


def hub_config(
    root: Path, hub_port: int, hs_port: int, wa: WhatsappStandin, database: dict[str, Any]
) -> dict[str, Any]:
    return {
        "data_dir": str(root / "hub"),
        "homeserver": {"url": f"http://127.0.0.1:{hs_port}", "domain": DOMAIN},
        "appservice": {"as_token": "CHANGE_ME", "hs_token": "CHANGE_ME"},
        "http": {"host": "127.0.0.1", "port": hub_port},
        "database": database,
        "shop": {
            "name": "Farbenhaus Krypto",
            "advisers": [f"@anna:{DOMAIN}"],
            "locale": "de_DE",
            "currency": "EUR",
        },
        "outbox": {"base_delay_seconds": 0.2, "max_delay_seconds": 2},
        "channels": {
            "webchat": {
                "max_upload_bytes": 200_000,
                "allowed_origins": ["http://shop.test"],
                "limits": {  # every visitor comes from 127.0.0.1
                    "sessions_per_address": 10_000,
                    "messages_per_visitor": 10_000,
                    "messages_per_address": 100_000,
                    "uploads_per_visitor": 10_000,
                    "new_conversations": 100_000,
                },
            },
            "whatsapp": wa.hub_config(),
        },
        "commerce": {
            "catalogue_file": str(REPO / "tests" / "fixtures" / "catalogue" / "paint.csv"),
            "max_quantity": 50,
        },
        # device_id stays the default on purpose: the tests check the ghosts' events name it.
        "encryption": {"enabled": True, "key_wait_seconds": 10},
        # DEBUG would show message bodies; INFO is what an operator sees.
        "logging": {"level": "INFO"},
    }


@pytest.fixture(scope="module")
async def encrypted_stack(
    tmp_path_factory: pytest.TempPathFactory, hub_databases: HubDatabases
) -> AsyncIterator[EncryptedStack]:
    root = tmp_path_factory.mktemp(f"encrypted-stack-{hub_databases.engine}")
    hub_port, hs_port = free_port(), free_port()
    wa = WhatsappStandin()
    await wa.start()
    synapse: LocalSynapse | None = None
    hub: HubProcess | None = None
    anna: CryptoAdviser | None = None
    try:
        config_path = root / "config.yaml"
        database = await hub_databases.section("encrypted")
        config_path.write_text(yaml.safe_dump(hub_config(root, hub_port, hs_port, wa, database)))
        registration = root / "registration.yaml"
        # With encryption on it writes org.matrix.msc3202 and io.element.msc4190 too.
        await generate_registration(config_path, registration)
        python = await ensure_synapse_installed()
        synapse = synapse_for_hub(
            load_config(config_path),
            registration,
            root / "synapse",
            python,
            secrets.token_hex(16),
            for_tests=True,
            encrypt_new_rooms="all",
            appservice_encryption=True,
        )
        synapse.write_config()
        await synapse.start()
        written = yaml.safe_load(config_path.read_text())  # with the registration's tokens
        written["homeserver"]["admin_token"] = await synapse.admin_token()
        config_path.write_text(yaml.safe_dump(written))
        anna_mxid = await synapse.register_user("anna", PASSWORD, displayname="Anna Adviser")
        hub_url = f"http://127.0.0.1:{hub_port}"
        hub = HubProcess(config_path, hub_url, root / "hub.log")
        await hub.start()
        anna = CryptoAdviser(synapse.url, anna_mxid, root / "anna-laptop")
        await anna.login(PASSWORD, "anna-laptop")
        yield EncryptedStack(
            root, synapse, hub, config_path, hub_url, f"@shopbot:{DOMAIN}", wa, anna
        )
    finally:
        if anna is not None:
            await anna.close()
        if hub is not None:
            await hub.stop()
        if synapse is not None:
            await synapse.stop()
        await wa.stop()
