"""The pure parts of the benchmarks' CPU accounting (bench/_procstats.py)."""

from __future__ import annotations

import itertools
import subprocess
import sys

import psutil
import pytest
from bench._procstats import (
    CpuMeter,
    CpuTimes,
    Probe,
    accumulate,
    idle_report,
    per_thousand,
    report,
    tree,
    tree_seconds,
)


def test_a_tree_counts_each_live_process_with_the_children_it_reaped() -> None:
    postmaster = CpuTimes(user=1.0, system=0.5, children_user=2.0, children_system=1.0)
    backend = CpuTimes(user=0.25, system=0.25)
    assert postmaster.own == 1.5
    assert postmaster.with_reaped == 4.5
    assert tree_seconds([postmaster, backend]) == 5.0
    assert tree_seconds([]) == 0.0


def test_accumulate_adds_each_interval_and_never_goes_negative() -> None:
    totals = accumulate({}, {"pg": 1.0, "broker": 5.0}, {"pg": 3.0, "broker": 4.0})
    assert totals == {"pg": 2.0, "broker": 0.0}
    assert accumulate(totals, {"pg": 10.0, "broker": 4.0}, {"pg": 11.5, "broker": 4.5}) == {
        "pg": 3.5,
        "broker": 0.5,
    }


def test_per_thousand() -> None:
    assert per_thousand(3.0, 6000) == 0.5
    assert per_thousand(3.0, 0) == 0.0


def test_the_meter_counts_only_between_start_and_stop() -> None:
    clock = itertools.count(0.0, 1.0)  # every sample reads one second later
    meter = CpuMeter([Probe("service", lambda: next(clock))])
    meter.start()  # 0
    meter.stop()  # 1
    next(clock)  # 2: time spent outside the measured runs
    next(clock)  # 3
    meter.start()  # 4
    meter.stop()  # 5
    assert meter.seconds == {"service": 2.0}
    with pytest.raises(RuntimeError):
        meter.stop()


def test_the_meter_refuses_a_second_start() -> None:
    meter = CpuMeter([Probe("service", lambda: 0.0)])
    meter.start()
    with pytest.raises(RuntimeError):
        meter.start()


def test_report_totals_groups_once_and_indents_their_parts() -> None:
    probes = [
        Probe("service", lambda: 0.0),
        Probe("broker", lambda: 0.0),
        Probe("node 1", lambda: 0.0, part_of="broker"),
        Probe("node 2", lambda: 0.0, part_of="broker"),
    ]
    seconds = {"service": 6.0, "broker": 2.0, "node 1": 1.5, "node 2": 0.5}
    lines = report(probes, seconds, 4000, "sends")
    assert lines[0] == "CPU seconds per 1,000 sends (4,000 sends):"
    assert lines[1].split()[:2] == ["service", "1.500"]
    assert "75.0 %" in lines[1]
    assert lines[3].startswith("    node 1")
    assert lines[-1].split()[:2] == ["total", "2.000"]  # 8 s, the nodes not counted again


def test_a_tree_sample_includes_a_reaped_child_and_ignores_a_vanished_root() -> None:
    child = subprocess.Popen([sys.executable, "-c", "sum(range(3_000_000))"])
    child.wait(timeout=60)
    me = psutil.Process()
    reaped = me.cpu_times().children_user + me.cpu_times().children_system
    assert reaped > 0
    assert tree([me.pid])() >= reaped
    assert tree([child.pid])() == 0.0  # reaped: no such process any more


def test_the_idle_report_gives_cores_in_use_per_probe() -> None:
    clock = itertools.count(0.0, 0.5)
    meter = CpuMeter([Probe("broker", lambda: next(clock))])
    waited: list[float] = []
    lines = meter.idle(2.0, waited.append)
    assert waited == [2.0]
    assert lines[0] == "CPU seconds per second with no load (2 s):"
    assert lines[1].split() == ["broker", "0.250"]  # 0.5 s over 2 s
    assert idle_report(meter.probes, {}, 1.0)[1].split() == ["broker", "0.000"]
