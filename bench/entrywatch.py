"""Phase `entrywatch`: pulls through the node-local entry point while `python -m cli watch`
recovers a dead master0 on its own (issue 21's "with `cli watch`" figures; keys
`outage_pull_<R>_<O>_watch_*` of /work/shared/notes/bench-keys.md).

Per outage (``killed``: packets dropped, processes frozen; ``off``: the address gone, ARP fails)
the caller brings up a fresh lab of 3 masters + 2 nodes with its control plane and deploys a stack
with warm standbys and ``node_entry`` through the real engine (one stack per outage: after a
recovery the old master0 is fenced, and bringing it back as master0 is not what is measured).
Here: the watcher started as bench/failover.py starts it, one healthy round of pulls on each node,
then master0 taken down and at once both nodes pull every boot-history image back to back (the
containerd 1.6 node by ``ctr content fetch`` through its certs.d, the docker node by Debian's
dockerd), round after round, while the watcher decides, runs its recovery `up` (which reloads every
node's HAProxy with the new server list) and verifies; then one more round each. A failed pull is
retried once at once, as the kubelet retries (its back-off left out); both attempts count.
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from lab import docker
from lab.hosts import INSTANCE, Lab
from lab.pull import Pull, containerd_pull
from lab.stack import DOMAIN, PASSWORD, PORT, entry_servers
from lab.watcher import Watcher

from bench.failover import ARGS

ENTRY = f"198.19.{INSTANCE}.3"
STATS_PORT = 5099          # config/registry.py's default node_entry.stats_port
USER = "admin"
NAMESPACE = "bench-entrywatch"
PULL_TIMEOUT_S = 120
ROUNDS_AFTER = 1           # rounds after the watcher verified: through the reloaded entry points
PULLS_LIMIT_S = 300        # the pullers stop after this, whatever happened
VERIFY_LIMIT_S = 150
OUTAGES = ("killed", "off")
RUNTIMES = ("docker", "containerd16")


class EntryWatchError(RuntimeError):
    pass


@dataclass
class Pulled:
    began: float        # epoch (the watcher's log is in epochs)
    seconds: float
    ok: bool
    error: str
    retry: bool


def pull(lab: Lab, node: str, runtime: str, ref: str) -> Pull:
    """One real pull of ``ref`` (REPO:TAG@DIGEST) on ``node`` through sea.hub (the entry point);
    ok only with the ref's digest."""
    repo_tag, digest = ref.rsplit("@", 1)
    if runtime == "docker":
        p = docker.pull(lab, node, f"{DOMAIN}:{PORT}/{repo_tag}", USER, PASSWORD, timeout=PULL_TIMEOUT_S)
    else:
        p = containerd_pull(lab, node, repo_tag, USER, PASSWORD, DOMAIN, PORT, NAMESPACE, PULL_TIMEOUT_S)
    if p.ok and p.digest != digest:
        return Pull(False, p.digest, f"resolved to {p.digest}, not {digest}", p.seconds)
    return p


class Puller(threading.Thread):
    """Every ref on one node, back to back, round after round until ``stop_after`` is set and
    ``ROUNDS_AFTER`` more rounds are done (``PULLS_LIMIT_S`` at most)."""

    def __init__(self, lab: Lab, node: str, runtime: str, refs: list[str]):
        super().__init__(daemon=True, name=f"pull-{runtime}")
        self.lab, self.node, self.runtime, self.refs = lab, node, runtime, refs
        self.stop_after = threading.Event()
        self.pulls: list[Pulled] = []

    def run(self) -> None:
        began, extra = time.monotonic(), None
        while time.monotonic() - began < PULLS_LIMIT_S:
            if self.stop_after.is_set():
                extra = ROUNDS_AFTER if extra is None else extra - 1
                if extra <= 0:
                    return
            for ref in self.refs:
                for retry in (False, True):
                    at = time.time()
                    p = pull(self.lab, self.node, self.runtime, ref)
                    self.pulls.append(Pulled(at, p.seconds, p.ok, "" if p.ok else p.stderr.strip()[-300:],
                                             retry))
                    if p.ok:
                        break


def figures(runtime: str, outage: str, pulls: list[Pulled], down_at: float) -> dict:
    """The keys of one runtime and outage from its pulls: the first pull started after master0
    went down, the pulls after it that failed (retries included), the slowest of the later ones
    (and when it started, seconds after the outage), how many; and each failure's start,
    duration and error."""
    after = [p for p in pulls if p.began >= down_at]
    if not after:
        raise EntryWatchError(f"{runtime}: no pull started after master0 went {outage}")
    key = f"outage_pull_{runtime}_{outage}_watch"
    slowest = max(after[1:], key=lambda p: p.seconds, default=None)
    return {
        f"{key}_first_s": round(after[0].seconds, 2),
        f"{key}_failures": sum(1 for p in after if not p.ok),
        f"{key}_later_max_s": round(slowest.seconds if slowest else 0.0, 2),
        f"{key}_later_max_at_s": round(slowest.began - down_at, 2) if slowest else None,
        f"{key}_pulls": len(after),
        f"{key}_failed": [{"at_s": round(p.began - down_at, 2), "seconds": round(p.seconds, 2),
                           "retry": p.retry, "error": p.error} for p in after if not p.ok],
    }


def servers(lab: Lab, node: str) -> list[str]:
    """The node's entry point servers from its stats page: ``ip:port STATUS [backup]``."""
    return entry_servers(lab, node, STATS_PORT)


