"""The node-local entry point (registry.local_registry.node_entry, issue 21) at the script level:
scripts/configure-node.sh --entry runs Debian's HAProxy in a lab node's namespaces in front of
real registries on the three lab masters (sealer's registry: its self-signed CA as server cert,
htpasswd; tests/lab/runtime_fixtures.py). The config is rendered as designed and a rerun changes
nothing; pulls through sea.hub go on when master0 is killed (packets dropped) or powered off (its
address gone), the first within 5 s, the later ones within 1 s of the healthy figure; a master0
that comes back is used again; the refusals change nothing on the host; a new config that does
not validate or does not start leaves the running entry point as it was; status-probe.sh reads
the real stats page. The tests run in order on one lab."""
from __future__ import annotations

import csv
import io
import threading
import time

import pytest

from components.remote_scripts import script_run
from lab import docker
from lab.hosts import INSTANCE
from lab.pull import containerd_pull, pull_round
from lab.sealer_state import BASEFS_REGISTRY_CONFIG
from material.registry_config import read_only_registry_yml
from tests.lab.runtime_fixtures import (DOMAIN, PASSWORD, PORT, ROOTFS, USER, generate, ref_of,
                                        serve, stop_serving)

ENTRY = f"198.19.{INSTANCE}.3"
STATS_PORT = 5099
CONFIG = "/etc/sealer/registry-entry.cfg"
PIDFILE = "/run/sealer-registry-entry.pid"
FIRST_PULL_GOAL_S = 5.0
LATER_SLACK_S = 1.0


def configure(lab, host: str, *args: str, cert: str, env: str = "") -> tuple[int, str]:
    """configure-node.sh ARGS on ``host`` with the CA on stdin: (exit code, stderr)."""
    # As the node step sends it: the script and the CA on stdin (a host does not see the
    # checkout: /tmp, /root and more are private to it, lab/README.md).
    run = script_run("configure-node.sh", *args, data=cert)
    done = lab.run(host, f"{env} {run.command}".strip(), input=run.stdin, check=False, timeout=60)
    return done.returncode, done.stderr


def status_probe(lab, node: str, stats_port: int) -> list[str]:
    """status-probe.sh --entry-stats PORT's lines, sent as the CLI sends it (script on stdin)."""
    run = script_run("status-probe.sh", "--entry-stats", str(stats_port), ROOTFS, DOMAIN, str(PORT), "x")
    return lab.run(node, run.command, input=run.stdin).stdout.splitlines()


def stats(lab, node: str, port: int = STATS_PORT) -> list[dict]:
    """The backend's servers from HAProxy's stats CSV, columns by their header names (a failed
    check's ``last_chk`` is a quoted field with a comma in it)."""
    text = lab.run(node, f"curl -sf --max-time 3 'http://127.0.0.1:{port}/;csv'").stdout
    rows = list(csv.DictReader(io.StringIO(text.removeprefix("# "))))
    return [r for r in rows if r["svname"] not in ("FRONTEND", "BACKEND") and r["addr"]]


def servers(lab, node: str) -> list[str]:
    return [f"{r['addr']} {r['status']}" + (" backup" if r["bck"] == "1" else "")
            for r in stats(lab, node)]


def wait_for(predicate, limit_s: float, what: str) -> float:
    began = time.monotonic()
    while time.monotonic() - began < limit_s:
        if predicate():
            return time.monotonic() - began
        time.sleep(0.2)
    raise AssertionError(f"{what} not within {limit_s}s")


def entry_pid(lab, node: str) -> int:
    return int(lab.run(node, f"cat {PIDFILE}").stdout.split()[0])


def snapshot(lab, host: str) -> dict:
    """What a refusal must leave as it was."""
    return {"hosts": lab.run(host, "cat /etc/hosts").stdout,
            "config": lab.run(host, f"cat {CONFIG} 2>/dev/null || echo none").stdout,
            "lo": lab.run(host, "ip -o -4 addr show dev lo").stdout,
            "certs": lab.run(host, "ls -R /etc/containerd/certs.d /etc/docker/certs.d 2>&1 || true").stdout}


