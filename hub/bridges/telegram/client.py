"""The Telegram Bot API over the hub's aiohttp session: `{base}/bot<token>/<method>`.

The bot token is part of every URL, so no URL (and no aiohttp exception text, which can
contain one) is ever logged or put into an error; errors are classified through
`errors.classify`. Connect retries and capped downloads come from hub.net; every longer
retry is the job queue's.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp

from hub.bridges.telegram.errors import classify, network_error
from hub.errors import ExternalError
from hub.i18n import _
from hub.net import read_capped, with_retries

log = logging.getLogger(__name__)


class TelegramClient:
    def __init__(
        self,
        http: aiohttp.ClientSession,
        base_url: str,
        token: str,
        *,
        timeout: float,
        max_download_bytes: int,
    ) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._token = token
        self._seconds = timeout
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self.max_download_bytes = max_download_bytes

    def _method_url(self, method: str) -> str:
        return f"{self._base}/bot{self._token}/{method}"

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """A JSON call; returns the `result` of the answer."""
        body = {k: v for k, v in (params or {}).items() if v is not None}
        return await self._post(method, lambda: {"json": body})

    async def upload(
        self,
        method: str,
        params: dict[str, Any],
        field: str,
        data: bytes,
        filename: str,
        mimetype: str,
    ) -> Any:
        """A multipart/form-data call with one file; nested values are JSON-serialized, as
        the Bot API expects for e.g. reply_markup and reply_parameters."""

        def form() -> dict[str, Any]:
            fd = aiohttp.FormData()
            for key, value in params.items():
                if value is None:
                    continue
                if isinstance(value, dict | list | bool):
                    value = json.dumps(value, ensure_ascii=False)
                fd.add_field(key, str(value))
            fd.add_field(field, data, filename=filename, content_type=mimetype)
            return {"data": fd}

        return await self._post(method, form)

    async def _post(self, method: str, kwargs: Callable[[], dict[str, Any]]) -> Any:
        async def attempt() -> tuple[int, bytes]:
            async with self._http.post(
                self._method_url(method), timeout=self._timeout, **kwargs()
            ) as resp:
                return resp.status, await resp.read()

        # Not idempotent: a call that may have reached Telegram is not repeated here.
        status, raw = await with_retries(
            attempt,
            service="Telegram",
            timeout=self._seconds,
            idempotent=False,
            failed=network_error,
        )
        doc = _json(raw)
        if status == 200 and doc is not None and doc.get("ok") is True:
            log.debug("telegram %s: ok", method)
            return doc.get("result")
        error = classify(status, doc)
        log.info("telegram %s failed: HTTP %d, %s", method, status, error.code)
        raise error

    async def download(self, file_path: str) -> tuple[bytes, str]:
        """Fetch `https://api.telegram.org/file/bot<token>/<file_path>` (from getFile)."""
        url = f"{self._base}/file/bot{self._token}/{quote(file_path, safe='/')}"
        cap = self.max_download_bytes

        async def attempt() -> tuple[bytes, str]:
            async with self._http.get(url, timeout=self._timeout) as resp:
                if resp.status != 200:
                    raise classify(resp.status, _json(await resp.read()))
                data = await read_capped(resp, cap, lambda: _too_big(cap))
                return data, resp.headers.get("Content-Type", "application/octet-stream")

        data, ctype = await with_retries(
            attempt,
            service="Telegram",
            timeout=self._seconds,
            idempotent=True,
            failed=network_error,
        )
        return data, ctype.split(";")[0].strip()


def _too_big(cap: int) -> ExternalError:
    return ExternalError(
        _(
            "The customer's file is larger than the hub accepts ({mb} MB, "
            "channels.telegram.max_media_bytes)."
        ).format(mb=cap // (1024 * 1024)),
        permanent=True,
        code="file_too_big",
    )


def _json(raw: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None
