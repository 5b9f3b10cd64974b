"""Issue 20, the CLI's half, on the clusters the lab makes from sealer's source
(lab/sealer_state.py, lab/sealer_ops.py), adopted as an operator does it (`python -m cli adopt`,
then `pulumi up`: tests/e2e/test_adopt.py's ``adopt_and_up``). Real engine, sshd, kube-apiserver,
docker-registry, dockerd and containerd on the lab's hosts.

HA (`v0.11-ha`, sealer's default: a registry on every master, masters map sea.hub to themselves,
nodes to lvscare's VIP, lab/vip.py): master0 killed, real pulls of every image keep going on a
docker node and a basefs containerd node through the VIP while `recover` (and, on a second
cluster, `watch` as a subprocess) fences it; the recovery sends no packet to the dead master0
(only the nodes' VIP checkers and their pulls may, to its registry port: lvscare probes a dead
master forever), status is healthy after, no hosts line moved, and sealer's ConfigMap names the
new master0 (the first live master of sealer's Clusterfile) first. Pulls are made as the kubelet
makes them (a failed attempt is retried): every image is pulled, and no attempt fails once the
node's VIP checker has dropped the dead master (before that, a new connection may still go to it,
as with IPVS until lvscare removes it). The delays and every failed attempt are printed.
master0 dies between two probes of its registry by the nodes' checkers (lab/vip.py
kill_between_probes): a master that dies while a probe of it is in flight stays in rotation until
TCP keepalive gives up, about 5 min, in lvscare as in the lab (most likely what a CI run met: a
docker node's pulls had not ended 600 s after the kill).

Non-HA (`v0.11`, ha: false): a `sealer run <app>` (lab/sealer_ops.sealer_run_app) adds the app's
data and flag on master0 only; `status` names, per replica, the image id it lacks; with master0
dead and the app's data copied to one replica only, `recover` refuses the other (no image store),
naming host and id, exit 2, touching nothing. The resync by the program's `up` (stack outputs
`data_tree`/`data_images`, branch s7-data) is checked last and skipped, saying so, only while the
stack does not export those outputs.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest

from cli.sealer_clusterfile import masters_of
from lab import controlplane
from lab import sealer_ops
from lab import vip as lab_vip
from lab.hosts import ETCD_PEER_PORT, REPO
from lab.sealer_state import _copy_registry_data, _write, pull, read_configmap
from lab.stack import ProgramStack
from lab.watcher import Watcher
from tests.e2e.labstack import engine_env, lab_env  # noqa: F401  (module-scoped lab)
from tests.e2e.test_adopt import adopt_and_up, cli, forget, make

pytestmark = pytest.mark.e2e

HA_RECOVER, HA_WATCH, LACKING = "e2e-ha-recover", "e2e-ha-watch", "e2e-lacking"
WATCH_ARGS = ("--interval", "1s", "--window", "6s", "--hold-down", "10s")


@pytest.fixture(scope="module")
def engine(toolchain_env):
    env = engine_env(toolchain_env)
    forget(env, HA_RECOVER, HA_WATCH, LACKING)
    yield env
    forget(env, HA_RECOVER, HA_WATCH, LACKING)


@pytest.fixture(scope="module")
def cp(lab_env):  # noqa: F811
    return controlplane.up(lab_env.lab)


# -- helpers -------------------------------------------------------------------------------------


class RecoveryPackets:
    """nft counters of the frames sent towards ``ref`` over the lab's bridge, except what is not
    the recovery's: the nodes' traffic to its registry port (lvscare's checker probes a dead
    master for ever; a pull through the VIP may have been sent there before the checker dropped
    it) and the etcd peers of the control plane (as ``Lab.packets_to``). ``count()`` is what is
    left; ``breakdown()`` says what it was."""

    KINDS = {"ssh": "tcp dport 22", "apiserver": "tcp dport 6443",
             "registry_not_from_nodes": "ip saddr != {{ {nodes} }} tcp dport {port}",
             "other_tcp": "tcp dport != {{ 22, 6443, {port}, {peer} }} tcp sport != {peer}",
             "udp": "meta l4proto udp", "icmp": "meta l4proto icmp"}

    def __init__(self, lab, ref: str, nodes: list[str], port: int):
        from lab.hosts import NFT_TABLE

        self.table, name = NFT_TABLE, lab.host(ref).name
        self.chain = "rec_" + name.replace("-", "_")
        lines = [f"add chain bridge {self.table} {self.chain} {{ type filter hook postrouting "
                 "priority 6; policy accept; }"]
        for kind, match in self.KINDS.items():
            if not nodes and kind == "registry_not_from_nodes":
                match = "tcp dport {port}"
            rule = match.format(nodes=", ".join(nodes), port=port, peer=ETCD_PEER_PORT)
            lines.append(f"add counter bridge {self.table} {self.chain}_{kind}")
            lines.append(f'add rule bridge {self.table} {self.chain} oifname "{name}" ether type '
                         f"ip {rule} counter name {self.chain}_{kind}")
        subprocess.run(["nft", "-f", "-"], check=True, text=True, input="\n".join(lines) + "\n")

    def breakdown(self) -> dict[str, int]:
        out = {}
        for kind in self.KINDS:
            text = subprocess.run(["nft", "-j", "list", "counter", "bridge", self.table,
                                   f"{self.chain}_{kind}"], check=True, capture_output=True,
                                  text=True).stdout
            out[kind] = next(int(i["counter"]["packets"]) for i in json.loads(text)["nftables"]
                             if "counter" in i)
        return out

    def count(self) -> int:
        return sum(self.breakdown().values())

    def remove(self) -> None:
        subprocess.run(["nft", "delete", "chain", "bridge", self.table, self.chain],
                       capture_output=True)
        for kind in self.KINDS:
            subprocess.run(["nft", "delete", "counter", "bridge", self.table,
                            f"{self.chain}_{kind}"], capture_output=True)


class PullLoop(threading.Thread):
    """Real pulls of every image on one node through the VIP, one after the other, round after
    round, from the kill until ``finish`` (after at least one whole round once asked to stop),
    as the kubelet pulls: an attempt that fails is retried (after ``RETRY_S``; the kubelet's
    back-off starts at 10 s) until ``GIVE_UP_S``. Each pull: (seconds since the kill, ref,
    seconds until pulled, pulled, [attempts (began, seconds, ok, detail)]). Beside it, when the
    node's lvscare stand-in dropped the dead master from the VIP (``dropped_at``)."""

    RETRY_S, GIVE_UP_S = 1.0, 180.0

    def __init__(self, lab, sealer, node: str, refs: list[str], t0: float, dead: str):
        super().__init__(daemon=True, name=f"pulls-{node}")
        self.lab, self.sealer, self.node, self.refs, self.t0 = lab, sealer, node, refs, t0
        self.dead = dead
        self.pulls: list[tuple[float, str, float, bool, list]] = []
        self.dropped_at: float | None = None
        self.stop_after_round = threading.Event()
        self.error: BaseException | None = None

    def _watch_the_vip(self, limit_s: float = 120) -> None:
        while self.dropped_at is None and time.monotonic() - self.t0 < limit_s:
            if lab_vip.status(self.lab, self.node).get(self.dead) is False:
                self.dropped_at = time.monotonic() - self.t0
                return
            time.sleep(0.1)

    def run(self) -> None:
        self.vip_watch = threading.Thread(target=self._watch_the_vip, daemon=True)
        self.vip_watch.start()
        try:
            while True:
                for ref in self.refs:
                    self.pulls.append(self._pull(ref))
                if self.stop_after_round.is_set():
                    return
        except BaseException as e:  # noqa: BLE001  (reported by finish)
            self.error = e

    def _pull(self, ref: str) -> tuple[float, str, float, bool, list]:
        repo_tag, digest = ref.split("@")
        first = time.monotonic()
        attempts = []
        while True:
            began = time.monotonic() - self.t0
            got = pull(self.lab, self.sealer, self.node, repo_tag, timeout=120)
            ok = got.ok and got.digest == digest
            attempts.append((began, got.seconds, ok,
                             "" if ok else (got.digest or got.stderr.strip()[-200:])))
            if ok or time.monotonic() - first > self.GIVE_UP_S:
                return first - self.t0, ref, time.monotonic() - first, ok, attempts
            time.sleep(self.RETRY_S)

    def finish(self, timeout: float = 600) -> list[tuple[float, str, float, bool, list]]:
        self.stop_after_round.set()
        self.join(timeout)
        self.vip_watch.join(timeout)
        assert not self.is_alive(), (
            f"{self.node}: the pulls did not end within {timeout}s; the checker dropped the dead "
            f"master at t+{self.dropped_at}s; pulls so far: {self.pulls}")
        assert self.error is None, f"{self.node}: {self.error!r}"
        return self.pulls


