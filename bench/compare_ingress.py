"""Service CPU per webhook of two source trees, measured the same way from outside.

    .venv/bin/python bench/compare_ingress.py TREE_A TREE_B [--rounds 3] [--seconds 10]

Each tree is a checkout with its own ``.venv`` and ``bench/ingress.py`` (an older commit's
bench does not print CPU per process, so the figure cannot come from the bench itself). The
rounds alternate A B A B …; each runs ``bench/ingress.py --runs 1`` of that tree and, from
outside, reads the CPU time of its ``switchboard serve`` process (psutil) from the moment the
first ``wrk`` starts (start-up excluded) until the service stops, divided by the webhooks the
bench reports as deduplicated. Prints every round, then each tree's median. This is how the
restructure's before/after was compared (issue 8); run it on a quiet machine, the service
competes with wrk, PostgreSQL and the broker for two cores.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil


def _serve_cpu(tree: Path, seconds: int, log: Path) -> tuple[float, int, int]:
    """(service CPU seconds after the first wrk, webhooks deduplicated, best peak req/s)."""
    command = [".venv/bin/python", "bench/ingress.py", "--seconds", str(seconds), "--runs", "1"]
    with log.open("w") as out:
        bench = subprocess.Popen(command, cwd=tree, stdout=out, stderr=subprocess.STDOUT)
    serve: psutil.Process | None = None
    at_first_wrk: float | None = None
    last = 0.0
    while bench.poll() is None:
        time.sleep(0.1)
        try:
            children = psutil.Process(bench.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            break
        for child in children:
            try:
                command_line = " ".join(child.cmdline())
            except psutil.Error:
                continue
            if serve is None and "switchboard serve" in command_line:
                serve = child
            if at_first_wrk is None and serve is not None and command_line.startswith("wrk"):
                times = serve.cpu_times()
                at_first_wrk = times.user + times.system
        if serve is not None:
            try:
                times = serve.cpu_times()
                last = times.user + times.system
            except psutil.Error:
                pass
    text = log.read_text()
    rows = re.search(r"events deduplicated \(rows\): (\d+)", text)
    peak = re.search(r"ingress \(peak\)\s+best\s+(\d+)", text)
    if bench.returncode != 0 or rows is None or peak is None or at_first_wrk is None:
        sys.exit(f"bench/ingress.py in {tree} failed; its output is in {log}")
    return last - at_first_wrk, int(rows.group(1)), int(peak.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs=2, type=Path, metavar="TREE")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each tree")
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    args = parser.parse_args()
    per_tree: dict[Path, list[float]] = {tree: [] for tree in args.trees}
    logs = Path(tempfile.mkdtemp(prefix="sb-compare-"))
    for round_ in range(args.rounds):
        for index, tree in enumerate(args.trees):
            log = logs / f"{round_}-{index}.log"
            cpu, webhooks, peak = _serve_cpu(tree.resolve(), args.seconds, log)
            per_kilo = 1000 * cpu / webhooks
            per_tree[tree].append(per_kilo)
            load = Path("/proc/loadavg").read_text().split()[0]
            print(
                f"round {round_ + 1} {tree}: service {cpu:.2f} CPU-s for {webhooks} webhooks = "
                f"{per_kilo:.3f} CPU-s per 1,000; peak {peak} req/s; load {load}",
                flush=True,
            )
    for tree, values in per_tree.items():
        print(f"{tree}: median {statistics.median(values):.3f} CPU-s per 1,000 webhooks")
    print(f"bench outputs: {logs}")


if __name__ == "__main__":
    main()
