"""The embedded PostgreSQL never touches a live server's lock file, starts once, keeps its log
private. A second start on the same data directory used to delete the running server's
postmaster.pid, and PostgreSQL then shut itself down a minute later."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from infra.embedded import EmbeddedPostgres, EmbeddedPostgresRunning, live_postmaster_pid

pytestmark = pytest.mark.integration


def _ready(pg: EmbeddedPostgres) -> bool:
    probe = subprocess.run(
        [pg._bin("pg_isready"), "-h", "127.0.0.1", "-p", str(pg.port)],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


def test_a_second_server_on_a_live_data_dir_is_refused_and_the_first_keeps_its_lock(
    tmp_path: Path,
) -> None:
    with EmbeddedPostgres(tmp_path / "pg") as first:
        lock = tmp_path / "pg" / "pgdata" / "postmaster.pid"
        before = lock.read_text()
        with pytest.raises(EmbeddedPostgresRunning) as refused:
            EmbeddedPostgres(tmp_path / "pg").start()
        assert refused.value.pid == first.pid
        assert lock.read_text() == before
        assert _ready(first)


def test_start_twice_on_one_object_is_a_no_op(tmp_path: Path) -> None:
    pg = EmbeddedPostgres(tmp_path / "pg").start()
    try:
        pid = pg.pid
        with pg:  # bench/outbox.py used to start() and then enter the context manager
            assert pg.pid == pid
            assert _ready(pg)
    finally:
        pg.stop()


def test_a_stale_lock_from_a_dead_server_is_replaced(tmp_path: Path) -> None:
    with EmbeddedPostgres(tmp_path / "pg"):
        pass
    lock = tmp_path / "pg" / "pgdata" / "postmaster.pid"
    lock.write_text(f"{os.getpid()}\n")  # alive, but not PostgreSQL: a recycled pid
    if os.geteuid() == 0:
        os.chown(lock, *_owner(tmp_path / "pg" / "pgdata"))
    assert live_postmaster_pid(lock.parent) is None
    with EmbeddedPostgres(tmp_path / "pg") as pg:
        assert _ready(pg)


def test_the_server_log_is_private(tmp_path: Path) -> None:
    log = tmp_path / "pg" / "postgres.log"
    log.parent.mkdir()
    log.touch(mode=0o644)
    log.chmod(0o644)
    with EmbeddedPostgres(tmp_path / "pg"):
        assert stat.S_IMODE(log.stat().st_mode) == 0o600


def _owner(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_uid, info.st_gid
