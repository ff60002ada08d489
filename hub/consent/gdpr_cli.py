"""`hub gdpr export|erase CUSTOMER`: a customer's data in one JSON file, or erased everywhere
the hub put it (hub.consent.erasure). For whoever runs the hub, so in English.

Exit codes: 0 done (or nothing to do), 1 the homeserver or the disk failed (the database is
unchanged: run the same command again), 2 CUSTOMER names nobody or several customers, the
config lacks homeserver.admin_token, or --yes is missing where nobody can be asked.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from hub.config import load_config
from hub.consent.gdpr import (
    FORMS,
    AmbiguousCustomer,
    CustomerNameError,
    CustomerNotFound,
    parse_customer,
)
from hub.errors import ExternalError, StartupError

if TYPE_CHECKING:
    import aiohttp

    from hub.config import Config
    from hub.consent.erasure import ErasureReport
    from hub.consent.gdpr import Candidate
    from hub.db.database import Database
    from hub.matrix.admin import HomeserverAdmin

TOKEN_KEY = "homeserver.admin_token"
CUSTOMER_HELP = f"the customer: {FORMS}"


def add_gdpr_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`hub gdpr export` and `hub gdpr erase`."""
    p = sub.add_parser("gdpr", help="export or erase a customer's data (GDPR)")
    gdpr = p.add_subparsers(dest="gdpr_command", required=True)

    p = gdpr.add_parser(
        "export",
        help="everything the hub holds of a customer, in one JSON file",
        description="Everything the hub holds of a customer in one JSON file: customer, "
        "identities, conversations, messages, media files (name, type, size, SHA-256), carts, "
        "orders, short links, consents, newsletter opt-ins, broadcasts, missed conversations, "
        "timers.",
    )
    p.add_argument("customer", metavar="CUSTOMER", help=CUSTOMER_HELP)
    p.add_argument("-c", "--config", required=True)
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="where to write the JSON (default: gdpr-export-customer-ID.json; - for stdout)",
    )
    p.add_argument(
        "--with-media",
        metavar="DIR",
        type=Path,
        help="copy the hub's own files of the customer (widget uploads, fetched media) to DIR",
    )
    p.set_defaults(func=cmd_export)

    p = gdpr.add_parser(
        "erase",
        help="erase a customer from the hub and the homeserver",
        description="Erase a customer: their rows deleted (orders kept anonymised when "
        "privacy.orders is anonymise), their portal rooms purged and media deleted on the "
        "homeserver, their ghosts deactivated, the hub's files deleted. Safe to run again: a "
        "run that failed half-way is finished by the next.",
    )
    p.add_argument("customer", metavar="CUSTOMER", help=CUSTOMER_HELP)
    p.add_argument("-c", "--config", required=True)
    p.add_argument("--dry-run", action="store_true", help="show what would go, change nothing")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument(
        "--local-only",
        action="store_true",
        help=f"without {TOKEN_KEY}: erase the hub's database and files only, and say what "
        "is left on the homeserver",
    )
    p.set_defaults(func=cmd_erase)


def _err(*lines: str) -> None:
    print("\n".join(lines), file=sys.stderr)


async def _open(config: Config) -> Database:
    from hub.db.engine import migrate, open_database

    db = open_database(config.database_url)
    try:
        await migrate(db)
    except BaseException:
        await db.close()
        raise
    return db


async def _customer(db: Database, text: str, config: Config, erase: bool) -> Candidate | None:
    from hub.consent.erasure import find_customer

    try:
        return await find_customer(db, text, config)
    except CustomerNameError as exc:
        _err(str(exc))
    except CustomerNotFound as exc:
        _err(str(exc) + (": nothing to erase (never known, or erased already)" if erase else ""))
    except AmbiguousCustomer as exc:
        _err(str(exc))
    return None


def _check_name(text: str, config: Config) -> bool:
    """CUSTOMER is a way to name a customer (before anything else is asked)."""
    try:
        parse_customer(
            text,
            domain=config.homeserver.domain,
            ghost_prefix=config.appservice.ghost_prefix,
            alias_prefix=config.appservice.alias_prefix,
        )
    except CustomerNameError as exc:
        _err(str(exc))
        return False
    return True


# -- export ---------------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if not _check_name(args.customer, config):
        return 2
    return asyncio.run(_export(args, config))


async def _export(args: argparse.Namespace, config: Config) -> int:
    from hub.consent.erasure import export_customer, json_default
    from hub.core import clock
    from hub.core.media import MediaStore

    db = await _open(config)
    try:
        customer = await _customer(db, args.customer, config, erase=False)
        if customer is None:
            return 2
        store = MediaStore(config.media_dir)
        doc = await export_customer(db, store, customer.customer_id, args.with_media, clock.now())
    finally:
        await db.close()
    text = json.dumps(doc, default=json_default, ensure_ascii=False, indent=2) + "\n"
    output = args.output or f"gdpr-export-customer-{customer.customer_id}.json"
    tables = doc["tables"]
    summary = ", ".join(f"{name} {len(rows)}" for name, rows in tables.items() if rows)
    copied = sum(1 for f in tables["media_files"] if f["copied_to"])
    if output == "-":
        sys.stdout.write(text)
        _err(f"customer:{customer.customer_id}: {summary}")
        return 0
    # Personal data: readable by the owner only.
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    print(f"{output}: customer:{customer.customer_id} exported ({summary})")
    if args.with_media is not None:
        print(f"{args.with_media}: {copied} of {len(tables['media_files'])} files copied")
    return 0


# -- erase ----------------------------------------------------------------------------------


