"""What runs at start-up: the hub's web application, built from its config as a chain of
steps in dependency order. Each step sets up one thing and cleans it up at stop; when a
step fails, the clean-ups of the steps before it run (aiohttp's cleanup_ctx):

1. database   open it, bring the schema up to date (in a child process), load the catalogue;
              the shop's language for every text the hub writes
2. http       the client session of every outgoing call
3. matrix     the homeserver's client (waits for the homeserver, the token checked),
              portals, the appservice API
4. channels   the enabled channels with their webhook routes, the ingest, the pages
5. shop       the shop, the checkout and its payment provider, the commerce pages
6. worker     the bot's commands and every job kind's handler; the job worker runs
7. monitoring /metrics (Prometheus, for `metrics.allowed`) and /readyz
8. timers     the alarms of timers (holding replies' follow-ups, scheduled messages)
9. started    once the hub listens: the homeserver ping and the channels' start-up work
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import importlib
import logging
import os
import secrets
import signal
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import date, timedelta
from typing import Any

import aiohttp
from aiohttp import web

from hub.advisers.assignment import Assignment
from hub.advisers.labels import RoomLabels
from hub.advisers.space import (
    AdvisersSettings,
    AdvisersSpace,
    CannedReplies,
    CustomerContext,
    LobbyListing,
)
from hub.bridges.base import Channel, ChannelDeps, Channels
from hub.bridges.sending import ChannelSender
from hub.bridges.webchat.channel import WebchatChannel
from hub.bridges.webhooks import Webhook
from hub.commerce.catalogue import CatalogueError
from hub.commerce.catalogue_import import load_configured_catalogue
from hub.commerce.checkout import Checkout, make_provider
from hub.commerce.commands import CommerceCommands
from hub.commerce.http import CommerceHttp
from hub.commerce.service import Shop
from hub.config import Config
from hub.consent.deletion import PhotoDeletion
from hub.consent.erasure import erase_inactive
from hub.consent.newsletter_flow import Newsletter
from hub.consent.photo_flow import PhotoConsent
from hub.core import clock
from hub.core.bot import CommandHandler, CommandRunner, help_command
from hub.core.commands import CommandRegistry
from hub.core.ingest import Ingest
from hub.core.media import MediaStore
from hub.db import conversations
from hub.db.database import Database
from hub.db.engine import migrate, open_database
from hub.db.lobby import at_start as advisers_at_start
from hub.db.locks import ProcessLock
from hub.errors import ExternalError, StartupError
from hub.http.metrics import MetricsEndpoint
from hub.http.pages import Readiness, add_page_routes
from hub.i18n import set_locale
from hub.jobs.worker import Worker
from hub.matrix.admin import HomeserverAdmin
from hub.matrix.appservice import AppserviceApi
from hub.matrix.client import (
    MatrixClient,
    MatrixError,
    MatrixUnavailable,
    wait_for_homeserver,
)
from hub.matrix.deliver import MatrixDelivery
from hub.matrix.dispatcher import Dispatcher
from hub.matrix.encryption_check import check_encryption_support
from hub.matrix.portal import Portals, PortalSettings
from hub.matrix.receipts import Receipts
from hub.scheduler.automations import Automations
from hub.scheduler.commands import SchedulerCommands
from hub.scheduler.holiday_dates import public_holidays
from hub.scheduler.runner import TimerRunner

log = logging.getLogger(__name__)

CONFIG = web.AppKey("config", Config)
DB = web.AppKey("db", Database)
HTTP = web.AppKey("http", aiohttp.ClientSession)
MATRIX = web.AppKey("matrix", MatrixClient)
PORTALS = web.AppKey("portals", Portals)
MEDIA = web.AppKey("media", MediaStore)
CHANNELS = web.AppKey("channels", Channels)
SHOP = web.AppKey("shop", Shop)
CHECKOUT = web.AppKey("checkout", Checkout)
WORKER = web.AppKey("worker", Worker)
AUTOMATIONS = web.AppKey("automations", Automations)
ASSIGNMENT = web.AppKey("assignment", Assignment)
TIMERS = web.AppKey("timers", TimerRunner)
LOBBY = web.AppKey("lobby", LobbyListing)
LISTENING = web.AppKey("listening", asyncio.Event)
PHOTO_CONSENT = web.AppKey("photo_consent", PhotoConsent)
DELETION = web.AppKey("deletion", PhotoDeletion)
NEWSLETTER = web.AppKey("newsletter", Newsletter)
# The Synapse admin API (None: homeserver.admin_token is not configured).
ADMIN: web.AppKey[HomeserverAdmin | None] = web.AppKey("admin")
# The public holidays' dates and names (None: none configured).
HOLIDAYS: web.AppKey[Mapping[date, str] | None] = web.AppKey("holidays")
# The bot's device in encrypted rooms (hub.matrix.crypto); None with encryption off.
CRYPTO: web.AppKey[Any] = web.AppKey("crypto")
CRYPTO_LOCK = web.AppKey("crypto_lock", ProcessLock)
CRYPTO_LOCK_KEEPER: web.AppKey[asyncio.Task[None]] = web.AppKey("crypto_lock_keeper")

# Messenger channels, imported only when enabled: module:class.
PROVIDER_CHANNELS = {
    "whatsapp": "hub.bridges.whatsapp.channel:WhatsappChannel",
    "telegram": "hub.bridges.telegram.channel:TelegramChannel",
    "messenger": "hub.bridges.meta.channel:MessengerChannel",
    "instagram": "hub.bridges.meta.channel:InstagramChannel",
}

Step = Callable[[web.Application], AsyncIterator[None]]


async def database(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    set_locale(config.shop.locale)
    # Both in child processes (see hub.db.engine, hub.scheduler.holiday_dates): side by side.
    holidays = asyncio.create_task(
        public_holidays(config.hours.holidays, config.shop.locale, clock.now().year)
    )
    db = open_database(config.database_url, echo=config.database.echo)
    try:
        await migrate(db, in_child=True)
        app[HOLIDAYS] = await holidays
        await load_configured_catalogue(config, db)
    except CatalogueError as exc:
        await db.close()
        raise StartupError(
            f"commerce.catalogue_file {config.commerce.catalogue_file}: "
            + "; ".join(exc.problems[:10])
        ) from None
    except BaseException:
        holidays.cancel()
        with contextlib.suppress(BaseException):
            await holidays
        await db.close()
        raise
    app[DB] = db
    app[MEDIA] = MediaStore(config.media_dir)
    await db.bus.start()  # PostgreSQL: hear what the other hub processes publish
    yield
    await db.close()


async def http_session(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession() as http:
        app[HTTP] = http
        yield


async def matrix(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    client_class = MatrixClient
    if config.encryption.enabled:
        # Imported only when on: nio's crypto costs memory a hub without it need not pay.
        from hub.matrix.crypto.client import EncryptingClient

        client_class = EncryptingClient
    client = client_class(
        app[HTTP],
        config.homeserver.base_url,
        config.appservice.as_token,
        config.bot_mxid,
        timeout=config.homeserver.request_timeout_seconds,
    )
    await check_homeserver(client, config)
    await check_encryption_support(client, config.encryption.enabled)
    app[CRYPTO] = await start_crypto(app, client) if config.encryption.enabled else None
    admin = None
    if config.homeserver.admin_token:
        admin = HomeserverAdmin(
            app[HTTP],
            config.homeserver.base_url,
            config.homeserver.admin_token,
            timeout=config.homeserver.request_timeout_seconds,
        )
        try:
            await admin.check()
        except MatrixUnavailable as exc:
            raise StartupError(f"homeserver.admin_token could not be checked: {exc}") from None
    app[ADMIN] = admin
    portals = Portals(
        app[DB],
        client,
        PortalSettings(
            domain=config.homeserver.domain,
            bot_mxid=config.bot_mxid,
            ghost_prefix=config.appservice.ghost_prefix,
            alias_prefix=config.appservice.alias_prefix,
            advisers=tuple(config.shop.advisers),
            shop_name=config.shop.name,
            space=config.routing.space,
        ),
    )
    app[MATRIX], app[PORTALS] = client, portals
    AppserviceApi(
        app[DB],
        config.appservice.hs_token,
        portals.is_own,
        lambda alias: alias.startswith("#" + config.appservice.alias_prefix),
        crypto=app[CRYPTO],
    ).add_routes(app)
    yield
    if CRYPTO_LOCK in app:
        app[CRYPTO_LOCK_KEEPER].cancel()
        await app[CRYPTO_LOCK].release()


async def start_crypto(app: web.Application, client: MatrixClient) -> Any:
    """The bot's device: its state loaded from the database, its keys on the homeserver.

    One process of a database holds it: the Olm and Megolm sessions ratchet with every
    message, and two processes encrypting with copies of one session would reuse message
    indexes (which advisers' clients reject) and overwrite each other's state."""
    from hub.matrix.crypto.client import EncryptingClient
    from hub.matrix.crypto.machine import CryptoMachine
    from hub.matrix.crypto.store import CryptoStore

    config = app[CONFIG]
    enc = config.encryption
    lock = ProcessLock(app[DB], "crypto")
    if not await lock.try_acquire():
        raise StartupError(
            "encryption: another hub process of this database holds the bot's encryption "
            "keys; with encryption.enabled only one hub process may run (docs/deploy.md, "
            "'A second hub process')"
        )
    app[CRYPTO_LOCK] = lock

    def lost() -> None:
        # Another process may encrypt with the bot's keys now: stop rather than reuse them.
        os.kill(os.getpid(), signal.SIGTERM)

    app[CRYPTO_LOCK_KEEPER] = asyncio.create_task(lock.keep(lost), name="crypto-lock")
    pickle_key = (
        enc.pickle_key
        or hashlib.sha256(b"hub-crypto-pickle:" + config.appservice.as_token.encode()).hexdigest()
    )
    store = await CryptoStore.load(app[DB], config.bot_mxid, enc.device_id, pickle_key)
    try:
        machine = await CryptoMachine.start(
            client,
            store,
            bot_mxid=config.bot_mxid,
            device_id=enc.device_id,
            advisers=config.shop.advisers,
            share_history=enc.share_history_with_advisers,
            history_days=enc.history_days,
            display_name=config.appservice.bot_displayname,
            is_portal=lambda room: is_portal(app[DB], room),
        )
    except MatrixError as exc:
        raise StartupError(
            f"encryption: the homeserver refused to set up the bot's device ({exc}). "
            "Is the registration the one `hub generate-registration` wrote with "
            "encryption.enabled on, and does the homeserver enable the experimental options "
            "of docs/encryption.md?"
        ) from None
    assert isinstance(client, EncryptingClient)
    client.crypto = machine
    return machine


async def channels(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    deps = ChannelDeps(app[DB], app[HTTP], app[MEDIA], config.http.public_base)
    automations = app[AUTOMATIONS] = make_automations(config, app[HOLIDAYS])
    assignment = app[ASSIGNMENT] = Assignment(config.routing, list(config.shop.advisers))
    enabled = Channels()
    photo_consent = app[PHOTO_CONSENT] = PhotoConsent(
        config.consent,
        config.shop.name,
        lambda kind: enabled.channel(kind).capabilities.buttons,
        can_delete=app[ADMIN] is not None,
    )
    newsletter = app[NEWSLETTER] = Newsletter(
        config.newsletter,
        config.shop,
        lambda kind: enabled.channel(kind).capabilities.buttons,
        lambda kind: enabled.channel(kind).label,
    )
    ingest = Ingest(
        app[DB],
        ghost_prefix=config.appservice.ghost_prefix,
        domain=config.homeserver.domain,
        shop_name=config.shop.name,
        # Answers to the bot's questions first: they are not messages to hold or greet.
        after_message=(
            # First: a message the bot takes as an answer still reopens a closed conversation.
            assignment.after_message,
            photo_consent.after_message,
            newsletter.after_message,
            automations.after_message,
        ),
    )
    if config.channels.webchat.enabled:
        enabled["webchat"] = WebchatChannel(
            deps,
            config.channels.webchat,
            app[MATRIX],
            ingest,
            config.homeserver.domain,
            trusted_proxies=config.http.trusted_proxies,
        )
    for name in PROVIDER_CHANNELS:
        if getattr(config.channels, name).enabled:
            enabled[name] = provider_channel(name, deps, config)
    for channel in enabled.values():
        Webhook(channel, ingest, config.http.max_body_bytes).add_routes(app)
        channel.add_routes(app)
    webchat = config.channels.webchat
    add_page_routes(
        app,
        app[DB],
        shop_name=config.shop.name,
        public_base=config.http.public_base,
        demo_page=webchat.enabled and webchat.demo_page,
    )
    if config.dashboard.admins:
        # Imported only when on: a hub without admins never loads argon2 or the KPI queries.
        from hub.http.dashboard import add_dashboard_routes

        add_dashboard_routes(app, config, app[DB], app[HOLIDAYS])
    app[CHANNELS] = enabled
    yield
    for channel in enabled.values():
        await channel.close()


def make_automations(config: Config, holidays: Mapping[date, str] | None) -> Automations:
    return Automations(
        hours=config.hours,
        replies=config.replies,
        missed=config.missed,
        scheduled=config.scheduled,
        schedule=config.hours.schedule(config.shop.timezone, holidays),
        shop_name=config.shop.name,
        lobby_room=config.shop.lobby_room,
    )


def channel_class(name: str) -> type[Channel]:
    """A channel's class, its module imported only when asked for."""
    if name == "webchat":
        return WebchatChannel
    module_name, _, class_name = PROVIDER_CHANNELS[name].partition(":")
    cls: type[Channel] = getattr(importlib.import_module(module_name), class_name)
    return cls


def provider_channel(name: str, deps: ChannelDeps, config: Config) -> Channel:
    """A messenger channel, its module imported only when it is enabled."""
    cls: Any = channel_class(name)
    section = getattr(config.channels, name)
    if name == "whatsapp":
        return cls(deps, section, config.bot.command_prefix)  # type: ignore[no-any-return]
    return cls(deps, section)  # type: ignore[no-any-return]


async def shop(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    the_shop = Shop(
        config.shop,
        config.commerce,
        config.channels.whatsapp,
        {kind: ch.reply_window for kind, ch in app[CHANNELS].items()},
        config.http.public_base,
    )
    provider = make_provider(config.commerce, app[HTTP], config.http.public_base)
    checkout = Checkout(
        app[DB], the_shop, provider, config.http.public_base, config.http.max_body_bytes
    )
    CommerceHttp(
        app[DB], the_shop, checkout, config.commerce, config.appservice.hs_token.encode()
    ).add_routes(app)
    app[SHOP], app[CHECKOUT] = the_shop, checkout
    yield
    await checkout.close()


async def worker(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    db, enabled, portals = app[DB], app[CHANNELS], app[PORTALS]
    commands: CommandRegistry[CommandHandler] = CommandRegistry()
    specs = [
        help_command(
            commands,
            config.bot.command_prefix,
            notes_prefix=config.notes.prefix,
            notes_threads=config.notes.threads,
        )
    ]
    specs += CommerceCommands(app[SHOP]).specs()
    specs += SchedulerCommands(app[AUTOMATIONS]).specs()
    specs += app[PHOTO_CONSENT].specs()
    specs += app[NEWSLETTER].specs()
    specs += app[ASSIGNMENT].specs()
    advisers = AdvisersSettings.of(config, {kind: ch.label for kind, ch in enabled.items()})
    context = CustomerContext(db, app[MATRIX], advisers)
    canned = CannedReplies(db, app[MATRIX], app[SHOP], advisers, config.canned_replies)
    app[LOBBY] = LobbyListing(db, app[MATRIX], advisers)
    specs += context.specs() + canned.specs()
    for channel in enabled.values():
        specs += channel.commands()
    for spec in specs:
        commands.register(spec)
    app[DELETION] = PhotoDeletion(
        db, app[MATRIX], app[ADMIN], app[MEDIA], config.shop.name, config.homeserver.domain
    )
    job_worker = Worker(db, config.outbox)
    job_worker.register_handlers(
        MatrixDelivery(db, app[MATRIX], portals, enabled, app[MEDIA], encrypted_uploads(app)),
        ChannelSender(
            db,
            enabled,
            app[MEDIA],
            app[MATRIX],
            app[HTTP],
            max_fetch_bytes=config.channels.webchat.max_upload_bytes * 5,
        ),
        Dispatcher(
            db,
            portals.is_own,
            commands,
            CommandRunner(commands, config.shop.advisers),
            config.bot.command_prefix,
            advisers=config.shop.advisers,
            decryptor=app[CRYPTO],
            key_wait_seconds=config.encryption.key_wait_seconds,
            channels=enabled,
            others_may_answer=config.routing.others_may_answer,
            notes=config.notes,
        ),
        Receipts(db, app[MATRIX], enabled, portals.is_own),
        RoomLabels(db, app[MATRIX]),
        app[LOBBY],
        AdvisersSpace(db, app[MATRIX], advisers),
        context,
        canned,
        app[SHOP],
        app[CHECKOUT],
        app[DELETION],
    )
    if app[CRYPTO] is not None:
        from hub.matrix.crypto.history import HistorySharing

        job_worker.register_handlers(HistorySharing(app[CRYPTO]))
    db.sink = job_worker  # every commit that queues jobs now reaches the worker
    await db.write(advisers_at_start)
    await app[DELETION].resume()
    task = asyncio.create_task(job_worker.run(), name="job-worker")
    app[WORKER] = job_worker
    yield
    db.sink = None
    await job_worker.stop()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def monitoring(app: web.Application) -> AsyncIterator[None]:
    """/metrics and /readyz: after the worker, whose job kinds the queue's figures list."""
    config = app[CONFIG]
    webchat = app[CHANNELS].get("webchat")
    MetricsEndpoint(
        app[DB],
        config.metrics.allowed,
        config.http.trusted_proxies,
        kinds=lambda: app[WORKER].handlers,
        webchat_connections=(
            (lambda: sum(len(s) for s in webchat.sockets.values()))
            if isinstance(webchat, WebchatChannel)
            else None
        ),
    ).add_routes(app)
    Readiness(app[DB], app[HTTP], config.homeserver.base_url).add_routes(app)
    yield


async def check_to_device(machine: Any, timeout: float) -> None:
    try:
        await machine.check_to_device(max(timeout, 1.0))
    except ExternalError as exc:
        log.warning("encryption: could not check the homeserver's to-device push: %s", exc)


async def is_portal(db: Database, room_id: str) -> bool:
    return await db.read(conversations.conversation_by_room, room_id) is not None


def encrypted_uploads(app: web.Application) -> Any:
    if app[CRYPTO] is None:
        return None
    from hub.matrix.crypto.media import EncryptedUploads

    return EncryptedUploads(app[MATRIX], app[CRYPTO])


async def timer_alarms(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    runner = TimerRunner(
        app[DB],
        app[AUTOMATIONS],
        config.scheduled.sweep_seconds,
        firers=(app[ASSIGNMENT].fire,),
    )
    await runner.start()
    runner.every("consent:resume", app[DELETION].resume, timedelta(hours=1))
    runner.every("lobby:refresh", app[LOBBY].queue_refresh, timedelta(minutes=1))
    if config.privacy.retention_days:

        async def retention() -> int:
            return await erase_inactive(app[DB], app[ADMIN], app[MEDIA], config, clock.now())

        runner.every("privacy:retention", retention, timedelta(days=1))
    app[TIMERS] = runner
    yield
    await runner.stop()


async def started(app: web.Application) -> AsyncIterator[None]:
    """Work that needs the hub to listen: the homeserver's ping (it then resends what it
    queued while we were down) and the channels' start-up (Telegram's setWebhook)."""
    listening = app[LISTENING]

    async def when_listening(work: Any) -> None:
        await listening.wait()
        await work

    tasks = [asyncio.create_task(when_listening(ping_homeserver(app[MATRIX], app[CONFIG])))]
    if app[CRYPTO] is not None:
        wait = app[CONFIG].encryption.key_wait_seconds
        tasks.append(asyncio.create_task(when_listening(check_to_device(app[CRYPTO], wait))))
    tasks += [
        asyncio.create_task(when_listening(channel.on_start()))
        for channel in app[CHANNELS].values()
    ]
    yield
    for task in tasks:
        task.cancel()


STEPS: list[Step] = [
    database,
    http_session,
    matrix,
    channels,
    shop,
    worker,
    monitoring,
    timer_alarms,
    started,
]


def create_app(config: Config) -> web.Application:
    """The hub's application; its steps run when it starts (AppRunner.setup)."""
    app = web.Application(client_max_size=config.http.max_body_bytes)
    app[CONFIG] = config
    app[LISTENING] = asyncio.Event()
    app.cleanup_ctx.extend(STEPS)
    return app


async def check_homeserver(client: MatrixClient, config: Config) -> None:
    """Wait until the homeserver answers as the hub's appservice (whoami, the bot
    registered), saying what is missing while it does not, without a deadline
    (hub.matrix.client.wait_for_homeserver says why); fail clearly when the as_token
    belongs to another user."""
    url = config.homeserver.base_url

    async def probe() -> None:
        # At most 10 s: a homeserver that swallows packets is reported without a long silence.
        me = await client.whoami(timeout=min(config.homeserver.request_timeout_seconds, 10.0))
        if not me:
            raise StartupError(
                f"{url} answers whoami without a user id: is homeserver.url the homeserver's "
                "client-server API URL?"
            )
        if me != config.bot_mxid:
            raise StartupError(
                f"the homeserver says as_token belongs to {me}, not {config.bot_mxid}: "
                "check appservice.bot_localpart and homeserver.domain"
            )
        await client.ensure_registered(config.appservice.bot_localpart)

    await wait_for_homeserver(probe, url)
    with contextlib.suppress(ExternalError):
        await client.set_displayname(config.bot_mxid, config.appservice.bot_displayname)


async def ping_homeserver(client: MatrixClient, config: Config) -> None:
    """Ask the homeserver to ping us: a success makes it resend transactions it queued while
    we were down at once, instead of after its backoff of up to ~8 minutes."""
    for attempt in range(20):
        try:
            await client.ping(config.appservice.id, f"hub-start-{secrets.token_hex(4)}")
            log.info("homeserver ping succeeded; queued transactions will be resent now")
            return
        except ExternalError as exc:
            log.warning("homeserver ping failed (attempt %d): %s", attempt + 1, exc)
            await asyncio.sleep(min(30, 0.5 * 2**attempt))


def freeze_startup_objects() -> None:
    """Take what start-up left alive (the libraries' modules and classes, ORM mappers, the
    config: ~120 000 objects) out of the garbage collector's full collections. Each of those
    walked all of it: 30–70 ms in which nothing else ran and webhooks waited for their
    acknowledgement."""
    gc.collect()
    gc.freeze()


async def serve(config: Config, ready: asyncio.Event | None = None) -> None:
    """Run the hub until cancelled (Ctrl-C / SIGTERM handled by the caller)."""
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None)
    try:
        await runner.setup()
        site = web.TCPSite(runner, config.http.host, config.http.port)
        try:
            await site.start()
        except OSError as exc:
            raise StartupError(
                f"cannot listen on {config.http.host}:{config.http.port} ({exc.strerror}); "
                "is another hub running? change http.port"
            ) from None
    except BaseException:
        await runner.cleanup()
        raise
    log.info("hub listening on %s", config.http.public_base)
    app[LISTENING].set()
    freeze_startup_objects()
    if ready is not None:
        ready.set()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
