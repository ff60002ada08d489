"""Portable INSERT ... ON CONFLICT DO NOTHING (SQLite and PostgreSQL)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession


def dialect_insert(dialect: str) -> Callable[..., Any]:
    """The dialect's INSERT (with ON CONFLICT) for "postgresql", else SQLite's. Its module is
    imported by name when first asked for: PostgreSQL's costs a SQLite hub ≈2 MiB resident."""
    name = "postgresql" if dialect == "postgresql" else "sqlite"
    module = importlib.import_module(f"sqlalchemy.dialects.{name}")
    return module.insert  # type: ignore[no-any-return]


async def insert_ignore(
    session: AsyncSession, model: type[Any], values: dict[str, Any], conflict: list[str]
) -> bool:
    """Insert a row unless one with the same `conflict` columns exists; True if inserted."""
    dialect = session.bind.dialect.name if session.bind else "sqlite"
    insert = dialect_insert(dialect)
    stmt = insert(model).values(**values).on_conflict_do_nothing(index_elements=conflict)
    result = await session.execute(stmt)
    return bool(result.rowcount)  # type: ignore[attr-defined]
