"""A real Apache Kafka cluster on loopback, fetched through Maven (dev, tests, benchmarks).

``fetch()`` copies ``org.apache.kafka:kafka_2.13`` (one pinned version) and its runtime
dependencies from Maven Central into a cache outside git (``~/.cache/switchboard/kafka-<v>``).
``KafkaCluster`` formats and starts N KRaft nodes (combined broker + controller, a static
quorum of all N) on free loopback ports with their logs on disk under ``data_dir``. Every node
is a direct child process started with a parent-death signal, so none outlives its parent;
``stop()`` sends SIGTERM (Kafka's clean shutdown), waits, then SIGKILLs what is left.

Single nodes can be killed, stopped and started again on the same ports and data, which is
what failure tests need (``kill_node``, ``stop_node``, ``start_node``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from infra.embedded import _die_with_parent, _terminate, free_port

KAFKA_VERSION = "4.1.1"
SCALA_VERSION = "2.13"
LOG4J_VERSION = "2.24.3"  # the log4j that kafka 4.1.1 is built with; adds its slf4j binding
MIN_JAVA = 17  # Kafka 4.x brokers need Java 17+
DEFAULT_JVM_OPTIONS = (
    "-Xmx256m",
    "-Xms64m",
    "-XX:+UseSerialGC",  # a few small heaps on 2 cores: no concurrent GC threads to pay for
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
_STARTED = "Kafka Server started"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>switchboard.local</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{scala}</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = error
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
"""


class KafkaUnavailable(RuntimeError):
    """Kafka cannot be fetched or started here (no Maven, no Java 17+, a node failed)."""


