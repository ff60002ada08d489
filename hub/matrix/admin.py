"""The hub's client for the Synapse admin API: what consent and erasure need beyond what an
appservice may do.

An appservice can redact events but cannot remove a file from the media store, delete a
room from the database or deactivate a user. A photo whose consent was refused, and a
customer who asked to be erased, need exactly that, so the hub optionally holds the access
token of a server admin (`homeserver.admin_token`) and uses it only here.

Every call goes through `MatrixClient.request` (timeouts, bounded connect retries, errors as
`MatrixError` / `MatrixUnavailable`, both ExternalErrors) with the admin's token in place of
the as_token. Every method is idempotent: what is already gone counts as done, so a job the
queue retries after a lost answer succeeds. The answers this module relies on (404
M_NOT_FOUND for unknown media and users, a completing delete task for an unknown room) were
checked against Synapse 1.163; tests/e2e/test_synapse_admin.py keeps checking them.

Nothing here logs the token; media URIs, room ids and the ghosts' opaque user ids are logged.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import aiohttp
from babel.numbers import format_decimal

from hub.errors import ExternalError, StartupError
from hub.i18n import _, current_locale
from hub.matrix.client import MatrixClient, MatrixError, _path

log = logging.getLogger(__name__)

ADMIN_V1 = "/_synapse/admin/v1"
ADMIN_V2 = "/_synapse/admin/v2"
TOKEN_KEY = "homeserver.admin_token"

# The Matrix spec limits media ids to these characters; the server name may carry a port or
# be an IPv6 literal. Anything else is not an mxc URI we could have stored.
_MXC = re.compile(r"mxc://([A-Za-z0-9.\-:\[\]]+)/([A-Za-z0-9_\-]+)")

# Statuses of Synapse's scheduled tasks (synapse.types.TaskStatus).
_DONE = "complete"
_FAILED = ("failed", "cancelled")
_RUNNING = ("scheduled", "active")


def split_mxc(mxc: str) -> tuple[str, str]:
    """(server_name, media_id) of an `mxc://server/id` URI; ValueError for anything else."""
    match = _MXC.fullmatch(mxc)
    if match is None:
        raise ValueError(f"not an mxc URI: {mxc[:80]!r}")
    return match.group(1), match.group(2)


def _not_found(exc: MatrixError) -> bool:
    # The errcode matters, not just the status: a reverse proxy that does not pass
    # /_synapse/admin through answers 404 too, and that must not pass for "already gone".
    return exc.status == 404 and exc.errcode == "M_NOT_FOUND"


class HomeserverAdmin:
    """Synapse's admin API, called with the access token of a server admin."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        base_url: str,
        admin_token: str,
        *,
        timeout: float = 30.0,
        purge_timeout: float = 300.0,
    ) -> None:
        # MatrixClient sends whatever token it is given as the bearer token; no call here
        # masquerades, so its bot_mxid is never used.
        self._client = MatrixClient(http, base_url, admin_token, bot_mxid="", timeout=timeout)
        self._purge_timeout = purge_timeout

    async def _request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        return await self._client.request(method, path, body)

    # -- start-up ------------------------------------------------------------------------

    async def check(self) -> str:
        """The admin's user id, once the homeserver confirmed the token is a server admin's.

        StartupError when the token is refused, is not a server admin's, or the homeserver
        serves no Synapse admin API; MatrixUnavailable (an ExternalError) when the homeserver
        cannot be reached, so the caller decides whether to wait for it.
        """
        try:
            doc = await self._request("GET", "/_matrix/client/v3/account/whoami")
        except MatrixError as exc:
            if exc.status == 401 or exc.errcode in ("M_UNKNOWN_TOKEN", "M_MISSING_TOKEN"):
                raise StartupError(
                    f"the homeserver rejects {TOKEN_KEY} ({exc.errcode}): set it to a current "
                    "access token of a server admin (log in as the admin and copy the token, "
                    "or leave the key out to run without the admin API)"
                ) from None
            raise StartupError(
                f"the homeserver answered whoami for {TOKEN_KEY} with {exc}"
            ) from None
        user_id = str(doc.get("user_id") or "")
        if not user_id:
            raise StartupError(f"the homeserver named no user for {TOKEN_KEY}")
        try:
            doc = await self._request("GET", _path("users", user_id, "admin", base=ADMIN_V1))
        except MatrixError as exc:
            if exc.status == 403:
                raise StartupError(
                    f"{TOKEN_KEY} belongs to {user_id}, who is not a server admin: use a "
                    "token of an admin (e.g. `register_new_matrix_user --admin`); it must not "
                    "be the appservice's as_token"
                ) from None
            if exc.status == 404:
                raise StartupError(
                    f"the homeserver does not serve the Synapse admin API ({ADMIN_V1}) that "
                    f"{TOKEN_KEY} is for: it needs Synapse, and a reverse proxy in front of "
                    "it must pass /_synapse/admin through"
                ) from None
            raise StartupError(
                f"the homeserver answered the admin check for {TOKEN_KEY} with {exc}"
            ) from None
        if doc.get("admin") is not True:
            raise StartupError(f"{TOKEN_KEY} belongs to {user_id}, who is not a server admin")
        return user_id

    # -- media ---------------------------------------------------------------------------

    async def delete_media(self, mxc: str) -> bool:
        """Delete a file of our own server and its thumbnails from the media store.

        True when it was deleted now, False when it was already gone. ValueError for a string
        that is not an mxc URI; a MatrixError (permanent) for another server's media, which
        Synapse refuses with 400; a temporary ExternalError when Synapse kept the file.
        """
        server, media_id = split_mxc(mxc)
        try:
            doc = await self._request("DELETE", _path("media", server, media_id, base=ADMIN_V1))
        except MatrixError as exc:
            if _not_found(exc):
                log.info("admin: media %s was already deleted", mxc)
                return False
            raise
        # Synapse answers 200 even when removing the file failed (other than it missing):
        # the id is then absent from deleted_media and its database row is kept.
        if media_id not in (doc.get("deleted_media") or []):
            raise ExternalError(
                _("the homeserver could not delete the file {mxc}; it will be tried again").format(
                    mxc=mxc
                ),
                permanent=False,
                detail=f"DELETE media {mxc} answered {doc}",
            )
        log.info("admin: deleted media %s", mxc)
        return True

    async def room_media(self, room_id: str) -> list[str]:
        """The mxc URIs of the files sent into a room (ours and other servers'), each once.

        Synapse reads them from the events' `url` and `info.thumbnail_url`, so files of
        encrypted events are not listed. An unknown or purged room has none: Synapse answers
        it with empty lists.
        """
        try:
            doc = await self._request("GET", _path("room", room_id, "media", base=ADMIN_V1))
        except MatrixError as exc:
            if _not_found(exc):
                return []
            raise
        found: dict[str, None] = {}
        for key in ("local", "remote"):
            for mxc in doc.get(key) or []:
                found[str(mxc)] = None
        return list(found)

    # -- rooms ---------------------------------------------------------------------------

    async def purge_room(self, room_id: str) -> None:
        """Remove a room from the homeserver: every local member is kicked, its local aliases
        are deleted, and all its events and state are purged from the database (the files
        sent into it are not: delete them first with room_media and delete_media).

        Synapse does this in a background task that we wait for, up to `purge_timeout`
        seconds; a room that does not exist (any more) completes at once. A failed task, or
        one still running at the deadline, is a temporary ExternalError: a retry waits for
        the running task or starts a new one.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._purge_timeout
        path = _path("rooms", room_id, base=ADMIN_V2)
        delete_id: str | None = None
        while delete_id is None:
            try:
                # block=False: the room id is random and never reused, and a block would
                # leave a row naming the erased customer's room behind.
                doc = await self._request("DELETE", path, {"purge": True, "block": False})
            except MatrixError as exc:
                # Only one delete task per room may be active: wait for that one (a retry of
                # ours after a lost answer, or a purge that outlived our deadline).
                if exc.status != 400 or "already in progress" not in exc.error:
                    raise
                delete_id = await self._active_delete(room_id)
                if delete_id is None:  # it finished in between: start ours
                    if loop.time() > deadline:
                        raise self._unfinished(room_id, "a delete task kept running") from None
                    await asyncio.sleep(0.2)
                    continue
                log.info("admin: room %s is being deleted already, waiting for it", room_id)
            else:
                delete_id = str(doc["delete_id"])
        await self._wait_for_delete(room_id, delete_id, deadline)
        log.info("admin: purged room %s", room_id)

    def _unfinished(self, room_id: str, detail: str) -> ExternalError:
        seconds = format_decimal(self._purge_timeout, locale=current_locale())
        return ExternalError(
            _(
                "the homeserver has not finished deleting the room {room} after "
                "{seconds} s; it will be tried again"
            ).format(room=room_id, seconds=seconds),
            permanent=False,
            code="timeout",
            detail=detail,
        )

    async def _active_delete(self, room_id: str) -> str | None:
        try:
            doc = await self._request(
                "GET", _path("rooms", room_id, "delete_status", base=ADMIN_V2)
            )
        except MatrixError as exc:
            if _not_found(exc):
                return None
            raise
        for task in doc.get("results") or []:
            if isinstance(task, dict) and task.get("status") in _RUNNING:
                return str(task["delete_id"])
        return None

    async def _wait_for_delete(self, room_id: str, delete_id: str, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        path = _path("rooms", "delete_status", delete_id, base=ADMIN_V2)
        pause = 0.1
        while True:
            doc = await self._request("GET", path)
            status = doc.get("status")
            if status == _DONE:
                return
            if status in _FAILED:
                # Synapse keeps the task's error to its log; the answer only says "failed".
                raise ExternalError(
                    _(
                        "the homeserver could not delete the room {room}; it will be tried again"
                    ).format(room=room_id),
                    permanent=False,
                    detail=f"delete task {delete_id} of {room_id}: {doc}",
                )
            left = deadline - loop.time()
            if left <= 0:
                detail = f"delete task {delete_id} of {room_id} still {status}"
                raise self._unfinished(room_id, detail)
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, 2.0)

    # -- users ---------------------------------------------------------------------------

    async def deactivate(self, user_id: str, erase: bool = True) -> None:
        """Deactivate a local user (the appservice's ghosts included): their access tokens,
        devices and password go; with `erase` their profile goes too and they are marked
        erased, so Synapse serves their events redacted to users who were not in the room
        when they were sent.

        An unknown or already deactivated user is success. A MatrixError (permanent) for a
        user of another server, which Synapse refuses with 400.
        """
        path = _path("deactivate", user_id, base=ADMIN_V1)
        try:
            await self._request("POST", path, {"erase": erase})
        except MatrixError as exc:
            if _not_found(exc):
                log.info("admin: %s does not exist, nothing to deactivate", user_id)
                return
            raise
        log.info("admin: deactivated %s (erase=%s)", user_id, erase)
