"""Hostile webhook bodies (issue 12): whatever arrives with a valid signature, no mapping
raises and the webhook pipeline never answers 5xx; what reaches the store path is storable;
a well-formed payload always maps.

Property-based (hypothesis): random JSON, the documented payloads of tests/fixtures with
random values at random places, deep nesting, huge strings, invalid UTF-8, lone surrogates.
Plus every field of every fixture given each wrong type in turn (exhaustive, deterministic).
The pipeline runs on mocked requests here; tests/integration/test_webhooks.py posts the same
kinds of bodies over HTTP into a real database.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import fields, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from hub.bridges.base import Channel, ChannelDeps, Refusal
from hub.bridges.http import MAX_JSON_DEPTH, parse_json_object, same_secret, verify_hub_signature
from hub.bridges.meta import mapping as meta
from hub.bridges.meta.channel import InstagramChannel, MessengerChannel
from hub.bridges.telegram import mapping as telegram
from hub.bridges.telegram.channel import SECRET_HEADER, TelegramChannel
from hub.bridges.webhooks import Webhook, loggable
from hub.bridges.whatsapp import mapping as whatsapp
from hub.bridges.whatsapp.channel import WhatsappChannel
from hub.config import MetaPageConfig, TelegramConfig, WhatsappConfig
from hub.core.ingest import Ingest
from hub.core.text import MAX_ID_CHARS, storable_envelope, storable_id
from hub.core.types import (
    BlockChange,
    Envelope,
    InboundEdit,
    InboundMessage,
    InboundReaction,
    OutboundMessage,
    Parsed,
    Sender,
    StatusUpdate,
)
from hub.db.inbound import IngestResult
from hub.matrix.render import message_contents
from tests.standins.meta import MetaStandin
from tests.standins.telegram import TelegramStandin
from tests.standins.whatsapp import WhatsappStandin

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
EXAMPLES = settings(max_examples=200, deadline=None)
MESSAGE_KINDS = {
    "text",
    "image",
    "file",
    "video",
    "audio",
    "sticker",
    "location",
    "contacts",
    "interactive",
    "order",
    "unsupported",
}


def _fixtures(folder: str, keep: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    docs = []
    for path in sorted((FIXTURES / folder).glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(doc, dict) and keep(doc):
            docs.append(doc)
    return docs


TELEGRAM = _fixtures("telegram", lambda d: "update_id" in d)
WHATSAPP = _fixtures("whatsapp", lambda d: d.get("object") == "whatsapp_business_account")
MESSENGER = _fixtures("meta", lambda d: d.get("object") == "page")
INSTAGRAM = _fixtures("meta", lambda d: d.get("object") == "instagram")

PARSERS: dict[str, Callable[[dict[str, Any]], Parsed]] = {
    "telegram": telegram.parse_update,
    "whatsapp": lambda doc: whatsapp.parse_webhook(doc, "106540352242922"),
    "messenger": lambda doc: meta.parse_webhook(doc, "messenger"),
    "instagram": lambda doc: meta.parse_webhook(doc, "instagram"),
}
SAMPLES = {
    "telegram": TELEGRAM,
    "whatsapp": WHATSAPP,
    "messenger": MESSENGER,
    "instagram": INSTAGRAM,
}


# -- what every parse must satisfy ---------------------------------------------------------


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)
    elif is_dataclass(value) and not isinstance(value, type):
        for f in fields(value):
            yield from _strings(getattr(value, f.name))


def assert_sound(parsed: Parsed) -> None:
    """A parse result the pipeline can hand on: hub types only, and once made storable
    nothing the database could refuse."""
    assert isinstance(parsed, Parsed)
    for env in parsed.envelopes:
        assert isinstance(env, Envelope)
        event = env.event
        assert isinstance(
            event, InboundMessage | InboundReaction | InboundEdit | StatusUpdate | BlockChange
        )
        if isinstance(event, InboundMessage):
            assert event.kind in MESSAGE_KINDS
            assert event.data is None or isinstance(event.data, dict)
            if event.kind == "unsupported":
                assert isinstance((event.data or {}).get("type"), str)
                # The room shows it as a message that could not be shown.
                (content,) = message_contents(event.kind, event.text, None, event.data, None)
                assert "cannot be shown here" in content["body"]
        if env.sender is not None:
            assert isinstance(env.sender.external_id, str) and env.sender.external_id
        stored = storable_envelope(env)
        for text in _strings(stored):
            text.encode("utf-8")  # no lone surrogates
            assert "\x00" not in text
        if stored.sender is not None:
            assert len(stored.sender.external_id) <= MAX_ID_CHARS
            assert len(stored.sender.display_name or "") <= 255
        for name in ("remote_id", "target_remote_id", "reply_to_remote_id"):
            assert len(getattr(stored.event, name, None) or "") <= MAX_ID_CHARS
        if isinstance(stored.event, InboundMessage) and stored.event.data is not None:
            json.dumps(stored.event.data, allow_nan=False)
    assert all(isinstance(ack, str) for ack in parsed.acks)


def parse_soundly(channel: str, doc: dict[str, Any]) -> Parsed:
    parsed = PARSERS[channel](doc)
    assert_sound(parsed)
    return parsed


# -- strategies ------------------------------------------------------------------------------


def _keys(value: Any, into: set[str]) -> set[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            into.add(k)
            _keys(v, into)
    elif isinstance(value, list):
        for v in value:
            _keys(v, into)
    return into


KNOWN_KEYS = sorted(_keys([*TELEGRAM, *WHATSAPP, *MESSENGER, *INSTAGRAM], set()))
NASTY_STRINGS = [
    "",
    "\ud83d",  # a lone surrogate (half an emoji), as JSON can carry it: "\ud83d"
    "a\udfffb\ud800",
    "\x00",
    "NUL\x00in the middle",
    "9" * 5000,  # more digits than int() takes
    "x" * 70_000,
    "‮ evil RTL ‭",
    "private",
    "emoji",
    "image",
    "http://[::1",  # not a URL urllib can split
    "%ff%fe",
    "1e999",
    "-1",
]
NASTY_NUMBERS = [0, -1, 1, 10**20, -(10**20), 10**400, 2**63, 1e308, -1e308, 0.5, 1e-300]
# Every character, lone surrogates and NUL included.
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from(NASTY_NUMBERS)
    | st.floats(allow_nan=False, allow_infinity=False)
    | any_text
    | st.sampled_from(NASTY_STRINGS)
)
keys = st.sampled_from(KNOWN_KEYS) | any_text
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5),
    max_leaves=25,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a document: dict keys and list indexes."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield (*prefix, k)
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield (*prefix, i)
            yield from _paths(v, (*prefix, i))


_DELETE = object()


def _mutated(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any] | None:
    """A copy of `doc` with `value` at `path` (_DELETE removes it); None when the path is
    gone (an earlier mutation replaced what held it)."""
    out = copy.deepcopy(doc)
    node: Any = out
    for step in path[:-1]:
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            return None
    last = path[-1]
    if isinstance(node, dict) or (isinstance(node, list) and isinstance(last, int)):
        try:
            if value is _DELETE:
                del node[last]
            else:
                node[last] = value
        except (IndexError, KeyError):
            return None
        return out
    return None


@st.composite
def mutated_samples(draw: st.DrawFn, channel: str) -> dict[str, Any]:
    """A documented payload of `channel` with 1-4 random values at random places."""
    doc = draw(st.sampled_from(SAMPLES[channel]))
    for _ in range(draw(st.integers(1, 4))):
        paths = list(_paths(doc))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        value = draw(json_values | st.just(_DELETE))
        changed = _mutated(doc, path, value)
        if changed is not None:
            doc = changed
    return doc


CHANNELS = list(PARSERS)


# -- the mappings: never an exception ----------------------------------------------------------


@pytest.mark.parametrize("channel", CHANNELS)
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_random_json_never_raises(channel: str, data: st.DataObject) -> None:
    doc = data.draw(st.dictionaries(keys, json_values, max_size=6))
    parse_soundly(channel, doc)


@pytest.mark.parametrize("channel", CHANNELS)
@EXAMPLES
@given(data=st.data())
def test_mutated_provider_payloads_never_raise(channel: str, data: st.DataObject) -> None:
    parse_soundly(channel, data.draw(mutated_samples(channel)))


WRONG_VALUES: list[Any] = [
    _DELETE,
    None,
    True,
    0,
    -7,
    10**30,
    10**400,  # no float holds it
    1.5,
    "",
    "x",
    "http://[::1",  # no URL urllib can split
    "\ud83d",
    "9" * 5000,
    [],
    [None],
    ["a", "b"],
    [[1, 2]],
    {},
    {"id": {"nested": True}},
]


@pytest.mark.parametrize("channel", CHANNELS)
def test_every_field_of_every_sample_with_every_wrong_type(channel: str) -> None:
    """Each documented payload, each of its fields, each wrong type in turn: the mapping
    never raises and what it gives is sound (copied from the real payload shapes)."""
    tried = 0
    for doc in SAMPLES[channel]:
        for path in _paths(doc):
            for value in WRONG_VALUES:
                changed = _mutated(doc, path, value)
                assert changed is not None
                try:
                    parse_soundly(channel, changed)
                except Exception as exc:
                    raise AssertionError(f"{channel}: {path} = {value!r:.40}") from exc
                tried += 1
    assert tried > 1000


@pytest.mark.parametrize("channel", CHANNELS)
def test_deep_nesting_inside_a_payload_never_raises(channel: str) -> None:
    deep: Any = "bottom"
    for n in range(5000):  # deeper than Python's recursion limit
        deep = {"message": deep} if n % 2 else [deep]
    for doc in SAMPLES[channel][:3]:
        for path in list(_paths(doc))[:40]:
            changed = _mutated(doc, path, deep)
            assert changed is not None
            parse_soundly(channel, changed)


# -- the mappings: the defects the outside probe found -------------------------------------


def _fixture(folder: str, name: str) -> dict[str, Any]:
    return dict(json.loads((FIXTURES / folder / name).read_text(encoding="utf-8")))


def only_event(parsed: Parsed) -> InboundMessage:
    (env,) = parsed.envelopes
    assert isinstance(env.event, InboundMessage)
    return env.event


@pytest.mark.parametrize(
    "sizes",
    [
        ["AgADBAADr6cxG", "AgADBAADr6cxH"],  # sizes as strings
        [["AgADBAADr6cxG", 90]],  # sizes as lists
        [{"width": 90, "height": 67}],  # no file_id
        [{"file_id": {"x": 1}, "width": 90}],  # file_id of the wrong type
        [],
        "AgADBAADr6cxG",
    ],
)
def test_telegram_photo_sizes_of_the_wrong_type_are_shown_as_not_understood(
    sizes: object,
) -> None:
    doc = _fixture("telegram", "api_message_photo.json")
    doc["message"]["photo"] = sizes
    parsed = parse_soundly("telegram", doc)
    (env,) = parsed.envelopes
    assert env.sender is not None and env.sender.external_id == str(doc["message"]["chat"]["id"])
    event = env.event
    assert isinstance(event, InboundMessage)
    assert (event.kind, event.data, event.media) == ("unsupported", {"type": "photo"}, None)
    assert event.remote_id == f"{doc['message']['chat']['id']}:{doc['message']['message_id']}"
    assert list(parsed.problems) == ["message (photo): photo without a usable size"]


def test_telegram_photo_sizes_with_wrong_dimensions_still_pick_a_file() -> None:
    doc = _fixture("telegram", "api_message_photo.json")
    good = doc["message"]["photo"][-1]
    doc["message"]["photo"] = [{"file_id": "small", "width": "wide"}, good]
    event = only_event(parse_soundly("telegram", doc))
    assert event.kind == "image" and event.media is not None
    assert event.media.remote_id == good["file_id"]


@pytest.mark.parametrize("key", ["voice", "audio", "video", "video_note", "document", "sticker"])
def test_telegram_file_without_file_id_is_not_understood(key: str) -> None:
    doc = _fixture("telegram", "webhooks_guide_message_text.json")
    del doc["message"]["text"]
    doc["message"][key] = {"file_unique_id": "AgADrQ", "duration": 3}
    parsed = parse_soundly("telegram", doc)
    event = only_event(parsed)
    assert (event.kind, event.data) == ("unsupported", {"type": key})
    assert list(parsed.problems) == [f"message ({key}): {key} without a file_id"]


@pytest.mark.parametrize("sender", ["Jürgen", 42, ["Jürgen"], None])
def test_telegram_from_of_the_wrong_type_keeps_the_message(sender: object) -> None:
    doc = _fixture("telegram", "api_message_text_unicode.json")
    doc["message"]["from"] = sender
    parsed = parse_soundly("telegram", doc)
    (env,) = parsed.envelopes
    assert isinstance(env.event, InboundMessage) and env.event.kind == "text"
    assert env.sender is not None
    # The name comes from the private chat then.
    assert env.sender.display_name == telegram.display_name(doc["message"]["chat"])
    assert parsed.problems == {}


@pytest.mark.parametrize("title", [None, 42, {"text": "Rot"}, ["Rot"]])
def test_telegram_button_titles_of_the_wrong_type_fall_back_to_the_data(title: object) -> None:
    doc = _fixture("telegram", "api_callback_query_with_message.json")
    data = doc["callback_query"]["data"]
    keyboard = [[{"text": title, "callback_data": data}]]
    doc["callback_query"]["message"]["reply_markup"] = {"inline_keyboard": keyboard}
    event = only_event(parse_soundly("telegram", doc))
    assert (event.kind, event.text, event.data) == (
        "interactive",
        data,
        {"id": data, "title": data},
    )


@pytest.mark.parametrize("markup", [5, "x", [5], {"inline_keyboard": 5}, {"inline_keyboard": [5]}])
def test_telegram_reply_markup_of_the_wrong_type(markup: object) -> None:
    doc = _fixture("telegram", "api_callback_query_with_message.json")
    doc["callback_query"]["message"]["reply_markup"] = markup
    event = only_event(parse_soundly("telegram", doc))
    assert event.kind == "interactive"


@pytest.mark.parametrize("date", [10**20, 2**63, -(10**20), 253402300800 * 10, "1441645532", 1.5])
def test_telegram_date_beyond_what_a_datetime_holds_is_no_date(date: object) -> None:
    doc = _fixture("telegram", "webhooks_guide_message_text.json")
    doc["message"]["date"] = date
    event = only_event(parse_soundly("telegram", doc))
    assert event.kind == "text" and event.timestamp is None


def test_telegram_date_far_ahead_but_valid_is_kept_and_capped_by_the_store() -> None:
    doc = _fixture("telegram", "webhooks_guide_message_text.json")
    doc["message"]["date"] = 253402300799  # 9999-12-31: the store counts the window from now
    event = only_event(parse_soundly("telegram", doc))
    assert event.timestamp == datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


@pytest.mark.parametrize(
    "location",
    [{"latitude": "52.5", "longitude": 13.4}, {"latitude": 91, "longitude": 0}, [52.5, 13.4]],
)
def test_telegram_location_that_is_no_place_is_not_understood(location: object) -> None:
    doc = _fixture("telegram", "api_message_location.json")
    doc["message"]["location"] = location
    parsed = parse_soundly("telegram", doc)
    assert only_event(parsed).data == {"type": "location"}
    assert parsed.problems


def test_telegram_unreadable_ids_are_ignored_not_guessed() -> None:
    doc = _fixture("telegram", "webhooks_guide_message_text.json")
    doc["message"]["chat"]["id"] = {"id": 1}
    parsed = parse_soundly("telegram", doc)
    assert parsed.envelopes == [] and parsed.skipped
    doc = _fixture("telegram", "webhooks_guide_message_text.json")
    doc["message"]["message_id"] = "1365"
    assert parse_soundly("telegram", doc).envelopes == []
    doc = _fixture("telegram", "webhooks_guide_message_text.json")
    doc["update_id"] = True
    assert parse_soundly("telegram", doc).envelopes == []


@pytest.mark.parametrize("chat", ["private", 5, ["private"], {"type": "private", "id": "1"}])
def test_telegram_chat_of_the_wrong_type_is_ignored(chat: object) -> None:
    doc = _fixture("telegram", "webhooks_guide_message_text.json")
    doc["message"]["chat"] = chat
    parsed = parse_soundly("telegram", doc)
    assert parsed.envelopes == [] and next(iter(parsed.skipped)).startswith("message from a non")


def test_telegram_a_failing_branch_is_shown_for_the_customer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The last resort: a branch that raises all the same still gives a sound result, the
    customer's message shown as not understood."""

    def broken(*args: Any) -> Any:
        raise KeyError("surprise")

    monkeypatch.setattr(telegram, "_message_event", broken)
    doc = _fixture("telegram", "api_message_photo.json")
    parsed = parse_soundly("telegram", doc)
    event = only_event(parsed)
    assert (event.kind, event.data) == ("unsupported", {"type": "photo"})
    (why,) = parsed.problems
    assert why.startswith("message (photo): KeyError at test_hostile_payloads.py")
    monkeypatch.setattr(telegram, "_PARSERS", {"message": broken})
    parsed = parse_soundly("telegram", doc)
    (env,) = parsed.envelopes
    assert env.event == InboundMessage(
        f"u{doc['update_id']}", "unsupported", data={"type": "photo"}
    )
    assert env.sender is not None and env.sender.external_id == str(doc["message"]["chat"]["id"])


