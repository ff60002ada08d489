"""The appservice API the homeserver calls: transactions, user/room queries, ping.

A transaction is stored durably (each event queued as a matrix.event job) before it is
acknowledged; a failure answers 500 so the homeserver retries. Events and receipts are
deduplicated by what they are (an event's id, a receipt's content), never by the txnId: a
repeated txnId is a retry only as long as the homeserver never numbers its transactions
anew, and Synapse on SQLite does after a restart (element-hq/synapse#14556).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from hub.db.database import Database
from hub.db.inbox import QueuedJob, store_transaction
from hub.db.jobs import room_key
from hub.errors import ExternalError
from hub.jobs.kinds import CRYPTO_SHARE_HISTORY, MATRIX_EVENT, MATRIX_RECEIPT_IN
from hub.metrics import count_transaction
from hub.net import read_body

if TYPE_CHECKING:
    from hub.matrix.crypto.machine import CryptoMachine

log = logging.getLogger(__name__)

_EPHEMERAL_KEYS = ("ephemeral", "de.sorunome.msc2409.ephemeral")
# Synapse sends at most 100 PDUs and 100 EDUs per transaction; events are at most 64 KiB.
MAX_TRANSACTION_BYTES = 16 * 1024 * 1024
# A homeserver that numbers its transactions anew repeats old txnIds until it has passed the
# highest one stored (for days, every transaction): one WARNING per interval, the rest INFO.
REUSE_WARNING_SECONDS = 3600.0


def _matrix_error(status: int, errcode: str, error: str) -> web.Response:
    return web.json_response({"errcode": errcode, "error": error}, status=status)


class AppserviceApi:
    def __init__(
        self,
        db: Database,
        hs_token: str,
        is_own_user: Callable[[str], bool],
        is_own_alias: Callable[[str], bool],
        crypto: CryptoMachine | None = None,
    ) -> None:
        """`crypto`: the bot's device when encryption is on; it takes the to-device
        messages, key counts and device list changes of each transaction."""
        self._db = db
        self._crypto = crypto
        self._hs_token = hs_token.encode()
        self._is_own_user = is_own_user
        self._is_own_alias = is_own_alias
        self._reuse_warned_at: float | None = None
        self._reuses_unwarned = 0

    def add_routes(self, app: web.Application) -> None:
        for prefix in ("/_matrix/app/v1", ""):  # "" = legacy unprefixed paths of old servers
            app.router.add_put(f"{prefix}/transactions/{{txn_id}}", self._auth(self.transaction))
            app.router.add_get(f"{prefix}/users/{{user_id}}", self._auth(self.query_user))
            app.router.add_get(f"{prefix}/rooms/{{alias}}", self._auth(self.query_alias))
        app.router.add_post("/_matrix/app/v1/ping", self._auth(self.ping))

    def _auth(
        self, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def checked(request: web.Request) -> web.StreamResponse:
            header = request.headers.get("Authorization", "")
            token = (
                header[7:]
                if header.startswith("Bearer ")
                else request.query.get("access_token", "")
            )
            if not token:
                log.warning("appservice: request without token from %s", request.remote)
                return _matrix_error(401, "M_UNAUTHORIZED", "missing hs_token")
            # Undecodable header bytes arrive as lone surrogates: encode them back, no crash.
            if not hmac.compare_digest(token.encode("utf-8", "surrogateescape"), self._hs_token):
                log.warning("appservice: wrong hs_token from %s", request.remote)
                return _matrix_error(403, "M_FORBIDDEN", "wrong hs_token")
            return await handler(request)

        return checked

    async def transaction(self, request: web.Request) -> web.StreamResponse:
        txn_id = request.match_info["txn_id"]
        try:
            raw = await read_body(request, MAX_TRANSACTION_BYTES)
        except web.HTTPRequestEntityTooLarge:
            return _matrix_error(413, "M_TOO_LARGE", "transaction too large")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            log.warning("appservice: transaction %s is not valid JSON", txn_id)
            return _matrix_error(400, "M_NOT_JSON", "body is not JSON")
        events = body.get("events") if isinstance(body, dict) else None
        if not isinstance(events, list):
            return _matrix_error(400, "M_BAD_JSON", "events must be a list")
        count_transaction(events)  # its lag: now - the oldest event's origin_server_ts
        jobs: list[QueuedJob] = []
        for event in events:
            if not _is_event(event):
                log.warning("appservice: skipping malformed event in transaction %s", txn_id)
                continue
            if self._is_own_user(event["sender"]):
                continue  # the homeserver echoes our own ghosts' and bot's events
            jobs.append((MATRIX_EVENT, room_key(event["room_id"]), event, event["event_id"]))
        jobs += _receipt_jobs(body)
        if self._crypto is not None:
            try:
                # Before the acknowledgement: a to-device message comes only once.
                joined = await self._crypto.transaction(body)
            except ExternalError as exc:
                log.warning("appservice: transaction %s: encryption step failed: %s", txn_id, exc)
                return _matrix_error(500, "M_UNKNOWN", "try again")
            jobs += [
                (
                    CRYPTO_SHARE_HISTORY,
                    room_key(room) if room else f"user:{user}",
                    {"room_id": room, "user_id": user},
                    key,
                )
                for room, user, key in joined
            ]
        if not jobs:
            # Only our own echoes (most transactions while we send): nothing to store, and a
            # redelivery of it would be dropped just the same.
            return web.json_response({})
        # One transaction: the txn id and every job not queued before (by event id); a
        # failure answers 500. The homeserver waits for the answer: urgent.
        stored = await self._db.write(store_transaction, txn_id, jobs, urgent=True)
        if not stored.repeated:
            log.debug("appservice: transaction %s stored %d events", txn_id, stored.queued)
        elif stored.queued:
            self._txn_id_reused(txn_id, stored.queued, len(jobs))
        else:
            log.info("appservice: transaction %s repeated; its events were stored already", txn_id)
        return web.json_response({})

    def _txn_id_reused(self, txn_id: str, new: int, total: int) -> None:
        """A txnId seen before came with events never seen: the homeserver numbers its
        transactions anew. Nothing is lost (the new events were stored); say so."""
        now = time.monotonic()
        if (
            self._reuse_warned_at is not None
            and now - self._reuse_warned_at < REUSE_WARNING_SECONDS
        ):
            self._reuses_unwarned += 1
            log.info(
                "appservice: transaction %s repeated with %d new of %d events; stored them",
                txn_id,
                new,
                total,
            )
            return
        log.warning(
            "appservice: transaction %s repeated with different content (%d new of %d events); "
            "the new events were stored. The homeserver reuses transaction ids (Synapse on "
            "SQLite numbers them from 1 again after a restart, element-hq/synapse#14556); "
            "events are deduplicated by their own ids, so nothing is lost or doubled. "
            "%d more such transactions since the last warning (logged at INFO).",
            txn_id,
            new,
            total,
            self._reuses_unwarned,
        )
        self._reuse_warned_at, self._reuses_unwarned = now, 0

    async def query_user(self, request: web.Request) -> web.StreamResponse:
        # Ghosts are created on demand by the hub, never on a client's lookup.
        user_id = request.match_info["user_id"]
        if self._is_own_user(user_id):
            log.debug("appservice: user query for %s", user_id)
        return _matrix_error(404, "M_NOT_FOUND", "user not provided by this appservice")

    async def query_alias(self, request: web.Request) -> web.StreamResponse:
        alias = request.match_info["alias"]
        if self._is_own_alias(alias):
            log.debug("appservice: alias query for %s", alias)
        return _matrix_error(404, "M_NOT_FOUND", "room not provided by this appservice")

    async def ping(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            body = {}
        txn = body.get("transaction_id") if isinstance(body, dict) else None
        log.info("appservice: pinged by the homeserver (%s)", txn)
        return web.json_response({})


def _receipt_jobs(body: dict[str, Any]) -> list[QueuedJob]:
    """Advisers' read receipts; typing and presence are not used (yet). A receipt has no id
    of its own: its content is its identity (not its place in a transaction, whose id the
    homeserver may reuse)."""
    ephemeral: list[Any] = next(
        (body[k] for k in _EPHEMERAL_KEYS if isinstance(body.get(k), list)), []
    )
    return [
        (MATRIX_RECEIPT_IN, room_key(edu["room_id"]), edu, f"edu:{_digest(edu)}")
        for edu in ephemeral
        if isinstance(edu, dict)
        and edu.get("type") == "m.receipt"
        and isinstance(edu.get("room_id"), str)
        and isinstance(edu.get("content"), dict)
    ]


def _digest(value: Any) -> str:
    """A stable hash of a JSON value (ASCII escapes: lone surrogates hash too)."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def _is_event(event: object) -> bool:
    return (
        isinstance(event, dict)
        # Matrix event ids are at most 255 bytes; the job's key "matrix.event/<id>" fits.
        and _storable(event.get("event_id"), 255)
        and _storable(event.get("room_id"), 255)
        and isinstance(event.get("type"), str)
        and isinstance(event.get("sender"), str)
    )


def _storable(value: object, max_len: int) -> bool:
    """A string a database column can hold: valid UTF-8 (no lone surrogate), no NUL."""
    if not isinstance(value, str) or len(value) > max_len or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
