"""The node-local entry point through the real engine (issue 21): with
`registry.local_registry.standby: warm` and `node_entry`, every node maps sea.hub to a node-local
address where HAProxy forwards to master0, or to a healthy warm standby when master0 does not
answer. On a containerd node and a docker node (Debian's dockerd in the lab host): pulls work,
master0 is killed while both nodes pull back to back (0 failures, the delays printed), the
recovery (`cli recover`, in two phases: issue 24) moves the entry point's servers (the new
master0 first, the fenced old master0 gone),
and the revived old master0, with its stale data, gets no connection from any node. The
containerd node has no haproxy (hidden in its own mount namespace): with `node_entry.haproxy:
auto` (the default) the program copies its HAProxy bundle to both nodes and that node runs the
entry point from it; the docker node keeps its own haproxy. A fresh lab of 3 masters + 2 nodes;
the tests of the class run in order."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from cli import haproxy_bundle
from lab import docker as lab_docker
from lab.hosts import INSTANCE
from lab.pull import containerd_pull
from lab.stack import (DOMAIN, PASSWORD, PORT, PROJECT_DIR, SECRETS, ProgramStack, entry_servers,
                       hosts_line, stack_values)
from tests.e2e.labstack import lab_env  # noqa: F401  (module-scoped lab of 3 masters + 2 nodes)

ENTRY = f"198.19.{INSTANCE}.3"
STATS_PORT = 5099
CONFIG = "/etc/sealer/registry-entry.cfg"
PIDFILE = "/run/sealer-registry-entry.pid"
# Pulls while master0 dies: each round pulls every boot-history image once, back to back.
ROUNDS = 3
ROUND_TIMEOUT_S = 300


def servers(lab, node: str) -> list[str]:
    """The entry point's servers as its stats page reports them: ``ip:port STATUS [backup]``."""
    return entry_servers(lab, node, STATS_PORT)


def wait_for(predicate, limit_s: float, what: str) -> float:
    began = time.monotonic()
    while time.monotonic() - began < limit_s:
        if predicate():
            return time.monotonic() - began
        time.sleep(0.2)
    raise AssertionError(f"{what} not within {limit_s}s")


def without_haproxy(lab, node: str) -> None:
    """An air-gapped node's lack of haproxy, in the node's own mount namespace: a whiteout over
    /usr/sbin/haproxy. /opt and /var/tmp are made private on every node (the lab shares the
    machine's), so the copies and the unpacked bundle leave the machine as it was."""
    lab.run(node, "mkdir -p /tmp/sbin-upper /tmp/sbin-work && mknod /tmp/sbin-upper/haproxy c 0 0 && "
                  "mount -t overlay e2e-sbin -o lowerdir=/usr/sbin,upperdir=/tmp/sbin-upper,"
                  "workdir=/tmp/sbin-work /usr/sbin")
    assert lab.run(node, "command -v haproxy", check=False).returncode != 0


def private_opt_and_var_tmp(lab, node: str) -> None:
    lab.run(node, "mkdir -p /tmp/opt-upper /tmp/opt-work && mount -t overlay e2e-opt -o "
                  "lowerdir=/opt,upperdir=/tmp/opt-upper,workdir=/tmp/opt-work /opt && "
                  "mount -t tmpfs -o mode=1777,size=64m e2e-var-tmp /var/tmp")


def entry_executable(lab, node: str) -> str:
    pid = lab.run(node, f"head -n 1 {PIDFILE}").stdout.strip()
    return lab.run(node, f"readlink /proc/{pid}/exe").stdout.strip()


def docker_ref(ref: str) -> str:
    return f"{DOMAIN}:{PORT}/{ref.split('@')[0]}"


def pull_one(lab, node: str, engine: str, ref: str):
    if engine == "docker":
        return lab_docker.pull(lab, node, docker_ref(ref), "admin", PASSWORD, timeout=ROUND_TIMEOUT_S)
    return containerd_pull(lab, node, ref.split("@")[0], "admin", PASSWORD, DOMAIN, PORT,
                           "lab-pull", ROUND_TIMEOUT_S)


# A pull cut by the kill fails no later than this after it: tcp-ut (2 s) + HAProxy's close.
CUT_FAILS_WITHIN_S = 5.0


def pull_retried(lab, node: str, engine: str, ref: str, pulls: list) -> None:
    """One pull, and once more at once if it failed (the kubelet retries a failed pull; its
    back-off is left out), each recorded as (start, seconds, ok, error, retry)."""
    for retry in (False, True):
        began = time.monotonic()
        p = pull_one(lab, node, engine, ref)
        pulls.append((began, time.monotonic() - began, p.ok, "" if p.ok else p.stderr[-300:], retry))
        if p.ok:
            return


