"""`hub broadcast --template NAME [--param VALUE ...] [--id ID] [--dry-run] [--no-wait]`: an
approved WhatsApp template for every customer with a completed double opt-in and no opt-out
since (hub.consent.newsletter), sent by the running hub. For whoever runs the hub: English.

Every customer is recorded once per broadcast id (`broadcast_recipients`): queued (a template
message and its channel.send job, in the database the hub uses) or skipped with the reason
(not opted in, opted out, opted in on a channel without templates). The jobs share one
ordering key, spaced `60 / newsletter.broadcast_per_minute` seconds apart, so the hub's worker
sends them one after another at that rate (a send the queue retries holds the ones behind it:
the rate stays the rate); a conversation's own messages never wait for them. The messages do
not appear in the customers' rooms (a thousand rooms lighting up at once would drown the
advisers); a failed one is noticed there like any undelivered message.

The id defaults to the template and its parameters, so running the same command again (after
Ctrl-C, a crash, or to see the progress) sends nobody anything twice; a customer skipped
then who has opted in since is sent the template now. A new newsletter with the same template
and parameters needs its own `--id`. A failed send is not tried again by a re-run (the job
queue retried it already).

The command then watches the messages as the hub's worker sends them (a progress bar on
stderr) and prints a summary. Ctrl-C stops watching, never sending. Exit codes: 0 done, 1
some sends failed, 2 refused before anything was queued (unknown template, wrong number of
parameters, WhatsApp not enabled, a bad id), 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, TextIO

from hub.config import WhatsappTemplate, load_config
from hub.consent.newsletter import Skip

if TYPE_CHECKING:
    from hub.config import Config
    from hub.db.database import Database
    from hub.db.newsletter import Progress, Template

BATCH = 500  # customers recorded per transaction: the hub's writes never wait long
POLL_SECONDS = 1.0
STALL_SECONDS = 30.0  # messages due this long and none sent: is the hub running?
REASONS = {
    Skip.NOT_OPTED_IN: "not opted in",
    Skip.OPTED_OUT: "opted out",
    Skip.NO_TEMPLATES: "channel without templates",
}
_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class Refused(Exception):
    """The broadcast cannot be sent as asked (exit 2, nothing queued)."""


def add_broadcast_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`hub broadcast`."""
    p = sub.add_parser(
        "broadcast",
        help="send an approved WhatsApp template to the newsletter's subscribers",
        description="Send an approved WhatsApp template (channels.whatsapp.templates) to every "
        "customer who confirmed the newsletter twice and has not opted out, through the "
        "running hub's job queue at newsletter.broadcast_per_minute. Everyone else is skipped "
        "and counted. Running it again with the same id sends nobody anything twice.",
    )
    p.add_argument("--template", required=True, metavar="NAME")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="VALUE",
        help="the template's next {{n}} parameter (repeat for each)",
    )
    p.add_argument(
        "--id",
        dest="broadcast_id",
        metavar="ID",
        help="the broadcast's id (default: the template and its parameters); a customer gets "
        "each broadcast once",
    )
    p.add_argument("--dry-run", action="store_true", help="count the recipients, queue nothing")
    p.add_argument(
        "--no-wait", action="store_true", help="queue and exit; the running hub sends them"
    )
    p.add_argument("-c", "--config", required=True)
    p.set_defaults(func=cmd_broadcast)


# -- what is sent -------------------------------------------------------------------------


def check_template(config: Config, name: str, params: list[str]) -> WhatsappTemplate:
    """The configured template, or Refused saying why it cannot go out."""
    whatsapp = config.channels.whatsapp
    if not whatsapp.enabled:
        raise Refused(
            "channels.whatsapp is not enabled: only WhatsApp carries templates, and the hub "
            "sends them through it"
        )
    templates = {t.name: t for t in whatsapp.templates}
    template = templates.get(name)
    if template is None:
        known = ", ".join(templates) or "none (channels.whatsapp.templates)"
        raise Refused(f"no template named {name!r} in the config; configured: {known}")
    if len(params) != template.params:
        usage = " ".join(f"--param P{n}" for n in range(1, template.params + 1))
        raise Refused(
            f"template {name!r} takes {template.params} parameter(s), {len(params)} given: "
            f"hub broadcast --template {name} {usage}".rstrip()
        )
    return template


def default_id(template: str, params: list[str]) -> str:
    """The same template with the same parameters is the same broadcast."""
    digest = hashlib.sha256(json.dumps([template, params]).encode()).hexdigest()[:10]
    return f"{template[:53]}-{digest}"


def _template(config: Config, template: WhatsappTemplate, params: list[str]) -> Template:
    from hub.bridges.whatsapp.commands import render_preview
    from hub.db.newsletter import Template

    return Template(
        template.name,
        template.language,
        tuple(params),
        render_preview(template, params),
        config.shop.name,
    )


# -- the command --------------------------------------------------------------------------


@dataclass
class Run:
    """What this run did so far (for the summary, and for Ctrl-C)."""

    broadcast: str
    queued: int = 0
    skipped: Counter[Skip] = field(default_factory=Counter)
    earlier: int = 0
    queueing: bool = True
    progress: Progress | None = None


def cmd_broadcast(args: argparse.Namespace) -> int:
    from hub.i18n import set_locale

    config = load_config(args.config)
    set_locale(config.shop.locale)
    params = list(args.param)
    broadcast = args.broadcast_id or default_id(args.template, params)
    try:
        template = check_template(config, args.template, params)
        if not _ID.match(broadcast):
            raise Refused(f"--id {broadcast!r}: 1 to 64 of A-Z a-z 0-9 . _ : -")
    except Refused as exc:
        print(f"hub broadcast: {exc}; nothing queued", file=sys.stderr)
        return 2
    run = Run(broadcast)
    try:
        return asyncio.run(
            _main(config, _template(config, template, params), run, args.dry_run, args.no_wait)
        )
    except KeyboardInterrupt:
        print(file=sys.stderr)
        print(interrupted(run, args.template), file=sys.stderr)
        return 130