@pytest.fixture(scope="module")
def cluster(lab, tmp_path_factory):
    masters = [m.ip for m in lab.masters()]
    refs = generate(tmp_path_factory.mktemp("store"))
    cert = serve(lab, masters, refs)
    for standby in masters[1:]:  # warm standbys: read-only registries, as the program runs them
        target = lab.host_path(standby, f"{ROOTFS}/etc/registry_config.yml")
        target.write_text(read_only_registry_yml(BASEFS_REGISTRY_CONFIG))
        lab.run(standby, f"cd {ROOTFS}/scripts && bash init-registry.sh {PORT} {ROOTFS}/registry "
                         f"{DOMAIN}", timeout=60)
    node, other = (n.ip for n in lab.nodes()[:2])
    yield {"masters": masters, "node": node, "other": other, "cert": cert,
           "refs": [f"{r['repository']}:{r['tag']}@{r['digest']}" for r in refs], "raw": refs}
    docker.stop(lab, node, forget=True)
    stop_serving(lab, masters)


def entry_args(c: dict, stats_port: int = STATS_PORT) -> list[str]:
    m0, m1, m2 = c["masters"]
    return ["--entry", ENTRY, "--entry-stats-port", str(stats_port), "--mirror", m1, "--mirror", m2,
            DOMAIN, m0, str(PORT)]


def pulls(lab, c: dict, title: str):
    rnd = pull_round(lab, c["node"], c["refs"], USER, PASSWORD, DOMAIN, PORT, timeout=120)
    print(f"\n{title}: " + ", ".join(rnd.lines()))
    return rnd


def test_deploy_renders_the_config_and_pulls_go_through_the_entry_point(lab, cluster):
    """HAProxy listens on ENTRY:PORT (ENTRY/32 on lo), master0 first, the standbys as backups,
    every server health-checked over TLS verified with the CA configure-node installed; the node
    maps the domain to ENTRY only, with sealer's marker; containerd and docker pull through it."""
    c = cluster
    m0, m1, m2 = c["masters"]
    rc, err = configure(lab, c["node"], *entry_args(c), cert=c["cert"])
    assert rc == 0, err
    cfg = lab.run(c["node"], f"cat {CONFIG}").stdout
    servers_lines = [line.split() for line in cfg.splitlines() if line.strip().startswith("server ")]
    assert servers_lines == [["server", f"master0-{m0}", f"{m0}:{PORT}", "tcp-ut", "2s"],
                             ["server", f"standby-{m1}", f"{m1}:{PORT}", "tcp-ut", "2s", "backup"],
                             ["server", f"standby-{m2}", f"{m2}:{PORT}", "tcp-ut", "2s", "backup"]]
    for want in (f"bind {ENTRY}:{PORT}", "mode tcp", "timeout connect 300ms", "retries 3",
                 "option redispatch 1", "option srvtcpka", "option httpchk",
                 "http-check send meth GET uri /v2/", "http-check expect rstatus ^(200|401)$",
                 f"check check-ssl check-sni {DOMAIN} verify required ca-file "
                 f"/etc/containerd/certs.d/{DOMAIN}:{PORT}/ca.crt verifyhost {DOMAIN}",
                 "inter 1s fall 2 rise 2 observe layer4 error-limit 1 on-error mark-down",
                 f"bind 127.0.0.1:{STATS_PORT}", "stats show-legends"):
        assert want in cfg, want
    assert "shutdown-sessions" not in cfg
    # Debian's package made the user: HAProxy drops root once its listeners are bound.
    assert "user haproxy" in cfg and "group haproxy" in cfg
    pid = lab.run(c["node"], f"cat {PIDFILE}").stdout.split()[0]
    assert lab.run(c["node"], f"ps -o user= -p {pid}").stdout.strip() == "haproxy"
    assert f"{ENTRY}/32" in lab.run(c["node"], "ip -o -4 addr show dev lo").stdout
    mapped = [line for line in lab.run(c["node"], "cat /etc/hosts").stdout.splitlines()
              if DOMAIN in line.split("#")[0].split()[1:]]
    assert mapped == [f"{ENTRY} {DOMAIN} #hostalias-set-by-sealer"]
    want = [f"{m0}:{PORT} UP", f"{m1}:{PORT} UP backup", f"{m2}:{PORT} UP backup"]
    wait_for(lambda: servers(lab, c["node"]) == want, 10, f"servers {want}")
    rnd = pulls(lab, c, "containerd through the entry point")
    assert rnd.failures == []
    docker.start(lab, c["node"])
    r = c["raw"][0]
    pulled = docker.pull(lab, c["node"], ref_of(r), USER, PASSWORD)
    assert pulled.ok, pulled.stderr
    assert pulled.digest == r["digest"]


