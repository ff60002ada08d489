"""GDPR export and erasure, and retention, on SQLite and PostgreSQL (hub.consent.erasure,
hub.db.gdpr), with a stand-in for the homeserver's admin API.

Two customers: Zoë (on the web chat and on WhatsApp, one customer) has a row in every table
that can refer to a customer, each carrying a needle (her name, phone, visitor id, texts,
address, room ids, ghosts, event ids, files); Bob has a conversation of his own. After
Zoë's erasure no row of any table holds a needle of hers or an id of a row of hers, and
Bob's export is what it was.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from hub.commerce.cart import Cart
from hub.config import Config, ConfigError
from hub.consent import erasure
from hub.consent.gdpr import ERASED_PREFIX, EXPORTED, AmbiguousCustomer, CustomerNotFound
from hub.consent.gdpr_cli import add_gdpr_parser
from hub.core import clock
from hub.core.media import MediaStore
from hub.core.types import Envelope, InboundMessage, MediaRef, Sender
from hub.db import commerce, conversations, delivery, gdpr, inbound, inbox, notices, outbound
from hub.db import timers as db_timers
from hub.db.database import Database, Tx
from hub.db.inbound import InboundPolicy
from hub.db.jobs import room_key
from hub.db.models import (
    Base,
    BroadcastRecipient,
    ChannelIdentity,
    ConsentImage,
    ConsentRequest,
    Customer,
    Message,
    NewsletterOptin,
    Order,
    WebchatVisitor,
    utcnow,
)
from hub.errors import ExternalError
from hub.jobs.kinds import MATRIX_EVENT

DOMAIN = "shop.example"
LOBBY = "!lobby:shop.example"
ADVISER = "@anna:shop.example"
ZOE_PHONE = "4915112345678"
ZOE_VISITOR = "visitorneedle01"
ZOE_ROOM_WEB = "!needleweb:shop.example"
ZOE_ROOM_WA = "!needlewa:shop.example"
ZOE_MXC = "mxc://shop.example/needlemedia"
ZOE_ADVISER_MXC = "mxc://shop.example/needleadviser"
FOREIGN_MXC = "mxc://elsewhere.example/needleforeign"
PNG = b"\x89PNG\r\n\x1a\n" + b"needle-bytes" * 10
# Whatever of Zoë's must be gone from every row of every table after her erasure.
# Rows of hers kept anonymised for the orders (privacy.orders: anonymise, the default).
KEPT = {"orders", "conversations", "channel_identities", "customers"}
ZOE_NEEDLES = [
    "Zoë Needle",
    ZOE_PHONE,
    ZOE_VISITOR,
    "needle-text",
    "needle-reply",
    "Needlestraße",
    "needle@example.org",
    ZOE_ROOM_WEB,
    ZOE_ROOM_WA,
    "$needle",
    "needlemedia",
    "needleadviser",
    "fileneedle",
    "hashneedle",
]
BOB_PHONE = "4369912345678"


def policy(channel: str) -> InboundPolicy:
    return InboundPolicy(
        channel=channel,
        code={"webchat": "web", "whatsapp": "wa"}[channel],
        label=channel,
        ghost_prefix="customer_",
        domain=DOMAIN,
        shop_name="Farben Müller",
    )


def make_config(tmp_path: Path, db_url: str, **privacy: Any) -> Config:
    return Config.model_validate(
        {
            "data_dir": str(tmp_path / "data"),
            "database": {"url": db_url},
            "homeserver": {"url": "http://127.0.0.1:1", "domain": DOMAIN},
            "appservice": {"as_token": "a" * 32, "hs_token": "h" * 32},
            "shop": {"lobby_room": LOBBY},
            "privacy": privacy,
        }
    )


# -- the homeserver's admin API, as a stand-in ------------------------------------------------


@dataclass
class FakeAdmin:
    """hub.matrix.admin.HomeserverAdmin's contract: idempotent, what is gone counts as done."""

    rooms: dict[str, list[str]] = field(default_factory=dict)  # room -> media its events name
    fail: str | None = None  # a method that fails (the homeserver is down)
    calls: list[tuple[str, str]] = field(default_factory=list)
    media_deleted: set[str] = field(default_factory=set)
    purged: set[str] = field(default_factory=set)
    deactivated: set[str] = field(default_factory=set)

    def _call(self, name: str, arg: str) -> None:
        self.calls.append((name, arg))
        if self.fail == name:
            raise ExternalError("the homeserver could not be reached", permanent=False)

    async def room_media(self, room_id: str) -> list[str]:
        self._call("room_media", room_id)
        return [] if room_id in self.purged else list(self.rooms.get(room_id, []))

    async def delete_media(self, mxc: str) -> bool:
        self._call("delete_media", mxc)
        assert mxc.startswith(f"mxc://{DOMAIN}/"), "only our own server's media"
        if mxc in self.media_deleted:
            return False
        self.media_deleted.add(mxc)
        return True

    async def purge_room(self, room_id: str) -> None:
        self._call("purge_room", room_id)
        self.purged.add(room_id)

    async def deactivate(self, user_id: str, erase: bool = True) -> None:
        self._call("deactivate", user_id)
        assert erase
        self.deactivated.add(user_id)

    @property
    def changes(self) -> list[tuple[str, str]]:
        return [c for c in self.calls if c[0] != "room_media"]


