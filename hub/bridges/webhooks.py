"""The one webhook pipeline, for every channel: read the whole body up to the cap (413 above)
-> verify (signature, secret) -> a JSON object (400 otherwise) -> parse (pure mapping) ->
store in one transaction -> acknowledge. A storing failure answers 500, so the provider
delivers again; nothing is acknowledged before it is stored."""

from __future__ import annotations

import logging

from aiohttp import web

from hub.bridges.base import Channel, Refusal
from hub.bridges.http import parse_json_object
from hub.core.ingest import Ingest
from hub.net import read_body

log = logging.getLogger(__name__)


def refused(refusal: Refusal) -> web.Response:
    log.warning("%s", refusal.log)
    return web.json_response({"error": refusal.text}, status=refusal.status)


class Webhook:
    def __init__(self, channel: Channel, ingest: Ingest, max_body_bytes: int) -> None:
        self.channel = channel
        self.ingest = ingest
        self.max_body_bytes = max_body_bytes

    def add_routes(self, app: web.Application) -> None:
        path = self.channel.webhook_path
        if path is None:
            return
        app.router.add_post(path, self.post)
        app.router.add_get(path, self.get)

    async def post(self, request: web.Request) -> web.Response:
        channel = self.channel
        raw = await read_body(request, self.max_body_bytes)
        refusal = channel.verify(raw, request.headers)
        if refusal is not None:
            return refused(refusal)
        doc = parse_json_object(raw)
        if doc is None:
            return refused(
                Refusal(400, "body is not a JSON object", f"{channel.kind} webhook: not JSON")
            )
        parsed = channel.parse(doc)
        if isinstance(parsed, Refusal):
            return refused(parsed)
        if parsed.skipped:
            log.info(
                "%s webhook: not stored: %s",
                channel.kind,
                ", ".join(f"{n}× {why}" for why, n in sorted(parsed.skipped.items())),
            )
        if parsed.envelopes:
            result = await self.ingest(channel, parsed.envelopes)
            log.info(
                "%s webhook: %d stored, %d redelivered, %d statuses",
                channel.kind,
                result.stored,
                result.duplicates,
                result.statuses,
            )
        await channel.after_store(parsed)
        return channel.acknowledgement()

    async def get(self, request: web.Request) -> web.Response:
        answer = self.channel.subscription_challenge(request.query)
        if answer is None:
            raise web.HTTPMethodNotAllowed(request.method, ["POST"])
        return answer
