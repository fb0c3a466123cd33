"""CPU accounting from /proc for the benchmarks: a process tree's CPU seconds, a set of
processes' own, the machine's, and a thread sampling PostgreSQL backends (bench_server.py)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def cpu_of(roots: set[int]) -> dict[int, float]:
    """CPU seconds (user + system) of each of `roots` and of all their descendants, by pid."""
    parent: dict[int, int] = {}
    seconds: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # it ended meanwhile
            pid = int(entry.name)
            parent[pid], seconds[pid] = int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = {}, [p for p in roots if p in seconds]
    while todo:
        pid = todo.pop()
        found[pid] = seconds[pid]
        todo += children.get(pid, [])
    return found


def own_cpu(pids: set[int]) -> dict[int, float]:
    """CPU seconds (user + system) of each of `pids` that is still running."""
    out: dict[int, float] = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / TICK
    return out


class BackendCpu(threading.Thread):
    """Samples the CPU time of this database's PostgreSQL backends twice a second (a backend
    that comes and goes between two samples is missed: `sessions` says how many came)."""

    def __init__(self, backends: Callable[[], set[int]]) -> None:
        super().__init__(daemon=True)
        self.backends, self.done = backends, threading.Event()
        self.first = own_cpu(backends())
        self.last = dict(self.first)

    def run(self) -> None:
        while not self.done.wait(0.5):
            self.last |= own_cpu(self.backends())

    def seconds(self) -> float:
        self.done.set()
        self.join()
        self.last |= own_cpu(self.backends())
        return sum(v - self.first.get(pid, 0.0) for pid, v in self.last.items())


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / TICK, sum(ticks) / TICK
