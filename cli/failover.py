"""The watcher's decisions, as pure functions of what the probers reported and when (`cli watch`
does the I/O). Unit-tested with hand-made rounds and timestamps: tests/unit/test_cli_failover.py.

Votes. Each round, every prober (a live cluster host other than master0, masters first) runs
`scripts/watch-probe.sh` over its own long-lived SSH connection and curls master0's registry:
  ALIVE   it answered /v2/ with 200 or 401 (auth on)
  DEAD    the prober ran the probe and master0 did not answer so (timeout, refused, 5xx)
  NOVOTE  the prober itself could not be reached or its probe failed: it says nothing about
          master0 (a partition of one prober is not evidence against master0)

Rules that keep a failover from ever acting on thin evidence:
  - a round says "dead" only when a majority of the probers (n // 2 + 1 of n) voted DEAD;
  - master0 is decided dead only when every round for ``window`` seconds said so, with at least
    ``min_rounds`` rounds and no gap longer than ``max_gap`` between them; any other round (one
    ALIVE vote is enough to block the majority... or too few votes) restarts the count;
  - fewer than ``min_probers`` probers: nothing is decided;
  - after a failover, ``hold_down`` seconds without a new one, whatever the rounds say;
  - a fenced host (on down_hosts) that answers again is reported (``returned``) once an answering
    majority holds over the window too; it is never made master0 again by the watcher until it
    was rejoined and holds a replica stamp written after that.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Iterable

ALIVE_CODES = ("200", "401")
CURL_REFUSED = 7          # curl: the host answered with a TCP reset: it is up, its registry is not


class Vote(StrEnum):
    ALIVE = "alive"
    DEAD = "dead"
    NOVOTE = "novote"


@dataclass(frozen=True)
class Probe:
    """What one prober reported about one target in one round."""

    prober: str
    vote: Vote
    detail: str = ""          # "http 401", "curl exit 28", "ssh: Connection timed out"
    answers: bool = False     # the target's host answered at all (any HTTP code, or refused)


@dataclass(frozen=True)
class Round:
    at: float                 # monotonic seconds when the round's probes were all back
    target: str
    probes: tuple[Probe, ...]

    def count(self, vote: Vote) -> int:
        return sum(1 for p in self.probes if p.vote is vote)

    def evidence(self) -> dict[str, str]:
        return {p.prober: f"{p.vote}: {p.detail}" if p.detail else str(p.vote) for p in self.probes}


def quorum(probers: int) -> int:
    """A strict majority of the probers."""
    return probers // 2 + 1


def vote_of(code: str, curl_rc: int) -> tuple[Vote, bool]:
    """A prober's reading of one target: (vote, whether the host answered at all)."""
    answered = (code.isdigit() and code != "000") or curl_rc == CURL_REFUSED
    return (Vote.ALIVE if code in ALIVE_CODES else Vote.DEAD), answered


# ------------------------------------------------------------------------------ durations

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> float:
    """`6s`, `500ms`, `2m`, `1h`, or a plain number of seconds; ValueError otherwise."""
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"{text!r} is not a duration (e.g. 6s, 500ms, 2m)")
    return float(m.group(1)) * _UNIT[m.group(2)]


@dataclass(frozen=True)
class Settings:
    window: float = 6.0          # dead rounds must span this long
    interval: float = 1.0        # a round starts at most this often
    hold_down: float = 60.0      # after a failover, no other one for this long
    min_probers: int = 2         # fewer probers: never decide
    min_rounds: int = 2          # one failed round never acts, whatever the window
    max_gap: float | None = None  # longer between two rounds: the evidence restarts

    @property
    def gap(self) -> float:
        return self.max_gap if self.max_gap is not None else max(5.0, 3 * self.interval)

    def problems(self) -> list[str]:
        """Why these settings could act on thin evidence or flap ([] when they are fine)."""
        out = []
        if self.interval <= 0:
            out.append(f"--interval {self.interval:g}s: must be more than 0")
        if self.window < 2 * self.interval:
            out.append(f"--window {self.window:g}s: must hold at least two rounds "
                       f"(2 x --interval = {2 * self.interval:g}s)")
        if self.hold_down < self.window:
            out.append(f"--hold-down {self.hold_down:g}s: must be at least the window "
                       f"({self.window:g}s), or a failover could follow a failover")
        if self.min_probers < 2:
            out.append(f"--min-probers {self.min_probers}: must be at least 2 (one prober "
                       "cut off from master0 alone must never act)")
        if self.min_rounds < 2:
            out.append(f"min_rounds {self.min_rounds}: must be at least 2")
        return out