def test_a_rerun_changes_nothing(lab, cluster):
    """Same arguments again: the config keeps its mtime, HAProxy its pid, lo one address."""
    c = cluster
    pid, mtime = entry_pid(lab, c["node"]), lab.run(c["node"], f"stat -c %Y.%N {CONFIG}").stdout
    rc, err = configure(lab, c["node"], *entry_args(c), cert=c["cert"])
    assert rc == 0, err
    assert "unchanged: the entry point runs" in err and f"unchanged: {CONFIG}" in err
    assert entry_pid(lab, c["node"]) == pid
    assert lab.run(c["node"], f"stat -c %Y.%N {CONFIG}").stdout == mtime
    assert lab.run(c["node"], "ip -o -4 addr show dev lo").stdout.count(f"{ENTRY}/32") == 1


def test_status_probe_reads_the_stats_page(lab, cluster):
    """status-probe.sh --entry-stats prints the servers in config order (the CLI parses it);
    a stats port nobody answers on gives entry=unreachable."""
    from cli.probe import parse_entry

    c = cluster
    m0, m1, m2 = c["masters"]
    out = status_probe(lab, c["node"], STATS_PORT)
    line = [x for x in out if x.startswith("entry=")]
    # each server's last check: HAProxy's L7OK (the TLS handshake and /v2/'s 401 as expected)
    assert line == [f"entry={m0}:{PORT}:UP(L7OK) {m1}:{PORT}:UP(L7OK):backup "
                    f"{m2}:{PORT}:UP(L7OK):backup"]
    parsed, error = parse_entry(line[0].removeprefix("entry="))
    assert error == ""
    assert parsed == [{"address": f"{m0}:{PORT}", "status": "UP", "backup": False, "check": "L7OK"},
                      {"address": f"{m1}:{PORT}", "status": "UP", "backup": True, "check": "L7OK"},
                      {"address": f"{m2}:{PORT}", "status": "UP", "backup": True, "check": "L7OK"}]
    out = status_probe(lab, c["node"], STATS_PORT + 1)
    assert [x for x in out if x.startswith("entry=")] == ["entry=unreachable"]


def outage(lab, c: dict, down, up, what: str) -> None:
    """A round with master0 alive, then master0 ``down``: no pull fails, the first within 5 s,
    the later ones within 1 s of the healthy max; master0 marked DOWN; ``up`` in the end."""
    m0 = c["masters"][0]
    wait_for(lambda: servers(lab, c["node"])[0] == f"{m0}:{PORT} UP", 15, "master0 UP")
    alive = pulls(lab, c, "master0 alive")
    assert alive.failures == []
    healthy = max(alive.seconds)
    down(m0)
    try:
        rnd = pulls(lab, c, f"master0 {what}")
        first, later = rnd.seconds[0], max(rnd.seconds[1:])
        print(f"{what}: {len(rnd.failures)} failures, first {first:.2f}s, later max {later:.2f}s, "
              f"healthy max {healthy:.2f}s")
        assert rnd.failures == []
        assert first <= FIRST_PULL_GOAL_S
        assert later <= healthy + LATER_SLACK_S
        assert servers(lab, c["node"])[0].startswith(f"{m0}:{PORT} DOWN")
        probe = status_probe(lab, c["node"], STATS_PORT)
        entry = [x for x in probe if x.startswith("entry=")]
        assert len(entry) == 1 and entry[0].startswith(f"entry={m0}:{PORT}:DOWN"), entry
    finally:
        up(m0)


def test_pulls_go_on_when_master0_is_killed(lab, cluster):
    outage(lab, cluster, lab.kill, lab.revive, "killed")


def test_pulls_go_on_when_master0_is_powered_off(lab, cluster):
    outage(lab, cluster, lab.power_off, lab.power_on, "powered off")


def verify_through_entry(lab, c: dict, refs: list[str]):
    """verify-registry.sh as the program's registry-verify step runs it on a node with an entry
    point: over SSH, the password on stdin."""
    run = script_run("verify-registry.sh", "--entry", ENTRY, DOMAIN, str(PORT), "https", USER,
                     c["masters"][0], *refs, data=PASSWORD + "\n")
    start = time.monotonic()
    done = lab.ssh(c["node"], run.command, input=run.stdin, check=False, timeout=180)
    return done, time.monotonic() - start