def report_pulls(sealer, loops: list[PullLoop]) -> None:
    """Print every pull, its attempts and the delays. Fails when an image was not pulled, or an
    attempt failed that began after the node's VIP checker dropped the dead master (inside that
    window a new connection may still be sent to it, as IPVS does until lvscare removes it)."""
    for loop in loops:
        pulls = loop.finish()
        delays = [p[2] for p in pulls]
        failed_attempts = [(p[1], a) for p in pulls for a in p[4] if not a[2]]
        dropped = loop.dropped_at
        print(f"\n{loop.node} ({sealer.runtimes[loop.node]}): {len(pulls)} image pulls through "
              f"the VIP with master0 dead: {sum(1 for p in pulls if p[3])} pulled, delay max "
              f"{max(delays):.2f}s, mean {sum(delays) / len(delays):.2f}s; "
              f"{len(failed_attempts)} failed attempts (retried); the checker dropped master0 "
              f"at t+{dropped if dropped is None else round(dropped, 1)}s")
        for began, ref, took, ok, attempts in pulls:
            print(f"  t+{began:6.1f}s {ref.split('@')[0]:<32} {took:6.2f}s "
                  f"{'pulled' if ok else 'NOT PULLED'} in {len(attempts)} attempt(s)"
                  + "".join(f"\n      attempt t+{a[0]:.1f}s {a[1]:.2f}s failed: {a[3]}"
                            for a in attempts if not a[2]))
        assert all(p[3] for p in pulls), f"{loop.node}: images not pulled: {pulls}"
        assert len(pulls) >= len(loop.refs)
        assert dropped is not None, f"{loop.node}: the VIP never dropped the dead master"
        late = [(ref, a) for ref, a in failed_attempts if a[0] >= dropped]
        assert late == [], f"{loop.node}: attempts failed after the VIP dropped master0: {late}"


