"""Run a throwaway or demo Synapse homeserver on loopback, as a separate process.

Synapse is AGPL and heavy, so hub code never imports it: it lives in its own virtualenv and
runs as a child process that we talk to over HTTP only. This module is used by ``hub demo``
and by the end-to-end test fixtures.

API
---
``DEFAULT_SYNAPSE_VERSION``
    The Synapse release the hub is tested against.
``default_venv_dir() -> Path``
    ``$HUB_SYNAPSE_VENV``, else ``${XDG_CACHE_HOME:-~/.cache}/matrix-commerce-hub/
    synapse-venv-<version>``.
``await ensure_synapse_installed(venv_dir=None, version=DEFAULT_SYNAPSE_VERSION) -> Path``
    Create the virtualenv and ``pip install matrix-synapse==<version>`` unless already there;
    returns the venv's python. Progress goes to stderr. Safe to call from several processes.
``free_port(host="127.0.0.1") -> int``
    A port that was free a moment ago.
``persistent_secret(path) -> str``
    Read a random secret from ``path``, creating it on first use (so restarts keep it).
``SynapseConfig``
    What goes into homeserver.yaml (data dir, server name, port, appservice registration
    files, registration shared secret, ``for_tests``).
``LocalSynapse(config, python)``
    ``url``, ``server_name``, ``write_config() -> Path``, ``await start(timeout=60)``,
    ``await stop()``, ``await register_user(username, password, admin=False,
    displayname=None) -> str`` (the MXID; an existing user is not an error),
    ``mxid(localpart) -> str``, ``log_tail(lines=40) -> str``; also an async context manager
    (start on enter, stop on exit).

Files in ``data_dir``: ``homeserver.yaml``, ``log_config.yaml``, ``homeserver.log``
(Synapse's own log, INFO), ``console.log`` (the process's stdout/stderr: startup errors and
tracebacks), ``homeserver.db`` (SQLite), ``media_store/``, ``signing.key``,
``macaroon_secret.key``, ``form_secret.key``. The signing key is created by Synapse itself
on its first start (its default since 1.67), so ``write_config`` needs no Synapse import.

Command line: ``python -m hub.devserver.synapse --ensure-installed`` installs Synapse (used
by ``scripts/test.sh``) and prints the python path.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import yaml

if TYPE_CHECKING:
    from hub.config import Config as HubConfig

DEFAULT_SYNAPSE_VERSION = "1.163.2"
LOOPBACK = "127.0.0.1"
# Written into the venv after a successful install: a half-finished pip run (killed CI,
# Ctrl-C) can leave `import synapse` working while dependencies are missing.
_INSTALLED_MARKER = ".hub-synapse-installed"

# A limit nobody reaches in a test run; Synapse silently ignores misspelt rc_* keys, so the
# key shapes below were checked against synapse/config/ratelimiting.py of 1.163.
_UNLIMITED = {"per_second": 1000, "burst_count": 1000}


class LocalSynapseError(RuntimeError):
    """Synapse could not be installed, started or asked something."""


def _say(message: str) -> None:
    print(f"[synapse] {message}", file=sys.stderr, flush=True)


def default_venv_dir(version: str = DEFAULT_SYNAPSE_VERSION) -> Path:
    """Where the Synapse virtualenv lives; cached across runs since it costs ~50 s."""
    override = os.environ.get("HUB_SYNAPSE_VENV")
    if override:
        return Path(override).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "matrix-commerce-hub" / f"synapse-venv-{version}"


def _venv_python(venv_dir: Path) -> Path:
    return venv_dir / "bin" / "python"


async def _run(*argv: str | Path) -> tuple[int, str]:
    """Run a command without blocking the loop; return its exit code and output."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *map(str, argv),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd="/",  # never the caller's cwd: a `types.py` or `synapse/` there would shadow
        )
    except FileNotFoundError as exc:
        return 127, str(exc)
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace").strip()


async def _installed_version(python: Path) -> str | None:
    # -I: ignore PYTHONPATH and the cwd, so only the venv's own packages count.
    code, out = await _run(python, "-I", "-c", "import synapse; print(synapse.__version__)")
    return out.splitlines()[-1] if code == 0 and out else None


async def _is_ready(venv_dir: Path, version: str) -> bool:
    marker = venv_dir / _INSTALLED_MARKER
    if not marker.exists() or marker.read_text().strip() != version:
        return False
    return await _installed_version(_venv_python(venv_dir)) == version