# -- the two customers -----------------------------------------------------------------------


@dataclass
class World:
    zoe: int  # customer id
    zoe_identities: list[int]
    zoe_conversations: list[int]
    zoe_ghosts: list[str]
    zoe_messages: list[int]
    zoe_orders: list[int]
    zoe_files: list[str]
    bob: int
    bob_conversation: int
    store: MediaStore
    config: Config


async def customer_writes(db: Database, sender: Sender, msg: InboundMessage) -> Message:
    result = await db.write(inbound.store_events, policy(sender.channel), [Envelope(sender, msg)])
    [message] = result.messages
    return message


def zoe_rows(tx: Tx, web_cid: int, wa_cid: int, image_mid: int, order_id: int) -> None:
    """Rows of the tables no store path of this test reaches."""
    now = utcnow()
    tx.orm.add(WebchatVisitor(visitor_id=ZOE_VISITOR, token_hash="hashneedle" + "0" * 54))
    request = ConsentRequest(
        conversation_id=web_cid,
        channel="webchat",
        text="May we show your photo? needle-text-consent",
        text_version="1",
        requested_by=ADVISER,
        expires_at=now + timedelta(days=3),
        state="granted",
    )
    tx.orm.add(request)
    tx.orm.flush()
    tx.orm.add(ConsentImage(request_id=request.id, message_id=image_mid, sha256="e" * 64))
    wa_identity = conversations.conversation(tx, wa_cid)
    assert wa_identity is not None
    tx.orm.add(
        NewsletterOptin(
            identity_id=wa_identity.identity_id,
            state="opted_in",
            text_version="1",
            first_confirm_remote_id="wamid.needle-optin",
        )
    )
    tx.orm.add(
        BroadcastRecipient(
            broadcast="spring",
            template="spring_sale",
            identity_id=wa_identity.identity_id,
            status="sent",
        )
    )
    db_timers.add(
        tx,
        db_timers.MISSED,
        f"missed:{web_cid}",
        now + timedelta(hours=1),
        conversation_id=web_cid,
        payload={"message_id": image_mid, "since": now.isoformat()},
    )
    db_timers.record_missed(tx, web_cid, image_mid, now)
    commerce.create_short_link(tx, "https://shop.example/p/needle-text-link", web_cid)
    commerce.create_short_link(tx, "https://pay.example/needle-text-checkout", None, order_id)
    commerce.first_payment_event(tx, "stripe", "evt_needle_1", order_id, "paid")
    order = tx.orm.get(Order, order_id)
    assert order is not None
    order.details = {
        "name": "Zoë Needle",
        "street": "Needlestraße 1",
        "postcode": "50667",
        "city": "Köln",
        "country": "DE",
        "email": "needle@example.org",
        "phone": "+" + ZOE_PHONE,
        "payment_method": "invoice",
        "placed": now.isoformat(),
    }
    order.checkout_url = "https://pay.example/needle-text-checkout"
    order.short_code = "NEEDLE"
    order.status = "paid"
    order.paid_at = now
    # The lobby's notice about her conversation (a link to her room) and an adviser's event
    # the homeserver pushed into her room.
    notices.notice(tx, LOBBY, f"⏰ Missed: https://matrix.to/#/{ZOE_ROOM_WEB}", "missed-lobby:1")
    inbox.store_transaction(
        tx,
        "txn-needle",
        [
            (
                MATRIX_EVENT,
                room_key(ZOE_ROOM_WA),
                {"room_id": ZOE_ROOM_WA, "event_id": "$needle-adviser", "content": {}},
                "$needle-adviser",
            )
        ],
    )


