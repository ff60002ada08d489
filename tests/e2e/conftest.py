"""Session fixtures: a real Synapse on loopback with the registration the hub generates, and
the hub itself running as a separate process (so it can be killed and restarted).

Every hub of the suite runs on SQLite and on PostgreSQL: `e2e_engine` picks the engine and
`hub_databases` hands out each stack's `database` config section (tests/e2e/engines.py).
An e2e test that does not use them (no hub, or a database of its own) is marked
`one_engine(reason=...)`; pytest_collection_modifyitems below refuses one that is neither."""

from __future__ import annotations

import importlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from hub.config import load_config
from hub.devserver.synapse import (
    LocalSynapse,
    ensure_synapse_installed,
    free_port,
    synapse_for_hub,
)
from tests.e2e.engines import ENGINES, HubDatabases
from tests.e2e.helpers import REPO, Adviser, HubProcess, Visitor, generate_registration

DOMAIN = "shop.example"
PASSWORD = "adviser-password-1"
E2E_DIR = Path(__file__).parent

# Modules of other changes that choose their database themselves, and why.
OWN_DATABASE = {
    "test_deploy_guide.py": "follows docs/deploy.md: the guide's SQLite, PostgreSQL for its "
    "backup and restore",
    "test_multiprocess.py": "two hub processes on one database: PostgreSQL by nature",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each e2e test runs its hub on both engines (it uses `e2e_engine`, usually through a
    stack) or is marked `one_engine` with a reason: no hub of the suite silently stays on
    SQLite."""
    unmarked = []
    for item in items:
        path = Path(str(item.path))
        if path.parent != E2E_DIR:
            continue
        if path.name in OWN_DATABASE:
            item.add_marker(pytest.mark.one_engine(reason=OWN_DATABASE[path.name]))
        marker = item.get_closest_marker("one_engine")
        uses_engine = "e2e_engine" in getattr(item, "fixturenames", ())
        if marker is not None and uses_engine:
            raise pytest.UsageError(f"{item.nodeid}: marked one_engine but runs a hub on each")
        if marker is not None and not marker.kwargs.get("reason"):
            raise pytest.UsageError(f"{item.nodeid}: one_engine needs a reason=")
        if marker is None and not uses_engine:
            unmarked.append(item.nodeid)
    if unmarked:
        raise pytest.UsageError(
            "e2e tests neither on both database engines (the `hub_databases` fixture, "
            "tests/e2e/engines.py) nor marked one_engine(reason=...):\n  " + "\n  ".join(unmarked)
        )


@pytest.fixture(scope="session", params=ENGINES)
def e2e_engine(request: pytest.FixtureRequest) -> str:
    """The database engine of every e2e hub: each test using it runs once per engine."""
    return str(request.param)


@pytest.fixture(scope="session")
async def hub_databases(
    request: pytest.FixtureRequest, e2e_engine: str
) -> AsyncIterator[HubDatabases]:
    """The `database` config sections of the hubs on this engine: `await
    hub_databases.section("name")`. PostgreSQL: the session's one server (tests/conftest.py),
    a new database per stack, all dropped when this engine's tests are done."""
    server = request.getfixturevalue("pg_server") if e2e_engine == "postgresql" else None
    databases = HubDatabases(e2e_engine, server)
    try:
        yield databases
    finally:
        await databases.drop_all()


# Loopback stand-ins of the messengers' APIs: (module, class, kwargs) per channel config key.
STANDINS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "whatsapp": ("tests.standins.whatsapp", "WhatsappStandin", {}),
    "telegram": ("tests.standins.telegram", "TelegramStandin", {}),
    "messenger": ("tests.standins.meta", "MetaStandin", {"kind": "messenger"}),
    "instagram": ("tests.standins.meta", "MetaStandin", {"kind": "instagram"}),
}


