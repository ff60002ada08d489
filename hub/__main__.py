"""Command line: hub run | demo | generate-registration | check-config | migrate |
catalog import | telegram set-webhook | hours simulate | ugc export | gdpr export|erase |
broadcast | report | dashboard hash-password."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Coroutine, Mapping
from datetime import date
from pathlib import Path
from typing import Any

from hub.config import Config, ConfigError, load_config
from hub.errors import StartupError
from hub.logs import setup_logging


def run_service(coro: Coroutine[Any, Any, None]) -> None:
    """Run the hub's long-lived event loop on uvloop: its loop and transports in C cut the
    hub's CPU per relayed message by about a third against asyncio's pure-Python loop
    (bench/relay.py)."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run_until_signal(coro))


async def run_until_signal(coro: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine until SIGINT/SIGTERM, then cancel it so it can clean up."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(coro)

    def stop() -> None:
        # Once: a second signal (Ctrl-C pressed again, or INT and TERM both sent to the
        # process group) must not cut the clean-up short.
        if not task.cancelling():
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    try:
        await task
    except asyncio.CancelledError:
        pass
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def cmd_run(args: argparse.Namespace) -> int:
    from hub.app import serve

    config = load_config(args.config)
    setup_logging(config.logging.level, config.logging.format)
    run_service(serve(config))
    return 0


def configured_holidays(config: Config, path: str) -> Mapping[date, str] | None:
    """The public holidays of hours.holidays; an unknown country or region is a ConfigError
    naming the key, like every other problem of the file."""
    from hub.core import clock
    from hub.scheduler.holiday_dates import UnknownHolidays, public_holidays

    try:
        return asyncio.run(
            public_holidays(config.hours.holidays, config.shop.locale, clock.now().year)
        )
    except UnknownHolidays as exc:
        raise ConfigError(path, [str(exc)]) from None


def cmd_check_config(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    configured_holidays(config, args.config)
    print(
        f"{args.config}: OK (homeserver {config.homeserver.base_url}, "
        f"bot {config.bot_mxid}, database {config.database_url.split('://')[0]})"
    )
    return 0


def cmd_generate_registration(args: argparse.Namespace) -> int:
    from hub.matrix.registration import fill_token_placeholders, write_registration

    path = Path(args.config)
    if path.exists() and fill_token_placeholders(path):
        print(f"{path}: wrote random as_token and hs_token")
    config = load_config(path)
    write_registration(config, Path(args.output))
    print(
        f"{args.output}: registration for appservice {config.appservice.id!r} written; "
        "list it in the homeserver's app_service_config_files and restart the homeserver"
    )
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from hub.db.engine import migrate, open_database

    config: Config = load_config(args.config)
    setup_logging("INFO")

    async def go() -> None:
        db = open_database(config.database_url)
        try:
            await migrate(db)
        finally:
            await db.close()

    asyncio.run(go())
    print("database schema is up to date")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from hub.demo import prepare_demo, run_demo

    setup_logging("WARNING" if not args.verbose else "INFO")
    config, data_dir = prepare_demo(Path(args.data_dir))
    run_service(run_demo(config, data_dir))
    return 0


def cmd_catalog_import(args: argparse.Namespace) -> int:
    from hub.commerce.catalogue import CatalogueError
    from hub.commerce.catalogue_import import read_catalogue, store_catalogue
    from hub.db.engine import migrate, open_database

    config = load_config(args.config)
    try:
        products = read_catalogue(config, Path(args.file))
    except CatalogueError as exc:
        print(f"{args.file}: not imported, nothing changed:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2

    async def go() -> int:
        db = open_database(config.database_url)
        try:
            await migrate(db)
            return await store_catalogue(db, products, progress=True)
        finally:
            await db.close()

    count = asyncio.run(go())
    print(f"{args.file}: {count} products imported (the running hub picks them up)")
    return 0


def cmd_ugc_export(args: argparse.Namespace) -> int:
    from hub.consent.ugc_export import export_approved
    from hub.core.media import MediaStore
    from hub.db.engine import migrate, open_database

    config = load_config(args.config)

    async def go() -> Any:
        db = open_database(config.database_url)
        try:
            await migrate(db)
            return await export_approved(db, MediaStore(config.media_dir), Path(args.dir))
        finally:
            await db.close()

    result = asyncio.run(go())
    for problem in result.problems:
        print(f"not exported: {problem}", file=sys.stderr)
    print(
        f"{args.dir}: {len(result.exported)} approved photo(s) exported with their proof"
        + (f" ({result.removed} file(s) of the previous export removed)" if result.removed else "")
    )
    return 1 if result.problems else 0


def cmd_telegram_set_webhook(args: argparse.Namespace) -> int:
    from hub.bridges.telegram.cli import set_webhook
    from hub.errors import ExternalError

    config = load_config(args.config)
    try:
        print(asyncio.run(set_webhook(config)))
    except ExternalError as exc:
        print(f"setWebhook failed: {exc.human}", file=sys.stderr)
        return 1
    return 0


def cmd_hours_simulate(args: argparse.Namespace) -> int:
    from hub.app import channel_class
    from hub.i18n import set_locale
    from hub.scheduler.simulate import Situation, parse_moment, simulate

    config = load_config(args.config)
    set_locale(config.shop.locale)
    try:
        moment = parse_moment(args.moment, config.shop.timezone)
    except ValueError:
        print(f'{args.moment!r}: not a moment (e.g. "2026-12-26 22:10")', file=sys.stderr)
        return 2
    situation = Situation(
        moment=moment,
        channel=args.channel,
        reply_window=channel_class(args.channel).reply_window,
        new=not args.returning,
        adviser_replied_minutes_ago=args.adviser_replied,
    )
    lines = simulate(
        situation,
        config.hours,
        config.replies,
        config.missed,
        config.shop.timezone,
        config.shop.name,
        configured_holidays(config, args.config),
    )
    print("\n".join(lines))
    return 0


def _report_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (e.g. 2026-11-01)") from None


def cmd_report(args: argparse.Namespace) -> int:
    from zoneinfo import ZoneInfo

    from hub.core import clock
    from hub.db.engine import migrate, open_database
    from hub.kpi import render
    from hub.kpi.report import build, make_period
    from hub.scheduler.holiday_dates import UnknownHolidays, public_holidays

    config = load_config(args.config)
    since: date = args.since
    # Without --until: up to today, in the shop's time zone.
    until: date = args.until or clock.now().astimezone(ZoneInfo(config.shop.timezone)).date()
    try:
        period = make_period(config, since, until)
    except ValueError as exc:
        print(f"hub report: {exc}", file=sys.stderr)
        return 2

    async def go() -> Any:
        holidays = None
        if config.hours.configured:
            try:
                holidays = await public_holidays(
                    config.hours.holidays, config.shop.locale, period.since.year
                )
            except UnknownHolidays as exc:
                raise ConfigError(args.config, [str(exc)]) from None
        db = open_database(config.database_url)
        try:
            await migrate(db)
            return await build(db, config, period, holidays)
        finally:
            await db.close()

    report = asyncio.run(go())
    shown = {"table": render.as_table, "csv": render.as_csv, "json": render.as_json}
    sys.stdout.write(shown[args.format](report))
    return 0


def cmd_dashboard_hash_password(args: argparse.Namespace) -> int:
    from hub.http.dashboard_auth import MAX_PASSWORD_CHARS, hash_password

    if args.stdin:
        # One line: the newline that ends it (echo, a password manager's pipe) is not part
        # of the password.
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    else:
        import getpass

        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("the two passwords differ; nothing printed", file=sys.stderr)
            return 2
    if len(password) < 8 or len(password) > MAX_PASSWORD_CHARS:
        print(f"a password needs 8 to {MAX_PASSWORD_CHARS} characters", file=sys.stderr)
        return 2
    print(hash_password(password))
    print("put it in the config as dashboard.admins[].password_hash", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from hub.consent.broadcast import add_broadcast_parser
    from hub.consent.gdpr_cli import add_gdpr_parser

    parser = argparse.ArgumentParser(prog="hub", description="Matrix commerce hub")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run the hub")
    p.add_argument("-c", "--config", required=True)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("check-config", help="validate a configuration file")
    p.add_argument("-c", "--config", required=True)
    p.set_defaults(func=cmd_check_config)
    p = sub.add_parser("generate-registration", help="write the appservice registration YAML")
    p.add_argument("-c", "--config", required=True)
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(func=cmd_generate_registration)
    p = sub.add_parser("migrate", help="bring the database schema up to date")
    p.add_argument("-c", "--config", required=True)
    p.set_defaults(func=cmd_migrate)
    p = sub.add_parser("demo", help="local Synapse + hub + demo shop, all on loopback")
    p.add_argument("--data-dir", default="demo-data")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("catalog", help="product catalogue tools")
    catalog = p.add_subparsers(dest="catalog_command", required=True)
    p = catalog.add_parser("import", help="validate a CSV/YAML catalogue and load it")
    p.add_argument("file")
    p.add_argument("-c", "--config", required=True)
    p.set_defaults(func=cmd_catalog_import)
    p = sub.add_parser("telegram", help="Telegram channel tools")
    telegram = p.add_subparsers(dest="telegram_command", required=True)
    p = telegram.add_parser("set-webhook", help="register the hub's webhook with Telegram")
    p.add_argument("-c", "--config", required=True)
    p.set_defaults(func=cmd_telegram_set_webhook)
    p = sub.add_parser("hours", help="opening hours tools")
    hours = p.add_subparsers(dest="hours_command", required=True)
    p = hours.add_parser("simulate", help="what the hub does with a customer's message at a moment")
    p.add_argument("moment", help='in the shop\'s time zone, e.g. "2026-12-26 22:10"')
    p.add_argument("-c", "--config", required=True)
    p.add_argument(
        "--channel",
        default="whatsapp",
        choices=["webchat", "whatsapp", "telegram", "messenger", "instagram"],
    )
    p.add_argument(
        "--returning", action="store_true", help="not the first message of the conversation"
    )
    p.add_argument(
        "--adviser-replied", type=int, metavar="MINUTES", help="an adviser answered MINUTES ago"
    )
    p.set_defaults(func=cmd_hours_simulate)
    ugc = sub.add_parser("ugc", help="photos customers agreed to share").add_subparsers(
        dest="ugc_command", required=True
    )
    p = ugc.add_parser("export", help="write the approved photos and their proof into DIR")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("-c", "--config", required=True)
    p.set_defaults(func=cmd_ugc_export)
    p = sub.add_parser("report", help="the shop's KPIs for a period (days in shop.timezone)")
    p.add_argument("--since", type=_report_date, required=True, help="first day, e.g. 2026-11-01")
    p.add_argument("--until", type=_report_date, help="last day, inclusive (default: today)")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("-c", "--config", required=True)
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("dashboard", help="admin dashboard tools")
    dashboard = p.add_subparsers(dest="dashboard_command", required=True)
    p = dashboard.add_parser(
        "hash-password", help="print the argon2 hash of a password for dashboard.admins"
    )
    p.add_argument(
        "--stdin", action="store_true", help="read the password from the first line of stdin"
    )
    p.set_defaults(func=cmd_dashboard_hash_password)
    add_gdpr_parser(sub)
    add_broadcast_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return 2
    except StartupError as exc:
        print(f"hub cannot start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
