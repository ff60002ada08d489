"""A job as its handler sees it, and how handlers declare what they handle.

A handler is an async method decorated with `@handles(kind)`. It does its I/O first and
returns None or a `Finish`: the database writes to apply in the same transaction that
marks the job done (so no transaction is held across network I/O). It fails with
`RetryLater`, `PermanentFailure` or an ExternalError (hub.errors); anything else is an
internal error, logged with its traceback and retried.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from hub.db.database import Tx


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    ordering_key: str
    payload: dict[str, Any]
    attempts: int  # attempts made before this one
    # What the queuing transaction (or the one that leased it) knew that the handler would
    # otherwise read back; None when the job was claimed. Handlers check its type.
    context: Any = field(default=None, compare=False, repr=False)


# The handler's writes, in the transaction that marks its job done.
Finish = Callable[["Tx"], None]
Handler = Callable[[Job], Awaitable[Finish | None]]
# Called once a job is dead-lettered: (job, human reason, machine code or None).
DeadHandler = Callable[[Job, str, str | None], Awaitable[None]]
# (connection, payload) -> a job's context, read in the transaction that leases it.
Preload = Callable[["Connection", dict[str, Any]], Any]


class RetryLater(Exception):
    """A temporary failure; `delay` (seconds) overrides the backoff, e.g. from retry_after."""

    def __init__(self, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.delay = delay


class PermanentFailure(Exception):
    """Retrying cannot help; the job is dead-lettered and its dead handler tells a human.
    `code` lets the dead handler react to specific failures (e.g. "blocked")."""

    def __init__(self, reason: str, code: str | None = None) -> None:
        super().__init__(reason)
        self.code = code


@dataclass(frozen=True)
class HandlerSpec:
    kind: str
    on_dead: str | None  # the name of the object's dead-letter method
    preload: Preload | None


def handles(
    kind: str, *, on_dead: str | None = None, preload: Preload | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a method as the handler of a job kind. `on_dead` names a method called when a
    job of this kind is dead-lettered; `preload(conn, payload)` reads what the handler needs
    in the transaction that leases the job (one read transaction less per job of a busy
    conversation)."""

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.__job_handler__ = HandlerSpec(kind, on_dead, preload)  # type: ignore[attr-defined]
        return fn

    return mark


def handlers_of(obj: object) -> list[tuple[HandlerSpec, Handler, DeadHandler | None]]:
    """The handlers an object declares with @handles, bound to it."""
    found = []
    for name in dir(type(obj)):
        spec = getattr(getattr(type(obj), name), "__job_handler__", None)
        if isinstance(spec, HandlerSpec):
            dead = getattr(obj, spec.on_dead) if spec.on_dead else None
            found.append((spec, getattr(obj, name), dead))
    return found
