"""The database engine of the end-to-end hubs, decided in one place.

Every e2e stack (conftest's session `stack`, encrypted_stack.py, the stacks a test module
builds itself) writes its hub's `database` config section from `HubDatabases.section`, got
from the session fixture `hub_databases` (tests/e2e/conftest.py). That fixture depends on
`e2e_engine`, a session fixture parametrized with ENGINES: every test that runs a hub runs
once on SQLite and once on PostgreSQL, its id ending in [sqlite] or [postgresql]. pytest
groups the tests by the value of a session fixture, so each stack is built once per engine:
all SQLite runs first, then the PostgreSQL ones. `-m "not postgres"` leaves the PostgreSQL
runs out.

PostgreSQL: the session's one throwaway server (`pg_server` of tests/conftest.py, shared with
tests/integration), a new empty database per stack, dropped when the engine's runs are done.
SQLite: the hub's default, hub.db in the stack's data_dir.

A test module that needs no hub at all runs once and says why with the `one_engine` marker
(tests/e2e/conftest.py refuses an e2e test that does neither).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.pg import PostgresServer

ENGINES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]

# Relative to the hub's data_dir (hub.config): each stack has its own.
SQLITE_URL = "sqlite+aiosqlite:///hub.db"


@dataclass
class HubDatabases:
    """Hands out the `database` section of each e2e hub's config, on one engine."""

    engine: str
    server: PostgresServer | None = None
    created: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.engine not in ("sqlite", "postgresql"):
            raise ValueError(f"unknown database engine {self.engine!r}")
        if self.engine == "postgresql" and self.server is None:
            raise ValueError("the postgresql engine needs a PostgresServer")

    async def section(self, name: str) -> dict[str, Any]:
        """The `database` config section of a new hub; `name` (e.g. "lobby") goes into the
        PostgreSQL database's name, to tell the stacks' databases apart."""
        return {"url": await self.url(name)}

    async def url(self, name: str, sqlite_dir: Path | None = None) -> str:
        """A new database's URL. SQLite: hub.db in `sqlite_dir`, or without it the hub's
        default (relative to the data_dir of the config it goes into)."""
        if self.engine == "sqlite":
            return SQLITE_URL if sqlite_dir is None else f"sqlite+aiosqlite:///{sqlite_dir}/hub.db"
        assert self.server is not None
        prefix = "e2e_" + re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
        database = await self.server.create_database(prefix[:40])
        self.created.append(database)
        return self.server.url(database)

    async def drop_all(self) -> None:
        """Drop the databases handed out (their hubs are stopped by then)."""
        if self.server is None:
            return
        while self.created:
            await self.server.drop_database(self.created.pop())