def merge_customers(tx: Tx, keep: int, identity_id: int) -> None:
    """The WhatsApp identity belongs to the web chat's customer (one person, two channels)."""
    identity = tx.orm.get(ChannelIdentity, identity_id)
    assert identity is not None
    old = identity.customer_id
    identity.customer_id = keep
    tx.orm.flush()
    customer = tx.orm.get(Customer, old)
    tx.orm.delete(customer)


def add_order(tx: Tx, conversation_id: int) -> int:
    cart = Cart("EUR")
    commerce.save_cart(tx, conversation_id, cart)
    order = commerce.create_order(
        tx, conversation_id=conversation_id, adviser_mxid=ADVISER, provider="stripe", cart=cart
    )
    return order.id


@pytest.fixture
async def world(db: Database, db_url: str, tmp_path: Path) -> World:
    config = make_config(tmp_path, db_url)
    store = MediaStore(config.media_dir)
    stored = await store.write(PNG, "wall-needle.png", "image/png")
    zoe_web = Sender("webchat", ZOE_VISITOR, "Zoë Needle")
    zoe_wa = Sender("whatsapp", ZOE_PHONE, "Zoë Needle")
    text = await customer_writes(db, zoe_web, InboundMessage("w1", "text", text="needle-text-1"))
    image = await customer_writes(
        db,
        zoe_web,
        InboundMessage(
            "w2",
            "image",
            media=MediaRef(
                stored.filename, stored.mimetype, stored.size, stored.media_id, sha256=stored.sha256
            ),
        ),
    )
    wa = await customer_writes(db, zoe_wa, InboundMessage("wamid.1", "text", text="needle-text-wa"))
    web_cid, wa_cid = text.conversation_id, wa.conversation_id
    await db.write(conversations.set_room, web_cid, ZOE_ROOM_WEB, "Webchat · Zoë Needle")
    await db.write(conversations.set_room, wa_cid, ZOE_ROOM_WA, "WhatsApp · Zoë Needle")
    await db.write(delivery.mark_delivered, text.id, "$needle-1")
    media = {**(image.media or {}), "mxc": ZOE_MXC}
    await db.write(delivery.mark_delivered, image.id, "$needle-2", media, stored.media_id, ZOE_MXC)
    reply = await db.write(
        outbound.adviser_message,
        wa_cid,
        {
            "kind": "image",
            "text": "needle-reply",
            "media": {"mxc": ZOE_ADVISER_MXC, "filename": "swatch.png"},
            "sender_mxid": ADVISER,
        },
        "$needle-2",
    )
    assert reply is not None
    order_id = await db.write(add_order, wa_cid)
    await db.write(zoe_rows, web_cid, wa_cid, image.id, order_id)

    bob_msg = await customer_writes(
        db, Sender("whatsapp", BOB_PHONE, "Bob Other"), InboundMessage("wamid.b", "text", text="hi")
    )
    await db.write(conversations.set_room, bob_msg.conversation_id, "!bob:shop.example", "Bob")
    await db.write(add_order, bob_msg.conversation_id)

    def ids(tx: Tx) -> tuple[int, list[ChannelIdentity], int]:
        web = tx.orm.scalars(
            select(ChannelIdentity).where(ChannelIdentity.external_id.in_([ZOE_VISITOR, ZOE_PHONE]))
        ).all()
        bob = tx.orm.scalars(
            select(ChannelIdentity.customer_id).where(ChannelIdentity.external_id == BOB_PHONE)
        ).one()
        web_identity = next(i for i in web if i.channel == "webchat")
        return web_identity.customer_id, list(web), bob

    zoe, identities, bob = await db.read(ids)
    wa_identity = next(i for i in identities if i.channel == "whatsapp")
    await db.write(merge_customers, zoe, wa_identity.id)
    messages = [text.id, image.id, wa.id, reply.id]
    return World(
        zoe=zoe,
        zoe_identities=sorted(i.id for i in identities),
        zoe_conversations=sorted([web_cid, wa_cid]),
        zoe_ghosts=[i.ghost_localpart for i in identities],
        zoe_messages=messages,
        zoe_orders=[order_id],
        zoe_files=[stored.media_id],
        bob=bob,
        bob_conversation=bob_msg.conversation_id,
        store=store,
        config=config,
    )