def _wa_message(doc: dict[str, Any]) -> dict[str, Any]:
    return cast(dict[str, Any], doc["entry"][0]["changes"][0]["value"]["messages"][0])


@pytest.mark.parametrize("quantity", ["two", "2.5", "", None, 2.5, True, -1, 0, 10**30, "9" * 5000])
def test_whatsapp_order_with_a_quantity_that_is_no_number_is_not_understood(
    quantity: object,
) -> None:
    doc = _fixture("whatsapp", "order.json")
    _wa_message(doc)["order"]["product_items"][0]["quantity"] = quantity
    parsed = parse_soundly("whatsapp", doc)
    event = only_event(parsed)
    assert (event.kind, event.data) == ("unsupported", {"type": "order"})
    assert event.remote_id == _wa_message(doc)["id"]
    assert list(parsed.problems) == ["message (order): an order item's quantity is not a number"]


def test_whatsapp_order_quantity_as_digits_is_taken() -> None:
    doc = _fixture("whatsapp", "order.json")
    _wa_message(doc)["order"]["product_items"][0]["quantity"] = "3"
    event = only_event(parse_soundly("whatsapp", doc))
    assert event.kind == "order" and event.data is not None
    assert event.data["items"][0]["quantity"] == 3


@pytest.mark.parametrize("price", ["NaN", "Infinity", "1e999999999", {"amount": 1}, "thirty"])
def test_whatsapp_order_price_that_is_no_amount_is_not_understood(price: object) -> None:
    doc = _fixture("whatsapp", "order.json")
    _wa_message(doc)["order"]["product_items"][0]["item_price"] = price
    assert only_event(parse_soundly("whatsapp", doc)).data == {"type": "order"}


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [
        ("text.json", "text", {"body": {"x": 1}}),
        ("image.json", "image", {"id": ["1"]}),
        ("location.json", "location", {"latitude": "x", "longitude": 1}),
        ("reaction.json", "reaction", {"message_id": None, "emoji": "👍"}),
    ],
)
def test_whatsapp_known_kinds_with_wrong_types_are_not_understood(
    name: str, field: str, value: object
) -> None:
    doc = _fixture("whatsapp", name)
    _wa_message(doc)[field] = value
    parsed = parse_soundly("whatsapp", doc)
    assert only_event(parsed).data == {"type": field}
    assert parsed.problems


