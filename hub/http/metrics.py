"""GET /metrics: the hub's Prometheus metrics in the text exposition format, for the
networks in `metrics.allowed` only (403 for anyone else).

Who asks is the client's address as hub.core.addresses tells it: the peer, or behind a proxy
listed in `http.trusted_proxies` the address that proxy forwarded. An X-Forwarded-For from a
peer the hub does not trust changes nothing, so nobody on the internet can claim to be
loopback.

What it answers, from a registry this app owns (so two apps in one process, as in the
tests, never collect each other's database):
- the process-wide counters of hub.metrics and the default registry's process metrics;
- the job queue by kind (`hub_job_queue_depth`, `hub_job_queue_oldest_age_seconds`,
  `hub_job_queue_dead`), read from the database at scrape time with one GROUP BY
  (hub.db.jobs.backlog). prometheus-client collects synchronously and the database is
  asynchronous, so the handler reads first, bounded by QUEUE_READ_TIMEOUT_SECONDS, then
  collects; a read that fails or is late gives `hub_job_queue_up 0` and no queue figures
  (a stale depth would look like a healthy one) instead of a scrape that hangs;
- the widget's open websockets (`hub_webchat_connections`), counted from the web chat
  channel's own register of sockets when scraped, so the figure cannot drift.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from ipaddress import IPv6Address, ip_address

from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from hub.core.addresses import Network, client_address
from hub.db import jobs
from hub.db.database import Database
from hub.db.jobs import KindBacklog

log = logging.getLogger(__name__)

# The classic text format every Prometheus reads: generate_latest writes it for the hub's
# names (plain ASCII), whereas the CONTENT_TYPE_LATEST of newer prometheus-client says 1.0.0.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Well inside Prometheus's default scrape timeout (10 s): the rest of the scrape still answers.
QUEUE_READ_TIMEOUT_SECONDS = 2.0


def address_allowed(address: str, networks: Sequence[Network]) -> bool:
    """Whether a client address is in one of the networks; "unknown" or garbage never is.
    An IPv4 client of a dual-stack socket arrives as ::ffff:a.b.c.d: judged as IPv4."""
    try:
        ip = ip_address(address.strip().strip("[]"))
    except ValueError:
        return False
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)


class _ProcessWide:
    """The default registry (hub.metrics' counters, process metrics) inside the app's own.
    No describe(): its names are the default registry's business, not checked twice."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


class QueueCollector:
    """The job queue by kind, from the read the handler made just before collecting
    (`backlog`; None: that read failed or was late). `kinds`: the kinds this hub handles,
    reported as 0 when none is waiting, so an alert sees 0 rather than no series."""

    def __init__(self, kinds: Callable[[], Iterable[str]] = tuple) -> None:
        self.backlog: list[KindBacklog] | None = None
        self._kinds = kinds

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def _families(self) -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily(
                "hub_job_queue_up",
                "1 when this scrape read the job queue from the database in time, else 0",
            ),
            GaugeMetricFamily(
                "hub_job_queue_depth",
                "Jobs waiting by kind (due, running or backing off after a failure)",
                labels=["kind"],
            ),
            GaugeMetricFamily(
                "hub_job_queue_oldest_age_seconds",
                "Age of the oldest waiting job of each kind (0 when none waits)",
                labels=["kind"],
            ),
            GaugeMetricFamily(
                "hub_job_queue_dead",
                "Dead-lettered jobs by kind, kept for a human to look at",
                labels=["kind"],
            ),
        )

    def collect(self) -> Iterable[Metric]:
        up, depth, age, dead = self._families()
        up.add_metric([], 0 if self.backlog is None else 1)
        if self.backlog is None:
            return [up]
        by_kind = {b.kind: b for b in self.backlog}
        for kind in sorted(by_kind.keys() | set(self._kinds())):
            b = by_kind.get(kind) or KindBacklog(kind, 0, 0.0, 0)
            depth.add_metric([kind], b.pending)
            age.add_metric([kind], b.oldest_pending_seconds)
            dead.add_metric([kind], b.dead)
        return [up, depth, age, dead]


class WebchatCollector:
    """The widget's open (authenticated) websockets, counted when scraped."""

    def __init__(self, connections: Callable[[], int]) -> None:
        self._connections = connections

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "hub_webchat_connections", "Open websocket connections of the web chat widget"
        )

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        family.add_metric([], self._connections())
        return [family]


class MetricsEndpoint:
    """/metrics of one app: its registry, its database, who may read it."""

    def __init__(
        self,
        db: Database,
        allowed: Sequence[Network],
        trusted_proxies: Sequence[Network] = (),
        *,
        kinds: Callable[[], Iterable[str]] = tuple,
        webchat_connections: Callable[[], int] | None = None,
        timeout: float = QUEUE_READ_TIMEOUT_SECONDS,
    ) -> None:
        self.db = db
        self.allowed = tuple(allowed)
        self.proxies = tuple(trusted_proxies)
        self.timeout = timeout
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_ProcessWide())
        self.queue = QueueCollector(kinds)
        self.registry.register(self.queue)
        if webchat_connections is not None:
            self.registry.register(WebchatCollector(webchat_connections))

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/metrics", self.metrics)

    async def metrics(self, request: web.Request) -> web.Response:
        address = client_address(
            request.remote, request.headers.get("X-Forwarded-For"), self.proxies
        )
        forwarded = "X-Forwarded-For" in request.headers or "Forwarded" in request.headers
        if forwarded and not self.proxies:
            # A reverse proxy on this host makes every visitor 127.0.0.1: a forwarded request
            # without `http.trusted_proxies` cannot be told from the internet. Refused.
            log.debug("metrics: refused a forwarded request (no http.trusted_proxies)")
            return web.json_response({"error": "forbidden"}, status=403)
        if not address_allowed(address, self.allowed):
            # Debug only: anyone can ask, and a log line each would let them fill the log.
            log.debug("metrics: refused %s (not in metrics.allowed)", address)
            return web.json_response({"error": "forbidden"}, status=403)
        backlog = await self._backlog()
        # No await between setting the snapshot and collecting it: a concurrent scrape on
        # the same loop cannot slip its own snapshot in between.
        self.queue.backlog = backlog
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def _backlog(self) -> list[KindBacklog] | None:
        try:
            return await asyncio.wait_for(self.db.read(jobs.backlog), self.timeout)
        except TimeoutError:
            log.warning("metrics: the job queue was not read within %.1fs", self.timeout)
        except Exception:
            log.exception("metrics: reading the job queue failed")
        return None
