"""Which database errors are a record's own fault (never worth retrying) and which are not.

A consumer that retries a record forever blocks its partition, so a value PostgreSQL refuses
(a data exception, SQLSTATE class 22) must be told from the database being away, a lock
timeout, … (worth retrying). The SQLSTATE alone is reported: the error message may quote the
value.
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

__all__ = ["data_error", "record_fault"]


def data_error(exc: BaseException) -> str | None:
    """The SQLSTATE when ``exc`` is a PostgreSQL data exception (class 22: a value too long for
    its column, a character the encoding cannot hold, …): the record's own values cannot be
    stored, so retrying it can never succeed. None for anything else (connection lost, lock
    timeout, …), which is worth retrying."""
    cause: BaseException | None = exc
    while cause is not None:
        state = getattr(cause.orig, "sqlstate", None) if isinstance(cause, DBAPIError) else None
        state = state or getattr(cause, "sqlstate", None)
        if isinstance(state, str):
            return state if state.startswith("22") else None
        cause = cause.__cause__
    return None


def record_fault(exc: BaseException) -> bool:
    """Whether ``exc`` is the record's own fault (it would fail the same way on every retry):
    a PostgreSQL data error, or a value our code cannot handle. Not the database being away,
    a lock timeout, …: those fail the batch, which is retried."""
    if data_error(exc) is not None:
        return True
    if isinstance(exc, SQLAlchemyError | OSError | TimeoutError):
        return False
    return isinstance(exc, ValueError | TypeError | LookupError | ArithmeticError)
