"""The hub's Synapse admin API client (hub.matrix.admin) against the session's real Synapse:
deleting a file from the media store, listing a room's files, purging a room, deactivating
users (the appservice's ghosts too), and the start-up check of the admin token.

Each test works with users and rooms of its own, so it neither needs nor disturbs the hub
process of the session. Every call is made twice where the hub relies on "already gone"
being success, since the job queue retries a job whose answer was lost.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from hub.config import load_config
from hub.errors import ExternalError, StartupError
from hub.matrix.admin import HomeserverAdmin, split_mxc
from hub.matrix.client import MatrixError
from tests.e2e.conftest import Stack
from tests.e2e.helpers import tiny_png

pytestmark = pytest.mark.e2e

PASSWORD = "admin-test-password-1"


@pytest.fixture(scope="module")
async def admin_token(stack: Stack) -> str:
    return await stack.synapse.admin_token()


@pytest.fixture
async def admin(stack: Stack, http: aiohttp.ClientSession, admin_token: str) -> HomeserverAdmin:
    return HomeserverAdmin(http, stack.synapse.url, admin_token, timeout=10, purge_timeout=60)


class User:
    """A fresh local user with a password, talking raw client-server API."""

    def __init__(self, http: aiohttp.ClientSession, url: str, mxid: str, token: str) -> None:
        self.http = http
        self.url = url
        self.mxid = mxid
        self.token = token

    async def call(
        self, method: str, path: str, body: Any = None, *, data: bytes | None = None, **headers: str
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {self.token}", **headers}
        kwargs: dict[str, Any] = {"data": data} if data is not None else {"json": body}
        async with self.http.request(method, self.url + path, headers=headers, **kwargs) as resp:
            return resp.status, await resp.json(content_type=None)

    async def upload(self, data: bytes, content_type: str, filename: str) -> str:
        status, doc = await self.call(
            "POST",
            f"/_matrix/media/v3/upload?filename={quote(filename)}",
            data=data,
            **{"Content-Type": content_type},
        )
        assert status == 200, doc
        return str(doc["content_uri"])

    async def download_status(self, mxc: str, thumbnail: bool = False) -> int:
        """The status of an authenticated media download (or of a 32x32 thumbnail)."""
        server, media_id = split_mxc(mxc)
        path = f"/_matrix/client/v1/media/download/{server}/{media_id}"
        if thumbnail:
            path = f"/_matrix/client/v1/media/thumbnail/{server}/{media_id}?width=32&height=32"
        async with self.http.get(
            self.url + path, headers={"Authorization": f"Bearer {self.token}"}
        ) as resp:
            await resp.read()
            return resp.status

    async def send(self, room_id: str, content: dict[str, Any]) -> str:
        txn = secrets.token_hex(8)
        path = f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/{txn}"
        status, doc = await self.call("PUT", path, content)
        assert status == 200, doc
        return str(doc["event_id"])


async def login(http: aiohttp.ClientSession, url: str, mxid: str, password: str) -> int:
    """The status of a password login (200 when the user may log in)."""
    body = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": mxid},
        "password": password,
    }
    async with http.post(f"{url}/_matrix/client/v3/login", json=body) as resp:
        await resp.read()
        return resp.status


async def new_user(stack: Stack, http: aiohttp.ClientSession, prefix: str) -> User:
    mxid = await stack.synapse.register_user(f"{prefix}{secrets.token_hex(4)}", PASSWORD)
    body = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": mxid},
        "password": PASSWORD,
    }
    async with http.post(f"{stack.synapse.url}/_matrix/client/v3/login", json=body) as resp:
        doc = await resp.json()
        assert resp.status == 200, doc
    return User(http, stack.synapse.url, mxid, str(doc["access_token"]))


async def admin_get(
    http: aiohttp.ClientSession, stack: Stack, token: str, path: str
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"}
    async with http.get(stack.synapse.url + path, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


def media_files(stack: Stack, mxc: str) -> tuple[Path, Path]:
    """The file and thumbnail directory of a local upload (Synapse's media store layout)."""
    _server, media_id = split_mxc(mxc)
    store = stack.synapse.data_dir / "media_store"
    parts = (media_id[:2], media_id[2:4], media_id[4:])
    return store.joinpath("local_content", *parts), store.joinpath("local_thumbnails", *parts)


# -- start-up check ---------------------------------------------------------------------------


async def test_check_names_the_admin(admin: HomeserverAdmin) -> None:
    assert await admin.check() == "@hubadmin:shop.example"


async def test_admin_token_is_stable_across_calls(stack: Stack, admin_token: str) -> None:
    # The demo calls it on every start: the derived password must keep logging in, and the
    # token handed out before must stay valid.
    again = await stack.synapse.admin_token()
    assert again != admin_token
    async with aiohttp.ClientSession() as http:
        for token in (admin_token, again):
            status, doc = await admin_get(http, stack, token, "/_matrix/client/v3/account/whoami")
            assert status == 200 and doc["user_id"] == "@hubadmin:shop.example", doc


async def test_check_refuses_tokens_that_are_not_an_admins(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    user = await new_user(stack, http, "notadmin")
    as_token = load_config(stack.config_path).appservice.as_token
    for token, says in (
        (user.token, "not a server admin"),
        (as_token, "not a server admin"),  # the appservice's bot is no server admin
        ("syt_not_a_token_at_all_000000", "rejects"),
    ):
        checker = HomeserverAdmin(http, stack.synapse.url, token, timeout=10)
        with pytest.raises(StartupError) as failure:
            await checker.check()
        message = str(failure.value)
        assert "homeserver.admin_token" in message and says in message, message
        assert token not in message


# -- media --------------------------------------------------------------------------------------


async def test_delete_media_removes_the_file_and_is_idempotent(
    stack: Stack, http: aiohttp.ClientSession, admin: HomeserverAdmin
) -> None:
    user = await new_user(stack, http, "uploader")
    mxc = await user.upload(tiny_png(), "image/png", "photo.png")
    assert mxc.startswith(f"mxc://{stack.synapse.server_name}/")
    assert await user.download_status(mxc) == 200
    assert await user.download_status(mxc, thumbnail=True) == 200
    path, thumbnails = media_files(stack, mxc)
    assert path.is_file() and thumbnails.is_dir()

    assert await admin.delete_media(mxc) is True
    assert await user.download_status(mxc) == 404
    assert await user.download_status(mxc, thumbnail=True) == 404
    assert not path.exists()
    assert not thumbnails.exists()
    # Already gone: success, but says so.
    assert await admin.delete_media(mxc) is False
    # A media id that never existed on our server is "already gone" too.
    assert await admin.delete_media(f"mxc://{stack.synapse.server_name}/NeverUploaded1") is False


async def test_delete_media_refuses_what_it_cannot_delete(admin: HomeserverAdmin) -> None:
    for bad in ("https://shop.example/x", "mxc://shop.example", "mxc://shop.example/a/b", ""):
        with pytest.raises(ValueError):
            await admin.delete_media(bad)
    # Another server's file is not ours to delete: Synapse refuses, and retrying won't help.
    with pytest.raises(MatrixError) as refused:
        await admin.delete_media("mxc://other.example/SomeRemoteMedia")
    assert refused.value.status == 400 and refused.value.permanent


async def test_room_media_lists_files_sent_into_a_room(
    stack: Stack, http: aiohttp.ClientSession, admin: HomeserverAdmin
) -> None:
    user = await new_user(stack, http, "sender")
    status, doc = await user.call("POST", "/_matrix/client/v3/createRoom", {"name": "photos"})
    assert status == 200, doc
    room_id = str(doc["room_id"])
    assert await admin.room_media(room_id) == []

    photo = await user.upload(tiny_png(), "image/png", "photo.png")
    thumb = await user.upload(tiny_png((0, 90, 200)), "image/png", "thumb.png")
    content = {
        "msgtype": "m.image",
        "body": "photo.png",
        "url": photo,
        "info": {"mimetype": "image/png", "w": 2, "h": 2, "thumbnail_url": thumb},
    }
    await user.send(room_id, content)
    await user.send(room_id, {"msgtype": "m.text", "body": "no file here"})
    # The same file sent twice is listed once.
    await user.send(room_id, {"msgtype": "m.image", "body": "again", "url": photo})

    listed = await admin.room_media(room_id)
    assert sorted(listed) == sorted([photo, thumb])
    for mxc in listed:
        assert await admin.delete_media(mxc) is True
    assert await user.download_status(photo) == 404
    # Synapse lists what the events reference, deleted or not.
    assert sorted(await admin.room_media(room_id)) == sorted([photo, thumb])
    # A room that does not exist has no files.
    assert await admin.room_media(f"!doesnotexist{secrets.token_hex(4)}:shop.example") == []


# -- rooms ----------------------------------------------------------------------------------------


async def test_purge_room_removes_the_room(
    stack: Stack, http: aiohttp.ClientSession, admin: HomeserverAdmin, admin_token: str
) -> None:
    owner = await new_user(stack, http, "owner")
    guest = await new_user(stack, http, "guest")
    alias_local = f"erase{secrets.token_hex(4)}"
    status, doc = await owner.call(
        "POST",
        "/_matrix/client/v3/createRoom",
        {"name": "to erase", "room_alias_name": alias_local, "invite": [guest.mxid]},
    )
    assert status == 200, doc
    room_id = str(doc["room_id"])
    status, doc = await guest.call("POST", f"/_matrix/client/v3/join/{quote(room_id)}", {})
    assert status == 200, doc
    for n in range(3):
        await owner.send(room_id, {"msgtype": "m.text", "body": f"message {n}"})
        await guest.send(room_id, {"msgtype": "m.text", "body": f"answer {n}"})
    room_path = f"/_synapse/admin/v1/rooms/{quote(room_id)}"
    status, doc = await admin_get(http, stack, admin_token, room_path)
    assert status == 200 and doc["joined_members"] == 2, doc

    await admin.purge_room(room_id)

    status, doc = await admin_get(http, stack, admin_token, room_path)
    assert (status, doc.get("errcode")) == (404, "M_NOT_FOUND"), doc
    for member in (owner, guest):
        status, doc = await member.call("GET", "/_matrix/client/v3/joined_rooms")
        assert status == 200 and room_id not in doc["joined_rooms"], doc
    alias = quote(f"#{alias_local}:{stack.synapse.server_name}")
    status, doc = await owner.call("GET", f"/_matrix/client/v3/directory/room/{alias}")
    assert status == 404, doc
    # Purging again (a retried job) and purging a room that never existed both succeed.
    await admin.purge_room(room_id)
    await admin.purge_room(f"!neverexisted{secrets.token_hex(4)}:shop.example")


async def test_purge_room_waits_for_a_purge_already_running(
    stack: Stack, http: aiohttp.ClientSession, admin: HomeserverAdmin, admin_token: str
) -> None:
    owner = await new_user(stack, http, "busy")
    status, doc = await owner.call("POST", "/_matrix/client/v3/createRoom", {"name": "busy"})
    assert status == 200, doc
    room_id = str(doc["room_id"])
    for n in range(5):
        await owner.send(room_id, {"msgtype": "m.text", "body": f"message {n}"})
    # A delete task started by someone else (or by our own attempt whose answer was lost).
    headers = {"Authorization": f"Bearer {admin_token}"}
    path = f"{stack.synapse.url}/_synapse/admin/v2/rooms/{quote(room_id)}"
    async with http.delete(path, json={"purge": True}, headers=headers) as resp:
        assert resp.status == 200, await resp.text()

    await asyncio.gather(admin.purge_room(room_id), admin.purge_room(room_id))

    status, doc = await admin_get(http, stack, admin_token, f"/_synapse/admin/v1/rooms/{room_id}")
    assert status == 404, doc


async def test_purge_room_refuses_a_malformed_room_id(admin: HomeserverAdmin) -> None:
    with pytest.raises(MatrixError) as refused:
        await admin.purge_room("not-a-room")
    assert refused.value.status == 400 and refused.value.permanent
    assert isinstance(refused.value, ExternalError)


# -- users ----------------------------------------------------------------------------------------


async def test_deactivate_a_user(
    stack: Stack, http: aiohttp.ClientSession, admin: HomeserverAdmin
) -> None:
    user = await new_user(stack, http, "leaving")
    assert await login(http, stack.synapse.url, user.mxid, PASSWORD) == 200

    await admin.deactivate(user.mxid)

    assert await login(http, stack.synapse.url, user.mxid, PASSWORD) == 403
    status, doc = await user.call("GET", "/_matrix/client/v3/account/whoami")
    assert (status, doc.get("errcode")) == (401, "M_UNKNOWN_TOKEN"), doc
    # Again (a retried job), and a user who never existed: both success.
    await admin.deactivate(user.mxid)
    await admin.deactivate(f"@neverexisted{secrets.token_hex(4)}:shop.example")
    # Another server's user cannot be deactivated here; retrying won't help.
    with pytest.raises(MatrixError) as refused:
        await admin.deactivate("@someone:other.example")
    assert refused.value.status == 400 and refused.value.permanent


async def test_deactivate_an_appservice_ghost(
    stack: Stack, http: aiohttp.ClientSession, admin: HomeserverAdmin, admin_token: str
) -> None:
    config = load_config(stack.config_path)
    localpart = f"{config.appservice.ghost_prefix}erase{secrets.token_hex(4)}"
    ghost_mxid = f"@{localpart}:{stack.synapse.server_name}"
    appservice = User(http, stack.synapse.url, config.bot_mxid, config.appservice.as_token)
    status, doc = await appservice.call(
        "POST",
        "/_matrix/client/v3/register",
        {"type": "m.login.application_service", "username": localpart},
    )
    assert status == 200, doc
    as_ghost = f"?user_id={quote(ghost_mxid)}"
    profile = f"/_matrix/client/v3/profile/{quote(ghost_mxid)}/displayname"
    status, doc = await appservice.call("PUT", profile + as_ghost, {"displayname": "Erika Muster"})
    assert status == 200, doc

    await admin.deactivate(ghost_mxid, erase=True)

    user_path = f"/_synapse/admin/v2/users/{quote(ghost_mxid)}"
    status, doc = await admin_get(http, stack, admin_token, user_path)
    assert status == 200, doc
    assert doc["deactivated"] is True and doc["appservice_id"] == config.appservice.id, doc
    assert doc["erased"] is True, doc
    # Erasing removed the profile: the customer's name is gone.
    status, doc = await appservice.call("GET", profile)
    assert status == 404 or not doc.get("displayname"), doc
    await admin.deactivate(ghost_mxid, erase=True)
