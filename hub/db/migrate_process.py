"""Schema migration in a child process, for the long-running hub.

Alembic, Mako, Pygments and the migration scripts cost a process ≈10 MiB resident that it
never gives back. The hub needs them only on a start that finds the schema behind, so it
runs them in a child, which returns that memory when it exits. The database URL goes to the
child on stdin, never on its command line (other users see that in `ps`).

Exit codes: 0 with `{"before": ..., "head": ...}` on stdout; 2 with the StartupError's text
on stderr (a newer or foreign schema: the hub refuses it); anything else is a failure: the
child prints its traceback and then one line naming the error, which the parent reports
(the traceback goes to the parent's log at DEBUG).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import traceback

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.core.child import run_child
from hub.errors import StartupError

REFUSED = 2
FAILED = 1
log = logging.getLogger(__name__)


async def migrate_in_child(engine: AsyncEngine) -> tuple[str | None, str]:
    """Bring the schema of engine's database to head in a child process -> (before, head)."""
    url = engine.url.render_as_string(hide_password=False)
    child = await run_child(__name__, url.encode())
    if child.returncode == REFUSED:
        raise StartupError(child.last_line or "database schema refused")
    if child.returncode != 0:
        log.debug("migration child's output:\n%s", child.err)
        raise StartupError(
            f"database migration failed (exit {child.returncode}): {child.last_line or 'no output'}"
        )
    result = json.loads(child.out)
    return result["before"], result["head"]


def main() -> int:
    from hub.db.engine import open_database, upgrade

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    url = sys.stdin.read().strip()

    async def go() -> tuple[str | None, str]:
        db = open_database(url)
        try:
            return await upgrade(db)
        finally:
            await db.close()

    try:
        before, head = asyncio.run(go())
    except StartupError as exc:
        print(str(exc), file=sys.stderr)
        return REFUSED
    except Exception as exc:
        traceback.print_exc()
        # Last, on one line: SQLAlchemy's message ends with the statement and a link.
        cause = exc.orig if isinstance(exc, DBAPIError) else exc
        print(f"{type(cause).__name__}: {cause}".splitlines()[0], file=sys.stderr)
        return FAILED
    print(json.dumps({"before": before, "head": head}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
