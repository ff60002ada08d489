"""GDPR export and erasure, the pure parts (hub.consent.gdpr): how a customer is named, what an
erasure plans, which jobs belong to a customer; and that every table referring to a customer
is exported and erased (a walk over the models' foreign keys and id columns)."""

from __future__ import annotations

from typing import Any

import pytest

from hub.consent.gdpr import (
    DECIDED,
    ERASED,
    EXPORTED,
    NOT_EXPORTED,
    AmbiguousCustomer,
    ByConversation,
    ByCustomer,
    ByGhost,
    ByIdentity,
    ByPhone,
    ByRoom,
    Candidate,
    ConversationFacts,
    CustomerFacts,
    CustomerNameError,
    CustomerNotFound,
    CustomerRef,
    IdentityFacts,
    OrderFacts,
    References,
    Snapshot,
    anonymised_details,
    job_refers,
    one_customer,
    parse_customer,
    plan_erasure,
)

DOMAIN = "shop.example"


def parse(text: str) -> CustomerRef:
    return parse_customer(text, domain=DOMAIN, ghost_prefix="customer_", alias_prefix="hubportal_")


# -- naming a customer ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("!AbCdEf:shop.example", ByRoom("!AbCdEf:shop.example")),
        ("  !AbCdEf:shop.example  ", ByRoom("!AbCdEf:shop.example")),
        (
            "!31hneApxJ_1o-63DmFrpeqnkFfWppnzWso1JvH3ogLM",
            ByRoom("!31hneApxJ_1o-63DmFrpeqnkFfWppnzWso1JvH3ogLM"),
        ),
        (
            "https://matrix.to/#/!AbCdEf:shop.example?via=shop.example",
            ByRoom("!AbCdEf:shop.example"),
        ),
        (
            "https://matrix.to/#/%21AbCdEf%3Ashop.example/%24event?via=shop.example",
            ByRoom("!AbCdEf:shop.example"),
        ),
        ("https://app.element.io/#/room/!AbCdEf:shop.example/$ev", ByRoom("!AbCdEf:shop.example")),
        ("https://matrix.to/#/#hubportal_42:shop.example", ByConversation(42)),
        ("#hubportal_42:shop.example", ByConversation(42)),
        ("matrix:roomid/AbCdEf:shop.example?via=shop.example", ByRoom("!AbCdEf:shop.example")),
        ("matrix:u/customer_wa_x1y2:shop.example", ByGhost("customer_wa_x1y2")),
        ("@customer_wa_x1y2:shop.example", ByGhost("customer_wa_x1y2")),
        ("https://matrix.to/#/@customer_web_abc:shop.example", ByGhost("customer_web_abc")),
        ("+49 151 1234567", ByPhone("491511234567")),
        ("+49 (0)151-123 45 67", ByPhone("491511234567")),
        ("0049 151 1234567", ByPhone("491511234567")),
        ("+49\u00a0151\u00a01234567", ByPhone("491511234567")),
        ("tel:+49-151-1234567", ByPhone("491511234567")),
        ("0151 1234567", ByPhone("1511234567", national=True)),
        ("(0151) 123 45 67", ByPhone("1511234567", national=True)),
        ("491511234567", ByIdentity(None, "491511234567")),
        ("12345", ByIdentity(None, "12345")),
        ("whatsapp:491511234567", ByIdentity("whatsapp", "491511234567")),
        ("WhatsApp:+49 151 1234567", ByIdentity("whatsapp", "491511234567")),
        ("whatsapp:0151 1234567", ByPhone("1511234567", national=True)),
        ("telegram:12345", ByIdentity("telegram", "12345")),
        ("webchat:3f9a0c1d2e4b5a69", ByIdentity("webchat", "3f9a0c1d2e4b5a69")),
        ("messenger:2405867389", ByIdentity("messenger", "2405867389")),
        ("instagram:17841400000000", ByIdentity("instagram", "17841400000000")),
        ("customer:7", ByCustomer(7)),
        ("Customer: 7", ByCustomer(7)),
    ],
)
def test_a_customer_is_named_the_way_an_adviser_has_them_at_hand(
    text: str, expected: CustomerRef
) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "CUSTOMER is empty"),
        ("Ana Müller", "names no customer"),
        ("email:ana@example.org", "unknown prefix 'email'"),
        ("customer:seven", "customer: needs a number"),
        ("customer:²", "customer: needs a number"),
        ("customer:" + "9" * 30, "customer: needs a number"),
        ("telegram:", "the id after telegram: is missing"),
        ("@anna:shop.example", "not a customer's ghost"),
        ("@customer_wa_x:other.example", "not of this homeserver"),
        ("#lobby:shop.example", "not a portal's alias"),
        ("https://example.org/contact", "not to a room or a user"),
        ("matrix:e/whatever", "not a matrix: link"),
        ("+49 151", "6 to 15 digits"),
        ("0151", "too short"),
        ("+49 151 CALL-ME", "not a phone number"),
        ("( )", "not a phone number"),
    ],
)
def test_what_names_nobody_says_what_works(text: str, says: str) -> None:
    with pytest.raises(CustomerNameError) as caught:
        parse(text)
    assert says in str(caught.value)


