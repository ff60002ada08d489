"""Photo consent through the one store path and the command runner, on SQLite and
PostgreSQL: asking (as a reply to an image, or all), the customer's answers by button and by
word, late answers, revocation by word and by an adviser, what is refused with ⛔, the
deletion's bookkeeping and `hub ugc export`. The deletion on a real homeserver is in
tests/e2e/test_consent.py."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.bridges.webchat.channel import message_json
from hub.config.privacy import PhotoConsentConfig
from hub.consent.photo import button_id
from hub.consent.photo_flow import PhotoConsent
from hub.consent.ugc_export import export_approved
from hub.core import clock
from hub.core.bot import CommandContext, CommandHandler, CommandRunner
from hub.core.commands import CommandRegistry, NotACommand, parse
from hub.core.media import MediaStore
from hub.core.types import Envelope, InboundMessage, MediaRef, Sender
from hub.db import consent as rows
from hub.db import conversations, inbound
from hub.db.database import Database, Tx
from hub.db.inbound import InboundPolicy
from hub.db.models import ConsentImage, ConsentRequest, Conversation, Message, OutboxItem
from hub.jobs.kinds import CHANNEL_SEND, CONSENT_DELETE, MATRIX_NOTICE, MATRIX_SEND

Sessions = async_sessionmaker[AsyncSession]
ADVISER, ROOM = "@anna:shop.example", "!room:shop.example"
ANA = Sender("whatsapp", "4915112345678", "Ana")
NOW = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
PNG = b"\x89PNG\r\n\x1a\n" + b"photo"


def consent(**config: Any) -> PhotoConsent:
    return PhotoConsent(
        PhotoConsentConfig(**config), "Farben Müller", lambda kind: kind != "sms", True
    )


CONSENT = consent()


def policy(flow: PhotoConsent = CONSENT) -> InboundPolicy:
    return InboundPolicy(
        channel=ANA.channel,
        code="wa",
        label="WhatsApp",
        ghost_prefix="customer_",
        domain="shop.example",
        shop_name="Farben Müller",
        after_message=(flow.after_message,),
    )


@pytest.fixture(autouse=True)
def _clock() -> Iterator[None]:
    clock.set_now(NOW)
    yield
    clock.reset()


async def store(db: Database, msg: InboundMessage, flow: PhotoConsent = CONSENT) -> Message:
    result = await db.write(inbound.store_events, policy(flow), [Envelope(ANA, msg)])
    [message] = result.messages
    return message


async def image(db: Database, tmp_path: Path, n: str, data: bytes = PNG) -> Message:
    """A customer's photo the hub keeps, delivered to the room as event $n."""
    stored = await MediaStore(tmp_path / "media").write(data, f"{n}.png", "image/png")
    ref = MediaRef(f"{n}.png", "image/png", stored.size, stored.media_id, sha256=stored.sha256)
    message = await store(db, InboundMessage(n, "image", media=ref))

    def delivered(tx: Tx) -> None:
        media = {"filename": f"{n}.png", "mimetype": "image/png", "size": stored.size}
        media |= {"media_id": stored.media_id, "mxc": f"mxc://shop.example/{n}"}
        conversations.update_message(tx, message.id, matrix_event_id=f"${n}", media=media)
        conv = tx.orm.get(Conversation, message.conversation_id)
        assert conv is not None
        conv.room_id = ROOM

    await db.write(delivered)
    return message


def run_command(tx: Tx, cid: int, body: str, event: str, reply_to: str | None) -> None:
    registry: CommandRegistry[CommandHandler] = CommandRegistry()
    for spec in CONSENT.specs():
        registry.register(spec)
    result = parse(body, "!", registry)
    assert not isinstance(result, NotACommand)
    ctx = CommandContext(
        tx, ROOM, event, ADVISER, conversations.conversation(tx, cid), reply_to=reply_to
    )
    CommandRunner(registry, [ADVISER]).run(ctx, result)


async def jobs(sessions: Sessions, kind: str) -> list[OutboxItem]:
    async with sessions() as s:
        query = select(OutboxItem).where(OutboxItem.kind == kind).order_by(OutboxItem.id)
        return list((await s.scalars(query)).all())