REFUSE = "sealer_test_refuse"   # an nft table on a master: its registry port refuses (TCP reset)


def refuse_registry(lab, master: str) -> None:
    lab.run(master, f"nft add table inet {REFUSE} && nft add chain inet {REFUSE} c "
                    f"'{{ type filter hook input priority -10; }}' && nft add rule inet {REFUSE} c "
                    f"tcp dport {PORT} reject with tcp reset")


def answer_registry(lab, master: str) -> None:
    lab.run(master, f"nft delete table inet {REFUSE} 2>/dev/null || true")


def test_verify_through_the_entry_point_waits_for_a_server_to_come_up(lab, cluster):
    """The program's verification right after configure-node.sh reloaded HAProxy, on masters too
    loaded to pass a check or two (the 3 + 500 bench: the deploy's first pull EOF, HAProxy holding
    every server DOWN; a recovery's verification, 2 of 5 pulls), each pull is tried 5 times, 3 s
    apart. Every master's registry refusing throughout (a TCP reset: the node's hosts.toml mirrors
    fail at once too, where dropped packets would cost containerd 1.6 its 30 s connect timeout per
    mirror and image): it fails after each image's 5th attempt, naming every image; the
    registries back after 4 s: it passes, saying which attempts failed."""
    c = cluster
    two = c["refs"][:2]
    try:
        for m in c["masters"]:
            refuse_registry(lab, m)
        wait_for(lambda: all(" DOWN" in s for s in servers(lab, c["node"])), 15, "every server DOWN")
        done, took = verify_through_entry(lab, c, two)
        print(f"\nno server up: exit {done.returncode} after {took:.1f}s")
        assert done.returncode != 0
        assert done.stderr.count("attempt 4 of 5 through the entry point") == 2, done.stderr
        assert "2 of 2 images did not pull" in done.stderr, done.stderr
        reviver = threading.Timer(4.0, lambda: [answer_registry(lab, m) for m in c["masters"]])
        reviver.start()
        done, took = verify_through_entry(lab, c, c["refs"])
        reviver.join()
    finally:
        for m in c["masters"]:
            answer_registry(lab, m)
    print(f"registries back after 4 s: exit {done.returncode} after {took:.1f}s")
    assert done.returncode == 0, done.stderr
    assert "attempt 1 of 5 through the entry point" in done.stderr, done.stderr
    assert done.stdout.startswith(f"verified {len(c['refs'])} "), done.stdout


IN_FLIGHT_OFFSETS_S = (0.15, 0.45, 0.8, 1.3)   # kill points into a round of back-to-back pulls
IN_FLIGHT_PULL_LIMIT_S = 30
# A pull cut by the kill fails no later than this after the kill: tcp-ut (2 s) + HAProxy's close.
CUT_FAILS_WITHIN_S = 5.0


def round_of(lab, c: dict, engine: str) -> list[tuple[str, bool, float, float, str]]:
    """Every image pulled once, back to back: (repository, ok, started (monotonic), seconds,
    error)."""
    out = []
    for ref, r in zip(c["refs"], c["raw"]):
        started = time.monotonic()
        if engine == "containerd":
            p = containerd_pull(lab, c["node"], ref.split("@")[0], USER, PASSWORD, DOMAIN, PORT,
                                "lab-pull", IN_FLIGHT_PULL_LIMIT_S)
        else:
            p = docker.pull(lab, c["node"], ref_of(r), USER, PASSWORD, timeout=IN_FLIGHT_PULL_LIMIT_S)
        out.append((r["repository"], p.ok and p.digest == r["digest"], started, p.seconds,
                    p.stderr.strip()[-200:]))
    return out


