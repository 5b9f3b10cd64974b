"""The engine's stack lock that a killed `up` leaves, and when a new `cli watch` leader may clear it.

What the DIY backends do (pulumi v3.274.0, pkg/backend/diy/lock.go and backend.go): every
operation that writes the stack first writes one lock file
``<backend>/.pulumi/locks/organization/<project>/<stack>/<uuid>.json`` (``.pulumi/locks/<stack>/``
in the older, non-project layout) holding ``{"pid", "username", "hostname", "timestamp"}``: the
pid of the `pulumi` CLI process that runs the operation, ``os.Hostname()`` and the writer's wall
clock. It refuses to start while another lock file exists ("the stack is currently locked by N
lock(s) ... created by user@host (pid P) at T") and deletes its own when it ends. Nothing expires:
an engine killed with SIGKILL (what a leader that lost its Lease does to its run) leaves its lock
for ever. ``pulumi cancel`` on a DIY backend (``CancelCurrentUpdate``) deletes *every* lock file
of the stack, whoever wrote it, without asking whether the writer is alive.

So a new leader never runs ``pulumi cancel`` blindly. The leader records its engine run in the
Lease (annotation ``ENGINE_RUN``: the hostname the lock will carry, the engine's pid(s) once
started, when it started by the same machine's clock, and the recovery it applies). A new
leader that took the Lease over (the old one's lease expired, or it was released) clears a lock
only when the lock's hostname is the old leader's and the lock's pid is the old leader's engine
(or, when the old leader died before it could record the pid, the lock was written on that host
after the run started by that host's clock). Any other lock: it waits and says whose lock it is.

A killed engine also leaves ``pending_operations`` in the checkpoint (each step it had started);
``pulumi up`` keeps carrying them (pkg/resource/deploy/deployment_executor.go only warns, and
engine/journal_snapshot.go copies them into every new snapshot) until a ``pulumi refresh``. This
program's steps are idempotent scripts and server-side applies, so an operation that was in
flight is simply run again by the next `up`: ``drop_pending`` takes them out of the state (what
``pulumi stack export | ... | pulumi stack import`` does by hand) after the lock is cleared.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import unquote, urlparse

ENGINE_RUN = "sealer-registry.io/engine-run"   # the Lease annotation of the leader's engine run


@dataclass(frozen=True)
class StackLock:
    """One lock file as the engine wrote it."""

    where: str          # the file (file://) or the URL the engine named
    pid: int
    username: str
    hostname: str
    timestamp: str      # the writer's wall clock, RFC 3339

    def describe(self) -> str:
        return f"{self.username}@{self.hostname} (pid {self.pid}) at {self.timestamp}"

    def as_json(self) -> dict:
        return {"where": self.where, "pid": self.pid, "username": self.username,
                "hostname": self.hostname, "timestamp": self.timestamp}


@dataclass(frozen=True)
class EngineRun:
    """What a leader records in the Lease about its engine run (annotation ``ENGINE_RUN``)."""

    host: str                          # socket.gethostname(): the lock's "hostname"
    started: str                       # UTC, the leader's clock (the lock's clock too)
    pids: tuple[int, ...] = ()         # the `pulumi` processes of the run, once seen
    master0: str | None = None         # the recovery it applies (None: master0 stays)
    down_hosts: tuple[str, ...] = ()
    state: str = "running"             # running | verified | failed

    def to_text(self) -> str:
        return json.dumps({"host": self.host, "started": self.started, "pids": list(self.pids),
                           "master0": self.master0, "down_hosts": list(self.down_hosts),
                           "state": self.state}, sort_keys=True)

    @classmethod
    def from_text(cls, text: str | None) -> "EngineRun | None":
        """None for a missing or unreadable annotation (never an exception: it comes from the
        apiserver, written by another watcher)."""
        if not text:
            return None
        try:
            doc = json.loads(text)
            return cls(host=str(doc["host"]), started=str(doc.get("started") or ""),
                       pids=tuple(int(p) for p in doc.get("pids") or ()),
                       master0=doc.get("master0") or None,
                       down_hosts=tuple(str(h) for h in doc.get("down_hosts") or ()),
                       state=str(doc.get("state") or "running"))
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class DeadRun:
    """An engine run known to be over without having removed its lock: the previous leader's
    (we took its Lease after it expired or was released: it stopped acting and killed its run
    at its renew deadline) or our own run that we killed."""

    run: EngineRun
    holder: str = ""        # the Lease holderIdentity it ran under
    why: str = ""


@dataclass(frozen=True)
class Verdict:
    clear: tuple[StackLock, ...] = ()
    keep: tuple[StackLock, ...] = ()
    why: str = ""

    @property
    def blocked(self) -> bool:
        return bool(self.keep)


def parse_time(text: str) -> datetime | None:
    """RFC 3339 as Go writes it (up to 9 fraction digits, Z or an offset) or as we do."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?",
                     (text or "").strip())
    if not m:
        return None
    frac = (m.group(2) or "")[:6].ljust(6, "0")
    zone = m.group(3) or "Z"
    try:
        return datetime.fromisoformat(f"{m.group(1)}.{frac}{'+00:00' if zone == 'Z' else zone}")
    except ValueError:
        return None