def status(engine, stack: str, key) -> dict:
    done = cli(engine, "status", "--stack", stack, "--ssh-key", str(key), "--json")
    doc = json.loads(done.stdout)
    assert doc["exit_code"] == done.returncode
    return doc


def revive(lab, cp, ip: str, limit_s: float = 120) -> None:
    """Revive a killed master and wait until its apiserver answers again (its etcd member
    catches up first), so that the next cluster the lab makes can use the control plane."""
    lab.revive(ip)
    deadline = time.monotonic() + limit_s
    while True:
        ok, why = controlplane.apiserver_ready(cp, ip)
        if ok:
            return
        assert time.monotonic() < deadline, f"{ip}'s apiserver not ready {limit_s}s after revive: {why}"
        time.sleep(1)


def hosts_files(lab, hosts: list[str]) -> dict[str, str]:
    return {ip: lab.run(ip, "cat /etc/hosts").stdout for ip in hosts}


def by_runtime(sealer) -> list[str]:
    """A docker node and a containerd node."""
    docker = [ip for ip in sealer.nodes if sealer.runtimes[ip] == "docker"]
    containerd = [ip for ip in sealer.nodes if sealer.runtimes[ip].startswith("containerd")]
    assert docker and containerd, sealer.runtimes
    return [docker[0], containerd[0]]


def first_live_master(cp, sealer, dead: str) -> str:
    """The first live master of sealer's Clusterfile (the ConfigMap sealer reads first)."""
    order = masters_of(read_configmap(cp, "sealer-clusterfile", "Clusterfile"))
    assert sorted(order) == sorted(sealer.masters), order
    return next(ip for ip in order if ip != dead)


def configmap_masters(cp, server_ip: str) -> list[str]:
    status_, body = controlplane.request(
        cp, "GET", "/api/v1/namespaces/kube-system/configmaps/sealer-clusterfile",
        server=controlplane.server_of(server_ip))
    assert status_ == 200, body
    return masters_of(json.loads(body)["data"]["Clusterfile"])


# -- HA ------------------------------------------------------------------------------------------