async def command(
    db: Database, sessions: Sessions, cid: int, body: str, event: str, reply_to: str | None = None
) -> tuple[str, str]:
    """(✅ or ⛔, the bot's answer)."""
    await db.write(run_command, cid, body, event, reply_to)
    out = {j.idempotency_key: j.payload for j in await jobs(sessions, MATRIX_SEND)}
    reaction = out[f"{MATRIX_SEND}/react:{event}"]["content"]["m.relates_to"]["key"]
    return reaction, out[f"{MATRIX_SEND}/reply:{event}:0"]["content"]["body"]


async def out_messages(sessions: Sessions) -> list[Message]:
    async with sessions() as s:
        query = select(Message).where(Message.direction == "out").order_by(Message.id)
        return list((await s.scalars(query)).all())


async def requests(sessions: Sessions) -> list[ConsentRequest]:
    async with sessions() as s:
        return list((await s.scalars(select(ConsentRequest).order_by(ConsentRequest.id))).all())


async def notices_text(sessions: Sessions) -> list[str]:
    return [j.payload["text"] for j in await jobs(sessions, MATRIX_NOTICE)]


async def marks(sessions: Sessions) -> list[tuple[str, str]]:
    found = []
    for job in await jobs(sessions, MATRIX_SEND):
        content = job.payload["content"]
        if job.payload["event_type"] == "m.reaction" and job.idempotency_key.startswith(
            f"{MATRIX_SEND}/consent-mark:"
        ):
            rel = content["m.relates_to"]
            found.append((rel["event_id"], rel["key"]))
    return found


async def test_asking_as_a_reply_then_yes_by_button_is_stored_as_proof(
    db: Database, sessions: Sessions, tmp_path: Path
) -> None:
    photo = await image(db, tmp_path, "wamid.P1")
    cid = photo.conversation_id
    outcome, answer = await command(db, sessions, cid, "!consent", "$c1", reply_to="$wamid.P1")
    assert outcome == "✅"
    assert (
        answer == "Asked the customer for consent to reuse 1 photo(s) (request 1, text version 1)."
    )
    [question] = await out_messages(sessions)
    assert question.text is not None and question.text.startswith(
        "May Farben Müller show your photo"
    )
    assert 'writing "WIDERRUFEN"' in question.text
    assert "Answer JA or NEIN" not in question.text  # WhatsApp has buttons
    assert question.data is not None
    assert [b["id"] for b in question.data["buttons"]] == [button_id("yes", 1), button_id("no", 1)]
    assert [j.payload for j in await jobs(sessions, CHANNEL_SEND)] == [{"message_id": question.id}]

    clock.set_now(NOW + timedelta(minutes=3))
    tap = InboundMessage(
        "wamid.A1", "interactive", text="Yes", data={"id": button_id("yes", 1), "title": "Yes"}
    )
    answer_row = await store(db, tap)
    [request] = await requests(sessions)
    assert (request.state, request.answer_remote_id, request.answer_message_id) == (
        "granted",
        "wamid.A1",
        answer_row.id,
    )
    assert request.answered_at is not None
    assert abs(request.answered_at - (NOW + timedelta(minutes=3))) < timedelta(seconds=5)
    assert (request.requested_by, request.text_version, request.answer_late) == (
        ADVISER,
        "1",
        False,
    )
    async with sessions() as s:
        [covered] = (await s.scalars(select(ConsentImage))).all()
    assert covered.sha256 == hashlib.sha256(PNG).hexdigest()
    assert covered.message_id == photo.id
    assert await marks(sessions) == [("$wamid.P1", "✅")]
    assert (await notices_text(sessions))[-1] == (
        "✅ The customer agreed to the reuse of 1 photo(s) (request 1, text version 1)."
    )
    thanks = (await out_messages(sessions))[-1]
    assert thanks.text is not None and thanks.text.startswith("Thank you! We may show your photos.")
    async with sessions() as s:
        conv = await s.get(Conversation, cid)
        assert conv is not None and (conv.meta or {}).get("questions") == []

    # Export: the photo and its proof.
    result = await export_approved(db, MediaStore(tmp_path / "media"), tmp_path / "ugc")
    assert result.exported == ["1-1.png"] and result.problems == []
    assert (tmp_path / "ugc" / "1-1.png").read_bytes() == PNG
    record = json.loads((tmp_path / "ugc" / "1-1.json").read_text())
    assert record["sha256"] == hashlib.sha256(PNG).hexdigest()
    assert record["consent"]["answer_channel_message_id"] == "wamid.A1"
    assert record["consent"]["requested_by"] == ADVISER
    assert record["customer"] == {"channel": "whatsapp", "name": "Ana"}


