"""The hub's client-server API client, acting as the bot or as any ghost of the appservice.

Requests are built by the small path builders below (the same paths and bodies as
matrix-nio's sans-I/O `nio.Api`, whose import would cost the hub ~9 MiB for a handful of
URLs) and sent through one aiohttp session with the as_token in a header; acting as a ghost
adds `?user_id=` (appservice masquerading). Each call has a timeout and a small bounded
retry on connection errors (hub.net); long-term retry is the job queue's, so errors are
raised, classified (MatrixError, MatrixUnavailable: both ExternalErrors). Start-up is the
exception: `wait_for_homeserver` retries until the homeserver answers, saying why it waits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import aiohttp
from yarl import URL

from hub.errors import ExternalError
from hub.i18n import _
from hub.matrix import startup_errors
from hub.net import network_cause, read_capped, with_retries

log = logging.getLogger(__name__)
T = TypeVar("T")

CLIENT_V3 = "/_matrix/client/v3"
MEDIA_V3 = "/_matrix/media/v3"
# The one room encryption algorithm of the Matrix spec (m.room.encryption).
MEGOLM = "m.megolm.v1.aes-sha2"


def _path(*parts: str, base: str = CLIENT_V3) -> str:
    """Percent-encode every path segment, "/" included (as nio.Api._build_path does)."""
    return f"{base}/{'/'.join(quote(part, safe='') for part in parts)}".rstrip("/")


def _json(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"))


class MatrixError(ExternalError):
    """The homeserver answered with an error (`errcode` as the Matrix spec names it)."""

    def __init__(
        self, status: int, errcode: str, error: str, retry_after_ms: int | None = None
    ) -> None:
        # 4xx other than rate limiting will not get better by retrying.
        limited = status == 429 or errcode == "M_LIMIT_EXCEEDED"
        super().__init__(
            f"{status} {errcode}: {error}",
            permanent=400 <= status < 500 and not limited,
            retry_after=retry_after_ms / 1000 if retry_after_ms else None,
            code=errcode,
        )
        self.status = status
        self.errcode = errcode
        self.error = error
        self.retry_after_ms = retry_after_ms


class MatrixUnavailable(ExternalError):
    """The homeserver could not be reached (connection refused, timeout). `cause` says why in
    a few English words for the log (`hub.net.network_cause`)."""

    def __init__(self, what: str, cause: str = "") -> None:
        super().__init__(
            _("the homeserver could not be reached ({reason})").format(reason=what),
            permanent=False,
        )
        self.cause = cause


def _rewrite(path: str, user_id: str | None) -> str:
    """Drop an access_token query parameter (we send a header) and add user_id."""
    if "?" not in path:
        return f"{path}?{urlencode({'user_id': user_id})}" if user_id else path
    parts = urlsplit(path)
    query = [
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "access_token"
    ]
    if user_id:
        query.append(("user_id", user_id))
    return urlunsplit(("", "", parts.path, urlencode(query), ""))


class MatrixClient:
    def __init__(
        self,
        http: aiohttp.ClientSession,
        base_url: str,
        as_token: str,
        bot_mxid: str,
        timeout: float = 30.0,
    ) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._token = as_token
        self.bot_mxid = bot_mxid
        self._seconds = timeout
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        user_id: str | None = None,
        data: bytes | None = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """`timeout`: seconds for this request instead of the client's."""
        # Paths are built quoted (_path, urlencode): telling yarl so spares it re-quoting.
        url = URL(self._base + _rewrite(path, user_id), encoded=True)
        seconds = timeout or self._seconds
        client_timeout = aiohttp.ClientTimeout(total=timeout) if timeout else self._timeout
        headers = {"Authorization": f"Bearer {self._token}"}
        payload: bytes | None = data
        if payload is None and body is not None:
            payload = (body if isinstance(body, str) else json.dumps(body)).encode()
        if payload is not None:
            headers["Content-Type"] = content_type

        failures: list[BaseException] = []  # why the last attempt failed, for the log

        async def attempt() -> dict[str, Any]:
            try:
                async with self._http.request(
                    method, url, data=payload, headers=headers, timeout=client_timeout
                ) as resp:
                    return self._parse(resp.status, await resp.read())
            except (aiohttp.ClientError, OSError) as exc:  # TimeoutError is an OSError
                failures.append(exc)
                raise

        # Every request of the hub is idempotent (transaction ids, aliases, "already"
        # answers taken as success), so a broken connection may be retried too.
        return await with_retries(
            attempt,
            service="the homeserver",
            timeout=seconds,
            idempotent=True,
            failed=lambda why: MatrixUnavailable(
                f"{method} {url.path}: {why}",
                network_cause(failures[-1], seconds) if failures else "",
            ),
        )

    @staticmethod
    def _parse(status: int, raw: bytes) -> dict[str, Any]:
        try:
            doc = json.loads(raw) if raw else {}
        except ValueError:
            doc = {}
        if not isinstance(doc, dict):
            doc = {}
        if status >= 400:
            retry = doc.get("retry_after_ms")
            raise MatrixError(
                status,
                str(doc.get("errcode", "M_UNKNOWN")),
                str(doc.get("error", raw[:200].decode(errors="replace"))),
                retry if isinstance(retry, int) else None,
            )
        return doc

    # -- users ---------------------------------------------------------------------------

    async def ensure_registered(self, localpart: str) -> None:
        """Register an appservice user; one that exists already is success.

        With `inhibit_login` (client-server API, POST /register): no device and no access
        token are made for the user. The hub acts as its users with the as_token and
        `?user_id=`; a device per ghost would only pile up on the homeserver (and the
        homeservers of MSC4190 and of OAuth2 delegation refuse appservice registrations
        without it)."""
        try:
            await self.request(
                "POST",
                "/_matrix/client/v3/register",
                {
                    "type": "m.login.application_service",
                    "username": localpart,
                    "inhibit_login": True,
                },
            )
        except MatrixError as exc:
            if exc.errcode != "M_USER_IN_USE":
                raise

    async def display_name(self, mxid: str) -> str | None:
        """A user's display name from their profile (None when they have none)."""
        try:
            doc = await self.request("GET", _path("profile", mxid, "displayname"))
        except MatrixError as exc:
            if exc.errcode == "M_NOT_FOUND":
                return None
            raise
        name = doc.get("displayname")
        return str(name) if name else None

    async def set_displayname(self, mxid: str, name: str) -> None:
        body = _json({"displayname": name})
        await self.request("PUT", _path("profile", mxid, "displayname"), body, user_id=mxid)

    # -- rooms ---------------------------------------------------------------------------

    async def create_room(
        self,
        *,
        alias_localpart: str,
        name: str,
        topic: str,
        invite: list[str],
        power_users: dict[str, int],
        encrypted: bool = False,
    ) -> str:
        """Create a private room as the bot; the alias makes a retried creation detectable.
        `encrypted`: Megolm from its first event (in initial_state, so no event of the room
        is ever sent in the clear)."""
        body: dict[str, Any] = {
            "visibility": "private",
            "creation_content": {"m.federate": True},
            "is_direct": False,
        }
        if alias_localpart:
            body["room_alias_name"] = alias_localpart
        if name:
            body["name"] = name
        if topic:
            body["topic"] = topic
        body["preset"] = "private_chat"
        if invite:
            body["invite"] = list(invite)
        # Room v12 forbids listing the creator here: it has unlimited power implicitly.
        body["power_level_content_override"] = {"users": power_users}
        if encrypted:
            body["initial_state"] = [
                {
                    "type": "m.room.encryption",
                    "state_key": "",
                    "content": {"algorithm": MEGOLM},
                }
            ]
        doc = await self.request("POST", _path("createRoom"), _json(body))
        return str(doc["room_id"])

    async def room_state(
        self, room_id: str, event_type: str, state_key: str = ""
    ) -> dict[str, Any] | None:
        """The content of a state event as the bot sees it; None when the room has none."""
        try:
            return await self.request(
                "GET", _path("rooms", room_id, "state", event_type, state_key)
            )
        except MatrixError as exc:
            if exc.errcode == "M_NOT_FOUND":
                return None
            raise

    async def leave(self, room_id: str, *, as_user: str | None = None) -> None:
        await self.request("POST", _path("rooms", room_id, "leave"), _json({}), user_id=as_user)

    async def forget(self, room_id: str, *, as_user: str | None = None) -> None:
        """Drop a left room from the user's list (the homeserver may then purge it)."""
        await self.request("POST", _path("rooms", room_id, "forget"), _json({}), user_id=as_user)

    async def joined_members(self, room_id: str) -> list[str]:
        """The MXIDs joined to a room the bot is in."""
        doc = await self.request("GET", _path("rooms", room_id, "joined_members"))
        joined = doc.get("joined")
        return [str(mxid) for mxid in joined] if isinstance(joined, dict) else []

    async def resolve_alias(self, alias: str) -> str | None:
        try:
            doc = await self.request("GET", f"/_matrix/client/v3/directory/room/{quote(alias)}")
        except MatrixError as exc:
            if exc.errcode == "M_NOT_FOUND":
                return None
            raise
        return str(doc["room_id"])

    async def invite(self, room_id: str, mxid: str) -> None:
        body = _json({"user_id": mxid})
        try:
            await self.request("POST", _path("rooms", room_id, "invite"), body)
        except MatrixError as exc:
            # Already joined or invited is the state we wanted.
            if exc.status != 403 or "already" not in exc.error:
                raise

    async def join(self, room_id: str, mxid: str) -> None:
        await self.request("POST", _path("join", room_id), {}, user_id=mxid)

    async def send_event(
        self,
        room_id: str,
        event_type: str,
        content: dict[str, Any],
        txn_id: str,
        *,
        as_user: str | None = None,
    ) -> str:
        """Send an event; the same txn_id from the same user is deduplicated by the server."""
        path = _path("rooms", room_id, "send", event_type, txn_id)
        doc = await self.request("PUT", path, _json(content), user_id=as_user)
        return str(doc["event_id"])

    async def redact(
        self, room_id: str, event_id: str, txn_id: str, *, as_user: str | None = None
    ) -> str:
        path = _path("rooms", room_id, "redact", event_id, txn_id)
        doc = await self.request("PUT", path, _json({}), user_id=as_user)
        return str(doc["event_id"])

    async def put_state(
        self, room_id: str, event_type: str, content: dict[str, Any], state_key: str = ""
    ) -> str:
        path = _path("rooms", room_id, "state", event_type, state_key)
        doc = await self.request("PUT", path, _json(content))
        return str(doc["event_id"])

    async def send_receipt(self, room_id: str, event_id: str, as_user: str) -> None:
        path = _path("rooms", room_id, "receipt", "m.read", event_id)
        await self.request("POST", path, _json({"thread_id": "main"}), user_id=as_user)

    # -- media ---------------------------------------------------------------------------

    async def upload(
        self, data: bytes, content_type: str, filename: str, *, as_user: str | None = None
    ) -> str:
        path = _path("upload", base=MEDIA_V3)
        if filename:
            path += "?" + urlencode({"filename": filename})
        doc = await self.request(
            "POST", path, data=data, content_type=content_type, user_id=as_user
        )
        return str(doc["content_uri"])

    async def download(self, mxc: str, max_bytes: int) -> tuple[bytes, str]:
        """Fetch media through the authenticated media API (Matrix 1.11)."""
        if not mxc.startswith("mxc://") or mxc.count("/") != 3:
            raise MatrixError(400, "M_INVALID_PARAM", f"not an mxc URI: {mxc[:80]}")
        server, media_id = mxc[len("mxc://") :].split("/", 1)
        url = f"{self._base}/_matrix/client/v1/media/download/{quote(server)}/{quote(media_id)}"
        headers = {"Authorization": f"Bearer {self._token}"}

        def too_big() -> MatrixError:
            # Shown to advisers when an adviser's file cannot go to the customer.
            text = _("the file is larger than {bytes} bytes").format(bytes=max_bytes)
            return MatrixError(413, "M_TOO_LARGE", text)

        async def attempt() -> tuple[bytes, str]:
            async with self._http.get(url, headers=headers, timeout=self._timeout) as resp:
                if resp.status >= 400:
                    self._parse(resp.status, await resp.read())
                data = await read_capped(resp, max_bytes, too_big)
                return data, resp.headers.get("Content-Type", "application/octet-stream")

        return await with_retries(
            attempt,
            service="the homeserver",
            timeout=self._seconds,
            idempotent=True,
            failed=lambda why: MatrixUnavailable(f"download {mxc}: {why}"),
        )

    # -- appservice ----------------------------------------------------------------------

    async def ping(self, appservice_id: str, txn_id: str) -> dict[str, Any]:
        """Ask the homeserver to ping us back; a success makes it retry queued transactions."""
        return await self.request(
            "POST",
            f"/_matrix/client/v1/appservice/{quote(appservice_id)}/ping",
            {"transaction_id": txn_id},
        )

    async def whoami(self, timeout: float | None = None) -> str:
        doc = await self.request("GET", "/_matrix/client/v3/account/whoami", timeout=timeout)
        return str(doc.get("user_id", ""))


