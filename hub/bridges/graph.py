"""Meta's Graph API, shared by the WhatsApp Cloud API and the Messenger Platform (Messenger
and Instagram): `{api_base_url}/{api_version}/...` with a bearer token in the Authorization
header only (never in a URL, never logged), the configured timeout, connect retries and
capped answers from hub.net, and errors classified by the channel's own table.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
from babel.numbers import format_decimal

from hub.errors import ExternalError
from hub.i18n import _, current_locale
from hub.net import read_capped, with_retries

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 1_048_576  # Graph API answers are small JSON documents
# (HTTP status, JSON body or None, Retry-After header) -> the error advisers read.
Classifier = Callable[[int, Any, str | None], ExternalError]


class GraphClient:
    def __init__(
        self,
        http: aiohttp.ClientSession,
        *,
        service: str,  # "WhatsApp", "Messenger", "Instagram": in texts and log lines
        base_url: str,
        api_version: str,
        token: str,
        timeout: float,
        classify: Classifier,
    ) -> None:
        self.http = http
        self.service = service
        self.base = f"{base_url.rstrip('/')}/{api_version}"
        self._token = token
        self._seconds = timeout
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._classify = classify

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    async def call(
        self,
        method: str,
        path: str,
        *,
        json_body: dict[str, Any] | None = None,
        form: Callable[[], aiohttp.FormData] | None = None,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """One request; the answer's JSON object. `form` builds a fresh multipart body per
        attempt (a FormData can be sent only once)."""

        async def attempt() -> dict[str, Any]:
            async with self.http.request(
                method,
                self.base + path,
                headers=self.auth,
                json=json_body,
                data=form() if form else None,
                params=params,
                timeout=self.timeout,
            ) as resp:
                raw = await read_capped(resp, MAX_ANSWER_BYTES, self._answer_too_big)
                doc = _json(raw)
                if resp.status >= 400 or (isinstance(doc, dict) and "error" in doc):
                    error = self._classify(resp.status, doc, resp.headers.get("Retry-After"))
                    log.warning(
                        "%s: %s %s answered HTTP %s (code %s, %s)",
                        self.service,
                        method,
                        _what(path),
                        resp.status,
                        error.code,
                        "permanent" if error.permanent else "temporary",
                    )
                    raise error
                if not isinstance(doc, dict):
                    raise ExternalError(
                        _("{service} answered with something that is not a JSON object").format(
                            service=self.service
                        ),
                        permanent=False,
                    )
                return doc

        return await with_retries(
            attempt, service=self.service, timeout=self._seconds, idempotent=method == "GET"
        )

    async def download(
        self,
        url: str,
        max_bytes: int,
        too_big: Callable[[], ExternalError],
        *,
        with_token: bool,
        gone: Callable[[int], ExternalError | None] = lambda status: None,
    ) -> tuple[bytes, str]:
        """A file from a (signed) URL the API handed out: (bytes, Content-Type). `gone` maps
        statuses that mean "no longer there" to an error of the channel's own."""

        async def attempt() -> tuple[bytes, str]:
            headers = self.auth if with_token else {}
            async with self.http.get(url, headers=headers, timeout=self.timeout) as resp:
                if resp.status >= 400:
                    known = gone(resp.status)
                    if known is not None:
                        raise known
                    body = _json(await read_capped(resp, MAX_ANSWER_BYTES, self._answer_too_big))
                    raise self._classify(resp.status, body, resp.headers.get("Retry-After"))
                data = await read_capped(resp, max_bytes, too_big)
                return data, resp.headers.get("Content-Type", "")

        return await with_retries(
            attempt, service=self.service, timeout=self._seconds, idempotent=True
        )

    def _answer_too_big(self) -> ExternalError:
        return ExternalError(
            _("{service} answered with more than {bytes} bytes").format(
                service=self.service,
                bytes=format_decimal(MAX_ANSWER_BYTES, locale=current_locale()),
            ),
            permanent=False,
        )


def _what(path: str) -> str:
    """The endpoint's name for a log line: ids (phone numbers, customers) stay out of logs."""
    last = path.rstrip("/").rsplit("/", 1)[-1]
    return last if last.replace("_", "").isalpha() else "object"


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
