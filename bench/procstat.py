"""CPU and memory of processes, read from /proc while a run is going on.

``Sampler`` polls /proc/<pid>/stat (utime + stime) and /proc/<pid>/status
(VmRSS) for named groups of pids in a background thread every ``interval``
seconds; a group's figure is the sum over its pids (and their children when
``children=True``, e.g. a hub started through a wrapper). Vanished pids count 0.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _times(pid: int) -> tuple[int, int]:
    """(utime, stime) of ``pid`` in clock ticks, (0, 0) if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0, 0
    return int(fields[11]), int(fields[12])


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` in seconds, 0.0 if it is gone."""
    return sum(_times(pid)) / TICK


def system_seconds(pid: int) -> float:
    """stime of ``pid`` in seconds (the kernel's share: system calls), 0.0 if it is gone."""
    return _times(pid)[1] / TICK


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` in bytes, 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except OSError:
        return 0


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (read from /proc/*/stat ppid fields)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, []))
    return out


def find_pids(name: str) -> list[int]:
    """Pids whose command name (``/proc/<pid>/comm``) equals ``name``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() == name:
                        found.append(int(entry))
            except OSError:
                continue
    return found


@dataclass
class GroupUsage:
    """CPU seconds used over the window and RSS samples of one group."""

    cpu_s: float = 0.0
    rss_max: int = 0
    rss_last: int = 0
    samples: list[tuple[float, float, int]] = field(default_factory=list)  # (t, cpu, rss)


class Sampler:
    """Samples groups of pids until ``stop``; use as a context manager around a window."""

    def __init__(self, groups: dict[str, list[int]], interval: float = 0.5) -> None:
        self.groups = groups
        self.interval = interval
        self.usage = {name: GroupUsage() for name in groups}
        self._start_cpu: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._t0 = 0.0

    def _sample(self) -> None:
        now = time.monotonic() - self._t0
        for name, pids in self.groups.items():
            cpu = sum(cpu_seconds(p) for p in pids)
            rss = sum(rss_bytes(p) for p in pids)
            u = self.usage[name]
            u.samples.append((now, cpu - self._start_cpu.get(name, cpu), rss))
            u.rss_max = max(u.rss_max, rss)
            u.rss_last = rss

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> Sampler:
        self._t0 = time.monotonic()
        self._start_cpu = {n: sum(cpu_seconds(p) for p in pids) for n, pids in self.groups.items()}
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        for name, pids in self.groups.items():
            self.usage[name].cpu_s = sum(cpu_seconds(p) for p in pids) - self._start_cpu[name]

    def wall(self) -> float:
        """Seconds since the window opened."""
        return time.monotonic() - self._t0


def rss_of(pids: list[int]) -> int:
    """Summed RSS of ``pids`` right now."""
    return sum(rss_bytes(p) for p in pids)
