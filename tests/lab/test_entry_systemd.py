"""The node-local entry point's systemd path (scripts/lib/entry.sh, entry_with_systemd) on a real
systemd: Debian's systemd 252 as PID 1 of one lab node (lab/systemd.py, systemd's container
interface), configure-node.sh --entry run inside it as a node's shell runs it, real registries on
the three lab masters (tests/lab/runtime_fixtures.py).

Invariants: the unit sealer-registry-entry.service is installed, enabled and active, its MainPID
is HAProxy's master (-Ws) with a worker; pulls go through the entry point; a rerun changes
nothing (same MainPID, same config mtime); another mirror order reloads (the master stays, the
worker is replaced, containerd pulls meanwhile do not fail); a restart after the address was
deleted from lo puts it back (ExecStartPre); configure-node.sh without --entry disables and stops
the unit and removes its file, and systemd's state agrees (not-found, no reload pending). The
tests run in order on one lab; systemd is halted at the end, also on failure."""
from __future__ import annotations

import threading
import time

import pytest

from components.remote_scripts import script_run
from lab import Lab, systemd
from lab.hosts import INSTANCE
from lab.pull import containerd_pull, pull_round
from material.registry_config import read_only_registry_yml
from lab.sealer_state import BASEFS_REGISTRY_CONFIG
from tests.lab.runtime_fixtures import (DOMAIN, PASSWORD, PORT, ROOTFS, USER, generate, serve,
                                        stop_serving)

ENTRY = f"198.19.{INSTANCE}.3"
UNIT = "sealer-registry-entry.service"
UNIT_FILE = f"/etc/systemd/system/{UNIT}"
CONFIG = "/etc/sealer/registry-entry.cfg"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """Three masters and one node: the node gets the systemd (one is enough, and cheaper)."""
    Lab().down()
    lab = Lab(tmp_path_factory.mktemp("lab-state"))
    lab.up(masters=3, nodes=1)
    try:
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="module")
def cluster(lab, tmp_path_factory):
    masters = [m.ip for m in lab.masters()]
    node = lab.nodes()[0].ip
    refs = generate(tmp_path_factory.mktemp("store"))
    cert = serve(lab, masters, refs)
    for standby in masters[1:]:  # warm standbys: read-only registries, as the program runs them
        lab.host_path(standby, f"{ROOTFS}/etc/registry_config.yml").write_text(
            read_only_registry_yml(BASEFS_REGISTRY_CONFIG))
        lab.run(standby, f"cd {ROOTFS}/scripts && bash init-registry.sh {PORT} {ROOTFS}/registry "
                         f"{DOMAIN}", timeout=60)
    systemd.boot(lab, node)
    try:
        yield {"masters": masters, "node": node, "cert": cert,
               "refs": [f"{r['repository']}:{r['tag']}@{r['digest']}" for r in refs]}
    finally:
        try:
            print("\n" + sd(lab, node, f"journalctl --no-pager -b -u {UNIT} | tail -n 30",
                            check=False).stdout)
        finally:
            systemd.halt(lab, node)
            stop_serving(lab, masters)


def sd(lab, node: str, cmd: str, **kw):
    """A shell on the systemd node."""
    return systemd.run(lab, node, cmd, **kw)


def configure(lab, node: str, *args: str, cert: str) -> tuple[int, str]:
    """configure-node.sh ARGS inside the node's systemd namespaces, script and CA on stdin."""
    run = script_run("configure-node.sh", *args, data=cert)
    done = sd(lab, node, run.command, input=run.stdin, check=False, timeout=60)
    return done.returncode, done.stderr


def entry_args(c: dict, mirrors: list[str] | None = None) -> list[str]:
    m0, *standbys = c["masters"]
    out = ["--entry", ENTRY]
    for m in mirrors or standbys:
        out += ["--mirror", m]
    return out + [DOMAIN, m0, str(PORT)]


def show(lab, node: str, prop: str) -> str:
    return sd(lab, node, f"systemctl show -p {prop} --value {UNIT}").stdout.strip()


