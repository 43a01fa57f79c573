"""``infra.dberrors``: one classification of database errors, whatever wraps them."""

from __future__ import annotations

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi

from infra.dberrors import (
    FAULT,
    RETRYABLE,
    UNAVAILABLE,
    DbErrorKind,
    classify,
    kind_name,
    sqlstate,
)


def wrapped_by_sqlalchemy(error: Exception) -> sa_exc.DBAPIError:
    """``error`` as SQLAlchemy's asyncpg dialect raises it (adapted, then ``DBAPIError``)."""
    adapted = AsyncAdapt_asyncpg_dbapi.Error(str(error), error)  # type: ignore[no-untyped-call]
    try:
        try:
            raise adapted from error
        except AsyncAdapt_asyncpg_dbapi.Error as inner:
            raise sa_exc.DBAPIError.instance(
                "SELECT 1", {}, inner, AsyncAdapt_asyncpg_dbapi.Error
            ) from inner
    except sa_exc.DBAPIError as outer:
        return outer


CASES: list[tuple[str, BaseException, DbErrorKind | None]] = [
    (
        "starting up",
        asyncpg.CannotConnectNowError("the database system is starting up"),
        UNAVAILABLE,
    ),
    ("admin shutdown", asyncpg.AdminShutdownError("terminating connection"), UNAVAILABLE),
    ("too many connections", asyncpg.TooManyConnectionsError("too many"), UNAVAILABLE),
    ("connection gone", asyncpg.ConnectionDoesNotExistError("closed"), UNAVAILABLE),
    ("statement timeout", asyncpg.QueryCanceledError("canceling statement"), UNAVAILABLE),
    ("interface", asyncpg.InterfaceError("connection is closed"), UNAVAILABLE),
    ("refused", ConnectionRefusedError(111, "refused"), UNAVAILABLE),
    ("reset", ConnectionResetError(104, "reset"), UNAVAILABLE),
    ("timeout", TimeoutError(), UNAVAILABLE),
    ("pool checkout", sa_exc.TimeoutError("QueuePool limit"), UNAVAILABLE),
    ("deadlock", asyncpg.DeadlockDetectedError("deadlock"), RETRYABLE),
    ("serialization", asyncpg.SerializationError("could not serialize"), RETRYABLE),
    ("truncation", asyncpg.StringDataRightTruncationError("value too long"), FAULT),
    ("unique", asyncpg.UniqueViolationError("duplicate key"), FAULT),
    ("undefined table", asyncpg.UndefinedTableError("no such table"), FAULT),
    ("not a database error", ValueError("x"), None),
    ("a broker error", KeyError("x"), None),
]


@pytest.mark.parametrize(("name", "error", "kind"), CASES, ids=[c[0] for c in CASES])
def test_raw_errors(name: str, error: BaseException, kind: DbErrorKind | None) -> None:
    assert classify(error) is kind


@pytest.mark.parametrize(
    ("name", "error", "kind"),
    [c for c in CASES if isinstance(c[1], asyncpg.PostgresError | asyncpg.InterfaceError)],
    ids=[c[0] for c in CASES if isinstance(c[1], asyncpg.PostgresError | asyncpg.InterfaceError)],
)
def test_the_same_errors_wrapped_by_sqlalchemy(
    name: str, error: Exception, kind: DbErrorKind
) -> None:
    wrapped = wrapped_by_sqlalchemy(error)
    assert isinstance(wrapped, sa_exc.DBAPIError)
    assert classify(wrapped) is kind


def test_sqlstate_is_found_through_the_wrapping() -> None:
    wrapped = wrapped_by_sqlalchemy(asyncpg.CannotConnectNowError("starting up"))
    assert sqlstate(wrapped) == "57P03"
    assert sqlstate(ValueError()) is None


def test_an_invalidated_connection_is_unavailable() -> None:
    wrapped = sa_exc.DBAPIError("SELECT 1", {}, Exception("gone"), connection_invalidated=True)
    assert classify(wrapped) is UNAVAILABLE


def test_kind_name_for_logs() -> None:
    assert kind_name(TimeoutError()) == "unavailable"
    assert kind_name(ValueError()) == "other"
