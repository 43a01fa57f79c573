"""The `switchboard` commands that need no services, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "payloads"


def switchboard(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "switchboard", *args],
        input=stdin,
        capture_output=True,
        check=False,
        timeout=60,
    )


def test_normalize_prints_one_event_per_line() -> None:
    body = (FIXTURES / "whatsapp" / "batch.json").read_bytes()
    from_stdin = switchboard(
        "normalize", "--platform", "whatsapp", "--channel-id", "ch-1", "-", stdin=body
    )
    from_file = switchboard(
        "normalize",
        "--platform",
        "whatsapp",
        "--channel-id",
        "ch-1",
        str(FIXTURES / "whatsapp" / "batch.json"),
    )
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert from_stdin.stdout == from_file.stdout
    events = [json.loads(line) for line in from_stdin.stdout.splitlines()]
    assert len(events) > 1
    assert {e["source"] for e in events} == {"/switchboard/whatsapp/ch-1"}
    assert all(e["specversion"] == "1.0" for e in events)


def test_normalize_reads_twilio_forms() -> None:
    result = switchboard("normalize", "--platform", "twilio", str(FIXTURES / "twilio" / "sms.txt"))
    assert result.returncode == 0, result.stderr
    (event,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert event["type"] == "message.received"


def test_normalize_bad_input_exits_2_with_one_line() -> None:
    for args, stdin in [
        (("--platform", "whatsapp"), b"not json"),
        (("--platform", "telegram"), b"[1, 2]"),
        (("--platform", "carrier-pigeon"), b"{}"),
        (("--platform", "whatsapp", "/does/not/exist.json"), b""),
    ]:
        result = switchboard("normalize", *args, stdin=stdin)
        assert result.returncode == 2, (args, result)
        assert result.stdout == b""
        assert len(result.stderr.decode().strip().splitlines()) == 1, result.stderr


def test_replay_refuses_an_unknown_platform_before_connecting() -> None:
    result = switchboard("replay", "--platform", "line")
    assert result.returncode == 2
    assert "invalid choice: 'line'" in result.stderr.decode()


def test_keygen_prints_a_fernet_key() -> None:
    result = switchboard("keygen")
    assert result.returncode == 0
    Fernet(result.stdout.strip())


def test_serve_without_encryption_keys_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "switchboard", "serve"],
        capture_output=True,
        check=False,
        timeout=60,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert b"SWITCHBOARD_ENCRYPTION_KEYS is not set" in result.stderr
