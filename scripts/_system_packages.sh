# Sourced by scripts/test.sh: the Debian packages the tests need (Chromium for the browser
# tests, PostgreSQL for the database tests; nginx, Caddy, curl and systemd-analyze for the
# deployment guide's test). Installed when missing and we are root; otherwise the command
# to run is printed.
ensure_system_packages() {
    local missing=()
    command -v chromium > /dev/null || missing+=(chromium)
    ls /usr/lib/postgresql/*/bin/postgres > /dev/null 2>&1 || missing+=(postgresql)
    [ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
    # tests/e2e/test_deploy_guide.py: the guide's proxies, its commands, the units' check.
    [ -x /usr/sbin/nginx ] || missing+=(nginx)
    [ -x /usr/bin/caddy ] || missing+=(caddy)
    command -v curl > /dev/null || missing+=(curl)
    command -v systemd-analyze > /dev/null || missing+=(systemd)
    # Debian's own python3 cannot create a virtualenv without python3-venv.
    if [ "$(command -v python3)" = /usr/bin/python3 ] && command -v dpkg > /dev/null \
        && ! dpkg -s python3-venv > /dev/null 2>&1; then
        missing+=(python3-venv)
    fi
    [ "${#missing[@]}" -eq 0 ] && return 0
    if [ "$(id -u)" -eq 0 ] && command -v apt-get > /dev/null; then
        say "apt-get install ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
    else
        say "missing system packages: ${missing[*]} (sudo apt-get install ${missing[*]})"
        exit 1
    fi
}
