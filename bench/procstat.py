"""What the kernel says about a process tree: CPU seconds (utime+stime) and resident memory."""

from __future__ import annotations

import os
import timeit
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return kids


def tree(pid: int) -> list[int]:
    """pid and all its descendants (LiteLLM may fork a worker; count it with its parent)."""
    seen, todo = [], [pid]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.append(current)
        todo += _children(current)
    return seen


def _stat_cpu_seconds(stat: Path) -> float:
    """utime + stime of a process's or thread's ``stat`` file; 0 once it is gone."""
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK  # fields 14 and 15 of stat


def cpu_seconds(pid: int) -> float:
    return sum(_stat_cpu_seconds(Path(f"/proc/{p}/stat")) for p in tree(pid))


def switches_and_main_cpu(pid: int) -> tuple[int, float]:
    """Context switches (voluntary and not) of every thread in the tree, and the CPU seconds of
    pid's main thread: for waitress and uvicorn that is the event loop, so its share of the
    process's CPU says how much of a request is spent outside the request threads."""
    switches = 0
    for p in tree(pid):
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                status = (task / "status").read_text()
            except OSError:
                continue
            switches += sum(int(line.split()[1]) for line in status.splitlines()
                            if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")))
    return switches, _stat_cpu_seconds(Path(f"/proc/{pid}/task/{pid}/stat"))


def rss_bytes(pid: int) -> int:
    total = 0
    for p in tree(pid):
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * _PAGE
        except OSError:
            continue
    return total


def self_cpu_seconds() -> float:
    """CPU of this process's finished children (wrk runs, waited for) plus itself."""
    times = os.times()
    return times.children_user + times.children_system


def host_speed_ms() -> float:
    """Milliseconds for ``sum(range(10**6))``, best of five: how fast this host runs Python right now.

    Shared machines drift by 2x or more within an hour, and every CPU-per-request number moves with
    them; a run records this at its start and end so runs can be compared at all."""
    return round(min(timeit.repeat("sum(range(10**6))", number=10, repeat=5)) / 10 * 1e3, 1)