def judge(engine: str, pulls: list, killed_at: float) -> str:
    """Every pull started after the kill succeeded. The one pull in flight at the kill: on
    containerd it succeeded too (it retries a connection HAProxy closed); dockerd does not retry
    a manifest or /v2/ request cut that way, so there it may fail with EOF within 5 s of the
    kill, and its retry succeeded. Returns the line to print."""
    after = [x for x in pulls if x[0] >= killed_at]
    assert after, f"{engine}: no pull started after the kill"
    failed_after = [x for x in after if not x[2]]
    assert failed_after == [], (engine, failed_after)
    cut = [x for x in pulls if not x[2] and x[0] < killed_at]
    for x in cut:
        assert engine == "docker", (engine, x)
        assert x[0] + x[1] - killed_at <= CUT_FAILS_WITHIN_S and "EOF" in x[3], x
    assert len(cut) <= 1, cut
    in_flight = [x for x in pulls if x[0] < killed_at <= x[0] + x[1]]
    first = [x for x in after if not x[4]]
    return (f"{engine}: {len(pulls)} pulls, {len(cut)} cut by the kill (retried: ok); in flight at "
            f"the kill {max((x[1] for x in in_flight), default=0.0):.2f}s; first started after "
            f"the kill {first[0][1] if first else float('nan'):.2f}s; slowest after it "
            f"{max(x[1] for x in after):.2f}s")


class Puller(threading.Thread):
    """Pulls every ref on one node, back to back, ``rounds`` times (bounded), recording
    (start time, seconds, ok, error, retry) for each pull (see pull_retried)."""

    def __init__(self, lab, node: str, engine: str, refs: list[str], rounds: int):
        super().__init__(daemon=True)
        self.lab, self.node, self.engine, self.refs, self.rounds = lab, node, engine, refs, rounds
        self.pulls: list[tuple[float, float, bool, str, bool]] = []

    def run(self) -> None:
        for _ in range(self.rounds):
            for ref in self.refs:
                pull_retried(self.lab, self.node, self.engine, ref, self.pulls)


def syn_counter(lab, ip: str, action: str) -> int:
    """A counter of TCP SYNs to the registry port inside host ``ip``'s namespace (add / read)."""
    if action == "add":
        lab.run(ip, "nft add table inet entryprobe; nft add chain inet entryprobe in "
                    "'{ type filter hook input priority 0; }'; "
                    f"nft add rule inet entryprobe in tcp dport {PORT} tcp flags syn counter")
        return 0
    out = lab.run(ip, "nft list chain inet entryprobe in").stdout
    for line in out.splitlines():
        if "counter packets" in line:
            return int(line.split("counter packets")[1].split()[0])
    raise AssertionError(out)


