"""sealer's HA registry VIP, imitated (lab/vip.py): three masters run sealer's registry, a node
maps sea.hub to the VIP and pulls with a real dockerd through it; the reg-lvscare checker drops a
killed master (between two of its probes) within interval + timeout, after which pulls go on with no failure, and takes it
back once it answers again."""
from __future__ import annotations

import time

import pytest

from lab import docker, vip
from tests.lab.runtime_fixtures import (PASSWORD, ROOTFS, USER, generate, map_domain, ref_of,
                                        serve, stop_serving, trust)

INTERVAL, TIMEOUT = 2, 2
SLACK_S = 2  # one nft transaction and the poll below


@pytest.fixture(scope="module")
def ha(lab, tmp_path_factory):
    masters = [m.name for m in lab.masters()]
    ips = [m.ip for m in lab.masters()]
    node = lab.nodes()[0].name
    refs = generate(tmp_path_factory.mktemp("store"))
    cert = serve(lab, masters, refs)
    trust(lab, node, cert)
    map_domain(lab, node, vip.VIP)
    docker.start(lab, node)
    vip.ensure(lab, node, vip.VIP, 5000, ips, interval=INTERVAL, timeout=TIMEOUT)
    wait_status(lab, node, dict.fromkeys(ips, True), INTERVAL + TIMEOUT + SLACK_S)
    yield {"masters": masters, "ips": ips, "node": node, "refs": refs}
    vip.remove(lab, node)
    docker.stop(lab, node, forget=True)
    stop_serving(lab, masters)


def wait_status(lab, node: str, want: dict[str, bool], limit_s: float) -> float:
    began = time.monotonic()
    while time.monotonic() - began < limit_s:
        if vip.status(lab, node) == want:
            return time.monotonic() - began
        time.sleep(0.05)
    raise AssertionError(f"status {vip.status(lab, node)} != {want} after {limit_s}s:\n"
                         f"{vip.checker_log(lab, node)}")


def pulls(lab, ha, count: int) -> list:
    ref = ref_of(ha["refs"][0])
    return [docker.pull(lab, ha["node"], ref, USER, PASSWORD, timeout=60) for _ in range(count)]


def test_pulls_through_the_vip_reach_every_master(lab, ha):
    """sea.hub resolves to the VIP; every pull succeeds and the three masters all serve some
    (round robin), as IPVS with three real servers does."""
    assert lab.run(ha["node"], "getent hosts sea.hub").stdout.split()[0] == vip.VIP
    before = {ip: lab.packets_to(ip) for ip in ha["ips"]}
    done = pulls(lab, ha, 6)
    assert [p.ok for p in done] == [True] * 6, [p.stderr for p in done if not p.ok]
    assert {p.digest for p in done} == {ha["refs"][0]["digest"]}
    grew = {ip: lab.packets_to(ip) - before[ip] for ip in ha["ips"]}
    assert all(n > 0 for n in grew.values()), grew
    print(f"6 docker pulls through the VIP: {sum(p.seconds for p in done) / 6:.2f}s each; "
          f"packets to masters {grew}")


def test_a_killed_master_leaves_the_rotation_and_comes_back(lab, ha):
    """Kill master0 (frozen, its packets dropped): the checker drops it within interval +
    timeout; then every pull succeeds. Revived, it is back in rotation and serves again."""
    dead = ha["ips"][0]
    vip.kill_between_probes(lab, ha["masters"][0], dead, 5000)
    try:
        dropped = wait_status(lab, ha["node"], {ip: ip != dead for ip in ha["ips"]},
                              INTERVAL + TIMEOUT + SLACK_S)
        print(f"master {dead} killed: out of rotation after {dropped:.2f}s "
              f"(interval {INTERVAL}s, timeout {TIMEOUT}s)")
        done = pulls(lab, ha, 6)
        assert [p.ok for p in done] == [True] * 6, [p.stderr for p in done if not p.ok]
    finally:
        lab.revive(ha["masters"][0])
    back = wait_status(lab, ha["node"], dict.fromkeys(ha["ips"], True),
                       INTERVAL + TIMEOUT + SLACK_S)
    print(f"master {dead} revived: back in rotation after {back:.2f}s")
    before = lab.packets_to(dead)
    assert all(p.ok for p in pulls(lab, ha, 3))
    assert lab.packets_to(dead) > before
    assert "healthy: " in vip.checker_log(lab, ha["node"])


def test_with_no_healthy_master_a_connect_is_refused(lab, ha):
    """Every registry stopped: the checker empties the rotation and a connect to the VIP is
    refused at once (IPVS refuses a virtual server with no real server); registries started
    again: all back."""
    stop_serving(lab, ha["masters"])
    try:
        wait_status(lab, ha["node"], dict.fromkeys(ha["ips"], False), INTERVAL + TIMEOUT + SLACK_S)
        began = time.monotonic()
        done = lab.run(ha["node"], f"curl -s -o /dev/null --max-time 5 http://{vip.VIP}:5000/",
                       check=False)
        assert done.returncode == 7, (done.returncode, done.stderr)  # couldn't connect
        assert time.monotonic() - began < 2
    finally:
        for m in ha["masters"]:
            lab.run(m, f"cd {ROOTFS}/scripts && bash init-registry.sh 5000 {ROOTFS}/registry sea.hub",
                    timeout=60)
    wait_status(lab, ha["node"], dict.fromkeys(ha["ips"], True), INTERVAL + TIMEOUT + SLACK_S)
    assert all(p.ok for p in pulls(lab, ha, 2))


def test_ensure_is_idempotent_and_remove_undoes_it(lab, ha):
    node, ips = ha["node"], ha["ips"]
    pid = lab.service_pid(node, vip.SERVICE)
    assert vip.ensure(lab, node, vip.VIP, 5000, ips, interval=INTERVAL, timeout=TIMEOUT) is False
    assert lab.service_pid(node, vip.SERVICE) == pid
    assert vip.remove(lab, node) is True
    assert vip.status(lab, node) == {}
    assert lab.service_pid(node, vip.SERVICE) is None
    assert lab.run(node, f"nft list table ip {vip.TABLE}", check=False).returncode != 0
    assert lab.run(node, f"ip -4 route show {vip.VIP}/32").stdout == ""
    assert vip.remove(lab, node) is False
    assert vip.ensure(lab, node, vip.VIP, 5000, ips, interval=INTERVAL, timeout=TIMEOUT) is True
    wait_status(lab, node, dict.fromkeys(ips, True), INTERVAL + TIMEOUT + SLACK_S)
    assert all(p.ok for p in pulls(lab, ha, 1))