def cmd_erase(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if not _check_name(args.customer, config):
        return 2
    if config.homeserver.admin_token is None and not (args.local_only or args.dry_run):
        _err(
            f"hub gdpr erase needs {TOKEN_KEY} in {args.config}: the access token of a server "
            "admin of the homeserver, to purge the customer's rooms, delete their media and "
            "deactivate their ghost there.",
            "Or pass --local-only to erase only the hub's database and files (the homeserver "
            "part is then yours to do).",
        )
        return 2
    return asyncio.run(_erase(args, config))


async def _erase(args: argparse.Namespace, config: Config) -> int:
    import aiohttp

    use_admin = config.homeserver.admin_token is not None and not args.local_only
    db = await _open(config)
    try:
        customer = await _customer(db, args.customer, config, erase=True)
        if customer is None:
            return 2
        if not use_admin:
            return await _erase_with(args, config, db, customer, None)
        async with aiohttp.ClientSession() as http:
            admin = await _admin(http, config)
            if isinstance(admin, int):
                return admin
            return await _erase_with(args, config, db, customer, admin)
    finally:
        await db.close()


async def _admin(http: aiohttp.ClientSession, config: Config) -> HomeserverAdmin | int:
    from hub.matrix.admin import HomeserverAdmin

    token = config.homeserver.admin_token
    assert token is not None
    admin = HomeserverAdmin(
        http, config.homeserver.base_url, token, timeout=config.homeserver.request_timeout_seconds
    )
    try:
        await admin.check()
    except StartupError as exc:
        _err(str(exc))
        return 2
    except ExternalError as exc:
        _err(f"{exc.human}: nothing was erased; try again once the homeserver answers")
        return 1
    return admin


async def _erase_with(
    args: argparse.Namespace,
    config: Config,
    db: Database,
    customer: Candidate,
    admin: HomeserverAdmin | None,
) -> int:
    from hub.consent.erasure import ErasureFailed, erase_customer
    from hub.core.media import MediaStore

    store = MediaStore(config.media_dir)
    print(customer.describe())
    try:
        preview = await erase_customer(db, admin, store, config, customer.customer_id, dry_run=True)
    except ErasureFailed as exc:
        _err(f"{exc}: nothing was erased; try again once the homeserver answers")
        return 1
    if preview.plan.nothing:
        print("nothing left to erase: the customer's rows are erased or anonymised already")
        return 0
    if args.dry_run:
        print("would erase (dry run, nothing changed):")
        _print(report_lines(preview, config))
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            _err("about to erase the above; pass --yes to confirm (nobody here to ask)")
            return 2
        print("will erase:")
        _print(report_lines(preview, config))
        answer = await asyncio.to_thread(input, "Type 'erase' to erase this customer: ")
        if answer.strip().lower() != "erase":
            print("not erased")
            return 0
    try:
        report = await erase_customer(db, admin, store, config, customer.customer_id)
    except ErasureFailed as exc:
        _err(
            f"failed while {exc}.",
            "The database is unchanged and the customer can still be named: run the same "
            "command again to finish the erasure.",
        )
        if exc.done.rooms_purged or exc.done.media_deleted or exc.done.ghosts_deactivated:
            _print(homeserver_lines(exc.done), stream=sys.stderr)
        return 1
    print("erased:")
    _print(report_lines(report, config))
    return 0


def _print(lines: list[str], stream: TextIO | None = None) -> None:
    for line in lines:
        print("  " + line, file=stream or sys.stdout)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{table} {n}" for table, n in counts.items()) or "nothing"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _listing(ids: tuple[str, ...] | list[str]) -> str:
    return ", ".join(ids) or "none"


def homeserver_lines(report: ErasureReport) -> list[str]:
    gone = len(report.media) - report.media_deleted
    return [
        f"homeserver: {_plural(len(report.rooms_purged), 'room')} purged, "
        f"{_plural(report.media_deleted, 'file')} deleted"
        + (f" ({gone} gone already)" if gone > 0 else "")
        + f", {_plural(len(report.ghosts_deactivated), 'ghost')} deactivated"
    ]


def report_lines(report: ErasureReport, config: Config) -> list[str]:
    """What an erasure did, or (dry run) would do."""
    plan = report.plan
    lines = [f"database, deleted: {_counts(plan.deleted())}"]
    if plan.anonymised():
        lines.append(f"database, anonymised (kept for the orders): {_counts(plan.anonymised())}")
    rooms, ghosts, media = len(plan.rooms), len(plan.ghosts), len(report.media)
    if report.dry_run and report.homeserver:
        lines.append(
            f"homeserver: purge {_plural(rooms, 'room')} ({_listing(plan.rooms)}), "
            f"delete {_plural(media, 'file')}, "
            f"deactivate {_plural(ghosts, 'ghost')} ({_listing(plan.ghosts)})"
        )
    elif report.homeserver:
        lines += homeserver_lines(report)
    elif rooms or ghosts or media:
        why = "--local-only" if config.homeserver.admin_token else f"no {TOKEN_KEY}"
        left = "would be left" if report.dry_run else "left"
        lines.append(
            f"homeserver: untouched ({why}); {left} there, for the Synapse admin API: "
            f"rooms {_listing(plan.rooms)}; ghosts {_listing(plan.ghosts)}; "
            f"files known to the hub {_listing(report.media)}"
        )
    if report.dry_run:
        lines.append(f"hub media store: delete {_plural(len(plan.files), 'file')}")
    else:
        lines.append(f"hub media store: {_plural(report.files_deleted, 'file')} deleted")
    if plan.foreign_mxcs:
        lines.append(
            f"{_plural(plan.foreign_mxcs, 'file')} of other homeservers named in the "
            "conversation: not ours to delete"
        )
    if report.recorded:
        lines.append("recorded in the erasures table (what was removed, never who)")
    return lines
