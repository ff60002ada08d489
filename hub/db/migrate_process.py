"""Schema migration in a child process, for the long-running hub.

Alembic, Mako, Pygments and the migration scripts cost a process ≈10 MiB resident that it
never gives back. The hub needs them only on a start that finds the schema behind, so it
runs them in a child, which returns that memory when it exits. The database URL goes to the
child on stdin, never on its command line (other users see that in `ps`).

Exit codes: 0 with `{"before": ..., "head": ...}` on stdout; 2 with the StartupError's text
on stderr (a newer or foreign schema: the hub refuses it); anything else is a failure whose
stderr tail the parent reports.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys

from sqlalchemy.ext.asyncio import AsyncEngine

from hub.errors import StartupError

REFUSED = 2


async def migrate_in_child(engine: AsyncEngine) -> tuple[str | None, str]:
    """Bring the schema of engine's database to head in a child process -> (before, head)."""
    url = engine.url.render_as_string(hide_password=False)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
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
    if proc.returncode == REFUSED:
        raise StartupError(text.splitlines()[-1] if text else "database schema refused")
    if proc.returncode != 0:
        tail = " | ".join(text.splitlines()[-5:]) or "no output"
        raise StartupError(f"database migration failed (exit {proc.returncode}): {tail}")
    result = json.loads(out)
    return result["before"], result["head"]


def main() -> int:
    from hub.db.engine import create_engine, upgrade

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    url = sys.stdin.read().strip()

    async def go() -> tuple[str | None, str]:
        engine = create_engine(url)
        try:
            return await upgrade(engine)
        finally:
            await engine.dispose()

    try:
        before, head = asyncio.run(go())
    except StartupError as exc:
        print(str(exc), file=sys.stderr)
        return REFUSED
    print(json.dumps({"before": before, "head": head}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
