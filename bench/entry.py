"""Pulls while master0 is down, through the node-local entry point (registry.local_registry.
node_entry, issue 21): on a docker node (Debian's dockerd in a lab host, lab/docker.py) and a
containerd 1.6 node (the lab host's own containerd), every boot-history image pulled one after
the other as the kubelet pulls them (one at a time), first with master0 alive, then with master0
killed (packets dropped, processes frozen), then with master0 powered off (its address gone:
ARP fails). Keys `outage_pull_<runtime>_<outage>_*` (/work/shared/notes/bench-keys.md).

No engine: a fresh lab of 3 masters + 2 nodes; every master runs sealer's registry on the same
data (its self-signed CA as server cert, htpasswd; the rootfs' init-registry.sh, as
tests/lab/runtime_fixtures.py), read-only on the two standbys; each node gets `scripts/configure-node.sh --entry` exactly as its
`node-<ip>` step sends it (components/remote_scripts.py: the compacted script and the CA on the
stdin of one SSH session), master0 first and the two other masters as warm standbys.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Callable

from components.remote_scripts import script_run
from lab import docker
from lab import images as lab_images
from lab.hosts import INSTANCE, Lab
from lab.pull import Pull, containerd_pull
from lab.sealer_state import BASEFS_REGISTRY_CONFIG, sealer_htpasswd, sealer_self_signed
from material.registry_config import read_only_registry_yml

DOMAIN, PORT = "sea.hub", 5000
USER, PASSWORD = "sealer", "bench-entry-Passw0rd"
ROOTFS = "/var/lib/sealer/data/lab/rootfs"
ENTRY = f"198.19.{INSTANCE}.3"
STATS_PORT = 5099
PULL_TIMEOUT_S = 120
RUNTIMES = ("docker", "containerd16")
# Kill points into a round of back-to-back pulls, for the pulls in flight when master0 dies.
IN_FLIGHT_OFFSETS_S = (0.2, 0.5, 0.9)


def _write(lab: Lab, host: str, path: str, text: str, mode: int = 0o644) -> None:
    target = lab.host_path(host, path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    target.chmod(mode)


def serve(lab: Lab, masters: list[str], images: list[dict]) -> str:
    """sealer's registry on every master, the same data, read-only on the standbys (as the
    program runs warm standbys); returns its certificate (the CA)."""
    cert, key = sealer_self_signed(DOMAIN)
    htpasswd = sealer_htpasswd(USER, PASSWORD)
    for m in masters:
        config = BASEFS_REGISTRY_CONFIG if m == masters[0] else read_only_registry_yml(BASEFS_REGISTRY_CONFIG)
        _write(lab, m, f"{ROOTFS}/certs/{DOMAIN}.crt", cert)
        _write(lab, m, f"{ROOTFS}/certs/{DOMAIN}.key", key, 0o600)
        _write(lab, m, f"{ROOTFS}/etc/registry_config.yml", config)
        _write(lab, m, f"{ROOTFS}/etc/registry_htpasswd", htpasswd)
        for img in images:
            shutil.copytree(Path(img["path"]) / "docker",
                            lab.host_path(m, f"{ROOTFS}/registry/docker"), dirs_exist_ok=True)
        lab.run(m, f"cd {ROOTFS}/scripts && bash init-registry.sh {PORT} {ROOTFS}/registry {DOMAIN}",
                timeout=60)
    return cert


def configure(lab: Lab, node: str, masters: list[str], cert: str) -> float:
    """The node step's configure-node.sh --entry over SSH; returns its seconds."""
    m0, *standbys = masters
    run = script_run("configure-node.sh", "--entry", ENTRY, "--entry-stats-port", str(STATS_PORT),
                     *[a for ip in standbys for a in ("--mirror", ip)], DOMAIN, m0, str(PORT),
                     data=cert)
    began = time.monotonic()
    lab.ssh(node, run.command, input=run.stdin, timeout=60)
    return time.monotonic() - began


def master0_status(lab: Lab, node: str, m0: str) -> str:
    """master0's status on the node's stats page (quoted CSV fields blanked first, as
    scripts/status-probe.sh does: a failed check's text holds a comma)."""
    csv = lab.run(node, f"curl -sf --max-time 3 'http://127.0.0.1:{STATS_PORT}/;csv' | "
                        "sed 's/\"[^\"]*\"//g'", check=False).stdout.splitlines()
    if not csv:
        return "unreachable"
    head = csv[0].lstrip("# ").split(",")
    for line in csv[1:]:
        row = dict(zip(head, line.split(",")))
        if row.get("addr") == f"{m0}:{PORT}":
            return row["status"]
    return "absent"


def wait_up(lab: Lab, node: str, m0: str, limit_s: float = 20) -> float:
    began = time.monotonic()
    while time.monotonic() - began < limit_s:
        if master0_status(lab, node, m0) == "UP":
            return time.monotonic() - began
        time.sleep(0.2)
    raise RuntimeError(f"master0 not UP on {node}'s entry point within {limit_s}s")


