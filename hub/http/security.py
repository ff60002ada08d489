"""The security headers of every response the hub serves, set in one place.

One ``on_response_prepare`` hook (``install_security_headers``) runs for every response of the
application just before its headers go out: the pages, the widget script, media, the JSON
APIs, the answers to webhooks and to the homeserver, errors raised as ``HTTPException``, the
router's own 404 and 405 and aiohttp's 500 page. A handler therefore cannot forget them; the
class of defect "this page has no nosniff" cannot come back with a new route.

- ``X-Content-Type-Options: nosniff`` on everything: a browser never guesses a type, so an
  uploaded file or a JSON answer cannot be run as a script or rendered as HTML.
- ``Content-Security-Policy``: a response that states its own keeps it (a page with its inline
  stylesheet, the demo page's nonce, media's sandbox); every other gets ``STRICT_CSP``, which
  lets a document load nothing at all and be framed by no one. That is what an error page, a
  JSON body or a script file opened on its own needs (a script's policy never applies to the
  page that includes it).
- Documents (HTML) also get ``X-Frame-Options: DENY`` (browsers without frame-ancestors) and
  ``Referrer-Policy: same-origin`` unless they set their own.

Pages build their policy with ``page_csp`` and their headers with ``page_headers``.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web

STRICT_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
NOSNIFF = "nosniff"


def page_csp(
    *,
    script_src: Iterable[str] = ("'self'",),
    style_inline: bool = False,
    img_src: Iterable[str] = (),
    connect_src: Iterable[str] = (),
) -> str:
    """A page's policy: everything from the hub itself only, no plugins, no framing, no
    <base>, forms posted back to the hub. ``style_inline`` allows the page's own <style>
    (style attributes included); the other arguments add sources to 'self'."""
    styles = "'self' 'unsafe-inline'" if style_inline else "'self'"
    directives = [
        "default-src 'self'",
        "script-src " + " ".join(script_src),
        f"style-src {styles}",
        " ".join(["img-src 'self' data:", *img_src]),
        " ".join(["connect-src 'self'", *connect_src]),
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
    return "; ".join(directives)


def page_headers(csp: str | None = None) -> dict[str, str]:
    """The headers of an HTML page: its policy (``page_csp()`` by default), no framing, no
    sniffing, referrers only to the hub itself."""
    return {
        "Content-Security-Policy": csp or page_csp(),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": NOSNIFF,
        "Referrer-Policy": "same-origin",
    }


def _is_document(response: web.StreamResponse) -> bool:
    content_type = response.headers.get("Content-Type", response.content_type or "")
    return content_type.split(";", 1)[0].strip().lower() in ("text/html", "application/xhtml+xml")


async def add_security_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """The on_response_prepare hook: the headers above, where the response has none."""
    headers = response.headers
    headers["X-Content-Type-Options"] = NOSNIFF
    headers.setdefault("Content-Security-Policy", STRICT_CSP)
    if _is_document(response):
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Referrer-Policy", "same-origin")


def install_security_headers(app: web.Application) -> None:
    """Give every response of ``app`` the security headers (once, however often called).
    Must run before the application starts serving (at creation or in a start-up step)."""
    if add_security_headers not in app.on_response_prepare:
        app.on_response_prepare.append(add_security_headers)
