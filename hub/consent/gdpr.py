"""Export and erasure of a customer's data (GDPR) and retention: the parts free of I/O.

- How a customer is named (`parse_customer`): what an adviser with the room open can paste
  (a room id, a matrix.to or Element link, the ghost's user id, the portal's alias), a phone
  number in any common format, `channel:external_id` or `customer:<id>`.
- Which tables hold a customer's rows (`EXPORTED`, `ERASED`): hub.db.gdpr reads exactly
  these, and tests/unit/test_gdpr.py fails when a table that refers to a customer (through
  a foreign key to a customer, identity, conversation or message) is missing here.
- What an erasure does (`plan_erasure`), from plain rows read by hub.db.gdpr: which rows are
  deleted and which are kept anonymised (orders kept for accounting keep their conversation,
  emptied, and its identity and customer, anonymised: the orders' foreign key cascades), which
  rooms are purged, which files deleted and which ghosts deactivated on the homeserver.
- Which queued jobs belong to the erased customer (`job_refers`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

OrdersPolicy = Literal["anonymise", "delete"]
Reason = Literal["request", "retention"]

CHANNELS = ("webchat", "whatsapp", "telegram", "messenger", "instagram")

# An identity kept for an order has its external id replaced by this prefix and a random
# part: a colon never occurs in a channel's own ids, so no customer can ever match it again.
ERASED_PREFIX = "erased:"
ERASED_GHOST_PREFIX = "erased_"

# Tables holding rows of a customer: found from the customer, their identities, their
# conversations, messages, orders or consent requests (hub.db.gdpr.ROW_FILTERS says how).
EXPORTED = (
    "customers",
    "channel_identities",
    "webchat_visitors",
    "conversations",
    "messages",
    "media_files",
    "carts",
    "orders",
    "payment_events",
    "short_links",
    "timers",
    "missed_conversations",
    "consent_requests",
    "consent_images",
    "newsletter_optins",
    "broadcast_recipients",
    "exchanges",
    "inbound_spans",
)
# Erased but not exported, and why.
NOT_EXPORTED: Mapping[str, str] = {
    "outbox": "the hub's queue of work in progress: copies of rows exported anyway",
}
ERASED = (*EXPORTED, *NOT_EXPORTED)

# Deleted or kept anonymised by the plan's decision; every other table's rows are deleted.
DECIDED = ("customers", "channel_identities", "conversations", "orders", "payment_events")

# What an anonymised order keeps of its `details` (the checkout form): no name, address,
# e-mail or phone; the payment method and country for the books, the time it was placed.
ORDER_KEPT_DETAILS = ("payment_method", "country", "placed")

FORMS = (
    "a room id (!abc:server) or the room's link (matrix.to, Element), the portal alias "
    "(#hubportal_42:server), the customer's ghost (@customer_...:server), a phone number "
    "(+49 151 1234567, 0049..., 0151...), channel:id (whatsapp:4915112345678, "
    "telegram:12345, webchat:<visitor id>, messenger:..., instagram:...) or customer:<number>"
)


class CustomerNameError(ValueError):
    """CUSTOMER is not a way to name a customer; the message says what is accepted."""


# -- naming a customer --------------------------------------------------------------------


@dataclass(frozen=True)
class ByRoom:
    room_id: str

    def describe(self) -> str:
        return f"room {self.room_id}"


@dataclass(frozen=True)
class ByConversation:
    """The portal's alias names its conversation (#<alias_prefix><id>:server)."""

    conversation_id: int

    def describe(self) -> str:
        return f"conversation {self.conversation_id}"


@dataclass(frozen=True)
class ByGhost:
    localpart: str

    def describe(self) -> str:
        return f"ghost {self.localpart}"


@dataclass(frozen=True)
class ByIdentity:
    """`channel:external_id`; channel None: a bare number, any channel's id."""

    channel: str | None
    external_id: str

    def describe(self) -> str:
        return f"{self.channel or 'any channel'}:{self.external_id}"


@dataclass(frozen=True)
class ByPhone:
    """A phone number: WhatsApp's ids are the international number's digits without +.
    `national`: written without a country code (0151...), matched as the end of an id."""

    digits: str
    national: bool = False

    def describe(self) -> str:
        return f"phone {'…' if self.national else '+'}{self.digits}"


