"""`hub telegram set-webhook -c CONFIG`: tell Telegram where to deliver the bot's updates."""

from __future__ import annotations

import aiohttp

from hub.bridges.telegram.channel import checked_webhook_url, client_for, webhook_parameters
from hub.config import Config
from hub.errors import ExternalError


async def set_webhook(config: Config) -> str:
    """Call setWebhook (URL, secret token, allowed updates) and read the result back with
    getWebhookInfo. Returns a line for the admin; raises ExternalError with a human text."""
    tg = config.channels.telegram
    if not tg.enabled:
        raise ExternalError(
            "channels.telegram is not enabled in this configuration", permanent=True
        )
    url = checked_webhook_url(config.http.public_base, tg)
    async with aiohttp.ClientSession() as http:
        client = client_for(http, tg)
        await client.call("setWebhook", webhook_parameters(tg, url))
        info = await client.call("getWebhookInfo")
    pending = info.get("pending_update_count", 0) if isinstance(info, dict) else 0
    return (
        f"Telegram will deliver the bot's updates to {url} "
        f"({pending} update(s) waiting to be delivered)"
    )
