"""What end-to-bridge encryption costs the hub, in one process (no homeserver):

    python bench/crypto.py [-n 2000]

- memory: the hub's RSS growth from importing nio's Olm machine (vodozemac), measured in a
  fresh child interpreter (a hub without `encryption.enabled` never imports it);
- CPU per message: Megolm-encrypting an adviser-sized event as the bot's device
  (`Olm.group_encrypt`, what `EncryptingClient.send_event` adds to every send) and
  decrypting one (`Olm.decrypt_megolm_event`, what the dispatcher adds to every adviser
  event), against building the same event's JSON, the work a clear send does anyway.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/crypto.py` puts only bench/ on the path
    sys.path.insert(0, str(REPO))

_IMPORT_RSS = """
import resource, sys
def rss():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
import hub.app  # what a hub without encryption has loaded anyway
import hub.matrix.client, hub.matrix.dispatcher, hub.matrix.deliver
before = rss()
import hub.matrix.crypto.machine, hub.matrix.crypto.client, hub.matrix.crypto.media
print(rss() - before)
"""


def import_cost_mib() -> float:
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_RSS], cwd=REPO, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip())


def per_message_us(n: int) -> dict[str, float]:
    from nio.crypto import Olm
    from nio.events import MegolmEvent
    from nio.store import SqliteMemoryStore

    room = "!room:shop.example"
    hub = Olm("@shopbot:shop.example", "HUB", SqliteMemoryStore("@shopbot:shop.example", "HUB"))
    adviser = Olm("@anna:shop.example", "ANNA", SqliteMemoryStore("@anna:shop.example", "ANNA"))
    hub.create_outbound_group_session(room)
    session = hub.outbound_group_sessions[room]
    adviser.create_group_session(
        hub.account.identity_keys["curve25519"],
        hub.account.identity_keys["ed25519"],
        room,
        session.id,
        session.session_key,
    )
    session.shared = True
    session.max_messages = n * 2  # no rotation inside the measurement
    content = {
        "msgtype": "m.text",
        "body": "Guten Tag! Die Wandfarbe WF-W-10 ist lösemittelfrei, 10 l kosten 49,90 €. " * 2,
    }

    start = time.perf_counter()
    for _ in range(n):
        json.dumps({"type": "m.room.message", "content": content})
    plain = (time.perf_counter() - start) / n * 1e6

    events = []
    start = time.perf_counter()
    for _ in range(n):
        events.append(hub.group_encrypt(room, {"type": "m.room.message", "content": content}))
    encrypt = (time.perf_counter() - start) / n * 1e6

    parsed = [
        MegolmEvent.from_dict(
            {
                "type": "m.room.encrypted",
                "event_id": f"$e{i}",
                "sender": "@customer_x:shop.example",
                "origin_server_ts": 1,
                "room_id": room,
                "content": e,
            }
        )
        for i, e in enumerate(events)
    ]
    start = time.perf_counter()
    for event in parsed:
        adviser.decrypt_megolm_event(event, room)
    decrypt = (time.perf_counter() - start) / n * 1e6
    return {"json": plain, "encrypt": encrypt, "decrypt": decrypt}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=2000, help="messages (default 2000)")
    args = parser.parse_args()
    mib = import_cost_mib()
    us = per_message_us(args.n)
    print(f"importing the Olm machine (nio.crypto, vodozemac): +{mib:.1f} MiB RSS")
    print(f"per message (n={args.n}):")
    print(f"  JSON of the event (a clear send's own work): {us['json']:8.1f} µs")
    print(f"  Megolm encrypt as the bot's device:          {us['encrypt']:8.1f} µs")
    print(f"  Megolm decrypt of an adviser's event:        {us['decrypt']:8.1f} µs")
    print(
        f"  encrypt+decrypt against the hub's 1.25 ms CPU per relayed message (bench/relay.py): "
        f"{(us['encrypt'] + us['decrypt']) / 1250:.1%}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