async def test_no_by_word_refuses_and_queues_the_deletion(
    db: Database, sessions: Sessions, tmp_path: Path
) -> None:
    photo = await image(db, tmp_path, "wamid.P1")
    cid = photo.conversation_id
    await command(db, sessions, cid, "!consent", "$c1", reply_to="$wamid.P1")
    await store(db, InboundMessage("wamid.A1", "text", text="Nein!"))
    [request] = await requests(sessions)
    assert request.state == "refused"
    [deletion] = await jobs(sessions, CONSENT_DELETE)
    assert deletion.payload == {"request_id": request.id}
    assert await marks(sessions) == [("$wamid.P1", "🚫")]
    assert (await notices_text(sessions))[-1] == (
        "🚫 The customer refused (request 1): 1 photo(s) are being deleted."
    )
    found = await db.read(rows.deletion_of, request.id)
    assert found is not None
    _, images = found
    assert [(i.event_id, i.mxc) for i in images] == [("$wamid.P1", ["mxc://shop.example/wamid.P1"])]
    # The job's finish step: the message keeps no trace of the file, the customer is told.
    assert await db.write(rows.finish_deletion, images) == 1
    assert await db.write(rows.finish_deletion, images) == 0  # once
    async with sessions() as s:
        gone = await s.get(Message, photo.id)
        assert gone is not None and gone.media is None and gone.data == {"deleted": "consent"}
    result = await export_approved(db, MediaStore(tmp_path / "media"), tmp_path / "ugc")
    assert result.exported == []
    # A web chat visitor sees that the photo is gone (not an empty bubble).
    assert gone is not None
    shown = message_json(gone, "https://shop.example")
    assert (shown["kind"], shown["text"], shown["media"]) == ("text", "🗑 Photo deleted", None)


async def test_a_word_counts_only_while_the_consent_question_is_open(
    db: Database, sessions: Sessions, tmp_path: Path
) -> None:
    photo = await image(db, tmp_path, "wamid.P1")
    await store(db, InboundMessage("wamid.T0", "text", text="ja"))  # nothing was asked
    assert await requests(sessions) == []
    await command(db, sessions, photo.conversation_id, "!consent", "$c1", reply_to="$wamid.P1")
    await store(db, InboundMessage("wamid.T1", "text", text="ja, aber nur das erste"))
    assert (await requests(sessions))[0].state == "pending"
    # Three days and a minute later: a late yes still counts, recorded as late.
    clock.set_now(NOW + timedelta(hours=72, minutes=1))
    await store(db, InboundMessage("wamid.T2", "text", text="JA"))
    [request] = await requests(sessions)
    assert (request.state, request.answer_late, request.answer_remote_id) == (
        "granted",
        True,
        "wamid.T2",
    )
    assert (await notices_text(sessions))[-1].endswith("(after the request had expired)")


