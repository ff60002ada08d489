"""Build the aiohttp application of a hub from its config; start and stop its services."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import importlib
import logging
import secrets
import sys
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from hub.bridges.sending import SEND_REACTION, ChannelSender
from hub.bridges.webchat.channel import WebchatChannel
from hub.commerce.catalogue import CatalogueError
from hub.commerce.catalogue_import import load_configured_catalogue
from hub.commerce.checkout import Checkout
from hub.commerce.commands import register_commands as register_commerce_commands
from hub.commerce.http import CommerceHttp
from hub.commerce.service import CREATE_CHECKOUT, Shop
from hub.config import Config
from hub.core.bot import MATRIX_SEND, register_core_commands
from hub.core.ingest import FETCH_PROFILE, ORDER_TO_CART, fetch_profile
from hub.core.media import MediaStore
from hub.core.outbox import OutboxWorker
from hub.core.router import DELIVER_TO_MATRIX, SEND_TO_CHANNEL
from hub.db.engine import create_engine, database_of, migrate, session_factory
from hub.errors import StartupError
from hub.http.pages import add_page_routes
from hub.hub import Hub
from hub.matrix.appservice import MATRIX_EVENT, MATRIX_RECEIPT, AppserviceApi
from hub.matrix.client import MatrixClient, MatrixError, MatrixUnavailable
from hub.matrix.deliver import MatrixDelivery, preload_delivery
from hub.matrix.dispatcher import Dispatcher
from hub.matrix.portal import Portals
from hub.matrix.receipts import SEND_RECEIPT, Receipts

log = logging.getLogger(__name__)

HUB = web.AppKey("hub", Hub)
# Messenger channels, imported only when enabled.
PROVIDER_CHANNELS = {
    "whatsapp": "hub.bridges.whatsapp.channel:WhatsappChannel",
    "telegram": "hub.bridges.telegram.channel:TelegramChannel",
    "messenger": "hub.bridges.meta.channel:MessengerChannel",
    "instagram": "hub.bridges.meta.channel:InstagramChannel",
}


async def build_hub(config: Config) -> Hub:
    engine = create_engine(config.database_url, echo=config.database.echo)
    try:
        await migrate(engine, in_child=True)
    except StartupError:
        await engine.dispose()
        raise
    sessions = session_factory(engine)
    http = aiohttp.ClientSession()
    matrix = MatrixClient(
        http,
        config.homeserver.base_url,
        config.appservice.as_token,
        config.bot_mxid,
        timeout=config.homeserver.request_timeout_seconds,
    )
    hub = Hub(
        config=config,
        engine=engine,
        sessions=sessions,
        http=http,
        matrix=matrix,
        portals=Portals(config, matrix, sessions),
        worker=OutboxWorker(sessions, config.outbox),
        media=MediaStore(config.media_dir),
    )
    try:
        _assemble(hub)
    except BaseException:
        await close_hub(hub)
        raise
    return hub


def _assemble(hub: Hub) -> None:
    """Channels, commands and outbox handlers of a freshly constructed hub."""
    config = hub.config
    hub.receipts = Receipts(hub)
    hub.shop = Shop(hub)
    hub.checkout = Checkout(hub)
    register_core_commands(hub)
    register_commerce_commands(hub)
    if config.channels.webchat.enabled:
        hub.channels["webchat"] = WebchatChannel(hub)
    for name, target in PROVIDER_CHANNELS.items():
        if getattr(config.channels, name).enabled:
            module_name, _, class_name = target.partition(":")
            channel_class = getattr(importlib.import_module(module_name), class_name)
            hub.channels[name] = channel_class(hub)
            register = getattr(sys.modules[module_name], "register_commands", None)
            if register is not None:
                register(hub)
    delivery, sender, dispatcher = MatrixDelivery(hub), ChannelSender(hub), Dispatcher(hub)
    hub.worker.register(
        DELIVER_TO_MATRIX,
        delivery.deliver_inbound,
        delivery.on_deliver_dead,
        preload=preload_delivery,
    )
    hub.worker.register(MATRIX_SEND, delivery.send_room_event)
    hub.worker.register(SEND_TO_CHANNEL, sender.send, sender.on_dead)
    hub.worker.register(SEND_REACTION, sender.react)
    hub.worker.register(FETCH_PROFILE, functools.partial(fetch_profile, hub))
    hub.worker.register(MATRIX_EVENT, dispatcher.handle)
    hub.worker.register(MATRIX_RECEIPT, hub.receipts.adviser_read)
    hub.worker.register(SEND_RECEIPT, hub.receipts.send)
    hub.worker.register(ORDER_TO_CART, hub.shop.order_to_cart)
    hub.worker.register(CREATE_CHECKOUT, hub.checkout.create, hub.checkout.on_dead)


async def close_hub(hub: Hub) -> None:
    await hub.worker.stop()
    if hasattr(hub, "checkout"):
        await hub.checkout.close()
    await hub.http.close()
    database_of(hub.sessions).close()
    await hub.engine.dispose()


async def check_homeserver(hub: Hub, attempts: int = 30) -> None:
    """Fail clearly when the homeserver rejects our token; tolerate it being down a while."""
    for attempt in range(attempts):
        try:
            me = await hub.matrix.whoami()
        except MatrixError as exc:
            if exc.errcode in ("M_UNKNOWN_TOKEN", "M_FORBIDDEN", "M_MISSING_TOKEN"):
                raise StartupError(
                    "the homeserver rejects appservice.as_token: list the registration file "
                    "(`hub generate-registration`) in the homeserver's app_service_config_files "
                    "and restart it"
                ) from None
            raise StartupError(f"the homeserver answered whoami with {exc}") from None
        except MatrixUnavailable:
            if attempt == attempts - 1:
                log.warning(
                    "homeserver %s unreachable; will keep retrying through the outbox",
                    hub.config.homeserver.base_url,
                )
                return
            await asyncio.sleep(1)
            continue
        if me != hub.config.bot_mxid:
            raise StartupError(
                f"the homeserver says as_token belongs to {me}, not {hub.config.bot_mxid}: "
                "check appservice.bot_localpart and homeserver.domain"
            )
        await hub.matrix.ensure_registered(hub.config.appservice.bot_localpart)
        with contextlib.suppress(MatrixError, MatrixUnavailable):
            await hub.matrix.set_displayname(
                hub.config.bot_mxid, hub.config.appservice.bot_displayname
            )
        return


async def ping_homeserver(hub: Hub) -> None:
    """Ask the homeserver to ping us: a success makes it resend transactions it queued while
    we were down at once, instead of after its backoff of up to ~8 minutes."""
    for attempt in range(20):
        try:
            await hub.matrix.ping(hub.config.appservice.id, f"hub-start-{secrets.token_hex(4)}")
            log.info("homeserver ping succeeded; queued transactions will be resent now")
            return
        except (MatrixError, MatrixUnavailable) as exc:
            log.warning("homeserver ping failed (attempt %d): %s", attempt + 1, exc)
            await asyncio.sleep(min(30, 0.5 * 2**attempt))


async def create_app(config: Config) -> web.Application:
    """Assemble the hub and its web application; the outbox worker runs while the app does."""
    hub = await build_hub(config)
    try:
        await check_homeserver(hub)
        await load_configured_catalogue(config, hub.sessions)
    except CatalogueError as exc:
        await close_hub(hub)
        raise StartupError(
            f"commerce.catalogue_file {config.commerce.catalogue_file}: "
            + "; ".join(exc.problems[:10])
        ) from None
    except BaseException:
        await close_hub(hub)
        raise
    app = web.Application(client_max_size=config.http.max_body_bytes)
    app[HUB] = hub
    AppserviceApi(
        hub.sessions,
        config.appservice.hs_token,
        hub.worker.wake,
        hub.portals.is_own,
        lambda alias: alias.startswith("#" + config.appservice.alias_prefix),
    ).add_routes(app)
    for channel in hub.channels.values():
        channel.add_routes(app)
    add_page_routes(app, hub)
    CommerceHttp(hub).add_routes(app)

    async def worker(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(hub.worker.run(), name="outbox-worker")
        yield
        await close_hub(hub)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(worker)
    return app


def freeze_startup_objects() -> None:
    """Take what start-up left alive (the libraries' modules and classes, ORM mappers, the
    config: ~120 000 objects) out of the garbage collector's full collections. Each of those
    walked all of it: 30–70 ms in which nothing else ran and webhooks waited for their
    acknowledgement (bench/webhooks.py caught one at p99 79 ms)."""
    gc.collect()
    gc.freeze()


async def serve(config: Config, ready: asyncio.Event | None = None) -> None:
    """Run the hub until cancelled (Ctrl-C / SIGTERM handled by the caller)."""
    app = await create_app(config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.http.host, config.http.port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise StartupError(
            f"cannot listen on {config.http.host}:{config.http.port} ({exc.strerror}); "
            "is another hub running? change http.port"
        ) from None
    log.info("hub listening on %s", config.http.public_base)
    hub = app[HUB]
    ping = asyncio.create_task(ping_homeserver(hub))
    # Channels with start-up work (Telegram's setWebhook) do it once the webhook listens.
    starting = [
        asyncio.create_task(channel.on_start())
        for channel in hub.channels.values()
        if hasattr(channel, "on_start")
    ]
    freeze_startup_objects()
    if ready is not None:
        ready.set()
    try:
        await asyncio.Event().wait()
    finally:
        ping.cancel()
        for task in starting:
            task.cancel()
        await runner.cleanup()
