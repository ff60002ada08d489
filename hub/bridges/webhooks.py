"""The one webhook pipeline, for every channel: read the whole body up to the cap (413 above)
-> verify (signature, secret) -> a JSON object (400 otherwise) -> parse (pure mapping) ->
store in one transaction -> acknowledge. A storing failure answers 500, so the provider
delivers again; nothing is acknowledged before it is stored.

What it guarantees for a body of any shape:
- a body over the cap is 413, one that is not the provider's (verify refuses it, or verify
  itself fails) 401/403, one that is not a JSON object of sane depth 400 — never 5xx;
- a well-signed delivery the mapping cannot understand is acknowledged like any other, so
  the provider does not redeliver it for days (Telegram would hold back every later update
  behind it): what parsed is stored; the rest is logged once per delivery as a warning
  (channel and a short reason, never the body). The mappings store an event they could not
  read but whose sender they could as an "unsupported" message, which the room shows as
  "could not be shown"; should a mapping raise anyway, the delivery is still acknowledged;
- every envelope is made storable (`hub.core.text.storable_envelope`: no lone surrogates or
  NUL, ids and names within their columns) before the store path sees it;
- only a failure to store (the database) answers 500.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from aiohttp import web

from hub.bridges.base import Channel, Refusal
from hub.bridges.http import parse_json_object
from hub.core.ingest import Ingest
from hub.core.text import storable_envelope
from hub.core.types import Parsed, exception_summary
from hub.logs import in_log_context
from hub.metrics import counted_webhook
from hub.net import read_body

log = logging.getLogger(__name__)
LOG_REASON_CHARS = 200


def loggable(text: str, limit: int = LOG_REASON_CHARS) -> str:
    """A reason that may hold what a sender made up, as one short line for the log."""
    text = "".join(c if c.isprintable() else "?" for c in text[: limit + 1])
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _counts(reasons: Mapping[str, int]) -> str:
    return ", ".join(f"{n}× {loggable(why)}" for why, n in sorted(reasons.items()))


def refused(refusal: Refusal) -> web.Response:
    log.warning("%s", loggable(refusal.log))
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
        kind = self.channel.kind
        # The lines of a delivery name its channel (hub.logs: JSON lines' `channel`).
        app.router.add_post(path, counted_webhook(kind, in_log_context(self.post, channel=kind)))
        app.router.add_get(path, self.get)

    async def post(self, request: web.Request) -> web.Response:
        channel = self.channel
        raw = await read_body(request, self.max_body_bytes)
        refusal = self.verify(raw, request)
        if refusal is not None:
            return refused(refusal)
        doc = parse_json_object(raw)
        if doc is None:
            return refused(
                Refusal(400, "body is not a JSON object", f"{channel.kind} webhook: not JSON")
            )
        parsed = self.parse(doc)
        if isinstance(parsed, Refusal):
            return refused(parsed)
        if parsed.problems:
            log.warning(
                "%s webhook: not understood, acknowledged: %s",
                channel.kind,
                _counts(parsed.problems),
            )
        if parsed.skipped:
            log.info("%s webhook: not stored: %s", channel.kind, _counts(parsed.skipped))
        if parsed.envelopes:
            # A failure here is the database's: 500, and the provider delivers again.
            result = await self.ingest(channel, parsed.envelopes)
            log.info(
                "%s webhook: %d stored, %d redelivered, %d statuses",
                channel.kind,
                result.stored,
                result.duplicates,
                result.statuses,
            )
        try:
            await channel.after_store(parsed)
        except Exception as exc:  # stored already: a redelivery would change nothing
            log.warning(
                "%s webhook: after storing: %s", channel.kind, loggable(exception_summary(exc))
            )
        return channel.acknowledgement()

    def verify(self, raw: bytes, request: web.Request) -> Refusal | None:
        """The channel's verdict; a verify that fails on what it was sent refuses."""
        kind = self.channel.kind
        try:
            return self.channel.verify(raw, request.headers)
        except Exception as exc:
            return Refusal(
                403,
                "not verified",
                f"{kind} webhook refused: verifying failed ({exception_summary(exc)})",
            )

    def parse(self, doc: dict[str, object]) -> Parsed | Refusal:
        """The channel's mapping of a verified delivery, its envelopes made storable. The
        mappings read every event defensively; should one raise all the same, the delivery
        counts as not understood (and is acknowledged) instead of answering 500 forever."""
        try:
            parsed = self.channel.parse(doc)
            if isinstance(parsed, Refusal):
                return parsed
            parsed.envelopes = [storable_envelope(env) for env in parsed.envelopes]
            parsed.acks = [ack for ack in parsed.acks if isinstance(ack, str)]
        except Exception as exc:
            parsed = Parsed()
            parsed.not_understood("delivery", exc)
        return parsed

    async def get(self, request: web.Request) -> web.Response:
        answer = self.channel.subscription_challenge(request.query)
        if answer is None:
            raise web.HTTPMethodNotAllowed(request.method, ["POST"])
        return answer