async def test_revocation_by_word_after_yes_deletes_and_a_repeated_answer_does_nothing(
    db: Database, sessions: Sessions, tmp_path: Path
) -> None:
    photo = await image(db, tmp_path, "wamid.P1")
    await command(db, sessions, photo.conversation_id, "!consent", "$c1", reply_to="$wamid.P1")
    await store(db, InboundMessage("wamid.A1", "text", text="ja"))
    await store(db, InboundMessage("wamid.A2", "text", text="ja"))  # question closed: a message
    tap_again = {"id": button_id("yes", 1), "title": "Yes"}
    await store(db, InboundMessage("wamid.A3", "interactive", text="Yes", data=tap_again))
    assert (await requests(sessions))[0].state == "granted"
    assert len(await jobs(sessions, CONSENT_DELETE)) == 0
    await store(db, InboundMessage("wamid.R1", "text", text="Widerrufen"))
    [request] = await requests(sessions)
    assert (request.state, request.revoked_by) == ("revoked", "customer")
    assert len(await jobs(sessions, CONSENT_DELETE)) == 1
    assert (await notices_text(sessions))[-1] == (
        "🚫 Consent withdrawn by the customer (request 1): 1 photo(s) are being deleted."
    )
    # A second revocation finds nothing to withdraw: an ordinary message.
    await store(db, InboundMessage("wamid.R2", "text", text="widerrufen"))
    assert len(await jobs(sessions, CONSENT_DELETE)) == 1


async def test_no_after_yes_by_button_is_a_revocation(
    db: Database, sessions: Sessions, tmp_path: Path
) -> None:
    photo = await image(db, tmp_path, "wamid.P1")
    await command(db, sessions, photo.conversation_id, "!consent", "$c1", reply_to="$wamid.P1")
    for n, given in enumerate(("yes", "no")):
        data = {"id": button_id(given, 1), "title": given}
        await store(db, InboundMessage(f"wamid.A{n}", "interactive", text=given, data=data))
    [request] = await requests(sessions)
    assert request.state == "revoked"
    assert len(await jobs(sessions, CONSENT_DELETE)) == 1


async def test_consent_all_and_the_adviser_revoking(
    db: Database, sessions: Sessions, tmp_path: Path
) -> None:
    first = await image(db, tmp_path, "wamid.P1", PNG + b"1")
    await image(db, tmp_path, "wamid.P2", PNG + b"2")
    cid = first.conversation_id
    outcome, answer = await command(db, sessions, cid, "!consent all", "$c1")
    assert (outcome, answer) == (
        "✅",
        "Asked the customer for consent to reuse 2 photo(s) (request 1, text version 1).",
    )
    outcome, answer = await command(db, sessions, cid, "!consent all", "$c2")
    assert (outcome, answer) == (
        "⛔",
        "This customer has sent no photos that were not asked about.",
    )
    await store(db, InboundMessage("wamid.A1", "text", text="ok"))
    outcome, answer = await command(db, sessions, cid, "!consent revoke", "$c3")
    assert (outcome, answer) == (
        "✅",
        "Consent withdrawn (request(s) 1): the photos are being deleted.",
    )
    [request] = await requests(sessions)
    assert (request.state, request.revoked_by) == ("revoked", ADVISER)
    outcome, answer = await command(db, sessions, cid, "!consent list", "$c4")
    assert answer.startswith("Request 1: withdrawn, photos deleted, 2 photo(s), asked by @anna")


