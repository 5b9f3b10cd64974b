"""Two `cli watch` processes of one stack on two machines (issue 22), with the real engine, real
sshd and the lab's real kube-apiservers: each watcher runs on a lab host's network and hostname
of its own (hosts outside the cluster: a partition or a kill takes that machine and every
process on it, its engine run included), from its own clone of the project (its own stack
file), both on one team backend: the lab's real PostgreSQL (`postgres://`, its own lab host,
TLS verify-full, the password only in a pgpass file), or with SEALER_E2E_WATCHPAIR_BACKEND=s3 the
lab's S3 store (`s3://`, Versity S3 Gateway on its own lab host, TLS, the keys only in a
credentials file). In order, on one stack:

1. the leader cut off the network stops acting at its renew deadline and never fences; the
   other takes the Lease over;
2. master0 killed: exactly one recovery, one `up`, verified, by the leader; the follower never
   acts and follows the recovery in its own stack file; 0 packets to the dead master0 from the
   decision to the verification;
3. the new master0 killed and the leader's machine killed as its recovery `up` starts: the
   other takes over after the lease expires, clears the dead leader's stack lock (the row of
   Pulumi's table, or the S3 object, that engine wrote, seen there as the server's superuser) and
   the pending operations its run
   left, resumes that recovery and verifies it within lease expiry + one recovery; no lock row
   is left.
After each, `pulumi stack export`: nothing pending, no resource lost or duplicated.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import time

import pytest
import yaml

from config import PROJECT
from lab import Lab
from lab import postgres as lab_postgres
from lab import s3 as lab_s3
from lab.controlplane import ControlPlaneError, etcd_health
from lab.stack import (DOMAIN, PORT, SECRETS, ProgramStack, hosts_line, make_lab_env,
                       stack_values)
from lab.hosts import LabError
from lab.watcher import PacketKinds, Watcher, project_clone

pytestmark = pytest.mark.e2e

WINDOW, INTERVAL, HOLD_DOWN = 6, 1, 10
LEASE, RENEW, RETRY = 15, 10, 2
ARGS = ("--interval", f"{INTERVAL}s", "--window", f"{WINDOW}s", "--hold-down", f"{HOLD_DOWN}s",
        "--lease-duration", f"{LEASE}s", "--renew-deadline", f"{RENEW}s",
        "--retry-period", f"{RETRY}s")
ACTS = ("fence", "up", "verified", "fenced_registry", "rejoined", "stale_standby")


@pytest.fixture(scope="module")
def env(toolchain_bin, tmp_path_factory):
    """3 masters + 2 nodes in the cluster, and 2 more lab hosts outside it: the watchers'
    machines."""
    state = tmp_path_factory.mktemp("pairlab")
    Lab(state).down()
    try:
        lab_env = make_lab_env(state, nodes=4, bin_dir=toolchain_bin)
    except ControlPlaneError as e:
        Lab(state).down()
        pytest.fail(f"the lab's control plane did not come up: {e}", pytrace=False)
    yield lab_env
    lab_env.lab.down()


# The team backend: the lab's PostgreSQL (CI), or with SEALER_E2E_WATCHPAIR_BACKEND=s3 the lab's
# S3 store (versitygw, lab/s3.py; run by hand: docs/testing.md).
BACKEND = os.environ.get("SEALER_E2E_WATCHPAIR_BACKEND", "postgres")


class TeamBackend:
    """Where the pair's state lives, and an independent view of its lock objects (psql as the
    superuser; boto3 as the S3 store's root account), beside the watchers' own reads."""

    def __init__(self, lab):
        self.kind = BACKEND
        if BACKEND == "s3":
            self.store = lab_s3.up(lab)
        elif BACKEND == "postgres":
            self.store = lab_postgres.up(lab)
        else:
            raise LabError(f"SEALER_E2E_WATCHPAIR_BACKEND={BACKEND!r}: postgres or s3")

    def env(self) -> dict[str, str]:
        return self.store.env()

    @property
    def where(self) -> str:
        """How the watcher's `stack-lock` event names this backend (its start)."""
        if self.kind == "s3":
            return f"s3://{self.store.bucket}/?endpoint={self.store.endpoint}"
        return f"postgres://{self.store.address}:"

    def lock_objects(self) -> list[dict]:
        """Every lock object of the backend: key and the lock JSON the engine wrote."""
        if self.kind == "s3":
            root, bucket = lab_s3.client(self.store), self.store.bucket
            listed = root.list_objects_v2(Bucket=bucket, Prefix=".pulumi/locks/")
            return [{"key": o["Key"], **json.loads(root.get_object(Bucket=bucket, Key=o["Key"])
                                                   ["Body"].read())}
                    for o in sorted(listed.get("Contents", []), key=lambda o: o["Key"])]
        out = lab_postgres.psql(f"SELECT key || ' ' || (data->>'data') FROM {lab_postgres.TABLE} "
                                f"WHERE key LIKE '{self.store.database}/.pulumi/locks/%' ORDER BY key")
        rows = []
        for line in out.splitlines():
            key, blob = line.split(" ", 1)
            rows.append({"key": key, **json.loads(base64.b64decode(blob))})
        return rows