def test_meta_lone_surrogate_text_maps_and_is_made_storable() -> None:
    doc = _fixture("meta", "messenger_text_reply_to.json")
    doc["entry"][0]["messaging"][0]["message"]["text"] = "Farbe \ud83d bitte"
    parsed = parse_soundly("messenger", doc)
    (env,) = parsed.envelopes
    assert isinstance(env.event, InboundMessage) and env.event.text == "Farbe \ud83d bitte"
    stored = storable_envelope(env).event
    assert isinstance(stored, InboundMessage) and stored.text == "Farbe \ufffd bitte"


@pytest.mark.parametrize("timestamp", [10**400, 1e308, "x", [1], {"t": 1}, True, -(10**30)])
def test_meta_timestamp_no_clock_holds(timestamp: object) -> None:
    doc = _fixture("meta", "messenger_text_reply_to.json")
    doc["entry"][0]["messaging"][0]["timestamp"] = timestamp
    event = only_event(parse_soundly("messenger", doc))
    assert event.kind == "text" and event.timestamp is None


def test_meta_attachment_url_urllib_cannot_split() -> None:
    doc = _fixture("meta", "messenger_attachment_image.json")
    doc["entry"][0]["messaging"][0]["message"]["attachments"][0]["payload"]["url"] = "http://[::1"
    event = only_event(parse_soundly("messenger", doc))
    assert event.kind == "image" and event.media is not None
    assert event.media.filename == "image.jpg"