@contextlib.asynccontextmanager
async def _file_lock(path: Path) -> AsyncIterator[None]:
    """An exclusive flock that waits without blocking the event loop."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        waited = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    _say(f"waiting for another install to finish ({path})")
                    waited = True
                await asyncio.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


async def ensure_synapse_installed(
    venv_dir: Path | None = None, version: str = DEFAULT_SYNAPSE_VERSION
) -> Path:
    """Return the python of a virtualenv holding matrix-synapse==version, installing it first
    if needed. An existing venv is reused (pip only adds what is missing), never deleted."""
    venv_dir = (venv_dir or default_venv_dir(version)).expanduser().absolute()
    python = _venv_python(venv_dir)
    if await _is_ready(venv_dir, version):
        return python
    # Two test runs (or a demo and a test run) may start at once: one installs, one waits.
    async with _file_lock(venv_dir.with_name(venv_dir.name + ".lock")):
        if await _is_ready(venv_dir, version):
            return python
        started = time.monotonic()
        if not python.exists():
            _say(f"creating virtualenv {venv_dir}")
            code, out = await _run(sys.executable, "-m", "venv", venv_dir)
            if code != 0:
                raise LocalSynapseError(f"python -m venv {venv_dir} failed:\n{out}")
        _say(f"installing matrix-synapse=={version} (about a minute, ~270 MB)")
        code, out = await _run(
            python,
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--quiet",
            f"matrix-synapse=={version}",
        )
        if code != 0:
            tail = "\n".join(out.splitlines()[-40:])
            raise LocalSynapseError(f"pip install matrix-synapse=={version} failed:\n{tail}")
        found = await _installed_version(python)
        if found != version:
            raise LocalSynapseError(f"installed Synapse reports version {found!r}, not {version}")
        (venv_dir / _INSTALLED_MARKER).write_text(version + "\n")
        _say(f"matrix-synapse {version} ready in {time.monotonic() - started:.0f} s")
    return python


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free now (another process may still take it before we do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR like Synapse's own listener: a TIME_WAIT left by a previous run must
        # not count as busy, a live listener still does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def persistent_secret(path: Path, nbytes: int = 32) -> str:
    """The secret stored in `path`, created (mode 0600) on first use."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(nbytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    return value


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class SynapseConfig:
    """What homeserver.yaml needs; everything else is fixed for a loopback server."""

    data_dir: Path  # everything of this Synapse lives here (DB, media, keys, logs)
    server_name: str  # e.g. "shop.example" or "localhost"; part of every MXID
    port: int
    registration_files: list[Path] = field(default_factory=list)  # appservice YAMLs
    registration_shared_secret: str = field(default_factory=lambda: secrets.token_hex(32))
    for_tests: bool = False  # cheap bcrypt and rate limits nobody reaches
    log_level: str = "INFO"  # of homeserver.log


def _rate_limits(for_tests: bool) -> dict[str, Any]:
    if for_tests:
        u = _UNLIMITED
        return {
            "rc_message": u,
            "rc_registration": u,
            "rc_login": {"address": u, "account": u, "failed_attempts": u},
            "rc_admin_redaction": u,
            "rc_joins": {"local": u, "remote": u},
            "rc_joins_per_room": u,
            "rc_invites": {"per_room": u, "per_user": u, "per_issuer": u},
            "rc_room_creation": u,
            # Not in the notes but hit by tests too: uploads, profile and presence updates.
            "rc_media_create": u,
            "rc_profile": u,
            "rc_presence": {"per_user": u},
            "rc_key_requests": u,
            "rc_user_directory": u,
        }

    # The demo: a few advisers on one IP (everybody is 127.0.0.1 behind loopback) should
    # never see "Too many requests", while the defaults stay within an order of magnitude.
    def rl(per_second: float, burst_count: int) -> dict[str, float]:
        return {"per_second": per_second, "burst_count": burst_count}

    return {
        "rc_message": rl(10, 50),
        "rc_registration": rl(1, 20),
        "rc_login": {"address": rl(1, 20), "account": rl(0.5, 10), "failed_attempts": rl(0.2, 10)},
        "rc_admin_redaction": rl(5, 50),
        "rc_joins": {"local": rl(2, 50), "remote": rl(0.1, 10)},
        "rc_joins_per_room": rl(5, 50),
        "rc_invites": {"per_room": rl(5, 50), "per_user": rl(1, 20), "per_issuer": rl(5, 50)},
        "rc_room_creation": rl(1, 20),
        "rc_media_create": rl(10, 100),
    }