def workers(lab, node: str, main: int) -> set[int]:
    return {int(p) for p in sd(lab, node, f"pgrep -P {main} -x haproxy || true").stdout.split()}


def wait_for(predicate, limit_s: float, what: str) -> None:
    began = time.monotonic()
    while time.monotonic() - began < limit_s:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} not within {limit_s}s")


def healthy_pulls(lab, c: dict, title: str) -> None:
    rnd = pull_round(lab, c["node"], c["refs"], USER, PASSWORD, DOMAIN, PORT, timeout=60)
    print(f"\n{title}: " + ", ".join(rnd.lines()))
    assert rnd.failures == []


def test_the_node_runs_systemd_and_nothing_of_the_machine(lab, cluster):
    """PID 1 is systemd in a container; none of the machine's enabled units runs or is
    even loaded active (ssh, docker, containerd, haproxy)."""
    node = cluster["node"]
    assert sd(lab, node, "cat /proc/1/comm").stdout.strip() == "systemd"
    assert sd(lab, node, "systemd-detect-virt -c", check=False).stdout.strip() == "container-other"
    running = sd(lab, node, "systemctl list-units --type=service --state=running --no-legend "
                            "--plain").stdout
    assert [line.split()[0] for line in running.splitlines()] == ["systemd-journald.service"]


def test_deploy_installs_enables_and_starts_the_unit(lab, cluster):
    c = cluster
    node = c["node"]
    rc, err = configure(lab, node, *entry_args(c), cert=c["cert"])
    assert rc == 0, err
    assert f"started {UNIT}" in err
    assert sd(lab, node, f"systemctl is-enabled {UNIT}").stdout.strip() == "enabled"
    assert sd(lab, node, f"systemctl is-active {UNIT}").stdout.strip() == "active"
    assert sd(lab, node, f"test -L /etc/systemd/system/multi-user.target.wants/{UNIT}",
              check=False).returncode == 0
    main = int(show(lab, node, "MainPID"))
    cmdline = sd(lab, node, f"tr '\\0' ' ' </proc/{main}/cmdline").stdout
    assert " -Ws " in cmdline and f"-f {CONFIG}" in cmdline, cmdline
    assert workers(lab, node, main), "no HAProxy worker under the master"
    assert show(lab, node, "NeedDaemonReload") == "no"
    assert f"{ENTRY}/32" in sd(lab, node, "ip -o -4 addr show dev lo").stdout
    healthy_pulls(lab, c, "through the entry point under systemd")


def test_a_rerun_changes_nothing(lab, cluster):
    c = cluster
    node = c["node"]
    main = show(lab, node, "MainPID")
    mtime = sd(lab, node, f"stat -c %Y.%N {CONFIG} {UNIT_FILE}").stdout
    rc, err = configure(lab, node, *entry_args(c), cert=c["cert"])
    assert rc == 0, err
    assert f"unchanged: {UNIT} running" in err, err
    assert show(lab, node, "MainPID") == main
    assert sd(lab, node, f"stat -c %Y.%N {CONFIG} {UNIT_FILE}").stdout == mtime
    assert show(lab, node, "NRestarts") == "0"


def test_a_config_change_reloads_without_failed_pulls(lab, cluster):
    """Other mirror order: `systemctl reload` (haproxy -c, then USR2 to the master): the master
    keeps its PID, the worker is a new process, containerd pulls during the reload all succeed."""
    c = cluster
    node = c["node"]
    main = int(show(lab, node, "MainPID"))
    before = workers(lab, node, main)
    failures: list[str] = []
    done: list[float] = []
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            ref = c["refs"][0]
            p = containerd_pull(lab, node, ref.split("@")[0], USER, PASSWORD, DOMAIN, PORT,
                                "lab-pull", 30)
            if not p.ok or p.digest != ref.rsplit("@", 1)[1]:
                failures.append(p.stderr.strip()[-300:])
            done.append(p.seconds)
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        time.sleep(1)
        m0, m1, m2 = c["masters"]
        rc, err = configure(lab, node, *entry_args(c, [m2, m1]), cert=c["cert"])
        assert rc == 0, err
        assert f"reloaded {UNIT}" in err, err
        time.sleep(2)
    finally:
        stop.set()
        t.join(60)
    print(f"\npulls during the reload: {len(done)}, failed {len(failures)}")
    assert failures == [] and len(done) >= 2
    assert int(show(lab, node, "MainPID")) == main
    after = workers(lab, node, main)
    assert after and not after & before, (before, after)
    assert sd(lab, node, f"systemctl is-active {UNIT}").stdout.strip() == "active"
    cfg = sd(lab, node, f"cat {CONFIG}").stdout
    assert cfg.index(f"standby-{m2}") < cfg.index(f"standby-{m1}")