@pytest.fixture(scope="module")
def state_db(env) -> TeamBackend:
    """The team's state on its own lab host; ``env``'s `down` removes it."""
    try:
        return TeamBackend(env.lab)
    except LabError as e:
        pytest.fail(f"the lab's {BACKEND} state backend did not come up: {e}", pytrace=False)


class Pair:
    def __init__(self, env, stack, clones, machines, watchers, db):
        self.env, self.stack, self.clones, self.db = env, stack, clones, db
        self.machines, self.watchers = machines, watchers   # machine ip -> Watcher

    def leader(self) -> tuple[str, Watcher]:
        """The machine whose watcher acquired the Lease last (and has not lost it since)."""
        best = None
        for ip, w in self.watchers.items():
            for e in w.events():
                if e["event"] in ("lease-acquired", "lease-lost"):
                    if best is None or e["epoch"] > best[0]:
                        best = (e["epoch"], ip, e["event"])
        assert best is not None and best[2] == "lease-acquired", best
        return best[1], self.watchers[best[1]]

    def other(self, ip: str) -> tuple[str, Watcher]:
        o = next(m for m in self.machines if m != ip)
        return o, self.watchers[o]


@pytest.fixture(scope="module")
def pair(env, toolchain_env, state_db, tmp_path_factory):
    lab = env.lab
    cluster_nodes, machines = env.nodes[:2], env.nodes[2:]
    pg_env = dict(toolchain_env, **state_db.env())
    stack = ProgramStack("e2e-watchpair", pg_env)
    values = stack_values(env, master0=env.masters[0], distribution="pre")
    values["cluster"]["nodes"] = cluster_nodes
    values["cluster"]["ssh"]["host_keys"] = {
        ip: key for ip, key in values["cluster"]["ssh"]["host_keys"].items() if ip not in machines}
    stack.configure(values, {**SECRETS, "registry.tls.ca_key": env.ca[1]})
    stack.up()
    base = tmp_path_factory.mktemp("clones")
    clones = {ip: project_clone(base / ip, stack.stack_file) for ip in machines}
    watchers: dict[str, Watcher] = {}
    try:
        for ip in machines:
            watchers[ip] = Watcher(stack.name, pg_env, base / f"log-{ip}", *ARGS,
                                   project_dir=clones[ip], prefix=tuple(lab.enter_argv(ip)))
            watchers[ip].wait_for(lambda e: e["event"] in ("lease-acquired", "lease-following"),
                                  60, "the Lease")
        yield Pair(env, stack, clones, machines, watchers, state_db)
    finally:
        for ip, w in watchers.items():
            if lab.is_killed(ip):
                lab.revive(ip)
            lab.heal(ip)
            w.stop(signal.SIGTERM)
            print(f"\n===== watcher on {ip}\n{w.tail(300)}")
        stack.remove()
        shutil.rmtree(base, ignore_errors=True)


def acts(w: Watcher, since: float = 0) -> list[dict]:
    return [e for e in w.events() if e["epoch"] >= since
            and (e["event"] in ACTS or e.get("decision") in ("failover", "resume"))]


def state_of(stack: ProgramStack) -> dict:
    return json.loads(stack.export())["deployment"]


def check_state(before: dict, after: dict, dead: list[str], new: str) -> None:
    """Nothing pending; no URN twice; every resource of a live host still there but the two
    steps a recovery retires on the new master0 (its replica pull and its standby registry)."""
    assert not after.get("pending_operations"), after.get("pending_operations")
    urns = [r["urn"] for r in after["resources"]]
    assert len(urns) == len(set(urns)), sorted(u for u in urns if urns.count(u) > 1)
    kept = {r["urn"] for r in before["resources"]
            if r.get("custom") and not any(ip in r["urn"] for ip in dead)
            and not r["type"].startswith("pulumi:providers:")}
    lost = sorted(kept - set(urns))
    lost = [u for u in lost if not u.endswith((f"::data-{new}", f"::registry-standby-{new}"))]
    assert lost == [], lost


