"""The start-up check of hub.matrix.encryption_check against a fake homeserver client: a hub
without end-to-bridge encryption refuses a homeserver that encrypts new rooms, naming both
settings; the probe room is made like a portal and discarded."""

from __future__ import annotations

import logging
from typing import Any, cast

import pytest

from hub.errors import StartupError
from hub.matrix.client import MatrixClient, MatrixError, MatrixUnavailable
from hub.matrix.encryption_check import check_encryption_support, homeserver_encrypts_new_rooms

MEGOLM = {"algorithm": "m.megolm.v1.aes-sha2"}


class FakeMatrix:
    def __init__(self, encryption: dict[str, Any] | None, fail: Exception | None = None) -> None:
        self.encryption = encryption
        self.fail = fail
        self.calls: list[tuple[str, Any]] = []

    async def create_room(self, **kwargs: Any) -> str:
        self.calls.append(("create_room", kwargs))
        if self.fail is not None:
            raise self.fail
        return "!probe:shop.example"

    async def room_state(self, room_id: str, event_type: str, state_key: str = "") -> Any:
        self.calls.append(("room_state", (room_id, event_type, state_key)))
        return self.encryption

    async def leave(self, room_id: str) -> None:
        self.calls.append(("leave", room_id))
        raise MatrixError(500, "M_UNKNOWN", "leaving is broken today")

    async def forget(self, room_id: str) -> None:
        self.calls.append(("forget", room_id))


def client(fake: FakeMatrix) -> MatrixClient:
    return cast(MatrixClient, fake)


async def test_the_probe_room_is_made_like_a_portal_and_discarded() -> None:
    fake = FakeMatrix(MEGOLM)
    assert await homeserver_encrypts_new_rooms(client(fake)) is True
    name, kwargs = fake.calls[0]
    # No alias (it would outlive the room) and nobody invited; create_room's own preset.
    assert (name, kwargs["alias_localpart"], kwargs["invite"]) == ("create_room", "", [])
    assert "encrypted" not in kwargs
    assert fake.calls[1] == ("room_state", ("!probe:shop.example", "m.room.encryption", ""))
    assert fake.calls[2] == ("leave", "!probe:shop.example")  # failing leave: not fatal
    assert await homeserver_encrypts_new_rooms(client(FakeMatrix(None))) is False


async def test_encryption_off_against_an_encrypting_homeserver_refuses_to_start() -> None:
    with pytest.raises(StartupError) as refused:
        await check_encryption_support(client(FakeMatrix(MEGOLM)), enabled=False)
    text = str(refused.value)
    assert "encryption_enabled_by_default_for_room_type: off" in text
    assert "encryption.enabled: true" in text
    assert "hub generate-registration" in text and "docs/encryption.md" in text


async def test_it_starts_when_the_rooms_stay_clear_or_the_hub_encrypts_itself(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "hub.matrix.encryption_check")
    await check_encryption_support(client(FakeMatrix(None)), enabled=False)
    on = FakeMatrix(MEGOLM)
    await check_encryption_support(client(on), enabled=True)
    assert on.calls == []  # no probe needed
    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(infos) == 2


@pytest.mark.parametrize(
    "failure",
    [MatrixUnavailable("connection refused"), MatrixError(403, "M_FORBIDDEN", "no rooms")],
)
async def test_a_probe_that_cannot_be_made_is_a_warning_not_a_refusal(
    failure: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    await check_encryption_support(client(FakeMatrix(MEGOLM, fail=failure)), enabled=False)
    assert any(r.levelno == logging.WARNING for r in caplog.records)