def test_meta_location_that_is_no_place_is_not_understood() -> None:
    doc = _fixture("meta", "messenger_attachment_image.json")
    attachment = {"type": "location", "payload": {"coordinates": {"lat": "N", "long": []}}}
    doc["entry"][0]["messaging"][0]["message"]["attachments"] = [attachment]
    parsed = parse_soundly("messenger", doc)
    assert only_event(parsed).data == {"type": "location"}
    assert list(parsed.problems) == ["attachment (location): coordinates are not numbers"]


def test_meta_a_failing_branch_is_shown_for_the_customer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: Any) -> Any:
        raise AttributeError("surprise")

    monkeypatch.setattr(meta, "_message", broken)
    doc = _fixture("meta", "messenger_text_reply_to.json")
    ev = doc["entry"][0]["messaging"][0]
    parsed = parse_soundly("messenger", doc)
    event = only_event(parsed)
    assert (event.remote_id, event.kind, event.data) == (
        ev["message"]["mid"],
        "unsupported",
        {"type": "message"},
    )
    assert next(iter(parsed.problems)).startswith("event (message): AttributeError")


# -- well-formed payloads always map ---------------------------------------------------------

# Text as providers send it: anything but lone surrogates (which JSON can carry, and the
# store path replaces).
real_text = st.text(st.characters(codec="utf-8"), min_size=1, max_size=200)
ids = st.integers(1, 2**52)
tokens = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", min_size=1)
tokens = tokens.filter(lambda t: len(t) <= 60)


