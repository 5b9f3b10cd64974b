"""The lab's host addresses: up to 234 nodes in the instance's /24, the rest of a 3 + 500 lab
(issue 24) in two more /24s on the same bridge (lab/hosts.py)."""

import ipaddress
import os
import subprocess
import sys

import pytest

from lab import hosts
from lab.hosts import LabError, plan_hosts

LAB_NETWORK = ipaddress.ip_network("198.18.0.0/15")


def test_a_small_lab_keeps_its_addresses_and_names():
    plan = plan_hosts(3, 2)
    assert [ip for _, ip, _ in plan] == [f"198.18.{hosts.INSTANCE}.{o}" for o in (11, 12, 13, 21, 22)]
    assert [name for name, _, _ in plan] == [f"{hosts.PREFIX}{o}" for o in (11, 12, 13, 21, 22)]


def test_503_hosts_are_distinct_inside_the_lab_network_with_short_interface_names():
    plan = plan_hosts(3, 500)
    ips = [ipaddress.ip_address(ip) for _, ip, _ in plan]
    assert len(set(ips)) == len(ips) == 503
    assert all(ip in LAB_NETWORK for ip in ips)
    assert all(any(ip in net for net in hosts.SUBNETS) for ip in ips)
    # no host on a subnet's network, gateway (.1) or broadcast address
    assert all(int(ip) & 0xff not in (0, 1, 255) for ip in ips)
    names = [name for name, _, _ in plan]
    assert len(set(names)) == 503 and max(map(len, names)) <= 15  # IFNAMSIZ - 1
    assert [ip for _, ip, _ in plan][237:239] == [
        str(hosts.EXTRA_SUBNETS[0].network_address + 11), str(hosts.EXTRA_SUBNETS[0].network_address + 12)]


def test_the_extra_subnets_stay_clear_of_the_vip_addresses_and_of_other_instances():
    for instance in (0, 6, 63):
        out = subprocess.run(
            [sys.executable, "-c", "from lab import hosts, vip; print(hosts.SUBNETS, vip.VIP)"],
            env={**os.environ, "SEALER_LAB_INSTANCE": str(instance)}, capture_output=True,
            text=True, check=True).stdout
        assert f"198.19.{128 + 2 * instance}.0/24" in out and f"198.19.{instance}.2" in out
    assert hosts.MAX_NODES == 234 + 2 * 244


def test_too_many_nodes_are_refused_naming_the_limit():
    with pytest.raises(LabError, match=f"0..{hosts.MAX_NODES}, got {hosts.MAX_NODES + 1}"):
        plan_hosts(3, hosts.MAX_NODES + 1)


def test_the_neighbour_table_grows_with_the_lab_and_never_shrinks(tmp_path, monkeypatch):
    """The kernel's ARP table is shared by every namespace: 503 lab hosts with node entry points
    outgrow its default 1,024 entries (connects fail with `No route to host`)."""
    from lab import hosts

    for i, v in ((1, 128), (2, 512), (3, 1024)):
        (tmp_path / f"t{i}").write_text(f"{v}\n")
    monkeypatch.setattr(hosts, "NEIGH_SYSCTL", str(tmp_path / "t{}"))
    assert hosts.ensure_neighbour_capacity(5) == {}                 # 80 < 1,024: left alone
    assert hosts.ensure_neighbour_capacity(503) == {3: 8048, 2: 4024, 1: 1006}
    assert [int((tmp_path / f"t{i}").read_text()) for i in (1, 2, 3)] == [1006, 4024, 8048]
    assert hosts.ensure_neighbour_capacity(100) == {}               # never lowered


def test_inotify_instances_grow_with_the_lab_and_never_shrink(tmp_path, monkeypatch):
    """Every lab host's containerd takes an inotify instance for its CRI plugin; past the
    machine's 128 it starts without the plugin (375 of 503 hosts did)."""
    from lab import hosts

    limit = tmp_path / "max_user_instances"
    limit.write_text("128\n")
    monkeypatch.setattr(hosts, "INOTIFY_SYSCTL", str(limit))
    assert hosts.ensure_inotify_capacity(0) is None                 # 128: left alone
    assert hosts.ensure_inotify_capacity(503) == 128 + 503 * hosts.INOTIFY_PER_HOST
    assert int(limit.read_text()) == 2140
    assert hosts.ensure_inotify_capacity(5) is None                 # never lowered
