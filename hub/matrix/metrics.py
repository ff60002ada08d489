"""The Matrix side's Prometheus metrics. They live with every other metric of the hub in
hub.metrics (one module, so /metrics and a reader find them all); this name stays for the
modules that import it from here."""

from __future__ import annotations

from hub.metrics import MATRIX_TRANSACTION_LAG, MATRIX_TRANSACTIONS, UNDECRYPTABLE_EVENTS

__all__ = ["MATRIX_TRANSACTIONS", "MATRIX_TRANSACTION_LAG", "UNDECRYPTABLE_EVENTS"]