def settle_etcd(ip: str) -> None:
    """The revived master's etcd member serves again (with the next master killed, the lab's
    etcd keeps its quorum only with it)."""
    deadline = time.monotonic() + 60
    while not etcd_health(ip)[0]:
        assert time.monotonic() < deadline, etcd_health(ip)
        time.sleep(0.5)
    time.sleep(3)


def config_of(clone, name) -> dict:
    doc = yaml.safe_load((clone / f"Pulumi.{name}.yaml").read_text())["config"]
    return {k.split(":", 1)[1]: v for k, v in doc.items() if k.startswith(f"{PROJECT}:")}


def test_a_partitioned_leader_stops_acting_and_never_fences(pair):
    lab = pair.env.lab
    ip, leader = pair.leader()
    other_ip, other = pair.other(ip)
    start = time.time()
    lab.partition(ip)
    try:
        lost = leader.wait_for(lambda e: e["event"] == "lease-lost", RENEW + RETRY + 5,
                               "the partitioned leader to stop")
        took = other.wait_for(lambda e: e["event"] == "lease-acquired" and e["epoch"] > start,
                              LEASE + 3 * RETRY + 10, "the other watcher to take over")
        print(f"\npartitioned leader stopped {lost['epoch'] - start:.1f}s after the cut; the "
              f"other took over after {took['epoch'] - start:.1f}s ({took['why']})")
        assert lost["epoch"] - start <= RENEW + RETRY + 1
        assert lost["epoch"] < took["epoch"]
        time.sleep(2 * RETRY)
        assert acts(leader) == [] and acts(other) == []
    finally:
        lab.heal(ip)
    leader.wait_for(lambda e: e["event"] == "lease-following" and e["epoch"] > start, 30,
                    "the healed watcher to follow")
    assert acts(leader) == []


def test_dead_master0_one_recovery_by_the_leader_none_by_the_other(pair):
    env, lab, stack = pair.env, pair.env.lab, pair.stack
    old, new = env.masters[0], env.masters[1]
    ip, leader = pair.leader()
    other_ip, other = pair.other(ip)
    before = state_of(stack)
    retx = PacketKinds(lab, old, PORT)
    counted: dict = {}

    def count(key):
        return lambda _e: counted.setdefault(key, (lab.packets_to(old), retx.breakdown()))

    kill = time.time()
    lab.kill(old)
    try:
        leader.wait_for(lambda e: e.get("decision") == "failover", 40, "the failover decision",
                        then=count("decision"))
        verified = leader.wait_for(lambda e: e["event"] == "verified", 120, "the verification",
                                   then=count("verified"))
    finally:
        retx.remove()
    assert verified["healthy"] is True and verified["master0"] == new, verified
    ups = [e for w in pair.watchers.values() for e in w.events() if e["event"] == "up"]
    assert len(ups) == 1 and ups[0]["ok"] is True, ups
    assert [e for e in acts(leader) if e.get("decision") == "failover"] == \
        [e for e in leader.decisions("failover")] and len(leader.decisions("failover")) == 1
    assert acts(other) == [], acts(other)
    (sent0, kinds0), (sent1, kinds1) = counted["decision"], counted["verified"]
    kinds = {k: kinds1[k] - kinds0[k] for k in kinds0}
    print(f"\nkill -> verified {verified['epoch'] - kill:.1f}s (leader alive); packets to the old "
          f"master0 from the decision to the verification: {sent1 - sent0} ({kinds})")
    assert sent1 - sent0 - kinds["retransmits"] == 0, kinds
    # The follower's own stack file follows the leader's verified recovery.
    other.wait_for(lambda e: e["event"] == "config" and e.get("master0") == new, 3 * RETRY + 10,
                   "the follower to follow the recovery")
    assert (config_of(pair.clones[other_ip], stack.name)["master0"],
            config_of(pair.clones[other_ip], stack.name)["down_hosts"]) == (new, [old])
    check_state(before, state_of(stack), [old], new)
    for host in [*env.masters[1:], *env.nodes[:2]]:
        assert hosts_line(lab, host) == [f"{new} {DOMAIN} #hostalias-set-by-sealer"]
    # The old master0 comes back (the lab's etcd needs 2 of its 3 members for the next kill):
    # the leader stops its stale registry; it stays fenced.
    lab.revive(old)
    fenced = leader.wait_for(lambda e: e["event"] == "fenced_registry", HOLD_DOWN + WINDOW + 40,
                             "the returned old master0's registry stopped")
    assert fenced["host"] == old and fenced["ok"] is True, fenced
    assert acts(other) == []
    settle_etcd(old)


