"""The lab's control plane lives on the masters, as in a sealer cluster: an etcd member and a
kube-apiserver in each master's namespaces. Killing master0 kills its members; the quorum of the
other two holds and their apiservers keep serving. Needs the toolchain's etcd, kube-apiserver and
kube-controller-manager (`make toolchain`; SEALER_TOOLCHAIN_CACHE)."""
from __future__ import annotations

import json
import os
import time
import urllib.request
import uuid

import pytest

from lab import Lab, toolchain
from lab import controlplane as cplane

pytestmark = pytest.mark.toolchain  # the engine toolchain (make toolchain)

SERVICES = ("etcd", "kube-apiserver", "kube-controller-manager")


@pytest.fixture(scope="module")
def cp(tmp_path_factory):
    missing = toolchain.explain_missing(*SERVICES)
    if missing:
        pytest.fail(missing, pytrace=False)
    lab = Lab(tmp_path_factory.mktemp("cp-lab"))
    lab.down()  # a crashed earlier run holds the srl- names
    lab.up(masters=3, nodes=1)
    try:
        yield lab, cplane.up(lab, bin_dir=toolchain.bin_dir())
    finally:
        lab.down()


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


def answer(plane, method: str, path: str, server: str, want: int, body: dict | None = None):
    """(code, body) when the apiserver answered ``want``; None when it answered otherwise or not
    yet (a revived one takes seconds: its etcd member catches up)."""
    try:
        code, text = cplane.request(plane, method, path, body, timeout=3, server=server)
    except OSError:
        return None
    return (code, text) if code == want else None


def members(ip: str) -> list[str]:
    """Names of the etcd cluster's members, asked from ``ip``'s member (v3 JSON gateway)."""
    req = urllib.request.Request(f"http://{ip}:2379/v3/cluster/member/list", data=b"{}", method="POST")
    with urllib.request.urlopen(req, timeout=3) as r:
        return sorted(m["name"] for m in json.loads(r.read())["members"])


def configmap(name: str, value: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "kube-system"}, "data": {"k": value}}


def same_ns(pid: int, holder: int, kind: str) -> bool:
    return os.readlink(f"/proc/{pid}/ns/{kind}") == os.readlink(f"/proc/{holder}/ns/{kind}")


def test_each_master_runs_an_etcd_member_and_an_apiserver_in_its_own_namespaces(cp):
    """Three members of one etcd cluster and three apiservers, each process in its master's
    network and mount namespaces, data in the master's private /var/lib/etcd; each master maps
    apiserver.cluster.local to itself and its apiserver answers there; the certificate names every
    master IP (TLS verified by IP from the root namespace)."""
    lab, plane = cp
    masters = lab.masters()
    assert plane.masters == tuple(h.ip for h in masters)
    for h in masters:
        holder = lab.holder_pid(h.name)
        for name in SERVICES:
            pid = lab.service_pid(h.name, name)
            assert pid and same_ns(pid, holder, "net") and same_ns(pid, holder, "mnt"), (h.name, name)
        assert members(h.ip) == sorted(m.name for m in masters)
        assert (lab.hosts_dir / h.name / "var-lib-etcd" / "member").is_dir()
        assert cplane.apiserver_ready(plane, h.ip) == (True, "/readyz 200: ok")
        hosts = lab.run(h.name, "grep apiserver.cluster.local /etc/hosts").stdout.split()
        assert hosts[:2] == [h.ip, "apiserver.cluster.local"]
        answer = lab.run(h.name, "curl -sS --max-time 5 --cacert /etc/kubernetes/pki/ca.crt "
                                 "https://apiserver.cluster.local:6443/readyz").stdout
        assert answer == "ok"
    assert not os.path.exists("/var/lib/etcd/member")  # the machine's own stays untouched
    kubeconfig = json.loads(plane.kubeconfig.read_text())
    assert kubeconfig["clusters"][0]["cluster"]["server"] == f"https://{masters[0].ip}:6443"


