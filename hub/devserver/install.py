"""Installing Synapse into its own virtualenv (cached; Synapse is AGPL and never imported by
the hub: it runs as a separate process). Used by hub.devserver.synapse, `hub demo` and the
test run (`python -m hub.devserver.synapse --ensure-installed`)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

DEFAULT_SYNAPSE_VERSION = "1.163.2"
# Written into the venv after a successful install: a half-finished pip run (killed CI,
# Ctrl-C) can leave `import synapse` working while dependencies are missing.
_INSTALLED_MARKER = ".hub-synapse-installed"


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