def test_a_config_that_does_not_start_is_rolled_back(lab, cluster):
    """A new config that validates but whose worker cannot start (its stats port is taken):
    `systemctl reload` succeeds (it only signals the master), the master keeps the old worker;
    configure-node.sh must notice, put the old config back and exit 1, as without systemd."""
    c = cluster
    node = c["node"]
    busy = 5098
    cfg, main = sd(lab, node, f"cat {CONFIG}").stdout, show(lab, node, "MainPID")
    before = workers(lab, node, int(main))
    holder = sd(lab, node, "nohup python3 -c 'import socket, time; s = socket.socket(); "
                           f"s.bind((\"127.0.0.1\", {busy})); s.listen(); time.sleep(120)' "
                           ">/dev/null 2>&1 & echo $!").stdout.strip()
    try:
        wait_for(lambda: sd(lab, node, f"ss -ltnH 'sport = :{busy}'").stdout.strip() != "", 5,
                 "the port taken")
        rc, err = configure(lab, node, "--entry-stats-port", str(busy), *entry_args(c),
                            cert=c["cert"])
    finally:
        sd(lab, node, f"kill {holder}", check=False)
    assert rc != 0 and "the previous" in err, err
    assert sd(lab, node, f"cat {CONFIG}").stdout == cfg
    assert show(lab, node, "MainPID") == main
    assert workers(lab, node, int(main)) == before
    assert sd(lab, node, f"systemctl is-active {UNIT}").stdout.strip() == "active"
    healthy_pulls(lab, c, "after the rollback")


def test_a_restart_puts_the_address_back_on_lo(lab, cluster):
    """As after a reboot: the address is gone from lo; ExecStartPre adds it before HAProxy binds."""
    c = cluster
    node = c["node"]
    sd(lab, node, f"ip addr del {ENTRY}/32 dev lo")
    sd(lab, node, f"systemctl restart {UNIT}")
    assert sd(lab, node, f"systemctl is-active {UNIT}").stdout.strip() == "active"
    assert f"{ENTRY}/32" in sd(lab, node, "ip -o -4 addr show dev lo").stdout
    healthy_pulls(lab, c, "after a restart without the address")


def test_removing_the_entry_point_disables_stops_and_forgets_the_unit(lab, cluster):
    c = cluster
    node = c["node"]
    main = int(show(lab, node, "MainPID"))
    rc, err = configure(lab, node, DOMAIN, c["masters"][0], str(PORT), cert=c["cert"])
    assert rc == 0, err
    assert sd(lab, node, f"test -e {UNIT_FILE}", check=False).returncode != 0
    assert sd(lab, node, f"test -e /etc/systemd/system/multi-user.target.wants/{UNIT}",
              check=False).returncode != 0
    assert sd(lab, node, f"systemctl is-active {UNIT}", check=False).stdout.strip() == "inactive"
    assert show(lab, node, "LoadState") == "not-found"
    assert show(lab, node, "NeedDaemonReload") == "no"
    enabled = sd(lab, node, f"systemctl is-enabled {UNIT}", check=False)
    assert enabled.returncode != 0, enabled.stdout
    assert sd(lab, node, f"kill -0 {main}", check=False).returncode != 0
    assert not sd(lab, node, "pgrep -x haproxy || true").stdout.strip()
    assert f"{ENTRY}/32" not in sd(lab, node, "ip -o -4 addr show dev lo").stdout
    assert sd(lab, node, f"test -e {CONFIG}", check=False).returncode != 0
    healthy_pulls(lab, c, "straight to master0 again")