def test_up_again_keeps_the_running_control_plane(cp):
    """`up` on a ready control plane restarts nothing."""
    lab, plane = cp
    before = {(h.ip, n): lab.service_pid(h.ip, n) for h in lab.masters() for n in SERVICES}
    start = time.monotonic()
    cplane.up(lab, bin_dir=toolchain.bin_dir())
    assert time.monotonic() - start < 10
    assert {(h.ip, n): lab.service_pid(h.ip, n) for h in lab.masters() for n in SERVICES} == before


def test_killing_master0_keeps_quorum_and_master1_serves(cp):
    """master0 killed (packets dropped, processes frozen): its apiserver does not answer, the
    other two etcd members keep a leader, master1's apiserver writes and master2's reads what was
    written; revived, master0's apiserver serves that write too (its member caught up). The other
    members keep dialling the dead one's peer port, which packets_to leaves out."""
    lab, plane = cp
    m0, m1, m2 = (h.ip for h in lab.masters())
    name = f"quorum-{uuid.uuid4().hex[:6]}"
    lab.kill(m0)
    try:
        assert lab.service_pid(m0, "etcd") and lab.service_pid(m0, "kube-apiserver")  # frozen
        ok, detail = cplane.apiserver_ready(plane, m0, timeout=2)
        assert not ok and "timed out" in detail, detail
        time.sleep(1)  # the probe's last retransmissions
        packets, peers = lab.packets_to(m0), lab.link_counter(m0, etcd_peers=True)["packets"]
        wait_for(lambda: cplane.etcd_health(m1)[0] and cplane.etcd_health(m2)[0], 20,
                 "a leader among the two live members")
        wait_for(lambda: answer(plane, "POST", "/api/v1/namespaces/kube-system/configmaps",
                                cplane.server_of(m1), want=201, body=configmap(name, "v")), 30,
                 "master1's apiserver to write")
        code, body = cplane.request(plane, "GET", f"/api/v1/namespaces/kube-system/configmaps/{name}",
                                    server=cplane.server_of(m2))
        assert code == 200 and json.loads(body)["data"] == {"k": "v"}, body
        wait_for(lambda: lab.link_counter(m0, etcd_peers=True)["packets"] > peers, 20,
                 "the live members to dial the dead one")
        assert lab.packets_to(m0) == packets
    finally:
        lab.revive(m0)
    code, body = wait_for(lambda: answer(plane, "GET", f"/api/v1/namespaces/kube-system/configmaps/{name}",
                                         cplane.server_of(m0), want=200), 30,
                          "master0's apiserver to serve again (its member catching up)")
    assert json.loads(body)["data"] == {"k": "v"}


def test_a_crashed_master_gets_its_members_back_when_revived(cp):
    """`kill --crash` kills the members (the quorum of the other two holds); `revive`, like a
    boot, starts them again and the member rejoins with its data."""
    lab, plane = cp
    m0, _, m2 = (h.ip for h in lab.masters())
    lab.kill(m2, crash=True)
    try:
        assert all(lab.service_pid(m2, n) is None for n in SERVICES)
        wait_for(lambda: cplane.etcd_health(m0)[0], 20, "the quorum of master0 and master1")
    finally:
        lab.revive(m2)
    assert all(lab.service_pid(m2, n) for n in SERVICES)
    wait_for(lambda: cplane.etcd_health(m2)[0], 30, "master2's member to rejoin")
    wait_for(lambda: cplane.apiserver_ready(plane, m2)[0], 60, "master2's apiserver")
    assert members(m2) == sorted(h.name for h in lab.masters())


def test_down_leaves_no_member_behind(cp, leftovers):
    """`lab down` (last: the module's lab goes) ends every etcd, apiserver and controller-manager
    with the hosts, frozen or not."""
    lab, _ = cp
    lab.kill(lab.masters()[1].ip)
    assert any("kube-apiserver" in item for item in leftovers())
    lab.down()
    assert leftovers() == []
