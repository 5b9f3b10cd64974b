"""Lab hosts behave like separate machines: own sshd with a pinned host key, own files, and faults
that look like a dead machine (timeouts, not refusals)."""
from __future__ import annotations

import subprocess
import time

import pytest

from lab.hosts import PREFIX, SUBNET


def ip(octet: int) -> str:
    """Instance-aware (SEALER_LAB_INSTANCE) address and name of a lab host."""
    return str(SUBNET.network_address + octet)


def name(octet: int) -> str:
    return f"{PREFIX}{octet}"


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
    a, b = name(11), name(12)
    lab.ssh(a, "mkdir -p /var/lib/sealer/probe && echo a > /var/lib/sealer/probe/f && "
               "echo a > /root/f && echo a > /tmp/f && "
               f"echo '{ip(11)} sea.hub #hostalias-set-by-sealer' >> /etc/hosts && "
               f"sed -i 's/^{ip(11)} sea.hub/{ip(12)} sea.hub/' /etc/hosts")
    assert f"{ip(12)} sea.hub #hostalias-set-by-sealer" in lab.ssh(a, "cat /etc/hosts").stdout
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
    lab.ssh(name(13), "setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $! > /run/probe.pid")
    pid = int(lab.run(name(13), "cat /run/probe.pid").stdout)
    assert pid in lab.pids(name(13))
    assert pid not in lab.pids(name(12))
    lab.run(name(13), f"kill {pid}")


def test_kill_times_out_and_revive_restores(lab, known_hosts):
    """kill: SYNs vanish (timeout, not refused), packets towards the host are still counted, the
    host's processes are frozen. revive: SSH works again."""
    host = next(h for h in lab.inventory()["hosts"] if h["name"] == name(12))
    before = lab.packets_to(name(12))
    lab.kill(name(12))
    try:
        p, took = ssh(lab, host, "true", known_hosts, timeout=2)
        assert p.returncode == 255
        assert "Connection timed out" in p.stderr, p.stderr
        assert "refused" not in p.stderr
        assert took >= 1.9
        assert lab.packets_to(name(12)) > before
        # a peer host sees the same: its connect times out
        peer = lab.run(name(21), f"timeout 2 bash -c '</dev/tcp/{ip(12)}/22'", check=False)
        assert peer.returncode == 124
        states = [open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
                  for pid in lab.pids(name(12)) if pid != lab.holder_pid(name(12))]
        assert states and set(states) == {"T"}
    finally:
        lab.revive(name(12))
    p, _ = ssh(lab, host, "echo alive", known_hosts)
    assert p.returncode == 0 and p.stdout.strip() == "alive", p.stderr


def test_crash_kill_and_reboot(lab, known_hosts):
    """kill --crash kills the host's processes; revive is a reboot: empty /run, sshd back."""
    host = next(h for h in lab.inventory()["hosts"] if h["name"] == name(22))
    lab.ssh(name(22), "touch /run/marker")
    lab.kill(name(22), crash=True)
    assert lab.pids(name(22)) == [lab.holder_pid(name(22))]
    lab.revive(name(22))
    p, _ = ssh(lab, host, "ls /run/marker 2>&1", known_hosts)
    assert p.returncode != 0 and "No such file" in p.stdout


def test_stop_sshd_refuses(lab, known_hosts):
    host = next(h for h in lab.inventory()["hosts"] if h["name"] == name(21))
    lab.stop_sshd(name(21))
    try:
        p, took = ssh(lab, host, "true", known_hosts)
        assert p.returncode == 255 and "Connection refused" in p.stderr, p.stderr
        assert took < 2
    finally:
        lab.start_sshd(name(21))
    p, _ = ssh(lab, host, "true", known_hosts)
    assert p.returncode == 0, p.stderr


def test_packets_to_counts_only_that_host(lab):
    before = {h: lab.packets_to(h) for h in (name(11), name(13))}
    for _ in range(3):
        lab.ssh(name(11), "true")
    assert lab.packets_to(name(11)) - before[name(11)] >= 10
    assert lab.packets_to(name(13)) == before[name(13)]


def test_every_host_runs_its_own_containerd_reading_certs_d(lab):
    """Masters and nodes each run containerd in their namespaces, with a private
    /var/lib/containerd and their own socket; the CRI plugin's config_path is certs.d."""
    roots = set()
    for h in lab.inventory()["hosts"]:
        assert lab.containerd_running(h["name"])
        out = lab.ssh(h["name"], "ctr version >/dev/null && ctr plugins ls | awk '$2 == \"cri\" { print $4 }' && "
                                 "containerd config dump | grep -F 'config_path = \"/etc/containerd/certs.d\"' && "
                                 "stat -c %i /var/lib/containerd/io.containerd.metadata.v1.bolt/meta.db").stdout.split("\n")
        assert out[0] == "ok", out
        roots.add(out[2])
    assert len(roots) == len(lab.inventory()["hosts"])  # one metadata store per host
    lab.run(name(11), "ctr namespaces create lab-probe")
    try:
        assert "lab-probe" not in lab.run(name(12), "ctr namespaces ls -q").stdout
    finally:
        lab.run(name(11), "ctr namespaces rm lab-probe")


def test_killed_host_freezes_containerd_and_a_reboot_restarts_it(lab):
    """kill: the host's containerd is frozen with the rest (a client on the host gets no answer);
    kill --crash then revive: a fresh containerd (new pid) that serves, its content kept."""
    host = name(13)
    pid = lab._containerd_pid(host)
    lab.run(host, "ctr namespaces create kept")
    lab.kill(host)
    try:
        assert open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "T"
        assert lab.run(host, "timeout 2 ctr version", check=False).returncode == 124
    finally:
        lab.revive(host)
    assert lab._containerd_pid(host) == pid
    lab.kill(host, crash=True)
    lab.revive(host)
    new = lab._containerd_pid(host)
    assert new is not None and new != pid
    assert "kept" in lab.run(host, "ctr namespaces ls -q").stdout
    lab.run(host, "ctr namespaces rm kept")
