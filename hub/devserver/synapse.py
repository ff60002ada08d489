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
    files, registration shared secret, ``for_tests``, ``encrypt_new_rooms``,
    ``appservice_encryption``, ``federation``).
``FederationSettings(port, peers, tls_certificate_path=None, tls_private_key_path=None)``
    Optional: a TLS federation listener on 127.0.0.1:port and federation with the peers'
    server names only. The server name must then be "localhost:<port>". Without
    certificate paths a self-signed pair (``tls.crt``, ``tls.key`` in data_dir) is made
    with the ``cryptography`` package of Synapse's own venv on first use.
``LocalSynapse(config, python)``
    ``url``, ``server_name``, ``write_config() -> Path``, ``await start(timeout=60)``,
    ``await stop()``, ``await register_user(username, password, admin=False,
    displayname=None) -> str`` (the MXID; an existing user is not an error),
    ``mxid(localpart) -> str``, ``log_tail(lines=40) -> str``; also an async context manager
    (start on enter, stop on exit).

Files in ``data_dir``: ``homeserver.yaml``, ``log_config.yaml``, ``homeserver.log``
(Synapse's own log, INFO), ``console.log`` (the process's stdout/stderr: startup errors and
tracebacks), ``homeserver.db`` (SQLite), ``media_store/``, ``signing.key``,
``macaroon_secret.key``, ``form_secret.key`` (and ``tls.crt``, ``tls.key`` when it
federates). The signing key is created by Synapse itself
on its first start (its default since 1.67), so ``write_config`` needs no Synapse import.

Command line: ``python -m hub.devserver.synapse --ensure-installed`` installs Synapse (used
by ``scripts/test.sh``) and prints the python path.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import aiohttp
import yaml

from hub.devserver.homeserver_yaml import (
    LOOPBACK,
    FederationSettings,
    SynapseConfig,
    federation_tls_paths,
    homeserver_yaml,
    log_config,
)
from hub.devserver.install import (
    DEFAULT_SYNAPSE_VERSION,
    LocalSynapseError,
    default_venv_dir,
    ensure_synapse_installed,
)

if TYPE_CHECKING:
    from hub.config import Config as HubConfig

__all__ = [
    "DEFAULT_SYNAPSE_VERSION",
    "FederationSettings",
    "LocalSynapse",
    "LocalSynapseError",
    "SynapseConfig",
    "default_venv_dir",
    "ensure_synapse_installed",
    "free_port",
    "persistent_secret",
    "synapse_for_hub",
]


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


# Run by Synapse's python (its venv has `cryptography`; the hub's need not): a self-signed
# certificate for HOST and 127.0.0.1, usable as its own CA (a client told to trust the file
# verifies it: the deployment guide's test behind nginx and Caddy). Federation peers do not
# verify it (federation_verify_certificates: false).
_SELF_SIGNED = """
import datetime, ipaddress, os, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

cert_path, key_path, host = sys.argv[1:4]
key = ec.generate_private_key(ec.SECP256R1())
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
now = datetime.datetime.now(datetime.timezone.utc)
cert = (
    x509.CertificateBuilder()
    .subject_name(name)
    .issuer_name(name)
    .public_key(key.public_key())
    .serial_number(x509.random_serial_number())
    .not_valid_before(now - datetime.timedelta(days=1))
    .not_valid_after(now + datetime.timedelta(days=3650))
    .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    .add_extension(
        x509.SubjectAlternativeName(
            [x509.DNSName(host), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        ),
        critical=False,
    )
    .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    .add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
    )
    .sign(key, hashes.SHA256())
)
fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "wb") as out:
    out.write(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
with open(cert_path, "wb") as out:
    out.write(cert.public_bytes(serialization.Encoding.PEM))
"""