def test_ha_recover_fences_master0_while_pulls_go_on_through_the_vip(lab_env, cp, engine):  # noqa: F811
    lab = lab_env.lab
    sealer = make(lab_env, cp, "v0.11-ha")
    adopt_and_up(lab_env, sealer, engine, HA_RECOVER)
    before = status(engine, HA_RECOVER, lab_env.key_path)
    assert before["healthy"], before["problems"]
    assert all(h["lacking"] is None for h in before["hosts"] if h["deploy"] == "launch")
    m0, nodes = sealer.master0, by_runtime(sealer)
    new = first_live_master(cp, sealer, m0)
    live = [ip for ip in sealer.hosts if ip != m0]
    hosts_before = hosts_files(lab, live)

    t0 = time.monotonic()
    lab_vip.kill_between_probes(lab, m0, m0, sealer.port)
    loops = [PullLoop(lab, sealer, ip, lab_env.refs, t0, m0) for ip in nodes]
    for loop in loops:
        loop.start()
    packets = RecoveryPackets(lab, m0, sealer.nodes, sealer.port)
    try:
        done = cli(engine, "recover", "master0", "--host", new, "--stack", HA_RECOVER, "--yes",
                   "--ssh-key", str(lab_env.key_path), "--json")
        sent = packets.breakdown()
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        assert (doc["old_master0"], doc["master0"], doc["down_hosts"]) == (m0, new, [m0])
        assert doc["verified"]["healthy"] is True, doc["verified"]["problems"]
        assert doc["preflight"]["data_source"].startswith(f"{new}'s own registry data")
        states = {o["where"]: o["state"] for o in doc["sealer_clusterfile"]}
        assert states["ConfigMap kube-system/sealer-clusterfile"] == "updated", states
        print(f"\nrecover (HA): {doc['seconds']}; packets to the dead master0 from the "
              f"recovery: {sent}")
        assert sum(sent.values()) == 0, sent
        after = status(engine, HA_RECOVER, lab_env.key_path)
        assert after["healthy"] and after["exit_code"] == 0, after["problems"]
        assert [h["down"] for h in after["hosts"] if h["ip"] == m0] == [True]
        assert configmap_masters(cp, new)[0] == new
        assert hosts_files(lab, live) == hosts_before  # sea.hub did not move anywhere
        report_pulls(sealer, loops)
    finally:
        packets.remove()
        for loop in loops:
            loop.stop_after_round.set()
        revive(lab, cp, m0)


def test_ha_watch_fences_a_dead_master0_alone(lab_env, cp, engine, tmp_path):  # noqa: F811
    """`cli watch` (a subprocess) on an adopted HA cluster: master0 killed, a quorum decides,
    the first live master of sealer's Clusterfile becomes master0, the old one is fenced with no
    packet from the recovery, every host verified, sealer's ConfigMap names the new master0
    first; pulls through the VIP go on all along; SIGTERM stops it (exit 0)."""
    lab = lab_env.lab
    sealer = make(lab_env, cp, "v0.11-ha")
    adopt_and_up(lab_env, sealer, engine, HA_WATCH)
    m0, nodes = sealer.master0, by_runtime(sealer)
    new = first_live_master(cp, sealer, m0)
    watcher = Watcher(HA_WATCH, engine, tmp_path, *WATCH_ARGS, "--ssh-key", str(lab_env.key_path))
    packets = None
    loops: list[PullLoop] = []
    try:
        watcher.wait_for(lambda e: e["event"] == "probers", 60, "the probers")
        t0 = time.monotonic()
        lab_vip.kill_between_probes(lab, m0, m0, sealer.port)
        loops = [PullLoop(lab, sealer, ip, lab_env.refs, t0, m0) for ip in nodes]
        for loop in loops:
            loop.start()
        packets = RecoveryPackets(lab, m0, sealer.nodes, sealer.port)
        counted: dict[str, dict] = {}
        watcher.wait_for(lambda e: e.get("decision") == "failover", 60, "a failover decision",
                         then=lambda _e: counted.setdefault("decision", packets.breakdown()))
        verified = watcher.wait_for(lambda e: e["event"] == "verified", 300, "the verification",
                                    then=lambda _e: counted.setdefault("verified", packets.breakdown()))
        events = watcher.events()
        order = next(e for e in events if e["event"] == "order")
        fence = next(e for e in events if e["event"] == "fence")
        assert order["masters"][0] == m0 and "sealer-clusterfile" in order["source"], order
        assert (fence["old"], fence["new"], fence["down_hosts"]) == (m0, new, [m0])
        assert verified["healthy"] is True, verified["problems"]
        sent = {k: counted["verified"][k] - counted["decision"][k] for k in counted["decision"]}
        print(f"\nwatch (HA): packets to the dead master0 from the decision to the "
              f"verification: {sent}")
        assert sum(sent.values()) == 0, sent
        sealer_cf = watcher.wait_for(lambda e: e["event"] == "sealer_clusterfile", 60,
                                     "sealer's Clusterfile")
        assert sealer_cf["ok"] is True, sealer_cf
        assert configmap_masters(cp, new)[0] == new
        report_pulls(sealer, loops)
        after = status(engine, HA_WATCH, lab_env.key_path)
        assert after["healthy"], after["problems"]
    finally:
        for loop in loops:
            loop.stop_after_round.set()
        code = watcher.stop()
        print(watcher.tail(60))
        if packets is not None:
            packets.remove()
        revive(lab, cp, m0)
    assert code == 0