@EXAMPLES
@given(chat=ids, mid=ids, text=real_text, first=real_text, when=st.integers(0, 4102444800))
def test_well_formed_telegram_text_always_maps(
    chat: int, mid: int, text: str, first: str, when: int
) -> None:
    standin = TelegramStandin()
    update = standin.message_update(chat, text=text)
    update["message"]["message_id"] = mid
    update["message"]["date"] = when
    update["message"]["from"]["first_name"] = first
    update["message"].pop("last_name", None)
    update["message"]["from"].pop("last_name", None)
    parsed = parse_soundly("telegram", update)
    assert parsed.problems == {} and parsed.skipped == {}
    (env,) = parsed.envelopes
    assert env.sender is not None and env.sender.external_id == str(chat)
    assert env.sender.display_name == (first.strip() or "Test")  # else the chat's name
    event = env.event
    assert isinstance(event, InboundMessage)
    assert (event.remote_id, event.kind, event.text) == (f"{chat}:{mid}", "text", text)
    assert event.timestamp == datetime.fromtimestamp(when, UTC)


@EXAMPLES
@given(
    chat=ids,
    mid=ids,
    sizes=st.lists(
        st.tuples(tokens, st.integers(1, 4000), st.integers(1, 4000)), min_size=1, max_size=4
    ),
    caption=st.none() | real_text,
)
def test_well_formed_telegram_photo_always_maps(
    chat: int, mid: int, sizes: list[tuple[str, int, int]], caption: str | None
) -> None:
    standin = TelegramStandin()
    photo = [{"file_id": f, "file_unique_id": f, "width": w, "height": h} for f, w, h in sizes]
    content: dict[str, Any] = {"photo": photo}
    if caption is not None:
        content["caption"] = caption
    update = standin.message_update(chat, **content)
    update["message"]["message_id"] = mid
    parsed = parse_soundly("telegram", update)
    assert parsed.problems == {}
    event = only_event(parsed)
    largest = max(sizes, key=lambda s: s[1] * s[2])
    assert event.kind == "image" and event.text == caption and event.media is not None
    assert event.media.remote_id in [f for f, w, h in sizes if w * h == largest[1] * largest[2]]


@EXAMPLES
@given(chat=ids, data=tokens, title=real_text)
def test_well_formed_telegram_button_tap_always_maps(chat: int, data: str, title: str) -> None:
    standin = TelegramStandin()
    standin.private_chat(chat)
    mid = standin.bot_message(chat, "Which?", [(title, data)])
    update = standin.callback_update(chat, mid, data)
    parsed = parse_soundly("telegram", update)
    event = only_event(parsed)
    assert (event.kind, event.text, event.data) == (
        "interactive",
        title,
        {"id": data, "title": title},
    )
    assert parsed.acks == [update["callback_query"]["id"]]


wa_ids = st.text("0123456789", min_size=6, max_size=15)


@EXAMPLES
@given(wa_id=wa_ids, name=real_text, text=real_text)
def test_well_formed_whatsapp_text_always_maps(wa_id: str, name: str, text: str) -> None:
    standin = WhatsappStandin()
    doc, wamid = standin.text_webhook(wa_id, name, text)
    parsed = parse_soundly("whatsapp", doc)
    assert parsed.problems == {} and parsed.skipped == {}
    (env,) = parsed.envelopes
    assert env.sender is not None and (env.sender.external_id, env.sender.display_name) == (
        wa_id,
        name,
    )
    assert isinstance(env.event, InboundMessage)
    assert (env.event.remote_id, env.event.kind, env.event.text) == (wamid, "text", text)


