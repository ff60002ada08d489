"""The Matrix side's Prometheus metrics, in one place so /metrics finds them all.

Counters live in prometheus-client's default registry: defined once at import, so a module
imported twice (tests) never registers a name twice."""

from __future__ import annotations

from prometheus_client import Counter

# Encrypted events that could not reach the customer, by why: `no_encryption` (the hub does
# not take part in encrypted rooms), `no_key` (the room key never reached the hub's device),
# `broken` (an unknown algorithm, a malformed payload, a failed decryption).
UNDECRYPTABLE_EVENTS = Counter(
    "hub_undecryptable_events",
    "Encrypted Matrix events the hub could not read, so they did not reach the customer",
    ["reason"],
)