def measure(lab: Lab, store: Path, log: Callable[[str], None]) -> dict:
    """The figures; leaves the lab up (the caller tears it down)."""
    lab.up(masters=3, nodes=2)
    masters = [h.ip for h in lab.masters()]
    docker_node, containerd_node = (h.ip for h in lab.nodes()[:2])
    gen = lab_images.generate(store, apps=3, app_size=512 << 10, layers=2, cluster_size=1 << 20,
                              seed=0, history=store.parent / "application.json")
    images = [gen["cluster"], *gen["apps"]]
    refs = [r for img in images for r in img["refs"]]
    cert = serve(lab, masters, images)
    out: dict = {"outage_pull_images": len(refs)}
    for node in (docker_node, containerd_node):
        took = configure(lab, node, masters, cert)
        log(f"{node}: configure-node.sh --entry in {took:.2f}s")
        wait_up(lab, node, masters[0])
    # After the hosts entry moved: Go's resolver (dockerd) rereads /etc/hosts at most every 5 s,
    # so a dockerd that was running sees the entry address up to 5 s after the node step.
    started = docker.start(lab, docker_node)
    log(f"dockerd on {docker_node} ready in {started:.2f}s; {len(refs)} boot-history images")

    def pull(runtime: str, r: dict) -> Pull:
        if runtime == "docker":
            return docker.pull(lab, docker_node, f"{DOMAIN}:{PORT}/{r['repository']}:{r['tag']}",
                               USER, PASSWORD, timeout=PULL_TIMEOUT_S)
        return containerd_pull(lab, containerd_node, f"{r['repository']}:{r['tag']}", USER, PASSWORD,
                               DOMAIN, PORT, "bench-entry", PULL_TIMEOUT_S)

    def pull_round(runtime: str, title: str) -> list[tuple[dict, Pull]]:
        done = [(r, pull(runtime, r)) for r in refs]
        log(f"{runtime}, {title}: " + ", ".join(
            f"{r['repository']} {'ok' if p.ok and p.digest == r['digest'] else 'FAILED'} {p.seconds:.2f}s"
            for r, p in done))
        for r, p in done:
            if not p.ok or p.digest != r["digest"]:
                log(f"  {r['repository']}: {p.stderr.strip()[-300:] or 'digest ' + p.digest}")
        return done

    outages = {"killed": (lab.kill, lab.revive), "off": (lab.power_off, lab.power_on)}
    m0 = masters[0]
    for runtime in RUNTIMES:
        node = docker_node if runtime == "docker" else containerd_node
        alive = pull_round(runtime, "master0 alive")
        out[f"outage_pull_{runtime}_alive_max_s"] = round(max(p.seconds for _, p in alive), 2)
        out[f"outage_pull_{runtime}_alive_failures"] = sum(
            1 for r, p in alive if not p.ok or p.digest != r["digest"])
        for outage, (down, up) in outages.items():
            wait_up(lab, node, m0)
            down(m0)
            try:
                done = pull_round(runtime, f"master0 {outage}")
            finally:
                up(m0)
            seconds = [p.seconds for _, p in done]
            out[f"outage_pull_{runtime}_{outage}_failures"] = sum(
                1 for r, p in done if not p.ok or p.digest != r["digest"])
            out[f"outage_pull_{runtime}_{outage}_first_s"] = round(seconds[0], 2)
            out[f"outage_pull_{runtime}_{outage}_later_max_s"] = round(max(seconds[1:]), 2)
            back = wait_up(lab, node, m0)
            out[f"outage_pull_{runtime}_{outage}_back_up_s"] = round(back, 2)
            log(f"{runtime}, master0 {outage}: {out[f'outage_pull_{runtime}_{outage}_failures']} failures, "
                f"first {seconds[0]:.2f}s, later max {max(seconds[1:]):.2f}s; master0 UP again "
                f"{back:.1f}s after it came back")
        # master0 killed in the middle of a round: a request written to it and unanswered, a
        # blob half sent. Bounded: one round per kill point.
        inflight: list[tuple[dict, Pull]] = []
        for offset in IN_FLIGHT_OFFSETS_S:
            wait_up(lab, node, m0)
            box: dict = {}
            t = threading.Thread(target=lambda: box.update(done=pull_round(
                runtime, f"master0 killed {offset}s into the round")))
            t.start()
            time.sleep(offset)
            lab.kill(m0)
            try:
                t.join(timeout=len(refs) * (PULL_TIMEOUT_S + 70))
            finally:
                lab.revive(m0)
            inflight += box.get("done", [])
        out[f"outage_pull_{runtime}_inflight_failures"] = sum(
            1 for r, p in inflight if not p.ok or p.digest != r["digest"])
        out[f"outage_pull_{runtime}_inflight_max_s"] = round(max(p.seconds for _, p in inflight), 2)
        log(f"{runtime}, master0 killed mid-round at {IN_FLIGHT_OFFSETS_S}: "
            f"{out[f'outage_pull_{runtime}_inflight_failures']} failures, slowest pull "
            f"{out[f'outage_pull_{runtime}_inflight_max_s']:.2f}s")
        wait_up(lab, node, m0)
    docker.stop(lab, docker_node, forget=True)
    return out
