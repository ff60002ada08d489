"""The one table of WhatsApp Cloud API error codes: human text for advisers, and whether the
job queue should retry (temporary) or give up (permanent). Pure: no I/O, no aiohttp.

Codes and meanings from Meta's error code reference
(https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes) and the Graph
API error handling guide; the same codes arrive synchronously in an error response body
`{"error": {"message", "type", "code", "error_data": {"details"}, "error_subcode",
"fbtrace_id"}}` and asynchronously in `statuses[].errors[]` / `messages[].errors[]` of a
webhook.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hub.errors import ExternalError
from hub.i18n import N_, _

WINDOW_CLOSED = 131047  # re-engagement message: outside the 24-hour customer service window


@dataclass(frozen=True)
class ErrorInfo:
    human: str  # an English msgid: shown with _() in the shop's language
    permanent: bool
    retry_after: float | None = None  # default wait for temporary errors without a header


# One entry per documented code the hub can meet when sending. Texts tell the adviser what
# happened and, where they can, what to do; never Meta's jargon alone.
ERRORS: dict[int, ErrorInfo] = {
    0: ErrorInfo(
        N_("WhatsApp could not authenticate the hub: renew the access token in the hub's config"),
        permanent=True,
    ),
    1: ErrorInfo(
        N_("WhatsApp reported an unknown error; retrying"), permanent=False, retry_after=30
    ),
    2: ErrorInfo(
        N_("WhatsApp is temporarily unavailable; retrying"), permanent=False, retry_after=30
    ),
    3: ErrorInfo(
        N_(
            "The WhatsApp app lacks a capability or permission for this (check the app's "
            "permissions in Meta's developer console)"
        ),
        permanent=True,
    ),
    4: ErrorInfo(
        N_("The WhatsApp app made too many API calls; retrying later"),
        permanent=False,
        retry_after=60,
    ),
    10: ErrorInfo(
        N_(
            "The WhatsApp app's permission was not granted or was removed (check the app in "
            "Meta's developer console)"
        ),
        permanent=True,
    ),
    33: ErrorInfo(
        N_(
            "The shop's WhatsApp business phone number no longer exists: check phone_number_id "
            "in the hub's config"
        ),
        permanent=True,
    ),
    100: ErrorInfo(
        N_("WhatsApp refused the request as invalid (an unsupported or wrong parameter)"),
        permanent=True,
    ),
    190: ErrorInfo(
        N_(
            "The WhatsApp access token has expired or is invalid: create a new one and put it "
            "into the hub's config"
        ),
        permanent=True,
    ),
    368: ErrorInfo(
        N_("The shop's WhatsApp account is temporarily blocked for a policy violation"),
        permanent=True,
    ),
    80007: ErrorInfo(
        N_("The WhatsApp business account reached its rate limit; retrying later"),
        permanent=False,
        retry_after=60,
    ),
    130429: ErrorInfo(
        N_("WhatsApp's message throughput limit was reached; retrying shortly"),
        permanent=False,
        retry_after=15,
    ),
    130472: ErrorInfo(
        N_(
            "WhatsApp did not send this message: the customer's number is part of a Meta "
            "marketing experiment"
        ),
        permanent=True,
    ),
    131000: ErrorInfo(
        N_("WhatsApp failed to send the message for an unknown reason; retrying"),
        permanent=False,
        retry_after=30,
    ),
    131005: ErrorInfo(
        N_("The WhatsApp app's permission was not granted or was removed"), permanent=True
    ),
    131008: ErrorInfo(N_("WhatsApp refused the message: a required field is missing"), True),
    131009: ErrorInfo(
        N_(
            "WhatsApp refused the message: a value is not valid (e.g. reacting to a message "
            "older than 30 days)"
        ),
        permanent=True,
    ),
    131016: ErrorInfo(
        N_("A WhatsApp service is temporarily unavailable; retrying"),
        permanent=False,
        retry_after=30,
    ),
    131021: ErrorInfo(N_("The customer's number is the shop's own number"), permanent=True),
    131026: ErrorInfo(
        N_(
            "The message could not be delivered: the number may not be on WhatsApp, may have "
            "blocked the shop, or uses an old WhatsApp version"
        ),
        permanent=True,
    ),
    131031: ErrorInfo(
        N_("The shop's WhatsApp business account is locked (policy enforcement)"), permanent=True
    ),
    131042: ErrorInfo(
        N_(
            "WhatsApp refused the message because of a payment problem of the business account "
            "(check billing in WhatsApp Manager)"
        ),
        permanent=True,
    ),
    131045: ErrorInfo(
        N_("The shop's WhatsApp number is not registered correctly (register it again)"),
        permanent=True,
    ),
    WINDOW_CLOSED: ErrorInfo(
        N_(
            "More than 24 hours have passed since the customer last replied: only an approved "
            "template can be sent now (use !template)"
        ),
        permanent=True,
    ),
    131048: ErrorInfo(
        N_(
            "WhatsApp limits how many messages this number may send (spam rate limit); check the "
            "number's quality rating in WhatsApp Manager"
        ),
        permanent=True,
    ),
    131049: ErrorInfo(
        N_(
            "WhatsApp did not deliver this message to keep engagement healthy (too many "
            "marketing messages to this customer)"
        ),
        permanent=True,
    ),
    131050: ErrorInfo(
        N_("The customer has stopped marketing messages from the shop"), permanent=True
    ),
    131051: ErrorInfo(N_("WhatsApp does not support this kind of message"), permanent=True),
    131052: ErrorInfo(
        N_(
            "WhatsApp could not download the file the customer sent (ask them to send it "
            "another way)"
        ),
        permanent=True,
    ),
    131053: ErrorInfo(
        N_("WhatsApp could not process the file (unsupported type or size for WhatsApp)"),
        permanent=True,
    ),
    131056: ErrorInfo(
        N_("Too many messages to this customer in a short time; retrying shortly"),
        permanent=False,
        retry_after=10,
    ),
    131057: ErrorInfo(
        N_("The WhatsApp business account is in maintenance mode; retrying later"),
        permanent=False,
        retry_after=60,
    ),
    132000: ErrorInfo(
        N_("The template needs a different number of parameters than were given"), permanent=True
    ),
    132001: ErrorInfo(
        N_(
            "The template does not exist in this language or is not approved (check WhatsApp "
            "Manager and the hub's template list)"
        ),
        permanent=True,
    ),
    132005: ErrorInfo(N_("The template text is too long once filled in"), permanent=True),
    132007: ErrorInfo(N_("The template content violates a WhatsApp policy"), permanent=True),
    132012: ErrorInfo(
        N_("The template parameters are not in the format the template expects"), permanent=True
    ),
    132015: ErrorInfo(N_("The template is paused by WhatsApp for low quality"), permanent=True),
    132016: ErrorInfo(N_("The template is disabled by WhatsApp for low quality"), permanent=True),
    133010: ErrorInfo(
        N_("The shop's phone number is not registered on the WhatsApp Cloud API"), permanent=True
    ),
}
RATE_LIMITED = frozenset({4, 80007, 130429, 131056})
_SLOW_DOWN = N_("WhatsApp asked the hub to slow down; retrying")


def is_permission_code(code: int) -> bool:
    """200-299: Graph API permission errors (one code per permission)."""
    return 200 <= code <= 299


@dataclass(frozen=True)
class GraphError:
    """The documented Graph API error object, as far as it was present."""

    code: int | None
    message: str = ""
    type: str | None = None
    details: str | None = None
    subcode: int | None = None
    fbtrace_id: str | None = None


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def parse_error_body(body: object) -> GraphError | None:
    """The `error` object of a Graph API error response, or None if there is none."""
    if not isinstance(body, Mapping):
        return None
    err = body.get("error")
    if not isinstance(err, Mapping):
        return None
    data = err.get("error_data")
    details = data.get("details") if isinstance(data, Mapping) else None
    return GraphError(
        code=_int(err.get("code")),
        message=str(err.get("message") or ""),
        type=str(err["type"]) if err.get("type") else None,
        details=str(details) if details else None,
        subcode=_int(err.get("error_subcode")),
        fbtrace_id=str(err["fbtrace_id"]) if err.get("fbtrace_id") else None,
    )


def info_for(code: int | None) -> ErrorInfo | None:
    if code is None:
        return None
    if code in ERRORS:
        return ERRORS[code]
    if is_permission_code(code):
        return ERRORS[10]
    return None


def human_text(code: int | None, details: str | None = None, title: str | None = None) -> str:
    """What advisers read about a failed message (also used for webhook `failed` statuses)."""
    info = info_for(code)
    if info is not None:
        return _(info.human)
    said = details or title
    if said:
        return _("WhatsApp refused the message: {reason}").format(reason=said)
    return _("WhatsApp refused the message")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form; dates are not used by Meta)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if 0 <= seconds <= 24 * 3600 else None


def classify(status: int, body: object, retry_after_header: str | None = None) -> ExternalError:
    """An HTTP error response of the Graph API as permanent or temporary, with human text."""
    err = parse_error_body(body)
    code = err.code if err else None
    header_wait = parse_retry_after(retry_after_header)
    info = info_for(code)
    if info is not None:
        permanent = info.permanent
        human = _(info.human)
        default_wait = info.retry_after
    elif status == 429:
        permanent, human, default_wait = False, _(_SLOW_DOWN), 30.0
    elif status >= 500 or status in (408, 425):
        permanent, human, default_wait = False, _(ERRORS[2].human), None
    elif status == 401:
        permanent, human, default_wait = True, _(ERRORS[190].human), None
    else:
        permanent = True
        human = human_text(code, err.details if err else None, err.message if err else None)
        default_wait = None
    if status == 429 or (code in RATE_LIMITED):
        permanent = False
    retry_after = None if permanent else (header_wait if header_wait is not None else default_wait)
    return ExternalError(
        human,
        permanent=permanent,
        retry_after=retry_after,
        code=str(code) if code is not None else None,
    )
