# Sourced by scripts/demo.sh and scripts/test.sh: make .venv with the project installed.
# Works on a fresh machine; reinstalls only when pyproject.toml changed since last time.
PYTHON="${PYTHON:-python3}"
VENV=.venv
export PIP_DISABLE_PIP_VERSION_CHECK=1

say() { printf '==> %s\n' "$*" >&2; }

ensure_venv() {
    local extras="$1"
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
            || { say "Python 3.11+ needed, $PYTHON is $("$PYTHON" --version 2>&1)"; exit 1; }
        say "creating $VENV"
        # --clear: a half-created .venv (e.g. python3-venv missing last time) is redone.
        "$PYTHON" -m venv --clear "$VENV" \
            || { say "python3 -m venv failed (on Debian: apt-get install python3-venv)"; exit 1; }
    fi
    local stamp="$VENV/.hub-install-stamp"
    local want
    want="$(sha256sum pyproject.toml | cut -d' ' -f1)$extras"
    if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ] \
        && ! grep -qx "$want" "$stamp.all" 2>/dev/null; then
        say "installing the project${extras:+ with $extras} into $VENV"
        "$VENV/bin/python" -m pip install --quiet -e ".$extras"
        printf '%s\n' "$want" > "$stamp"
        printf '%s\n' "$want" >> "$stamp.all"
    fi
}