async def start_standins() -> dict[str, Any]:
    """Start the stand-in of every channel whose module exists."""
    started: dict[str, Any] = {}
    for name, (module_name, class_name, kwargs) in STANDINS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        standin = getattr(module, class_name)(**kwargs)
        await standin.start()
        started[name] = standin
    return started


@dataclass
class Stack:
    synapse: LocalSynapse
    hub: HubProcess
    config_path: Path
    hub_url: str
    adviser_mxid: str
    other_mxid: str
    bot_mxid: str
    standins: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="session")
async def stack(
    tmp_path_factory: pytest.TempPathFactory, hub_databases: HubDatabases
) -> AsyncIterator[Stack]:
    root = tmp_path_factory.mktemp(f"stack-{hub_databases.engine}")
    hub_port, hs_port = free_port(), free_port()
    config = {
        "data_dir": str(root / "hub"),
        "homeserver": {"url": f"http://127.0.0.1:{hs_port}", "domain": DOMAIN},
        "appservice": {"as_token": "CHANGE_ME", "hs_token": "CHANGE_ME"},
        "http": {"host": "127.0.0.1", "port": hub_port},
        "database": await hub_databases.section("stack"),
        "shop": {
            "name": "Farbenhaus Test",
            "advisers": [f"@anna:{DOMAIN}"],
            "locale": "de_DE",
            "currency": "EUR",
        },
        "outbox": {"base_delay_seconds": 0.2, "max_delay_seconds": 2},
        "channels": {
            "webchat": {
                "max_upload_bytes": 200_000,
                "allowed_origins": ["http://shop.test"],
                # Every visitor of the suite comes from 127.0.0.1 (tests of the limits
                # themselves: tests/integration/test_webchat_limits.py).
                "limits": {
                    "sessions_per_address": 10_000,
                    "messages_per_visitor": 10_000,
                    "messages_per_address": 100_000,
                    "uploads_per_visitor": 10_000,
                    "new_conversations": 100_000,
                },
            }
        },
        "commerce": {
            "catalogue_file": str(REPO / "tests" / "fixtures" / "catalogue" / "paint.csv"),
            "max_quantity": 50,
            # Order updates once the WhatsApp window has closed (the stand-in's template).
            "order_update_template": "order_update",
        },
        "logging": {"level": "INFO"},
    }
    standins = await start_standins()
    for name, standin in standins.items():
        config["channels"][name] = standin.hub_config()
    config_path = root / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    registration = root / "registration.yaml"
    await generate_registration(config_path, registration)
    python = await ensure_synapse_installed()
    synapse = synapse_for_hub(
        load_config(config_path),
        registration,
        root / "synapse",
        python,
        secrets.token_hex(16),
        for_tests=True,
    )
    synapse.write_config()
    await synapse.start()
    # A server admin's token: the hub deletes refused photos and erases customers with it.
    written = yaml.safe_load(config_path.read_text())  # with the registration's tokens
    written["homeserver"]["admin_token"] = await synapse.admin_token()
    config_path.write_text(yaml.safe_dump(written))
    anna = await synapse.register_user("anna", PASSWORD, displayname="Anna Adviser")
    bob = await synapse.register_user("bob", PASSWORD, displayname="Bob Bystander")
    hub_url = f"http://127.0.0.1:{hub_port}"
    hub = HubProcess(config_path, hub_url, root / "hub.log")
    await hub.start()
    try:
        yield Stack(synapse, hub, config_path, hub_url, anna, bob, f"@shopbot:{DOMAIN}", standins)
    finally:
        await hub.stop()
        await synapse.stop()
        for standin in standins.values():
            await standin.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def adviser(stack: Stack) -> AsyncIterator[Adviser]:
    client = Adviser(stack.synapse.url, stack.adviser_mxid)
    await client.login(PASSWORD)
    yield client
    await client.close()


@pytest.fixture
async def visitor(stack: Stack, http: aiohttp.ClientSession) -> AsyncIterator[Visitor]:
    v = Visitor(stack.hub_url, http)
    yield v
    await v.disconnect()