@dataclass(frozen=True)
class ByCustomer:
    customer_id: int

    def describe(self) -> str:
        return f"customer:{self.customer_id}"


CustomerRef = ByRoom | ByConversation | ByGhost | ByIdentity | ByPhone | ByCustomer

_PHONE_CHARS = re.compile(r"[\d\s\-./()\u00a0]+")
_LOCAL = r"[^\s:/?]+"
_SERVER = r"[A-Za-z0-9.\-]+(?::\d+)?"
# A room id of room version 12 and later has no server part.
_MATRIX_ID = re.compile(rf"!{_LOCAL}(?::{_SERVER})?|[@#]{_LOCAL}:{_SERVER}")
# matrix: URIs (MSC2312): matrix:roomid/..., matrix:u/..., matrix:r/...
_MATRIX_URI = {"roomid": "!", "u": "@", "r": "#"}


def parse_customer(text: str, *, domain: str, ghost_prefix: str, alias_prefix: str) -> CustomerRef:
    """How CUSTOMER names a customer. CustomerNameError says what is wrong and what works."""
    raw = text.strip()
    if not raw:
        raise CustomerNameError(f"CUSTOMER is empty; give {FORMS}")
    matrix_id = _matrix_id(raw)
    if matrix_id is not None:
        return _from_matrix_id(matrix_id, domain, ghost_prefix, alias_prefix)
    prefix, colon, rest = raw.partition(":")
    prefix = prefix.strip().lower()
    rest = rest.strip()
    if colon and prefix == "customer":
        if not _row_id(rest):
            raise CustomerNameError(f"{raw!r}: customer: needs a number, e.g. customer:42")
        return ByCustomer(int(rest))
    if colon and prefix == "tel":
        return _phone(rest, raw)
    if colon and prefix in CHANNELS:
        if not rest:
            raise CustomerNameError(f"{raw!r}: the id after {prefix}: is missing")
        if prefix == "whatsapp" and _PHONE_CHARS.fullmatch(rest.lstrip("+")):
            phone = _phone(rest, raw)
            if isinstance(phone, ByPhone):
                return phone if phone.national else ByIdentity("whatsapp", phone.digits)
            if isinstance(phone, ByIdentity):
                return ByIdentity("whatsapp", phone.external_id)
        return ByIdentity(prefix, rest)
    if raw[0] == "+" or _PHONE_CHARS.fullmatch(raw):
        return _phone(raw, raw)
    if colon and "//" not in raw:
        raise CustomerNameError(
            f"{raw!r}: unknown prefix {prefix!r}; the channels are {', '.join(CHANNELS)}. "
            f"Give {FORMS}"
        )
    raise CustomerNameError(f"{raw!r} names no customer; give {FORMS}")


def _row_id(text: str) -> bool:
    """A database row id: ASCII digits ("²" is a digit to str.isdigit, not to int) that fit
    a BIGINT."""
    return text.isascii() and text.isdigit() and len(text) <= 18


def _matrix_id(raw: str) -> str | None:
    """The Matrix id in what was pasted: the id itself, a matrix.to or Element link, a
    matrix: URI. None when it is none of these."""
    if raw[0] in "!@#" and _MATRIX_ID.fullmatch(raw):
        return raw
    if raw.lower().startswith("matrix:"):
        path = raw[len("matrix:") :].split("?", 1)[0]
        kind, _, rest = path.partition("/")
        sigil = _MATRIX_URI.get(kind)
        if sigil is None or not rest:
            raise CustomerNameError(f"{raw!r}: not a matrix: link to a room or a user")
        return sigil + unquote(rest.split("/", 1)[0])
    if raw.lower().startswith(("https://", "http://")):
        fragment = unquote(urlsplit(raw).fragment)
        # matrix.to: #/!room:server/$event?via=...; Element: #/room/!room:server/$event
        path = fragment.split("?", 1)[0].lstrip("/")
        for part in path.split("/"):
            if part and part[0] in "!@#":
                if _MATRIX_ID.fullmatch(part):
                    return part
                break
        raise CustomerNameError(f"{raw!r}: a link, but not to a room or a user")
    return None