def _written_by(lock: StackLock, dead: DeadRun) -> str:
    """Why ``lock`` is ``dead``'s run's lock ("" when it is not)."""
    run = dead.run
    if lock.hostname != run.host:
        return ""
    if run.pids:
        return f"pid {lock.pid} is its engine" if lock.pid in run.pids else ""
    # Killed before it could record its engine's pid: a lock written on that host after the
    # run started, both by that host's clock.
    written, started = parse_time(lock.timestamp), parse_time(run.started)
    if written is not None and started is not None and written >= started:
        return "written on its host after its run started (its pid was not recorded yet)"
    return ""


def decide(locks: list[StackLock], dead: list[DeadRun]) -> Verdict:
    """Which locks may go: each one written by an engine run in ``dead`` (same hostname, and its
    recorded pid, else written after that run started). Everything else is kept, and a kept lock
    blocks the `up`: it may be an operator's `pulumi up`, or a run we know nothing of."""
    clear, keep, whys = [], [], []
    for lock in locks:
        match = next(((d, w) for d in dead if (w := _written_by(lock, d))), None)
        if match is None:
            keep.append(lock)
            owners = "; ".join(f"{d.run.host} pids {list(d.run.pids) or 'unrecorded'}"
                               for d in dead) or "none known"
            whys.append(f"{lock.describe()} is not an engine run of a previous leader whose lease "
                        f"expired (those: {owners}): left alone")
        else:
            clear.append(lock)
            whys.append(f"{lock.describe()}: the engine run of {match[0].holder or match[0].run.host} "
                        f"({match[0].why or 'its lease expired'}); {match[1]}")
    return Verdict(tuple(clear), tuple(keep), "; ".join(whys) or "the stack is not locked")


# ------------------------------------------------------------------------------ file:// I/O


def file_backend_root(url: str | None) -> Path | None:
    """The directory of a ``file://`` backend URL (None for any other backend)."""
    if not url or not url.startswith("file://"):
        return None
    parsed = urlparse(url)
    path = unquote((parsed.netloc or "") + parsed.path)
    if path.startswith("~"):
        path = str(Path(path).expanduser())
    return Path(path)


def lock_files(root: Path, project: str, stack: str) -> list[Path]:
    base = root / ".pulumi" / "locks"
    short = stack.rsplit("/", 1)[-1]
    dirs = [base / "organization" / project / short, base / short]
    return sorted(p for d in dirs if d.is_dir() for p in d.glob("*.json"))


def read_lock(path: Path) -> StackLock | None:
    try:
        doc = json.loads(path.read_text())
        return StackLock(str(path), int(doc["pid"]), str(doc.get("username") or ""),
                         str(doc.get("hostname") or ""), str(doc.get("timestamp") or ""))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_locks(root: Path, project: str, stack: str) -> list[StackLock]:
    return [lock for p in lock_files(root, project, stack) if (lock := read_lock(p)) is not None]


LOCK_LINE = re.compile(r"^\s*(?P<where>\S+): created by (?P<user>[^@\s]*)@(?P<host>\S+) "
                       r"\(pid (?P<pid>\d+)\) at (?P<ts>\S+)\s*$", re.M)


def parse_locked_error(text: str) -> list[StackLock]:
    """The locks the engine lists when it refuses to start (any DIY backend):
    ``  <url>: created by user@host (pid P) at T``."""
    if "currently locked" not in text:
        return []
    return [StackLock(m["where"], int(m["pid"]), m["user"], m["host"], m["ts"])
            for m in LOCK_LINE.finditer(text)]


def utc_stamp(at: datetime | None = None) -> str:
    at = at or datetime.now(timezone.utc)
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Pending:
    """The pending operations of a checkpoint (``pulumi stack export``'s deployment)."""

    operations: list[dict] = field(default_factory=list)

    @classmethod
    def of(cls, deployment: dict) -> "Pending":
        return cls(list(deployment.get("pending_operations") or []))

    def describe(self) -> list[str]:
        return [f"{(op.get('resource') or {}).get('urn', '?').rsplit('::', 1)[-1]} "
                f"({op.get('type', '?')})" for op in self.operations]


def without_pending(deployment: dict) -> dict:
    return {k: v for k, v in deployment.items() if k != "pending_operations"}


def checkpoint_paths(root: Path, project: str, stack: str) -> list[Path]:
    short = stack.rsplit("/", 1)[-1]
    base = root / ".pulumi" / "stacks"
    return [base / project / f"{short}.json", base / f"{short}.json"]


def repair_checkpoint(root: Path, project: str, stack: str) -> str:
    """A file:// backend writes the checkpoint in place (pulumi adds ``no_tmp_dir=true``): an
    engine killed during that write leaves it truncated ("failed to load checkpoint: EOF"), and
    every later command of the stack fails. The backend keeps the previous checkpoint beside it
    (``<stack>.json.bak``, pkg/backend/diy/state.go ``backupTarget``): restored when the
    checkpoint does not parse and the backup does. Call only when the writer is known dead.
    Returns what was done ("" when nothing was needed)."""
    for path in checkpoint_paths(root, project, stack):
        if not path.exists():
            continue
        try:
            json.loads(path.read_text())
            return ""
        except (OSError, ValueError):
            pass
        bak = path.with_name(path.name + ".bak")
        try:
            text = bak.read_text()
            json.loads(text)
        except (OSError, ValueError):
            return f"{path} does not parse, nor does {bak}: not repaired"
        tmp = path.with_name(path.name + ".sealer-tmp")
        tmp.write_text(text)
        tmp.replace(path)
        return f"{path} did not parse (its writer was killed): restored from {bak}"
    return ""
