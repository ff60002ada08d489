"""The unit tests that need the job queue or the units of work run them on a throwaway
SQLite file (the integration tests run every engine)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hub.db.database import Database
from hub.db.engine import migrate, open_database


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = open_database(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    try:
        await migrate(database)
        yield database
    finally:
        await database.close()
