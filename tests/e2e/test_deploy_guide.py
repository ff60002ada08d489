"""docs/deploy.md, followed on this machine as far as loopback allows.

How the guide's commands are taken (its fenced blocks with `test-deploy id=NAME` in the
info string; tests/unit/test_deploy_doc.py checks the rest of the guide against the code):

- `yaml test-deploy id=config`, the guide's "change these keys first": merged here into
  config.example.yaml, then pointed at this machine: `data_dir`, `homeserver.url`,
  `http.port`, `http.public_url` (the nginx under test), `http.appservice_url` (nginx's
  loopback listener for the homeserver), the messenger stand-ins of tests/standins and a
  dashboard admin (its hash made by the guide's `hub dashboard hash-password`, with --stdin).
- `sh test-deploy id=NAME`: run with `bash -euo pipefail` exactly as written, except:
  * the guide's variables HUB_CONFIG, HUB_REGISTRATION, HUB_DATA, HUB_BACKUP (and BACKUP,
    the dump a restore reads) point into a temporary directory;
  * `hub` on PATH is this virtualenv's (the guide links /opt/hub/venv/bin/hub into
    /usr/local/bin);
  * `runuser -u USER -- CMD` runs CMD as the current user (a shell function): the test
    creates no accounts;
  * `127.0.0.1:29330`, the hub's port in the guide, becomes the test hub's address;
  * PostgreSQL blocks get PGHOST, PGPORT and PGUSER of the session's throwaway server
    (`pg_server`, tests/pg.py: its superuser is named `hub`, like the guide's role) and its
    programs on PATH.
- The hub runs as contrib/hub.service's ExecStart, in its WorkingDirectory, with its UMask,
  NoNewPrivileges and, where the kernel has PR_SET_MDWE (Linux 6.3+), the kernel's
  memory-deny-write-execute: what the unit's MemoryDenyWriteExecute=yes demands.
- nginx runs contrib/nginx/hub.conf and Caddy contrib/Caddyfile, each rewritten only for
  ports, certificate paths, IPv6 listeners and (Caddy) global options such as its storage;
  TLS with a self-signed pair made with the `cryptography` package of Synapse's virtualenv
  (the hub's has none). Both are Debian 12 packages (caddy 2.6 is in bookworm's main);
  scripts/_system_packages.sh installs them as root. Not root and not installed: that
  proxy's tests skip.

The shipped proxy files themselves pass `nginx -t` (certificate paths replaced) and `caddy
validate`, the units `systemd-analyze verify`.

Not followed here: apt-get, accounts, file ownership, systemctl, certbot and Synapse's own
files (no root, no internet, no systemd as PID 1): a real Synapse on loopback gets the
generated registration instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import ssl
import stat
import subprocess
import sys
import tarfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.abc import AbstractResolver, ResolveResult

from hub.config import load_config
from hub.devserver.synapse import (
    LocalSynapse,
    ensure_synapse_installed,
    free_port,
    make_self_signed,
    synapse_for_hub,
)
from tests.e2e.helpers import REPO, Visitor, tiny_png
from tests.pg import PostgresServer
from tests.standins.telegram import TelegramStandin
from tests.standins.whatsapp import WhatsappStandin
from tests.unit.test_deploy_doc import guide_blocks, marked_block, merge

pytestmark = pytest.mark.e2e

PUBLIC_HOST = "hub.shop.example"  # the guide's http.public_url host
GUIDE_HUB_ADDRESS = "127.0.0.1:29330"
ADMIN, ADMIN_PASSWORD = "chefin", "dashboard-" + secrets.token_hex(8)
# Every block the guide marks for this test, and where it runs.
RUN_BLOCKS = {
    "config": "deployment fixture (applied)",
    "registration": "deployment fixture",
    "check-config": "deployment fixture",
    "health": "test_monitoring_on_loopback",
    "telegram": "test_telegram_webhook",
    "backup-sqlite": "test_sqlite_backup",
    "backup-postgresql": "test_postgresql_backup_and_restore",
    "restore-postgresql": "test_postgresql_backup_and_restore",
}
PROXIES = ["nginx", "caddy"]
PROXY_BINARIES = {"nginx": "/usr/sbin/nginx", "caddy": "/usr/bin/caddy"}

# The shell the guide's blocks run in: `runuser -u USER -- CMD` runs CMD as we are.
PRELUDE = """\
runuser() {
    if [ "$#" -lt 4 ] || [ "$1" != -u ] || [ "$3" != -- ]; then
        echo "runuser: the test knows only 'runuser -u USER -- CMD...'" >&2
        return 2
    fi
    shift 3
    "$@"
}
set -euo pipefail
"""

# -- the guide's pieces ------------------------------------------------------------------------


def unit_setting(unit: str, key: str) -> str:
    """The value of `key=` in a contrib unit (exactly one such line)."""
    values = [
        line.split("=", 1)[1]
        for line in (REPO / "contrib" / unit).read_text().splitlines()
        if line.startswith(f"{key}=")
    ]
    assert len(values) == 1, f"contrib/{unit}: {key}= {values}"
    return values[0]


def replaced(text: str, old: str, new: str, count: int = 1) -> str:
    """text with old replaced; the contrib file must contain it exactly `count` times, so a
    change there fails here instead of testing something else."""
    assert text.count(old) == count, f"expected {count} x {old!r} in the contrib file"
    return text.replace(old, new)


def hub_command() -> list[str]:
    """The venv's `hub` (what /opt/hub/venv/bin/hub is in the guide)."""
    script = Path(sys.executable).parent / "hub"
    return [str(script)] if script.exists() else [sys.executable, "-m", "hub"]


