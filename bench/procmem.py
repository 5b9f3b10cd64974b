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
                name = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            names[name] = names.get(name, 0) + rss
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
