"""What a recovery does to a node's entry point must not cut a docker pull (issue 21; CI on
feabde4 saw `Get …/manifests/sha256:…: EOF` during cli watch's recovery `up`).

A recovery `up` does two things a node's pulls go through: it reloads the node's HAProxy with the
new server list (configure-node.sh --entry), and it stops the promoted standby's read-only
registry to launch it read-write (launch-registry.sh), while that standby is the server the
node's pulls use. dockerd retries neither a manifest nor a /v2/ request cut on a fresh
connection, so either, done bluntly, fails a pull: measured before the fixes, 1 of 8 reloads
(the new HAProxy bound its own listener and a connection queued on the old one was reset) and 1
of 6 restarts (distribution exited on SIGTERM in the middle of a request) failed a docker pull
with EOF, and later (CI, session 16) 1 of 17 pulls during 6 restarts (most likely a connection
still in the stopped registry's accept queue, reset when its listener closed). Now a reload takes
the listener over (`expose-fd listeners` + `-x`, scripts/lib/entry.sh), and a stop refuses new
connections first, lets the registry accept its queue, then lets it drain (scripts/lib/
registry.sh; http.draintimeout in material/registry_config.py): a docker node pulling back to
back sees no failure through RELOADS reloads and RESTARTS restarts.
Real dockerd (Debian's docker.io in the node's namespaces), real HAProxy, real registries."""
from __future__ import annotations

import threading
import time

import pytest

from components.remote_scripts import script_run
from lab import docker
from material.registry_config import read_only_registry_yml, render_registry_yml
from tests.lab.runtime_fixtures import DOMAIN, PASSWORD, PORT, ROOTFS, USER, ref_of
from tests.lab.test_node_entry import (ENTRY, STATS_PORT, cluster, configure,  # noqa: F401
                                       entry_args, servers, stats, wait_for)

pytestmark = pytest.mark.lab

RELOADS = 8
RESTARTS = 6
LOOP_LIMIT_S = 300
# The configs the program launches a promoted standby with, and a warm standby with.
RW = render_registry_yml(domain=DOMAIN, port=PORT, tls=True, auth=True)


class DockerLoop(threading.Thread):
    """docker pull of every ref, back to back, until stopped (bounded by LOOP_LIMIT_S); records
    (start, seconds, ok, stderr tail)."""

    def __init__(self, lab, node: str, refs: list[str]):
        super().__init__(daemon=True)
        self.lab, self.node, self.refs = lab, node, refs
        self.halt = threading.Event()
        self.pulls: list[tuple[float, float, bool, str]] = []

    def run(self) -> None:
        began = time.monotonic()
        while not self.halt.is_set() and time.monotonic() - began < LOOP_LIMIT_S:
            for ref in self.refs:
                t = time.monotonic()
                p = docker.pull(self.lab, self.node, ref, USER, PASSWORD, timeout=60)
                self.pulls.append((t, time.monotonic() - t, p.ok, p.stderr[-300:]))

    def between(self, start: float, end: float) -> tuple[list, list]:
        """Pulls that started in [start, end) or were in flight at start, and the failed ones."""
        ps = [p for p in self.pulls if start <= p[0] + p[1] and p[0] < end]
        return ps, [p for p in ps if not p[2]]


@pytest.fixture(scope="module")
def looping(lab, cluster):  # noqa: F811
    c = cluster
    rc, err = configure(lab, c["node"], *entry_args(c), cert=c["cert"])
    assert rc == 0, err
    docker.start(lab, c["node"])
    wait_for(lambda: servers(lab, c["node"])[0] == f"{c['masters'][0]}:{PORT} UP", 15, "master0 UP")
    loop = DockerLoop(lab, c["node"], [ref_of(r) for r in c["raw"]])
    loop.start()
    time.sleep(3)
    yield loop
    loop.halt.set()
    loop.join(120)


COUNTERS = ("econ", "eresp", "srv_abrt", "cli_abrt", "wretr", "wredis", "chkfail")


