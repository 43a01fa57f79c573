"""Every value a webhook brings into a bounded column of the gateway tables fits it before the
claim (one refused value would fail the claim of its whole batch)."""

from __future__ import annotations

import uuid

from sqlalchemy import String

from gateway import repository as repo
from gateway.models import ArchivedWebhook, DedupEntry, SpooledEvent


def test_every_bounded_column_is_known() -> None:
    """A new bounded column must be fitted too: this lists the ones that are."""
    bounded = {
        (table.name, column.name)  # type: ignore[attr-defined]
        for table in (ArchivedWebhook.__table__, SpooledEvent.__table__, DedupEntry.__table__)
        for column in table.columns
        if isinstance(column.type, String) and column.type.length is not None
    }
    assert bounded == {
        ("gateway_archive", "platform"),  # a key of the verifier registry
        ("gateway_archive", "account_id"),  # fitted (the channel API bounds it as well)
        ("gateway_archive", "content_type"),  # fitted: the request's header
        ("gateway_spool", "platform"),  # a key of the verifier registry
        ("gateway_spool", "topic"),  # the gateway's own inbound topic
        ("gateway_spool", "traceparent"),  # telemetry.outgoing(): version 00, 55 characters
    }


def test_an_over_long_content_type_keeps_its_media_type() -> None:
    long = "application/json; x=" + "a" * 300
    row = repo.archive_row(
        channel_id=uuid.uuid4(),
        platform="telegram",
        account_id="1" * 500,
        content_type=long,
        headers={"url": "http://h/x\x00y", "x-sig\x00": "a\x00b"},
        body=b"{}",
        event_count=1,
    )
    assert row.content_type == "application/json"
    assert len(row.account_id) == repo.ACCOUNT_ID_MAX == 200
    assert all("\x00" not in k + v for k, v in row.headers.items())
    assert row.headers["url"] == "http://h/x\ufffdy"


def test_a_content_type_that_fits_is_kept_verbatim() -> None:
    exact = "application/x-www-form-urlencoded; charset=" + "u" * (repo.CONTENT_TYPE_MAX - 43)
    assert len(exact) == repo.CONTENT_TYPE_MAX
    assert repo.fit_content_type(exact) == exact
    assert repo.fit_content_type(exact + "8") == "application/x-www-form-urlencoded"
    assert repo.fit_content_type(None) is None
