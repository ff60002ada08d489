#!/usr/bin/env bash
# Run the test suite: the one command README.md gives. Works on a fresh machine:
# installs missing Debian packages (chromium, postgresql) when run as root, creates .venv,
# installs the project with its test extras, installs the local Synapse
# (its own virtualenv, cached in ~/.cache) and runs pytest with any arguments given,
# e.g. `bash scripts/test.sh -x -q tests/unit`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/_venv.sh
. scripts/_system_packages.sh

ensure_system_packages
ensure_venv "[test]"
# Done here rather than inside pytest, whose output capture would hide the ~1 min install.
say "checking the local Synapse"
"$VENV/bin/python" -m hub.devserver.synapse --ensure-installed > /dev/null

say "running pytest $*"
exec "$VENV/bin/python" -m pytest "$@"
