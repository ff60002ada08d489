"""Loading a catalogue file into the database (CLI `hub catalog import`, and at start)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from hub.commerce.catalogue import Product
from hub.commerce.catalogue_files import load_catalogue
from hub.config import Config
from hub.db import commerce
from hub.db.database import Database


def read_catalogue(config: Config, path: Path) -> list[Product]:
    """Parse and validate the whole file first: a bad file changes nothing (CatalogueError)."""
    return load_catalogue(
        path, config.shop.currency, default_vat_rate=config.commerce.default_vat_rate
    )


async def store_catalogue(db: Database, products: list[Product], progress: bool = False) -> int:
    """Replace the catalogue in one transaction, with a progress bar for large files."""
    if progress and len(products) > 1000:
        _bar(0, len(products))
    count = await db.write(commerce.replace_catalogue, products)
    if progress and len(products) > 1000:
        _bar(len(products), len(products))
        print(file=sys.stderr)
    return count


def _bar(done: int, total: int) -> None:
    width = 30
    filled = width * done // max(total, 1)
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} products")
    sys.stderr.flush()


async def load_configured_catalogue(config: Config, db: Database) -> int | None:
    """commerce.catalogue_file at start; None when no file is configured."""
    if config.commerce.catalogue_file is None:
        return None
    path = config.commerce.catalogue_file
    path = path if path.is_absolute() else config.data_dir / path
    products = await asyncio.to_thread(read_catalogue, config, path)
    return await store_catalogue(db, products)
