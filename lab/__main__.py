"""python -m lab up|down|status|kill|revive|power-off|power-on|stop-sshd|start-sshd|run|images|store|postgres|s3|stackfile|sealer"""
from __future__ import annotations

import argparse
import json
import sys
import time

from lab.hosts import DEFAULT_CLUSTER, DEFAULT_DATA_ROOT, Lab, LabError, split_hosts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab")
    ap.add_argument("--state-dir", help="lab state directory (default <repo>/.lab, env SEALER_LAB_DIR)")
    sub = ap.add_subparsers(dest="cmd", required=True)

    up = sub.add_parser("up", help="create or complete the lab (idempotent)")
    up.add_argument("--hosts", type=int, help="total hosts: 3 masters (fewer if N<3), the rest nodes")
    up.add_argument("--masters", type=int, default=3)
    up.add_argument("--nodes", type=int, default=2)
    up.add_argument("--data-root", default=DEFAULT_DATA_ROOT)
    up.add_argument("--cluster", default=DEFAULT_CLUSTER)
    up.add_argument("--control-plane", action="store_true",
                    help="also run etcd + kube-apiserver + kube-controller-manager on every master "
                         "(needs the toolchain; kubeconfig in the state dir)")
    down = sub.add_parser("down", help="remove every namespace, link, process and file of the lab")
    down.add_argument("--purge", action="store_true",
                      help="also remove images, application.json, PKI, pulumi-state, Pulumi.lab.yaml")
    sub.add_parser("status", help="print the inventory with liveness")
    for name, hlp in (("kill", "make a host dead (drop its packets, freeze its processes)"),
                      ("revive", "undo kill"),
                      ("power-off", "make a host a machine without power (its address gone: ARP "
                                    "fails; processes frozen)"),
                      ("power-on", "undo power-off"), ("stop-sshd", "stop a host's sshd"),
                      ("start-sshd", "start a host's sshd"), ("packets", "packets sent to a host")):
        p = sub.add_parser(name, help=hlp)
        p.add_argument("host", help="name (srl-11), ip (198.18.0.11) or last octet (11)")
        if name == "kill":
            p.add_argument("--crash", action="store_true",
                           help="SIGKILL its processes instead of SIGSTOP (revive = reboot)")
    run = sub.add_parser("run", help="run a command inside a host's namespaces (no SSH)")
    run.add_argument("host")
    run.add_argument("command", nargs=argparse.REMAINDER)

    img = sub.add_parser("images", help="generate registry data into an image store")
    from lab import images as images_mod
    images_mod.add_arguments(img)
    sto = sub.add_parser("store", help="the store registry: serve the generated images on "
                                       "<gateway>:5443 (up prints the apps.image_store block)")
    from lab import store as store_mod
    store_mod.add_arguments(sto)
    pg = sub.add_parser("postgres", help="the state database: PostgreSQL on its own lab host "
                                         "(up prints PULUMI_BACKEND_URL; no secret in it)")
    from lab import postgres as postgres_mod
    postgres_mod.add_arguments(pg)
    s3p = sub.add_parser("s3", help="the S3 store: versitygw on its own lab host (up prints "
                                    "PULUMI_BACKEND_URL and the AWS_* environment; no secret in them)")
    from lab import s3 as s3_mod
    s3_mod.add_arguments(s3p)
    stk = sub.add_parser("stackfile", help="write Pulumi.lab.yaml (needs the toolchain's pulumi)")
    from lab import stackfile as stackfile_mod
    stackfile_mod.add_arguments(stk)

    sea = sub.add_parser("sealer", help="leave the up lab as sealer leaves a cluster "
                                        "(--flavour v0.11-ha|v0.11|v0.8)")
    from lab import sealer_state as sealer_mod
    sealer_mod.add_arguments(sea)

    a = ap.parse_args(argv)
    lab = Lab(a.state_dir)
    try:
        if a.cmd == "up":
            masters, nodes = split_hosts(a.hosts) if a.hosts is not None else (a.masters, a.nodes)
            t0 = time.monotonic()
            inv = lab.up(masters, nodes, data_root=a.data_root, cluster=a.cluster)
            print(f"lab up: {len(inv['hosts'])} hosts in {time.monotonic() - t0:.1f}s "
                  f"({lab.inventory_path})", file=sys.stderr)
            if a.control_plane:
                from lab import controlplane
                t1 = time.monotonic()
                try:
                    cp = controlplane.up(lab)
                except controlplane.ControlPlaneError as e:
                    raise LabError(f"control plane: {e}") from None
                print(f"control plane: etcd + kube-apiserver on {', '.join(cp.masters)} in "
                      f"{time.monotonic() - t1:.1f}s; kubeconfig {cp.kubeconfig} ({cp.server})",
                      file=sys.stderr)
        elif a.cmd == "down":
            t0 = time.monotonic()
            removed = lab.down(purge=a.purge)
            print(f"lab down: removed {len(removed)} objects in {time.monotonic() - t0:.1f}s",
                  file=sys.stderr)
        elif a.cmd == "status":
            for h in lab.hosts():
                state = "killed" if lab.is_killed(h.name) else "off" if lab.is_off(h.name) else (
                    "up" if lab.sshd_running(h.name) else "sshd-stopped")
                containerd = "up" if lab.containerd_running(h.name) else "down"
                print(f"{h.name}\t{h.ip}\t{h.role}\t{state}\tcontainerd={containerd}\t"
                      f"packets_to={lab.packets_to(h.name)}")
        elif a.cmd == "kill":
            lab.kill(a.host, crash=a.crash)
        elif a.cmd == "revive":
            lab.revive(a.host)
        elif a.cmd == "power-off":
            lab.power_off(a.host)
        elif a.cmd == "power-on":
            lab.power_on(a.host)
        elif a.cmd == "stop-sshd":
            lab.stop_sshd(a.host)
        elif a.cmd == "start-sshd":
            lab.start_sshd(a.host)
        elif a.cmd == "packets":
            print(lab.packets_to(a.host))
        elif a.cmd == "run":
            p = lab.run(a.host, " ".join(a.command), check=False)
            sys.stdout.write(p.stdout)
            sys.stderr.write(p.stderr)
            return p.returncode
        elif a.cmd == "images":
            print(json.dumps(images_mod.main(a, lab), indent=2))
        elif a.cmd == "store":
            t0 = time.monotonic()
            print(json.dumps(store_mod.main(a, lab), indent=2))
            print(f"store {a.action}: {time.monotonic() - t0:.1f}s", file=sys.stderr)
        elif a.cmd == "postgres":
            print(json.dumps(postgres_mod.main(a, lab), indent=2))
        elif a.cmd == "s3":
            print(json.dumps(s3_mod.main(a, lab), indent=2))
        elif a.cmd == "stackfile":
            print(stackfile_mod.main(a, lab))
        elif a.cmd == "sealer":
            t0 = time.monotonic()
            print(json.dumps(sealer_mod.main(a, lab), indent=2))
            print(f"sealer {a.flavour}: {time.monotonic() - t0:.1f}s", file=sys.stderr)
    except LabError as e:
        print(f"lab: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
