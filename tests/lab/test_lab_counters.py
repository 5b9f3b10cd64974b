"""Lab.link_counter, packets_to, bytes_to: what the lab bridge counted towards one host. The bench
measures a copy's bytes on the wire with it; tests prove that a dead host got no packet."""
from __future__ import annotations

import time


def settled(lab, host: str, quiet_s: float = 1.0, limit_s: float = 10.0) -> dict:
    """The host's counter once it has not moved for ``quiet_s``: connections of earlier tests
    (an SSH session's last ACK or FIN) may still be closing towards it."""
    deadline = time.monotonic() + limit_s
    last = lab.link_counter(host)
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = lab.link_counter(host)
        if now == last:
            return now
        last = now
    raise AssertionError(f"traffic towards {host} did not stop within {limit_s} s")


def test_link_counter_counts_what_was_sent_to_that_host_only(lab):
    """200 KB sent to one host over SSH show on its counter (packets and bytes), not on another's."""
    target, other = lab.masters()[0].name, lab.masters()[2].name
    before = {h: settled(lab, h) for h in (target, other)}
    lab.ssh(target, "cat >/dev/null", input=b"x" * 200_000)
    assert lab.bytes_to(target) - before[target]["bytes"] >= 200_000
    assert lab.packets_to(target) - before[target]["packets"] >= 10
    assert lab.link_counter(other) == before[other]


def test_frames_the_bridge_floods_are_not_counted_on_other_ports(lab):
    """With the bridge's forwarding table flushed, frames towards one host go out of every port
    until the bridge learns the MAC again; a host's counter counts only frames addressed to its
    IP, so traffic between two other hosts never shows as packets to it (a dead master0 would
    seem dialled)."""
    from lab.hosts import BRIDGE, sh

    a, b, other = lab.masters()[0], lab.masters()[1], lab.masters()[2]
    before = settled(lab, other.name)
    for _ in range(3):
        sh("bridge", "fdb", "flush", "dev", BRIDGE, "dynamic", check=False)
        for h in lab.hosts():
            if h.name not in (a.name, b.name, other.name):
                continue
            sh("bridge", "fdb", "flush", "dev", h.name, "dynamic", check=False)
        lab.ssh(a.name, f"curl -s -o /dev/null --max-time 2 http://{b.ip}:1/ || true")
    assert lab.link_counter(other.name) == before
