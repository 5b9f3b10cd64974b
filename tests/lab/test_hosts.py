"""Lab hosts behave like separate machines: own sshd with a pinned host key, own files, and faults
that look like a dead machine (timeouts, not refusals)."""
from __future__ import annotations

import subprocess
import time

import pytest

from lab.hosts import INSTANCE, PREFIX

M11, M12, M13, N21, N22 = (f"{PREFIX}{octet}" for octet in (11, 12, 13, 21, 22))
NET = f"198.18.{INSTANCE}"


def ssh(lab, host, cmd, known_hosts, timeout=3):
    argv = ["ssh", "-F", "none", "-i", str(lab.key_path), "-o", f"UserKnownHostsFile={known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-o", f"ConnectTimeout={timeout}", f"root@{host['ip']}", cmd]
    t0 = time.monotonic()
    p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    return p, time.monotonic() - t0


@pytest.fixture
def known_hosts(lab, tmp_path):
    path = tmp_path / "known_hosts"
    path.write_text("".join(f"{h['ip']} {h['host_key']}\n" for h in lab.inventory()["hosts"]))
    return path


def test_ssh_with_recorded_host_key(lab, known_hosts):
    """Every host answers SSH as root with the operator key, and its key is the recorded one; the
    session runs in the host's namespaces (its IP, its hostname)."""
    for h in lab.inventory()["hosts"]:
        p, _ = ssh(lab, h, "hostname; ip -4 -o addr show dev eth0", known_hosts)
        assert p.returncode == 0, p.stderr
        name, addr = p.stdout.splitlines()
        assert name == h["name"]
        assert f"inet {h['ip']}/24" in addr


def test_wrong_host_key_is_rejected(lab, tmp_path):
    hosts = lab.inventory()["hosts"]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{hosts[0]['ip']} {hosts[1]['host_key']}\n")
    p, _ = ssh(lab, hosts[0], "true", wrong)
    assert p.returncode == 255
    assert "Host key verification failed" in p.stderr


def test_hosts_do_not_share_files(lab):
    """/var/lib/sealer, /etc (incl. rename-over of /etc/hosts), /root and /tmp are per host; the lab's
    state dir (operator key, other hosts' dirs) is invisible from a host."""
    a, b = M11, M12
    lab.ssh(a, "mkdir -p /var/lib/sealer/probe && echo a > /var/lib/sealer/probe/f && "
               "echo a > /root/f && echo a > /tmp/f && "
               f"echo '{NET}.11 sea.hub #hostalias-set-by-sealer' >> /etc/hosts && "
               f"sed -i 's/^{NET}.11 sea.hub/{NET}.12 sea.hub/' /etc/hosts")
    assert f"{NET}.12 sea.hub #hostalias-set-by-sealer" in lab.ssh(a, "cat /etc/hosts").stdout
    seen = lab.ssh(b, "ls /var/lib/sealer/probe /root/f /tmp/f 2>&1; grep -c sea.hub /etc/hosts; "
                      f"ls {lab.state} 2>&1", check=False).stdout
    assert "No such file" in seen and "probe/f" not in seen
    assert "\n0\n" in seen
    with open("/etc/hosts") as f:
        assert "sea.hub" not in f.read()
    # hidden: either shadowed by the host's own /tmp or covered by an empty tmpfs
    assert lab.ssh(a, f"ls -A {lab.state} 2>/dev/null || true").stdout == ""


def test_process_started_over_ssh_stays_in_host(lab):
    """A detached process launched through SSH outlives the session and lives in the host's
    namespaces (so a registry started that way is "on" that host)."""
    lab.ssh(M13, "setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $! > /run/probe.pid")
    pid = int(lab.run(M13, "cat /run/probe.pid").stdout)
    assert pid in lab.pids(M13)
    assert pid not in lab.pids(M12)
    lab.run(M13, f"kill {pid}")


def test_kill_times_out_and_revive_restores(lab, known_hosts):
    """kill: SYNs vanish (timeout, not refused), packets towards the host are still counted, the
    host's processes are frozen. revive: SSH works again."""
    host = next(h for h in lab.inventory()["hosts"] if h["name"] == M12)
    before = lab.packets_to(M12)
    lab.kill(M12)
    try:
        p, took = ssh(lab, host, "true", known_hosts, timeout=2)
        assert p.returncode == 255
        assert "Connection timed out" in p.stderr, p.stderr
        assert "refused" not in p.stderr
        assert took >= 1.9
        assert lab.packets_to(M12) > before
        # a peer host sees the same: its connect times out
        peer = lab.run(N21, f"timeout 2 bash -c '</dev/tcp/{NET}.12/22'", check=False)
        assert peer.returncode == 124
        states = [open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
                  for pid in lab.pids(M12) if pid != lab.holder_pid(M12)]
        assert states and set(states) == {"T"}
    finally:
        lab.revive(M12)
    p, _ = ssh(lab, host, "echo alive", known_hosts)
    assert p.returncode == 0 and p.stdout.strip() == "alive", p.stderr


def test_crash_kill_and_reboot(lab, known_hosts):
    """kill --crash kills the host's processes; revive is a reboot: empty /run, sshd back."""
    host = next(h for h in lab.inventory()["hosts"] if h["name"] == N22)
    lab.ssh(N22, "touch /run/marker")
    lab.kill(N22, crash=True)
    assert lab.pids(N22) == [lab.holder_pid(N22)]
    lab.revive(N22)
    p, _ = ssh(lab, host, "ls /run/marker 2>&1", known_hosts)
    assert p.returncode != 0 and "No such file" in p.stdout


def test_stop_sshd_refuses(lab, known_hosts):
    host = next(h for h in lab.inventory()["hosts"] if h["name"] == N21)
    lab.stop_sshd(N21)
    try:
        p, took = ssh(lab, host, "true", known_hosts)
        assert p.returncode == 255 and "Connection refused" in p.stderr, p.stderr
        assert took < 2
    finally:
        lab.start_sshd(N21)
    p, _ = ssh(lab, host, "true", known_hosts)
    assert p.returncode == 0, p.stderr


def test_packets_to_counts_only_that_host(lab):
    before = {h: lab.packets_to(h) for h in (M11, M13)}
    for _ in range(3):
        lab.ssh(M11, "true")
    assert lab.packets_to(M11) - before[M11] >= 10
    assert lab.packets_to(M13) == before[M13]