# ------------------------------------------------------------------------------ streaks


@dataclass
class Streak:
    """Consecutive rounds that all said the same thing (dead; or answering, for a fenced host)."""

    since: float | None = None
    last: float | None = None
    rounds: int = 0

    def extend(self, at: float, gap: float) -> None:
        if self.last is None or at - self.last > gap:
            self.since, self.rounds = at, 0
        self.last = at
        self.rounds += 1

    def reset(self) -> None:
        self.since = self.last = None
        self.rounds = 0

    def held(self, at: float) -> float:
        return 0.0 if self.since is None else at - self.since

    def sustained(self, at: float, settings: Settings) -> bool:
        return self.rounds >= settings.min_rounds and self.held(at) >= settings.window


class Kind(StrEnum):
    """What a decision says; FAILOVER and REJOIN ask the watcher to act."""

    SUSPECT = "suspect"          # a first round with a dead majority: counting starts
    CLEARED = "cleared"          # the count restarted before the window was full
    UNDECIDABLE = "undecidable"  # too few probers (or too few of them answering) to decide
    FAILOVER = "failover"        # master0 is dead: fence it, move the registry
    RESUME = "resume"            # master0 (put there by a recovery that did not verify) is not
                                 # serving: rerun that recovery, never fence it too
    HELD = "held"                # dead, but inside the hold-down after a failover: no action
    RETURNED = "returned"        # a fenced host answers again (sustained)
    REJOIN = "rejoin"            # ... and --rejoin-returning asks to rejoin it as a standby
    GONE = "gone"                # a returned fenced host is silent again


@dataclass(frozen=True)
class Decision:
    kind: Kind
    target: str
    at: float
    why: str
    evidence: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict:
        return {"decision": str(self.kind), "target": self.target, "why": self.why,
                "evidence": self.evidence}


@dataclass
class Returning:
    streak: Streak = field(default_factory=Streak)
    back: bool = False


