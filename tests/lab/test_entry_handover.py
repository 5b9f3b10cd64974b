"""What a recovery does to a node's entry point must not cut a docker pull (issue 21; CI on
feabde4 saw `Get …/manifests/sha256:…: EOF` during cli watch's recovery `up`).

A recovery `up` does two things a node's pulls go through: it reloads the node's HAProxy with the
new server list (configure-node.sh --entry), and it stops the promoted standby's read-only
registry to launch it read-write (launch-registry.sh), while that standby is the server the
node's pulls use. dockerd retries neither a manifest nor a /v2/ request cut on a fresh
connection, so either, done bluntly, fails a pull: measured before the fixes, 1 of 8 reloads
(the new HAProxy bound its own listener and a connection queued on the old one was reset) and 1
of 6 restarts (distribution exited on SIGTERM in the middle of a request) failed a docker pull
with EOF. Now a reload takes the listener over (`expose-fd listeners` + `-x`, scripts/lib/
entry.sh) and the registry drains (http.draintimeout, material/registry_config.py): a docker
node pulling back to back sees no failure through RELOADS reloads and RESTARTS restarts.
Real dockerd (Debian's docker.io in the node's namespaces), real HAProxy, real registries."""
from __future__ import annotations

import threading
import time

import pytest

from lab import docker
from tests.lab.runtime_fixtures import DOMAIN, PASSWORD, PORT, ROOTFS, USER, ref_of
from tests.lab.test_node_entry import (ENTRY, STATS_PORT, cluster, configure,  # noqa: F401
                                       entry_args, servers, wait_for)

pytestmark = pytest.mark.lab

RELOADS = 8
RESTARTS = 6
LOOP_LIMIT_S = 300


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


def report(loop: DockerLoop, what: str, start: float, end: float) -> list:
    ps, bad = loop.between(start, end)
    print(f"\n{what}: {len(ps)} docker pulls, {len(bad)} failed, slowest "
          f"{max((p[1] for p in ps), default=0):.2f}s")
    for p in bad:
        print(f"   +{p[0] - start:.1f}s, failed after {p[1]:.2f}s: {p[3]}")
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
    stopped and launched again RESTARTS times (what the recovery does to the standby it
    promotes): every docker pull meanwhile succeeds (the registry drains; new connections go to
    the other standby while it is down)."""
    c = cluster
    m0, m1, _ = c["masters"]
    lab.kill(m0)
    try:
        wait_for(lambda: servers(lab, c["node"])[0] == f"{m0}:{PORT} DOWN", 15, "master0 DOWN")
        start = time.monotonic()
        for _ in range(RESTARTS):
            lab.run(m1, f"bash {ROOTFS}/scripts/stop-registry.sh && cd {ROOTFS}/scripts && "
                        f"bash init-registry.sh {PORT} {ROOTFS}/registry {DOMAIN}", timeout=90)
            wait_for(lambda: servers(lab, c["node"])[1] == f"{m1}:{PORT} UP backup", 15,
                     "the restarted standby UP")
            time.sleep(1)
        assert report(looping, f"{RESTARTS} restarts of the standby in use", start,
                      time.monotonic()) == []
    finally:
        lab.revive(m0)
