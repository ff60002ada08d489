#!/usr/bin/env bash
# Start the whole thing on the embedded defaults: a local Synapse, the hub and a demo shop
# page with the chat widget, all on 127.0.0.1. Prints the URLs and an adviser login.
# Data stays in ./demo-data (run again to continue; delete it to start over). Ctrl-C stops.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/_venv.sh

ensure_venv ""
say "checking the local Synapse (the first run installs it: about a minute)"
"$VENV/bin/python" -m hub.devserver.synapse --ensure-installed > /dev/null
exec "$VENV/bin/hub" demo "$@"
