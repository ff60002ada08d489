"""The hub's log: lines of text for people (the default), or with `logging.format: json` one
JSON object per line for log shippers (Loki, Elasticsearch, journald's JSON export …).

A JSON line has `time` (ISO 8601, UTC), `level`, `logger`, `message`, `exc` (the formatted
traceback, when the record has one) and what is known of the work the line is about:
`conversation_id`, `room_id`, `job_id`, `job_kind`, `channel`, `event_id`. Those come from a
context variable that the places that know them set around their work (`log_context`): the
job worker around each job (`job_context`), the webhook pipeline around a delivery
(`in_log_context`). asyncio copies context variables into the tasks it starts, so a line
logged deep inside a handler carries them without being passed anything. A field given
with `extra=` on a single call wins over the context.

The text format stays as it always was (the ids are in the lines where they matter).

Stdlib `json` and a Formatter rather than python-json-logger: the whole format is the few
lines below, the context fields would need this module's filter anyway, and the hub has one
dependency less to keep.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal, TypeVar

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The context fields of a JSON line, in their order.
FIELDS = ("conversation_id", "room_id", "job_id", "job_kind", "channel", "event_id")
# Third-party libraries are chatty at INFO; our own lines are the ones that matter.
# nio's crypto logs every key it handles at INFO (ids, never keys); hub.matrix.crypto says
# what an operator needs.
QUIET = ("aiohttp.access", "alembic.runtime.migration", "apscheduler", "nio")

# What the current task is working on; replaced as a whole (never changed in place), so a
# task started inside a `log_context` keeps what it was started with.
_context: ContextVar[Mapping[str, Any]] = ContextVar(
    "hub_log_context", default=MappingProxyType({})
)

R = TypeVar("R")


def setup_logging(level: str, format: Literal["text", "json"] = "text") -> None:
    """The root logger writes to stderr in the chosen format (the service manager keeps it)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
    for name in QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))


def current_context() -> Mapping[str, Any]:
    return _context.get()


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add fields (of FIELDS) to the lines logged inside the block; None removes one."""
    merged = {**_context.get(), **fields}
    token = _context.set({k: v for k, v in merged.items() if v is not None})
    try:
        yield
    finally:
        _context.reset(token)


@contextmanager
def job_context(job_id: int, kind: str, ordering_key: str, payload: Any = None) -> Iterator[None]:
    """The fields of a job's lines: its id and kind, the conversation or room of its ordering
    key (hub.db.jobs: "conv:<id>", "room:<id>", "room-out:<id>", "receipt:<id>") and the
    event id its payload names. Replaces whatever the task was started with: a task the
    worker starts for a key may have been created inside a webhook's context."""
    fields: dict[str, Any] = {"job_id": job_id, "job_kind": kind}
    prefix, _, rest = ordering_key.partition(":")
    if rest and prefix == "conv":
        fields["conversation_id"] = int(rest) if rest.isdigit() else rest
    elif rest and prefix in ("room", "room-out", "receipt"):
        fields["room_id"] = rest
    if isinstance(payload, Mapping) and isinstance(payload.get("event_id"), str):
        fields["event_id"] = payload["event_id"]
    token = _context.set(fields)
    try:
        yield
    finally:
        _context.reset(token)


def in_log_context(
    handler: Callable[[Any], Awaitable[R]], **fields: Any
) -> Callable[[Any], Awaitable[R]]:
    """`handler` (an aiohttp request handler) with `fields` in the lines it logs."""

    async def run(request: Any) -> R:
        with log_context(**fields):
            return await handler(request)

    return run


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in messages and tracebacks are
    escaped by JSON). The context is read when the record is formatted: the hub's handler
    formats in the logging call itself, in the task that logs."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            # Cached on the record like logging.Formatter does, for the other handlers.
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        context = _context.get()
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is None:
                value = context.get(name)
            if value is not None:
                doc[name] = value
        text = json.dumps(doc, ensure_ascii=False, default=str)
        try:
            text.encode()
        except UnicodeEncodeError:  # a lone surrogate (a customer's text): escaped, still valid
            text = json.dumps(doc, default=str)
        return text