# -- non-HA: images added on master0 only ----------------------------------------------------------


def copy_app_to(lab, sealer, ip: str, image) -> None:
    """The app's data and flag reach ``ip`` only (a data copy that got there and no further)."""
    _copy_registry_data(lab, ip, sealer.rootfs, image.store, image.image_id)
    _write(lab, ip, f"{sealer.rootfs}/cache/registry/{image.image_id}", "")


def stack_outputs(engine, stack: str) -> dict:
    done = subprocess.run(["pulumi", "stack", "output", "--json", "--stack", stack], cwd=REPO,
                          env=engine, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout or "{}")


def test_sealer_run_on_master0_shows_per_replica_and_recover_refuses_a_lacking_master(  # noqa: F811
        lab_env, cp, engine, tmp_path):
    lab = lab_env.lab
    sealer = make(lab_env, cp, "v0.11")
    adopt_and_up(lab_env, sealer, engine, LACKING)
    assert status(engine, LACKING, lab_env.key_path)["healthy"]
    m0, m1, m2 = sealer.masters
    image = sealer_ops.make_image(tmp_path / "added", "lagapp", seed=20)
    assert sealer_ops.sealer_run_app(lab, sealer, image) == [m0]

    doc = status(engine, LACKING, lab_env.key_path)
    assert doc["exit_code"] == 1
    lacking = {h["ip"]: h["lacking"] for h in doc["hosts"]}
    assert lacking[m0] is None
    for ip in (m1, m2):
        assert lacking[ip] == {"ids": [image.image_id], "behind": True,
                               "reference": f"master0 {m0}"}, (ip, lacking[ip])
        assert any(p.startswith(f"{ip}: its replica lags master0 {m0}") and image.image_id in p
                   for p in doc["problems"]), doc["problems"]

    copy_app_to(lab, sealer, m2, image)
    stack_file = (REPO / f"Pulumi.{LACKING}.yaml").read_bytes()
    export = subprocess.run(["pulumi", "stack", "export", "--stack", LACKING], cwd=REPO, env=engine,
                            capture_output=True, text=True, check=True).stdout
    packets = RecoveryPackets(lab, m0, [], sealer.port)
    lab.kill(m0)
    try:
        refused = cli(engine, "recover", "master0", "--host", m1, "--stack", LACKING, "--yes",
                      "--ssh-key", str(lab_env.key_path), "--json")
        sent = packets.breakdown()
        assert refused.returncode == 2, refused.stderr
        doc = json.loads(refused.stdout)
        assert doc["error"].startswith(f"{m1} lacks images {image.image_id} (held by {m2})"), doc
        assert doc["lacking"]["unfilled"] == [image.image_id]
        assert doc["lacking"]["held_by"] == {image.image_id: [m2]}
        assert (REPO / f"Pulumi.{LACKING}.yaml").read_bytes() == stack_file
        assert subprocess.run(["pulumi", "stack", "export", "--stack", LACKING], cwd=REPO,
                              env=engine, capture_output=True, text=True,
                              check=True).stdout == export
        assert sum(sent.values()) == 0, sent
    finally:
        packets.remove()
        revive(lab, cp, m0)

    # The resync: the program's `up` copies master0's new data and flags to the replicas and
    # exports what it synced (branch s7-data). Only an older program (no such outputs) skips.
    outputs = stack_outputs(engine, LACKING)
    if "data_tree" not in outputs:
        pytest.skip("the stack exports no data_tree/data_images (the program's resync is on "
                    "branch s7-data): status after `up` is checked once it is merged")
    ProgramStack(LACKING, engine).up()
    after = status(engine, LACKING, lab_env.key_path)
    assert after["healthy"], after["problems"]
    assert image.image_id in stack_outputs(engine, LACKING)["data_images"]
    for ip in (m1, m2):
        assert lab.host_path(ip, f"{sealer.rootfs}/cache/registry/{image.image_id}").exists()
