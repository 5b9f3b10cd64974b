"""Leader election between `cli watch` processes through a ``coordination.k8s.io/v1`` Lease.

Several watchers of one stack (on different machines) must not both fence and recover. They
elect a leader the way Kubernetes' own controllers do (client-go ``tools/leaderelection`` with
its ``LeaseLock``): one Lease ``kube-system/sealer-registry-watch-<stack>`` whose spec says who
holds it, and a small loop of plain API calls:

- GET the Lease; absent: POST it naming us (201: we lead; 409 AlreadyExists: another watcher
  created it first, we follow);
- held by another watcher whose record has not changed for ``leaseDurationSeconds`` **by our own
  monotonic clock** since we first saw that record: PUT it naming us with the resourceVersion we
  read, ``acquireTime`` now and ``leaseTransitions`` + 1. A 409 Conflict means someone wrote it
  since our GET (the holder renewed, or another follower took it first): we follow. Remote
  timestamps are never compared with the local clock (client-go's rule: clocks of two machines
  disagree; only "it changed / it did not change for that long" is trusted);
- held by us: PUT it with a new ``renewTime`` (same resourceVersion rule).

The leader renews every ``retry_period``; when no renew has succeeded for ``renew_deadline``
(counted from the start of the last successful attempt, before its GET was sent) it stops
leading at once: ``leading()`` is False from that instant whatever the loop is doing, and the
``on_stopped`` callback runs (`cli watch` kills its engine run there). A follower takes over only
``lease_duration`` after the last change it saw, and ``lease_duration > renew_deadline`` leaves
the old leader that much time to have stopped. ``lease_duration > renew_deadline > 1.2 ×
retry_period`` is checked up front (``LeaseSettings.problems``), as client-go's
``NewLeaderElector`` checks it. On a clean stop the leader releases the Lease (holder emptied,
``leaseDurationSeconds`` 1, as client-go's ``ReleaseOnCancel``) so a follower takes over without
waiting for expiry.

The requests go through the apiservers of the records' rules (``kubeapi.config_candidates``: the
stack's ``kubernetes.endpoints``, else master0's apiserver then the other masters', never a host
on ``down_hosts``) with the kubeconfig's own credentials and trust (cli/apiserver.py). Unlike the
records, which use the first candidate only, the Lease tries the next candidate when one does not
answer (a dead master0 is not on ``down_hosts`` before the failover this election guards), and
stays on the one that answered last. Every request is bounded by the time left before the
renew deadline.

Why plain calls and not the ``kubernetes`` Python client's ``leaderelection``: that package is
not a dependency of this project (not in requirements.txt, not installed), and its elector
(kubernetes/base/leaderelection/leaderelection.py, read at kubernetes-client/python commit
01ae336f) does not give what a watcher that kills its engine needs: its renew loop sleeps without
bounding the requests by the renew deadline, it treats every failed update alike (no 409 vs.
apiserver down), it writes renewTime from the local naive ``datetime.fromtimestamp`` (not UTC),
never increments ``leaseTransitions``, and runs ``onstarted_leading`` in a thread it never stops.
Packaging it is itself unsettled (kubernetes-client/python PR #2710, open: "added dynamic,
leaderelection, stream, watch to setup-release.py"). The Lease API itself is stable (v1) and the
election rules fit in this module; the decision part (``Election``) is pure and unit-tested with
a fake apiserver and a fake clock (tests/unit/test_cli_lease.py).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Protocol

NAMESPACE = "kube-system"
LEASE_PREFIX = "sealer-registry-watch-"
JITTER = 1.2  # client-go's JitterFactor for the leader's renew interval checks


# ------------------------------------------------------------------------------ settings


class LeaseSettingsError(ValueError):
    """Lease timings that would let two watchers act at once."""


@dataclass(frozen=True)
class LeaseSettings:
    lease_duration: float = 15.0   # a follower takes over after this long without a change
    renew_deadline: float = 10.0   # the leader stops acting after this long without a renew
    retry_period: float = 2.0      # between two attempts (acquire or renew)

    def problems(self) -> list[str]:
        """Why these timings are unsafe ([] when fine): client-go's checks, naming the flags."""
        out = []
        for flag, value in (("--lease-duration", self.lease_duration),
                            ("--renew-deadline", self.renew_deadline),
                            ("--retry-period", self.retry_period)):
            if value <= 0:
                out.append(f"{flag} {value:g}s: must be more than 0")
        if out:
            return out
        if self.lease_duration < 1:
            out.append(f"--lease-duration {self.lease_duration:g}s: must be at least 1s "
                       "(the Lease records whole seconds)")
        if self.lease_duration <= self.renew_deadline:
            out.append(f"--lease-duration {self.lease_duration:g}s: must be more than "
                       f"--renew-deadline ({self.renew_deadline:g}s), or a follower could take "
                       "over before the leader stopped acting")
        if self.renew_deadline <= JITTER * self.retry_period:
            out.append(f"--renew-deadline {self.renew_deadline:g}s: must be more than "
                       f"{JITTER:g} x --retry-period ({JITTER * self.retry_period:g}s), or one "
                       "slow renew would end the leadership")
        return out

    def check(self) -> "LeaseSettings":
        problems = self.problems()
        if problems:
            raise LeaseSettingsError("\n".join(problems))
        return self

    @property
    def duration_seconds(self) -> int:
        """``leaseDurationSeconds``: whole seconds, rounded up (never promise less)."""
        return max(1, int(-(-self.lease_duration // 1)))


def lease_name(stack: str) -> str:
    """``sealer-registry-watch-<stack>`` as a valid object name (lowercase DNS subdomain); a
    stack name that had to be changed gets a short hash of the original, so that two stacks never
    share a Lease."""
    clean = re.sub(r"[^a-z0-9.-]+", "-", stack.lower()).strip("-.")
    name = LEASE_PREFIX + clean
    if clean != stack:
        name += "-" + hashlib.sha256(stack.encode()).hexdigest()[:8]
    return name[:253]


def identity() -> str:
    """A stable id for this process: host, pid, and a random part (a pid reused after a reboot
    is another watcher)."""
    return f"{socket.gethostname()}_{os.getpid()}_{random.getrandbits(32):08x}"


def micro_time(at: datetime) -> str:
    """Kubernetes MicroTime: RFC 3339 in UTC with microseconds."""
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


# ------------------------------------------------------------------------------ the record


@dataclass(frozen=True)
class Record:
    """The Lease spec fields the election reads and writes."""

    holder: str = ""
    duration_s: int = 0
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0

    @classmethod
    def of(cls, spec: dict | None) -> "Record":
        spec = spec or {}
        return cls(holder=spec.get("holderIdentity") or "",
                   duration_s=int(spec.get("leaseDurationSeconds") or 0),
                   acquire_time=spec.get("acquireTime"), renew_time=spec.get("renewTime"),
                   transitions=int(spec.get("leaseTransitions") or 0))

    def spec(self) -> dict:
        out: dict = {"holderIdentity": self.holder, "leaseDurationSeconds": self.duration_s,
                     "leaseTransitions": self.transitions}
        if self.acquire_time:
            out["acquireTime"] = self.acquire_time
        if self.renew_time:
            out["renewTime"] = self.renew_time
        return out


# ------------------------------------------------------------------------------ the API


@dataclass(frozen=True)
class Reply:
    status: int               # HTTP status; 0: no answer (every endpoint tried failed)
    obj: dict | None = None   # the Lease as the apiserver returned it
    detail: str = ""          # what happened, for the log
    endpoint: str = ""


class LeaseApi(Protocol):
    """GET / POST / PUT of one Lease; each call returns by ``until`` (a ``clock`` instant)."""

    def get(self, until: float) -> Reply: ...
    def create(self, obj: dict, until: float) -> Reply: ...
    def replace(self, obj: dict, until: float) -> Reply: ...


def lease_object(name: str, namespace: str, record: Record,
                 annotations: dict[str, str] | None = None) -> dict:
    metadata: dict = {"name": name, "namespace": namespace}
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": metadata, "spec": record.spec()}


def annotations_of(obj: dict | None) -> dict[str, str]:
    return dict(((obj or {}).get("metadata") or {}).get("annotations") or {})


def with_annotations(obj: dict, changes: dict[str, str | None]) -> dict:
    """``obj`` with ``changes`` applied to its annotations (None removes a key; a key not in
    ``changes`` keeps the value the Lease has: another leader's record stays until replaced)."""
    if not changes:
        return obj
    notes = annotations_of(obj)
    for key, value in changes.items():
        if value is None:
            notes.pop(key, None)
        else:
            notes[key] = value
    return {**obj, "metadata": {**(obj.get("metadata") or {}), "annotations": notes}}


class HttpLeaseApi:
    """The Lease through the apiservers ``endpoints()`` names (called at every request: the
    watcher's current config, so a host put on down_hosts is never dialled again), trying the
    next one when one does not answer, starting with the last one that answered."""

    def __init__(self, creds, endpoints: Callable[[], list[str]], name: str,
                 namespace: str = NAMESPACE, per_endpoint_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic):
        self.creds, self.endpoints, self.name, self.namespace = creds, endpoints, name, namespace
        self.per_endpoint_s, self.clock = per_endpoint_s, clock
        self.last_answered: str | None = None

    @property
    def path(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases"

    def get(self, until: float) -> Reply:
        return self._call("GET", f"{self.path}/{self.name}", None, until)

    def create(self, obj: dict, until: float) -> Reply:
        return self._call("POST", self.path, obj, until)

    def replace(self, obj: dict, until: float) -> Reply:
        return self._call("PUT", f"{self.path}/{self.name}", obj, until)

    def _order(self) -> list[str]:
        urls = list(self.endpoints())
        if self.last_answered in urls:
            i = urls.index(self.last_answered)
            urls = urls[i:] + urls[:i]
        return urls

    def _call(self, method: str, path: str, obj: dict | None, until: float) -> Reply:
        from cli import apiserver

        failures = []
        urls = self._order()
        if not urls:
            return Reply(0, detail="no apiserver left: every candidate's host is on down_hosts")
        for url in urls:
            left = until - self.clock()
            if left < 0.05:
                failures.append(f"{url}: no time left")
                break
            try:
                status, body = apiserver.request(url, self.creds, method, path,
                                                 None if obj is None else json.dumps(obj).encode(),
                                                 timeout=min(self.per_endpoint_s, left))
            except (OSError, ssl.SSLError, http.client.HTTPException) as e:
                failures.append(f"{url}: {getattr(e, 'strerror', None) or str(e) or type(e).__name__}")
                continue
            if status >= 500:  # the apiserver answered but cannot serve (etcd): try another
                failures.append(f"{url}: {method} answered {status}")
                continue
            self.last_answered = url
            try:
                parsed = json.loads(body) if body else None
            except ValueError:
                parsed = None
            return Reply(status, parsed, f"{method} answered {status}", url)
        return Reply(0, detail="; ".join(failures))


# ------------------------------------------------------------------------------ the election


@dataclass(frozen=True)
class Attempt:
    ok: bool
    why: str
    endpoint: str = ""
    lost: bool = False        # another watcher holds the Lease now (not only a failed call)
    conflict: bool = False    # the apiserver answered 409
    holder: str = ""          # the holder seen (when not us)
    transitions: int = 0


class Election:
    """One watcher's view of the Lease and the acquire-or-renew step (client-go's
    ``tryAcquireOrRenew``): the decisions use only ``clock`` (local, monotonic) for time; the
    I/O is the ``api``'s."""

    def __init__(self, api: LeaseApi, me: str, settings: LeaseSettings, name: str,
                 namespace: str = NAMESPACE, *, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = utc_now,
                 annotations: Callable[[], dict[str, str | None]] = dict):
        """``annotations``: what this watcher writes in the Lease's metadata with every create
        and renew (None removes a key; keys it does not name are kept as they are)."""
        self.api, self.me, self.settings = api, me, settings
        self.annotations = annotations
        # The holder and annotations of the Lease this watcher last took over (from another
        # holder, or released): what the previous leader recorded about its engine run.
        self.took_over: tuple[str, dict[str, str]] | None = None
        # How long (this clock) the Lease taken over had been seen unchanged when it was taken:
        # its last write is at least that old (a duration recorded there, e.g. a hold-down,
        # is then at least that much shorter; no remote timestamp is compared).
        self.took_over_unchanged_s: float = 0.0
        self.seen_annotations: dict[str, str] = {}   # of the Lease as last read
        self.name, self.namespace = name, namespace
        self.clock, self.wall = clock, wall
        self.observed: Record | None = None
        self.observed_at: float | None = None   # clock() when ``observed`` was first seen
        self.renewed_at: float | None = None    # clock() at the start of the last good attempt

    def leading(self, now: float | None = None) -> bool:
        """True until ``renew_deadline`` after the start of the last successful attempt."""
        if self.renewed_at is None:
            return False
        now = self.clock() if now is None else now
        return now < self.renewed_at + self.settings.renew_deadline

    def deadline(self) -> float:
        """When the current attempt must be over: the renew deadline for a leader; one
        renew_deadline from now for a follower."""
        if self.renewed_at is not None and self.leading():
            return self.renewed_at + self.settings.renew_deadline
        return self.clock() + self.settings.renew_deadline

    def _observe(self, record: Record) -> None:
        if record != self.observed:
            self.observed, self.observed_at = record, self.clock()

    def try_acquire_or_renew(self) -> Attempt:
        start = self.clock()
        until = self.deadline()
        now = micro_time(self.wall())
        got = self.api.get(until)
        if got.status == 404:
            mine = Record(self.me, self.settings.duration_seconds, now, now, 0)
            notes = {k: v for k, v in self.annotations().items() if v is not None}
            made = self.api.create(lease_object(self.name, self.namespace, mine, notes), until)
            if made.status in (200, 201):
                self._observe(Record.of((made.obj or {}).get("spec")) if made.obj else mine)
                self.renewed_at = start
                return Attempt(True, "created the Lease", made.endpoint)
            if made.status == 409:
                return Attempt(False, "409 on create: another watcher created the Lease first",
                               made.endpoint, conflict=True)
            return Attempt(False, f"create: {made.detail}", made.endpoint)
        if got.status != 200 or not got.obj:
            return Attempt(False, f"get: {got.detail}", got.endpoint)
        current = Record.of(got.obj.get("spec"))
        self._observe(current)
        self.seen_annotations = annotations_of(got.obj)
        assert self.observed_at is not None
        if current.holder and current.holder != self.me:
            expires = self.observed_at + (current.duration_s or self.settings.duration_seconds)
            if self.clock() < expires:
                return Attempt(False, f"held by {current.holder}: unchanged for "
                                      f"{self.clock() - self.observed_at:.1f}s of "
                                      f"{current.duration_s or self.settings.duration_seconds}s",
                               got.endpoint, lost=True, holder=current.holder,
                               transitions=current.transitions)
        ours = current.holder == self.me
        mine = Record(self.me, self.settings.duration_seconds,
                      current.acquire_time if ours and current.acquire_time else now, now,
                      current.transitions if ours else current.transitions + 1)
        obj = with_annotations(dict(got.obj), self.annotations())
        obj["spec"] = {**(got.obj.get("spec") or {}), **mine.spec()}
        unchanged = self.clock() - self.observed_at
        put = self.api.replace(obj, until)
        if put.status == 200:
            if not ours:
                self.took_over_unchanged_s = max(0.0, unchanged)
            self._observe(Record.of((put.obj or {}).get("spec")) if put.obj else mine)
            self.renewed_at = start
            if not ours:
                self.took_over = (current.holder, annotations_of(got.obj))
            what = "renewed" if ours else (f"took over from {current.holder}" if current.holder
                                           else "took the released Lease")
            return Attempt(True, what, put.endpoint, holder=current.holder,
                           transitions=mine.transitions)
        if put.status == 409:
            return Attempt(False, "409 Conflict: the Lease changed since it was read (another "
                                  "watcher wrote it)", put.endpoint, conflict=True)
        return Attempt(False, f"update: {put.detail}", put.endpoint)

    def release(self) -> bool:
        """The leader gives the Lease up (holder emptied, duration 1s, as client-go's
        ReleaseOnCancel) so that a follower takes over at its next attempt; False when it was
        not ours or the write failed."""
        if not self.leading():
            return False
        until = self.deadline()
        got = self.api.get(until)
        if got.status != 200 or not got.obj:
            return False
        current = Record.of(got.obj.get("spec"))
        if current.holder != self.me:
            return False
        now = micro_time(self.wall())
        empty = Record("", 1, now, now, current.transitions)
        obj = dict(got.obj)
        obj["spec"] = {**(got.obj.get("spec") or {}), **empty.spec()}
        done = self.api.replace(obj, until).status == 200
        if done:
            self.renewed_at = None
        return done


class Elector:
    """The loop around an ``Election`` (run in its own thread): acquire, then renew every
    ``retry_period``; callbacks when leading starts and stops, and on each failed renew."""

    def __init__(self, election: Election, *,
                 on_started: Callable[[Attempt], None] = lambda a: None,
                 on_stopped: Callable[[str], None] = lambda why: None,
                 on_renew_failed: Callable[[Attempt, float], None] = lambda a, left: None,
                 on_follow: Callable[[Attempt], None] = lambda a: None,
                 on_error: Callable[[Attempt], None] = lambda a: None):
        """``on_follow``: once per holder seen while following; ``on_error``: once per reason
        while a follower's attempts fail without naming a holder (no apiserver answers, 403)."""
        self.election = election
        self.on_started, self.on_stopped = on_started, on_stopped
        self.on_renew_failed, self.on_follow, self.on_error = on_renew_failed, on_follow, on_error
        self.is_leader = False     # what the callbacks were told (``leading()`` is the truth)
        self._followed = ""
        self._error = ""
        self._lock = threading.Lock()
        self._io = threading.Lock()  # one attempt at a time (the loop's, or ``renew_now``'s)

    @property
    def settings(self) -> LeaseSettings:
        return self.election.settings

    def leading(self) -> bool:
        return self.is_leader and self.election.leading()

    def step(self) -> float:
        """One attempt and its callbacks; the seconds to wait before the next."""
        e, s = self.election, self.settings
        with self._io:
            attempt = e.try_acquire_or_renew()
        with self._lock:
            if attempt.ok:
                self._followed = self._error = ""
                if not self.is_leader:
                    self.is_leader = True
                    self.on_started(attempt)
                return s.retry_period
            if self.is_leader:
                if attempt.lost or not e.leading():
                    self.is_leader = False
                    why = (attempt.why if attempt.lost else
                           f"no renew for {s.renew_deadline:g}s (--renew-deadline); last: "
                           f"{attempt.why}")
                    self.on_stopped(why)
                    return s.retry_period
                left = e.renewed_at + s.renew_deadline - e.clock()
                self.on_renew_failed(attempt, left)
                return max(0.0, min(s.retry_period, left))
            if attempt.holder:
                self._error = ""
                if attempt.holder != self._followed:
                    self._followed = attempt.holder
                    self.on_follow(attempt)
            elif not attempt.conflict and attempt.why != self._error:
                self._error = attempt.why
                self.on_error(attempt)
            return s.retry_period

    def renew_now(self) -> bool:
        """A renew at once, out of the loop's rhythm (the leader records its engine run in the
        Lease before it starts it): True when it is written and we still lead."""
        with self._io:
            if not self.leading():
                return False
            attempt = self.election.try_acquire_or_renew()
        return attempt.ok and self.leading()

    def expire(self) -> None:
        """Stop leading now if the renew deadline passed while an attempt was still running
        (the watchdog: ``step`` returns by the deadline, this makes it exact)."""
        with self._lock:
            if self.is_leader and not self.election.leading():
                self.is_leader = False
                self.on_stopped(f"no renew for {self.settings.renew_deadline:g}s "
                                "(--renew-deadline)")

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            wait = self.step()
            # Wake at the renew deadline at the latest, so a lost leadership is acted on then.
            while wait > 0 and not stop.is_set():
                e = self.election
                chunk = wait
                if self.is_leader and e.renewed_at is not None:
                    chunk = min(wait, max(0.01, e.renewed_at + self.settings.renew_deadline
                                          - e.clock()))
                if stop.wait(chunk):
                    break
                wait -= chunk
                self.expire()

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), name="lease", daemon=True)
        thread.start()
        return thread
