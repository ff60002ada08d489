#!/usr/bin/env bash
# The code checks CI runs beside the tests: ruff (lint and format) and mypy (configured in
# pyproject.toml, strict on the pure modules). Creates .venv with the test extras if needed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/_venv.sh

ensure_venv "[test]"
say "ruff check"
"$VENV/bin/ruff" check hub tests bench
say "ruff format --check"
"$VENV/bin/ruff" format --check hub tests bench
say "mypy"
"$VENV/bin/mypy"
