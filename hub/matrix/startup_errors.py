"""Why start-up is waiting for the homeserver, in words an operator can act on (pure).

Start-up asks the homeserver who the as_token is and registers the bot
(`hub.matrix.client.wait_for_homeserver`); until that works it logs what it is waiting for.
This module turns what went wrong into those lines: a failure to connect (its cause in a
few words, from `hub.net.network_cause`) or the homeserver's answer (status and errcode) →
a `Waiting`: a short reason, what the answer means, and what to check.

The cases an operator meets, each with its own hint:

- unreachable: connection refused, host name unknown, no answer, TLS trouble (https:// for
  an http:// listener): is Synapse running, is `homeserver.url` right;
- registration: 401 M_UNKNOWN_TOKEN on an appservice request: the homeserver does not know
  the as_token, i.e. the registration file is not loaded (not listed in
  app_service_config_files, or Synapse not restarted since);
- refused: M_FORBIDDEN, M_EXCLUSIVE or another 401/403: it knows the appservice but not
  this way (the bot outside the registration's namespace, tokens of another registration),
  or a proxy in front of it refuses (a 401/403 without a Matrix errcode);
- server_error: 5xx, mostly 502/503/504 from a proxy in front of a stopped Synapse;
- not_matrix: 404/405 and 4xx answers without a Matrix errcode: `homeserver.url` points at
  something else (a web page, a path prefix);
- rate_limited: 429.

Log lines, so English (CONTRIBUTING.md); they never carry a token or a response body
beyond a short, printable excerpt of a Matrix error text.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus

# Kinds of Waiting.
UNREACHABLE = "unreachable"
REGISTRATION = "registration"
REFUSED = "refused"
SERVER_ERROR = "server_error"
NOT_MATRIX = "not_matrix"
RATE_LIMITED = "rate_limited"

# Seconds between attempts: quick at first (Synapse starting next to the hub answers within
# seconds), then every 30 s, without end.
FIRST_DELAY = 1.0
MAX_DELAY = 30.0
ERROR_TEXT_CHARS = 120

_CHECK_URL = "is Synapse running and `homeserver.url` right?"
_REGISTRATION = (
    "is the registration file (`hub generate-registration`) listed in the homeserver's "
    "app_service_config_files, and Synapse restarted since?"
)
_AGREE = (
    "do the registration file and the hub's config agree (as_token, sender_localpart = "
    "appservice.bot_localpart, the users namespace)? Write it again with "
    "`hub generate-registration` and restart Synapse"
)


@dataclass(frozen=True)
class Waiting:
    """What start-up is waiting for: `reason` (short, for every retry's line), `meaning` (what
    the answer says, may be empty), `hint` (what to check)."""

    kind: str
    reason: str
    meaning: str
    hint: str


def unreachable(cause: str) -> Waiting:
    """No answer at all; `cause` as `hub.net.network_cause` words it."""
    if cause.startswith("TLS"):
        hint = "is `homeserver.url` right (http:// or https://, the port)?"
    elif cause == "host name not found":
        hint = "is the host name in `homeserver.url` right?"
    else:
        hint = _CHECK_URL
    return Waiting(UNREACHABLE, cause or "no connection", "", hint)


def answered(status: int, errcode: str, error: str) -> Waiting:
    """The homeserver (or whatever answers at `homeserver.url`) refused a request.

    `errcode` is "M_UNKNOWN" when the answer carried none (a proxy's or web server's page)."""
    matrix = errcode not in ("", "M_UNKNOWN")
    code = f"{status} {errcode}" if matrix else f"{status} {_phrase(status)}".rstrip()
    said = _excerpt(error) if matrix else ""
    quoted = f' ("{said}")' if said else ""
    if errcode == "M_UNKNOWN_TOKEN":
        return Waiting(
            REGISTRATION, code, "the homeserver does not know the hub's as_token", _REGISTRATION
        )
    if errcode == "M_MISSING_TOKEN":
        return Waiting(
            REFUSED,
            code,
            "the hub's token did not reach the homeserver",
            "does a proxy in front of it drop the Authorization header?",
        )
    if status == 429 or errcode == "M_LIMIT_EXCEEDED":
        return Waiting(
            RATE_LIMITED,
            code,
            "the homeserver limits the hub's requests",
            "is `rate_limited: false` in the registration file, and Synapse restarted since?",
        )
    if status >= 500:
        if status in (502, 503, 504):
            meaning = "something answers at that address, but not the homeserver behind it"
            hint = "is Synapse running (behind the proxy)?"
        else:
            meaning = f"the homeserver fails{quoted}"
            hint = "what does Synapse's log say?"
        return Waiting(SERVER_ERROR, code, meaning, hint)
    if status in (401, 403) and not matrix:
        return Waiting(
            REFUSED,
            code,
            "something at that address refuses the hub's requests",
            "does a proxy in front of the homeserver want its own login, or block the hub?",
        )
    if status in (404, 405) or not matrix:
        return Waiting(
            NOT_MATRIX,
            code,
            "this is not a Matrix homeserver's client-server API",
            "is `homeserver.url` the homeserver's own URL, without a path "
            "(e.g. http://127.0.0.1:8008)?",
        )
    if errcode == "M_EXCLUSIVE":
        meaning = f"the homeserver will not let the hub register its bot{quoted}"
    else:
        meaning = f"the homeserver refuses the hub's appservice requests{quoted}"
    return Waiting(REFUSED, code, meaning, _AGREE)


def first_line(waiting: Waiting, url: str) -> str:
    """The whole line: what the hub waits for, why, and what to check."""
    meaning = f": {waiting.meaning}" if waiting.meaning else ""
    return f"waiting for the homeserver at {url} ({waiting.reason}){meaning} — {waiting.hint}"


def retry_line(waiting: Waiting, attempt: int) -> str:
    """A later attempt that failed the same way: short."""
    return f"still waiting for the homeserver (attempt {attempt}, {waiting.reason})"


def back_line(seconds: float) -> str:
    return f"homeserver reachable after {seconds:.0f} s"


def retry_delay(attempt: int) -> float:
    """Seconds to wait after failed attempt `attempt` (1, 2, ...): 1, 2, 4, 8, 16, 30, 30 …"""
    doublings = min(max(attempt - 1, 0), 10)
    return min(MAX_DELAY, FIRST_DELAY * float(2**doublings))


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _excerpt(text: str) -> str:
    """A homeserver's error text as a short, one-line, printable excerpt."""
    text = " ".join("".join(c if c.isprintable() else " " for c in text[:1000]).split())
    if text.startswith("<"):  # a page, not a Matrix error text
        return ""
    return text if len(text) <= ERROR_TEXT_CHARS else text[: ERROR_TEXT_CHARS - 1] + "…"
