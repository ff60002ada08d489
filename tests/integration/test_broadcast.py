"""`hub broadcast` as an admin runs it (a subprocess: exit codes, stdout, stderr) against the
database a hub uses, on SQLite and PostgreSQL. No hub runs here: the test plays its job
worker where a test needs the sends to happen (the message marked sent, as
hub.bridges.sending does through hub.db.outbound.mark_sent)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.config import ShopConfig
from hub.config.privacy import NewsletterConfig
from hub.consent.newsletter_flow import Newsletter
from hub.core.types import Envelope, InboundMessage, Sender
from hub.db import inbound, outbound
from hub.db.database import Database
from hub.db.inbound import InboundPolicy
from hub.db.models import BroadcastRecipient, Message, NewsletterOptin, OutboxItem, utcnow
from hub.jobs.kinds import CHANNEL_SEND

Sessions = async_sessionmaker[AsyncSession]
REPO = Path(__file__).resolve().parents[2]
TEMPLATE = {"name": "newsletter_dec", "language": "de", "params": 1, "description": "Hallo {{1}}!"}


def write_config(tmp_path: Path, db_url: str, **newsletter: Any) -> Path:
    config = {
        "data_dir": str(tmp_path),
        "homeserver": {"url": "http://127.0.0.1:1", "domain": "shop.example"},
        "appservice": {"as_token": "a" * 32, "hs_token": "h" * 32},
        "database": {"url": db_url},
        "shop": {"name": "Farben Müller", "timezone": "Europe/Berlin"},
        "channels": {
            "whatsapp": {
                "enabled": True,
                "phone_number_id": "1234",
                "access_token": "t" * 20,
                "app_secret": "s" * 20,
                "verify_token": "v" * 20,
                "templates": [TEMPLATE, {"name": "plain", "language": "en"}],
            }
        },
        "newsletter": {"broadcast_per_minute": 60, **newsletter},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def command(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "hub", "broadcast", "-c", str(config), *args]


def hub(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(config, *args), cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )


def assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr


async def customer(db: Database, channel: str, ext: str, state: str | None) -> int:
    """A customer who wrote once on `channel`, with an opt-in row in `state` (None: none);
    the identity's id."""
    policy = InboundPolicy(channel, channel[:2], channel, "customer_", "shop.example", "Shop")
    envelope = Envelope(Sender(channel, ext, ext), InboundMessage(f"{ext}.1", "text", text="Hi"))
    result = await db.write(inbound.store_events, policy, [envelope])
    [message] = result.messages

    def add_optin(tx: Any) -> int:
        from hub.db.newsletter import identity_of

        identity = identity_of(tx, message.conversation_id)
        if state is not None:
            now = utcnow()
            tx.orm.add(
                NewsletterOptin(
                    identity_id=identity.id,
                    state=state,
                    text_version="1",
                    requested_at=now,
                    updated_at=now,
                    first_confirmed_at=now if state == "opted_in" else None,
                    confirmed_at=now if state == "opted_in" else None,
                )
            )
        return identity.id

    return int(await db.write(add_optin))


async def audience(db: Database) -> dict[str, int]:
    """Two opted in on WhatsApp, one half way, one opted out, one never asked, one opted in
    on Telegram (no templates there)."""
    return {
        "ana": await customer(db, "whatsapp", "4915100000001", "opted_in"),
        "bo": await customer(db, "whatsapp", "4915100000002", "opted_in"),
        "cem": await customer(db, "whatsapp", "4915100000003", "confirmed_once"),
        "dora": await customer(db, "whatsapp", "4915100000004", "opted_out"),
        "emil": await customer(db, "whatsapp", "4915100000005", None),
        "fay": await customer(db, "telegram", "tg-fay", "opted_in"),
    }


async def recipients(sessions: Sessions) -> dict[int, BroadcastRecipient]:
    async with sessions() as s:
        rows = (await s.scalars(select(BroadcastRecipient))).all()
    return {r.identity_id: r for r in rows}


async def template_sends(sessions: Sessions) -> list[tuple[Message, OutboxItem]]:
    async with sessions() as s:
        messages = (await s.scalars(select(Message).where(Message.kind == "template"))).all()
        jobs = (await s.scalars(select(OutboxItem).where(OutboxItem.kind == CHANNEL_SEND))).all()
    by_message = {j.payload["message_id"]: j for j in jobs}
    return [(m, by_message[m.id]) for m in sorted(messages, key=lambda m: m.id)]