@EXAMPLES
@given(
    wa_id=wa_ids,
    items=st.lists(
        st.tuples(tokens, st.integers(1, 999), st.decimals("0.01", "99999", places=2)),
        min_size=1,
        max_size=5,
    ),
)
def test_well_formed_whatsapp_order_always_maps(
    wa_id: str, items: list[tuple[str, int, Any]]
) -> None:
    standin = WhatsappStandin()
    content = {
        "catalog_id": "194836987003835",
        "product_items": [
            {"product_retailer_id": sku, "quantity": q, "item_price": float(p), "currency": "EUR"}
            for sku, q, p in items
        ],
    }
    msg = standin.message(wa_id, "order", content)
    doc = standin.webhook([standin.value([(wa_id, "Anna")], [msg])])
    event = only_event(parse_soundly("whatsapp", doc))
    assert event.kind == "order" and event.data is not None
    assert [(i["sku"], i["quantity"]) for i in event.data["items"]] == [
        (sku, q) for sku, q, p in items
    ]
    for item, (_sku, _q, price) in zip(event.data["items"], items, strict=True):
        assert float(item["unit_price"]) == float(price)


@EXAMPLES
@given(customer=wa_ids, text=real_text, kind=st.sampled_from(["messenger", "instagram"]))
def test_well_formed_meta_text_always_maps(customer: str, text: str, kind: str) -> None:
    standin = MetaStandin(kind)
    event_doc = standin.text_event(customer, text)
    parsed = parse_soundly(kind, standin.batch(event_doc))
    assert parsed.problems == {} and parsed.skipped == {}
    (env,) = parsed.envelopes
    assert env.sender is not None and env.sender.external_id == customer
    assert isinstance(env.event, InboundMessage)
    assert (env.event.remote_id, env.event.kind, env.event.text) == (
        event_doc["message"]["mid"],
        "text",
        text,
    )


# -- storable: one place for every channel -----------------------------------------------------


def test_storable_envelope_repairs_every_string() -> None:
    env = Envelope(
        telegram_sender := Sender("telegram", "1\ud83d\x00", "Jü\udfffrgen" + "x" * 300),
        InboundMessage(
            "m\x00" + "i" * 400,
            "location",
            text="\ud83d",
            reply_to_remote_id="r" * 256,
            data={"na\ud800me": ["\x00", {"k": "\udc00"}], "n": 1.5},
        ),
    )
    stored = storable_envelope(env)
    assert stored.sender == Sender("telegram", "1\ufffd", "Jü\ufffdrgen" + "x" * 247 + "…")
    assert telegram_sender.external_id == "1\ud83d\x00"  # the parsed envelope is kept as it was
    event = stored.event
    assert isinstance(event, InboundMessage)
    assert event.text == "\ufffd"
    assert event.data == {"na\ufffdme": ["", {"k": "\ufffd"}], "n": 1.5}
    assert len(event.remote_id) == MAX_ID_CHARS and event.remote_id.startswith("m" + "i" * 100)
    assert event.reply_to_remote_id is not None and len(event.reply_to_remote_id) == MAX_ID_CHARS


@pytest.mark.parametrize(
    ("written", "kept"),
    [
        (datetime(1, 1, 1, tzinfo=UTC), False),  # would close the reply window for good
        (datetime(1970, 1, 1, tzinfo=UTC), False),
        (datetime(2024, 5, 1, 12, tzinfo=UTC), True),
        (datetime(9999, 12, 31, tzinfo=UTC), True),  # the store counts from now instead
    ],
)
def test_storable_envelope_takes_times_before_2000_as_unknown(
    written: datetime, kept: bool
) -> None:
    event = InboundMessage("m1", "text", text="hallo", timestamp=written)
    stored = storable_envelope(Envelope(Sender("whatsapp", "49151"), event)).event
    assert isinstance(stored, InboundMessage)
    assert stored.timestamp == (written if kept else None)


def test_storable_id_is_stable_and_keeps_ids_apart() -> None:
    a, b = "x" * 300 + "a", "x" * 300 + "b"
    assert storable_id(a) == storable_id(a)  # a redelivery is still a duplicate
    assert storable_id(a) != storable_id(b)  # cutting would have made them one
    assert storable_id("wamid.HBgL") == "wamid.HBgL"
    assert storable_id("x" * MAX_ID_CHARS) == "x" * MAX_ID_CHARS


# -- JSON bodies -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000 + b"]" * 100_000,  # deeper than the parser goes (RecursionError)
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b'{"a":' * (MAX_JSON_DEPTH + 1) + b"1" + b"}" * (MAX_JSON_DEPTH + 1),  # deeper than allowed
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b'{"a": 1e999}',
        b'{"a": ' + b"9" * 5000 + b"}",
        b'{"a": "\xff\xfe"}',  # not UTF-8
        b"\xef\xbb\xbf{}",  # a BOM
        b"[]",
        b"",
        b"null",
    ],
)
def test_bodies_that_are_no_json_object_of_sane_depth(raw: bytes) -> None:
    assert parse_json_object(raw) is None


def test_json_nested_up_to_the_limit_and_lone_surrogates_parse() -> None:
    depth = MAX_JSON_DEPTH - 1
    raw = b'{"a":' * depth + b'"\\ud83d"' + b"}" * depth
    doc = parse_json_object(raw)
    assert doc is not None
    assert parse_json_object(b'{"brackets": "' + b"[{" * 500 + b'"}') == {"brackets": "[{" * 500}


