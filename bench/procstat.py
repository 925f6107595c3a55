"""CPU seconds and memory of processes, read from /proc (Linux only)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, reaped_children: bool = False) -> float:
    """User + system CPU seconds a process has used so far (0 when it is gone).

    With `reaped_children`, plus that of its children that exited and were waited for
    (cutime, cstime): how a postmaster keeps the CPU of backends closed during a run.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0.0
    # fields[0] is field 3 (state); utime, stime, cutime, cstime are fields 14 to 17
    own = int(fields[11]) + int(fields[12])
    if reaped_children:
        own += int(fields[13]) + int(fields[14])
    return own / TICKS


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    return 0


def children(pid: int) -> list[int]:
    """Direct children of a process."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(stat[1]) == pid:
            found.append(int(entry.name))
    return found


def tree(pid: int) -> list[int]:
    """A process and all its descendants."""
    result = [pid]
    for child in children(pid):
        result.extend(tree(child))
    return result


@dataclass
class Group:
    """A named set of processes, found anew at each reading (backends come and go)."""

    name: str
    find: object  # Callable[[], list[int]]

    parent: int | None = None  # a process whose exited children count too (the postmaster)

    def cpu(self) -> dict[int, float]:
        return {pid: cpu_seconds(pid, pid == self.parent) for pid in self.find()}

    def rss(self) -> int:
        return sum(rss_bytes(pid) for pid in self.find())


class CpuMeter:
    """CPU seconds each group used between start() and stop().

    Processes that exit in between are counted up to the last reading (pooled
    connections keep backends alive for the whole run).
    """

    def __init__(self, groups: list[Group]) -> None:
        self.groups = groups
        self._before: dict[str, dict[int, float]] = {}

    def start(self) -> None:
        self._before = {g.name: g.cpu() for g in self.groups}

    def stop(self) -> dict[str, float]:
        used = {}
        for group in self.groups:
            after = group.cpu()
            before = self._before.get(group.name, {})
            used[group.name] = sum(max(0.0, cpu - before.get(pid, 0.0)) for pid, cpu in after.items())
        return used


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().split()[0])