def startup_problem(exc: MatrixError | MatrixUnavailable) -> startup_errors.Waiting:
    if isinstance(exc, MatrixUnavailable):
        return startup_errors.unreachable(exc.cause)
    return startup_errors.answered(exc.status, exc.errcode, exc.error)


async def wait_for_homeserver(
    probe: Callable[[], Awaitable[T]],
    url: str,
    *,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> T:
    """Run `probe` (start-up's first requests to the homeserver) until the homeserver answers
    it, and say what the hub is waiting for: at the first failure one line with the reason
    and what to check (hub.matrix.startup_errors), then one short line per attempt (every
    1, 2, 4 … 30 s), a whole line again when the reason changes, and once it answers how
    long it took. No tracebacks: these are expected conditions, not bugs.

    There is no deadline. Whatever the hub waits for is fixed outside it (Synapse started,
    its registration loaded, a proxy's upstream back), and the hub goes on by itself once it
    is; exiting instead would only have the service manager start it into the same wait
    (mautrix bridges wait the same way). While it waits the hub does not listen yet:
    messengers deliver their webhooks again later, and /healthz does not answer (a liveness
    probe that restarts the hub only restarts the wait). SIGTERM stops it at once.

    Errors other than the homeserver's (StartupError from the probe) pass through."""
    started = time.monotonic()
    shown: startup_errors.Waiting | None = None
    attempt = 0
    while True:
        attempt += 1
        try:
            result = await probe()
        except (MatrixError, MatrixUnavailable) as exc:
            waiting = startup_problem(exc)
            if waiting != shown:
                log.warning("%s", startup_errors.first_line(waiting, url))
                shown = waiting
            else:
                log.warning("%s", startup_errors.retry_line(waiting, attempt))
            await sleep(startup_errors.retry_delay(attempt))
            continue
        if shown is not None:
            log.info("%s", startup_errors.back_line(time.monotonic() - started))
        return result
