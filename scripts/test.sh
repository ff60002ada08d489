#!/usr/bin/env bash
# Run the test suite: the one command README.md gives. Works on a fresh machine:
# creates .venv, installs the project with its test extras, installs the local Synapse
# (its own virtualenv, cached in ~/.cache) and runs pytest with any arguments given,
# e.g. `bash scripts/test.sh -x -q tests/unit`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
VENV=.venv
export PIP_DISABLE_PIP_VERSION_CHECK=1

say() { printf '==> %s\n' "$*" >&2; }

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || { say "Python 3.11+ needed, $PYTHON is $("$PYTHON" --version 2>&1)"; exit 1; }
    say "creating $VENV"
    # --clear: a half-created .venv (e.g. python3-venv missing last time) is redone.
    "$PYTHON" -m venv --clear "$VENV" \
        || { say "python3 -m venv failed (on Debian: apt-get install python3-venv)"; exit 1; }
fi

# Reinstall only when pyproject.toml changed since the last successful install.
stamp="$VENV/.hub-install-stamp"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    say "installing the project with test extras into $VENV"
    "$VENV/bin/python" -m pip install --quiet -e '.[test]'
    printf '%s\n' "$want" > "$stamp"
fi

# Done here rather than inside pytest, whose output capture would hide the ~1 min install.
say "checking the local Synapse"
"$VENV/bin/python" -m hub.devserver.synapse --ensure-installed > /dev/null

say "running pytest $*"
exec "$VENV/bin/python" -m pytest "$@"
