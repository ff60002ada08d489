"""HTTP plumbing shared by every edge: whole request bodies up to a cap (webhooks, the
homeserver's transactions), and for calls to other systems bounded connect retries,
size-capped reads and why a call got no answer, in a few words for the log.

Only a failure before the request can have reached the other side is retried here (twice):
repeating a POST that may have arrived could send a customer the same message twice. Every
longer retry is the job queue's, so network failures come out as temporary ExternalErrors.
Nothing here logs or raises a URL: some carry secrets (Telegram's bot token).
"""

from __future__ import annotations

import asyncio
import errno
import re
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp
from aiohttp import web
from babel.numbers import format_decimal

from hub.errors import ExternalError
from hub.i18n import _, current_locale

T = TypeVar("T")

CONNECT_RETRIES = 2
CHUNK = 64 * 1024


async def read_body(request: web.Request, cap: int) -> bytes:
    """The whole raw request body; 413 when it is (or announces to be) over `cap` bytes.
    One `read(n)` would return only what the socket delivered so far: a signed webhook of a
    few hundred KB would be hashed truncated and refused as forged."""
    if request.content_length is not None and request.content_length > cap:
        raise web.HTTPRequestEntityTooLarge(max_size=cap, actual_size=request.content_length)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > cap:
            raise web.HTTPRequestEntityTooLarge(max_size=cap, actual_size=size)
        chunks.append(chunk)
    return b"".join(chunks)


def unreachable(service: str, why: str) -> ExternalError:
    return ExternalError(
        _("cannot connect to {service} ({reason}); it will be tried again").format(
            service=service, reason=why
        ),
        permanent=False,
        code="unreachable",
    )


async def with_retries(
    attempt: Callable[[], Awaitable[T]],
    *,
    service: str,
    timeout: float,
    idempotent: bool,
    failed: Callable[[str], ExternalError] | None = None,
) -> T:
    """Run one request; retry it when the connection could not be made (or, for an idempotent
    request, broke off). Network failures become `failed(reason)`, by default a temporary
    ExternalError naming `service`; errors the attempt raised itself pass through."""
    fail = failed or (lambda why: unreachable(service, why))
    why = _("connection failed")
    for n in range(CONNECT_RETRIES + 1):
        try:
            return await attempt()
        except ExternalError:
            raise
        except aiohttp.ClientConnectorError:
            why = _("connection failed")
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
            why = _("the connection broke off ({error})").format(error=type(exc).__name__)
            if not idempotent:
                raise fail(why) from None
        except TimeoutError:
            seconds = format_decimal(timeout, locale=current_locale())
            raise (
                failed(_("no answer within {seconds} s").format(seconds=seconds))
                if failed
                else ExternalError(
                    _("{service} did not answer within {seconds} s; it will be tried again").format(
                        service=service, seconds=seconds
                    ),
                    permanent=False,
                    code="timeout",
                )
            ) from None
        except aiohttp.ClientError as exc:
            raise fail(type(exc).__name__) from None
        if n < CONNECT_RETRIES:
            await asyncio.sleep(0.2 * (n + 1))
    raise fail(why)


# errno of a failed connect → a few words for the log.
_CONNECT_ERRNO = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "connect timed out",
    errno.EADDRNOTAVAIL: "address not available",
}


def network_cause(exc: BaseException, timeout: float) -> str:
    """Why a request got no answer, in a few English words for the log ("connection
    refused", "host name not found", "TLS handshake failed: wrong version number", "no answer
    within 10 s"): never a URL or an exception's repr (aiohttp's spell out their connection
    key)."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return "TLS certificate not accepted"
    if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError):
        reason = getattr(getattr(exc, "os_error", exc), "reason", None)
        return "TLS handshake failed" + (
            f": {reason.lower().replace('_', ' ')}" if isinstance(reason, str) else ""
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        if isinstance(os_error, socket.gaierror):
            # EAI_AGAIN: the resolver did not answer, which says nothing about the name.
            again = os_error.errno == socket.EAI_AGAIN
            return "name resolution failed" if again else "host name not found"
        if os_error.errno is None:  # one attempt per address failed differently
            numbers = [int(n) for n in re.findall(r"\[Errno (\d+)\]", str(os_error))]
            known = [n for n in _CONNECT_ERRNO if n in numbers]  # refused first
            return _CONNECT_ERRNO[known[0]] if known else "connection failed"
        return _CONNECT_ERRNO.get(os_error.errno, "connection failed")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the answer broke off"
    if isinstance(exc, OSError) and exc.errno in _CONNECT_ERRNO:
        return _CONNECT_ERRNO[exc.errno]
    if isinstance(exc, aiohttp.InvalidURL):
        return "not a valid URL"
    return "connection failed"


async def read_capped(
    resp: aiohttp.ClientResponse, max_bytes: int, too_big: Callable[[], ExternalError]
) -> bytes:
    """A response body of at most `max_bytes`, refused early when it announces more."""
    if resp.content_length is not None and resp.content_length > max_bytes:
        raise too_big()
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise too_big()
        chunks.append(chunk)
    return b"".join(chunks)