@pytest.mark.parametrize("engine", ["containerd", "docker"])
def test_pulls_in_flight_when_master0_dies(lab, cluster, engine):
    """master0 killed in the middle of a round (a request written to it and unanswered, a blob
    half sent, a connection kept alive): HAProxy ends the dead server connection within seconds
    (tcp-ut: TCP_USER_TIMEOUT for unacknowledged bytes; keep-alive probes for an idle one) and
    closes the client's. containerd retries on a new connection, which goes to a standby: no pull
    fails. dockerd does not retry a manifest or /v2/ request cut that way: the one pull in flight
    may fail, with EOF, within 5 s of the kill, never hang (before tcp-ut took effect it hung
    until the test's limit), and the same pull again (as the kubelet retries) succeeds; every
    pull started after the kill succeeds. Bounded: 4 kill points, 30 s a pull."""
    import threading

    c = cluster
    m0 = c["masters"][0]
    worst, cut = [], 0
    for offset in IN_FLIGHT_OFFSETS_S:
        wait_for(lambda: servers(lab, c["node"])[0] == f"{m0}:{PORT} UP", 15, "master0 UP")
        box: dict = {}
        t = threading.Thread(target=lambda: box.update(done=round_of(lab, c, engine)))
        t.start()
        time.sleep(offset)
        killed = time.monotonic()
        lab.kill(m0)
        try:
            t.join(timeout=len(c["refs"]) * (IN_FLIGHT_PULL_LIMIT_S + 70))
            assert not t.is_alive(), "the pull round did not end"
        finally:
            lab.revive(m0)
        done = box["done"]
        print(f"\n{engine}, killed {offset}s into a round: " + ", ".join(
            f"{repo} {'ok' if ok else 'FAILED'} {sec:.2f}s" for repo, ok, _, sec, _ in done))
        worst.append(max(sec for _, _, _, sec, _ in done))
        for i, (repo, ok, started, sec, err) in enumerate(done):
            if ok:
                continue
            assert engine == "docker" and started <= killed, (offset, repo, "started after the kill", err)
            assert started + sec - killed <= CUT_FAILS_WITHIN_S, (offset, repo, sec, err)
            assert "EOF" in err, err
            again = round_of(lab, {**c, "refs": [c["refs"][i]], "raw": [c["raw"][i]]}, engine)
            assert again[0][1], (repo, "the retry failed", again)
            cut += 1
    print(f"{engine} in flight: slowest pull per kill point {[round(w, 2) for w in worst]}; "
          f"{cut} pulls cut by the kill (retried: ok)")


def upload_status(lab, node: str) -> str:
    """The HTTP status of a push's first request (start a blob upload) through the domain, with
    the credentials on curl's stdin."""
    cmd = (f"curl -s -K - -o /dev/null -w '%{{http_code}}' --max-time 20 -X POST "
           f"--cacert /etc/containerd/certs.d/{DOMAIN}:{PORT}/ca.crt "
           f"https://{DOMAIN}:{PORT}/v2/library/pushed/blobs/uploads/")
    return lab.run(node, cmd, input=f'user = "{USER}:{PASSWORD}"\n', check=False).stdout


def test_a_push_goes_to_master0_and_fails_cleanly_without_it(lab, cluster):
    """A push through the entry point starts on master0 (202); with master0 killed it reaches a
    standby, a read-only registry, and is refused with 405 (nothing written there)."""
    c = cluster
    m0 = c["masters"][0]
    wait_for(lambda: servers(lab, c["node"])[0] == f"{m0}:{PORT} UP", 15, "master0 UP")
    assert upload_status(lab, c["node"]) == "202"
    lab.kill(m0)
    try:
        assert upload_status(lab, c["node"]) == "405"
    finally:
        lab.revive(m0)


def test_master0_back_is_used_again(lab, cluster):
    """Once master0 answers its health checks again (rise 2), new pulls go to it, not to a
    standby: its session count grows, the standbys' does not."""
    c = cluster
    m0 = c["masters"][0]
    lab.run(m0, f"cd {ROOTFS}/scripts && bash init-registry.sh {PORT} {ROOTFS}/registry {DOMAIN}",
            timeout=60)  # a fresh start of its registry, as after a reboot
    took = wait_for(lambda: servers(lab, c["node"])[0] == f"{m0}:{PORT} UP", 15, "master0 UP")
    print(f"\nmaster0 back UP after {took:.1f}s")
    before = {r["addr"]: int(r["stot"]) for r in stats(lab, c["node"])}
    assert pulls(lab, c, "master0 back").failures == []
    after = {r["addr"]: int(r["stot"]) for r in stats(lab, c["node"])}
    grew = {a for a in after if after[a] > before[a]}
    assert grew == {f"{m0}:{PORT}"}, (before, after)