def _from_matrix_id(mid: str, domain: str, ghost_prefix: str, alias_prefix: str) -> CustomerRef:
    sigil, body = mid[0], mid[1:]
    localpart, _, server = body.partition(":")
    if sigil == "!":
        return ByRoom(mid)
    if server != domain:
        raise CustomerNameError(f"{mid}: not of this homeserver ({domain})")
    if sigil == "#":
        number = localpart[len(alias_prefix) :]
        if not localpart.startswith(alias_prefix) or not _row_id(number):
            raise CustomerNameError(
                f"{mid}: not a portal's alias (they look like #{alias_prefix}42:{domain}); "
                "give the room id or the customer's ghost instead"
            )
        return ByConversation(int(number))
    if not localpart.startswith(ghost_prefix):
        raise CustomerNameError(
            f"{mid}: not a customer's ghost (their ids start with @{ghost_prefix}); "
            "an adviser or the bot is no customer"
        )
    return ByGhost(localpart)


def _phone(text: str, raw: str) -> CustomerRef:
    """A phone number in any common format: +49 151 1234567, +49 (0)151-1234567, 0049...,
    0151 1234567 (national: no country code). Bare digits may be any channel's id."""
    s = text.strip().replace("\u00a0", " ")
    international = s.startswith("+")
    s = s.lstrip("+").replace("(0)", "") if international else s
    if not _PHONE_CHARS.fullmatch(s):
        raise CustomerNameError(f"{raw!r}: not a phone number; give {FORMS}")
    digits = re.sub(r"\D", "", s)
    if not digits:
        raise CustomerNameError(f"{raw!r}: not a phone number; give {FORMS}")
    if not international and digits[0] != "0":
        # Bare digits: any channel's id (Telegram's, a WhatsApp number written without +).
        return ByIdentity(None, digits)
    if not international and digits.startswith("00"):
        international, digits = True, digits[2:]
    elif not international and digits.startswith("0"):
        national = digits.lstrip("0")
        if len(national) < 6:
            raise CustomerNameError(f"{raw!r}: too short for a phone number")
        return ByPhone(national, national=True)
    if not 6 <= len(digits) <= 15:
        raise CustomerNameError(f"{raw!r}: a phone number has 6 to 15 digits")
    return ByPhone(digits)


@dataclass(frozen=True)
class Candidate:
    """A customer a name matched, shown when the name is ambiguous."""

    customer_id: int
    identities: tuple[str, ...]  # "whatsapp:4915112345678 (Ana) in !room:server"

    def describe(self) -> str:
        return f"customer:{self.customer_id}: " + "; ".join(self.identities)


class CustomerNotFound(LookupError):
    def __init__(self, ref: CustomerRef, text: str) -> None:
        super().__init__(f"no customer matches {text!r} ({ref.describe()})")


class AmbiguousCustomer(LookupError):
    def __init__(self, text: str, candidates: Sequence[Candidate]) -> None:
        self.candidates = tuple(candidates)
        lines = [f"{text!r} matches {len(candidates)} customers; name one of them exactly:"]
        lines += [f"  {c.describe()}" for c in candidates]
        super().__init__("\n".join(lines))


def one_customer(text: str, ref: CustomerRef, candidates: Sequence[Candidate]) -> Candidate:
    if not candidates:
        raise CustomerNotFound(ref, text)
    if len(candidates) > 1:
        raise AmbiguousCustomer(text, candidates)
    return candidates[0]


# -- what an erasure removes ----------------------------------------------------------------


@dataclass(frozen=True)
class CustomerFacts:
    id: int
    display_name: str | None
    # The customer has identities the erasure does not cover (retention erases one
    # conversation): their row stays as it is.
    has_other_identities: bool


@dataclass(frozen=True)
class IdentityFacts:
    id: int
    customer_id: int
    channel: str
    external_id: str
    ghost_localpart: str
    display_name: str | None
    ghost_profile_name: str | None

    @property
    def anonymised(self) -> bool:
        return self.external_id.startswith(ERASED_PREFIX)


@dataclass(frozen=True)
class ConversationFacts:
    id: int
    identity_id: int
    room_id: str | None
    room_name: str | None
    dated: bool  # last_inbound_at or last_adviser_reply_at set
    meta: Mapping[str, Any] | None

    @property
    def emptied(self) -> bool:
        return (
            self.room_id is None
            and self.room_name is None
            and not self.dated
            and dict(self.meta or {}) == EMPTIED_META
        )


