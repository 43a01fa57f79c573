"""Issue 9, D11: schemathesis (``--checks all``) against the live app on real PostgreSQL and the
broker finds no server error and no status the OpenAPI document does not declare.

The run is bounded (examples per operation, one worker, a fixed seed) to stay within about two
minutes on two cores. The CLI runs in a subprocess: it is synchronous and would block the event
loop the app is served on. Its reports (JUnit, and a pytest file reproducing any failure) go
to the test's temporary directory.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.app import component as gateway_component
from infra.settings import Settings
from outbox.app import component as outbox_component
from tests.conftest import ADMIN_KEY
from tests.support import RunningApp, running_app

pytestmark = pytest.mark.integration

CONFIG = Path(__file__).with_name("schemathesis.toml")
MAX_EXAMPLES = 15
SEED = 20261203


@pytest.fixture
async def full_app(settings: Settings, engine: AsyncEngine) -> AsyncIterator[RunningApp]:
    async with running_app(
        settings, [gateway_component(settings), outbox_component(settings)]
    ) as running:
        yield running


async def test_schemathesis_all_checks_pass(full_app: RunningApp, tmp_path: Path) -> None:
    st = Path(sys.executable).with_name("st")
    process = await asyncio.create_subprocess_exec(
        str(st),
        "--config-file",
        str(CONFIG),
        "run",
        f"{full_app.base_url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--no-shrink",
        "--generation-database",
        "none",
        "--phases",
        "examples,coverage,fuzzing",
        "--request-timeout",
        "20",
        "--header",
        f"Authorization: Bearer {ADMIN_KEY}",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
        "--no-color",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""},
    )
    output, _ = await process.communicate()
    text = output.decode(errors="replace")
    (tmp_path / "schemathesis.log").write_text(text)
    assert process.returncode == 0, text[-30_000:]
