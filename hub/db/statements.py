"""Named SQL statements of the units of work, and how they are run.

A unit of work module declares its statements at the top, one small builder each:

    @statement
    def _message_by_remote(dialect: str) -> Executable:
        return select(M).where(M.c.channel == bindparam("channel"), ...)

and runs them with `run(tx, _message_by_remote, {"channel": ..., ...})`. A statement is built
once per dialect; on SQLite it is also compiled once and handed straight to the driver
(hub.db.sqlite). INSERTs take their column list from the parameters (`insert=True`).
Rows come back as tuples; `model(cls, values)` makes a detached model object of a row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, overload

from sqlalchemy.engine import Connection
from sqlalchemy.exc import MultipleResultsFound, NoResultFound
from sqlalchemy.orm import configure_mappers
from sqlalchemy.sql import Executable

from hub.db.sqlite import execute_prepared, prepare

if TYPE_CHECKING:
    from hub.db.database import Tx

ModelT = TypeVar("ModelT")


class Statement:
    """One named statement; `for_dialect` builds it once per dialect name."""

    __slots__ = ("_build", "_built", "insert", "name")

    def __init__(self, build: Builder, insert: bool) -> None:
        self._build = build
        self._built: dict[str, Executable] = {}
        self.insert = insert
        self.name = build.__name__.lstrip("_")

    def for_dialect(self, dialect: str) -> Executable:
        built = self._built.get(dialect)
        if built is None:
            built = self._built[dialect] = self._build(dialect)
        return built

    def __repr__(self) -> str:
        return f"<statement {self.name}>"


Builder = Callable[[str], Any]  # dialect name -> the statement


@overload
def statement(build: Builder) -> Statement: ...


@overload
def statement(*, insert: bool) -> Callable[[Builder], Statement]: ...


def statement(
    build: Builder | None = None, *, insert: bool = False
) -> Statement | Callable[[Builder], Statement]:
    """Declare a statement (a decorator, with or without `insert=True`)."""
    if build is None:
        return lambda fn: Statement(fn, insert)
    return Statement(build, insert)


class Rows:
    """The part of SQLAlchemy's Result the units use, over fetched rows."""

    __slots__ = ("rowcount", "rows")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self.rows, self.rowcount = rows, rowcount

    def first(self) -> Any:
        return self.rows[0] if self.rows else None

    def one(self) -> Any:
        if len(self.rows) != 1:
            raise NoResultFound() if not self.rows else MultipleResultsFound()
        return self.rows[0]

    def scalar(self) -> Any:
        return self.rows[0][0] if self.rows else None

    def all(self) -> list[Any]:
        return self.rows

    def scalars(self) -> list[Any]:
        return [r[0] for r in self.rows]


def run(tx: Tx | Connection, stmt: Statement, params: Mapping[str, Any] | None = None) -> Rows:
    """Execute a statement in the unit of work's transaction."""
    conn = tx if isinstance(tx, Connection) else tx.conn
    dialect = conn.dialect
    built = stmt.for_dialect(dialect.name)
    if dialect.driver == "pysqlite":  # hub.db.sqlite's own thread
        keys = tuple(params) if stmt.insert and params else ()
        prep = prepare(built, keys, dialect)
        if prep is not None:
            return Rows(*execute_prepared(conn, prep, params or {}))
    result = conn.execute(built, dict(params) if params is not None else None)
    rows = list(result) if result.returns_rows else []
    return Rows(rows, result.rowcount)


_mappers_ready = False


def model(cls: type[ModelT], values: Mapping[str, Any]) -> ModelT:
    """A detached model object holding a row, built the way the ORM loads one (no
    instrumented __init__, ~15x cheaper); assigning attributes afterwards works as usual."""
    global _mappers_ready
    if not _mappers_ready:  # the models must be set up before new_instance
        configure_mappers()
        _mappers_ready = True
    obj: ModelT = cls.__mapper__.class_manager.new_instance()  # type: ignore[attr-defined]
    obj.__dict__.update(values)
    return obj


def split(row: Any, *tables: Any) -> list[dict[str, Any]]:
    """A joined row's columns per table (in select order)."""
    values, out, at = tuple(row), [], 0
    for table in tables:
        keys = table.columns.keys()
        out.append(dict(zip(keys, values[at : at + len(keys)], strict=True)))
        at += len(keys)
    if at != len(values):
        raise ValueError(f"row of {len(values)} columns, tables of {at}")
    return out