@dataclass
class Paths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "etc" / "hub" / "config.yaml"

    @property
    def registration(self) -> Path:
        return self.root / "etc" / "hub" / "registration.yaml"

    @property
    def data(self) -> Path:
        return self.root / "var" / "lib" / "hub"

    @property
    def backup(self) -> Path:
        return self.root / "var" / "backups" / "hub"

    @property
    def bin(self) -> Path:
        return self.root / "usr" / "local" / "bin"

    def make(self) -> None:
        """What the guide's install block makes (folders, `hub` on PATH)."""
        for d in (self.config.parent, self.data / "media", self.backup, self.bin):
            d.mkdir(parents=True, exist_ok=True)
        launcher = self.bin / "hub"
        launcher.write_text("#!/bin/sh\nexec " + " ".join(hub_command()) + ' "$@"\n')
        launcher.chmod(0o755)


async def run_block(
    block_id: str, paths: Paths, hub_address: str, extra_env: dict[str, str] | None = None
) -> str:
    """Run the guide's block as the guide says (see the module docstring); its stdout.
    A child process of our event loop: the stand-ins it may call answer meanwhile."""
    text = marked_block(block_id).text.replace(GUIDE_HUB_ADDRESS, hub_address)
    env = {
        **os.environ,
        "HUB_CONFIG": str(paths.config),
        "HUB_REGISTRATION": str(paths.registration),
        "HUB_DATA": str(paths.data),
        "HUB_BACKUP": str(paths.backup),
        **(extra_env or {}),
    }
    env["PATH"] = f"{paths.bin}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        PRELUDE + text,
        env=env,
        cwd=paths.root,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, (
        f"docs/deploy.md block {block_id!r} failed ({proc.returncode}):\n{text}\n"
        f"--- stdout\n{out.decode()}\n--- stderr\n{err.decode()}"
    )
    return out.decode()


# -- the sandbox of the unit -------------------------------------------------------------------

PR_SET_NO_NEW_PRIVS = 38
PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1

MDWE_PROBE = f"""
import ctypes, mmap, sys
if ctypes.CDLL(None, use_errno=True).prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0):
    sys.exit(3)  # the kernel has no MDWE
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except PermissionError:
    sys.exit(0)  # refused, as it must be
sys.exit(4)
"""


def kernel_mdwe() -> bool:
    """Whether this kernel refuses writable executable memory after PR_SET_MDWE."""
    code = subprocess.run([sys.executable, "-c", MDWE_PROBE], check=False).returncode
    assert code in (0, 3), f"PR_SET_MDWE did not refuse a W+X mapping (exit {code})"
    return code == 0


def unit_sandbox(umask: int, mdwe: bool) -> Callable[[], None]:
    """What the unit's UMask, NoNewPrivileges and MemoryDenyWriteExecute do, for the child
    between fork and exec (libc looked up before the fork)."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def apply() -> None:
        os.umask(umask)
        if prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError("PR_SET_NO_NEW_PRIVS failed")
        if mdwe and prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
            raise OSError("PR_SET_MDWE failed")

    return apply


@dataclass
class ServiceProcess:
    """`hub run` as contrib/hub.service starts it."""

    argv: list[str]
    cwd: Path
    log_path: Path
    url: str
    sandbox: Callable[[], None]
    proc: subprocess.Popen[bytes] | None = None

    async def start(self, timeout: float = 45) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(  # noqa: ASYNC220 - Popen for its synchronous wait
                self.argv,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=self.sandbox,
            )
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"hub exited with {self.proc.returncode}: {self.tail()}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{self.url}/healthz") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"hub did not come up: {self.tail()}")

    async def stop(self, timeout: float = 30) -> tuple[float, int | None]:
        """SIGTERM as systemd sends it; (seconds until it exited, exit code); SIGKILL after
        `timeout` like TimeoutStopSec (exit code None then)."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0, self.proc.returncode if self.proc else 0
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                return time.monotonic() - started, self.proc.returncode
            await asyncio.sleep(0.05)
        self.proc.kill()
        self.proc.wait()
        return time.monotonic() - started, None

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


# -- the proxies -------------------------------------------------------------------------------


@dataclass
class Proxy:
    name: str
    https_port: int
    http_port: int
    appservice_port: int
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def public_url(self) -> str:
        return f"https://{PUBLIC_HOST}:{self.https_port}"

    @property
    def appservice_url(self) -> str:
        return f"http://127.0.0.1:{self.appservice_port}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-3000:]


def proxy_unavailable(name: str) -> str | None:
    """Why this proxy cannot be tested here, or None. As root (CI) a missing package is a
    failure: scripts/_system_packages.sh installs it."""
    if os.access(PROXY_BINARIES[name], os.X_OK):
        return None
    package = "nginx" if name == "nginx" else "caddy"
    if os.geteuid() == 0:
        pytest.fail(f"{PROXY_BINARIES[name]} missing: scripts/test.sh installs {package}")
    return (
        f"{PROXY_BINARIES[name]} not installed (apt-get install {package}; as root the suite does)"
    )


