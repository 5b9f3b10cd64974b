"""Phase `watchpair`: unattended failover with two `cli watch` processes on two machines (issue
22): each on a lab host outside the cluster (its network and hostname; lab/hosts.py
``enter_argv``), each from its own clone of the project, one team backend: the lab's
PostgreSQL (lab/postgres.py; the new leader clears the dead one's lock row there).

- ``watch_leader_alive_verified_s``: master0 killed -> the leader's recovery verified;
- ``watch_leader_lost_verified_s``: the new master0 killed, the leader's machine killed (every
  process on it) as its recovery `up` starts -> the other watcher's resumed recovery verified,
  from master0's kill (``watch_leader_lost_after_machine_s``: from the machine's kill, lease
  expiry + one recovery);
- ``watch_packets_to_old``: packets to the dead master0 of each run, from the decision (the
  leader's kill in the second run) to the verification, retransmissions of connections opened
  before the kill left out.
Goals: <= 30 s and <= 45 s. Between the runs the first dead master0 is revived (the lab's etcd
needs 2 of its 3 members) and its stale registry stopped by the leader.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Callable

from lab.controlplane import etcd_health
from lab.stack import PORT
from lab.watcher import PacketKinds, Watcher, project_clone

ARGS = ("--interval", "1s", "--window", "6s", "--hold-down", "10s", "--lease-duration", "15s",
        "--renew-deadline", "10s", "--retry-period", "2s")


class WatchPairError(RuntimeError):
    pass


def _leader(watchers: dict[str, Watcher]) -> str:
    best = None
    for ip, w in watchers.items():
        for e in w.events():
            if e["event"] in ("lease-acquired", "lease-lost") and (best is None or e["epoch"] > best[0]):
                best = (e["epoch"], ip, e["event"])
    if best is None or best[2] != "lease-acquired":
        raise WatchPairError(f"no leader: {best}")
    return best[1]


def _counted(lab, host: str, retx: PacketKinds) -> tuple[int, dict]:
    return lab.packets_to(host), retx.breakdown()


def _sent(a: tuple[int, dict], b: tuple[int, dict]) -> int:
    return (b[0] - a[0]) - (b[1]["retransmits"] - a[1]["retransmits"])


def _kinds(a: tuple[int, dict], b: tuple[int, dict]) -> dict:
    """What the packets between the two counts were (PacketKinds' kinds), to say what a non-zero
    ``watch_packets_to_old`` was."""
    return {k: b[1][k] - a[1].get(k, 0) for k in b[1] if b[1][k] - a[1].get(k, 0)}


def measure(lab, stack_name: str, stack_file: Path, env: dict[str, str], workdir: Path,
            masters: list[str], machines: list[str], log: Callable[[str], None]) -> dict:
    clones = {ip: project_clone(workdir / ip, stack_file) for ip in machines}
    watchers: dict[str, Watcher] = {}
    try:
        for ip in machines:
            watchers[ip] = Watcher(stack_name, env, workdir / f"log-{ip}", *ARGS,
                                   project_dir=clones[ip], prefix=tuple(lab.enter_argv(ip)))
            watchers[ip].wait_for(lambda e: e["event"] in ("lease-acquired", "lease-following"),
                                  60, "the Lease")
        m0, m1, m2 = masters
        # 1: the leader alive.
        leader = watchers[_leader(watchers)]
        leader.wait_for(lambda e: e["event"] == "probers", 60, "the leader's probers")
        time.sleep(2)
        retx = PacketKinds(lab, m0, PORT)
        marks: dict = {}
        killed = time.time()
        lab.kill(m0)
        try:
            leader.wait_for(lambda e: e.get("decision") == "failover", 60, "a failover",
                            then=lambda _e: marks.setdefault("d", _counted(lab, m0, retx)))
            v1 = leader.wait_for(lambda e: e["event"] == "verified", 120, "the verification",
                                 then=lambda _e: marks.setdefault("v", _counted(lab, m0, retx)))
        finally:
            retx.remove()
        if not v1["healthy"]:
            raise WatchPairError(f"the first recovery did not verify: {v1}")
        alive_s = v1["epoch"] - killed
        packets = _sent(marks["d"], marks["v"])
        kinds = {"alive": _kinds(marks["d"], marks["v"])}
        log(f"watchpair: leader alive: kill -> verified {alive_s:.1f}s, {packets} packets to {m0} "
            f"({kinds['alive'] or 'none'})")
        lab.revive(m0)
        leader.wait_for(lambda e: e["event"] == "fenced_registry", 80, "the returned registry stopped")
        deadline = time.monotonic() + 60   # its etcd member back: the next kill keeps a quorum
        while not etcd_health(m0)[0]:
            if time.monotonic() > deadline:
                raise WatchPairError(f"{m0}'s etcd member did not come back")
            time.sleep(0.5)
        time.sleep(3)
        # 2: the leader's machine killed as its recovery `up` starts.
        lead_ip = _leader(watchers)
        leader = watchers[lead_ip]
        other = watchers[next(ip for ip in machines if ip != lead_ip)]
        offset = len(leader.stderr_path.read_bytes())
        retx = PacketKinds(lab, m1, PORT)
        killed = time.time()
        lab.kill(m1)
        try:
            leader.wait_for(lambda e: e["event"] == "fence" and e["epoch"] > killed, 60, "the fence")
            deadline = time.monotonic() + 60
            while "] start " not in leader.stderr_path.read_bytes()[offset:].decode(errors="replace"):
                if time.monotonic() > deadline:
                    raise WatchPairError("the leader's recovery `up` never started")
                time.sleep(0.02)
            lab.kill(lead_ip, crash=True)
            at_kill = _counted(lab, m1, retx)
            machine_killed = time.time()
            v2 = other.wait_for(lambda e: e["event"] == "verified" and e["epoch"] > machine_killed,
                                150, "the resumed recovery's verification")
            at_verified = _counted(lab, m1, retx)
        finally:
            retx.remove()
        if not v2["healthy"]:
            raise WatchPairError(f"the resumed recovery did not verify: {v2}")
        lost_s = v2["epoch"] - killed
        packets += _sent(at_kill, at_verified)
        kinds["lost"] = _kinds(at_kill, at_verified)
        log(f"watchpair: leader's machine killed {machine_killed - killed:.1f}s after master0 "
            f"{m1}: -> verified by the other {v2['epoch'] - machine_killed:.1f}s ({lost_s:.1f}s "
            f"after master0's kill); packets to the dead master0s {packets}")
        return {"watch_leader_alive_verified_s": alive_s, "watch_leader_lost_verified_s": lost_s,
                "watch_leader_lost_after_machine_s": v2["epoch"] - machine_killed,
                "watch_packets_to_old": packets, "watch_packets_to_old_kinds": kinds}
    finally:
        for ip, w in watchers.items():
            if lab.is_killed(ip):
                lab.revive(ip)
            w.stop(signal.SIGTERM)
