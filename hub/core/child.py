"""A module of the hub run as a short-lived child process (`python -P -m MODULE`).

The hub does a few start-up chores whose libraries would stay in its memory for good
(Alembic's migrations, the `holidays` package's ~280 countries): a child does them and
returns the memory when it exits. Input goes on stdin, never on the command line (other
users see that in `ps`); the child answers on stdout, problems on stderr, and says with its
exit code whether it refused (a problem of the configuration) or failed.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class ChildResult:
    returncode: int
    out: bytes
    err: str

    @property
    def last_line(self) -> str:
        """The child's last line on stderr: the one naming the problem."""
        lines = self.err.strip().splitlines()
        return lines[-1] if lines else ""


async def run_child(module: str, stdin: bytes, timeout: float | None = None) -> ChildResult:
    """Run `module` as a child with `stdin`; killed when cancelled or after `timeout`
    seconds (TimeoutError)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-P",  # not the working directory first on sys.path: a json.py there would shadow
        "-m",
        module,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except (asyncio.CancelledError, TimeoutError):
        # A migration's transaction rolls back when its child dies.
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    assert proc.returncode is not None
    return ChildResult(proc.returncode, out, err.decode(errors="replace"))