async def _main(config: Config, template: Template, run: Run, dry_run: bool, no_wait: bool) -> int:
    from hub.db.engine import migrate, open_database

    db = open_database(config.database_url)
    try:
        await migrate(db)
        return await broadcast(
            db,
            template,
            run,
            per_minute=config.newsletter.broadcast_per_minute,
            dry_run=dry_run,
            wait=not no_wait,
        )
    finally:
        await db.close()


async def broadcast(
    db: Database,
    template: Template,
    run: Run,
    *,
    per_minute: int,
    dry_run: bool = False,
    wait: bool = True,
    out: TextIO | None = None,
    err: TextIO | None = None,
    poll: float = POLL_SECONDS,
) -> int:
    """Queue the broadcast (or count it: `dry_run`), then watch it; the exit code."""
    from hub.db import newsletter
    from hub.db.models import utcnow

    out, err = out or sys.stdout, err or sys.stderr
    name = f"broadcast {run.broadcast} (template {template.name})"
    interval = 60.0 / per_minute
    start, after = utcnow(), 0
    while True:
        if dry_run:
            batch = await db.read(newsletter.plan_batch, run.broadcast, after, BATCH)
        else:
            first_due = start + timedelta(seconds=run.queued * interval)
            batch = await db.write(
                newsletter.queue_batch, run.broadcast, template, after, BATCH, first_due, interval
            )
        run.queued += batch.queued
        run.skipped += batch.skipped
        run.earlier += batch.earlier
        if batch.last_identity_id is None:
            break
        after = batch.last_identity_id
    run.queueing = False
    if dry_run:
        print(f"dry run, nothing queued: {name}", file=out)
        print(f"  would send to {run.queued} customer(s)", file=out)
        print(f"  {_skipped(run.skipped)}", file=out)
        if run.earlier:
            print(f"  {run.earlier} recorded by an earlier run of this broadcast", file=out)
        return 0
    if run.queued:
        print(
            f"{name}: {run.queued} queued for the running hub to send, {per_minute} a minute "
            f"(about {duration(run.queued * interval)})",
            file=err,
        )
    if wait:
        run.progress = await watch(db, run, err, poll)
    else:
        run.progress = await db.read(newsletter.progress, run.broadcast)
        if run.progress.queued:
            print(
                "the running hub sends them; the same command again shows the progress "
                "(it sends nothing twice)",
                file=err,
            )
    print(summary(name, run), file=out)
    return 1 if run.progress.failed else 0


async def watch(db: Database, run: Run, err: TextIO, poll: float) -> Progress:
    """Follow the broadcast until no message is left queued, a progress bar on `err`; the
    rows are updated as their messages are sent."""
    from hub.db import newsletter
    from hub.db.models import utcnow

    progress = await db.write(newsletter.progress, run.broadcast, sync=True)
    run.progress = progress
    if progress.queued == 0:
        return progress
    last_change, warned = utcnow(), False
    err.write(bar(progress))
    err.flush()
    while progress.queued:
        await asyncio.sleep(poll)
        seen = await db.read(newsletter.progress, run.broadcast)
        now = utcnow()
        if seen != progress:
            seen = await db.write(newsletter.progress, run.broadcast, sync=True)
            last_change = now
        elif not warned and (now - last_change).total_seconds() > STALL_SECONDS:
            due = await db.read(newsletter.oldest_due, run.broadcast)
            if due is not None and (now - due).total_seconds() > STALL_SECONDS:
                err.write(
                    "\nnothing sent for a while although messages are due: is the hub running?\n"
                )
                warned = True
        progress = run.progress = seen
        err.write(bar(progress))
        err.flush()
    err.write("\n")
    return progress


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 90 else f"{minutes // 60} h {minutes % 60} min"


def bar(progress: Progress, width: int = 30) -> str:
    total = max(progress.to_send, 1)
    filled = width * progress.done // total
    failed = f", {progress.failed} failed" if progress.failed else ""
    return (
        f"\r[{'#' * filled}{'.' * (width - filled)}] {progress.done}/{progress.to_send} done "
        f"({progress.sent} sent{failed})"
    )


def _skipped(counts: Counter[Skip] | dict[Skip, int]) -> str:
    total = sum(counts.values())
    parts = ", ".join(f"{REASONS[r]}: {counts.get(r, 0)}" for r in Skip)
    return f"skipped {total} ({parts})"


def summary(name: str, run: Run) -> str:
    """The broadcast's counts over all its runs, and what this run added."""
    p = run.progress
    assert p is not None
    lines = [
        f"{name}: {p.sent} sent, {p.failed} failed, {p.queued} still queued",
        f"  {_skipped(dict(p.skipped))}",
        f"  this run queued {run.queued}"
        + (f"; {run.earlier} had been recorded by an earlier run" if run.earlier else ""),
    ]
    return "\n".join(lines)


def interrupted(run: Run, template: str) -> str:
    again = f"hub broadcast --template {template} --id {run.broadcast}"
    if run.queueing:
        return (
            f"interrupted while queueing: {run.queued} message(s) queued so far, which the "
            f"running hub sends. `{again}` (with the same parameters) queues the rest; nobody "
            "gets it twice."
        )
    queued = run.progress.queued if run.progress is not None else run.queued
    return (
        f"stopped watching: the running hub goes on sending the {queued} queued message(s). "
        f"`{again}` (with the same parameters) shows the progress again and sends nothing twice."
    )
