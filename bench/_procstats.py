"""CPU seconds per process group over the measured phases of a benchmark.

A benchmark names the processes it cares about (the service, PostgreSQL, the broker, the load
generator) as probes, opens a :class:`CpuMeter` on them and brackets each measured run with
``start()``/``stop()``; the meter adds up each probe's CPU time over those intervals only, so
warm-ups and the runs of other measurements in between do not count. ``report`` turns the sums
into CPU seconds per 1,000 units of work (webhooks, sends).

A probe's time is user + system. A process tree (PostgreSQL: the postmaster forks a backend per
connection) is counted as the sum over its live processes of their own time plus the time of
the children they have reaped, so a backend that exits mid-run still counts (the postmaster
reaps it) and nothing is counted twice. A process that exits without being reaped by one of the
probed processes takes its time with it: keep the probed processes alive across a phase.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import psutil

Sampler = Callable[[], float]
"""CPU seconds a probe has used so far (monotonic while its processes live)."""


@dataclass(frozen=True)
class CpuTimes:
    """One process's ``psutil.cpu_times()``: its own and its reaped children's seconds."""

    user: float
    system: float
    children_user: float = 0.0
    children_system: float = 0.0

    @property
    def own(self) -> float:
        return self.user + self.system

    @property
    def with_reaped(self) -> float:
        return self.own + self.children_user + self.children_system


def tree_seconds(processes: Iterable[CpuTimes]) -> float:
    """CPU seconds of a process tree: every live process with the children it has reaped."""
    return sum(p.with_reaped for p in processes)


def _times(proc: psutil.Process) -> CpuTimes:
    t = proc.cpu_times()
    return CpuTimes(t.user, t.system, t.children_user, t.children_system)


def tree(pids: Sequence[int]) -> Sampler:
    """The processes ``pids`` and all their descendants (e.g. the postmaster and its backends).

    Several roots are summed (e.g. every node of a Kafka cluster). A root that is gone counts
    as zero: the caller sees the drop and the phase's figure is then meaningless, which is why
    probed processes must outlive the phase.
    """

    def sample() -> float:
        found: list[CpuTimes] = []
        for pid in pids:
            try:
                root = psutil.Process(pid)
                members = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for member in members:
                try:
                    found.append(_times(member))
                except psutil.NoSuchProcess:
                    continue  # exited between listing and reading: its parent reaps its time
        return tree_seconds(found)

    return sample


def own(pid: int | None = None) -> Sampler:
    """One process's own time, not its children's (e.g. a bench that runs the service itself
    and starts PostgreSQL and the broker as its children, which are probed on their own)."""
    proc = psutil.Process(pid if pid is not None else os.getpid())
    return lambda: _times(proc).own


def reaped_children(pid: int | None = None) -> Sampler:
    """The time of the children a process has waited for, e.g. every ``wrk`` run started with
    ``subprocess.run``: bracketing one run gives that run's load generator time."""
    proc = psutil.Process(pid if pid is not None else os.getpid())

    def sample() -> float:
        t = _times(proc)
        return t.children_user + t.children_system

    return sample


@dataclass(frozen=True)
class Probe:
    """A named group of processes; ``part_of`` names the probe it details (a Kafka node of the
    broker), so the total counts it once."""

    name: str
    sample: Sampler
    part_of: str | None = None


@dataclass
class CpuMeter:
    """Adds up every probe's CPU seconds over the intervals between ``start()`` and ``stop()``."""

    probes: Sequence[Probe]
    seconds: dict[str, float] = field(default_factory=dict)
    _started: dict[str, float] | None = None

    def _sample(self) -> dict[str, float]:
        return {p.name: p.sample() for p in self.probes}

    def start(self) -> None:
        if self._started is not None:
            raise RuntimeError("the meter is already running")
        self._started = self._sample()

    def stop(self) -> None:
        if self._started is None:
            raise RuntimeError("the meter was not started")
        self.seconds = accumulate(self.seconds, self._started, self._sample())
        self._started = None

    def report(self, units: float, unit: str) -> list[str]:
        return report(self.probes, self.seconds, units, unit)

    def idle(self, wall: float, sleep: Callable[[float], None]) -> list[str]:
        """Measure ``wall`` seconds with no load (``sleep`` waits them out): the background cost
        of every process (a JVM's replica fetchers and controller, timers), which a rate that
        is low for the machine divides over few units."""
        self.start()
        sleep(wall)
        self.stop()
        return idle_report(self.probes, self.seconds, wall)


def accumulate(
    totals: Mapping[str, float], before: Mapping[str, float], after: Mapping[str, float]
) -> dict[str, float]:
    """``totals`` plus each probe's ``after - before`` (never below zero: a probe whose
    process vanished reads lower afterwards, and a negative cost would hide that)."""
    return {name: totals.get(name, 0.0) + max(0.0, after[name] - before[name]) for name in before}


def per_thousand(seconds: float, units: float) -> float:
    """CPU seconds per 1,000 units of work (0 when no work was done)."""
    return seconds / units * 1000 if units > 0 else 0.0


def report(
    probes: Sequence[Probe], seconds: Mapping[str, float], units: float, unit: str
) -> list[str]:
    """One line per probe (details indented under their group) and a total over the groups:
    CPU seconds per 1,000 ``unit`` and the probe's share of the total."""
    total = sum(seconds.get(p.name, 0.0) for p in probes if p.part_of is None)
    width = max([len(p.name) + (2 if p.part_of else 0) for p in probes] + [5])
    lines = [f"CPU seconds per 1,000 {unit} ({units:,.0f} {unit}):"]
    for p in probes:
        used = seconds.get(p.name, 0.0)
        label = ("  " if p.part_of else "") + p.name
        share = used / total * 100 if total > 0 else 0.0
        lines.append(
            f"  {label:<{width}}  {per_thousand(used, units):7.3f} s   "
            f"({used:7.2f} s, {share:4.1f} %)"
        )
    lines.append(f"  {'total':<{width}}  {per_thousand(total, units):7.3f} s   ({total:7.2f} s)")
    return lines


def idle_report(probes: Sequence[Probe], seconds: Mapping[str, float], wall: float) -> list[str]:
    """One line per probe: CPU seconds per wall second (cores in use) with no load."""
    width = max([len(p.name) + (2 if p.part_of else 0) for p in probes] + [5])
    lines = [f"CPU seconds per second with no load ({wall:.0f} s):"]
    for p in probes:
        label = ("  " if p.part_of else "") + p.name
        lines.append(f"  {label:<{width}}  {seconds.get(p.name, 0.0) / wall:7.3f}")
    return lines