SKIPPED = "skipped 4 (not opted in: 2, opted out: 1, channel without templates: 1)"


async def test_only_completed_opt_ins_get_the_template_and_a_rerun_sends_nothing_twice(
    db: Database, db_url: str, sessions: Sessions, tmp_path: Path
) -> None:
    people = await audience(db)
    config = write_config(tmp_path, db_url)
    result = hub(config, "--template", "newsletter_dec", "--param", "Freunde", "--no-wait")
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    sends = await template_sends(sessions)
    assert len(sends) == 2
    for message, job in sends:
        assert message.channel == "whatsapp" and message.direction == "out"
        assert message.data == {"name": "newsletter_dec", "language": "de", "params": ["Freunde"]}
        assert message.text == "[Template newsletter_dec] Hallo Freunde!"
        assert message.status == "pending" and job.status == "pending"
        assert job.ordering_key.startswith("broadcast:newsletter_dec-")
    # Spaced at the configured rate (60 a minute: a second apart).
    gap = sends[1][1].next_attempt_at - sends[0][1].next_attempt_at
    assert timedelta(seconds=0.9) <= gap <= timedelta(seconds=1.5)
    rows = await recipients(sessions)
    assert {name: (rows[i].status, rows[i].reason) for name, i in people.items()} == {
        "ana": ("queued", None),
        "bo": ("queued", None),
        "cem": ("skipped", "not_opted_in"),
        "dora": ("skipped", "opted_out"),
        "emil": ("skipped", "not_opted_in"),
        "fay": ("skipped", "no_templates"),
    }
    assert {rows[people["ana"]].message_id, rows[people["bo"]].message_id} == {
        m.id for m, _ in sends
    }
    assert "2 queued for the running hub to send, 60 a minute" in result.stderr
    assert result.stdout.splitlines()[1:] == [f"  {SKIPPED}", "  this run queued 2"]
    assert "0 sent, 0 failed, 2 still queued" in result.stdout

    # Again, after Emil opted in: only he gets it now.
    async with sessions() as s, s.begin():
        now = utcnow()
        s.add(
            NewsletterOptin(
                identity_id=people["emil"],
                state="opted_in",
                text_version="1",
                requested_at=now,
                updated_at=now,
                first_confirmed_at=now,
                confirmed_at=now,
            )
        )
    again = hub(config, "--template", "newsletter_dec", "--param", "Freunde", "--no-wait")
    assert again.returncode == 0, again.stderr
    assert len(await template_sends(sessions)) == 3
    assert (await recipients(sessions))[people["emil"]].status == "queued"
    assert "this run queued 1; 2 had been recorded by an earlier run" in again.stdout
    third = hub(config, "--template", "newsletter_dec", "--param", "Freunde", "--no-wait")
    assert third.returncode == 0 and len(await template_sends(sessions)) == 3
    assert "this run queued 0; 3 had been recorded by an earlier run" in third.stdout


async def test_a_dry_run_counts_and_queues_nothing(
    db: Database, db_url: str, sessions: Sessions, tmp_path: Path
) -> None:
    await audience(db)
    result = hub(write_config(tmp_path, db_url), "--template", "plain", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"dry run, nothing queued: broadcast {_default_id('plain', [])} (template plain)",
        "  would send to 2 customer(s)",
        f"  {SKIPPED}",
    ]
    assert await template_sends(sessions) == []
    assert await recipients(sessions) == {}


def _default_id(template: str, params: list[str]) -> str:
    from hub.consent.broadcast import default_id

    return default_id(template, params)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--template", "newsletter_dec"],
            "template 'newsletter_dec' takes 1 parameter(s), 0 given: "
            "hub broadcast --template newsletter_dec --param P1",
        ),
        (["--template", "plain", "--param", "x"], "template 'plain' takes 0 parameter(s), 1 given"),
        (["--template", "nope"], "no template named 'nope' in the config; configured: "),
        (["--template", "plain", "--id", "a b"], "--id 'a b': 1 to 64 of"),
    ],
    ids=["too-few-params", "too-many-params", "unknown", "bad-id"],
)
async def test_a_template_that_cannot_go_out_is_refused_before_anything_is_queued(
    db: Database,
    db_url: str,
    sessions: Sessions,
    tmp_path: Path,
    args: list[str],
    expected: str,
) -> None:
    await audience(db)
    result = hub(write_config(tmp_path, db_url), *args)
    assert result.returncode == 2
    assert expected in result.stderr and result.stderr.rstrip().endswith("; nothing queued")
    assert_no_traceback(result)
    assert await template_sends(sessions) == []
    assert await recipients(sessions) == {}