async def test_what_consent_refuses(db: Database, sessions: Sessions, tmp_path: Path) -> None:
    photo = await image(db, tmp_path, "wamid.P1")
    cid = photo.conversation_id
    text = await store(db, InboundMessage("wamid.T1", "text", text="Hallo"))

    def delivered(tx: Tx) -> None:
        conversations.update_message(tx, text.id, matrix_event_id="$text")

    await db.write(delivered)
    cases = [
        ("!consent", None, "Reply to the customer's photo with !consent, or use !consent all."),
        ("!consent", "$text", "That is not a photo of this customer: reply to their photo."),
        ("!consent", "$unknown", "That is not a photo of this customer: reply to their photo."),
        ("!consent revoke", None, "There is no consent to withdraw in this conversation."),
    ]
    for n, (body, reply_to, expected) in enumerate(cases):
        assert await command(db, sessions, cid, body, f"$x{n}", reply_to) == ("⛔", expected)
    assert await command(db, sessions, cid, "!consent", "$ok", "$wamid.P1") == (
        "✅",
        "Asked the customer for consent to reuse 1 photo(s) (request 1, text version 1).",
    )
    outcome, answer = await command(db, sessions, cid, "!consent", "$twice", "$wamid.P1")
    assert outcome == "⛔"
    assert answer.startswith("This photo was asked about in request 1 on 2026-12-04 10:00 UTC")
    # Nothing was sent for the refused commands: one question only.
    assert len(await jobs(sessions, CHANNEL_SEND)) == 1
    # Unanswered and expired: still the same request (a late answer counts), not asked again.
    clock.set_now(NOW + timedelta(hours=73))
    outcome, answer = await command(db, sessions, cid, "!consent", "$again", "$wamid.P1")
    assert outcome == "⛔" and answer.startswith("This photo was asked about in request 1")
    assert len(await jobs(sessions, CHANNEL_SEND)) == 1
    # Without the admin token, asking is refused: a No could not be carried out.
    no_admin = PhotoConsent(PhotoConsentConfig(), "Farben Müller", lambda kind: True, False)
    registry: CommandRegistry[CommandHandler] = CommandRegistry()
    for spec in no_admin.specs():
        registry.register(spec)

    def run(tx: Tx) -> None:
        result = parse("!consent all", "!", registry)
        assert not isinstance(result, NotACommand)
        ctx = CommandContext(tx, ROOM, "$na", ADVISER, conversations.conversation(tx, cid))
        CommandRunner(registry, [ADVISER]).run(ctx, result)

    await db.write(run)
    out = {j.idempotency_key: j.payload for j in await jobs(sessions, MATRIX_SEND)}
    assert out[f"{MATRIX_SEND}/reply:$na:0"]["content"]["body"].startswith(
        "Photo consent needs homeserver.admin_token"
    )


async def test_a_channel_without_buttons_gets_the_answer_words(tmp_path: Path) -> None:
    text = consent(text="Dürfen wir {shop} …?", version="2026-12").question("sms")
    assert text == "Dürfen wir Farben Müller …?\n\nAnswer JA or NEIN."


async def test_a_typed_yes_goes_to_the_newest_question_and_the_older_one_stays_open(
    db: Database, sessions: Sessions, tmp_path: Path
) -> None:
    """The newsletter asked first, the photo consent second: "ja" answers the photo; the next
    "ja" the newsletter, whose question is open again."""
    from hub.config import ShopConfig
    from hub.config.privacy import NewsletterConfig
    from hub.consent.newsletter_flow import Newsletter
    from hub.db.models import NewsletterOptin

    newsletter = Newsletter(
        NewsletterConfig(), ShopConfig(name="Farben Müller"), lambda kind: True, lambda k: k
    )
    both = InboundPolicy(
        channel=ANA.channel,
        code="wa",
        label="WhatsApp",
        ghost_prefix="customer_",
        domain="shop.example",
        shop_name="Farben Müller",
        after_message=(CONSENT.after_message, newsletter.after_message),
    )

    async def says(text: str, n: str) -> None:
        envelope = Envelope(ANA, InboundMessage(n, "text", text=text))
        await db.write(inbound.store_events, both, [envelope])

    photo = await image(db, tmp_path, "wamid.P1")
    cid = photo.conversation_id
    registry: CommandRegistry[CommandHandler] = CommandRegistry()
    for spec in newsletter.specs():
        registry.register(spec)

    def optin(tx: Tx) -> None:
        result = parse("!optin", "!", registry)
        assert not isinstance(result, NotACommand)
        ctx = CommandContext(tx, ROOM, "$o1", ADVISER, conversations.conversation(tx, cid))
        CommandRunner(registry, [ADVISER]).run(ctx, result)

    await db.write(optin)
    await command(db, sessions, cid, "!consent", "$c1", reply_to="$wamid.P1")
    await says("ja", "wamid.A1")
    assert (await requests(sessions))[0].state == "granted"
    async with sessions() as s:
        row = (await s.scalars(select(NewsletterOptin))).one()
    assert row.state == "requested"
    await says("Ja", "wamid.A2")
    async with sessions() as s:
        row = (await s.scalars(select(NewsletterOptin))).one()
    assert (row.state, row.first_confirm_remote_id) == ("confirmed_once", "wamid.A2")
