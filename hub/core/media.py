"""Files kept by the hub (widget uploads; adviser media fetched for a channel), on disk."""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import os
import secrets
import unicodedata
from dataclasses import dataclass
from pathlib import Path

_MAGIC: dict[str, tuple[bytes, ...]] = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),
}


def safe_filename(name: str | None, mimetype: str) -> str:
    """A filename that is safe in a URL path and a Content-Disposition header."""
    base = unicodedata.normalize("NFC", os.path.basename(name or "").strip())
    base = "".join(c for c in base if c.isprintable() and c not in '/\\"\r\n')[:120]
    if not base or base.startswith("."):
        base = "file" + (mimetypes.guess_extension(mimetype) or "")
    return base


def image_type(data: bytes) -> str | None:
    """The image MIME type proven by the file's first bytes (never trust the client's)."""
    for mimetype, magics in _MAGIC.items():
        if any(data.startswith(m) for m in magics):
            if mimetype == "image/webp" and data[8:12] != b"WEBP":
                continue
            return mimetype
    return None


@dataclass(frozen=True)
class StoredFile:
    """A file written to the hub's store; its row is written by the unit of work that uses
    it (hub.db.media.record_file, or with a widget upload's message)."""

    media_id: str
    filename: str
    mimetype: str
    size: int
    sha256: str


class MediaStore:
    """The bytes, on disk under media_dir (never in the database)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, media_id: str) -> Path:
        return self.root / media_id[:2] / media_id

    async def write(self, data: bytes, filename: str, mimetype: str) -> StoredFile:
        """Write the file atomically under a new unguessable id."""
        media_id = secrets.token_urlsafe(18)
        await asyncio.to_thread(self._write, self.path(media_id), data)
        return StoredFile(media_id, filename, mimetype, len(data), hashlib.sha256(data).hexdigest())

    async def read(self, media_id: str) -> bytes:
        return await asyncio.to_thread(self.path(media_id).read_bytes)

    async def delete(self, media_id: str) -> bool:
        """Remove a file (refused photos, erased customers); False if it was gone already."""
        path = self.path(media_id)

        def remove() -> bool:
            try:
                path.unlink()
            except FileNotFoundError:
                return False
            return True

        return await asyncio.to_thread(remove)

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        tmp.write_bytes(data)
        os.replace(tmp, path)
