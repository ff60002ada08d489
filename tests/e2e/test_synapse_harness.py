"""The local Synapse harness itself: install, start, register, a nio adviser round trip,
restart on the same data, and clear errors when the port is taken or Synapse dies."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest
from nio import (
    AsyncClient,
    LoginResponse,
    RoomCreateResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
)

from hub.devserver.synapse import (
    LocalSynapse,
    LocalSynapseError,
    SynapseConfig,
    ensure_synapse_installed,
    free_port,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.one_engine(reason="the Synapse harness alone: no hub, no database"),
]


@pytest.fixture(scope="module")
async def synapse_python() -> Path:
    return await ensure_synapse_installed()


def _local_synapse(data_dir: Path, python: Path) -> LocalSynapse:
    config = SynapseConfig(
        data_dir=data_dir,
        server_name="shop.example",
        port=free_port(),
        registration_files=[],
        registration_shared_secret="test-shared-secret",
        for_tests=True,
    )
    return LocalSynapse(config, python)


async def _login(url: str, mxid: str, password: str) -> AsyncClient:
    client = AsyncClient(url, mxid)
    resp = await client.login(password, device_name="harness-test")
    assert isinstance(resp, LoginResponse), resp
    return client


async def test_register_login_send_and_sync(synapse_python: Path, tmp_path: Path) -> None:
    synapse = _local_synapse(tmp_path / "synapse", synapse_python)
    started = time.monotonic()
    async with synapse:
        print(f"synapse cold start: {time.monotonic() - started:.2f} s")
        assert synapse.url.startswith("http://127.0.0.1:")

        started = time.monotonic()
        alice = await synapse.register_user("alice", "alice-pw", admin=True, displayname="Alice")
        print(f"register: {time.monotonic() - started:.3f} s")
        assert alice == "@alice:shop.example"
        # Registering again is fine: fixtures and the demo do it on every start.
        assert await synapse.register_user("alice", "alice-pw", admin=True) == alice
        bob = await synapse.register_user("Bob", "bob-pw")
        assert bob == "@bob:shop.example"  # Synapse lower-cases localparts

        client = await _login(synapse.url, alice, "alice-pw")
        try:
            # Default room version (12 on Synapse 1.163): what the hub will create too.
            created = await client.room_create(name="harness", invite=[bob])
            assert isinstance(created, RoomCreateResponse), created
            sent = await client.room_send(
                created.room_id, "m.room.message", {"msgtype": "m.text", "body": "hello Bob"}
            )
            assert isinstance(sent, RoomSendResponse), sent

            synced = await client.sync(timeout=0, full_state=True)
            assert isinstance(synced, SyncResponse), synced
            timeline = synced.rooms.join[created.room_id].timeline.events
            texts = [e for e in timeline if isinstance(e, RoomMessageText)]
            assert [(e.event_id, e.sender, e.body) for e in texts] == [
                (sent.event_id, alice, "hello Bob")
            ]
        finally:
            await client.close()

    assert not synapse.running
    signing_key = (synapse.data_dir / "signing.key").read_text()

    # Same data dir again (what `hub demo` does on every start): config rewritten, same
    # signing key, users still there.
    started = time.monotonic()
    async with synapse:
        print(f"synapse warm start: {time.monotonic() - started:.2f} s")
        assert (synapse.data_dir / "signing.key").read_text() == signing_key
        assert await synapse.register_user("bob", "other-pw") == bob
        client = await _login(synapse.url, bob, "bob-pw")  # the first password still holds
        await client.close()


async def test_refuses_a_busy_port(synapse_python: Path, tmp_path: Path) -> None:
    synapse = _local_synapse(tmp_path / "synapse", synapse_python)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", synapse.config.port))
        squatter.listen()
        with pytest.raises(LocalSynapseError, match="already in use"):
            await synapse.start()
    assert not synapse.running


async def test_reports_why_synapse_died(synapse_python: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken-registration.yaml"
    broken.write_text("id: broken\nurl: http://127.0.0.1:1\n")  # no tokens: Synapse refuses
    synapse = _local_synapse(tmp_path / "synapse", synapse_python)
    synapse.config.registration_files = [broken]
    with pytest.raises(LocalSynapseError, match="exited with code") as failure:
        await asyncio.wait_for(synapse.start(timeout=30), 40)
    assert "as_token" in str(failure.value) or "Traceback" in str(failure.value)
    assert not synapse.running
