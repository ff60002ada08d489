"""The JSON log format (hub.logs): one object per line with the record's fields and what is
known of the work (context variables), tracebacks and any text kept valid; a job's lines
carry its id, kind and conversation when the worker runs it."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hub.bridges.base import Channel
from hub.bridges.webhooks import Webhook
from hub.db.database import Database
from hub.jobs.job import Job
from hub.logs import (
    FIELDS,
    JsonFormatter,
    current_context,
    in_log_context,
    job_context,
    log_context,
)
from tests.unit.test_jobs import add, make_worker, running

log = logging.getLogger("hub.test_logs")


@pytest.fixture
def json_lines() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """What the loggers have written in JSON since the test began, parsed line by line."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield lambda: [json.loads(line) for line in out.getvalue().splitlines()]
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def formatted(record: logging.LogRecord) -> dict[str, Any]:
    text = JsonFormatter().format(record)
    assert "\n" not in text
    doc: dict[str, Any] = json.loads(text)
    return doc


def record(msg: str, *args: Any, exc_info: Any = None, **extra: Any) -> logging.LogRecord:
    rec = logging.LogRecord("hub.matrix.client", logging.WARNING, __file__, 1, msg, args, exc_info)
    rec.__dict__.update(extra)
    return rec


def test_a_line_has_time_level_logger_and_message() -> None:
    rec = record("waiting for the homeserver at %s (%s)", "http://hs", "connection refused")
    doc = formatted(rec)
    assert doc == {
        "time": doc["time"],
        "level": "WARNING",
        "logger": "hub.matrix.client",
        "message": "waiting for the homeserver at http://hs (connection refused)",
    }
    assert doc["time"].endswith("Z")
    moment = datetime.fromisoformat(doc["time"].replace("Z", "+00:00"))
    assert abs(moment.timestamp() - rec.created) < 0.001


def test_an_exception_is_in_exc_as_text() -> None:
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        rec = record("job failed", exc_info=sys.exc_info())
    doc = formatted(rec)
    assert doc["message"] == "job failed"
    assert doc["exc"].startswith("Traceback (most recent call last):")
    assert doc["exc"].rstrip().endswith("ValueError: bad\nthing")


def test_unicode_stays_readable_and_a_lone_surrogate_stays_valid() -> None:
    text = JsonFormatter().format(record('Grüße, 你好 👋 "quoted" \\ tab\t'))
    assert "Grüße, 你好 👋" in text
    assert json.loads(text)["message"] == 'Grüße, 你好 👋 "quoted" \\ tab\t'
    broken = JsonFormatter().format(record("half a pair: \ud83d"))
    broken.encode()  # writable as UTF-8
    assert json.loads(broken)["message"] == "half a pair: \ud83d"


def test_context_fields_are_added_where_known() -> None:
    assert formatted(record("x")).keys().isdisjoint(FIELDS)
    with log_context(channel="whatsapp"), log_context(event_id="$e"):
        doc = formatted(record("x"))
        assert (doc["channel"], doc["event_id"]) == ("whatsapp", "$e")
        with log_context(channel=None):
            assert "channel" not in formatted(record("x"))
    assert current_context() == {}
    # A field given with the call wins.
    with log_context(room_id="!a:hs"):
        assert formatted(record("x", room_id="!b:hs"))["room_id"] == "!b:hs"


@pytest.mark.parametrize(
    ("key", "payload", "fields"),
    [
        ("conv:42", {}, {"conversation_id": 42}),
        ("room:!r:hs", {"event_id": "$ev"}, {"room_id": "!r:hs", "event_id": "$ev"}),
        ("room-out:!r:hs", None, {"room_id": "!r:hs"}),
        ("receipt:!r:hs", {"event_id": 7}, {"room_id": "!r:hs"}),
        ("lobby", {}, {}),
        ("user:@a:hs", {}, {}),
    ],
)
def test_a_jobs_fields_come_from_its_ordering_key_and_payload(
    key: str, payload: Any, fields: dict[str, Any]
) -> None:
    with log_context(channel="telegram"), job_context(7, "matrix.event", key, payload):
        # The job's fields only: not what the task it runs in was started with.
        assert dict(current_context()) == {"job_id": 7, "job_kind": "matrix.event"} | fields
    assert current_context() == {}


