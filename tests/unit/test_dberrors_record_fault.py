"""``infra.dberrors.data_error`` and ``record_fault``: telling a record's own fault (never worth
retrying) from a failure worth retrying."""

from __future__ import annotations

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.exc import DBAPIError, OperationalError

from infra.dberrors import DATA_EXCEPTION, INTEGRITY_VIOLATION, data_error, record_fault


class _AdaptedError(Exception):
    """What SQLAlchemy's asyncpg adapter puts in ``DBAPIError.orig``: it carries the SQLSTATE."""

    def __init__(self, sqlstate: str | None) -> None:
        super().__init__("db error")
        self.sqlstate = sqlstate


def test_data_errors_are_told_from_failures_worth_retrying() -> None:
    too_long = DBAPIError("INSERT …", None, _AdaptedError("22001"))
    assert data_error(too_long) == "22001"
    assert data_error(DBAPIError("INSERT …", None, _AdaptedError("22P05"))) == "22P05"
    # the asyncpg exception itself, as the cause of a wrapper
    wrapped = DBAPIError("INSERT …", None, _AdaptedError(None))
    wrapped.__cause__ = asyncpg.exceptions.StringDataRightTruncationError("value too long")
    assert data_error(wrapped) == "22001"
    # not the record's fault: retried
    assert data_error(OperationalError("SELECT 1", None, _AdaptedError("57P01"))) is None
    assert data_error(DBAPIError("INSERT …", None, _AdaptedError("40001"))) is None
    assert data_error(DBAPIError("INSERT …", None, _AdaptedError(None))) is None
    assert data_error(ConnectionResetError()) is None


def test_record_faults_are_data_errors_and_values_our_code_cannot_handle() -> None:
    assert record_fault(DBAPIError("INSERT …", None, _AdaptedError("22021")))
    assert record_fault(ValueError("year 0 is out of range"))
    assert record_fault(KeyError("k"))
    assert record_fault(OverflowError())
    # the database or the network: the batch is retried
    assert not record_fault(OperationalError("SELECT 1", None, _AdaptedError("57P01")))
    assert not record_fault(DBAPIError("INSERT …", None, _AdaptedError("40001")))
    assert not record_fault(ConnectionResetError())
    assert not record_fault(TimeoutError())
    assert not record_fault(RuntimeError("unknown"))


def test_integrity_violations_are_a_records_fault_only_for_consumers_that_ask() -> None:
    foreign_key = DBAPIError("INSERT …", None, _AdaptedError("23503"))
    assert data_error(foreign_key) is None
    assert data_error(foreign_key, (DATA_EXCEPTION, INTEGRITY_VIOLATION)) == "23503"
    too_long = DBAPIError("INSERT …", None, _AdaptedError("22001"))
    assert data_error(too_long, (DATA_EXCEPTION, INTEGRITY_VIOLATION)) == "22001"
    deadlock = DBAPIError("UPDATE …", None, _AdaptedError("40P01"))
    assert data_error(deadlock, (DATA_EXCEPTION, INTEGRITY_VIOLATION)) is None
