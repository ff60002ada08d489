"""Portable INSERT ... ON CONFLICT DO NOTHING (SQLite and PostgreSQL)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hub.db.database import Tx


def dialect_insert(dialect: str) -> Callable[..., Any]:
    """The dialect's INSERT (with ON CONFLICT) for "postgresql", else SQLite's. Its module is
    imported by name when first asked for: PostgreSQL's costs a SQLite hub ≈2 MiB resident."""
    name = "postgresql" if dialect == "postgresql" else "sqlite"
    module = importlib.import_module(f"sqlalchemy.dialects.{name}")
    return module.insert  # type: ignore[no-any-return]


def insert_ignore(tx: Tx, model: type[Any], values: dict[str, Any], conflict: list[str]) -> bool:
    """Insert a row unless one with the same `conflict` columns exists; True if inserted."""
    insert = dialect_insert(tx.conn.dialect.name)
    stmt = insert(model).values(**values).on_conflict_do_nothing(index_elements=conflict)
    if tx.orm_active:
        tx.orm.flush()
    return bool(tx.conn.execute(stmt).rowcount)
