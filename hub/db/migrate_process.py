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

from hub.errors import StartupError

REFUSED = 2
FAILED = 1
log = logging.getLogger(__name__)


async def migrate_in_child(engine: AsyncEngine) -> tuple[str | None, str]:
    """Bring the schema of engine's database to head in a child process -> (before, head)."""
    url = engine.url.render_as_string(hide_password=False)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-P",  # not the working directory first on sys.path: a json.py there would shadow
        "-m",
        __name__,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await proc.communicate(url.encode())
    except asyncio.CancelledError:
        # Stopped mid-migration: the child's transaction rolls back when it dies.
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    text = err.decode(errors="replace").strip()
    last = text.splitlines()[-1] if text else ""
    if proc.returncode == REFUSED:
        raise StartupError(last or "database schema refused")
    if proc.returncode != 0:
        log.debug("migration child's output:\n%s", text)
        raise StartupError(
            f"database migration failed (exit {proc.returncode}): {last or 'no output'}"
        )
    result = json.loads(out)
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
