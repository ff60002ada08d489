"""What start-up says while it waits for the homeserver: the pure classification
(hub.matrix.startup_errors) and the waiting loop's lines (hub.matrix.client.wait_for_homeserver,
with a probe that fails as scripted and a sleep that only records)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from hub.matrix import startup_errors as se
from hub.matrix.client import MatrixError, MatrixUnavailable, wait_for_homeserver

URL = "http://127.0.0.1:8008"
NGINX_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
)


# -- classification -------------------------------------------------------------------------


def test_connection_refused_names_synapse_and_the_url() -> None:
    line = se.first_line(se.unreachable("connection refused"), URL)
    assert line == (
        "waiting for the homeserver at http://127.0.0.1:8008 (connection refused) — "
        "is Synapse running and `homeserver.url` right?"
    )


@pytest.mark.parametrize(
    ("cause", "hint"),
    [
        ("host name not found", "host name in `homeserver.url`"),
        ("TLS handshake failed: wrong version number", "http:// or https://"),
        ("no answer within 10 s", "is Synapse running"),
        ("", "is Synapse running"),
    ],
)
def test_other_network_causes(cause: str, hint: str) -> None:
    waiting = se.unreachable(cause)
    assert waiting.kind == se.UNREACHABLE
    assert hint in se.first_line(waiting, URL)
    assert waiting.reason == (cause or "no connection")


def test_unknown_token_means_the_registration_is_not_loaded() -> None:
    # What Synapse answers when no registration has this as_token (a user token lookup).
    waiting = se.answered(401, "M_UNKNOWN_TOKEN", "Invalid access token passed.")
    assert waiting.kind == se.REGISTRATION
    assert waiting.reason == "401 M_UNKNOWN_TOKEN"
    line = se.first_line(waiting, URL)
    assert "does not know the hub's as_token" in line
    assert "app_service_config_files" in line and "restarted" in line


@pytest.mark.parametrize(
    ("status", "errcode", "error", "said"),
    [
        (
            403,
            "M_FORBIDDEN",
            "Application service cannot masquerade as this user (@x:shop.example).",
            "refuses the hub's appservice requests",
        ),
        (
            400,
            "M_EXCLUSIVE",
            "Invalid user localpart for this application service.",
            "will not let the hub register its bot",
        ),
        # A proxy's own login or block page.
        (401, "M_UNKNOWN", "", "something at that address refuses"),
        (403, "M_UNKNOWN", "<html>Forbidden</html>", "something at that address refuses"),
    ],
)
def test_refusals(status: int, errcode: str, error: str, said: str) -> None:
    waiting = se.answered(status, errcode, error)
    line = se.first_line(waiting, URL)
    assert waiting.kind == se.REFUSED
    assert said in line
    if errcode == "M_UNKNOWN":
        assert waiting.reason == f"{status} {'Unauthorized' if status == 401 else 'Forbidden'}"
    else:
        assert waiting.reason == f"{status} {errcode}"
        assert error in line  # the homeserver's own words say which user or namespace
        assert "sender_localpart" in line
    assert "<" not in line


def test_missing_token_points_at_a_proxy() -> None:
    waiting = se.answered(401, "M_MISSING_TOKEN", "Missing access token.")
    assert waiting.kind == se.REFUSED
    assert "Authorization header" in se.first_line(waiting, URL)


@pytest.mark.parametrize("status", [502, 503, 504])
def test_a_proxy_in_front_of_a_stopped_synapse(status: int) -> None:
    waiting = se.answered(status, "M_UNKNOWN", NGINX_502)
    assert waiting.kind == se.SERVER_ERROR
    assert waiting.reason.startswith(f"{status} ")  # "502 Bad Gateway"
    line = se.first_line(waiting, URL)
    assert "is Synapse running (behind the proxy)?" in line
    assert "<" not in line and "\n" not in line


def test_a_failing_homeserver() -> None:
    waiting = se.answered(500, "M_UNKNOWN", "Internal server error")
    assert waiting.kind == se.SERVER_ERROR
    assert waiting.reason == "500 Internal Server Error"
    assert "Synapse's log" in se.first_line(waiting, URL)


@pytest.mark.parametrize(
    ("status", "errcode"), [(404, "M_UNKNOWN"), (404, "M_UNRECOGNIZED"), (405, "M_UNKNOWN")]
)
def test_something_else_at_the_url(status: int, errcode: str) -> None:
    waiting = se.answered(status, errcode, "<html>Not Found</html>")
    assert waiting.kind == se.NOT_MATRIX
    assert "`homeserver.url`" in se.first_line(waiting, URL)


def test_rate_limited() -> None:
    waiting = se.answered(429, "M_LIMIT_EXCEEDED", "Too Many Requests")
    assert waiting.kind == se.RATE_LIMITED
    assert "rate_limited: false" in se.first_line(waiting, URL)


def test_error_texts_are_one_short_printable_line() -> None:
    waiting = se.answered(403, "M_FORBIDDEN", "a\nb\x00c " + "x" * 500 + " 👋")
    line = se.first_line(waiting, URL)
    assert "\n" not in line and "\x00" not in line
    assert '"a b c xxx' in line and "…" in line
    assert len(line) < 600


def test_retry_lines_are_short() -> None:
    line = se.retry_line(se.unreachable("connection refused"), 5)
    assert line == "still waiting for the homeserver (attempt 5, connection refused)"
    assert se.back_line(23.4) == "homeserver reachable after 23 s"


def test_retry_delays_grow_to_thirty_seconds_and_stay() -> None:
    assert [se.retry_delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 30, 30, 30]
    assert se.retry_delay(10_000) == 30


# -- the waiting loop -------------------------------------------------------------------------


async def test_wait_says_why_once_then_short_lines_then_when_it_is_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    script: list[Exception | None] = [
        MatrixUnavailable("GET /whoami: connection failed", "connection refused"),
        MatrixUnavailable("GET /whoami: connection failed", "connection refused"),
        MatrixUnavailable("GET /whoami: connection failed", "connection refused"),
        MatrixError(401, "M_UNKNOWN_TOKEN", "Invalid access token passed."),
        MatrixError(401, "M_UNKNOWN_TOKEN", "Invalid access token passed."),
        None,
    ]
    slept: list[float] = []

    async def probe() -> str:
        outcome = script.pop(0)
        if outcome is not None:
            raise outcome
        return "@shopbot:shop.example"

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    with caplog.at_level(logging.INFO, logger="hub.matrix.client"):
        assert await wait_for_homeserver(probe, URL, sleep=sleep) == "@shopbot:shop.example"
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith(f"waiting for the homeserver at {URL} (connection refused) — ")
    assert lines[1:3] == [
        "still waiting for the homeserver (attempt 2, connection refused)",
        "still waiting for the homeserver (attempt 3, connection refused)",
    ]
    # Another reason: the whole line again, with its own hint.
    assert lines[3].startswith(f"waiting for the homeserver at {URL} (401 M_UNKNOWN_TOKEN): ")
    assert lines[4] == "still waiting for the homeserver (attempt 5, 401 M_UNKNOWN_TOKEN)"
    assert lines[5].startswith("homeserver reachable after ")
    assert len(lines) == 6
    assert slept == [1, 2, 4, 8, 16]
    assert [r.levelname for r in caplog.records] == ["WARNING"] * 5 + ["INFO"]
    assert all(r.exc_info is None for r in caplog.records)


async def test_a_homeserver_that_answers_at_once_logs_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def probe() -> int:
        return 1

    with caplog.at_level(logging.DEBUG, logger="hub.matrix.client"):
        assert await wait_for_homeserver(probe, URL) == 1
    assert caplog.records == []


async def test_other_errors_pass_through() -> None:
    async def probe() -> Any:
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError):
        await wait_for_homeserver(probe, URL)
