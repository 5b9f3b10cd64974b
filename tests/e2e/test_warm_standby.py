"""Warm standby through the real engine (issue 13): `registry.local_registry.standby: warm` in
pre mode runs a read-only registry on every deploy host but master0; nodes' containerd lists them
after master0; with master0 dead (packets dropped) a node pulls a boot-history image through
sea.hub with 0 failures, and the pull delay (containerd 1.6: 90 s) is measured against master0
alive. Then recovery flips the roles (the new master0 read-write, the rest read-only) and the
revived old master0 comes back read-only. A fresh lab of 3 masters + 2 nodes; the tests of the
class run in order."""

from __future__ import annotations

import socket
import time

import pytest

from lab.pull import pull_round
from lab.stack import (DOMAIN, PASSWORD, PORT, SECRETS, ProgramStack, hosts_line, registry_running,
                       stack_values)
from tests.e2e.labstack import lab_env  # noqa: F401  (module-scoped lab of 3 masters + 2 nodes)

HOSTS_TOML = f"/etc/containerd/certs.d/{DOMAIN}:{PORT}/hosts.toml"
CA = f"/etc/containerd/certs.d/{DOMAIN}:{PORT}/ca.crt"
# A pull through a dead master0 waits containerd 1.6's 30 s connect timeout per request.
OUTAGE_PULL_TIMEOUT_S = 600
# ... in three rounds (resolve the tag, fetch the manifest, then config and layers in parallel):
# the bound docs/how-it-works.md writes down, with a margin for the lab's load.
OUTAGE_PULL_BOUND_S = 3 * 30 + 10


def upload_code(lab, node: str, ip: str, repo: str) -> int:
    """The status code of a blob upload start on https://IP:PORT from ``node`` (TLS verified by
    the installed CA, credentials from a 0600 file): 202 read-write, 405 read-only."""
    done = lab.run(node, f"umask 077; f=$(mktemp); cat >$f; curl -sS -o /dev/null -w '%{{http_code}}' "
                         f"--max-time 10 -K $f -X POST --data-binary '' "
                         f"'https://{ip}:{PORT}/v2/{repo}/blobs/uploads/'; rc=$?; rm -f $f; exit $rc",
                   input=f'cacert = "{CA}"\nuser = "admin:{PASSWORD}"\n', check=False)
    return int(done.stdout or 0)


def mirrors_of(lab, node: str) -> list[str]:
    """The [host] URLs of the node's hosts.toml, in the order containerd tries them."""
    text = lab.run(node, f"cat {HOSTS_TOML}").stdout
    return [line.split('"')[1] for line in text.splitlines() if line.startswith("[host.")]


def settled_packets(lab, ip: str, live: list[str], quiet_s: float = 5.0, limit_s: float = 90.0) -> int:
    """The dead host's packet counter once it has not moved for ``quiet_s``.

    The counter sits on the host's bridge port, and a bridge floods a frame to every port when it
    no longer knows the destination's port: after the outage round of 4 images (6 min) the bridge
    had forgotten the second node (not used meanwhile), and the engine's first SSH frame to it was
    flooded to the dead master0's port too (seen with an nft set of saddr . daddr . dport: one
    frame 198.18.x.1 -> node2:22). A TCP connect from the root namespace to every live host's sshd
    first makes the bridge learn their ports again."""
    for host in live:
        with socket.create_connection((host, 22), timeout=3):
            pass
    start, last = time.monotonic(), lab.packets_to(ip)
    first = last
    while time.monotonic() - start < limit_s:
        time.sleep(quiet_s)
        now = lab.packets_to(ip)
        if now == last:
            break
        last = now
    print(f"\n{last - first} packets to the dead {ip} while settling "
          f"({time.monotonic() - start:.0f}s)")
    return last


def report(title: str, rounds) -> None:
    print(f"\n{title}: {len(rounds.pulls)} images, {len(rounds.failures)} failures, "
          f"total {sum(rounds.seconds):.1f}s, max {max(rounds.seconds):.1f}s, "
          f"{rounds.hops()} host fallbacks")
    for line in rounds.lines():
        print(f"  {line}")


