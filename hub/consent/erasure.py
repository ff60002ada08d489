"""Erasing a customer (`hub gdpr erase`, the daily retention job) and exporting one (`hub gdpr
export`): the I/O around hub.consent.gdpr (what) and hub.db.gdpr (the rows).

An erasure goes homeserver first, database last:

1. the rows are read and the plan made (hub.consent.gdpr.plan_erasure);
2. on the homeserver, every call idempotent: each portal room's media listed, our server's
   files deleted, the room purged, the ghosts deactivated (erase=true);
3. the hub's own files deleted from its media store;
4. one unit of work deletes and anonymises the rows (read again, so a message that arrived
   meanwhile goes too) and records the erasure: what was removed, never who.

A crash or a homeserver outage in 2 or 3 leaves the database as it was: the customer can
still be named, and the same command runs every step again and finishes (what is gone
already counts as done). Once 4 committed, nothing names the customer any more.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from hub.consent.gdpr import (
    Candidate,
    ErasurePlan,
    Reason,
    one_customer,
    parse_customer,
    plan_erasure,
)
from hub.core.media import safe_filename
from hub.db import gdpr
from hub.errors import ExternalError

if TYPE_CHECKING:
    from hub.config import Config
    from hub.db.database import Database

log = logging.getLogger(__name__)


class Homeserver(Protocol):
    """What an erasure asks of the homeserver (hub.matrix.admin.HomeserverAdmin)."""

    async def room_media(self, room_id: str) -> list[str]: ...

    async def delete_media(self, mxc: str) -> bool: ...

    async def purge_room(self, room_id: str) -> None: ...

    async def deactivate(self, user_id: str, erase: bool = True) -> None: ...


class Files(Protocol):
    """The hub's own files (hub.core.media.MediaStore)."""

    def path(self, media_id: str) -> Path: ...

    async def delete(self, media_id: str) -> bool: ...


class ErasureFailed(Exception):
    """A step on the homeserver or the disk failed; the database is unchanged, so running
    the erasure again finishes it."""

    def __init__(self, step: str, cause: Exception, done: ErasureReport) -> None:
        human = cause.human if isinstance(cause, ExternalError) else repr(cause)
        super().__init__(f"{step}: {human}")
        self.step = step
        self.cause = cause
        self.done = done


@dataclass
class ErasureReport:
    """What an erasure did (or, dry run, would do)."""

    plan: ErasurePlan
    dry_run: bool = False
    homeserver: bool = True  # False: --local-only, nothing was done there
    rooms_purged: list[str] = field(default_factory=list)
    media: list[str] = field(default_factory=list)  # our server's files, known and listed
    media_deleted: int = 0  # deleted now (the rest were gone already)
    ghosts_deactivated: list[str] = field(default_factory=list)
    files_deleted: int = 0  # deleted now from the hub's media store
    recorded: bool = False  # the Erasure row was written

    def done(self) -> dict[str, int]:
        """For the Erasure record: counts, never ids."""
        return {
            "rooms_purged": len(self.rooms_purged),
            "media_deleted": self.media_deleted,
            "ghosts_deactivated": len(self.ghosts_deactivated),
            "files_deleted": self.files_deleted,
        }


# -- naming the customer --------------------------------------------------------------------


async def find_customer(db: Database, text: str, config: Config) -> Candidate:
    """The one customer CUSTOMER names. CustomerNameError (not a name), CustomerNotFound,
    AmbiguousCustomer (with the candidates) from hub.consent.gdpr."""
    ref = parse_customer(
        text,
        domain=config.homeserver.domain,
        ghost_prefix=config.appservice.ghost_prefix,
        alias_prefix=config.appservice.alias_prefix,
    )
    return one_customer(text, ref, await db.read(gdpr.find_customers, ref))


# -- erasure --------------------------------------------------------------------------------


async def erase_customer(
    db: Database,
    admin: Homeserver | None,
    files: Files,
    config: Config,
    customer_id: int,
    *,
    reason: Reason = "request",
    dry_run: bool = False,
) -> ErasureReport:
    """Erase a customer: all their identities and conversations."""
    identity_ids = await db.read(gdpr.identities_of, customer_id)
    return await erase_identities(
        db,
        admin,
        files,
        config,
        identity_ids,
        customer_ids=[customer_id],
        reason=reason,
        dry_run=dry_run,
    )