async def test_it_watches_the_hub_send_with_a_progress_bar_and_sums_up(
    db: Database, db_url: str, sessions: Sessions, tmp_path: Path
) -> None:
    await audience(db)
    config = write_config(tmp_path, db_url, broadcast_per_minute=6000)
    proc = await asyncio.create_subprocess_exec(
        *command(config, "--template", "plain", "--id", "dec-2026"),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    # The hub's worker: sends what is queued (the first goes through, the second fails).
    sends: list[tuple[Message, OutboxItem]] = []
    for _ in range(200):
        sends = await template_sends(sessions)
        if len(sends) == 2:
            break
        await asyncio.sleep(0.1)
    assert len(sends) == 2
    await asyncio.sleep(1.5)  # the command watches a while: nothing happens
    await db.write(outbound.mark_sent, sends[0][0].id, "wamid.sent", None)
    await asyncio.sleep(1.5)
    await db.write(outbound.send_failed, sends[1][0].id, "the number is not on WhatsApp", False)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    out, err = stdout.decode(), stderr.decode()
    assert proc.returncode == 1, err  # a send failed
    assert "[..............................] 0/2 done (0 sent)" in err
    assert "[###############...............] 1/2 done (1 sent)" in err
    assert "[##############################] 2/2 done (1 sent, 1 failed)" in err
    assert out.splitlines()[0] == (
        "broadcast dec-2026 (template plain): 1 sent, 1 failed, 0 still queued"
    )
    statuses = sorted(r.status for r in (await recipients(sessions)).values())
    assert statuses == ["failed", "sent", "skipped", "skipped", "skipped", "skipped"]
    # Run again: nothing sent twice, the failed one not tried again.
    again = hub(config, "--template", "plain", "--id", "dec-2026")
    assert again.returncode == 1 and len(await template_sends(sessions)) == 2
    assert "this run queued 0; 2 had been recorded by an earlier run" in again.stdout


async def test_ctrl_c_stops_watching_and_leaves_the_queue_to_the_hub(
    db: Database, db_url: str, sessions: Sessions, tmp_path: Path
) -> None:
    await audience(db)
    config = write_config(tmp_path, db_url)
    proc = await asyncio.create_subprocess_exec(
        *command(config, "--template", "plain", "--id", "dec-2026"),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    for _ in range(200):
        if len(await template_sends(sessions)) == 2:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(1)
    proc.send_signal(signal.SIGINT)
    _, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 130
    err = stderr.decode()
    assert "Traceback" not in err
    assert (
        "stopped watching: the running hub goes on sending the 2 queued message(s). "
        "`hub broadcast --template plain --id dec-2026` (with the same parameters) shows the "
        "progress again and sends nothing twice."
    ) in err
    assert [job.status for _, job in await template_sends(sessions)] == ["pending", "pending"]


async def test_stop_cancels_what_a_broadcast_queued_for_the_customer(
    db: Database, db_url: str, sessions: Sessions, tmp_path: Path
) -> None:
    people = await audience(db)
    config = write_config(tmp_path, db_url)
    assert hub(config, "--template", "newsletter_dec", "--param", "X", "--no-wait").returncode == 0
    # Ana writes STOP while her template still waits for its turn in the queue.
    flow = Newsletter(
        NewsletterConfig(), ShopConfig(name="Shop"), lambda kind: True, lambda kind: kind
    )
    policy = InboundPolicy(
        "whatsapp",
        "wh",
        "WhatsApp",
        "customer_",
        "shop.example",
        "Shop",
        after_message=(flow.after_message,),
    )
    stop = Envelope(
        Sender("whatsapp", "4915100000001", "ana"), InboundMessage("stop.1", "text", text="STOP")
    )
    await db.write(inbound.store_events, policy, [stop])
    rows = await recipients(sessions)
    assert (rows[people["ana"]].status, rows[people["ana"]].reason) == ("skipped", "opted_out")
    assert rows[people["bo"]].status == "queued"
    statuses = {m.id: m.status for m, _job in await template_sends(sessions)}
    assert statuses[rows[people["ana"]].message_id] == "cancelled"
    assert statuses[rows[people["bo"]].message_id] == "pending"
