"""`switchboard dev` as a user runs it: ready in 60 s; Ctrl-C or SIGTERM leave nothing behind;
one per data directory; a stack whose database died exits; the same on Apache Kafka."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

pytestmark = pytest.mark.integration


def _start(
    data_dir: Path, *args: str, timeout: float = 60
) -> tuple[subprocess.Popen[str], dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")} | {
        "SWITCHBOARD_HTTP_PORT": "0",
        "SWITCHBOARD_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "switchboard", "dev", "--data-dir", str(data_dir), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    found: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline and "admin api key" not in found:
        line = proc.stdout.readline()
        if not line:
            break
        if match := re.match(r"^(api|kafka|kafka broker \d+|admin api key): (.+)$", line.strip()):
            found[match.group(1)] = match.group(2)
    return proc, found


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_dev_serves_then_stops_everything(tmp_path: Path, stop_signal: signal.Signals) -> None:
    proc, found = _start(tmp_path / "data")
    children: list[psutil.Process] = []
    try:
        assert {"api", "kafka", "admin api key"} <= found.keys(), found
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", found["api"])
        assert re.fullmatch(r"127\.0\.0\.1:\d+", found["kafka"])
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 2, "embedded PostgreSQL and broker run as children"

        ready = httpx.get(f"{found['api']}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        listed = httpx.get(
            f"{found['api']}/v1/channels",
            headers={"Authorization": f"Bearer {found['admin api key']}"},
            timeout=10,
        )
        assert listed.status_code == 200
        assert listed.json() == []
    finally:
        proc.send_signal(stop_signal)
        try:
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
            if proc.stdout is not None:
                proc.stdout.close()
    assert proc.returncode in (0, 130, 143)
    _, alive = psutil.wait_procs(children, timeout=1)
    assert alive == [], f"left behind: {[p.pid for p in alive]}"


def test_a_second_dev_on_the_same_data_dir_refuses_and_the_first_keeps_running(
    tmp_path: Path,
) -> None:
    """It used to delete the running server's postmaster.pid: PostgreSQL then shut itself down
    a minute later ("data directory lock file is invalid")."""
    first, found = _start(tmp_path / "data")
    try:
        assert "api" in found, found
        pg_lock = tmp_path / "data" / "postgres" / "pgdata" / "postmaster.pid"
        lock_before = pg_lock.read_text()

        second = subprocess.run(
            [sys.executable, "-m", "switchboard", "dev", "--data-dir", str(tmp_path / "data")],
            capture_output=True,
            text=True,
            timeout=60,
            env={k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")},
        )
        assert second.returncode == 1, second.stdout + second.stderr
        assert f"already running on {tmp_path / 'data'} (pid {first.pid})" in second.stderr
        assert pg_lock.read_text() == lock_before
        assert httpx.get(f"{found['api']}/readyz", timeout=10).status_code == 200
        assert first.poll() is None
    finally:
        _stop(first)


def test_dev_whose_database_died_says_so_and_exits_non_zero(tmp_path: Path) -> None:
    """It used to keep running with /readyz 503, logging warnings twice a second forever."""
    proc, found = _start(tmp_path / "data")
    try:
        assert "api" in found, found
        postgres = [
            p for p in psutil.Process(proc.pid).children() if p.name() in ("postgres", "postmaster")
        ]
        assert len(postgres) == 1, psutil.Process(proc.pid).children()
        postgres[0].kill()
        proc.wait(timeout=60)
        assert proc.stdout is not None
        output = proc.stdout.read()
        assert proc.returncode == 3
        assert "the embedded PostgreSQL exited" in output
    finally:
        _stop(proc)


def test_dev_on_apache_kafka_announces_its_brokers_and_serves(tmp_path: Path) -> None:
    proc, found = _start(tmp_path / "data", "--broker", "kafka", timeout=240)
    children: list[psutil.Process] = []
    try:
        assert {"api", "kafka", "kafka broker 1", "admin api key"} <= found.keys(), found
        assert re.fullmatch(r"127\.0\.0\.1:\d+", found["kafka"])
        broker = re.fullmatch(r"(127\.0\.0\.1:\d+) pid (\d+)", found["kafka broker 1"])
        assert broker is not None, found
        assert broker.group(1) == found["kafka"]
        children = psutil.Process(proc.pid).children(recursive=True)
        assert int(broker.group(2)) in {c.pid for c in children}
        assert httpx.get(f"{found['api']}/readyz", timeout=10).status_code == 200
    finally:
        _stop(proc)
    assert proc.returncode in (0, 130, 143)
    _, alive = psutil.wait_procs(children, timeout=5)
    assert alive == [], f"left behind: {[p.pid for p in alive]}"