def test_unknown_and_ambiguous_names_list_the_candidates() -> None:
    ref = ByPhone("1511234567", national=True)
    with pytest.raises(CustomerNotFound, match="no customer matches '0151 1234567'"):
        one_customer("0151 1234567", ref, [])
    two = [
        Candidate(3, ("whatsapp:491511234567 (Ana) in !a:shop.example",)),
        Candidate(9, ("whatsapp:431511234567",)),
    ]
    with pytest.raises(AmbiguousCustomer) as caught:
        one_customer("0151 1234567", ref, two)
    text = str(caught.value)
    assert "matches 2 customers" in text
    assert "customer:3: whatsapp:491511234567 (Ana) in !a:shop.example" in text
    assert "customer:9: whatsapp:431511234567" in text
    assert one_customer("x", ref, two[:1]) == two[0]


# -- the plan -------------------------------------------------------------------------------


def identity(iid: int, customer: int = 1, **kw: Any) -> IdentityFacts:
    values: dict[str, Any] = {
        "channel": "whatsapp",
        "external_id": f"49151000000{iid}",
        "ghost_localpart": f"customer_wa_{iid}",
        "display_name": "Ana",
        "ghost_profile_name": "Ana",
    } | kw
    return IdentityFacts(iid, customer, **values)


def conversation(cid: int, iid: int, room: str | None = None) -> ConversationFacts:
    return ConversationFacts(cid, iid, room, "WhatsApp · Ana" if room else None, True, None)


def snapshot(**kw: Any) -> Snapshot:
    values: dict[str, Any] = {
        "customers": (CustomerFacts(1, "Ana", False),),
        "identities": (identity(10), identity(11, channel="webchat", external_id="ab12")),
        "conversations": (conversation(20, 10, "!wa:shop.example"), conversation(21, 11)),
        "orders": (
            OrderFacts(
                30,
                20,
                {
                    "name": "Ana",
                    "street": "Weg 1",
                    "payment_method": "invoice",
                    "country": "DE",
                    "placed": "2026-01-01T10:00:00+00:00",
                },
                "https://pay.example/c/1",
                "AbC123",
            ),
        ),
        "payment_events": {30: 2},
        "rows": {"messages": 5, "media_files": 1, "outbox": 3, "timers": 0},
        "files": ("file1",),
        "mxcs": ("mxc://shop.example/aaa", "mxc://other.example/bbb"),
    } | kw
    return Snapshot(**values)


def test_deleting_orders_deletes_everything() -> None:
    plan = plan_erasure(snapshot(), "delete", DOMAIN)
    assert plan.deleted() == {
        "customers": 1,
        "channel_identities": 2,
        "conversations": 2,
        "messages": 5,
        "media_files": 1,
        "orders": 1,
        "payment_events": 2,
        "outbox": 3,
    }
    assert plan.anonymised() == {}
    assert plan.rooms == ("!wa:shop.example",)
    assert plan.ghosts == ("@customer_wa_10:shop.example", "@customer_wa_11:shop.example")
    assert plan.mxcs == ("mxc://shop.example/aaa",)
    assert plan.foreign_mxcs == 1
    assert plan.files == ("file1",)