EMPTIED_META: Mapping[str, Any] = {"erased": True}


@dataclass(frozen=True)
class OrderFacts:
    id: int
    conversation_id: int
    details: Mapping[str, Any] | None
    checkout_url: str | None
    short_code: str | None

    @property
    def anonymised(self) -> bool:
        return (
            anonymised_details(self.details) == self.details
            and self.checkout_url is None
            and self.short_code is None
        )


def anonymised_details(details: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """An order's details without the customer's: what ORDER_KEPT_DETAILS names, marked."""
    if details is None:
        return None
    kept = {k: details[k] for k in ORDER_KEPT_DETAILS if k in details}
    return {**kept, "anonymised": True}


@dataclass(frozen=True)
class Snapshot:
    """What the database holds of the identities an erasure covers (hub.db.gdpr.snapshot)."""

    customers: tuple[CustomerFacts, ...]
    identities: tuple[IdentityFacts, ...]
    conversations: tuple[ConversationFacts, ...]
    orders: tuple[OrderFacts, ...]
    payment_events: Mapping[int, int]  # order id -> its rows in payment_events
    # Rows of every other erased table that refer to the identities (all deleted).
    rows: Mapping[str, int]
    files: tuple[str, ...]  # ids of the hub's own media files
    mxcs: tuple[str, ...]  # media on the homeserver the rows know of


@dataclass(frozen=True)
class ErasurePlan:
    delete_customers: frozenset[int] = frozenset()
    anonymise_customers: frozenset[int] = frozenset()
    delete_identities: frozenset[int] = frozenset()
    anonymise_identities: frozenset[int] = frozenset()
    delete_conversations: frozenset[int] = frozenset()
    empty_conversations: frozenset[int] = frozenset()
    delete_orders: frozenset[int] = frozenset()
    anonymise_orders: frozenset[int] = frozenset()
    rows: Mapping[str, int] = field(default_factory=dict)  # other tables: rows deleted
    payment_events: int = 0  # deleted with their orders
    # The homeserver and the hub's disk.
    rooms: tuple[str, ...] = ()
    ghosts: tuple[str, ...] = ()
    mxcs: tuple[str, ...] = ()  # our server's media the rows know of (rooms list more)
    foreign_mxcs: int = 0  # other servers' media: not ours to delete
    files: tuple[str, ...] = ()

    def deleted(self) -> dict[str, int]:
        """Rows deleted per table (tables without any left out)."""
        counts = {
            "customers": len(self.delete_customers),
            "channel_identities": len(self.delete_identities),
            "conversations": len(self.delete_conversations),
            "orders": len(self.delete_orders),
            "payment_events": self.payment_events,
            **self.rows,
        }
        return {t: n for t in ERASED if (n := counts.get(t, 0))}

    def anonymised(self) -> dict[str, int]:
        counts = {
            "customers": len(self.anonymise_customers),
            "channel_identities": len(self.anonymise_identities),
            "conversations": len(self.empty_conversations),
            "orders": len(self.anonymise_orders),
        }
        return {t: n for t, n in counts.items() if n}

    @property
    def database_untouched(self) -> bool:
        return not self.deleted() and not self.anonymised()

    @property
    def nothing(self) -> bool:
        """Nothing left to do anywhere (a second run)."""
        return self.database_untouched and not (self.rooms or self.ghosts or self.mxcs)


def plan_erasure(snapshot: Snapshot, orders: OrdersPolicy, domain: str) -> ErasurePlan:
    """What erasing the snapshot's identities does. With orders "anonymise" every order is
    kept without the customer's details; as its conversation's foreign key cascades, the
    conversation stays too, emptied (no room, no messages), with its identity and customer
    anonymised. Everything else is deleted. Rows already anonymised count as nothing to do."""
    keep_orders = orders == "anonymise"
    kept_conversations = {o.conversation_id for o in snapshot.orders} if keep_orders else set()
    conversations = {c.id: c for c in snapshot.conversations}
    kept_identities = {conversations[c].identity_id for c in kept_conversations}
    by_customer: dict[int, list[IdentityFacts]] = {}
    for identity in snapshot.identities:
        by_customer.setdefault(identity.customer_id, []).append(identity)
    delete_customers, anonymise_customers = set(), set()
    for customer in snapshot.customers:
        if customer.has_other_identities:
            continue
        if any(i.id in kept_identities for i in by_customer.get(customer.id, [])):
            if customer.display_name is not None:
                anonymise_customers.add(customer.id)
        else:
            delete_customers.add(customer.id)
    delete_orders = frozenset() if keep_orders else frozenset(o.id for o in snapshot.orders)
    own = f"mxc://{domain}/"
    return ErasurePlan(
        delete_customers=frozenset(delete_customers),
        anonymise_customers=frozenset(anonymise_customers),
        delete_identities=frozenset(
            i.id for i in snapshot.identities if i.id not in kept_identities
        ),
        anonymise_identities=frozenset(
            i.id
            for i in snapshot.identities
            if i.id in kept_identities
            and not (i.anonymised and i.display_name is None and i.ghost_profile_name is None)
        ),
        delete_conversations=frozenset(
            c.id for c in snapshot.conversations if c.id not in kept_conversations
        ),
        empty_conversations=frozenset(
            c.id for c in snapshot.conversations if c.id in kept_conversations and not c.emptied
        ),
        delete_orders=delete_orders,
        anonymise_orders=frozenset(
            o.id for o in snapshot.orders if keep_orders and not o.anonymised
        ),
        rows={t: n for t, n in snapshot.rows.items() if n},
        payment_events=sum(snapshot.payment_events.get(o, 0) for o in delete_orders),
        rooms=tuple(sorted({c.room_id for c in snapshot.conversations if c.room_id})),
        ghosts=tuple(
            sorted(
                f"@{i.ghost_localpart}:{domain}" for i in snapshot.identities if not i.anonymised
            )
        ),
        mxcs=tuple(sorted({m for m in snapshot.mxcs if m.startswith(own)})),
        foreign_mxcs=len({m for m in snapshot.mxcs if not m.startswith(own)}),
        files=tuple(sorted(set(snapshot.files))),
    )


# -- queued jobs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class References:
    """What a job of the erased customer may name: its ordering key, ids in its payload
    (keys ending in message_id(s), conversation_id, order_id, identity_id), or the room, a
    ghost, an event or a file anywhere in its payload (a Matrix event's whole content)."""

    conversations: frozenset[int] = frozenset()
    identities: frozenset[int] = frozenset()
    messages: frozenset[int] = frozenset()
    orders: frozenset[int] = frozenset()
    rooms: frozenset[str] = frozenset()
    # Exact values: event ids, mxc URIs. Ghosts and rooms are also found inside texts.
    values: frozenset[str] = frozenset()
    ghosts: frozenset[str] = frozenset()

    def ordering_keys(self) -> frozenset[str]:
        # hub.db.jobs: conv:<id>, room:<room>, room-out:<room>, receipt:<room>
        keys = {f"conv:{c}" for c in self.conversations}
        for room in self.rooms:
            keys |= {f"room:{room}", f"room-out:{room}", f"receipt:{room}"}
        return frozenset(keys)


_INT_KEYS: tuple[tuple[str, str], ...] = (
    ("message_id", "messages"),
    ("message_ids", "messages"),
    ("conversation_id", "conversations"),
    ("order_id", "orders"),
    ("identity_id", "identities"),
)


def job_refers(ordering_key: str, payload: Any, refs: References, keys: Iterable[str]) -> bool:
    """A queued job (any status) that belongs to the erased customer. `keys`: the result of
    `refs.ordering_keys()` (computed once for all jobs)."""
    if ordering_key in keys:
        return True
    return _payload_refers(payload, refs)


def _payload_refers(value: Any, refs: References) -> bool:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and _ids_refer(key, item, refs):
                return True
            if _payload_refers(item, refs):
                return True
        return False
    if isinstance(value, list | tuple):
        return any(_payload_refers(item, refs) for item in value)
    if isinstance(value, str):
        if value in refs.values or value in refs.rooms:
            return True
        return any(r in value for r in refs.rooms) or any(g in value for g in refs.ghosts)
    return False


def _ids_refer(key: str, item: Any, refs: References) -> bool:
    for suffix, kind in _INT_KEYS:
        if key.endswith(suffix):
            ids: frozenset[int] = getattr(refs, kind)
            numbers = item if isinstance(item, list) else [item]
            return any(isinstance(n, int) and not isinstance(n, bool) and n in ids for n in numbers)
    return False
