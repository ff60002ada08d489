"""Shared by every test: the hub's language (hub.i18n) is English unless a test asks for
another with the `shop_language` fixture, and English again after each test; one throwaway
PostgreSQL server for the whole session (`pg_server`, tests/pg.py), started when a test
first asks for it: the integration tests' databases and the end-to-end hubs' are on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from hub import i18n
from tests.pg import PostgresServer, find_bin_dir


@pytest.fixture(autouse=True)
def _english_after_each_test() -> Iterator[None]:
    yield
    i18n.set_locale("en")


@pytest.fixture
def shop_language() -> Callable[[str], None]:
    """Switch the texts to a shop locale for one test: `shop_language("de_DE")`."""
    return i18n.set_locale


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server; each user creates its own databases on it."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip(
            "PostgreSQL binaries (initdb, postgres, pg_isready) not found in "
            "/usr/lib/postgresql/*/bin, $HUB_TEST_PG_BINDIR or PATH; on Debian: "
            "apt-get install postgresql"
        )
    server = PostgresServer(bin_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