def _log_config(log_file: Path, level: str) -> dict[str, Any]:
    return {
        "version": 1,
        "formatters": {
            "precise": {
                "format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - "
                "%(request)s - %(message)s"
            }
        },
        "handlers": {
            "file": {
                "class": "logging.handlers.RotatingFileHandler",
                "formatter": "precise",
                "filename": str(log_file),
                "maxBytes": 20_000_000,  # the demo may run for days
                "backupCount": 2,
                "encoding": "utf8",
            },
        },
        # DEBUG on synapse.storage.SQL would log access tokens.
        "loggers": {"synapse.storage.SQL": {"level": "INFO"}},
        "root": {"level": level, "handlers": ["file"]},
        "disable_existing_loggers": False,
    }


def _parent_death_signal() -> Callable[[], None] | None:
    """On Linux, make the kernel SIGTERM Synapse when we die (crashed test run, SIGKILLed
    demo), so no orphan keeps the port and the CPU. The libc lookup happens here, before
    fork: the child must not import or allocate."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def set_signal() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return set_signal


class LocalSynapse:
    """One Synapse child process on 127.0.0.1, configured for the hub."""

    def __init__(self, config: SynapseConfig, python: Path) -> None:
        self.config = config
        self.python = python
        self.data_dir = config.data_dir.expanduser().absolute()
        self.config_path = self.data_dir / "homeserver.yaml"
        self.log_path = self.data_dir / "homeserver.log"
        self.console_log_path = self.data_dir / "console.log"
        self._proc: asyncio.subprocess.Process | None = None
        self._console_offset = 0  # where this run's output starts in console.log

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.config.port}"

    @property
    def server_name(self) -> str:
        return self.config.server_name

    def mxid(self, localpart: str) -> str:
        # Synapse lower-cases localparts on registration.
        return f"@{localpart.lower()}:{self.config.server_name}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    def write_config(self) -> Path:
        """Write homeserver.yaml and the log config. Idempotent: the DB, media, signing key
        and secrets in data_dir are kept, so a restart is the same server."""
        d = self.data_dir
        d.mkdir(parents=True, exist_ok=True)
        (d / "media_store").mkdir(exist_ok=True)
        # Files rather than inline values: created once, they survive config rewrites.
        persistent_secret(d / "macaroon_secret.key")
        persistent_secret(d / "form_secret.key")
        log_config_path = d / "log_config.yaml"
        log_config_path.write_text(
            yaml.safe_dump(_log_config(self.log_path, self.config.log_level), sort_keys=False)
        )
        cfg: dict[str, Any] = {
            "server_name": self.config.server_name,
            "public_baseurl": self.url + "/",
            "report_stats": False,  # Synapse refuses to start without it
            "listeners": [
                {
                    "port": self.config.port,
                    "type": "http",
                    "tls": False,
                    "bind_addresses": [LOOPBACK],
                    "x_forwarded": False,
                    # `client` also serves /_synapse/admin; nothing federates here.
                    "resources": [{"names": ["client"], "compress": False}],
                }
            ],
            "database": {"name": "sqlite3", "args": {"database": str(d / "homeserver.db")}},
            "media_store_path": str(d / "media_store"),
            "max_upload_size": "50M",
            "signing_key_path": str(d / "signing.key"),
            "macaroon_secret_key_path": str(d / "macaroon_secret.key"),
            "form_secret_path": str(d / "form_secret.key"),
            "log_config": str(log_config_path),
            # Offline: no key servers, no federation, no URL previews, no presence traffic.
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "federation_domain_whitelist": [],
            "url_preview_enabled": False,
            "presence": {"enabled": False},
            "enable_registration": False,
            "registration_shared_secret": self.config.registration_shared_secret,
            "app_service_config_files": [
                str(p.expanduser().absolute()) for p in self.config.registration_files
            ],
            **({"bcrypt_rounds": 4} if self.config.for_tests else {}),
            **_rate_limits(self.config.for_tests),
        }
        self.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return self.config_path

    def log_tail(self, lines: int = 40) -> str:
        """What Synapse printed since the last start (startup errors land there), or the end
        of homeserver.log if it printed nothing."""
        with contextlib.suppress(FileNotFoundError):
            with self.console_log_path.open("rb") as console:
                console.seek(self._console_offset)
                printed = console.read().decode(errors="replace").strip().splitlines()
            if printed:
                return f"--- {self.console_log_path}\n" + "\n".join(printed[-lines:])
        return f"--- {self.log_path}\n{_tail(self.log_path, lines)}"

    # A deadline of our own (not the caller's asyncio.timeout) so that running out of time
    # stops the child and reports its log.
    async def start(self, timeout: float = 60) -> None:
        """Start Synapse and return once it answers /_matrix/client/versions."""
        if self.running:
            raise LocalSynapseError(f"Synapse is already running on {self.url}")
        for path in self.config.registration_files:
            if not path.exists():
                raise LocalSynapseError(f"appservice registration file {path} does not exist")
        # A busy port would let another server answer /versions while ours died on bind.
        if not _port_is_free(LOOPBACK, self.config.port):
            raise LocalSynapseError(
                f"port {self.config.port} on {LOOPBACK} is already in use: "
                "stop whatever listens there or choose another port"
            )
        self.write_config()
        with self.console_log_path.open("ab") as console:
            self._console_offset = console.tell()
            self._proc = await asyncio.create_subprocess_exec(
                str(self.python),
                "-I",  # ignore PYTHONPATH and the cwd: only the venv's Synapse counts
                "-m",
                "synapse.app.homeserver",
                "-c",
                str(self.config_path),
                cwd=self.data_dir,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=console,
                stderr=asyncio.subprocess.STDOUT,
                # Own session: a Ctrl-C in the demo's terminal reaches the hub, which then
                # stops Synapse in order, instead of killing both at once.
                start_new_session=True,
                preexec_fn=_parent_death_signal(),
            )
        try:
            async with asyncio.timeout(timeout):
                await self._wait_until_ready()
        except TimeoutError:
            await self.stop()
            raise LocalSynapseError(
                f"Synapse did not answer on {self.url} within {timeout:.0f} s:\n" + self.log_tail()
            ) from None
        except BaseException:
            await self.stop()
            raise

    async def _wait_until_ready(self) -> None:
        assert self._proc is not None
        probe = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=probe) as http:
            while True:
                if self._proc.returncode is not None:
                    raise LocalSynapseError(
                        f"Synapse exited with code {self._proc.returncode} while starting:\n"
                        + self.log_tail()
                    )
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(f"{self.url}/_matrix/client/versions") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        """SIGTERM, up to 10 s for a clean shutdown, then SIGKILL."""
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), timeout=10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def register_user(
        self, username: str, password: str, admin: bool = False, displayname: str | None = None
    ) -> str:
        """Create a local user through the shared-secret admin API and return its MXID.

        An existing user is success (its password is left as it was), so fixtures and the
        demo can call this on every start.
        """
        endpoint = f"{self.url}/_synapse/admin/v1/register"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            async with http.get(endpoint) as resp:
                nonce = (await self._json(resp, "get a registration nonce"))["nonce"]
            mac = hmac.new(self.config.registration_shared_secret.encode(), digestmod=hashlib.sha1)
            for part in (nonce, username, password):
                mac.update(part.encode() + b"\x00")
            mac.update(b"admin" if admin else b"notadmin")
            body: dict[str, Any] = {
                "nonce": nonce,
                "username": username,
                "password": password,
                "admin": admin,
                "mac": mac.hexdigest(),
            }
            if displayname is not None:
                body["displayname"] = displayname
            async with http.post(endpoint, json=body) as resp:
                if resp.status == 400:
                    data = await resp.json(content_type=None)
                    if isinstance(data, dict) and data.get("errcode") == "M_USER_IN_USE":
                        return self.mxid(username)
                data = await self._json(resp, f"register {username!r}")
                return str(data["user_id"])

    @staticmethod
    async def _json(resp: aiohttp.ClientResponse, doing: str) -> dict[str, Any]:
        text = await resp.text()
        if resp.status != 200:
            raise LocalSynapseError(f"could not {doing}: HTTP {resp.status} {text[:500]}")
        return dict(json.loads(text))

    async def __aenter__(self) -> LocalSynapse:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def synapse_for_hub(
    hub_config: HubConfig,
    registration: Path,
    data_dir: Path,
    python: Path,
    shared_secret: str,
    for_tests: bool = False,
) -> LocalSynapse:
    """The homeserver a hub config points at (its domain and port), with its registration."""
    port = urlsplit(str(hub_config.homeserver.url)).port or 8008
    return LocalSynapse(
        SynapseConfig(
            data_dir=data_dir,
            server_name=hub_config.homeserver.domain,
            port=port,
            registration_files=[registration],
            registration_shared_secret=shared_secret,
            for_tests=for_tests,
        ),
        python,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hub.devserver.synapse", description="Manage the local dev Synapse."
    )
    parser.add_argument(
        "--ensure-installed",
        action="store_true",
        help="create the Synapse virtualenv if missing and print its python",
    )
    parser.add_argument(
        "--venv", type=Path, default=None, help=f"default: {default_venv_dir()} ($HUB_SYNAPSE_VENV)"
    )
    parser.add_argument("--version", default=DEFAULT_SYNAPSE_VERSION)
    args = parser.parse_args(argv)
    if not args.ensure_installed:
        parser.print_help()
        return 2
    try:
        python = asyncio.run(ensure_synapse_installed(args.venv, args.version))
    except LocalSynapseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
