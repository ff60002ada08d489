"""The one error table of the Meta family (Messenger and Instagram share the Graph API).

A Graph API error body is `{"error": {"message", "type", "code", "error_subcode",
"fbtrace_id"}}`; `(code, subcode)` is looked up first, then `code` alone. The human texts
are shown to advisers in the room ("⚠️ Not delivered to the customer: …").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hub.errors import BLOCKED, ExternalError
from hub.i18n import N_, _


@dataclass(frozen=True)
class MetaError:
    human: str  # an English msgid: shown with _() in the shop's language
    permanent: bool
    blocked: bool = False  # the customer cannot be reached by the shop any more


_WINDOW = MetaError(
    N_(
        "the 24-hour window has closed (Meta refused: message sent outside the allowed window); "
        "the customer has to write again first"
    ),
    permanent=True,
)
_RATE = MetaError(N_("Meta's rate limit was reached; the message will be sent again"), False)
_UNAVAILABLE = MetaError(
    N_(
        "this person isn't available right now (they may have blocked the page or turned off "
        "its messages)"
    ),
    permanent=True,
    blocked=True,
)
_TOKEN = MetaError(
    N_(
        "the page access token was refused (expired or revoked): renew page_access_token in "
        "the hub's configuration"
    ),
    permanent=True,
)
_PERMISSION = MetaError(
    N_(
        "the app lacks a permission for this page (check pages_messaging / "
        "instagram_manage_messages and the page's messaging tasks)"
    ),
    permanent=True,
)
_TEMPORARY = MetaError(N_("Meta reported a temporary error; the message will be sent again"), False)

# (code, subcode) first; (code, None) as the fallback for the code.
META_ERRORS: dict[tuple[int, int | None], MetaError] = {
    (10, 2018278): _WINDOW,  # Messenger: outside the allowed window
    (10, 2018065): _WINDOW,  # older subcode of the same
    (10, 2534022): _WINDOW,  # Instagram: outside the allowed window
    (10, None): _PERMISSION,
    (200, 1545041): _UNAVAILABLE,
    (551, None): _UNAVAILABLE,
    (2, None): _TEMPORARY,
    (1200, None): MetaError(N_("Meta had a temporary send failure; it will be tried again"), False),
    (4, None): _RATE,  # application request limit
    (17, None): _RATE,  # user request limit
    (32, None): _RATE,  # page request limit
    (613, None): _RATE,  # calls exceeded the rate limit
    (190, None): _TOKEN,
    (102, None): _TOKEN,  # session key invalid
    (200, None): _PERMISSION,
    (230, None): _PERMISSION,
    (100, 2018001): MetaError(N_("no matching user found for this page"), permanent=True),
    (100, 2018109): MetaError(N_("the attachment is larger than Meta allows"), permanent=True),
    (100, 2018047): MetaError(N_("Meta could not process the attachment upload"), permanent=True),
    (100, None): MetaError(N_("Meta refused the request as invalid"), permanent=True),
}


def lookup(code: int | None, subcode: int | None) -> MetaError | None:
    if code is None:
        return None
    return META_ERRORS.get((code, subcode)) or META_ERRORS.get((code, None))


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def retry_after_seconds(header: str | None) -> float | None:
    """The Retry-After header in seconds (Meta's 429s may carry one); dates are ignored."""
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        return None


def classify(status: int, body: Any, retry_after: str | None = None) -> ExternalError:
    """The ExternalError for an HTTP error answer of the Graph API."""
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    code, subcode = _int(error.get("code")), _int(error.get("error_subcode"))
    code_text = f"{code}/{subcode}" if subcode else (str(code) if code is not None else None)
    known = lookup(code, subcode)
    delay = retry_after_seconds(retry_after)
    if status == 429:
        human = known.human if known and not known.permanent else _RATE.human
        return ExternalError(_(human), permanent=False, retry_after=delay, code=code_text)
    if known is not None:
        return ExternalError(
            _("{reason} (Meta error {code})").format(reason=_(known.human), code=code_text),
            permanent=known.permanent,
            retry_after=None if known.permanent else delay,
            code=BLOCKED if known.blocked else code_text,
        )
    if status >= 500 or error.get("is_transient") is True:
        return ExternalError(
            _(
                "Meta is unavailable right now (HTTP {status}); the message will be sent again"
            ).format(status=status),
            permanent=False,
            retry_after=delay,
            code=code_text,
        )
    detail = str(error.get("message") or f"HTTP {status}")[:200]
    human = _("Meta refused the message: {reason}").format(reason=detail)
    if code_text:
        human = _("{reason} (Meta error {code})").format(reason=human, code=code_text)
    return ExternalError(human, permanent=True, code=code_text)