def nginx_site(hub_port: int, proxy: Proxy, cert: Path, key: Path, www: Path) -> str:
    """contrib/nginx/hub.conf for this machine: ports, certificate paths, no IPv6."""
    text = (REPO / "contrib" / "nginx" / "hub.conf").read_text()
    text = replaced(text, "    listen [::]:80;\n", "")
    text = replaced(text, "    listen [::]:443 ssl http2;\n", "")
    text = replaced(text, "listen 80;", f"listen 127.0.0.1:{proxy.http_port};")
    text = replaced(
        text, "listen 443 ssl http2;", f"listen 127.0.0.1:{proxy.https_port} ssl http2;"
    )
    text = replaced(text, "listen 127.0.0.1:29340;", f"listen 127.0.0.1:{proxy.appservice_port};")
    text = replaced(text, "/etc/letsencrypt/live/hub.shop.example/fullchain.pem", str(cert))
    text = replaced(text, "/etc/letsencrypt/live/hub.shop.example/privkey.pem", str(key))
    text = replaced(text, "root /var/www/html;", f"root {www};")
    return replaced(text, "server 127.0.0.1:29330;", f"server 127.0.0.1:{hub_port};")


def nginx_second_process(site: str, hub_port: int, second_port: int) -> str:
    """The guide's edit for a second process: a line under the first in `upstream hub`."""
    first = f"    server 127.0.0.1:{hub_port};\n"
    return replaced(site, first, first + f"    server 127.0.0.1:{second_port};\n")


def caddyfile(hub_ports: list[int], proxy: Proxy, cert: Path, key: Path, data: Path) -> str:
    """contrib/Caddyfile for this machine: ports (on loopback), the certificate, storage; no
    admin API."""
    text = (REPO / "contrib" / "Caddyfile").read_text()
    text = replaced(
        text,
        f"{PUBLIC_HOST} {{\n",
        f"{PUBLIC_HOST}:{proxy.https_port} {{\n\ttls {cert} {key}\n",
    )
    text = replaced(text, "http://:29340 {", f"http://:{proxy.appservice_port} {{")
    upstreams = " ".join(f"127.0.0.1:{p}" for p in hub_ports)
    text = replaced(text, "reverse_proxy 127.0.0.1:29330 {", f"reverse_proxy {upstreams} {{", 2)
    options = (
        "{\n\tadmin off\n\tdefault_bind 127.0.0.1\n"
        f"\thttp_port {proxy.http_port}\n\thttps_port {proxy.https_port}\n"
        f"\tstorage file_system {data}\n\tskip_install_trust\n}}\n\n"
    )
    return options + text


async def started(proxy: Proxy) -> Proxy:
    """The proxy once it listens (its log in the error when it died)."""
    assert proxy.proc is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proxy.proc.poll() is not None:
            raise RuntimeError(
                f"{proxy.name} exited with {proxy.proc.returncode}: {proxy.log_tail()}"
            )
        with contextlib.suppress(OSError):
            _reader, writer = await asyncio.open_connection("127.0.0.1", proxy.https_port)
            writer.close()
            return proxy
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{proxy.name} does not listen on {proxy.https_port}: {proxy.log_tail()}")


def launch_nginx(root: Path, site: str, proxy: Proxy) -> Proxy:
    proxy.log_path = root / "error.log"
    argv = nginx_test(root, site)
    proxy.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proxy


