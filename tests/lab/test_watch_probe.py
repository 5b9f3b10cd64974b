"""`cli watch`'s probing on real hosts: one SSH ControlMaster per prober that every round goes
through, scripts/watch-probe.sh's votes (alive, dead by timeout, a prober cut off = no vote) and
the replica stamp it reads, all bounded in time."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from cli.failover import Vote
from cli.ssh import SshAccess
from cli.watch import PROBE_TIMEOUT_S, ProberLinks, probe_round
from config import build_config
from material import pki

PORT = 5000
ROOTFS = "/var/lib/sealer/data/lab/rootfs"
STAMP = {"source": "self", "completed_at": 1700000000, "files": 3, "bytes": 100, "tree": "b" * 64}


@pytest.fixture(scope="module")
def hosts(lab):
    masters = [h.ip for h in lab.masters()]
    nodes = [h.ip for h in lab.nodes()]
    return masters, nodes


@pytest.fixture(scope="module")
def config(lab, hosts):
    masters, nodes = hosts
    ca_cert, ca_key = pki.generate_ca()
    return build_config({
        "master0": masters[0], "distribution": "pre",
        "cluster": {"name": "lab", "masters": masters, "nodes": nodes,
                    "ssh": {"private_key_path": str(lab.key_path),
                            "host_keys": {h.ip: h.host_key for h in lab.hosts()}}},
        "registry": {"port": PORT, "local_registry": {"deploy_hosts": masters},
                     "tls": {"ca_cert": ca_cert, "ca_key": ca_key}},
        "apps": {"history": {"type": "boot", "applications": []}},
        "kubernetes": {"kubeconfig_path": "/nonexistent"},
    })


@pytest.fixture(scope="module")
def serving(lab, hosts):
    """master0 answers https://<ip>:5000/v2/ with 200 (openssl's test server stands in for the
    registry); a stamp on master1, none on the node."""
    m0 = hosts[0][0]
    lab.run(m0, "cd /root && openssl req -x509 -newkey rsa:2048 -nodes -keyout k.pem -out c.pem "
                "-days 1 -subj /CN=t 2>/dev/null && (setsid openssl s_server -quiet -www "
                f"-accept {PORT} -cert c.pem -key k.pem </dev/null >/dev/null 2>&1 &)")
    lab.run(hosts[0][1], f"mkdir -p {ROOTFS}/registry && echo '{json.dumps(STAMP)}' "
                         f">{ROOTFS}/registry/.sealer-replica")
    deadline = time.monotonic() + 10
    while lab.run(m0, f"curl -sk -o /dev/null -w '%{{http_code}}' https://127.0.0.1:{PORT}/v2/",
                  check=False).stdout != "200":
        assert time.monotonic() < deadline, "the stand-in registry did not start"
        time.sleep(0.1)
    yield m0
    lab.run(m0, "pkill -f 'openssl s_server' || true", check=False)


@pytest.fixture
def links(config):
    with SshAccess(config, Path(config.cluster.ssh.private_key_path)) as access:
        links = ProberLinks(access)
        yield links
        links.close()


def control_check(links: ProberLinks, ip: str) -> int:
    argv = links.access.argv(ip, options=["-o", f"ControlPath={links._path()}", "-O", "check"])
    return subprocess.run(argv, capture_output=True, timeout=10).returncode


def wait_masters(links: ProberLinks, ips: list[str]) -> None:
    deadline = time.monotonic() + 10
    while any(control_check(links, ip) != 0 for ip in ips):
        assert time.monotonic() < deadline, "the ControlMasters did not come up"
        time.sleep(0.1)


def test_probers_vote_alive_through_one_connection_each(lab, hosts, config, serving, links):
    """Each prober keeps one master connection; a round through it takes well under a second
    and every prober sees master0's registry answer; the stamp is read where it exists."""
    masters, nodes = hosts
    probers = [masters[1], masters[2], nodes[0]]
    links.keep(probers)
    wait_masters(links, probers)
    pids = {ip: p.pid for ip, p in links.masters.items()}
    start = time.monotonic()
    rounds, replicas = probe_round(links, config, probers, [serving])
    took = time.monotonic() - start
    assert [p.vote for p in rounds[0].probes] == [Vote.ALIVE] * 3, rounds[0].evidence()
    assert all(p.answers and p.detail == "http 200" for p in rounds[0].probes)
    assert replicas[masters[1]].stamp.tree == "b" * 64
    assert replicas[nodes[0]].stamp is None and replicas[nodes[0]].stamp_problem == "none"
    assert took < 1.5, took
    for _ in range(3):
        links.keep(probers)
        probe_round(links, config, probers, [serving])
    assert {ip: p.pid for ip, p in links.masters.items()} == pids  # the same connections


def test_dead_target_and_cut_off_prober(lab, hosts, config, serving, links):
    """master0 cut off: every prober votes dead (timed out, not answering) within about a
    second; a prober cut off too is no vote, within the probe's bound; its master comes back
    after the heal."""
    masters, nodes = hosts
    probers = [masters[1], nodes[0]]
    links.keep(probers)
    wait_masters(links, probers)
    lab.partition(serving)
    try:
        start = time.monotonic()
        rounds, _ = probe_round(links, config, probers, [serving])
        assert time.monotonic() - start < 3
        assert [(p.vote, p.answers) for p in rounds[0].probes] == [(Vote.DEAD, False)] * 2
        lab.partition(nodes[0])
        try:
            start = time.monotonic()
            rounds, _ = probe_round(links, config, probers, [serving])
            assert time.monotonic() - start < PROBE_TIMEOUT_S + 1
            votes = {p.prober: p.vote for p in rounds[0].probes}
            assert votes == {masters[1]: Vote.DEAD, nodes[0]: Vote.NOVOTE}, rounds[0].evidence()
        finally:
            lab.heal(nodes[0])
    finally:
        lab.heal(serving)
    deadline = time.monotonic() + 20
    while True:
        links.keep(probers)
        rounds, _ = probe_round(links, config, probers, [serving])
        if [p.vote for p in rounds[0].probes] == [Vote.ALIVE] * 2:
            break
        assert time.monotonic() < deadline, rounds[0].evidence()
        time.sleep(0.5)


def test_close_ends_every_master(hosts, config, links):
    masters, nodes = hosts
    links.keep([masters[1], nodes[0]])
    procs = list(links.masters.values())
    links.close()
    assert all(p.poll() is not None for p in procs)
