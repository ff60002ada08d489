"""Every Prometheus metric of the hub, in one module, so /metrics (hub.http.metrics) and a
reader of the code find them all in one place.

Two kinds, two registries:
- What *happens* (webhooks answered, job attempts failed, homeserver transactions, events
  that could not be decrypted) is counted where it happens, by code that has no app at hand
  (the webhook pipeline, the worker, the appservice API). Those counters and the histogram
  are module objects in prometheus-client's default registry: defined once at import (a
  module is imported once per process, so no name is registered twice), and they come with
  the default registry's process metrics (memory, CPU, open files) for free. They are per
  process, which is what a hub is; tests read them as differences (before/after).
- What *is* at scrape time (the job queue in one app's database, one app's widget sockets)
  belongs to one app: collectors of hub.http.metrics, in a registry each app owns, so two
  apps in one test process never see each other's database.

Label values are bounded: channel kinds, job kinds and HTTP statuses are the hub's own; a
failure's reason may be a code another system chose, so `reason_label` keeps it short,
plain and one of at most MAX_REASONS values.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web
from prometheus_client import Counter, Histogram

from hub.errors import ExternalError
from hub.jobs.job import PermanentFailure, RetryLater

# Encrypted events that could not reach the customer, by why: `no_encryption` (the hub does
# not take part in encrypted rooms), `no_key` (the room key never reached the hub's device),
# `broken` (an unknown algorithm, a malformed payload, a failed decryption).
UNDECRYPTABLE_EVENTS = Counter(
    "hub_undecryptable_events",
    "Encrypted Matrix events the hub could not read, so they did not reach the customer",
    ["reason"],
)

# Every POST to a channel's webhook (hub.bridges.webhooks), by the status it was answered:
# 200 stored, 401/403 not the provider's, 400 not JSON, 413 too large, 500 storing failed.
WEBHOOK_REQUESTS = Counter(
    "hub_webhook_requests",
    "Webhook deliveries from the customers' channels, by channel and HTTP status answered",
    ["channel", "status"],
)

# Every failed attempt of a job (hub.jobs.worker), retried or dead-lettered (the queue's
# dead rows are hub_job_queue_dead): kind = the job's kind, reason = the error's code (a
# provider's or the homeserver's, BLOCKED, WINDOW_CLOSED, "timeout", "unreachable") or, without
# one, "permanent" / "unavailable" (ExternalError), "retry_later", "internal" (a bug),
# "no_handler".
DELIVERY_FAILURES = Counter(
    "hub_delivery_failures",
    "Failed attempts of jobs (deliveries to Matrix and to customers, and the rest), by kind "
    "and reason",
    ["kind", "reason"],
)

# Transactions the homeserver pushed (hub.matrix.appservice), and how late: now minus the
# oldest event's origin_server_ts. Synapse backs off up to ~8 minutes while the hub is down,
# so the buckets reach well past that.
MATRIX_TRANSACTIONS = Counter(
    "hub_matrix_transactions",
    "Appservice transactions received from the homeserver (repeats included)",
)
MATRIX_TRANSACTION_LAG = Histogram(
    "hub_matrix_transaction_lag_seconds",
    "Seconds from the oldest event's origin_server_ts to the transaction reaching the hub",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)

MAX_REASONS = 200
_REASON = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_reasons: set[str] = set()


def reason_label(value: str) -> str:
    """A reason as a label value: codes are other systems' strings, and every distinct
    value is a time series kept forever, so anything odd or past MAX_REASONS is "other"."""
    if not _REASON.fullmatch(value):
        return "other"
    if value not in _reasons:
        if len(_reasons) >= MAX_REASONS:
            return "other"
        _reasons.add(value)
    return value


def failure_reason(failure: BaseException | str) -> str:
    """Why a job's attempt failed, as the worker's exception tells it."""
    if isinstance(failure, str):
        return failure
    if isinstance(failure, PermanentFailure):
        return failure.code or "permanent"
    if isinstance(failure, RetryLater):
        return "retry_later"
    if isinstance(failure, ExternalError):
        return failure.code or ("permanent" if failure.permanent else "unavailable")
    if isinstance(failure, TimeoutError):
        return "timeout"
    return "internal"


def count_job_failure(kind: str, failure: BaseException | str) -> None:
    """One failed attempt of a job: `failure` is what the handler raised, or a reason."""
    DELIVERY_FAILURES.labels(kind, reason_label(failure_reason(failure))).inc()


def transaction_lag(events: Iterable[Any], now: float) -> float | None:
    """Seconds since the oldest event's origin_server_ts (None without a readable one)."""
    stamps: list[float] = [
        e["origin_server_ts"]
        for e in events
        if isinstance(e, dict)
        and isinstance(e.get("origin_server_ts"), int | float)
        and not isinstance(e.get("origin_server_ts"), bool)
    ]
    if not stamps:
        return None
    # A homeserver's clock a little ahead of ours is no negative lag.
    return max(0.0, now - min(stamps) / 1000)


def count_transaction(events: Iterable[Any]) -> None:
    """A transaction from the homeserver and its lag. Wall-clock time, not hub.core.clock:
    origin_server_ts is the homeserver's real time, and the hub's clock may be set to another
    moment (HUB_CLOCK)."""
    MATRIX_TRANSACTIONS.inc()
    lag = transaction_lag(events, time.time())
    if lag is not None:
        MATRIX_TRANSACTION_LAG.observe(lag)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def counted_webhook(channel: str, handler: Handler) -> Handler:
    """A webhook handler whose every answer is counted by status: returned, raised as an
    HTTP exception (413), or a failure aiohttp answers 500 (the database)."""

    async def counted(request: web.Request) -> web.StreamResponse:
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            WEBHOOK_REQUESTS.labels(channel, str(status)).inc()

    return counted