async def test_a_request_handler_runs_in_its_channels_context() -> None:
    seen: list[Any] = []

    async def handler(request: Any) -> str:
        seen.append(dict(current_context()))
        return "ok"

    assert await in_log_context(handler, channel="whatsapp")(object()) == "ok"
    assert seen == [{"channel": "whatsapp"}]
    assert current_context() == {}


async def test_tasks_keep_the_context_they_were_started_in() -> None:
    async def later() -> Any:
        await asyncio.sleep(0)
        return dict(current_context())

    with log_context(channel="webchat"):
        task = asyncio.create_task(later())
    assert await task == {"channel": "webchat"}


# -- a job run by the worker ------------------------------------------------------------------


async def test_a_jobs_lines_name_the_job_and_its_conversation(
    db: Database, json_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    async def handler(job: Job) -> None:
        log.info("handling %s", job.payload["name"])
        if job.payload["name"] == "b":
            raise RuntimeError("a bug")

    worker = make_worker(db)
    worker.register("test", handler)
    ids = await add(db, ("conv:12", "a", "i-a"), ("room:!r:shop.example", "b", "i-b"))
    async with running(worker):
        await worker.drain()
    lines = json_lines()
    handled = {line["message"]: line for line in lines if line["logger"] == "hub.test_logs"}
    a, b = handled["handling a"], handled["handling b"]
    assert (a["job_id"], a["job_kind"], a["conversation_id"]) == (ids[0], "test", 12)
    assert "room_id" not in a
    assert (b["job_id"], b["room_id"]) == (ids[1], "!r:shop.example")
    # The worker's own line about the failure carries the job and the traceback.
    failed = [line for line in lines if "failed unexpectedly" in line["message"]]
    assert failed and failed[0]["job_id"] == ids[1] and failed[0]["level"] == "ERROR"
    assert "RuntimeError: a bug" in failed[0]["exc"]
    # Lines outside a job carry none of it.
    log.info("after")
    assert json_lines()[-1]["message"] == "after" and "job_id" not in json_lines()[-1]


# -- as `hub run` sets it up ------------------------------------------------------------------


def test_setup_logging_json_writes_one_object_per_line_to_stderr() -> None:
    script = (
        "import logging\n"
        "from hub.logs import setup_logging, log_context\n"
        "setup_logging('INFO', 'json')\n"
        "with log_context(channel='whatsapp'):\n"
        "    logging.getLogger('hub.x').info('two\\nlines')\n"
        "logging.getLogger('aiohttp.access').info('quiet')\n"
        "try:\n"
        "    1 / 0\n"
        "except ZeroDivisionError:\n"
        "    logging.getLogger('hub.y').exception('boom')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    docs = [json.loads(line) for line in result.stderr.splitlines()]
    assert [d["message"] for d in docs] == ["two\nlines", "boom"]
    assert docs[0]["channel"] == "whatsapp" and docs[0]["logger"] == "hub.x"
    assert "ZeroDivisionError" in docs[1]["exc"]


def test_setup_logging_text_is_as_before() -> None:
    script = (
        "import logging\n"
        "from hub.logs import setup_logging, log_context\n"
        "setup_logging('INFO')\n"
        "with log_context(channel='whatsapp'):\n"
        "    logging.getLogger('hub.x').info('hello')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stderr.endswith(" INFO hub.x: hello\n"), result.stderr


# -- a webhook delivery -----------------------------------------------------------------------


class Refusing(Channel):
    """A channel whose webhook refuses everything (Channel.verify's default), with a line."""

    kind = "testchan"
    code = "tc"
    label = "Test"
    webhook_path = "/webhooks/testchan"

    async def send(self, message: Any) -> str:
        raise AssertionError("not sent here")


async def test_a_webhooks_lines_name_its_channel(
    json_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    app = web.Application()
    Webhook(Refusing(None), None, 1000).add_routes(app)  # type: ignore[arg-type]
    async with TestClient(TestServer(app)) as client:
        resp = await client.post("/webhooks/testchan", data=b"{}")
        assert resp.status == 404
    refused = [line for line in json_lines() if "webhook refused" in line["message"]]
    assert refused and refused[0]["channel"] == "testchan"
