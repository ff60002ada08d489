"""Photo consent end to end: a WhatsApp customer's photos (through the Graph API stand-in)
in a room on the real Synapse, an adviser's `!consent` as a Matrix reply, the customer's
answer by button and by word, and what is left afterwards: after No or a withdrawal the
photo's event is redacted and the homeserver answers 404 for its media; after Yes
`hub ugc export` hands it out with its proof, and not any more once withdrawn."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import Stack
from tests.e2e.helpers import REPO, Adviser, is_message, tiny_png
from tests.e2e.test_whatsapp import bot_notice, new_wa_id, open_room, post, standin, to

pytestmark = pytest.mark.e2e


async def media_status(stack: Stack, adviser: Adviser, mxc: str) -> int:
    server, media_id = mxc[len("mxc://") :].split("/")
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{stack.synapse.url}/_matrix/client/v1/media/download/{server}/{media_id}",
            headers={"Authorization": f"Bearer {adviser.client.access_token}"},
        ) as resp,
    ):
        return resp.status


async def send_photo(stack: Stack, adviser: Adviser, room_id: str, wa_id: str, name: str) -> Any:
    wa = standin(stack)
    png = tiny_png((30, 120, 200))
    media_id = wa.add_media(png, "image/png")
    payload, wamid = wa.media_webhook(wa_id, name, "image", media_id)
    assert await post(stack, payload) == 200

    def this_photo(ev: dict[str, Any]) -> bool:
        return is_message(msgtype="m.image")(ev) and ev["event_id"] not in seen

    seen = {e["event_id"] for e in adviser.room_events(room_id, is_message(msgtype="m.image"))}
    event = await adviser.wait_event(room_id, this_photo)
    return event, wamid, png


async def ask(adviser: Adviser, room_id: str, event_id: str) -> str:
    return await adviser.send_text(
        room_id, "!consent", **{"m.relates_to": {"m.in_reply_to": {"event_id": event_id}}}
    )


async def the_question(stack: Stack, wa_id: str, count: int) -> dict[str, Any]:
    [*_, rec] = await standin(stack).wait_sent(to(wa_id, kind="interactive"), count=count)
    return rec.json  # type: ignore[no-any-return]


async def tap(stack: Stack, wa_id: str, name: str, question: dict[str, Any], which: int) -> None:
    wa = standin(stack)
    button = question["interactive"]["action"]["buttons"][which]["reply"]
    reply = {"type": "button_reply", "button_reply": {"id": button["id"], "title": button["title"]}}
    msg = wa.message(wa_id, "interactive", reply)
    assert await post(stack, wa.webhook([wa.value([(wa_id, name)], [msg])])) == 200


def redaction_of(event_id: str) -> Any:
    def check(ev: dict[str, Any]) -> bool:
        return ev.get("type") == "m.room.redaction" and ev.get("redacts") == event_id

    return check


def export(stack: Stack, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub", "ugc", "export", str(out), "-c", str(stack.config_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def gone(stack: Stack, adviser: Adviser, room_id: str, event: dict[str, Any]) -> None:
    """The photo's event is redacted and the homeserver no longer has its file."""
    await adviser.wait_event(room_id, redaction_of(event["event_id"]), timeout=30)
    for _ in range(100):
        if await media_status(stack, adviser, event["content"]["url"]) == 404:
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the photo's media is still on the homeserver")


async def test_no_deletes_the_photo_everywhere(stack: Stack, adviser: Adviser) -> None:
    wa_id, name = new_wa_id(), "Foto Nein"
    room_id = await open_room(stack, adviser, wa_id, name, "Hier mein Projekt")
    event, _wamid, _png = await send_photo(stack, adviser, room_id, wa_id, name)
    assert await media_status(stack, adviser, event["content"]["url"]) == 200
    await ask(adviser, room_id, event["event_id"])
    question = await the_question(stack, wa_id, 1)
    assert len(question["interactive"]["action"]["buttons"]) == 2
    await tap(stack, wa_id, name, question, 1)  # No
    await gone(stack, adviser, room_id, event)
    await adviser.wait_event(room_id, bot_notice(stack, "🗑"), timeout=30)
    # The customer is told once the photo is gone (after the question, a text message).
    await standin(stack).wait_sent(to(wa_id, kind="text"))


async def test_yes_exports_the_photo_until_it_is_withdrawn(
    stack: Stack, adviser: Adviser, tmp_path: Path
) -> None:
    wa_id, name = new_wa_id(), "Foto Ja"
    room_id = await open_room(stack, adviser, wa_id, name, "Vorher und nachher")
    event, _wamid, png = await send_photo(stack, adviser, room_id, wa_id, name)
    await ask(adviser, room_id, event["event_id"])
    question = await the_question(stack, wa_id, 1)
    await tap(stack, wa_id, name, question, 0)  # Yes
    await adviser.wait_event(room_id, bot_notice(stack, "✅"), timeout=30)

    def marked(ev: dict[str, Any]) -> bool:
        rel = ev.get("content", {}).get("m.relates_to", {})
        return ev.get("type") == "m.reaction" and rel == {
            "rel_type": "m.annotation",
            "event_id": event["event_id"],
            "key": "✅",
        }

    await adviser.wait_event(room_id, marked)
    out = tmp_path / "ugc"
    result = export(stack, out)
    assert result.returncode == 0, result.stderr
    index = json.loads((out / "index.json").read_text())
    mine = [e for e in index if e["customer"]["name"] == name]
    assert len(mine) == 1
    assert (out / mine[0]["file"]).read_bytes() == png
    assert mine[0]["consent"]["requested_by"] == stack.adviser_mxid
    assert mine[0]["consent"]["answer_channel_message_id"].startswith("wamid.")

    # Withdrawn by the customer's word: gone everywhere, and from the next export.
    wa = standin(stack)
    payload, _ = wa.text_webhook(wa_id, name, "Widerrufen")
    assert await post(stack, payload) == 200
    await gone(stack, adviser, room_id, event)
    result = export(stack, out)
    assert result.returncode == 0, result.stderr
    index = json.loads((out / "index.json").read_text())
    assert [e for e in index if e["customer"]["name"] == name] == []
    assert not (out / mine[0]["file"]).exists()


async def test_consent_refused_with_a_reason(stack: Stack, adviser: Adviser) -> None:
    wa_id, name = new_wa_id(), "Foto Falsch"
    room_id = await open_room(stack, adviser, wa_id, name, "Nur Text")
    text_event = adviser.room_events(room_id, is_message(body="Nur Text"))[0]
    await ask(adviser, room_id, text_event["event_id"])

    def refused(ev: dict[str, Any]) -> bool:
        rel = ev.get("content", {}).get("m.relates_to", {})
        return ev.get("type") == "m.reaction" and rel.get("key") == "⛔"

    await adviser.wait_event(room_id, refused)
    assert standin(stack).sent(to(wa_id, kind="interactive")) == []