class Watch:
    """The decision state of one watcher: feed it rounds, act on what it returns."""

    def __init__(self, settings: Settings, master0: str, fenced: Iterable[str] = (),
                 rejoin_returning: bool = False):
        self.settings = settings
        self.master0 = master0
        self.rejoin_returning = rejoin_returning
        self.dead = Streak()
        self.hold_until: float | None = None
        self.hold_why = ""
        self.undecidable = False
        self.held_logged = False
        self.fenced: dict[str, Returning] = {ip: Returning() for ip in fenced}
        self.unverified = False    # the last recovery's `up` or check failed

    # -- master0 ----------------------------------------------------------------------------
    def in_hold_down(self, at: float) -> bool:
        return self.hold_until is not None and at < self.hold_until

    def hold_left(self, at: float) -> float:
        """Seconds of hold-down left at ``at`` (0 when none)."""
        return 0.0 if self.hold_until is None else max(0.0, self.hold_until - at)

    def hold_for(self, seconds: float, at: float, why: str = "") -> None:
        """A hold-down of ``seconds`` from ``at`` (one the previous leader started): the longer
        of it and any this watch already holds."""
        if seconds > 0:
            self.hold_until = max(self.hold_until or at, at + seconds)
            self.hold_why = why or self.hold_why

    def observe(self, rnd: Round) -> list[Decision]:
        """One round of probes of master0 -> the decisions it makes (usually none)."""
        if rnd.target != self.master0:
            return self.observe_fenced(rnd)
        s, n = self.settings, len(rnd.probes)
        voting = n - rnd.count(Vote.NOVOTE)
        dead, alive = rnd.count(Vote.DEAD), rnd.count(Vote.ALIVE)
        out: list[Decision] = []
        if n < s.min_probers or (dead < quorum(n) and alive == 0 and voting < quorum(n)):
            # Not enough probers, or not enough of them answering to reach a majority either way.
            if not self.undecidable:
                out.append(Decision(Kind.UNDECIDABLE, rnd.target, rnd.at,
                                    f"{voting} of {n} probers vote (need {quorum(n)} of at "
                                    f"least {s.min_probers}): nothing can be decided",
                                    rnd.evidence()))
            self.undecidable = True
            out += self._clear(rnd, "too few votes")
            return out
        self.undecidable = False
        if alive >= quorum(n):
            # master0 serves: whatever recovery put it there took effect.
            self.unverified = False
        if dead < quorum(n):
            return self._clear(rnd, f"{dead} of {n} probers see it dead (majority {quorum(n)})")
        first = self.dead.last is None or rnd.at - self.dead.last > s.gap
        self.dead.extend(rnd.at, s.gap)
        held = self.dead.held(rnd.at)
        why = (f"{dead} of {n} probers see master0 dead for {held:.1f}s over "
               f"{self.dead.rounds} rounds (majority {quorum(n)}, window {s.window:g}s)")
        if first:
            out.append(Decision(Kind.SUSPECT, rnd.target, rnd.at, why, rnd.evidence()))
        if not self.dead.sustained(rnd.at, s):
            return out
        if self.in_hold_down(rnd.at):
            if not self.held_logged:
                out.append(Decision(Kind.HELD, rnd.target, rnd.at,
                                    f"{why}; in hold-down for {self.hold_until - rnd.at:.1f}s "
                                    "more after the last failover: no action", rnd.evidence()))
                self.held_logged = True
            return out
        if self.unverified:
            out.append(Decision(Kind.RESUME, rnd.target, rnd.at,
                                f"{why}; the recovery that made it master0 did not verify: "
                                "rerun it", rnd.evidence()))
        else:
            out.append(Decision(Kind.FAILOVER, rnd.target, rnd.at, why, rnd.evidence()))
        return out

    def _clear(self, rnd: Round, why: str) -> list[Decision]:
        was = self.dead.rounds
        self.dead.reset()
        self.held_logged = False
        if was:
            return [Decision(Kind.CLEARED, rnd.target, rnd.at,
                             f"after {was} dead rounds: {why}", rnd.evidence())]
        return []

    def failed_over(self, new_master0: str, at: float, verified: bool) -> None:
        """After a recovery `up` ran (verified or not): the old master0 is fenced, the new one
        watched, and nothing acts again before the hold-down ends. ``verified`` False: the next
        dead decision reruns that recovery instead of fencing the new master0."""
        self.unverified = not verified
        old = self.master0
        self.fenced.setdefault(old, Returning())
        self.master0 = new_master0
        self.fenced.pop(new_master0, None)
        self.dead.reset()
        self.undecidable = False
        self.held_logged = False
        self.hold_until = at + self.settings.hold_down
        self.hold_why = f"recovery of master0 {old} -> {new_master0}" + ("" if verified else
                                                                         " (not verified)")

    def held_off(self, at: float) -> None:
        """A failover was decided but could not act (no candidate): wait a hold-down, then the
        evidence is counted again from scratch."""
        self.dead.reset()
        self.hold_until = at + self.settings.hold_down
        self.hold_why = f"a failover of master0 {self.master0} could not act"

    # -- fenced hosts -----------------------------------------------------------------------
    def observe_fenced(self, rnd: Round) -> list[Decision]:
        state = self.fenced.get(rnd.target)
        if state is None:
            return []
        n = len(rnd.probes)
        answering = sum(1 for p in rnd.probes if p.vote is not Vote.NOVOTE and p.answers)
        silent = sum(1 for p in rnd.probes if p.vote is not Vote.NOVOTE and not p.answers)
        if n < self.settings.min_probers:
            return []
        if answering >= quorum(n):
            state.streak.extend(rnd.at, self.settings.gap)
            if not state.back and state.streak.sustained(rnd.at, self.settings):
                state.back = True
                serving = sum(1 for p in rnd.probes if p.vote is Vote.ALIVE)
                why = (f"fenced host answers again: {answering} of {n} probers for "
                       f"{state.streak.held(rnd.at):.1f}s; its registry answers /v2/ to "
                       f"{serving} of them (stale data: nodes stay on master0 {self.master0})")
                out = [Decision(Kind.RETURNED, rnd.target, rnd.at, why, rnd.evidence())]
                if self.rejoin_returning:
                    out.append(Decision(Kind.REJOIN, rnd.target, rnd.at,
                                        "--rejoin-returning: rejoin it as a standby (it points "
                                        f"at master0 {self.master0}, its registry stops)",
                                        rnd.evidence()))
                return out
            return []
        state.streak.reset()
        if state.back and silent >= quorum(n):
            state.back = False
            return [Decision(Kind.GONE, rnd.target, rnd.at,
                             f"fenced host silent again for {silent} of {n} probers",
                             rnd.evidence())]
        return []

    def rejoined(self, host: str) -> None:
        self.fenced.pop(host, None)


# ------------------------------------------------------------------------------ hold-down record

HOLD_DOWN = "sealer-registry.io/hold-down"   # the Lease annotation of the leader's hold-down


