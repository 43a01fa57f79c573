"""The Apache Kafka cluster the project starts for dev and tests: it serves idempotent
producers, restarts a node on its ports and data, stops cleanly, and dies with its parent."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from infra.kafka_cluster import KafkaCluster

pytestmark = pytest.mark.integration


async def _round_trip(bootstrap: str, topic: str, value: bytes) -> list[bytes]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        batch = await consumer.getmany(tp, timeout_ms=10_000)
        return [r.value for r in batch.get(tp, []) if r.value is not None]
    finally:
        await consumer.stop()


async def test_a_node_serves_idempotent_producers_and_keeps_data_across_a_restart(
    kafka_cluster_factory: Callable[[int], KafkaCluster],
) -> None:
    cluster = kafka_cluster_factory(1)
    node = cluster.node(1)
    assert node.pid in {c.pid for c in psutil.Process().children()}
    assert cluster.bootstrap_servers == node.address
    assert 0 < cluster.rss_bytes()[0] < 2**30

    assert await _round_trip(cluster.bootstrap_servers, "probe", b"one") == [b"one"]
    cluster.kill_node(1)
    assert node.pid is None
    cluster.start_node(1)  # type: ignore[unreachable]
    assert await _round_trip(cluster.bootstrap_servers, "probe", b"two") == [b"one", b"two"]

    pid = node.pid
    assert pid is not None
    cluster.stop()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_nodes_die_with_their_parent(tmp_path: Path) -> None:
    script = (
        "import json, sys, time\n"
        "from pathlib import Path\n"
        "from infra.kafka_cluster import KafkaCluster\n"
        "c = KafkaCluster(Path(sys.argv[1]), 1).start()\n"
        "print(json.dumps([n.pid for n in c.nodes]), flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "kafka")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        pids = json.loads(parent.stdout.readline())
        nodes = [psutil.Process(pid) for pid in pids]
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        _, alive = psutil.wait_procs(nodes, timeout=60)
        assert alive == []
    finally:
        if parent.poll() is None:
            parent.kill()
        if parent.stdout is not None:
            parent.stdout.close()
