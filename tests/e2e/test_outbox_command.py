"""`switchboard outbox` as a user runs it: the worker answers /healthz, /readyz and /metrics on
its own port (``SWITCHBOARD_OUTBOX_HTTP_PORT``; 0 picks a free one, printed as ``outbox:``)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from infra.embedded import EmbeddedBroker
from tests.conftest import ENCRYPTION_KEY
from tests.e2e.test_dev_command import _start as start_dev

pytestmark = pytest.mark.integration


def _poll(url: str, done: str, limit: float = 30.0) -> str:
    """GET ``url`` until its body contains ``done``; return the last body."""
    deadline = time.monotonic() + limit
    body = ""
    while time.monotonic() < deadline:
        body = httpx.get(url, timeout=10).text
        if done in body:
            return body
        time.sleep(0.2)
    return body


def test_outbox_serves_health_and_metrics_on_its_port(
    database_url: str, broker: EmbeddedBroker
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")} | {
        "SWITCHBOARD_DATABASE_URL": database_url,
        "SWITCHBOARD_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "SWITCHBOARD_KAFKA_ENABLE_IDEMPOTENCE": "false",
        "SWITCHBOARD_KAFKA_TOPIC_PREFIX": f"e{uuid.uuid4().hex[:10]}.",
        "SWITCHBOARD_ENCRYPTION_KEYS": ENCRYPTION_KEY,
        "SWITCHBOARD_OUTBOX_HTTP_PORT": "0",
        "SWITCHBOARD_OUTBOX_METRICS_INTERVAL": "0.2",
        "SWITCHBOARD_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "switchboard", "outbox"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once the listener is up
        match = re.fullmatch(r"outbox: (http://127\.0\.0\.1:\d+)", line.strip())
        assert match, line
        base = match.group(1)
        assert httpx.get(f"{base}/healthz", timeout=10).text == "ok"
        ready = httpx.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "ok", "kafka": "ok"}
        metrics = _poll(f"{base}/metrics", "switchboard_outbox_sampler_leader 1.0")
        assert "switchboard_outbox_sampler_leader 1.0" in metrics
        assert 'switchboard_outbox_channels{state="active"}' in metrics
        assert "switchboard_outbox_relay_lag_seconds" in metrics
        assert "# TYPE switchboard_outbox_sends_total counter" in metrics
        assert httpx.get(f"{base}/v1/channels", timeout=10).status_code == 404, "no API here"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
            if proc.stdout is not None:
                proc.stdout.close()
    assert proc.returncode in (0, 143)


def test_dev_serves_the_outbox_metrics_on_the_api(tmp_path: Path) -> None:
    proc, found = start_dev(tmp_path / "data")
    try:
        assert {"api", "admin api key"} <= found.keys(), found
        created = httpx.post(
            f"{found['api']}/v1/channels",
            json={
                "platform": "telegram",
                "name": "Bot",
                "account_id": "123456",
                "credentials": {
                    "bot_token": "123456:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                    "secret_token": "s",
                },
            },
            headers={"Authorization": f"Bearer {found['admin api key']}"},
            timeout=10,
        )
        assert created.status_code == 201, created.text
        active = 'switchboard_outbox_channels{state="active"} 1.0'
        metrics = _poll(f"{found['api']}/metrics", active)
        assert active in metrics
        assert "switchboard_outbox_sampler_leader 1.0" in metrics
        assert "switchboard_gateway_spool_depth 0.0" in metrics
        lag = 'switchboard_kafka_consumer_lag{consumer="outbox.commands"} 0.0'
        assert lag in _poll(f"{found['api']}/metrics", lag), "once the consumer has polled"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
            if proc.stdout is not None:
                proc.stdout.close()