@pytest.mark.parametrize("case", ["no-haproxy", "old-haproxy", "keep-hosts", "no-port", "address-is-master0"])
def test_refusals_change_nothing(lab, cluster, case):
    """Refused before anything changes: haproxy missing (PATH without it) or older than 2.2,
    --entry with --keep-hosts, without PORT (insecure mode), ADDRESS equal to master0's IP."""
    c = cluster
    m0, m1, m2 = c["masters"]
    host = c["other"]
    args, env, says = entry_args(c), "", ""
    if case == "no-haproxy":
        env, says = "PATH=/usr/bin:/bin", "haproxy is not installed"
    elif case == "old-haproxy":
        lab.run(host, "mkdir -p /tmp/old-haproxy && printf '#!/bin/sh\\necho \"HA-Proxy version "
                      "1.8.19-1+deb10u3 2020/08/01\"\\n' > /tmp/old-haproxy/haproxy && "
                      "chmod +x /tmp/old-haproxy/haproxy")
        env, says = "PATH=/tmp/old-haproxy:/usr/sbin:/usr/bin:/sbin:/bin", "is 1.8"
    elif case == "keep-hosts":
        args, says = ["--keep-hosts", *args], "--keep-hosts"
    elif case == "no-port":
        args, says = args[:-1], "needs TLS"
    else:
        args, says = ["--entry", m0, *args[2:]], "master0's address"
    before = snapshot(lab, host)
    rc, err = configure(lab, host, *args, cert=c["cert"], env=env)
    assert rc != 0
    assert says in err, err
    assert snapshot(lab, host) == before
    assert lab.run(host, f"test -e {PIDFILE}", check=False).returncode != 0


def test_a_config_that_does_not_validate_leaves_the_entry_point_alone(lab, cluster):
    """A stats port HAProxy refuses (haproxy -c fails): exit 1, the config's bytes and the
    process as they were, pulls still served."""
    c = cluster
    cfg, pid = lab.run(c["node"], f"cat {CONFIG}").stdout, entry_pid(lab, c["node"])
    rc, err = configure(lab, c["node"], *entry_args(c, stats_port=99999), cert=c["cert"])
    assert rc != 0 and "does not validate" in err, err
    assert lab.run(c["node"], f"cat {CONFIG}").stdout == cfg
    assert entry_pid(lab, c["node"]) == pid
    assert pulls(lab, c, "after the refused config").failures == []


def test_a_config_that_does_not_start_is_rolled_back(lab, cluster):
    """A new config that validates but cannot start (its stats port is taken): the old config is
    put back, the old process keeps serving, exit 1; a rerun with the old arguments changes
    nothing."""
    c = cluster
    busy = STATS_PORT - 1
    cfg, pid = lab.run(c["node"], f"cat {CONFIG}").stdout, entry_pid(lab, c["node"])
    holder = lab.run(c["node"], "nohup python3 -c 'import socket, time; s = socket.socket(); "
                                f"s.bind((\"127.0.0.1\", {busy})); s.listen(); time.sleep(120)' "
                                ">/dev/null 2>&1 & echo $!").stdout.strip()
    try:
        wait_for(lambda: lab.run(c["node"], f"ss -ltnH 'sport = :{busy}'").stdout.strip() != "", 5,
                 "the port taken")
        rc, err = configure(lab, c["node"], *entry_args(c, stats_port=busy), cert=c["cert"])
    finally:
        lab.run(c["node"], f"kill {holder}", check=False)
    assert rc != 0 and "the previous" in err, err
    assert lab.run(c["node"], f"cat {CONFIG}").stdout == cfg
    assert entry_pid(lab, c["node"]) == pid
    assert stats(lab, c["node"])  # the old stats port answers
    assert pulls(lab, c, "after the rollback").failures == []
    rc, err = configure(lab, c["node"], *entry_args(c), cert=c["cert"])
    assert rc == 0 and "unchanged: the entry point runs" in err, err