class TestNodeEntry:
    @pytest.fixture(scope="class")
    @classmethod
    def stack(cls, lab_env, toolchain_env):
        haproxy_bundle.ensure()  # what `make haproxy-bundle` does (cached): the program ships it
        lab_docker.start(lab_env.lab, lab_env.nodes[1])
        for node in lab_env.nodes:
            private_opt_and_var_tmp(lab_env.lab, node)
        without_haproxy(lab_env.lab, lab_env.nodes[0])
        stack = ProgramStack("e2e-entry", toolchain_env)
        values = stack_values(lab_env, master0=lab_env.masters[0], distribution="pre")
        values["registry"]["local_registry"]["standby"] = "warm"
        values["registry"]["local_registry"]["node_entry"] = {"address": ENTRY}
        stack.configure(values, {**SECRETS, "registry.tls.ca_key": lab_env.ca[1]})
        yield stack
        stack.remove()
        lab_docker.stop(lab_env.lab, lab_env.nodes[1])

    def test_deploy_puts_every_node_behind_its_entry_point(self, lab_env, stack):
        """Nodes map the domain to the entry address; their entry point lists master0 then the
        two warm standbys, all UP; the masters (registry hosts) keep mapping master0; a pull
        works on the containerd node and on the docker node; a second `up` changes nothing."""
        stack.up()
        lab = lab_env.lab
        m0, m1, m2 = lab_env.masters
        want = [f"{m0}:{PORT} UP", f"{m1}:{PORT} UP backup", f"{m2}:{PORT} UP backup"]
        for node in lab_env.nodes:
            assert any(ENTRY in line for line in hosts_line(lab, node)), hosts_line(lab, node)
            wait_for(lambda: servers(lab, node) == want, 10, f"{node}'s entry point: {want}")
        for m in lab_env.masters:
            assert not any(ENTRY in line for line in hosts_line(lab, m))
        # haproxy: auto: the node without haproxy runs the bundle the program copied (through its
        # own loader), the other its own; the bundle went to both (the program cannot tell).
        bundle = haproxy_bundle.find_bundle()
        version = haproxy_bundle.TARBALL.fullmatch(bundle.name)["version"]
        assert entry_executable(lab, lab_env.nodes[0]) == (
            f"/opt/sealer-registry/haproxy/{version}/lib/ld-linux-x86-64.so.2")
        assert entry_executable(lab, lab_env.nodes[1]) == "/usr/sbin/haproxy"
        for node in lab_env.nodes:
            assert lab.run(node, f"sha256sum /var/tmp/{bundle.name}").stdout.split()[0] == \
                haproxy_bundle.sha256_of(bundle)
        ref = lab_env.refs[-1]
        for node, engine in zip(lab_env.nodes, ("containerd", "docker")):
            p = pull_one(lab, node, engine, ref)
            assert p.ok, (engine, p.stderr)
        config = {n: lab.run(n, f"stat -c %Y {CONFIG}").stdout for n in lab_env.nodes}
        assert stack.up().changed() == {}
        assert {n: lab.run(n, f"stat -c %Y {CONFIG}").stdout for n in lab_env.nodes} == config

    def test_pulls_go_on_while_master0_is_killed(self, lab_env, stack):
        """Both nodes pull every image back to back; master0 is killed (packets dropped,
        processes frozen) in the first round. No pull started after the kill fails, nor the one
        in flight on containerd (on docker it may fail fast and its retry succeeds: see judge);
        the delays are printed next to the healthy figure."""
        lab = lab_env.lab
        m0 = lab_env.masters[0]
        healthy = {}
        for node, engine in zip(lab_env.nodes, ("containerd", "docker")):
            healthy[engine] = max(pull_one(lab, node, engine, r).seconds for r in lab_env.refs)
        pullers = [Puller(lab, node, engine, lab_env.refs, ROUNDS)
                   for node, engine in zip(lab_env.nodes, ("containerd", "docker"))]
        for p in pullers:
            p.start()
        time.sleep(1.0)
        killed_at = time.monotonic()
        lab.kill(m0)
        for p in pullers:
            p.join(timeout=ROUNDS * len(lab_env.refs) * ROUND_TIMEOUT_S)
            assert not p.is_alive(), f"{p.engine} puller still running"
        for p in pullers:
            print(f"\n{judge(p.engine, p.pulls, killed_at)}; healthy max {healthy[p.engine]:.2f}s")
        for node in lab_env.nodes:
            wait_for(lambda: servers(lab, node)[0].split()[1].startswith("DOWN"), 10,
                     f"{node}'s entry point to mark master0 down")

    def test_recovery_moves_the_servers_and_the_revived_old_master0_serves_no_node(self, lab_env, stack):
        """`cli recover master0 --host <first standby>` as an operator runs it: in two phases
        (issue 24), the first verified with neither node's step run (their entry points already
        list the standby, UP), the fence phase then rewrites each node's entry point (new
        master0, then the other standby; the old master0 gone). The old master0 is revived with
        its registry and stale data: during a full pull round on both nodes not one connection
        reaches its registry port."""
        lab = lab_env.lab
        m0, m1, m2 = lab_env.masters
        done = subprocess.run([sys.executable, "-m", "cli", "recover", "master0", "--host", m1,
                               "--stack", stack.name, "--yes", "--json"], cwd=PROJECT_DIR,
                              env=dict(stack.env, PYTHONPATH=str(PROJECT_DIR)), capture_output=True,
                              text=True, timeout=900, stdin=subprocess.DEVNULL)
        print(f"\n$ python -m cli recover master0 --host {m1} -> {done.returncode}\n{done.stderr}")
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        assert (doc["master0"], doc["down_hosts"]) == (m1, [m0])
        assert doc["verified"]["healthy"] is True, doc["verified"]["problems"]
        # The first phase repoints the registry hosts' hosts lines only: no entry node's step.
        assert not set(doc["plan"]["repointed"]) & set(lab_env.nodes), doc["plan"]
        assert doc["fence"]["hosts"] == len(lab_env.nodes) and doc["fence"]["healthy"] is True, doc["fence"]
        print(f"recover in two phases: {doc['seconds']}")
        for node in lab_env.nodes:
            wait_for(lambda: servers(lab, node) == [f"{m1}:{PORT} UP", f"{m2}:{PORT} UP backup"], 10,
                     f"{node}'s entry point after the recovery")
        assert stack.up().changed() == {}
        lab.revive(m0)
        syn_counter(lab, m0, "add")
        for node, engine in zip(lab_env.nodes, ("containerd", "docker")):
            for ref in lab_env.refs:
                p = pull_one(lab, node, engine, ref)
                assert p.ok, (engine, ref, p.stderr)
        time.sleep(2.5)  # two health-check intervals
        assert syn_counter(lab, m0, "read") == 0
