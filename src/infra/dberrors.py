"""What a database exception means, decided once for every caller.

The same PostgreSQL condition reaches us in several shapes: raised by asyncpg itself (the
gateway's own pool), wrapped by SQLAlchemy's asyncpg dialect (``DBAPIError`` whose ``orig``
is the dialect's adapted error, ``__cause__`` the asyncpg one), or as a plain ``OSError`` /
``TimeoutError`` from the socket or a deadline. ``classify`` looks through the wrapping and
answers with one of three kinds:

* ``UNAVAILABLE``: the database cannot take the statement right now, through no fault of it:
  connection refused, reset or closed, a timeout (ours or ``statement_timeout``), the server
  starting up (SQLSTATE 57P03), shutting down (57P01, 57P02), out of connections or resources
  (class 53), any connection exception (class 08), the pool's checkout timeout.
* ``RETRYABLE``: a deadlock (40P01) or serialization failure (40001): run it again.
* ``FAULT``: the database answered and refused the statement (a constraint, a value, a bug).

``DATABASE_ERRORS`` is what callers catch (every shape above); ``classify`` returns ``None``
for anything else. Callers decide what a kind means for them (the gateway: 503 or the
no-dedup path; the outbox: try again next round), not what the kind is.

A consumer asks one more question of a ``FAULT``: is it the record's own fault (``data_error``,
``record_fault``: a value PostgreSQL cannot store), so that retrying the record would block its
partition forever?
"""

from __future__ import annotations

import enum

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import exc as sa_exc

DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    sa_exc.SQLAlchemyError,
)


class DbErrorKind(enum.Enum):
    UNAVAILABLE = "unavailable"
    RETRYABLE = "retryable"
    FAULT = "fault"


UNAVAILABLE = DbErrorKind.UNAVAILABLE
RETRYABLE = DbErrorKind.RETRYABLE
FAULT = DbErrorKind.FAULT

_UNAVAILABLE_CLASSES = ("08", "53")
_UNAVAILABLE_STATES = frozenset({"57P01", "57P02", "57P03", "57014"})
_RETRYABLE_STATES = frozenset({"40001", "40P01"})
_UNAVAILABLE_TYPES: tuple[type[BaseException], ...] = (
    OSError,  # ConnectionRefusedError, ConnectionResetError, …
    TimeoutError,
    asyncpg.InterfaceError,  # the connection is closed or unusable
    sa_exc.TimeoutError,  # the pool's checkout timeout
    sa_exc.DisconnectionError,
)


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps (``orig``, ``__cause__``, ``__context__``), outermost first."""
    seen: list[BaseException] = []
    pending: list[BaseException | None] = [exc]
    while pending and len(seen) < 16:
        current = pending.pop(0)
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        orig = getattr(current, "orig", None)
        wrapped = orig if isinstance(orig, BaseException) else None
        pending.extend((wrapped, current.__cause__, current.__context__))
    return seen


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE PostgreSQL gave, wherever it sits in the wrapping; ``None`` if none."""
    for link in _chain(exc):
        state = getattr(link, "sqlstate", None)
        if isinstance(state, str) and len(state) == 5:
            return state
    return None


def classify(exc: BaseException) -> DbErrorKind | None:
    """The kind of a database error (see the module docstring); ``None`` if it is none."""
    if not isinstance(exc, DATABASE_ERRORS):
        return None
    state = sqlstate(exc)
    if state is not None:
        if state in _RETRYABLE_STATES:
            return RETRYABLE
        if state in _UNAVAILABLE_STATES or state[:2] in _UNAVAILABLE_CLASSES:
            return UNAVAILABLE
        return FAULT
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return UNAVAILABLE
    if any(isinstance(link, _UNAVAILABLE_TYPES) for link in _chain(exc)):
        return UNAVAILABLE
    return FAULT


def kind_name(exc: BaseException) -> str:
    """The kind as a log value: ``unavailable``, ``retryable``, ``fault`` or ``other``."""
    kind = classify(exc)
    return kind.value if kind is not None else "other"


def is_unavailable(exc: BaseException) -> bool:
    """The database is down, unreachable, not answering in time, starting or stopping."""
    return classify(exc) is UNAVAILABLE


def is_retryable(exc: BaseException) -> bool:
    """A deadlock or serialization failure: the same statement may succeed if run again."""
    return classify(exc) is RETRYABLE


DATA_EXCEPTION = "22"
"""SQLSTATE class of a value PostgreSQL cannot store (too long for its column, a character the
encoding cannot hold, a number out of range)."""
INTEGRITY_VIOLATION = "23"
"""SQLSTATE class of a row a constraint refuses (a foreign key, a check, a unique key)."""


def data_error(exc: BaseException, classes: tuple[str, ...] = (DATA_EXCEPTION,)) -> str | None:
    """The SQLSTATE when PostgreSQL refused the statement for the values a record brought
    (by default a data exception, class 22; a consumer whose records can break a constraint
    passes ``INTEGRITY_VIOLATION`` too): retrying that record can never succeed, so a consumer
    skips or dead-letters it instead of blocking its partition. None for anything else
    (connection lost, lock timeout, …), which is worth retrying. Only the SQLSTATE is reported:
    the error message may quote the value."""
    state = sqlstate(exc)
    return state if state is not None and state[:2] in classes else None


def record_fault(exc: BaseException) -> bool:
    """Whether ``exc`` is the record's own fault (it would fail the same way on every retry):
    a PostgreSQL data exception, or a value our code cannot handle. Not the database being
    away, a lock timeout, …: those fail the batch, which is retried."""
    if data_error(exc) is not None:
        return True
    if isinstance(exc, DATABASE_ERRORS):
        return False
    return isinstance(exc, ValueError | TypeError | LookupError | ArithmeticError)