def test_secrets_compare_as_bytes() -> None:
    assert same_secret("abc", "abc") and not same_secret("abc", "abd")
    assert not same_secret("\udcff\udcfe", "abc")  # undecodable header bytes
    assert not same_secret("é", "abc")  # hmac refuses to compare non-ASCII str
    assert not verify_hub_signature(b"{}", "sha256=é\udcff", "secret")


# -- the pipeline: never 5xx ---------------------------------------------------------------------


class RecordingIngest:
    """Stands in for the store path: records what it would store."""

    def __init__(self) -> None:
        self.batches: list[list[Envelope]] = []

    async def __call__(self, channel: Channel, envelopes: list[Envelope]) -> IngestResult:
        for env in envelopes:
            for text in _strings(env):
                text.encode("utf-8")
                assert "\x00" not in text
        self.batches.append(envelopes)
        return IngestResult(stored=len(envelopes))


class _Body:
    """A request body arriving in pieces."""

    def __init__(self, data: bytes, piece: int = 16_384) -> None:
        self.data, self.piece = data, piece

    async def _pieces(self) -> AsyncIterator[bytes]:
        for at in range(0, len(self.data), self.piece):
            yield self.data[at : at + self.piece]

    def iter_any(self) -> AsyncIterator[bytes]:
        return self._pieces()


CAP = 1_048_576
_DEPS = ChannelDeps(cast(Any, None), cast(Any, None), cast(Any, None), "http://hub.test")
TG_SECRET = "tg-secret_0123456789"
APP_SECRET = "0123456789abcdef0123456789abcdef"


def _channels() -> dict[str, Channel]:
    meta_config = {
        "enabled": True,
        "page_id": "106107758793337",
        "page_access_token": "EAAG-token",
        "app_secret": APP_SECRET,
        "verify_token": "verify",
    }
    return {
        "telegram": TelegramChannel(
            _DEPS,
            TelegramConfig(enabled=True, bot_token="1:AA-token", webhook_secret=TG_SECRET),
        ),
        "whatsapp": WhatsappChannel(
            _DEPS,
            WhatsappConfig(
                enabled=True,
                phone_number_id="106540352242922",
                access_token="EAA-token",
                app_secret=APP_SECRET,
                verify_token="verify",
            ),
            "!",
        ),
        "messenger": MessengerChannel(_DEPS, MetaPageConfig(**meta_config)),
        "instagram": InstagramChannel(_DEPS, MetaPageConfig(**meta_config)),
    }


CHANNEL_OBJECTS = _channels()


def _headers(channel: str, raw: bytes) -> dict[str, str]:
    if channel == "telegram":
        return {SECRET_HEADER: TG_SECRET}
    return {"X-Hub-Signature-256": MetaStandin().sign(raw, APP_SECRET)}


async def _post(
    channel: Channel | str, raw: bytes, headers: dict[str, str] | None = None
) -> tuple[int, RecordingIngest]:
    """The pipeline's answer to a POST of `raw` (signed as the provider would, unless
    `headers` are given). An HTTPException is how aiohttp answers too (the 413)."""
    kind = channel if isinstance(channel, str) else channel.kind
    obj = CHANNEL_OBJECTS[channel] if isinstance(channel, str) else channel
    ingest = RecordingIngest()
    webhook = Webhook(obj, cast(Ingest, ingest), CAP)
    request = make_mocked_request(
        "POST",
        obj.webhook_path or "/",
        headers=CIMultiDict(headers if headers is not None else _headers(kind, raw)),
        payload=_Body(raw),
    )
    try:
        response = await webhook.post(request)
    except web.HTTPException as exc:
        return exc.status, ingest
    return response.status, ingest


def post(channel: Channel | str, raw: bytes, headers: dict[str, str] | None = None) -> int:
    status, _ingest = asyncio.run(_post(channel, raw, headers))
    return status


nasty_bodies = (
    st.binary(max_size=300)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.dictionaries(keys, json_values, max_size=6).map(lambda v: json.dumps(v).encode())
    | st.integers(1, 3000).map(lambda n: b'{"update_id":1,"message":' * n + b"{}" + b"}" * n)
    | st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n)
    | json_values.map(lambda v: json.dumps(v).encode()[:-1])  # cut off
    | json_values.map(lambda v: json.dumps(v).encode().replace(b'"', b"\xff", 1))
)


@pytest.mark.parametrize("channel", CHANNELS)
@EXAMPLES
@given(raw=nasty_bodies)
def test_well_signed_nonsense_is_never_a_5xx(channel: str, raw: bytes) -> None:
    status, ingest = asyncio.run(_post(channel, raw))
    assert status in (200, 400), status
    if status == 400:
        assert ingest.batches == []


@pytest.mark.parametrize("channel", CHANNELS)
@EXAMPLES
@given(data=st.data())
def test_well_signed_mutated_payloads_are_acknowledged(channel: str, data: st.DataObject) -> None:
    doc = data.draw(mutated_samples(channel))
    raw = json.dumps(doc).encode()  # lone surrogates travel as "\ud83d", as in JSON
    status, _ingest = asyncio.run(_post(channel, raw))
    meta_other_object = channel in ("messenger", "instagram") and doc.get("object") != (
        "page" if channel == "messenger" else "instagram"
    )
    # A Meta delivery for another object is refused (a subscription pointing at the wrong
    # endpoint); everything else that is signed is acknowledged.
    assert status == (400 if meta_other_object else 200)