@dataclass(frozen=True)
class HoldDown:
    """What a leader records in the Lease with every renew while it is in a hold-down, so that a
    leader that takes over honours it instead of starting from none: ``left_s`` seconds were
    left when it wrote the Lease (by its own monotonic clock); ``until`` is the same end by its
    wall clock, for a person reading the Lease (never compared with another clock)."""

    left_s: float
    until: str = ""
    why: str = ""

    def to_text(self) -> str:
        return json.dumps({"left_s": round(self.left_s, 3), "until": self.until,
                           "why": self.why}, sort_keys=True)

    @classmethod
    def from_text(cls, text: str | None) -> "HoldDown | None":
        """None for a missing or unreadable annotation (written by another watcher)."""
        if not text:
            return None
        try:
            doc = json.loads(text)
            left = float(doc["left_s"])
        except (ValueError, KeyError, TypeError):
            return None
        if left != left or left < 0 or left == float("inf"):
            return None
        return cls(left, str(doc.get("until") or ""), str(doc.get("why") or ""))

    def remaining(self, unchanged_s: float) -> float:
        """Left now, given the Lease had stayed unchanged ``unchanged_s`` seconds by the new
        leader's clock (its last write is at least that old): never less than what is really
        left, at most one lease duration more."""
        return max(0.0, self.left_s - max(0.0, unchanged_s))


# ------------------------------------------------------------------------------ probers


def pick_probers(masters: list[str], nodes: list[str], master0: str, down: Iterable[str],
                 count: int = 3) -> list[str]:
    """Up to ``count`` live hosts other than master0, masters first, in config order."""
    down = set(down)
    return [ip for ip in [*masters, *nodes] if ip != master0 and ip not in down][:count]


# ------------------------------------------------------------------------------ replicas

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Stamp:
    """`<rootfs>/registry/.sealer-replica` (COMMON.md's contract): a complete, verified copy."""

    source: str
    completed_at: int
    files: int
    bytes: int
    tree: str


def parse_stamp(text: str) -> Stamp:
    """The stamp's one JSON line; ValueError saying what is wrong (read defensively: a stamp
    being written by another version, or truncated, is no stamp)."""
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise ValueError(f"not JSON ({e.msg})") from None
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    for key in ("completed_at", "files", "bytes"):
        value = doc.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{key} is {value!r}, not a non-negative integer")
    source = doc.get("source")
    if not isinstance(source, str) or not source:
        raise ValueError(f"source is {source!r}, not an address or 'self'")
    tree = doc.get("tree")
    if not isinstance(tree, str) or not _HEX64.match(tree):
        raise ValueError(f"tree is {tree!r}, not a sha256 hex digest")
    return Stamp(source, doc["completed_at"], doc["files"], doc["bytes"], tree)


@dataclass(frozen=True)
class Replica:
    """What is known of one host's registry data when a new master0 is picked."""

    stamp: Stamp | None = None
    stamp_problem: str = ""          # why there is no usable stamp ("none", "unreadable", ...)
    refs_complete: bool | None = None  # status-probe's reading (None: not read)


def rank_candidates(*, masters: list[str], deploy_hosts: list[str], down: Iterable[str],
                    old_master0: str, replicas: dict[str, Replica], rejoined_at: dict[str, float],
                    require_replica: bool) -> tuple[list[str], dict[str, str]]:
    """The hosts that may become master0, best first, and why each other host may not.

    A candidate is a live master (only masters may be master0), a deploy host, not the old
    master0. Best: a replica stamp; then (until every host writes stamps) a replica whose every
    boot-history ref is present; then, when ``require_replica`` is off (post mode: the data is
    copied from the store), any other. A host the watcher rejoined needs a stamp written after
    its rejoin: its registry data was stale when it came back."""
    down = set(down)
    stamped, by_refs, bare = [], [], []
    rejected: dict[str, str] = {}
    for ip in masters:
        if ip == old_master0:
            rejected[ip] = "the old master0 (fenced)"
            continue
        if ip in down:
            rejected[ip] = "on down_hosts"
            continue
        if ip not in deploy_hosts:
            rejected[ip] = "not a deploy host"
            continue
        rep = replicas.get(ip, Replica(stamp_problem="not read"))
        since = rejoined_at.get(ip)
        if since is not None and (rep.stamp is None or rep.stamp.completed_at <= since):
            rejected[ip] = "rejoined by the watcher; no replica stamp written since"
            continue
        if rep.stamp is not None:
            stamped.append(ip)
        elif rep.refs_complete:
            by_refs.append(ip)
        elif not require_replica:
            bare.append(ip)
        else:
            rejected[ip] = (f"no complete replica (stamp: {rep.stamp_problem or 'none'}; "
                            f"refs: {'incomplete' if rep.refs_complete is False else 'not read'})")
    return [*stamped, *by_refs, *bare], rejected