class TestWarmStandby:
    @pytest.fixture(scope="class")
    @classmethod
    def stack(cls, lab_env, toolchain_env):
        stack = ProgramStack("e2e-warm", toolchain_env)
        values = stack_values(lab_env, master0=lab_env.masters[0], distribution="pre")
        values["registry"]["local_registry"]["standby"] = "warm"
        stack.configure(values, {**SECRETS, "registry.tls.ca_key": lab_env.ca[1]})
        yield stack
        stack.remove()

    def test_deploy_runs_master0_read_write_and_the_other_masters_read_only(self, lab_env, stack):
        """`up` launches the registry on every master; only master0 takes an upload; every node
        lists master0 (sea.hub) then the two replicas; the verification passes."""
        report_ = stack.up()
        m0, m1, m2 = lab_env.masters
        node = lab_env.nodes[0]
        assert all(registry_running(lab_env.lab, ip) for ip in (m0, m1, m2))
        repo = lab_env.refs[0].split(":")[0]
        assert [upload_code(lab_env.lab, node, ip, repo) for ip in (m0, m1, m2)] == [202, 405, 405]
        for ip in lab_env.all_ips:
            assert mirrors_of(lab_env.lab, ip) == [f"https://{DOMAIN}:{PORT}", f"https://{m1}:{PORT}",
                                                   f"https://{m2}:{PORT}"], ip
        assert "registry-verify" in report_.remote_commands()
        assert stack.up().changed() == {}

    def test_pulls_with_master0_alive(self, lab_env, stack):
        alive = pull_round(lab_env.lab, lab_env.nodes[0], lab_env.refs, "admin", PASSWORD, DOMAIN, PORT)
        report("master0 alive", alive)
        assert alive.failures == [] and alive.hops() == 0

    def test_an_image_pulls_while_master0_is_dead(self, lab_env, stack):
        """master0 killed (packets dropped, processes frozen): a boot-history image pulls on a
        node through its own certs.d with 0 failures; the pull waits for the dead host's connect
        timeout before containerd tries the next host (containerd 1.6 ignores dial_timeout), and
        that delay is printed. One image: each pull takes this same path (its own resolution
        through the same hosts.toml) and waits the same 90 s (CI on 7cb2ce5: 362 s for the 4
        images one after the other); that the standby serves every image is shown after the
        recovery, when every image pulls from it as the new master0."""
        m0 = lab_env.masters[0]
        lab_env.lab.kill(m0)
        refs = lab_env.refs[:1]
        dead = pull_round(lab_env.lab, lab_env.nodes[0], refs, "admin", PASSWORD, DOMAIN, PORT,
                          timeout=OUTAGE_PULL_TIMEOUT_S)
        report("master0 dead (packets dropped)", dead)
        assert dead.failures == [], [p.stderr for _, p in dead.pulls if not p.ok]
        assert dead.hops() >= len(refs)
        assert max(dead.seconds) <= OUTAGE_PULL_BOUND_S

    def test_recovery_flips_the_roles(self, lab_env, stack):
        """master0 moves to the second master: it turns read-write, the third stays read-only,
        nodes list the new master0 then the remaining replica, no packet to the dead one."""
        old, new, other = lab_env.masters
        node = lab_env.nodes[0]
        before = settled_packets(lab_env.lab, old, [ip for ip in lab_env.all_ips if ip != old])
        stack.set("master0", new)
        stack.set("down_hosts", [old])
        stack.up()
        assert lab_env.lab.packets_to(old) == before
        repo = lab_env.refs[0].split(":")[0]
        assert [upload_code(lab_env.lab, node, ip, repo) for ip in (new, other)] == [202, 405]
        for ip in lab_env.all_ips:
            if ip != old:
                assert hosts_line(lab_env.lab, ip) == [f"{new} {DOMAIN} #hostalias-set-by-sealer"]
                assert mirrors_of(lab_env.lab, ip) == [f"https://{DOMAIN}:{PORT}",
                                                       f"https://{other}:{PORT}"], ip
        after = pull_round(lab_env.lab, node, lab_env.refs, "admin", PASSWORD, DOMAIN, PORT)
        report("after recovery", after)
        assert after.failures == [] and after.hops() == 0
        assert stack.up().changed() == {}

    def test_revived_old_master0_comes_back_read_only(self, lab_env, stack):
        """The old master0 revives with its stale registry still read-write; once taken off
        down_hosts the program relaunches it read-only and lists it as a mirror."""
        old, new, other = lab_env.masters
        node = lab_env.nodes[0]
        repo = lab_env.refs[0].split(":")[0]
        lab_env.lab.revive(old)
        assert upload_code(lab_env.lab, node, old, repo) == 202  # stale, outside the program
        stack.set("down_hosts", [])
        stack.up()
        assert [upload_code(lab_env.lab, node, ip, repo) for ip in (new, old, other)] == [202, 405, 405]
        assert mirrors_of(lab_env.lab, node) == [f"https://{DOMAIN}:{PORT}", f"https://{old}:{PORT}",
                                                 f"https://{other}:{PORT}"]
        assert stack.up().changed() == {}