def report(loop: DockerLoop, what: str, start: float, end: float, lab=None, node: str = "",
           windows: list[tuple[float, float]] = ()) -> list:
    """Prints the pulls, each failed one, and when it failed (seconds from `start`) against the
    changes' windows and the entry point's error counters per server (HAProxy's stats)."""
    ps, bad = loop.between(start, end)
    print(f"\n{what}: {len(ps)} docker pulls, {len(bad)} failed, slowest "
          f"{max((p[1] for p in ps), default=0):.2f}s")
    for p in bad:
        print(f"   +{p[0] - start:.1f}s, failed after {p[1]:.2f}s: {p[3]}")
    if bad and windows:
        print("   changes: " + ", ".join(f"+{a - start:.1f}..{b - start:.1f}s" for a, b in windows))
    if bad and lab is not None:
        for row in stats(lab, node):
            print(f"   {row['svname']}: " + " ".join(f"{k} {row[k] or 0}" for k in COUNTERS))
    assert ps, f"{what}: no pull ran"
    return bad


def test_reloads_with_a_new_server_list_cut_no_pull(lab, cluster, looping):  # noqa: F811
    """RELOADS runs of configure-node.sh --entry, each with the standbys in the other order
    (the config changes, HAProxy reloads): every docker pull meanwhile succeeds, and each reload
    kept the listener (the new process got it with -x: no second bind)."""
    c = cluster
    m0, m1, m2 = c["masters"]
    start = time.monotonic()
    for i in range(RELOADS):
        order = (m1, m2) if i % 2 else (m2, m1)
        rc, err = configure(lab, c["node"], "--entry", ENTRY, "--entry-stats-port", str(STATS_PORT),
                            "--mirror", order[0], "--mirror", order[1], DOMAIN, m0, str(PORT),
                            cert=c["cert"])
        assert rc == 0, err
        assert "reloaded the entry point" in err, err
        time.sleep(2)
    assert report(looping, f"{RELOADS} reloads", start, time.monotonic()) == []
    pid = lab.run(c["node"], "cat /run/sealer-registry-entry.pid").stdout.split()[0]
    args = lab.run(c["node"], f"tr '\\0' ' ' </proc/{pid}/cmdline").stdout
    assert "-x /run/sealer-registry-entry.sock" in args, args


def test_restarting_the_standby_in_use_cuts_no_pull(lab, cluster, looping):  # noqa: F811
    """master0 killed, so the node's pulls go to the first standby; that standby's registry is
    stopped and launched again RESTARTS times by launch-registry.sh, read-write and read-only in
    turn (what the recovery does to the standby it promotes): every docker pull meanwhile
    succeeds (new connections are refused and go to the other standby; the registry drains)."""
    c = cluster
    m0, m1, _ = c["masters"]
    lab.kill(m0)
    try:
        wait_for(lambda: servers(lab, c["node"])[0] == f"{m0}:{PORT} DOWN", 15, "master0 DOWN")
        # A pull in flight at the kill is the kill's (tests/lab/test_node_entry.py times those):
        # the restarts begin once a pull that started after master0 was DOWN has ended.
        down_at = time.monotonic()
        wait_for(lambda: any(p[0] >= down_at for p in looping.pulls), 120,
                 "a pull started after master0 was DOWN")
        start = time.monotonic()
        windows = []
        for i in range(RESTARTS):
            began = time.monotonic()
            # As the recovery promotes it: the rootfs gets the other config, launch-registry.sh
            # (the launch step) stops the running registry and starts it with that config.
            config = RW if i % 2 == 0 else read_only_registry_yml(RW)
            # Renamed into place, as write-rootfs.sh does: the running registry keeps its file.
            target = lab.host_path(m1, f"{ROOTFS}/etc/registry_config.yml")
            target.with_suffix(".new").write_text(config)
            target.with_suffix(".new").replace(target)
            run = script_run("launch-registry.sh", ROOTFS, str(PORT), DOMAIN, f"handover-{i}")
            done = lab.run(m1, run.command, input=run.stdin, check=False, timeout=90)
            assert done.returncode == 0, done.stderr
            assert "new connections to :" in done.stderr, done.stderr
            windows.append((began, time.monotonic()))
            wait_for(lambda: servers(lab, c["node"])[1] == f"{m1}:{PORT} UP backup", 15,
                     "the restarted standby UP")
            time.sleep(1)
        assert report(looping, f"{RESTARTS} restarts of the standby in use", start,
                      time.monotonic(), lab, c["node"], windows) == []
    finally:
        lab.revive(m0)