def rank_ha_candidates(*, sealer_masters: list[str] | None, masters: list[str],
                       deploy_hosts: list[str], down: Iterable[str],
                       old_master0: str) -> tuple[list[str], dict[str, str]]:
    """sealer's HA layout: every master serves its own registry, so the new master0 is not
    chosen by its data but by sealer's own rule: master0 is the first master of sealer's
    Clusterfile (``sealer_masters``, its order; None when it could not be read: the stack's
    ``masters`` order). Masters the Clusterfile does not list follow in the stack's order.
    Candidates: live masters that are deploy hosts, not the old master0; a master the watcher
    rejoined is one too (in HA it serves its own data from the moment it is back)."""
    down = set(down)
    order = [ip for ip in (sealer_masters or []) if ip in masters]
    order += [ip for ip in masters if ip not in order]
    ranked: list[str] = []
    rejected: dict[str, str] = {}
    for ip in order:
        if ip == old_master0:
            rejected[ip] = "the old master0 (fenced)"
        elif ip in down:
            rejected[ip] = "on down_hosts"
        elif ip not in deploy_hosts:
            rejected[ip] = "not a deploy host"
        else:
            ranked.append(ip)
    return ranked, rejected


# ------------------------------------------------------------------------------ a prober's report


# ------------------------------------------------------------------------------ stale standbys


def master0_tree_of(stdout: str) -> str | None:
    """`watch-probe.sh --tree`'s ``tree=<sha256>`` (master0's live tree, the stamp's formula), or
    None when the report has none (no probe=1, no tree line, no registry tree)."""
    lines = stdout.splitlines()
    if "probe=1" not in lines:
        return None
    for line in lines:
        if line.startswith("tree="):
            value = line.removeprefix("tree=").strip()
            return value if _HEX64.match(value) else None
    return None


def stale_standbys(master0_tree: str | None, standbys: Iterable[str],
                   replicas: dict[str, Replica], marked: dict[str, str]) -> dict[str, str]:
    """The warm standbys to mark stale now (host -> why): master0's tree moved away from the
    tree their replica stamp was copied from, so their registry would answer a moved tag with
    its old digest until the next data step copies it (the marker makes it answer 503 until
    then: scripts/pull-data.sh). ``marked``: host -> master0 tree the watcher last marked it
    for; a host is not marked again for the same tree (the marker stays until a copy
    completes). Nothing is decided without master0's tree (not read, or master0 not answering),
    and a standby whose stamp is unknown or absent is left to its data step (a copy in progress
    made the marker already; the remote script compares again before it writes)."""
    if master0_tree is None:
        return {}
    out: dict[str, str] = {}
    for ip in standbys:
        rep = replicas.get(ip)
        if rep is None or rep.stamp is None:
            continue
        if rep.stamp.tree == master0_tree or marked.get(ip) == master0_tree:
            continue
        out[ip] = (f"its replica stamp's tree {rep.stamp.tree[:12]} is not master0's live tree "
                   f"{master0_tree[:12]}: it would serve moved tags with their old digests")
    return out


def read_report(prober: str, targets: list[str], ok: bool, stdout: str,
                error: str = "") -> tuple[dict[str, Probe], Replica | None]:
    """`scripts/watch-probe.sh`'s output on ``prober`` -> its probe of each target and its own
    replica. ``ok`` False (ssh failed, timed out) or a report without ``probe=1`` or without a
    line for a target: no vote for that target (the prober says nothing about it)."""
    lines = stdout.splitlines()
    if not ok or "probe=1" not in lines:
        why = error or "the probe printed nothing"
        return {t: Probe(prober, Vote.NOVOTE, why) for t in targets}, None
    probes: dict[str, Probe] = {}
    replica = Replica(stamp_problem="not reported")
    for line in lines:
        if line.startswith("replica="):
            text = line.removeprefix("replica=")
            if text == "none":
                replica = Replica(stamp_problem="none")
            else:
                try:
                    replica = Replica(stamp=parse_stamp(text))
                except ValueError as e:
                    replica = Replica(stamp_problem=f"unreadable: {e}")
        elif line.startswith("target="):
            fields = dict(part.partition("=")[::2] for part in line.split())
            target, code, rc = fields.get("target", ""), fields.get("code", ""), fields.get("rc", "")
            if target in targets and rc.isdigit():
                vote, answered = vote_of(code, int(rc))
                detail = f"http {code}" if code not in ("", "000") else f"curl exit {rc}"
                probes[target] = Probe(prober, vote, detail, answered)
    for t in targets:
        probes.setdefault(t, Probe(prober, Vote.NOVOTE, "no result for this target"))
    return probes, replica