def cache_root() -> Path:
    configured = os.environ.get("SWITCHBOARD_KAFKA_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "switchboard"


def fetch(version: str = KAFKA_VERSION, cache: Path | None = None) -> Path:
    """Return the folder of Kafka's jars, downloading them through Maven on first use."""
    home = (cache or cache_root()) / f"kafka-{version}"
    libs = home / "libs"
    if (home / "complete").exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaUnavailable("Maven ('mvn') is needed to fetch Apache Kafka; install Maven")
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two processes fetching at once: one downloads
        if (home / "complete").exists():
            return libs
        with tempfile.TemporaryDirectory(dir=home) as work:
            pom = Path(work, "pom.xml")
            pom.write_text(_POM.format(scala=SCALA_VERSION, kafka=version, log4j=LOG4J_VERSION))
            out = Path(work, "libs")
            result = subprocess.run(  # noqa: S603 - fixed program and arguments
                [
                    mvn,
                    "-B",
                    "-q",
                    "-f",
                    str(pom),
                    "dependency:copy-dependencies",
                    "-DincludeScope=runtime",
                    f"-DoutputDirectory={out}",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0 or not list(out.glob(f"kafka_{SCALA_VERSION}-*.jar")):
                tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
                raise KafkaUnavailable("Maven could not fetch Apache Kafka: " + " | ".join(tail))
            shutil.rmtree(libs, ignore_errors=True)
            out.rename(libs)
        (home / "log4j2.properties").write_text(_LOG4J2)
        (home / "complete").write_text(version + "\n")
    return libs


def java_executable() -> str:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home, "bin", "java")) if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise KafkaUnavailable(f"Java {MIN_JAVA}+ is needed to run Apache Kafka; none found")
    return java


def java_major_version(java: str) -> int:
    out = subprocess.run(  # noqa: S603
        [java, "-version"], capture_output=True, text=True, check=False
    ).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        raise KafkaUnavailable(f"cannot read the Java version from {java} -version")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


@dataclass
class KafkaNode:
    """One combined broker + controller: its ports stay fixed across restarts."""

    node_id: int
    port: int
    controller_port: int
    data_dir: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    log_offset: int = 0  # where this run's lines begin in the node's log

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"node-{self.node_id}.log"

    @property
    def config_path(self) -> Path:
        return self.data_dir.parent / f"node-{self.node_id}.properties"

    def rss_bytes(self) -> int:
        """Resident memory of the node's JVM (0 if it is not running)."""
        pid = self.pid
        if pid is None:
            return 0
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0


class KafkaCluster:
    """N KRaft nodes on 127.0.0.1 with their data under ``data_dir`` (kept across restarts)."""

    def __init__(
        self,
        data_dir: Path,
        nodes: int = 1,
        *,
        version: str = KAFKA_VERSION,
        jvm_options: tuple[str, ...] = DEFAULT_JVM_OPTIONS,
    ) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self.data_dir = data_dir.resolve()
        self.version = version
        self.jvm_options = jvm_options
        self.nodes = [
            KafkaNode(i, free_port(), free_port(), self.data_dir / f"node-{i}")
            for i in range(1, nodes + 1)
        ]
        self.started_in: float | None = None
        self._libs: Path | None = None
        self._java = ""

    @property
    def size(self) -> int:
        return len(self.nodes)

    @property
    def replication_factor(self) -> int:
        return min(3, self.size)

    @property
    def min_insync_replicas(self) -> int:
        return 2 if self.size >= 3 else 1

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(n.address for n in self.nodes)

    def node(self, node_id: int) -> KafkaNode:
        return self.nodes[node_id - 1]

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self, timeout: float = 180.0) -> KafkaCluster:
        began = time.monotonic()
        self._libs = fetch(self.version)
        self._java = java_executable()
        major = java_major_version(self._java)
        if major < MIN_JAVA:
            raise KafkaUnavailable(f"Kafka {self.version} needs Java {MIN_JAVA}+, not {major}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cluster_id = self._cluster_id()
        for node in self.nodes:
            node.config_path.write_text(self._properties(node))
        unformatted = [n for n in self.nodes if not (n.data_dir / "meta.properties").exists()]
        with ThreadPoolExecutor(max_workers=len(unformatted) or 1) as pool:
            list(pool.map(lambda n: self._format(n, cluster_id), unformatted))
        try:
            for node in self.nodes:
                self._spawn(node)
            deadline = began + timeout
            for node in self.nodes:
                self._wait_started(node, deadline)
            with ThreadPoolExecutor(max_workers=1) as pool:  # callable from a running loop too
                pool.submit(
                    asyncio.run, _wait_for_brokers(self.bootstrap_servers, self.size, deadline)
                ).result()
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - began
        return self

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM every node at once (a clean shutdown), then SIGKILL what outlives ``timeout``."""
        running = [n.proc for n in self.nodes if n.proc is not None]
        for proc in running:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in running:
            _terminate(proc, signal.SIGTERM, max(0.1, deadline - time.monotonic()))
        for node in self.nodes:
            node.proc = None

    def kill_node(self, node_id: int) -> None:
        """SIGKILL one node: a crash, no controlled shutdown."""
        node = self.node(node_id)
        if node.proc is not None:
            _terminate(node.proc, signal.SIGKILL, 10)
            node.proc = None

    def stop_node(self, node_id: int, timeout: float = 30.0) -> None:
        node = self.node(node_id)
        if node.proc is not None:
            _terminate(node.proc, signal.SIGTERM, timeout)
            node.proc = None

    def start_node(self, node_id: int, timeout: float = 120.0) -> None:
        """Start a stopped node again on its ports and data; returns once it serves."""
        node = self.node(node_id)
        if node.pid is not None:
            return
        self._spawn(node)
        self._wait_started(node, time.monotonic() + timeout)

    def rss_bytes(self) -> list[int]:
        return [n.rss_bytes() for n in self.nodes]

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # ---- internals --------------------------------------------------------------------------

    def _cluster_id(self) -> str:
        """Kept in the data dir: a restarted cluster must present the id its logs were made with."""
        path = self.data_dir / "cluster.json"
        if path.exists():
            saved = json.loads(path.read_text())
            if saved.get("nodes") != self.size:
                raise KafkaUnavailable(
                    f"{self.data_dir} holds a {saved.get('nodes')}-node cluster, not {self.size}; "
                    "use another data directory"
                )
            return str(saved["cluster_id"])
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        path.write_text(json.dumps({"cluster_id": cluster_id, "nodes": self.size}) + "\n")
        return cluster_id

    def _properties(self, node: KafkaNode) -> str:
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        rf = self.replication_factor
        isr = self.min_insync_replicas
        settings = {
            "process.roles": "broker,controller",
            "node.id": node.node_id,
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": node.data_dir,
            # Topics are created by their owners with explicit settings, as in production.
            "auto.create.topics.enable": "false",
            "default.replication.factor": rf,
            "min.insync.replicas": isr,
            "offsets.topic.replication.factor": rf,
            "offsets.topic.num.partitions": 12,
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": isr,
            "transaction.state.log.num.partitions": 12,
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": isr,
            "group.initial.rebalance.delay.ms": 0,
            "unclean.leader.election.enable": "false",
            # Small machines: fewer threads than the defaults sized for a dedicated server.
            "num.network.threads": 2,
            "num.io.threads": 2,
            "num.recovery.threads.per.data.dir": 1,
            "background.threads": 2,
            "log.cleaner.threads": 1,
        }
        return "".join(f"{k}={v}\n" for k, v in settings.items())

    def _java_command(self, main: str, *args: str) -> list[str]:
        assert self._libs is not None
        log4j = self._libs.parent / "log4j2.properties"
        return [
            self._java,
            *self.jvm_options,
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            f"{self._libs}/*",
            main,
            *args,
        ]

    def _format(self, node: KafkaNode, cluster_id: str) -> None:
        result = subprocess.run(  # noqa: S603 - our java, our arguments
            self._java_command(
                "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(node.config_path)
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise KafkaUnavailable(
                f"formatting Kafka node {node.node_id} failed: {result.stdout}{result.stderr}"
            )

    def _spawn(self, node: KafkaNode) -> None:
        with open(node.log_path, "ab") as log:
            log.write(f"--- start {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode())
            log.flush()
            node.log_offset = log.tell()
            node.proc = subprocess.Popen(  # noqa: S603 - our java, our arguments
                self._java_command("kafka.Kafka", str(node.config_path)),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )

    def _wait_started(self, node: KafkaNode, deadline: float) -> None:
        """Until the node logs that it serves (it has joined the quorum and caught up)."""
        offset = node.log_offset
        while time.monotonic() < deadline:
            assert node.proc is not None
            if node.proc.poll() is not None:
                raise KafkaUnavailable(
                    f"Kafka node {node.node_id} exited with code {node.proc.returncode}; "
                    f"see {node.log_path}"
                )
            with open(node.log_path, "rb") as log:
                log.seek(offset)
                if _STARTED.encode() in log.read():
                    return
            time.sleep(0.2)
        raise KafkaUnavailable(f"Kafka node {node.node_id} did not start; see {node.log_path}")


async def _wait_for_brokers(bootstrap: str, count: int, deadline: float) -> None:
    """Until the cluster's metadata lists ``count`` live brokers (topics need them all for RF)."""
    from aiokafka import AIOKafkaClient

    while True:
        client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await client.bootstrap()
            await client.force_metadata_update()
            if len(client.cluster.brokers()) >= count:
                return
        except Exception:
            if time.monotonic() > deadline:
                raise
        finally:
            await client.close()
        if time.monotonic() > deadline:
            raise KafkaUnavailable(f"the cluster did not show {count} brokers in time")
        await asyncio.sleep(0.2)