def nginx_test(root: Path, site: str) -> list[str]:
    """`nginx -t` of the site inside a main config of ours (temp files in root, as root the
    workers run as root: they read our 0700 temp dirs); the command line that runs it."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "hub.conf").write_text(site)
    user = "user root;\n" if os.geteuid() == 0 else ""
    (root / "nginx.conf").write_text(
        f"{user}worker_processes 1;\nevents {{ worker_connections 256; }}\n"
        "http {\n"
        f"    access_log {root}/access.log;\n"
        + "".join(
            f"    {kind}_temp_path {root}/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        + f"    include {root}/hub.conf;\n}}\n"
    )
    log = root / "error.log"
    argv = [
        PROXY_BINARIES["nginx"],
        *("-e", str(log), "-p", str(root), "-c", str(root / "nginx.conf")),
        *("-g", f"daemon off; pid {root}/nginx.pid; error_log {log};"),
    ]
    check = subprocess.run([*argv, "-t"], capture_output=True, text=True, check=False)
    assert check.returncode == 0 and "test is successful" in check.stderr, check.stderr
    return argv


def launch_caddy(root: Path, config: str, proxy: Proxy) -> Proxy:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "Caddyfile"
    path.write_text(config)
    env = {
        **os.environ,
        "HOME": str(root),
        "XDG_DATA_HOME": str(root / "data"),
        "XDG_CONFIG_HOME": str(root / "config"),
    }
    caddy_validate(path, env)
    proxy.log_path = root / "caddy.log"
    with proxy.log_path.open("wb") as log:
        proxy.proc = subprocess.Popen(
            [PROXY_BINARIES["caddy"], "run", "--config", str(path), "--adapter", "caddyfile"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    return proxy


def caddy_validate(path: Path, env: dict[str, str]) -> None:
    argv = [PROXY_BINARIES["caddy"], "validate", "--config", str(path), "--adapter", "caddyfile"]
    check = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)
    output = check.stdout + check.stderr
    assert check.returncode == 0 and "Valid configuration" in output, output


class PinnedResolver(AbstractResolver):
    """PUBLIC_HOST is 127.0.0.1 (no DNS here); the name still goes into SNI and Host."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        assert host == PUBLIC_HOST, host
        return [
            {
                "hostname": host,
                "host": "127.0.0.1",
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        pass


# -- the deployment ----------------------------------------------------------------------------


@dataclass
class Deployment:
    paths: Paths
    hub: ServiceProcess
    hub_port: int
    synapse: LocalSynapse
    proxies: dict[str, Proxy]
    skipped: dict[str, str]
    cert: Path
    key: Path
    whatsapp: WhatsappStandin
    telegram: TelegramStandin
    outputs: dict[str, str] = field(default_factory=dict)
    mdwe: bool = False

    @property
    def hub_address(self) -> str:
        return f"127.0.0.1:{self.hub_port}"

    def proxy(self, name: str) -> Proxy:
        if name in self.skipped:
            pytest.skip(self.skipped[name])
        return self.proxies[name]

    def client(self) -> aiohttp.ClientSession:
        """A browser's view: PUBLIC_HOST resolves to loopback, our certificate is trusted."""
        context = ssl.create_default_context(cafile=str(self.cert))
        connector = aiohttp.TCPConnector(resolver=PinnedResolver(), ssl=context)
        return aiohttp.ClientSession(connector=connector)

    @property
    def config(self) -> dict[str, Any]:
        return dict(yaml.safe_load(self.paths.config.read_text()))


def machine_config(
    paths: Paths,
    hub_port: int,
    hs_port: int,
    public_url: str,
    appservice_url: str,
    whatsapp: WhatsappStandin,
    telegram: TelegramStandin,
    password_hash: str,
) -> dict[str, Any]:
    """config.example.yaml with the guide's edits, then this machine's ports and paths."""
    example = yaml.safe_load((REPO / "config.example.yaml").read_text())
    config = merge(example, yaml.safe_load(marked_block("config").text))
    assert config["http"]["port"] == 29330 and config["data_dir"] == "/var/lib/hub"
    config["data_dir"] = str(paths.data)
    config["homeserver"]["url"] = f"http://127.0.0.1:{hs_port}"
    config["http"]["port"] = hub_port
    config["http"]["public_url"] = public_url
    config["http"]["appservice_url"] = appservice_url
    config["channels"]["whatsapp"] = whatsapp.hub_config() | {"templates": []}
    config["channels"]["telegram"] = telegram.hub_config() | {"set_webhook_on_start": False}
    config["dashboard"]["admins"] = [{"username": ADMIN, "password_hash": password_hash}]
    return dict(config)


def migrate(config: Path, mdwe: bool) -> None:
    """`hub migrate -c CONFIG` in the unit's sandbox (asyncpg under MDWE too)."""
    umask = int(unit_setting("hub.service", "UMask"), 8)
    done = subprocess.run(
        [*hub_command(), "migrate", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=unit_sandbox(umask, mdwe),
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def hash_password(password: str) -> str:
    """The guide's `hub dashboard hash-password`, fed on stdin."""
    done = subprocess.run(
        [*hub_command(), "dashboard", "hash-password", "--stdin"],
        input=password + "\n",
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip()


async def make_certificate(python: Path, directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "fullchain.pem", directory / "privkey.pem"
    await asyncio.to_thread(make_self_signed, python, cert, key, PUBLIC_HOST)
    return cert, key


@pytest.fixture(scope="module")
async def deployment(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Deployment]:
    paths = Paths(tmp_path_factory.mktemp("deploy"))
    paths.make()
    skipped = {name: why for name in PROXIES if (why := proxy_unavailable(name))}
    hub_port, hs_port = free_port(), free_port()
    proxies = {
        name: Proxy(name, free_port(), free_port(), free_port())
        for name in PROXIES
        if name not in skipped
    }
    # The hub's public address and the homeserver's way to it: nginx's when there is one.
    front = proxies.get("nginx") or next(iter(proxies.values()), None)
    public_url = front.public_url if front else f"https://{PUBLIC_HOST}"
    appservice_url = front.appservice_url if front else f"http://127.0.0.1:{hub_port}"

    whatsapp, telegram = WhatsappStandin(), TelegramStandin()
    await whatsapp.start()
    await telegram.start()
    synapse: LocalSynapse | None = None
    synapse_started: asyncio.Future[None] | None = None
    hub: ServiceProcess | None = None
    try:
        config = machine_config(
            paths,
            hub_port,
            hs_port,
            public_url,
            appservice_url,
            whatsapp,
            telegram,
            hash_password(ADMIN_PASSWORD),
        )
        paths.config.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
        outputs = {}
        outputs["registration"] = await run_block("registration", paths, f"127.0.0.1:{hub_port}")
        outputs["check-config"] = await run_block("check-config", paths, f"127.0.0.1:{hub_port}")

        python = await ensure_synapse_installed()
        synapse = synapse_for_hub(
            load_config(paths.config),
            paths.registration,
            paths.root / "synapse",
            python,
            secrets.token_hex(16),
            for_tests=True,
        )
        synapse_started = asyncio.ensure_future(synapse.start())
        cert, key = await make_certificate(python, paths.root)
        www = paths.root / "www"
        www.mkdir()

        async def start_proxy(proxy: Proxy) -> None:
            if proxy.name == "nginx":
                site = nginx_site(hub_port, proxy, cert, key, www)
                await started(launch_nginx(paths.root / "nginx", site, proxy))
            else:
                config_text = caddyfile([hub_port], proxy, cert, key, paths.root / "caddy-data")
                await started(launch_caddy(paths.root / "caddy", config_text, proxy))

        # The homeserver reaches the hub through `front`: up before the hub's start-up ping.
        if front is not None:
            await start_proxy(front)
        await synapse_started
        for adviser in config["shop"]["advisers"]:
            await synapse.register_user(adviser[1:].split(":")[0], secrets.token_hex(8))

        exec_start = unit_setting("hub.service", "ExecStart").split()
        assert exec_start[:4] == ["/opt/hub/venv/bin/hub", "run", "-c", "/etc/hub/config.yaml"]
        mdwe = unit_setting("hub.service", "MemoryDenyWriteExecute") == "yes" and kernel_mdwe()
        umask = int(unit_setting("hub.service", "UMask"), 8)
        assert unit_setting("hub.service", "WorkingDirectory") == "/var/lib/hub"
        hub = ServiceProcess(
            [*hub_command(), "run", "-c", str(paths.config)],
            cwd=paths.data,
            log_path=paths.root / "hub.log",
            url=f"http://127.0.0.1:{hub_port}",
            sandbox=unit_sandbox(umask, mdwe),
        )
        await hub.start()
        # The others once the hub is up (Caddy's health checks find it at once).
        for proxy in proxies.values():
            if proxy is not front:
                await start_proxy(proxy)
        yield Deployment(
            paths,
            hub,
            hub_port,
            synapse,
            proxies,
            skipped,
            cert,
            key,
            whatsapp,
            telegram,
            outputs,
            mdwe,
        )
    finally:
        if hub is not None:
            await hub.stop()
        for proxy in proxies.values():
            proxy.stop()
        if synapse_started is not None and not synapse_started.done():
            synapse_started.cancel()
            with contextlib.suppress(BaseException):
                await synapse_started
        if synapse is not None:
            await synapse.stop()
        await whatsapp.stop()
        await telegram.stop()


# -- the guide itself --------------------------------------------------------------------------


def test_every_marked_block_is_followed() -> None:
    marked = {b.id for b in guide_blocks() if b.id is not None}
    assert marked == set(RUN_BLOCKS), (
        f"docs/deploy.md marks {sorted(marked)}; this test runs {sorted(RUN_BLOCKS)}"
    )


def test_the_units_verify() -> None:
    """`systemd-analyze verify` of both units, with the hub's real path in ExecStart (it
    checks that the program exists); any warning fails."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (Debian package systemd)")
    hub = Path(hub_command()[0]) if len(hub_command()) == 1 else None
    if hub is None:
        pytest.skip("no hub console script in this virtualenv")
    with tempfile_dir() as tmp:
        units = []
        for name, unit in (("hub.service", "hub.service"), ("hub@.service", "hub@1.service")):
            text = (REPO / "contrib" / name).read_text()
            (tmp / name).write_text(replaced(text, "/opt/hub/venv/bin/hub", str(hub)))
            units.append(str(tmp / unit))
        done = subprocess.run(
            [analyze, "verify", *units], capture_output=True, text=True, cwd=tmp, check=False
        )
    output = "\n".join(
        line
        for line in (done.stdout + done.stderr).splitlines()
        # The template's EnvironmentFile (/etc/hub/hub@1.env) exists only on a server.
        if "hub@1.env" not in line
    ).strip()
    assert done.returncode == 0 and not output, output


async def test_the_proxy_files_as_shipped(deployment: Deployment, tmp_path: Path) -> None:
    """contrib/nginx/hub.conf with nothing but its certificate paths changed passes `nginx
    -t` (IPv6 listeners and ports 80 and 443 included: -t binds nothing), and
    contrib/Caddyfile as it is passes `caddy validate` (no certificate is fetched)."""
    if "nginx" not in deployment.skipped:
        site = (REPO / "contrib" / "nginx" / "hub.conf").read_text()
        site = replaced(
            site, "/etc/letsencrypt/live/hub.shop.example/fullchain.pem", str(deployment.cert)
        )
        site = replaced(
            site, "/etc/letsencrypt/live/hub.shop.example/privkey.pem", str(deployment.key)
        )
        nginx_test(tmp_path / "nginx", site)
    if "caddy" not in deployment.skipped:
        env = {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data")}
        env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
        caddy_validate(REPO / "contrib" / "Caddyfile", env)


@contextlib.contextmanager
def tempfile_dir() -> Any:
    import tempfile

    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


async def test_registration_and_check_config(deployment: Deployment) -> None:
    registration = yaml.safe_load(deployment.paths.registration.read_text())
    config = deployment.config
    assert registration["url"] == config["http"]["appservice_url"]
    assert registration["as_token"] == config["appservice"]["as_token"] != "CHANGE_ME"
    # `umask 027` of the guide: the tokens are not for other users.
    assert stat.S_IMODE(deployment.paths.registration.stat().st_mode) == 0o640
    out = deployment.outputs["check-config"]
    assert f"{deployment.paths.config}: OK" in out and "database sqlite+aiosqlite" in out


async def test_the_hub_runs_as_the_unit_says(deployment: Deployment) -> None:
    """ExecStart's command in WorkingDirectory, with UMask and NoNewPrivileges (MDWE leaves
    no trace in /proc: kernel_mdwe() checked that it refuses W+X memory)."""
    assert deployment.hub.proc is not None
    status, cwd = process_status(deployment.hub.proc.pid)
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.MULTILINE)
    umask = unit_setting("hub.service", "UMask")
    assert re.search(rf"^Umask:\s+{umask}$", status, re.MULTILINE), umask
    assert cwd == deployment.paths.data.resolve()
    assert unit_setting("hub.service", "MemoryDenyWriteExecute") == "yes"
    if not deployment.mdwe:
        pytest.skip("this kernel has no PR_SET_MDWE: the hub ran without it")


async def test_monitoring_on_loopback(deployment: Deployment) -> None:
    out = await run_block("health", deployment.paths, deployment.hub_address)
    assert '"status": "ok"' in out
    assert re.search(r"^hub_job_queue_up 1(\.0)?$", out, re.MULTILINE), out


@pytest.mark.parametrize("name", PROXIES)
async def test_health_and_what_is_not_public(deployment: Deployment, name: str) -> None:
    proxy = deployment.proxy(name)
    async with deployment.client() as http:
        async with http.get(f"{proxy.public_url}/healthz") as resp:
            assert resp.status == 200 and (await resp.json()) == {"status": "ok"}
            assert "max-age" in resp.headers.get("Strict-Transport-Security", "")
        async with http.get(f"{proxy.public_url}/readyz") as resp:
            assert resp.status == 200, await resp.text()
        # Refused by the proxy itself: the hub marks every answer of its own with nosniff.
        for path in ("/metrics", "/", "/_matrix/app/v1/ping", "/transactions/1", "/users/x"):
            async with http.get(f"{proxy.public_url}{path}") as resp:
                assert resp.status == 404, (path, resp.status)
                assert "X-Content-Type-Options" not in resp.headers, path
        # Plain http only redirects to https.
        async with http.get(
            f"http://127.0.0.1:{proxy.http_port}/healthz",
            headers={"Host": PUBLIC_HOST},
            allow_redirects=False,
        ) as resp:
            assert resp.status in (301, 308)
            assert resp.headers["Location"].startswith(f"https://{PUBLIC_HOST}")
    # And the hub itself refuses /metrics to anyone who came through a proxy.
    async with aiohttp.ClientSession() as http:
        forwarded = {"X-Forwarded-For": "203.0.113.9"}
        async with http.get(f"{deployment.hub.url}/metrics", headers=forwarded) as resp:
            assert resp.status == 403


@pytest.mark.parametrize("name", PROXIES)
async def test_appservice_listener(deployment: Deployment, name: str) -> None:
    proxy = deployment.proxy(name)
    hs_token = deployment.config["appservice"]["hs_token"]
    url = f"{proxy.appservice_url}/_matrix/app/v1/ping"
    async with aiohttp.ClientSession() as http:
        body = {"transaction_id": "deploy-guide"}
        auth = {"Authorization": f"Bearer {hs_token}"}
        async with http.post(url, json=body, headers=auth) as resp:
            assert resp.status == 200, await resp.text()
        async with http.post(url, json=body, headers={"Authorization": "Bearer wrong"}) as resp:
            assert resp.status in (401, 403) and "X-Content-Type-Options" in resp.headers
        async with http.get(f"{proxy.appservice_url}/healthz") as resp:
            assert resp.status == 404
        if proxy.appservice_url != deployment.config["http"]["appservice_url"]:
            return
        # The homeserver's own ping goes through the registration's url: this listener.
        as_token = deployment.config["appservice"]["as_token"]
        ping = f"{deployment.synapse.url}/_matrix/client/v1/appservice/commerce-hub/ping"
        async with http.post(
            ping,
            json={"transaction_id": "via-proxy"},
            headers={"Authorization": f"Bearer {as_token}"},
        ) as resp:
            assert resp.status == 200, await resp.text()
            assert "duration_ms" in await resp.json()


@pytest.mark.parametrize("name", PROXIES)
async def test_widget_through_the_proxy(deployment: Deployment, name: str) -> None:
    proxy = deployment.proxy(name)
    async with deployment.client() as http:
        async with http.get(f"{proxy.public_url}/webchat/widget.js") as resp:
            assert resp.status == 200
            assert "javascript" in resp.headers["Content-Type"]
            assert len(await resp.read()) > 1000
        visitor = Visitor(proxy.public_url, http)
        await visitor.start(name=f"Kundin via {name}")
        await visitor.connect()  # the websocket upgrade through the proxy
        try:
            sent = await visitor.say(f"Hallo über {name}")
            # Pushed over the websocket once the message is in Matrix.
            await visitor.wait_status(sent["id"], "delivered", timeout=30)
            # An upload (the proxy's body limit) and its media link (back through a proxy).
            photo = await visitor.upload(tiny_png(), "foto.png", "image/png")
            async with http.get(photo["media"]["url"], headers=visitor.auth) as resp:
                assert resp.status == 200 and await resp.read() == tiny_png()
        finally:
            await visitor.disconnect()


@pytest.mark.parametrize("name", PROXIES)
async def test_whatsapp_webhook(deployment: Deployment, name: str) -> None:
    proxy = deployment.proxy(name)
    wa = deployment.whatsapp
    url = f"{proxy.public_url}/webhooks/whatsapp"
    async with deployment.client() as http:
        # Meta's check of the callback URL.
        query = {
            "hub.mode": "subscribe",
            "hub.verify_token": wa.verify_token,
            "hub.challenge": "42",
        }
        async with http.get(url, params=query) as resp:
            assert resp.status == 200 and await resp.text() == "42"
        payload, _wamid = wa.text_webhook("4915112345678", "Kunde", f"Hallo per {name}")
        raw = json.dumps(payload, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": wa.sign(raw)}
        async with http.post(url, data=raw, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
        headers["X-Hub-Signature-256"] = "sha256=" + "0" * 64
        async with http.post(url, data=raw, headers=headers) as resp:
            assert resp.status == 403


async def test_telegram_webhook(deployment: Deployment) -> None:
    out = await run_block("telegram", deployment.paths, deployment.hub_address)
    tg = deployment.telegram
    public_url = deployment.config["http"]["public_url"]
    assert tg.webhook is not None and tg.webhook["url"] == f"{public_url}/webhooks/telegram"
    assert f"{public_url}/webhooks/telegram" in out
    if not deployment.proxies:
        return  # no proxy here to carry Telegram's delivery
    update = tg.text_update(4242, "Hallo per Telegram")
    headers = {"X-Telegram-Bot-Api-Secret-Token": tg.webhook["secret_token"]}
    async with (
        deployment.client() as http,
        http.post(tg.webhook["url"], json=update, headers=headers) as resp,
    ):
        assert resp.status == 200, await resp.text()


@pytest.mark.parametrize("name", PROXIES)
async def test_checkout_links_and_payment_webhooks_reach_the_hub(
    deployment: Deployment, name: str
) -> None:
    proxy = deployment.proxy(name)
    async with deployment.client() as http:
        for method, path in (
            ("GET", "/checkout/hub-0123456789abcdef0123"),
            ("GET", "/l/abcdef123"),
            ("POST", "/webhooks/payments/stripe"),
        ):
            async with http.request(method, f"{proxy.public_url}{path}") as resp:
                # The hub's own answer (no such order, link or provider), not the proxy's.
                assert "X-Content-Type-Options" in resp.headers, (path, resp.status)
                assert resp.status in (400, 401, 403, 404), (path, resp.status)


@pytest.mark.parametrize("name", PROXIES)
async def test_dashboard_login(deployment: Deployment, name: str) -> None:
    proxy = deployment.proxy(name)
    async with deployment.client() as http:
        async with http.get(f"{proxy.public_url}/dashboard", allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"] == "/dashboard/login"
        async with http.get(f"{proxy.public_url}/dashboard/login") as resp:
            assert resp.status == 200 and resp.content_type == "text/html"
            page = await resp.text()
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        assert csrf, page[:2000]
        form = {"username": ADMIN, "password": ADMIN_PASSWORD, "csrf": csrf.group(1)}
        async with http.post(f"{proxy.public_url}/dashboard/login", data=form) as resp:
            # The __Host- session cookie (secure_cookies: true) came back over TLS.
            assert resp.status == 200 and str(resp.url).endswith("/dashboard"), resp.url
            assert "logout" in (await resp.text())


async def test_sqlite_backup(deployment: Deployment) -> None:
    await run_block("backup-sqlite", deployment.paths, deployment.hub_address)
    day = time.strftime("%Y-%m-%d")
    backup = deployment.paths.backup / f"hub-{day}.db"
    with contextlib.closing(sqlite3.connect(backup)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)
        assert db.execute("SELECT count(*) FROM messages").fetchone()[0] > 0
    with tarfile.open(deployment.paths.backup / f"media-{day}.tar.gz") as tar:
        names = tar.getnames()
    assert "media" in names
    if not deployment.skipped.keys() >= set(PROXIES):
        assert any(n.startswith("media/") and n != "media" for n in names), names


async def test_a_newer_schema_is_refused(deployment: Deployment) -> None:
    """Section 10: a hub never runs on a schema newer than its code (going back after an
    upgrade's migration). A copy of the live database with a revision this hub does not
    know, as a newer hub would leave it."""
    copy = deployment.paths.root / "newer" / "hub.db"
    config = deployment.config
    config["data_dir"] = str(copy.parent)
    config_path = copy.parent / "config.yaml"
    done = newer_schema_refused(deployment.paths.data / "hub.db", copy, config, config_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "which this hub does not know" in done.stderr, done.stderr


def newer_schema_refused(
    live: Path, copy: Path, config: dict[str, Any], config_path: Path
) -> subprocess.CompletedProcess[str]:
    copy.parent.mkdir(parents=True)
    with contextlib.closing(sqlite3.connect(live)) as source:
        with contextlib.closing(sqlite3.connect(copy)) as target:
            source.backup(target)
            target.execute("UPDATE alembic_version SET version_num = 'f00dfeedbeef'")
            target.commit()
    config_path.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [*hub_command(), "migrate", "-c", str(config_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.postgres
async def test_postgresql_backup_and_restore(
    deployment: Deployment, pg_server: PostgresServer
) -> None:
    """The guide's pg_dump and pg_restore on the session's PostgreSQL server: a database
    named as in the guide holding the hub's schema (made by `hub migrate`) and a row of
    ours, dumped, dropped, made again and restored."""
    import asyncpg

    async def connect(database: str) -> Any:
        return await asyncpg.connect(
            host="127.0.0.1", port=pg_server.port, user="hub", database=database
        )

    env = {
        "PGHOST": "127.0.0.1",
        "PGPORT": str(pg_server.port),
        "PGUSER": "hub",  # the server's superuser; the guide's role and database name
        "PATH": f"{pg_server.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    admin = await connect("postgres")
    try:
        await admin.execute("CREATE DATABASE hub")
    finally:
        await admin.close()
    try:
        config = deployment.config
        config["database"]["url"] = pg_server.url("hub")
        pg_config = deployment.paths.root / "config-postgresql.yaml"
        pg_config.write_text(yaml.safe_dump(config))
        migrate(pg_config, deployment.mdwe)

        async def marker(value: str | None = None) -> tuple[Any, Any]:
            conn = await connect("hub")
            try:
                if value is not None:
                    await conn.execute(
                        "INSERT INTO hub_state (key, value, updated_at) "
                        "VALUES ('deploy-guide', to_json($1::text), now())",
                        value,
                    )
                return (
                    await conn.fetchval(
                        "SELECT value::text FROM hub_state WHERE key = 'deploy-guide'"
                    ),
                    await conn.fetchval("SELECT version_num FROM alembic_version"),
                )
            finally:
                await conn.close()

        before = await marker("before the backup")
        await run_block("backup-postgresql", deployment.paths, deployment.hub_address, env)
        dump = deployment.paths.backup / f"hub-{time.strftime('%Y-%m-%d')}.dump"
        assert dump.read_bytes()[:5] == b"PGDMP"  # the custom format
        env["BACKUP"] = str(dump)
        await run_block("restore-postgresql", deployment.paths, deployment.hub_address, env)
        assert await marker() == before
    finally:
        await pg_server.drop_database("hub")


@pytest.mark.parametrize("name", PROXIES)
async def test_a_second_process_that_is_down_is_skipped(
    deployment: Deployment, name: str, tmp_path: Path
) -> None:
    """The guide's edit for a second process (another upstream), with that process down:
    webhooks and pages still reach the first."""
    deployment.proxy(name)
    down = free_port()
    cert, key = deployment.cert, deployment.key
    proxy = Proxy(name, free_port(), free_port(), free_port())
    if name == "nginx":
        site = nginx_site(deployment.hub_port, proxy, cert, key, tmp_path)
        site = nginx_second_process(site, deployment.hub_port, down)
        await started(launch_nginx(tmp_path / "nginx", site, proxy))
    else:
        text = caddyfile([deployment.hub_port, down], proxy, cert, key, tmp_path / "data")
        await started(launch_caddy(tmp_path / "caddy", text, proxy))
    try:
        wa = deployment.whatsapp
        async with deployment.client() as http:
            for n in range(6):
                async with http.get(f"{proxy.public_url}/healthz") as resp:
                    assert resp.status == 200, proxy.log_tail()
                payload, _ = wa.text_webhook("4915187654321", "Zweite", f"Nachricht {n}")
                raw = json.dumps(payload, separators=(",", ":")).encode()
                headers = {"Content-Type": "application/json", "X-Hub-Signature-256": wa.sign(raw)}
                async with http.post(
                    f"{proxy.public_url}/webhooks/whatsapp", data=raw, headers=headers
                ) as resp:
                    assert resp.status == 200, proxy.log_tail()
    finally:
        proxy.stop()


def process_status(pid: int) -> tuple[str, Path]:
    """/proc/PID/status and the process's working directory."""
    return Path(f"/proc/{pid}/status").read_text(), Path(f"/proc/{pid}/cwd").resolve()


def timeout_stop_sec() -> float:
    return float(unit_setting("hub.service", "TimeoutStopSec").removesuffix("s"))


async def test_stop_and_start_again(deployment: Deployment) -> None:
    """SIGTERM, as `systemctl stop` sends it: the hub exits cleanly (exit 0, so
    Restart=on-failure leaves it stopped) well within TimeoutStopSec; started again, it
    finds its schema current and is ready."""
    limit = timeout_stop_sec()
    took, code = await deployment.hub.stop(timeout=limit)
    assert code == 0, deployment.hub.tail()
    assert took < limit / 2, f"stopping took {took:.1f} s of TimeoutStopSec={limit:.0f}"
    await deployment.hub.start()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{deployment.hub.url}/readyz") as resp:
            assert resp.status == 200
    assert deployment.hub.tail(400).count("database migrated from") == 1


async def test_stops_quickly_with_a_widget_connected(deployment: Deployment) -> None:
    """Last: a restart must not wait for the visitors' websockets (they reconnect)."""
    async with aiohttp.ClientSession() as http:
        visitor = Visitor(deployment.hub.url, http)
        await visitor.start(name="Bis zum Schluss")
        await visitor.connect()
        try:
            took, code = await deployment.hub.stop(timeout=5)
        finally:
            await visitor.disconnect()
    assert code == 0, f"still running {took:.1f} s after SIGTERM: killed"
    assert "Traceback" not in deployment.hub.tail(200)
