"""`switchboard dev` as a user runs it: ready in 60 s; Ctrl-C or SIGTERM leave nothing behind."""

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


def _start(data_dir: Path) -> tuple[subprocess.Popen[str], dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")} | {
        "SWITCHBOARD_HTTP_PORT": "0",
        "SWITCHBOARD_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "switchboard", "dev", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    found: dict[str, str] = {}
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    while time.monotonic() < deadline and "admin api key" not in found:
        line = proc.stdout.readline()
        if not line:
            break
        if match := re.match(r"^(api|kafka|admin api key): (\S+)$", line.strip()):
            found[match.group(1)] = match.group(2)
    return proc, found


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