def test_a_recovery_rewrites_the_servers(lab, cluster):
    """What the recovery `up` sends a node: master0 := the first standby, the old master0 gone.
    HAProxy reloads (a new pid) with the new servers, pulls go to the new master0 only, and the
    same arguments again change nothing."""
    c = cluster
    m0, m1, m2 = c["masters"]
    pid = entry_pid(lab, c["node"])
    args = ["--entry", ENTRY, "--entry-stats-port", str(STATS_PORT), "--mirror", m2, DOMAIN, m1, str(PORT)]
    rc, err = configure(lab, c["node"], *args, cert=c["cert"])
    assert rc == 0 and "reloaded the entry point" in err, err
    assert entry_pid(lab, c["node"]) != pid
    wait_for(lambda: servers(lab, c["node"]) == [f"{m1}:{PORT} UP", f"{m2}:{PORT} UP backup"], 10,
             "the new servers")
    before = {r["addr"]: int(r["stot"]) for r in stats(lab, c["node"])}
    assert pulls(lab, c, "after the recovery").failures == []
    after = {r["addr"]: int(r["stot"]) for r in stats(lab, c["node"])}
    assert {a for a in after if after[a] > before[a]} == {f"{m1}:{PORT}"}
    rc, err = configure(lab, c["node"], *args, cert=c["cert"])
    assert rc == 0 and "unchanged: the entry point runs" in err, err


def test_a_config_written_but_never_taken_is_applied_by_the_rerun(lab, cluster):
    """A node step cut between writing the config and HAProxy's reload (Ctrl-C reaches the SSH
    session: `bench --only interrupt` cut one so, session 14) leaves the new config on disk and
    HAProxy on the old one. The rerun with the same arguments must reload: the file is not what
    runs. Here the file holds the recovery's config while HAProxy runs another's."""
    c = cluster
    m0, m1, m2 = c["masters"]
    recovered = ["--entry", ENTRY, "--entry-stats-port", str(STATS_PORT), "--mirror", m2, DOMAIN, m1, str(PORT)]
    taken = lab.run(c["node"], f"cat {CONFIG}").stdout
    other = ["--entry", ENTRY, "--entry-stats-port", str(STATS_PORT), "--mirror", m1, DOMAIN, m2, str(PORT)]
    rc, err = configure(lab, c["node"], *other, cert=c["cert"])
    assert rc == 0 and "reloaded the entry point" in err, err
    wait_for(lambda: servers(lab, c["node"])[0] == f"{m2}:{PORT} UP", 10, "the other servers")
    lab.run(c["node"], f"cat > {CONFIG}", input=taken)          # as the cut run left it
    rc, err = configure(lab, c["node"], *recovered, cert=c["cert"])
    assert rc == 0 and "did not take it" in err and "reloaded the entry point" in err, err
    wait_for(lambda: servers(lab, c["node"]) == [f"{m1}:{PORT} UP", f"{m2}:{PORT} UP backup"], 10,
             "the recovery's servers")
    rc, err = configure(lab, c["node"], *recovered, cert=c["cert"])
    assert rc == 0 and "unchanged: the entry point runs" in err, err


def test_removing_node_entry_takes_the_entry_point_away(lab, cluster):
    """node_entry dropped from the stack: the node step runs without --entry. The domain maps to
    master0 again, then HAProxy stops and its config, pid file and address on lo go; pulls go
    straight to master0; the same run again changes nothing."""
    c = cluster
    m0, m1, m2 = c["masters"]
    pid = entry_pid(lab, c["node"])
    args = ["--mirror", m2, DOMAIN, m1, str(PORT)]
    rc, err = configure(lab, c["node"], *args, cert=c["cert"])
    assert rc == 0, err
    assert f"stopped the entry point (pid {pid})" in err and f"removed {ENTRY}/32 from lo" in err, err
    mapped = [line for line in lab.run(c["node"], "cat /etc/hosts").stdout.splitlines()
              if DOMAIN in line.split("#")[0].split()[1:]]
    assert mapped == [f"{m1} {DOMAIN} #hostalias-set-by-sealer"]
    assert lab.run(c["node"], f"kill -0 {pid}", check=False).returncode != 0
    assert lab.run(c["node"], f"ls {CONFIG} {PIDFILE}", check=False).returncode != 0
    assert f"{ENTRY}/32" not in lab.run(c["node"], "ip -o -4 addr show dev lo").stdout
    assert pulls(lab, c, "without the entry point").failures == []
    before = snapshot(lab, c["node"])
    rc, err = configure(lab, c["node"], *args, cert=c["cert"])
    assert rc == 0 and "node_entry removed" not in err, err
    assert snapshot(lab, c["node"]) == before