def make_self_signed(python: Path, cert: Path, key: Path, host: str) -> None:
    """A self-signed certificate and its key for `host`, made by `python` (Synapse's)."""
    done = subprocess.run(
        [str(python), "-I", "-c", _SELF_SIGNED, str(cert), str(key), host],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise LocalSynapseError(
            f"could not make a self-signed certificate for {host}: {done.stderr[-2000:]}"
        )


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
        if self.config.federation is not None:
            self._ensure_tls_pair()
        log_config_path = d / "log_config.yaml"
        log_config_path.write_text(
            yaml.safe_dump(log_config(self.log_path, self.config.log_level), sort_keys=False)
        )
        cfg = homeserver_yaml(self.config, self.url, log_config_path)
        self.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return self.config_path

    def _ensure_tls_pair(self) -> None:
        """A self-signed certificate for the federation listener, unless both files exist."""
        cert, key = federation_tls_paths(self.config)
        if cert.exists() and key.exists():
            return
        make_self_signed(self.python, cert, key, self.config.server_name.rsplit(":", 1)[0])

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
        ports = [self.config.port]
        if self.config.federation is not None:
            ports.append(self.config.federation.port)
        for port in ports:
            if not _port_is_free(LOOPBACK, port):
                raise LocalSynapseError(
                    f"port {port} on {LOOPBACK} is already in use: "
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

    async def admin_token(self, username: str = "hubadmin", password: str | None = None) -> str:
        """An access token of a server admin, for the hub's `homeserver.admin_token`.

        The admin is registered on first use and logged in on every call. Without a password
        one is derived from the registration shared secret, so every demo start logs the same
        user in without storing a password anywhere. Each call returns a new token; the
        earlier ones stay valid (one device, so the admin's device list does not grow).
        """
        if password is None:
            password = hmac.new(
                self.config.registration_shared_secret.encode(),
                b"hub admin password\x00" + username.encode(),
                hashlib.sha256,
            ).hexdigest()
        mxid = await self.register_user(username, password, admin=True)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            body = {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": mxid},
                "password": password,
                "device_id": "HUBADMIN",
                "initial_device_display_name": "Matrix Commerce Hub (admin API)",
            }
            async with http.post(f"{self.url}/_matrix/client/v3/login", json=body) as resp:
                if resp.status == 403:
                    # register_user leaves an existing user as it was: a password set
                    # elsewhere is not ours to know.
                    raise LocalSynapseError(
                        f"{mxid} exists with another password: pass its password or choose "
                        "another admin username"
                    )
                token = str((await self._json(resp, f"log {mxid} in"))["access_token"])
            # An existing user that is not an admin would make every admin call fail later
            # with a less obvious error.
            check = f"{self.url}/_synapse/admin/v1/users/{mxid}/admin"
            headers = {"Authorization": f"Bearer {token}"}
            async with http.get(check, headers=headers) as resp:
                if resp.status == 403:
                    raise LocalSynapseError(f"{mxid} exists but is not a server admin")
                await self._json(resp, f"check that {mxid} is an admin")
        return token

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
    *,
    encrypt_new_rooms: Literal["off", "invite", "all"] = "off",
    appservice_encryption: bool | None = None,
    federation: FederationSettings | None = None,
) -> LocalSynapse:
    """The homeserver a hub config points at (its domain and port), with its registration.

    `appservice_encryption` (None: as the hub's `encryption.enabled`) turns on what the
    hub's end-to-bridge encryption needs of Synapse; `encrypt_new_rooms` is Synapse's
    `encryption_enabled_by_default_for_room_type`. `federation`: see FederationSettings
    (the hub's domain is then "localhost:<federation port>")."""
    if appservice_encryption is None:
        appservice_encryption = hub_config.encryption.enabled
    port = urlsplit(str(hub_config.homeserver.url)).port or 8008
    return LocalSynapse(
        SynapseConfig(
            data_dir=data_dir,
            server_name=hub_config.homeserver.domain,
            port=port,
            registration_files=[registration],
            registration_shared_secret=shared_secret,
            for_tests=for_tests,
            encrypt_new_rooms=encrypt_new_rooms,
            appservice_encryption=appservice_encryption,
            federation=federation,
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
