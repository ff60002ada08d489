"""The metrics' pure parts (hub.metrics, hub.http.metrics): bounded labels, why a job failed,
a transaction's lag, who may read /metrics, and the queue's figures in the text format as
prometheus-client's own parser reads them."""

from __future__ import annotations

from ipaddress import ip_network

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hub import metrics
from hub.db.jobs import KindBacklog
from hub.errors import BLOCKED, ExternalError
from hub.http.metrics import QueueCollector, WebchatCollector, address_allowed
from hub.jobs.job import PermanentFailure, RetryLater

LOOPBACK = [ip_network("127.0.0.0/8"), ip_network("::1/128")]


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_failure_reasons() -> None:
    reason = metrics.failure_reason
    assert reason(PermanentFailure("no", code=BLOCKED)) == "blocked"
    assert reason(PermanentFailure("no")) == "permanent"
    assert reason(RetryLater("later")) == "retry_later"
    assert reason(ExternalError("x", permanent=False, code="timeout")) == "timeout"
    assert reason(ExternalError("x", permanent=False, code="131047")) == "131047"
    assert reason(ExternalError("x", permanent=False)) == "unavailable"
    assert reason(ExternalError("x", permanent=True)) == "permanent"
    assert reason(TimeoutError()) == "timeout"
    assert reason(KeyError("bug")) == "internal"
    assert reason("no_handler") == "no_handler"


def test_reason_labels_stay_few_and_plain() -> None:
    assert metrics.reason_label("M_LIMIT_EXCEEDED") == "M_LIMIT_EXCEEDED"
    assert metrics.reason_label("") == "other"
    assert metrics.reason_label("a b") == "other"
    assert metrics.reason_label("é") == "other"
    assert metrics.reason_label("x" * 65) == "other"
    seen = set(metrics._reasons)
    try:
        for n in range(metrics.MAX_REASONS + 5):
            metrics.reason_label(f"code{n}")
        assert len(metrics._reasons) == metrics.MAX_REASONS
        assert metrics.reason_label("one_too_many") == "other"
        assert metrics.reason_label("M_LIMIT_EXCEEDED") == "M_LIMIT_EXCEEDED"  # known: kept
    finally:
        metrics._reasons.clear()
        metrics._reasons.update(seen)


def test_a_job_failure_is_counted_by_kind_and_reason() -> None:
    def value() -> float:
        from prometheus_client import REGISTRY

        got = REGISTRY.get_sample_value(
            "hub_delivery_failures_total", {"kind": "channel.send", "reason": "window_closed"}
        )
        return got or 0.0

    before = value()
    metrics.count_job_failure(
        "channel.send", ExternalError("closed", permanent=True, code="window_closed")
    )
    assert value() == before + 1


def test_transaction_lag_is_from_the_oldest_event() -> None:
    now = 1_700_000_100.0
    events = [
        {"origin_server_ts": 1_700_000_095_000},
        {"origin_server_ts": 1_700_000_090_500},  # the oldest
        {"origin_server_ts": "1"},
        {"origin_server_ts": True},
        "not an event",
    ]
    assert metrics.transaction_lag(events, now) == 9.5
    assert metrics.transaction_lag([{"origin_server_ts": 1_700_000_101_000}], now) == 0.0
    assert metrics.transaction_lag([{"type": "m.room.message"}], now) is None
    assert metrics.transaction_lag([], now) is None


def test_address_allowed() -> None:
    assert address_allowed("127.0.0.1", LOOPBACK)
    assert address_allowed("::1", LOOPBACK)
    assert address_allowed("::ffff:127.0.0.1", LOOPBACK)  # IPv4 on a dual-stack socket
    assert not address_allowed("203.0.113.9", LOOPBACK)
    assert not address_allowed("unknown", LOOPBACK)
    assert not address_allowed("", LOOPBACK)
    assert not address_allowed("127.0.0.1", [])
    assert address_allowed("10.1.2.3", [ip_network("10.0.0.0/8")])


def test_queue_figures_in_the_text_format() -> None:
    queue = QueueCollector(kinds=lambda: ["matrix.deliver", "channel.send"])
    registry = CollectorRegistry(auto_describe=False)
    registry.register(queue)
    registry.register(WebchatCollector(lambda: 3))
    # Not read (failed or late): up 0, no depth that would look healthy.
    samples = _samples(registry)
    assert samples[("hub_job_queue_up", ())] == 0
    assert not any(name == "hub_job_queue_depth" for name, _ in samples)
    assert samples[("hub_webchat_connections", ())] == 3

    queue.backlog = [KindBacklog("channel.send", 4, 12.5, 1), KindBacklog("odd.kind", 0, 0.0, 2)]
    samples = _samples(registry)
    assert samples[("hub_job_queue_up", ())] == 1
    assert samples[("hub_job_queue_depth", (("kind", "channel.send"),))] == 4
    assert samples[("hub_job_queue_oldest_age_seconds", (("kind", "channel.send"),))] == 12.5
    assert samples[("hub_job_queue_dead", (("kind", "channel.send"),))] == 1
    # A kind the hub handles with nothing waiting is 0, not missing.
    assert samples[("hub_job_queue_depth", (("kind", "matrix.deliver"),))] == 0
    assert samples[("hub_job_queue_dead", (("kind", "odd.kind"),))] == 2