@pytest.mark.parametrize("channel", CHANNELS)
@settings(max_examples=50, deadline=None)
@given(raw=nasty_bodies, header=st.text(st.characters(codec="utf-8", exclude_characters="\r\n")))
def test_unsigned_or_forged_nonsense_is_refused_before_reading(
    channel: str, raw: bytes, header: str
) -> None:
    name = SECRET_HEADER if channel == "telegram" else "X-Hub-Signature-256"
    assume(header != TG_SECRET)
    status, ingest = asyncio.run(_post(channel, raw, {name: header}))
    assert status in (401, 403) and ingest.batches == []
    assert post(channel, raw, {}) == 401


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("value", ["\udcff\udcfe", "sha256=\udcff", "sha256=é", "é"])
def test_undecodable_secret_header_is_refused(channel: str, value: str) -> None:
    # aiohttp hands header bytes that are not UTF-8 over as surrogates (over HTTP in
    # tests/integration/test_webhooks.py).
    name = SECRET_HEADER if channel == "telegram" else "X-Hub-Signature-256"
    refusal = CHANNEL_OBJECTS[channel].verify(b"{}", {name: value})
    assert refusal is not None and refusal.status == 403


@pytest.mark.parametrize("channel", CHANNELS)
def test_body_over_the_cap_is_413(channel: str) -> None:
    raw = b'{"x": "' + b"y" * CAP + b'"}'
    assert post(channel, raw) == 413
    within = raw[: CAP - 2] + b'"}'
    assert len(within) == CAP
    # Within the cap: read whole, verified, then judged (not a delivery of Meta's object).
    assert post(channel, within) == (400 if channel in ("messenger", "instagram") else 200)


class _Broken(Channel):
    kind = "broken"
    code = "br"
    label = "Broken"
    webhook_path = "/webhooks/broken"

    def __init__(self, fail: str) -> None:
        super().__init__(_DEPS)
        self.fail = fail

    def verify(self, raw: bytes, headers: Any) -> Refusal | None:
        if self.fail == "verify":
            raise UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogates not allowed")
        return None

    def parse(self, doc: dict[str, Any]) -> Parsed:
        if self.fail == "parse":
            raise TypeError(f"'str' object has no attribute 'get' {doc['secret']}" * 50)
        parsed = Parsed()
        if self.fail == "storable":  # a mapping that broke its types
            event = InboundMessage(cast(str, 12345), "text", text=cast(str, {"a": 1}))
            parsed.envelopes.append(Envelope(Sender("broken", cast(str, 7)), event))
        return parsed

    async def after_store(self, parsed: Parsed) -> None:
        if self.fail == "after_store":
            raise RuntimeError("provider down")

    async def send(self, message: OutboundMessage) -> str:
        raise NotImplementedError


BODY = json.dumps({"secret": "customer-phone-4915112345678", "x": "y" * 1000}).encode()


def test_a_mapping_that_raises_is_acknowledged_and_logged_once_briefly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="hub.bridges.webhooks"):
        status, ingest = asyncio.run(_post(_Broken("parse"), BODY, {}))
    assert status == 200 and ingest.batches == []
    (record,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    message = record.getMessage()
    assert message.startswith("broken webhook: not understood, acknowledged: 1× delivery: ")
    assert "TypeError at test_hostile_payloads.py" in message
    assert len(message) < 300 and "y" * 100 not in message


def test_a_verify_that_raises_refuses(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="hub.bridges.webhooks"):
        assert post(_Broken("verify"), BODY, {}) == 403
    assert "verifying failed (UnicodeEncodeError" in caplog.text


def test_after_store_failing_still_acknowledges(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="hub.bridges.webhooks"):
        assert post(_Broken("after_store"), BODY, {}) == 200
    assert "after storing: RuntimeError" in caplog.text


def test_envelopes_are_made_storable_even_when_a_mapping_broke_its_types() -> None:
    status, ingest = asyncio.run(_post(_Broken("storable"), BODY, {}))
    assert status == 200
    ((env,),) = ingest.batches
    assert env.sender is not None and env.sender.external_id == "7"
    assert isinstance(env.event, InboundMessage) and env.event.remote_id == "12345"


def test_telegram_update_from_a_known_customer_reaches_the_store_as_not_shown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    doc = _fixture("telegram", "api_message_photo.json")
    doc["message"]["photo"] = ["AgADBAADr6cxG"]
    with caplog.at_level(logging.INFO, logger="hub.bridges.webhooks"):
        status, ingest = asyncio.run(_post("telegram", json.dumps(doc).encode()))
    assert status == 200
    ((env,),) = ingest.batches
    assert isinstance(env.event, InboundMessage) and env.event.kind == "unsupported"
    # Logged once, as a warning, with the channel and a short reason; never the body.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        "telegram webhook: not understood, acknowledged: "
        "1× message (photo): photo without a usable size"
    ]
    assert "AgADBAADr6cxG" not in caplog.text


def test_log_reasons_are_one_short_line() -> None:
    assert loggable("a\nb\x00c\ud83d") == "a?b?c?"
    assert len(loggable("x" * 10_000)) == 200


@pytest.mark.parametrize("channel", CHANNELS)
def test_the_documented_payloads_all_pass_the_pipeline(channel: str) -> None:
    for doc in SAMPLES[channel]:
        status, ingest = asyncio.run(_post(channel, json.dumps(doc).encode()))
        assert status == 200
        for batch in ingest.batches:
            assert batch