# -- looking at every table ------------------------------------------------------------------


def dump(tx: Tx) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table."""
    out = {}
    for t in Base.metadata.sorted_tables:
        if t.name == "alembic_version":
            continue
        rows = tx.conn.execute(select(t).order_by(*t.primary_key.columns))
        out[t.name] = [dict(r._mapping) for r in rows]
    return out


def as_text(rows: Any) -> str:
    return json.dumps(rows, default=str, ensure_ascii=False)


ID_COLUMNS = {
    "customer_id": "customers",
    "identity_id": "channel_identities",
    "conversation_id": "conversations",
    "message_id": "messages",
    "order_id": "orders",
}


def leftovers(tables: dict[str, list[dict[str, Any]]], w: World, kept: set[str]) -> list[str]:
    """Rows of any table still holding a needle of Zoë's or an id of a row of hers (`kept`:
    tables whose rows of hers are kept anonymised, so their ids may be referred to)."""
    gone = {
        "customers": {w.zoe},
        "channel_identities": set(w.zoe_identities),
        "conversations": set(w.zoe_conversations),
        "messages": set(w.zoe_messages),
        "orders": set(w.zoe_orders),
    }
    needles = ZOE_NEEDLES + w.zoe_ghosts + w.zoe_files
    found = []
    for name, rows in tables.items():
        for row in rows:
            text = as_text(row)
            found += [f"{name}: {n!r} in {text}" for n in needles if n in text]
            if name == "outbox":
                found += job_leftovers(row, gone)
            for column, value in row.items():
                target = "messages" if column.endswith("message_id") else ID_COLUMNS.get(column)
                if target is None and column == "id":
                    target = name
                if target in gone and target not in kept and value in gone[target]:
                    found.append(f"{name}.{column} = {value} is {target} of Zoë's")
    return found


def job_leftovers(job: dict[str, Any], gone: dict[str, set[int]]) -> list[str]:
    """A job of her conversation, or naming a row of hers in its payload."""
    found = []
    if job["ordering_key"] in {f"conv:{c}" for c in gone["conversations"]}:
        found.append(f"outbox: job {job['id']} of her conversation")
    for key, value in job["payload"].items():
        target = "messages" if key.endswith("message_id") else ID_COLUMNS.get(key)
        if target in gone and value in gone[target]:
            found.append(f"outbox: job {job['id']} names {target} {value}")
    return found


# -- export ------------------------------------------------------------------------------------


async def test_export_holds_a_row_of_every_table_and_nothing_of_others(
    db: Database, world: World, tmp_path: Path
) -> None:
    doc = await erasure.export_customer(db, world.store, world.zoe, tmp_path / "media", clock.now())
    tables = doc["tables"]
    assert list(tables) == list(EXPORTED)
    empty = [name for name, rows in tables.items() if not rows]
    assert empty == [], f"the fixture has rows of these; the export missed them: {empty}"
    text = json.dumps(doc, default=erasure.json_default, ensure_ascii=False)
    assert "Bob Other" not in text and BOB_PHONE not in text
    assert "hashneedle" not in text  # the visitor's token hash is not exported
    assert {r["id"] for r in tables["messages"]} == set(world.zoe_messages)
    assert len(tables["channel_identities"]) == 2
    assert tables["customers"][0]["display_name"] == "Zoë Needle"
    # Every row the database holds of her is there: compare with the whole dump.
    everything = await db.read(dump)
    for name in ("messages", "conversations", "orders", "short_links", "consent_images"):
        mine = [r for r in everything[name] if r in tables[name]]
        assert len(mine) == len(tables[name])
    [media] = tables["media_files"]
    assert media["sha256"] == hashlib.sha256(PNG).hexdigest()
    assert media["available"] is True
    copied = tmp_path / "media" / media["copied_to"]
    assert hashlib.sha256(copied.read_bytes()).hexdigest() == media["sha256"]


# -- naming --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        ZOE_ROOM_WEB,
        f"https://matrix.to/#/{ZOE_ROOM_WA}?via=shop.example",
        "+49 151 12345678",
        "0049 151 123 456 78",
        "0151 12345678",
        f"whatsapp:{ZOE_PHONE}",
        f"webchat:{ZOE_VISITOR}",
        "ghost",
        "alias",
        "customer",
    ],
)
async def test_the_customer_is_found_by_every_name(db: Database, world: World, name: str) -> None:
    if name == "ghost":
        name = f"@{world.zoe_ghosts[0]}:{DOMAIN}"
    elif name == "alias":
        name = f"#hubportal_{world.zoe_conversations[0]}:{DOMAIN}"
    elif name == "customer":
        name = f"customer:{world.zoe}"
    found = await erasure.find_customer(db, name, world.config)
    assert found.customer_id == world.zoe
    assert any(ZOE_ROOM_WEB in i for i in found.identities)


async def test_unknown_and_ambiguous_names(db: Database, world: World) -> None:
    with pytest.raises(CustomerNotFound):
        await erasure.find_customer(db, "!nobody:shop.example", world.config)
    with pytest.raises(CustomerNotFound):
        await erasure.find_customer(db, "telegram:12345", world.config)
    # Bob's number ends like Zoë's: written nationally, both match.
    with pytest.raises(AmbiguousCustomer) as caught:
        await erasure.find_customer(db, "012345678", world.config)
    text = str(caught.value)
    assert f"customer:{world.zoe}" in text and f"customer:{world.bob}" in text


# -- erasure -------------------------------------------------------------------------------


async def test_dry_run_changes_nothing(db: Database, world: World) -> None:
    before = await db.read(dump)
    # The check of the other tests sees her rows in every table she has rows in.
    seen = {f.split(":")[0].split(".")[0] for f in leftovers(before, world, set())}
    assert seen == {*EXPORTED, "outbox"}
    admin = FakeAdmin({ZOE_ROOM_WA: [ZOE_ADVISER_MXC, FOREIGN_MXC, "mxc://shop.example/x"]})
    report = await erasure.erase_customer(
        db, admin, world.store, world.config, world.zoe, dry_run=True
    )
    assert await db.read(dump) == before
    assert admin.changes == []  # only read: the rooms' media listed
    assert world.store.path(report.plan.files[0]).exists()
    assert report.plan.rooms == tuple(sorted([ZOE_ROOM_WEB, ZOE_ROOM_WA]))
    assert sorted(report.media) == sorted([ZOE_MXC, ZOE_ADVISER_MXC, "mxc://shop.example/x"])
    assert report.plan.deleted()["messages"] == 4
    assert report.plan.deleted()["outbox"] >= 4


@pytest.mark.parametrize("orders", ["delete", "anonymise"])
async def test_erasure_leaves_nothing_of_the_customer_and_all_of_the_others(
    db: Database, world: World, db_url: str, tmp_path: Path, orders: str
) -> None:
    config = make_config(tmp_path, db_url, orders=orders)
    bob_before = await db.read(gdpr.export_rows, world.bob)
    bob_jobs = [
        r
        for r in (await db.read(dump))["outbox"]
        if f"conv:{world.bob_conversation}" == r["ordering_key"]
    ]
    assert bob_jobs
    admin = FakeAdmin({ZOE_ROOM_WA: [ZOE_ADVISER_MXC, FOREIGN_MXC]})
    report = await erasure.erase_customer(db, admin, world.store, config, world.zoe)

    # The homeserver: media of both rooms (ours only), both rooms, both ghosts.
    assert admin.media_deleted == {ZOE_MXC, ZOE_ADVISER_MXC}
    assert admin.purged == {ZOE_ROOM_WEB, ZOE_ROOM_WA}
    assert admin.deactivated == {f"@{g}:{DOMAIN}" for g in world.zoe_ghosts}
    first_purge = next(i for i, c in enumerate(admin.calls) if c[0] == "purge_room")
    assert all(c[0] == "room_media" for c in admin.calls[:2]) and first_purge > 2
    assert not any(world.store.root.rglob("*.png")) and report.files_deleted == 1

    after = await db.read(dump)
    assert leftovers(after, world, KEPT if orders == "anonymise" else set()) == []
    assert await db.read(gdpr.export_rows, world.bob) == bob_before
    assert [
        r for r in after["outbox"] if r["ordering_key"] == bob_jobs[0]["ordering_key"]
    ] == bob_jobs

    [order] = [o for o in after["orders"] if o["id"] in world.zoe_orders] or [None]
    if orders == "delete":
        assert order is None
        assert not [c for c in after["customers"] if c["id"] == world.zoe]
    else:
        assert order is not None
        assert order["details"]["payment_method"] == "invoice"
        assert order["details"]["anonymised"] is True
        assert order["status"] == "paid" and order["reference"].startswith("hub-")
        assert order["checkout_url"] is None and order["short_code"] is None
        [conversation] = [c for c in after["conversations"] if c["id"] == order["conversation_id"]]
        assert conversation["room_id"] is None and conversation["meta"] == {"erased": True}
        [identity] = [
            i for i in after["channel_identities"] if i["id"] == conversation["identity_id"]
        ]
        assert identity["external_id"].startswith(ERASED_PREFIX)
        assert identity["display_name"] is None
        assert [p for p in after["payment_events"] if p["order_id"] == order["id"]]

    # Recorded: what, never who.
    [record] = after["erasures"]
    assert record["reason"] == "request"
    assert record["counts"]["deleted"]["messages"] == 4
    assert record["counts"]["rooms_purged"] == 2
    assert record["counts"]["ghosts_deactivated"] == 2
    assert leftovers({"erasures": [record]}, world, set()) == []

    # Again: nothing to find (deleted) or nothing left to do (anonymised); no second record.
    again = FakeAdmin()
    if orders == "delete":
        with pytest.raises(CustomerNotFound):
            await erasure.find_customer(db, f"+{ZOE_PHONE}", config)
    report = await erasure.erase_customer(db, again, world.store, config, world.zoe)
    assert report.plan.nothing and again.changes == [] and not report.recorded
    assert await db.read(dump) == after


async def test_a_homeserver_outage_half_way_changes_no_row_and_a_second_run_finishes(
    db: Database, world: World
) -> None:
    before = await db.read(dump)
    admin = FakeAdmin(fail="purge_room")
    with pytest.raises(erasure.ErasureFailed) as caught:
        await erasure.erase_customer(db, admin, world.store, world.config, world.zoe)
    assert "purging the room" in str(caught.value)
    assert admin.media_deleted == {ZOE_MXC, ZOE_ADVISER_MXC}  # done before the outage
    assert await db.read(dump) == before
    # Still findable by what the adviser has at hand.
    assert (await erasure.find_customer(db, ZOE_ROOM_WA, world.config)).customer_id == world.zoe

    admin.fail = None
    report = await erasure.erase_customer(db, admin, world.store, world.config, world.zoe)
    assert admin.purged == {ZOE_ROOM_WEB, ZOE_ROOM_WA}
    assert report.media_deleted == 0  # deleted by the first run; gone counts as done
    assert leftovers(await db.read(dump), world, KEPT) == []


async def test_without_the_admin_api_the_database_is_erased_and_the_rest_reported(
    db: Database, world: World
) -> None:
    report = await erasure.erase_customer(db, None, world.store, world.config, world.zoe)
    assert not report.homeserver
    assert set(report.plan.rooms) == {ZOE_ROOM_WEB, ZOE_ROOM_WA}
    assert len(report.plan.ghosts) == 2
    assert leftovers(await db.read(dump), world, KEPT) == []


# -- retention ------------------------------------------------------------------------------


@pytest.fixture
def _clock() -> Iterator[None]:
    yield
    clock.reset()


async def test_retention_erases_inactive_conversations_only(
    db: Database, world: World, db_url: str, tmp_path: Path, _clock: None
) -> None:
    config = make_config(tmp_path, db_url, retention_days=30, orders="delete")
    now = clock.now()
    assert await erasure.erase_inactive(db, FakeAdmin(), world.store, config, now) == 0
    # A month and a day later Bob writes again; Zoë does not.
    later = now + timedelta(days=31)
    clock.set_now(later)
    await customer_writes(
        db, Sender("whatsapp", BOB_PHONE, "Bob Other"), InboundMessage("wamid.b2", "text", text="?")
    )
    off = make_config(tmp_path, db_url, retention_days=0)
    assert await erasure.erase_inactive(db, FakeAdmin(), world.store, off, later) == 0
    assert await erasure.erase_inactive(db, None, world.store, config, later) == 0  # no admin
    admin = FakeAdmin()
    assert await erasure.erase_inactive(db, admin, world.store, config, later) == 2
    after = await db.read(dump)
    assert leftovers(after, world, set()) == []
    assert {r["reason"] for r in after["erasures"]} == {"retention"}
    assert len(after["erasures"]) == 2  # one per conversation
    assert (await erasure.find_customer(db, f"+{BOB_PHONE}", config)).customer_id == world.bob
    assert await erasure.erase_inactive(db, admin, world.store, config, later) == 0


# -- the command line ------------------------------------------------------------------------


def hub_gdpr(*argv: str) -> tuple[int, str, str]:
    """`hub gdpr ...` in this process (as hub.__main__ runs it: ConfigError is exit 2)."""
    parser = argparse.ArgumentParser(prog="hub")
    add_gdpr_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["gdpr", *argv])
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = int(args.func(args))
        except ConfigError as exc:
            print(exc.render(), file=sys.stderr)
            code = 2
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def config_file(world: World, db_url: str, tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    data = {
        "data_dir": str(tmp_path / "data"),
        "database": {"url": db_url},
        "homeserver": {"url": "http://127.0.0.1:1", "domain": DOMAIN},
        "appservice": {"as_token": "a" * 32, "hs_token": "h" * 32},
    }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_cli_export_erase(world: World, config_file: Path, tmp_path: Path) -> None:
    c = str(config_file)
    code, _, err = hub_gdpr("export", "!nobody:shop.example", "-c", c)
    assert code == 2 and "no customer matches '!nobody:shop.example'" in err
    code, _, err = hub_gdpr("export", "012345678", "-c", c)
    assert code == 2 and "matches 2 customers" in err and f"customer:{world.bob}" in err
    code, _, err = hub_gdpr("erase", "bogus:1", "-c", c)
    assert code == 2 and "unknown prefix" in err

    output = tmp_path / "zoe.json"
    code, out, err = hub_gdpr("export", f"+{ZOE_PHONE}", "-c", c, "-o", str(output))
    assert code == 0, err
    assert "messages 4" in out
    assert json.loads(output.read_text(encoding="utf-8"))["customer_id"] == world.zoe
    assert output.stat().st_mode & 0o077 == 0  # personal data: the owner's only

    # No admin token: erase refuses and names the key; a dry run shows the plan anyway.
    code, _, err = hub_gdpr("erase", ZOE_ROOM_WEB, "-c", c, "--yes")
    assert code == 2 and "homeserver.admin_token" in err and "--local-only" in err
    code, out, _ = hub_gdpr("erase", ZOE_ROOM_WEB, "-c", c, "--dry-run")
    assert code == 0 and "would erase" in out and "messages 4" in out and ZOE_ROOM_WA in out
    # Nobody to ask (stdin is no terminal): --yes is required.
    code, _, err = hub_gdpr("erase", ZOE_ROOM_WEB, "-c", c, "--local-only")
    assert code == 2 and "--yes" in err

    code, out, err = hub_gdpr("erase", ZOE_ROOM_WEB, "-c", c, "--local-only", "--yes")
    assert code == 0, err
    assert "erased:" in out and "messages 4" in out
    assert "homeserver: untouched (no homeserver.admin_token)" in out and ZOE_ROOM_WA in out
    code, _, err = hub_gdpr("erase", ZOE_ROOM_WEB, "-c", c, "--local-only", "--yes")
    assert code == 2 and "nothing to erase" in err


async def test_a_photo_that_arrives_while_the_erasure_runs_is_erased_too(
    db: Database, world: World
) -> None:
    """The customer sends a photo while the rooms are purged: its rows go with the rest in the
    transaction, and its files right after it, or nothing would ever know of them."""
    late: list[str] = []

    class Meanwhile(FakeAdmin):
        async def purge_room(self, room_id: str) -> None:
            await super().purge_room(room_id)
            if late:
                return
            stored = await world.store.write(PNG + b"late", "late.png", "image/png")
            ref = MediaRef(
                "late.png", "image/png", stored.size, stored.media_id, sha256=stored.sha256
            )
            sender = Sender("webchat", ZOE_VISITOR, "Zoë Needle")
            photo = await customer_writes(db, sender, InboundMessage("w-late", "image", media=ref))
            mxc = f"mxc://{DOMAIN}/late"
            media = {**(photo.media or {}), "mxc": mxc}
            await db.write(delivery.mark_delivered, photo.id, "$late", media, stored.media_id, mxc)
            late.extend([stored.media_id, mxc])

    admin = Meanwhile()
    await erasure.erase_customer(db, admin, world.store, world.config, world.zoe)
    media_id, mxc = late
    assert not world.store.path(media_id).exists()
    assert mxc in admin.media_deleted
    assert leftovers(await db.read(dump), world, KEPT) == []