def test_anonymised_orders_keep_their_conversation_emptied_and_its_identity_anonymised() -> None:
    plan = plan_erasure(snapshot(), "anonymise", DOMAIN)
    # The order's conversation (20) must survive: orders.conversation_id cascades.
    assert plan.empty_conversations == {20}
    assert plan.delete_conversations == {21}
    assert plan.anonymise_identities == {10}
    assert plan.delete_identities == {11}
    assert plan.anonymise_customers == {1}
    assert plan.delete_customers == set()
    assert plan.anonymise_orders == {30}
    assert plan.delete_orders == set()
    assert plan.payment_events == 0  # they belong to the kept order
    assert plan.deleted() == {
        "channel_identities": 1,
        "conversations": 1,
        "messages": 5,
        "media_files": 1,
        "outbox": 3,
    }
    assert plan.anonymised() == {
        "customers": 1,
        "channel_identities": 1,
        "conversations": 1,
        "orders": 1,
    }
    # Both ghosts go, the kept identity's too.
    assert len(plan.ghosts) == 2
    assert plan.rooms == ("!wa:shop.example",)


def test_an_anonymised_customer_has_nothing_left_to_erase() -> None:
    done = snapshot(
        customers=(CustomerFacts(1, None, False),),
        identities=(
            identity(
                10,
                external_id="erased:0f0f",
                ghost_localpart="erased_0f0f",
                display_name=None,
                ghost_profile_name=None,
            ),
        ),
        conversations=(ConversationFacts(20, 10, None, None, False, {"erased": True}),),
        orders=(
            OrderFacts(
                30, 20, anonymised_details({"name": "Ana", "payment_method": "invoice"}), None, None
            ),
        ),
        rows={"messages": 0, "outbox": 0},
        files=(),
        mxcs=(),
    )
    plan = plan_erasure(done, "anonymise", DOMAIN)
    assert plan.nothing
    assert plan.ghosts == ()


def test_a_customer_with_another_identity_keeps_their_row() -> None:
    """Retention erases one conversation; the customer's other identity stays theirs."""
    snap = snapshot(
        customers=(CustomerFacts(1, "Ana", True),),
        identities=(identity(10),),
        conversations=(conversation(20, 10, "!wa:shop.example"),),
        orders=(),
        payment_events={},
    )
    plan = plan_erasure(snap, "anonymise", DOMAIN)
    assert plan.delete_customers == set()
    assert plan.anonymise_customers == set()
    assert plan.delete_identities == {10}
    assert plan.delete_conversations == {20}


def test_order_details_keep_nothing_personal() -> None:
    details = {
        "name": "Ana Müller",
        "street": "Hauptstr. 1",
        "postcode": "50667",
        "city": "Köln",
        "email": "ana@example.org",
        "phone": "+491511234567",
        "country": "DE",
        "payment_method": "invoice",
        "placed": "2026-01-01T10:00:00+00:00",
    }
    kept = anonymised_details(details)
    assert kept == {
        "country": "DE",
        "payment_method": "invoice",
        "placed": "2026-01-01T10:00:00+00:00",
        "anonymised": True,
    }
    assert anonymised_details(kept) == kept
    assert anonymised_details(None) is None


# -- jobs -----------------------------------------------------------------------------------


REFS = References(
    conversations=frozenset({20}),
    identities=frozenset({10}),
    messages=frozenset({100, 101}),
    orders=frozenset({30}),
    rooms=frozenset({"!wa:shop.example"}),
    values=frozenset({"$ev100", "mxc://shop.example/aaa"}),
    ghosts=frozenset({"@customer_wa_10:"}),
)
KEYS = REFS.ordering_keys()