async def erase_identities(
    db: Database,
    admin: Homeserver | None,
    files: Files,
    config: Config,
    identity_ids: Sequence[int],
    *,
    customer_ids: Iterable[int] = (),
    reason: Reason = "request",
    dry_run: bool = False,
) -> ErasureReport:
    """Erase some identities with their conversations (a customer left without identities
    goes too). `admin` None: the homeserver is left as it is (the report says what is left
    there). ErasureFailed when the homeserver or the disk failed: nothing changed in the
    database, and running it again finishes."""
    customer_ids = list(customer_ids)
    domain = config.homeserver.domain
    orders = config.privacy.orders
    snapshot = await db.read(gdpr.snapshot, identity_ids, customer_ids)
    plan = plan_erasure(snapshot, orders, domain)
    report = ErasureReport(plan, dry_run=dry_run, homeserver=admin is not None)
    own = f"mxc://{domain}/"
    report.media = list(plan.mxcs)
    try:
        if admin is not None:
            for room_id in plan.rooms:
                for mxc in await admin.room_media(room_id):
                    if mxc.startswith(own) and mxc not in report.media:
                        report.media.append(mxc)
    except ExternalError as exc:
        raise ErasureFailed("listing the rooms' media on the homeserver", exc, report) from exc
    if dry_run:
        return report
    if admin is not None:
        await _homeserver(admin, plan, report)
    for media_id in plan.files:
        try:
            report.files_deleted += await files.delete(media_id)
        except OSError as exc:
            raise ErasureFailed(f"deleting the hub's file {media_id}", exc, report) from exc
    done = report.done()
    report.plan = await db.write(
        gdpr.erase, identity_ids, customer_ids, orders, domain, reason, done
    )
    report.recorded = not report.plan.database_untouched or any(done.values())
    # What arrived while the erasure ran (a photo the customer sent meanwhile): its rows went
    # with the rest, so its files go now, or nothing would ever know of them.
    for media_id in report.plan.files:
        if media_id not in plan.files:
            try:
                report.files_deleted += await files.delete(media_id)
            except OSError as exc:
                log.warning("erasure: the file %s that came meanwhile stays: %s", media_id, exc)
    if admin is not None:
        for mxc in report.plan.mxcs:
            if mxc not in report.media:
                try:
                    report.media_deleted += await admin.delete_media(mxc)
                except (ExternalError, ValueError) as exc:
                    log.warning("erasure: the media %s that came meanwhile stays: %s", mxc, exc)
        await _late_rooms(admin, report, own)
    if report.rooms_purged:
        await db.write(gdpr.forget_rooms, report.rooms_purged)
    return report


async def _homeserver(admin: Homeserver, plan: ErasurePlan, report: ErasureReport) -> None:
    step = ""
    try:
        for mxc in report.media:
            step = f"deleting the file {mxc} on the homeserver"
            report.media_deleted += await admin.delete_media(mxc)
        for room_id in plan.rooms:
            step = f"purging the room {room_id} on the homeserver"
            await admin.purge_room(room_id)
            report.rooms_purged.append(room_id)
        for ghost in plan.ghosts:
            step = f"deactivating {ghost} on the homeserver"
            await admin.deactivate(ghost, erase=True)
            report.ghosts_deactivated.append(ghost)
    except ExternalError as exc:
        raise ErasureFailed(step, exc, report) from exc


async def _late_rooms(admin: Homeserver, report: ErasureReport, own: str) -> None:
    """A room made while the erasure ran (the customer wrote in between): its row is gone
    with the rest, so purge it now or nobody ever will."""
    for room_id in report.plan.rooms:
        if room_id in report.rooms_purged:
            continue
        try:
            for mxc in await admin.room_media(room_id):
                if mxc.startswith(own):
                    report.media_deleted += await admin.delete_media(mxc)
            await admin.purge_room(room_id)
            report.rooms_purged.append(room_id)
        except (ExternalError, ValueError) as exc:
            log.warning("erasure: the room %s made meanwhile was not purged: %s", room_id, exc)


# -- retention ------------------------------------------------------------------------------


async def erase_inactive(
    db: Database, admin: Homeserver | None, media_store: Files, config: Config, now: datetime
) -> int:
    """Retention: erase every conversation without a message for `privacy.retention_days`
    (its identity; the customer too unless they have another); the number erased. The hub
    runs it once a day. Without the admin API nothing is erased (the rooms would stay)."""
    days = config.privacy.retention_days
    if not days:
        return 0
    if admin is None:
        log.error(
            "retention: privacy.retention_days is %d but homeserver.admin_token is not set; "
            "nothing erased (the portal rooms could not be purged)",
            days,
        )
        return 0
    identity_ids = await db.read(gdpr.inactive_identities, now - timedelta(days=days))
    erased = 0
    for identity_id in identity_ids:
        try:
            await erase_identities(
                db, admin, media_store, config, [identity_id], reason="retention"
            )
        except ErasureFailed as exc:
            if isinstance(exc.cause, ExternalError) and not exc.cause.permanent:
                log.warning("retention: stopped for today, %s (tried again tomorrow)", exc)
                break
            log.error("retention: a conversation was not erased: %s", exc)
            continue
        erased += 1
    if identity_ids:
        log.info(
            "retention: %d of %d conversations without a message for %d days erased",
            erased,
            len(identity_ids),
            days,
        )
    return erased


# -- export ---------------------------------------------------------------------------------


async def export_customer(
    db: Database, files: Files, customer_id: int, media_dir: Path | None, now: datetime
) -> dict[str, Any]:
    """Everything the hub holds of a customer, as a JSON-ready document (datetimes stay
    datetimes: `json.dumps(..., default=json_default)`). Each of the hub's own files is
    described (name, type, size, SHA-256, whether the hub still has it); with `media_dir`
    the files are copied there too and their names given."""
    tables = await db.read(gdpr.export_rows, customer_id)
    if media_dir is not None:
        await asyncio.to_thread(media_dir.mkdir, parents=True, exist_ok=True)
    for row in tables["media_files"]:
        source = files.path(row["id"])
        row["available"] = await asyncio.to_thread(source.is_file)
        row["copied_to"] = None
        if media_dir is not None and row["available"]:
            name = f"{row['id']}-{safe_filename(row['filename'], row['mimetype'])}"
            await asyncio.to_thread(shutil.copyfile, source, media_dir / name)
            row["copied_to"] = name
    return {
        "format": "matrix-commerce-hub gdpr export 1",
        "exported_at": now,
        "customer_id": customer_id,
        "tables": tables,
    }


def json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return value.hex()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON")
