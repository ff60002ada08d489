"""A throwaway PostgreSQL server for tests: initdb in a temp dir, listen on a free loopback
port, trust authentication, no fsync. Stopped (and its files removed) by `stop()`.

PostgreSQL refuses to run as root. When we are root the server runs as the `postgres`
account (created by Debian's `postgresql` package) or else as `nobody`, so no account is
created on the machine; otherwise it runs as the current user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SUPERUSER = "hub"
LOOPBACK = "127.0.0.1"
START_TIMEOUT = 60.0


def find_bin_dir() -> Path | None:
    """The directory holding initdb and postgres: $HUB_TEST_PG_BINDIR, Debian's versioned
    directories (newest first), then PATH. None when PostgreSQL is not installed."""

    def usable(d: Path) -> bool:
        return all(os.access(d / b, os.X_OK) for b in ("initdb", "postgres", "pg_isready"))

    candidates: list[Path] = []
    if env := os.environ.get("HUB_TEST_PG_BINDIR"):
        candidates.append(Path(env))

    def version(p: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", p.parent.name))

    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    candidates += debian
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).resolve().parent)
    return next((d for d in candidates if usable(d)), None)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _unprivileged_account() -> pwd.struct_passwd | None:
    """The account to run the server as, or None to run as ourselves (not root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root and neither a `postgres` nor a `nobody` account exists")


def _reachable_by_others(path: Path) -> bool:
    """Whether another account can traverse every directory down to path."""
    for parent in [path, *path.parents]:
        if not parent.stat().st_mode & stat.S_IXOTH:
            return False
    return True


def _parent_death_signal() -> Callable[[], None] | None:
    """Have the kernel stop the server (fast shutdown) if the test run dies, so no orphan
    keeps the port. Looked up before fork: the child must not import or allocate."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def set_signal() -> None:
        prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG

    return set_signal


@dataclass
class PostgresServer:
    bin_dir: Path
    port: int = 0
    base_dir: Path | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _account: pwd.struct_passwd | None = field(default=None, repr=False)

    @property
    def data_dir(self) -> Path:
        assert self.base_dir is not None
        return self.base_dir / "data"

    @property
    def log_path(self) -> Path:
        assert self.base_dir is not None
        return self.base_dir / "postgres.log"

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://{SUPERUSER}@{LOOPBACK}:{self.port}/{database}"

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._account = _unprivileged_account()
        tmp = Path(tempfile.gettempdir())
        if self._account is not None and not _reachable_by_others(tmp):
            tmp = Path("/tmp")
        self.base_dir = Path(tempfile.mkdtemp(prefix="hub-test-pg-", dir=tmp))
        try:
            if self._account is not None:
                os.chown(self.base_dir, self._account.pw_uid, self._account.pw_gid)
            self._run(
                "initdb",
                *("-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust"),
                *("--encoding=UTF8", "--locale=C", "--no-sync"),
            )
            for _attempt in range(3):
                self.port = _free_port()
                if self._start_server():
                    return
            raise RuntimeError(f"PostgreSQL did not start; see {self._log_tail()}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # fast shutdown: disconnect clients, then exit
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None

    def _start_server(self) -> bool:
        """Start on self.port; False if the port was taken meanwhile (caller retries)."""
        log = self.log_path.open("ab")
        with log:
            self._proc = subprocess.Popen(
                [
                    str(self.bin_dir / "postgres"),
                    *("-D", str(self.data_dir), "-h", LOOPBACK, "-p", str(self.port)),
                    *("-k", ""),  # no Unix socket: nothing outside the temp dir
                    *("-c", "fsync=off", "-c", "synchronous_commit=off"),
                    *("-c", "full_page_writes=off", "-c", "max_connections=200"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.base_dir,
                preexec_fn=_parent_death_signal(),
                **self._as_account(),
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                if "could not bind" in self.log_path.read_text(errors="replace"):
                    return False
                raise RuntimeError(f"PostgreSQL exited at start: {self._log_tail()}")
            ready = subprocess.run(
                [str(self.bin_dir / "pg_isready"), "-q", "-h", LOOPBACK, "-p", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            )
            if ready.returncode == 0:
                return True
            time.sleep(0.1)  # polling for readiness, not a test assertion
        raise RuntimeError(f"PostgreSQL not ready after {START_TIMEOUT}s: {self._log_tail()}")

    def _run(self, program: str, *args: str) -> None:
        result = subprocess.run(
            [str(self.bin_dir / program), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            cwd=self.base_dir,
            check=False,
            **self._as_account(),
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace")
            raise RuntimeError(f"{program} failed ({result.returncode}):\n{output}")

    def _as_account(self) -> dict[str, object]:
        if self._account is None:
            return {}
        return {
            "user": self._account.pw_uid,
            "group": self._account.pw_gid,
            "extra_groups": [],
            "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
        }

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return f"{self.log_path}:\n" + "\n".join(text.splitlines()[-lines:])

    # --- databases --------------------------------------------------------------------------

    async def create_database(self, prefix: str = "test") -> str:
        """A new empty database; returns its name."""
        name = f"{prefix}_{secrets.token_hex(6)}"
        await self._admin(f'CREATE DATABASE "{name}"')
        return name

    async def drop_database(self, name: str) -> None:
        await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    async def _admin(self, sql: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(
            host=LOOPBACK, port=self.port, user=SUPERUSER, database="postgres"
        )
        try:
            await conn.execute(sql)
        finally:
            await conn.close()
