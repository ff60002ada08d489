"""Files in encrypted rooms (Matrix "sending encrypted attachments"): encrypted before the
upload, the key travelling inside the encrypted event; and decrypted after the download of
an adviser's file."""

from __future__ import annotations

from typing import Any

from nio.crypto.attachments import decrypt_attachment, encrypt_attachment
from nio.exceptions import EncryptionError

from hub.errors import ExternalError
from hub.i18n import _
from hub.matrix.client import MatrixClient
from hub.matrix.crypto.machine import CryptoMachine


class EncryptedUploads:
    def __init__(self, matrix: MatrixClient, machine: CryptoMachine) -> None:
        self.matrix = matrix
        self.machine = machine

    async def room_encrypted(self, room_id: str) -> bool:
        return await self.machine.room_encrypted(room_id)

    async def upload(self, data: bytes, *, as_user: str | None = None) -> dict[str, Any]:
        """Encrypt and upload `data`; the `file` object of the event's content."""
        ciphertext, keys = encrypt_attachment(data)
        mxc = await self.matrix.upload(ciphertext, "application/octet-stream", "", as_user=as_user)
        return {"url": mxc, **keys}


def decrypt_file(ciphertext: bytes, file: dict[str, Any]) -> bytes:
    """The plaintext of an encrypted attachment (its hash and key checked); a broken or
    forged file is a permanent error: the same bytes will never decrypt."""
    try:
        return bytes(
            decrypt_attachment(ciphertext, file["key"]["k"], file["hashes"]["sha256"], file["iv"])
        )
    except (EncryptionError, KeyError, TypeError, ValueError) as exc:
        raise ExternalError(
            _("the encrypted file could not be decrypted"), permanent=True, detail=str(exc)
        ) from exc