def _wait(predicate: Callable[[], bool], limit_s: float, what: str) -> float:
    began = time.monotonic()
    while time.monotonic() - began < limit_s:
        if predicate():
            return time.monotonic() - began
        time.sleep(0.2)
    raise EntryWatchError(f"{what} not within {limit_s}s")


@dataclass
class Nodes:
    docker: str
    containerd: str
    masters: list[str] = field(default_factory=list)

    def of(self, runtime: str) -> str:
        return self.docker if runtime == "docker" else self.containerd


def measure(lab: Lab, nodes: Nodes, refs: list[str], stack_name: str, engine_env: dict[str, str],
            workdir: Path, outage: str, log: Callable[[str], None]) -> dict:
    """The figures of one outage on a deployed stack (warm standbys, node_entry, dockerd running
    on the docker node). Leaves master0 down; the watcher is stopped before returning. What
    went wrong after the figures were taken (the recovery not verified, an entry point not
    moved) is in ``outage_watch_<O>_problems``, for the caller to fail on after recording."""
    m0, new, standby = nodes.masters
    down = {"killed": lab.kill, "off": lab.power_off}[outage]
    out: dict = {}
    for runtime in RUNTIMES:
        _wait(lambda: servers(lab, nodes.of(runtime))[:1] == [f"{m0}:{PORT} UP"], 20,
              f"{runtime} node: master0 UP on its entry point")
    watcher = Watcher(stack_name, engine_env, workdir, *ARGS)
    pullers: list[Puller] = []
    try:
        watcher.wait_for(lambda e: e["event"] == "probers", 60, "the watcher's probers")
        for runtime in RUNTIMES:  # the healthy figure, on this lab, the watcher running
            alive = [pull(lab, nodes.of(runtime), runtime, r) for r in refs]
            out[f"outage_pull_{runtime}_{outage}_watch_alive_max_s"] = round(max(p.seconds for p in alive), 2)
            bad = [p.stderr.strip()[-200:] for p in alive if not p.ok]
            if bad:
                raise EntryWatchError(f"{runtime}: pulls failed with master0 alive: {bad}")
        if watcher.decisions():
            raise EntryWatchError(f"the watcher decided before the outage: {watcher.decisions()}")
        pullers = [Puller(lab, nodes.of(rt), rt, refs) for rt in RUNTIMES]
        down_at = time.time()
        down(m0)
        for p in pullers:
            p.start()
        decided = watcher.wait_for(lambda e: e.get("decision") == "failover", 90, "a failover")
        verified = watcher.wait_for(lambda e: e["event"] == "verified", VERIFY_LIMIT_S, "the verification")
        for p in pullers:
            p.stop_after.set()
        for p in pullers:
            p.join(timeout=PULLS_LIMIT_S + 2 * len(refs) * (PULL_TIMEOUT_S + 60))
            if p.is_alive():
                raise EntryWatchError(f"{p.runtime}: the pulls did not end")
        up = next((e for e in watcher.events() if e["event"] == "up"), None)
        up_began = None if up is None else round(up["epoch"] - (up.get("seconds") or 0) - down_at, 2)
    finally:
        for p in pullers:
            p.stop_after.set()
        code = watcher.stop(signal.SIGTERM)
        for p in pullers:  # after an error: the lab goes down next, let the round end first
            p.join(timeout=len(refs) * (PULL_TIMEOUT_S + 60))
    out[f"outage_watch_{outage}_detect_s"] = round(decided["epoch"] - down_at, 2)
    out[f"outage_watch_{outage}_verified_s"] = round(verified["epoch"] - down_at, 2)
    out[f"outage_watch_{outage}_up_began_s"] = up_began
    out[f"outage_watch_{outage}_up_s"] = None if up is None else up.get("seconds")
    for p in pullers:
        out.update(figures(p.runtime, outage, p.pulls, down_at))
    problems = []
    if not verified.get("healthy"):
        problems.append(f"the watcher's recovery did not verify: {verified}")
    want = [f"{new}:{PORT} UP", f"{standby}:{PORT} UP backup"]
    try:
        _wait(lambda: all(servers(lab, n) == want for n in (nodes.docker, nodes.containerd)), 10,
              f"both entry points listing {want}")
    except EntryWatchError as e:
        problems.append(f"{e}: {({n: servers(lab, n) for n in (nodes.docker, nodes.containerd)})}")
    out[f"outage_watch_{outage}_problems"] = problems
    log(f"entrywatch, master0 {outage}: dead decided {out[f'outage_watch_{outage}_detect_s']:.1f}s, "
        f"recovery up began {up_began}s, verified {out[f'outage_watch_{outage}_verified_s']:.1f}s "
        f"after the outage (healthy {verified.get('healthy')}); watcher exit {code}")
    for rt in RUNTIMES:
        k = f"outage_pull_{rt}_{outage}_watch"
        log(f"  {rt}: {out[f'{k}_pulls']} pulls after the outage, {out[f'{k}_failures']} failed, first "
            f"{out[f'{k}_first_s']:.2f}s, later max {out[f'{k}_later_max_s']:.2f}s started at "
            f"+{out[f'{k}_later_max_at_s']}s (alive max "
            f"{out[f'{k}_alive_max_s']:.2f}s)")
        for f in out[f"{k}_failed"]:
            log(f"    FAILED at +{f['at_s']}s after {f['seconds']}s{' (retry)' if f['retry'] else ''}: "
                f"{f['error'][-200:]}")
    for problem in problems:
        log(f"  PROBLEM: {problem}")
    return out
