"""`hub ugc export DIR`: the photos customers agreed to share, with their proof, for the
shop's marketing.

Each approved image is written as `<request>-<image>.<ext>` beside `<request>-<image>.json`
(the proof: the text and its version, who asked, when and how the customer answered, the
image's SHA-256), and `index.json` lists them all. Only requests that are granted and not
withdrawn, images still kept, and files whose SHA-256 is still the one the customer agreed to
are exported. Exporting again into the same folder first removes what the previous export
wrote, so a photo withdrawn since is not left behind there.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import mimetypes
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hub.core.media import MediaStore
from hub.db.consent import ApprovedImage, approved_images
from hub.db.database import Database

INDEX = "index.json"


@dataclass
class ExportResult:
    exported: list[str] = field(default_factory=list)
    removed: int = 0  # files of the previous export
    problems: list[str] = field(default_factory=list)


def proof(item: ApprovedImage) -> dict[str, Any]:
    request, image, message = item.request, item.image, item.message

    def at(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "request_id": request.id,
        "image_id": image.id,
        "sha256": image.sha256,
        "filename": item.media.filename,
        "mimetype": item.media.mimetype,
        "customer": {"channel": item.channel, "name": item.customer_name},
        "photo_received_at": at(message.created_at),
        "consent": {
            "text": request.text,
            "text_version": request.text_version,
            "requested_by": request.requested_by,
            "requested_at": at(request.requested_at),
            "answer": "yes",
            "answered_at": at(request.answered_at),
            "answer_message_id": request.answer_message_id,
            "answer_channel_message_id": request.answer_remote_id,
            "answered_late": request.answer_late,
        },
    }


def _previous(out: Path) -> list[str]:
    index = out / INDEX
    if not index.exists():
        return []
    try:
        entries = json.loads(index.read_text(encoding="utf-8"))
    except ValueError:
        return []
    names: list[str] = []
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict):
            names += [str(entry.get(k)) for k in ("file", "proof") if entry.get(k)]
    return names


async def export_approved(db: Database, store: MediaStore, out: Path) -> ExportResult:
    found: list[tuple[ApprovedImage, bytes | None]] = []
    for item in await db.read(approved_images):
        try:
            found.append((item, await store.read(item.media.id)))
        except FileNotFoundError:
            found.append((item, None))
    return await asyncio.to_thread(_write, out, found)


def _write(out: Path, found: list[tuple[ApprovedImage, bytes | None]]) -> ExportResult:
    result = ExportResult()
    out.mkdir(parents=True, exist_ok=True)
    for name in _previous(out):
        # Names from our own index only, never a path out of the folder.
        target = out / Path(name).name
        if target.exists():
            target.unlink()
            result.removed += 1
    index = []
    for item, data in found:
        stem = f"{item.request.id}-{item.image.id}"
        if data is None:
            result.problems.append(f"{stem}: the hub's copy of the file is missing")
            continue
        if hashlib.sha256(data).hexdigest() != item.image.sha256:
            result.problems.append(f"{stem}: the file is not the one the customer agreed to")
            continue
        ext = mimetypes.guess_extension(item.media.mimetype) or Path(item.media.filename).suffix
        file_name, proof_name = f"{stem}{ext or ''}", f"{stem}.json"
        (out / file_name).write_bytes(data)
        record = proof(item)
        (out / proof_name).write_text(
            json.dumps(record, ensure_ascii=False, indent=2), encoding="utf-8"
        )
        index.append({"file": file_name, "proof": proof_name, **record})
        result.exported.append(file_name)
    (out / INDEX).write_text(json.dumps(index, ensure_ascii=False, indent=2), encoding="utf-8")
    return result