def test_the_leaders_machine_killed_as_its_recovery_starts_the_other_finishes(pair):
    env, lab, stack = pair.env, pair.env.lab, pair.stack
    gone0, dead, new = env.masters
    ip, leader = pair.leader()
    other_ip, other = pair.other(ip)
    before = state_of(stack)
    retx = PacketKinds(lab, dead, PORT)
    offset = len(leader.stderr_path.read_bytes())
    kill = time.time()
    lab.kill(dead)
    fence = leader.wait_for(lambda e: e["event"] == "fence" and e["epoch"] > kill, 40,
                            "the leader's fencing")
    assert fence["new"] == new, fence
    deadline = time.monotonic() + 60
    while "] start " not in leader.stderr_path.read_bytes()[offset:].decode(errors="replace"):
        assert time.monotonic() < deadline, leader.tail()
        time.sleep(0.02)
    run = next(e for e in leader.events() if e["event"] == "engine-run" and e["epoch"] > kill)
    lab.kill(ip, crash=True)     # the leader's machine: the watcher, its engine, its providers
    machine_killed = time.time()
    at_kill = (lab.packets_to(dead), retx.breakdown())
    left = pair.db.lock_objects()   # the killed engine's lock (a row, an object)
    leader_host = next(e for e in leader.events()
                       if e["event"] == "lease-acquired")["identity"].rsplit("_", 2)[0]
    assert len(left) == 1 and left[0]["pid"] in run["pids"], (left, run)
    assert left[0]["hostname"] == leader_host, (left, leader_host)
    took = other.wait_for(lambda e: e["event"] == "lease-acquired" and e["epoch"] > machine_killed,
                          LEASE + 3 * RETRY + 10, "the other watcher to take over")
    try:
        verified = other.wait_for(lambda e: e["event"] == "verified"
                                  and e["epoch"] > machine_killed, 120,
                                  "the resumed recovery's verification")
        at_verified = (lab.packets_to(dead), retx.breakdown())
    finally:
        retx.remove()
    events = [e for e in other.events() if e["epoch"] > machine_killed]
    kinds = [e["event"] if e["event"] != "decision" else f"decision:{e['decision']}"
             for e in events]
    print(f"\nleader on {ip} killed {machine_killed - kill:.1f}s after master0 {dead}, its engine "
          f"pids {run['pids']}; the other took over after {took['epoch'] - machine_killed:.1f}s "
          f"and verified {verified['epoch'] - machine_killed:.1f}s after the kill "
          f"({verified['epoch'] - kill:.1f}s after master0's); events {kinds}")
    assert verified["healthy"] is True and verified["master0"] == new, verified
    assert took["previous"] and took["previous"].startswith(f"srl"), took
    previous = next(e for e in events if e["event"] == "previous-run")
    assert previous["run"]["pids"] == run["pids"] and previous["run"]["master0"] == new
    lock = next(e for e in events if e["event"] == "stack-lock")
    assert lock["cleared"] == [left[0]["key"]] and lock["kept"] == [], lock
    assert lock["backend"].startswith(pair.db.where), lock
    assert lock["locks"][0]["pid"] in run["pids"], lock
    assert pair.db.lock_objects() == []
    assert "decision:resume" in kinds and "decision:failover" not in kinds, kinds
    assert [e["ok"] for e in events if e["event"] == "up"] == [True]
    assert verified["epoch"] - machine_killed <= LEASE + RETRY + 40
    kinds = {k: at_verified[1][k] - at_kill[1][k] for k in at_kill[1]}
    sent = at_verified[0] - at_kill[0]
    print(f"packets to the dead master0 {dead} from the leader's kill to the verification: "
          f"{sent} ({kinds})")
    assert sent - kinds["retransmits"] == 0, kinds
    after = state_of(stack)
    check_state(before, after, [gone0, dead], new)
    assert (config_of(pair.clones[other_ip], stack.name)["master0"],
            sorted(config_of(pair.clones[other_ip], stack.name)["down_hosts"])) == \
        (new, sorted([gone0, dead]))
    for host in [new, *env.nodes[:2]]:
        assert hosts_line(lab, host) == [f"{new} {DOMAIN} #hostalias-set-by-sealer"]