@pytest.mark.parametrize(
    ("key", "payload"),
    [
        ("conv:20", {"message_id": 999}),
        ("room:!wa:shop.example", {}),
        ("room-out:!wa:shop.example", {}),
        ("receipt:!wa:shop.example", {}),
        ("conv:7", {"message_id": 100}),
        ("conv:7", {"target_message_id": 101, "emoji": "👍"}),
        ("x", {"order_id": 30}),
        ("x", {"identity_id": 10}),
        ("x", {"conversation_id": 20, "text": "hi"}),
        ("x", {"message_ids": [5, 101]}),
        ("room-out:!lobby:shop.example", {"content": {"body": "⏰ https://matrix.to/#/!wa:shop.example"}}),
        ("room-out:!lobby:shop.example", {"content": {"m.relates_to": {"event_id": "$ev100"}}}),
        ("x", {"as_user": "@customer_wa_10:shop.example"}),
        ("x", {"media": {"mxc": "mxc://shop.example/aaa"}}),
    ],
)  # fmt: skip
def test_jobs_of_the_customer_are_found(key: str, payload: dict[str, Any]) -> None:
    assert job_refers(key, payload, REFS, KEYS)


@pytest.mark.parametrize(
    ("key", "payload"),
    [
        ("conv:200", {"message_id": 1000}),
        ("room:!other:shop.example", {"room_id": "!other:shop.example"}),
        ("x", {"message_id": True}),  # a flag is no id
        ("x", {"order_id": "30"}),
        ("x", {"count": 20, "conversation": 20}),
        ("x", {"as_user": "@customer_wa_100:shop.example"}),
    ],
)
def test_other_jobs_are_left_alone(key: str, payload: dict[str, Any]) -> None:
    assert not job_refers(key, payload, REFS, KEYS)


# -- every table referring to a customer is covered -------------------------------------------

# Columns that name a row of a customer's without a foreign key (ids kept as plain numbers).
SOFT_REFERENCES = ("customer_id", "identity_id", "conversation_id", "message_id", "order_id")


def referring_tables() -> dict[str, str]:
    """Every table that refers to a customer: through foreign keys to customers (and so to
    identities, conversations, messages, consent requests...), or by a column named like an
    id of those. Table -> why."""
    from hub.db.models import Base

    found = {"customers": "the customer"}
    changed = True
    while changed:
        changed = False
        for t in Base.metadata.sorted_tables:
            if t.name in found:
                continue
            for fk in t.foreign_keys:
                if fk.column.table.name in found:
                    found[t.name] = f"{fk.parent.name} → {fk.column.table.name}"
                    changed = True
                    break
            else:
                soft = [c.name for c in t.columns if c.name.endswith(SOFT_REFERENCES)]
                if soft:
                    found[t.name] = f"{soft[0]} (no foreign key)"
                    changed = True
    return found


def test_every_table_referring_to_a_customer_is_exported_and_erased() -> None:
    """A new table with a foreign key to a customer, identity, conversation or message (or an
    id column of one) fails here until hub.consent.gdpr and hub.db.gdpr cover it."""
    found = referring_tables()
    # The walk works: it finds what we know refers to a customer.
    assert {"channel_identities", "conversations", "messages", "consent_images"} <= set(found)
    not_erased = {t: why for t, why in found.items() if t not in ERASED}
    assert not_erased == {}, f"erase these too (hub.consent.gdpr.ERASED): {not_erased}"
    not_exported = {
        t: why for t, why in found.items() if t not in EXPORTED and t not in NOT_EXPORTED
    }
    assert not_exported == {}, f"export these (or say why not in NOT_EXPORTED): {not_exported}"


def test_the_database_side_reads_exactly_the_exported_tables() -> None:
    from hub.db import gdpr
    from hub.db.models import Base

    assert set(gdpr.ROW_FILTERS) == set(EXPORTED)
    assert set(gdpr.DELETE_ORDER) | set(DECIDED) == set(EXPORTED)
    names = set(Base.metadata.tables)
    assert set(ERASED) <= names, set(ERASED) - names
