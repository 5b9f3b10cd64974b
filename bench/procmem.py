"""Peak resident memory of a process tree, sampled from /proc while something runs.

The tree is every descendant of ``root`` started after the sampler (the bench process itself and
the lab's host holders it started earlier are excluded): the `pulumi` CLI
the Automation API starts, its language host and providers, and the `ssh` clients they run. RSS is
summed over the processes, so pages they share count once per process: an upper bound.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")


def _parents() -> dict[int, int]:
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        out[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid in _parents().items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _name(pid: int) -> str:
    """The program's name: the script for an interpreter (`python3 .../pulumi-resource-command`),
    else the executable's (comm is cut at 15 characters)."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    first = os.path.basename(argv[0].decode(errors="replace"))
    if first.startswith("python") and len(argv) > 1 and argv[1] and not argv[1].startswith(b"-"):
        return os.path.basename(argv[1].decode(errors="replace"))
    return first or Path(f"/proc/{pid}/comm").read_text().strip()


def rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


class TreePeak:
    """``with TreePeak() as peak: ...``; then ``peak.bytes``, ``peak.by_name`` (at the peak)."""

    def __init__(self, root: int | None = None, interval: float = 0.2):
        self.root = root or os.getpid()
        self.interval = interval
        self.bytes = 0
        self.by_name: dict[str, int] = {}
        self.samples = 0
        self._cpu: dict[int, tuple[str, float, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        total, names = 0, {}
        for pid in descendants(self.root):
            if pid in self._before:
                continue
            rss = rss_bytes(pid)
            total += rss
            try:
                name = _name(pid)
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            names[name] = names.get(name, 0) + rss
            # utime + stime so far, and the same of its children it has reaped (ssh clients, for the
            # command provider); the last sample of a pid counts.
            self._cpu[pid] = (name, sum(int(x) for x in fields[11:13]) / TICK,
                              sum(int(x) for x in fields[13:15]) / TICK)
        self.samples += 1
        if total > self.bytes:
            self.bytes, self.by_name = total, names

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> "TreePeak":
        # Descendants that exist already (the lab's host holders, started by this process) are not
        # part of the run.
        self._before = set(descendants(self.root))
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mb(self) -> float:
        return self.bytes / (1 << 20)

    def cpu_by_name(self) -> dict[str, float]:
        """CPU seconds per process name as last sampled, and per name the CPU of the children it
        reaped (`<name> (reaped children)`: the ssh clients of the command provider). Processes that
        live and die between two samples are missed, so the figures are lower bounds."""
        out: dict[str, float] = {}
        for name, own, reaped in self._cpu.values():
            out[name] = out.get(name, 0.0) + own
            if reaped:
                key = f"{name} (reaped children)"
                out[key] = out.get(key, 0.0) + reaped
        return {k: round(v, 1) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}
