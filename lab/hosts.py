"""Namespaced lab hosts: one network namespace + one persistent mount namespace + one sshd each.

A host `srl-<octet>` is:
- network namespace `srl-<octet>` with `eth0` = <ip>/24, its peer veth `srl-<octet>` on bridge `srl-br0`
  (a lab of more than 234 nodes puts the rest in two more /24s, hosts `srl-<3rd>-<4th>`: see
  ``SUBNETS``; every host has an on-link route to each);
- a holder process (`sleep infinity`, pid in `<state>/hosts/srl-<octet>/holder.pid`) started as
  `ip netns exec NS unshare --mount --uts --propagation private`, which keeps the host's mount
  namespace alive. Inside it `/etc` is an overlay and `/root`, `/tmp`, `/var/log`, `/var/lib/sealer`,
  `/var/lib/containerd`, `/var/lib/etcd`, `/var/lib/docker` are bind mounts of per-host directories (a directory
  mount, so rename-over of `/etc/hosts` works) and `/run` is a tmpfs; the lab state directory is
  hidden under a tmpfs, so a host can't read the operator key or another host's files;
- `/usr/sbin/sshd` started inside both namespaces with the host's own `/etc/ssh` (own host key,
  root login with the lab operator key only);
- Debian's `containerd` started inside both namespaces like a node's runtime: its own
  `/etc/containerd/config.toml` (CRI `config_path = "/etc/containerd/certs.d"`), content and
  snapshots in the private `/var/lib/containerd`, socket `/run/containerd/containerd.sock`;
- optional services (`Lab.start_service`: the control plane's etcd, kube-apiserver,
  kube-controller-manager on the masters) started the same way, without SSH.

Faults live in the root namespace, in nft table `bridge srl_lab`: every IP frame towards a host
(addressed to its IP: frames the bridge floods to every port are not) is counted (`packets_to`; frames from or to the etcd peer port 2380, the control plane's own traffic
between masters, on a counter of their own), and a killed host's interface is in set `killed`,
whose IP frames are dropped both ways (ARP still flows, so a connect times out like a machine that
went dark).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterable

# Several labs can live side by side (a benchmark next to a test run): instance N uses
# 198.18.N.0/24 and names `srlN-*`; instance 0 (the default) keeps `srl-*` on 198.18.0.0/24.
INSTANCE = int(os.environ.get("SEALER_LAB_INSTANCE", "0"))
if not 0 <= INSTANCE <= 255:
    raise ValueError(f"SEALER_LAB_INSTANCE={INSTANCE} is not in 0..255")
PREFIX = "srl-" if INSTANCE == 0 else f"srl{INSTANCE}-"
BRIDGE = f"{PREFIX}br0"
GATEWAY = f"198.18.{INSTANCE}.1"
SUBNET = ipaddress.ip_network(f"198.18.{INSTANCE}.0/24")
MASTER_BASE = 11
NODE_BASE = 21
MAX_MASTERS = NODE_BASE - MASTER_BASE
# Nodes beyond the instance's /24 (a 3 + 500 lab, issue 24): two more /24s on the same bridge, in
# the upper half of 198.19.0.0/16 (lab/vip.py's addresses are 198.19.<instance>.x, below it), at
# 198.19.(128 + 2N).0/24 and 198.19.(129 + 2N).0/24 for instance N < 64, hosts from .11 (the
# bridge holds .1). Every host gets an on-link route to each lab subnet (one L2 segment, as a
# real cluster's hosts on one VLAN), whatever its own address.
EXTRA_BASE = 11
EXTRA_SUBNETS = ((ipaddress.ip_network(f"198.19.{128 + 2 * INSTANCE}.0/24"),
                  ipaddress.ip_network(f"198.19.{129 + 2 * INSTANCE}.0/24")) if INSTANCE < 64 else ())
SUBNETS = (SUBNET, *EXTRA_SUBNETS)
MAX_NODES = 254 - NODE_BASE + 1 + len(EXTRA_SUBNETS) * (254 - EXTRA_BASE + 1)
NFT_TABLE = "srl_lab" if INSTANCE == 0 else f"srl{INSTANCE}_lab"
DEFAULT_CLUSTER = "lab"
DEFAULT_DATA_ROOT = "/var/lib/sealer/data"
REPO = Path(__file__).resolve().parent.parent
DEFAULT_STATE = REPO / (".lab" if INSTANCE == 0 else f".lab{INSTANCE}")
ROOTFS_SRC = Path(__file__).resolve().parent / "rootfs"
# Directories that each host gets privately (bind mounts of <hostdir>/<name>).
PRIVATE_DIRS = {"/etc": "etc", "/root": "root", "/tmp": "tmp", "/var/log": "var-log",
                "/var/lib/sealer": "var-lib-sealer", "/var/lib/containerd": "var-lib-containerd",
                "/var/lib/etcd": "var-lib-etcd", "/var/lib/docker": "var-lib-docker"}
# Mount points the machine may lack: created for the lab (and removed by `down` when no lab of any
# instance is left, since removing a mount point detaches it in every other mount namespace).
MOUNTPOINTS = ("/var/lib/sealer", "/var/lib/containerd", "/var/lib/etcd", "/var/lib/docker")
ETCD_PEER_PORT = 2380  # the control plane's etcd peers (lab/controlplane.py): counted apart
SERVICES_DIR = "services"  # <hostdir>/services/<name>.json (argv) and <name>.pid
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class LabError(RuntimeError):
    pass


def sh(*argv: str, check: bool = True, input: bytes | str | None = None,
       timeout: float = 60) -> subprocess.CompletedProcess:
    text = isinstance(input, str) or input is None
    p = subprocess.run(list(argv), input=input, capture_output=True, text=text, timeout=timeout)
    if check and p.returncode != 0:
        raise LabError(f"{' '.join(argv)} -> exit {p.returncode}: {p.stderr.strip()}")
    return p


def octet_name(ip: str) -> str:
    """The host's name: ``srl-<last octet>`` in the instance's /24, ``srl-<3rd>-<4th>`` in an
    extra one (interface names stay within Linux's 15 characters: ``srl63-255-254``)."""
    if ipaddress.ip_address(ip) in SUBNET:
        return f"{PREFIX}{ip.rsplit('.', 1)[1]}"
    return f"{PREFIX}{'-'.join(ip.split('.')[2:])}"


def node_addresses(count: int) -> list[str]:
    """The first ``count`` node addresses: the instance's /24 from NODE_BASE, then the extra /24s."""
    pool = [f"198.18.{INSTANCE}.{NODE_BASE + i}" for i in range(254 - NODE_BASE + 1)]
    for net in EXTRA_SUBNETS:
        pool += [str(net.network_address + i) for i in range(EXTRA_BASE, 255)]
    return pool[:count]


@dataclasses.dataclass
class Host:
    name: str
    ip: str
    role: str  # master | node
    ssh_port: int = 22
    key_path: str = ""
    host_key: str = ""  # "ssh-ed25519 AAAA..." (no comment)

    def as_json(self) -> dict:
        return dataclasses.asdict(self)


def plan_hosts(masters: int, nodes: int) -> list[tuple[str, str, str]]:
    if not 0 <= masters <= MAX_MASTERS:
        raise LabError(f"masters must be 0..{MAX_MASTERS}, got {masters}")
    if not 0 <= nodes <= MAX_NODES:
        why = "" if EXTRA_SUBNETS else f" (instance {INSTANCE} >= 64 has no extra /24s)"
        raise LabError(f"nodes must be 0..{MAX_NODES}, got {nodes}{why}")
    out = []
    for i in range(masters):
        ip = f"198.18.{INSTANCE}.{MASTER_BASE + i}"
        out.append((octet_name(ip), ip, "master"))
    for ip in node_addresses(nodes):
        out.append((octet_name(ip), ip, "node"))
    return out


def split_hosts(total: int) -> tuple[int, int]:
    masters = min(3, total)
    return masters, total - masters


# Runs inside `ip netns exec NS unshare --mount --uts --propagation private`: $1 name, $2 ip/cidr,
# $3 host dir, $4 lab state dir. Becomes the holder (`exec sleep infinity`) once the host is set up.
HOLDER_SCRIPT = r"""
set -eu
name=$1 addr=$2 dir=$3 state=$4
# Work relative to the host dir: the mounts below may shadow the absolute path of the state dir
# (for example a state dir under /tmp), the cwd keeps pointing at the real one.
cd "$dir"
mount -t tmpfs -o mode=0700,size=1m srl-hidden "$state"
hostname "$name"
mount -t overlay srl-etc -o lowerdir=/etc,upperdir=etc,workdir=etc-work /etc
mount --bind root /root
mount --bind var-log /var/log
mount --bind var-lib-sealer /var/lib/sealer
mount --bind var-lib-containerd /var/lib/containerd
mount --bind var-lib-etcd /var/lib/etcd
mount --bind var-lib-docker /var/lib/docker
mount --bind tmp /tmp
mount -t tmpfs -o mode=0755,size=256m srl-run /run
mkdir -p /run/sshd /run/lock /run/containerd
sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 || true
ip link set lo up
ip addr add "$addr" dev eth0
ip link set eth0 up
# On-link routes to the lab's other subnets ($5: CIDRs, space-separated; one L2 segment); its own
# has the kernel's route already.
for net in $5; do
  [ -n "$(ip -4 route show "$net")" ] || ip route add "$net" dev eth0
done
echo $$ > holder.pid.tmp
mv holder.pid.tmp holder.pid
cd /
exec sleep infinity
"""

SSHD_CONFIG = """\
# lab host sshd (Debian openssh-server), generated by lab/hosts.py
Port 22
ListenAddress 0.0.0.0
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PubkeyAuthentication yes
AuthorizedKeysFile /etc/ssh/authorized_keys/%u
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
PidFile /run/sshd.pid
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
"""

# What a sealer node's containerd needs for image pulls: the CRI plugin reads registry hosts from
# certs.d. Nothing is turned off: the CRI plugin loads and only logs that no CNI config exists
# (pod networking, which the lab never uses; pulls don't touch it).
CONTAINERD_CONFIG = """\
# lab host containerd (Debian containerd 1.6), generated by lab/hosts.py
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d"
"""
CONTAINERD_SOCKET = "/run/containerd/containerd.sock"
CRI_PLUGIN = "io.containerd.grpc.v1.cri"
CONTAINERD_PID = "/run/containerd/lab.pid"
# Started detached (the shell exits, containerd is reparented) with its pid in the host's /run.
# GOMAXPROCS=1: a lab host is a slice of this 2-core machine, and Go's scheduler with one P a core
# costs an idle containerd 2.1 ms of CPU a second against 0.8 ms with one (measured at 3 + 500,
# session 14: 503 idle containerds took a whole core, half the machine, and starved the deploy).
# Nothing a pull does changes but its parallelism, which the machine lacks anyway.
START_CONTAINERD = (f"mkdir -p /run/containerd /var/lib/containerd && GOMAXPROCS=1 setsid containerd "
                    f"--config /etc/containerd/config.toml </dev/null >>/var/log/containerd.log 2>&1 "
                    f"& echo $! > {CONTAINERD_PID}")


class Lab:
    """Python API for tests and the CLI. All state lives under `state_dir` (default `<repo>/.lab`)."""

    def __init__(self, state_dir: str | os.PathLike | None = None):
        self.state = Path(state_dir or os.environ.get("SEALER_LAB_DIR") or DEFAULT_STATE).resolve()
        self.hosts_dir = self.state / "hosts"
        self.key_path = self.state / "id_ed25519"
        self.inventory_path = self.state / "inventory.json"
        self.known_hosts_path = self.state / "known_hosts"

    # ---------------------------------------------------------------- inventory
    def inventory(self) -> dict:
        if not self.inventory_path.exists():
            raise LabError(f"no lab inventory at {self.inventory_path}: run `python -m lab up`")
        return json.loads(self.inventory_path.read_text())

    def hosts(self) -> list[Host]:
        return [Host(**h) for h in self.inventory()["hosts"]]

    def host(self, ref: str) -> Host:
        for h in self.hosts():
            if ref in (h.name, h.ip) or ref == h.name.removeprefix(PREFIX):
                return h
        raise LabError(f"unknown lab host {ref!r}")

    def masters(self) -> list[Host]:
        return [h for h in self.hosts() if h.role == "master"]

    def nodes(self) -> list[Host]:
        return [h for h in self.hosts() if h.role == "node"]

    def holder_pid(self, ref: str) -> int:
        name = self.host(ref).name if not ref.startswith(PREFIX) else ref
        pid_file = self.hosts_dir / name / "holder.pid"
        try:
            pid = int(pid_file.read_text())
        except (OSError, ValueError) as e:
            raise LabError(f"host {name}: no holder pid ({e})") from e
        if not _is_holder(pid):
            raise LabError(f"host {name}: holder {pid} is gone")
        return pid

    def host_path(self, ref: str, path: str) -> Path:
        """Root-namespace path of `path` as the host sees it (through the holder's /proc root)."""
        return Path(f"/proc/{self.holder_pid(ref)}/root") / path.lstrip("/")

    # ---------------------------------------------------------------- lifecycle
    def up(self, masters: int = 3, nodes: int = 2, data_root: str = DEFAULT_DATA_ROOT,
           cluster: str = DEFAULT_CLUSTER) -> dict:
        """Create (or complete) the lab; hosts not in the requested set are removed. Idempotent."""
        wanted = plan_hosts(masters, nodes)
        self.state.mkdir(parents=True, exist_ok=True)
        self.hosts_dir.mkdir(exist_ok=True)
        self._ensure_operator_key()
        self._ensure_mountpoint()
        self._ensure_bridge()
        self._ensure_nft()
        ensure_neighbour_capacity(len(wanted))
        ensure_inotify_capacity(len(wanted))
        wanted_names = {w[0] for w in wanted}
        from lab import postgres, s3  # not at the top: they import this module
        # The state database's and the S3 store's hosts are no cluster hosts: they stay (`down`
        # removes them).
        self._remove_hosts(self._existing_host_names() - wanted_names - {postgres.HOST, s3.HOST})
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            hosts = list(pool.map(lambda w: self._ensure_host(*w, data_root=data_root,
                                                               cluster=cluster), wanted))
        self._write_inventory(hosts, data_root, cluster)
        return self.inventory()

    def down(self, purge: bool = False) -> list[str]:
        """Remove everything `up` made, also after a crash: discovered by the `srl-` prefix and
        by pid files under the state dir. Returns what it removed. The store registry (lab.store)
        stops and its union tree goes. The image store, application.json, the stack's and the
        store registry's PKI, the stack's password and pulumi-state stay unless purge=True, which
        removes the whole state dir (and Pulumi.lab.yaml when the state dir is the repo's
        default)."""
        from lab import postgres, s3, store  # not at the top: they import this module
        removed = []
        if store.stop(self.state, clean=True):
            removed.append(f"store registry {store.ADDRESS}")
        if postgres.stop(self.state, clean=True):
            removed.append(f"state database {postgres.HOST} {postgres.ADDRESS}")
        if s3.stop(self.state, clean=True):
            removed.append(f"S3 store {s3.HOST} {s3.ADDRESS}")
        names = sorted(self._existing_host_names())
        self._remove_hosts(names, nft=False)  # the whole table goes below
        removed += names
        if _link_exists(BRIDGE):
            sh("ip", "link", "del", BRIDGE)
            removed.append(BRIDGE)
        if sh("nft", "list", "table", "bridge", NFT_TABLE, check=False).returncode == 0:
            sh("nft", "delete", "table", "bridge", NFT_TABLE)
            removed.append(f"nft bridge {NFT_TABLE}")
        if self.hosts_dir.exists():
            shutil.rmtree(self.hosts_dir)
        for f in (self.inventory_path, self.known_hosts_path, self.key_path,
                  self.key_path.with_suffix(".pub")):
            f.unlink(missing_ok=True)
        self._remove_mountpoints()
        if purge and self.state.exists():
            shutil.rmtree(self.state)
            removed.append(str(self.state))
            if self.state == DEFAULT_STATE.resolve():
                (REPO / "Pulumi.lab.yaml").unlink(missing_ok=True)
        try:
            self.state.rmdir()  # only when nothing else (images, pulumi state...) lives there
        except OSError:
            pass
        return removed

    # ---------------------------------------------------------------- faults
    def kill(self, ref: str, crash: bool = False) -> None:
        """Make a host look dead: its IP traffic is dropped on the bridge (connects time out) and its
        processes are frozen (SIGSTOP), or with crash=True killed (revive then "reboots" it)."""
        h = self.host(ref)
        sh("nft", "add", "element", "bridge", NFT_TABLE, "killed", f'{{ "{h.name}" }}')
        holder = self.holder_pid(h.name)
        victims = [pid for pid in self._pids_of(h.name) if pid != holder]
        for pid in victims:
            _signal(pid, signal.SIGKILL if crash else signal.SIGSTOP)
        if crash:
            _wait(lambda: not any(_alive(p) for p in victims), 5, f"processes of {h.name} to die")
        else:  # SIGSTOP lands asynchronously: return once the host is frozen
            _wait(lambda: all(_state(p) in ("T", "t", "Z", "") for p in victims), 5,
                  f"processes of {h.name} to stop")
        (self.hosts_dir / h.name / ("crashed" if crash else "frozen")).touch()

    def revive(self, ref: str) -> None:
        h = self.host(ref)
        hdir = self.hosts_dir / h.name
        for pid in self._pids_of(h.name):
            _signal(pid, signal.SIGCONT)
        if (hdir / "crashed").exists():
            # A reboot: /run is empty again, then containerd and sshd come back.
            self.run(h.name, "find /run -mindepth 1 -delete; mkdir -p /run/sshd /run/lock "
                     "/run/containerd", check=True)
            (hdir / "crashed").unlink()
        (hdir / "frozen").unlink(missing_ok=True)
        sh("nft", "delete", "element", "bridge", NFT_TABLE, "killed", f'{{ "{h.name}" }}',
           check=False)
        if not self.containerd_running(h.name):
            self._start_containerd(h.name)
        if not self.sshd_running(h.name):
            self.start_sshd(h.name)
        self._wait_containerd(h.name)
        for name in self.services(h.name):  # a crash killed them: the "reboot" starts them again
            if self.service_pid(h.name, name) is None:
                self._launch_service(h.name, name)

    def power_off(self, ref: str) -> None:
        """Make a host look like a machine that lost power: its address is gone from its eth0, so
        nobody answers ARP for it (a connect fails with `No route to host` once the neighbour
        entry fails, instead of timing out as after ``kill``), and its processes are frozen
        (SIGSTOP). ``power_on`` undoes it (the processes go on; nothing is restarted)."""
        h = self.host(ref)
        holder = self.holder_pid(h.name)
        victims = [pid for pid in self._pids_of(h.name) if pid != holder]
        for pid in victims:
            _signal(pid, signal.SIGSTOP)
        _wait(lambda: all(_state(p) in ("T", "t", "Z", "") for p in victims), 5,
              f"processes of {h.name} to stop")
        sh("ip", "-n", h.name, "addr", "del", f"{h.ip}/{SUBNET.prefixlen}", "dev", "eth0", check=False)
        (self.hosts_dir / h.name / "off").touch()

    def power_on(self, ref: str) -> None:
        h = self.host(ref)
        if sh("ip", "-n", h.name, "-o", "-4", "addr", "show", "dev", "eth0").stdout.find(f" {h.ip}/") < 0:
            sh("ip", "-n", h.name, "addr", "add", f"{h.ip}/{SUBNET.prefixlen}", "dev", "eth0")
        for pid in self._pids_of(h.name):
            _signal(pid, signal.SIGCONT)
        (self.hosts_dir / h.name / "off").unlink(missing_ok=True)

    def is_off(self, ref: str) -> bool:
        return (self.hosts_dir / self.host(ref).name / "off").exists()

    def partition(self, ref: str) -> None:
        """Cut the host off the network (its IP traffic dropped on the bridge, both ways) while its
        processes keep running: a pulled cable, not a dead machine. ``heal`` undoes it."""
        h = self.host(ref)
        sh("nft", "add", "element", "bridge", NFT_TABLE, "killed", f'{{ "{h.name}" }}')

    def heal(self, ref: str) -> None:
        h = self.host(ref)
        sh("nft", "delete", "element", "bridge", NFT_TABLE, "killed", f'{{ "{h.name}" }}',
           check=False)

    def is_killed(self, ref: str) -> bool:
        h = self.host(ref)
        return any((self.hosts_dir / h.name / f).exists() for f in ("crashed", "frozen"))

    def stop_sshd(self, ref: str) -> None:
        """Stop the listening sshd (like `systemctl stop ssh`): new connects are refused."""
        h = self.host(ref)
        pid = self._sshd_pid(h.name)
        if pid:
            _signal(pid, signal.SIGTERM)
            _wait(lambda: not _alive(pid), 5, f"sshd {pid} on {h.name} to stop")

    def start_sshd(self, ref: str) -> None:
        h = self.host(ref)
        if self.sshd_running(h.name):
            return
        self._start_sshd(h.name, h.ip)

    def sshd_running(self, ref: str) -> bool:
        return self._sshd_pid(self.host(ref).name) is not None

    def containerd_running(self, ref: str) -> bool:
        return self._containerd_pid(self.host(ref).name) is not None

    def stop_containerd(self, ref: str) -> None:
        """Stop the host's containerd (like `systemctl stop containerd`)."""
        h = self.host(ref)
        pid = self._containerd_pid(h.name)
        if pid:
            _signal(pid, signal.SIGTERM)
            _wait(lambda: not _alive(pid), 10, f"containerd {pid} on {h.name} to stop")

    def start_containerd(self, ref: str) -> None:
        h = self.host(ref)
        if not self.containerd_running(h.name):
            self._start_containerd(h.name)
        self._wait_containerd(h.name)

    # ---------------------------------------------------------------- services
    def start_service(self, ref: str, name: str, argv: list[str]) -> int:
        """Run ``argv`` (a long-running program that stays in the foreground) inside the host's
        namespaces, the way sshd is started: no SSH, its own session, stdout and stderr to the
        host's ``/var/log/<name>.log``. ``argv[0]`` is an absolute path of the root namespace (the
        toolchain's cache lives under /tmp or /root, which hosts see privately): it is executed
        through ``/proc/<pid>/root``. The service is recorded, so that ``revive`` after a crash
        starts it again like a boot would. Returns its pid; a running service is left alone."""
        h = self.host(ref)
        if not os.path.isabs(argv[0]) or not os.access(argv[0], os.X_OK):
            raise LabError(f"service {name}: {argv[0]} is not an executable absolute path")
        sdir = self.hosts_dir / h.name / SERVICES_DIR
        sdir.mkdir(exist_ok=True)
        (sdir / f"{name}.json").write_text(json.dumps({"argv": argv}) + "\n")
        pid = self.service_pid(h.name, name)
        return pid if pid is not None else self._launch_service(h.name, name)

    def stop_service(self, ref: str, name: str, forget: bool = False, timeout: float = 10) -> bool:
        """Stop the service (SIGTERM, then SIGKILL; a frozen one is killed at once). ``forget``
        also drops its record (a revive no longer starts it). True if it was running."""
        h = self.host(ref)
        sdir = self.hosts_dir / h.name / SERVICES_DIR
        pid = self.service_pid(h.name, name)
        if pid is not None:
            frozen = (self.hosts_dir / h.name / "frozen").exists()
            _signal(pid, signal.SIGKILL if frozen else signal.SIGTERM)
            if not _wait(lambda: not _alive(pid), timeout, f"{name} on {h.name} to stop",
                         raise_=False):
                _signal(pid, signal.SIGKILL)
                _wait(lambda: not _alive(pid), 5, f"{name} on {h.name} to die")
        (sdir / f"{name}.pid").unlink(missing_ok=True)
        if forget:
            (sdir / f"{name}.json").unlink(missing_ok=True)
        return pid is not None

    def service_pid(self, ref: str, name: str) -> int | None:
        """The pid of the recorded service if it lives (a frozen one does)."""
        h = self.host(ref)
        sdir = self.hosts_dir / h.name / SERVICES_DIR
        try:
            pid = int((sdir / f"{name}.pid").read_text())
            argv0 = json.loads((sdir / f"{name}.json").read_text())["argv"][0]
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        except (OSError, ValueError, KeyError, IndexError):
            return None
        # The pid may have been reused by another program: the executable's name must match.
        if os.path.basename(cmdline) != os.path.basename(argv0) or not _alive(pid):
            return None
        return pid

    def services(self, ref: str) -> list[str]:
        """Names of the services recorded for the host."""
        sdir = self.hosts_dir / self.host(ref).name / SERVICES_DIR
        return sorted(p.stem for p in sdir.glob("*.json")) if sdir.is_dir() else []

    def service_log(self, ref: str, name: str) -> Path:
        """The service's log as the root namespace sees it."""
        return self.hosts_dir / self.host(ref).name / PRIVATE_DIRS["/var/log"] / f"{name}.log"

    def packets_to(self, ref: str) -> int:
        """IP packets (frames) sent towards the host over the bridge since it was created, except
        the etcd peer traffic of the control plane (other masters dialling its member)."""
        return self.link_counter(ref)["packets"]

    def bytes_to(self, ref: str) -> int:
        """Bytes of those frames: what went on the wire towards the host (e.g. a copy)."""
        return self.link_counter(ref)["bytes"]

    def link_counter(self, ref: str, etcd_peers: bool = False) -> dict[str, int]:
        """The nft counter of the host's bridge port: ``{"packets": n, "bytes": n}``; every IP
        frame but those from or to the etcd peer port, which ``etcd_peers=True`` counts."""
        h = self.host(ref)
        name = _peer_counter(h.name) if etcd_peers else _counter(h.name)
        out = sh("nft", "-j", "list", "counter", "bridge", NFT_TABLE, name).stdout
        for item in json.loads(out)["nftables"]:
            if "counter" in item:
                return {"packets": int(item["counter"]["packets"]),
                        "bytes": int(item["counter"]["bytes"])}
        raise LabError(f"no counter for {h.name}")

    # ---------------------------------------------------------------- commands
    def run(self, ref: str, cmd: str, input: str | bytes | None = None, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess:
        """Run `bash -c cmd` inside the host's namespaces (no SSH), clean environment."""
        h = self.host(ref)
        holder = self.holder_pid(h.name)
        argv = ["nsenter", "-t", str(holder), "-n", "-m", "-u", "--", "env", "-i",
                f"PATH={HOST_PATH}", "HOME=/root", "LANG=C.UTF-8", "bash", "-c", cmd]
        p = sh(*argv, check=False, input=input, timeout=timeout)
        if check and p.returncode != 0:
            raise LabError(f"{h.name}: `{cmd}` -> exit {p.returncode}: {p.stderr!s}")
        return p

    def enter_argv(self, ref: str) -> list[str]:
        """The prefix that runs a program of the root namespace (its files, its environment)
        on the host's network and with its hostname: a machine of its own for the network
        (``kill``, ``partition``) and for the processes ``kill`` ends, without the host's
        private directories."""
        holder = self.holder_pid(self.host(ref).name)
        return ["nsenter", "-t", str(holder), "-n", "-u", "--"]

    def ssh_argv(self, ref: str, connect_timeout: int = 5) -> list[str]:
        h = self.host(ref)
        return ["ssh", "-F", "none", "-i", str(self.key_path), "-p", str(h.ssh_port),
                "-o", f"UserKnownHostsFile={self.known_hosts_path}",
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
                "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", f"ConnectTimeout={connect_timeout}", "-o", "LogLevel=ERROR",
                *kex_option(), f"root@{h.ip}"]

    def ssh(self, ref: str, cmd: str, input: str | bytes | None = None, check: bool = True,
            timeout: float = 120, connect_timeout: int = 5) -> subprocess.CompletedProcess:
        p = sh(*self.ssh_argv(ref, connect_timeout), "--", cmd, check=False, input=input,
               timeout=timeout)
        if check and p.returncode != 0:
            raise LabError(f"ssh {ref}: `{cmd}` -> exit {p.returncode}: {p.stderr!s}")
        return p

    def add_sudo_user(self, ref: str, user: str) -> None:
        """A non-root login on the host with the lab operator key and passwordless sudo (the
        account a cluster reached as a non-root user has). Idempotent; needs `sudo` installed."""
        if not shutil.which("sudo"):
            raise LabError("sudo is not installed (apt-get install sudo)")
        key = self.key_path.with_suffix(".pub").read_text()
        self.run(ref, f"id -u {user} >/dev/null 2>&1 || useradd -M -d /tmp/{user} -s /bin/bash {user}; "
                      f"usermod -p '*' {user}; mkdir -p /tmp/{user} && chown {user} /tmp/{user}; "
                      f"echo '{user} ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/{user} && "
                      f"chmod 0440 /etc/sudoers.d/{user}; "
                      f"cat > /etc/ssh/authorized_keys/{user} && chmod 0644 /etc/ssh/authorized_keys/{user}",
                 input=key)

    def allow_password_login(self, ref: str, user: str, password: str) -> None:
        """``user`` (not root: sshd keeps root key-only) may log in with ``password``: its
        password set (on stdin), PasswordAuthentication on in the host's sshd, sshd restarted."""
        if user == "root":
            raise LabError("lab hosts allow root logins by key only")
        h = self.host(ref)
        self.run(ref, "chpasswd", input=f"{user}:{password}\n")
        self.run(ref, "sed -i 's/^PasswordAuthentication no$/PasswordAuthentication yes/' "
                      "/etc/ssh/sshd_config && grep -q '^PasswordAuthentication yes$' /etc/ssh/sshd_config")
        self.stop_sshd(h.name)
        self.start_sshd(h.name)

    def pids(self, ref: str) -> list[int]:
        """Processes living on the host (its network or mount namespace)."""
        return self._pids_of(self.host(ref).name)

    # ---------------------------------------------------------------- internals
    def _ensure_operator_key(self) -> None:
        if not self.key_path.exists():
            sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sealer-lab-operator",
               "-f", str(self.key_path))
        os.chmod(self.key_path, 0o600)

    def _ensure_mountpoint(self) -> None:
        for path in MOUNTPOINTS:
            mp = Path(path)
            if not mp.exists():
                mp.mkdir(parents=True)
                (self.state / f"created-{PRIVATE_DIRS[path]}").touch()

    def _remove_mountpoints(self) -> None:
        other_labs = any(line.split()[0].startswith("srl") for line in
                         sh("ip", "netns", "list").stdout.splitlines() if line.split())
        for path in MOUNTPOINTS:
            marker = self.state / f"created-{PRIVATE_DIRS[path]}"
            if not marker.exists():
                continue
            if not other_labs:
                try:
                    Path(path).rmdir()
                except OSError:
                    pass
            marker.unlink()

    def _launch_service(self, name: str, service: str) -> int:
        sdir = self.hosts_dir / name / SERVICES_DIR
        argv = json.loads((sdir / f"{service}.json").read_text())["argv"]
        holder = self.holder_pid(name)
        # Our own /proc/<pid>/root is the root namespace's /: the path resolves there while this
        # process lives, which it does until the service has exec'd (waited for below).
        exe = f"/proc/{os.getpid()}/root{argv[0]}"
        log = self.service_log(name, service)
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                ["nsenter", "-t", str(holder), "-n", "-m", "-u", "--", "env", "-i",
                 f"PATH={HOST_PATH}", "HOME=/root", "LANG=C.UTF-8", exe, *argv[1:]],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True, cwd="/")
        (sdir / f"{service}.pid").write_text(f"{proc.pid}\n")

        def started() -> bool:
            try:
                cmd = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")[0].decode()
            except OSError:
                return True  # gone already: the caller's readiness check reports it
            return os.path.basename(cmd) == os.path.basename(argv[0])
        _wait(started, 10, f"{service} on {name} to start")
        return proc.pid

    def _ensure_bridge(self) -> None:
        if not _link_exists(BRIDGE):
            sh("ip", "link", "add", BRIDGE, "type", "bridge", "stp_state", "0")
        _disable_ipv6(BRIDGE)
        addrs = sh("ip", "-4", "-o", "addr", "show", "dev", BRIDGE).stdout
        for gateway in (GATEWAY, *(str(n.network_address + 1) for n in EXTRA_SUBNETS)):
            if f" {gateway}/24 " not in addrs:
                sh("ip", "addr", "add", f"{gateway}/24", "dev", BRIDGE)
        sh("ip", "link", "set", BRIDGE, "up")

    def _ensure_nft(self) -> None:
        if sh("nft", "list", "table", "bridge", NFT_TABLE, check=False).returncode == 0:
            return
        sh("nft", "-f", "-", input=f"""
table bridge {NFT_TABLE} {{
  set killed {{ type ifname; }}
  chain to_host {{
    type filter hook postrouting priority 0; policy accept;
  }}
  chain kill_to {{
    type filter hook postrouting priority 10; policy accept;
    oifname @killed ether type {{ ip, ip6 }} drop
  }}
  chain kill_from {{
    type filter hook prerouting priority 0; policy accept;
    iifname @killed ether type {{ ip, ip6 }} drop
  }}
}}
""")

    def _existing_host_names(self) -> set[str]:
        names = set()
        for line in sh("ip", "netns", "list").stdout.splitlines():
            n = line.split()[0] if line.split() else ""
            if n.startswith(PREFIX):
                names.add(n)
        for line in sh("ip", "-o", "link", "show").stdout.splitlines():
            n = line.split(":")[1].strip().split("@")[0]
            if n.startswith(PREFIX) and n != BRIDGE:
                names.add(n)
        if self.hosts_dir.exists():
            names.update(p.name for p in self.hosts_dir.iterdir() if p.name.startswith(PREFIX))
        return names

    def _ensure_host(self, name: str, ip: str, role: str, data_root: str, cluster: str) -> Host:
        hdir = self.hosts_dir / name
        if self._host_healthy(name, ip):
            host_key = (hdir / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()
            self._ensure_routes(name)
            self._install_rootfs(name, data_root, cluster)
            if not self.containerd_running(name):
                self._start_containerd(name)
                self._wait_containerd(name)
            return Host(name, ip, role, 22, str(self.key_path), " ".join(host_key[:2]))
        self._remove_host(name)
        self._prepare_host_dir(name, hdir)
        sh("ip", "netns", "add", name)
        sh("ip", "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", name)
        _disable_ipv6(name)
        sh("ip", "link", "set", name, "master", BRIDGE, "up")
        counter, peers = _counter(name), _peer_counter(name)
        sh("nft", "add", "counter", "bridge", NFT_TABLE, counter)
        sh("nft", "add", "counter", "bridge", NFT_TABLE, peers)
        # etcd peer traffic is the control plane's own (the other masters' members keep dialling a
        # dead one, as in a real cluster): counted apart, so that packets_to says what the program
        # and everything else sent.
        for port in ("dport", "sport"):  # its dials, and the streams it dialled
            sh("nft", "add", "rule", "bridge", NFT_TABLE, "to_host", "oifname", name, "ip",
               "daddr", ip, "meta", "l4proto", "tcp", "th", port,
               str(ETCD_PEER_PORT), "counter", "name", peers, "accept", "comment", f'"{name}"')
        # Only frames addressed to this host's IP: a bridge that forgot where another host's MAC
        # is floods that host's frames through every port, this one included.
        sh("nft", "add", "rule", "bridge", NFT_TABLE, "to_host", "oifname", name, "ip", "daddr",
           ip, "counter", "name", counter, "comment", f'"{name}"')
        sh("nft", "add", "rule", "bridge", NFT_TABLE, "to_host", "oifname", name, "ether", "type",
           "ip6", "counter", "name", counter, "comment", f'"{name}"')
        log = open(hdir / "holder.log", "wb")
        subprocess.Popen(["ip", "netns", "exec", name, "unshare", "--mount", "--uts",
                          "--propagation", "private", "--", "/bin/sh", "-c", HOLDER_SCRIPT,
                          "holder", name, f"{ip}/24", str(hdir), str(self.state),
                          " ".join(str(n) for n in SUBNETS)],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                         start_new_session=True, close_fds=True)
        log.close()
        def holder_ready() -> bool:
            try:
                return _is_holder(int((hdir / "holder.pid").read_text()))
            except (OSError, ValueError):
                return False
        _wait(holder_ready, 10, f"holder of {name} (log: {hdir / 'holder.log'})")
        self._install_rootfs(name, data_root, cluster)
        self._start_containerd(name)  # starts in the background while sshd comes up
        self._start_sshd(name, ip)
        self._wait_containerd(name)
        host_key = (hdir / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()
        return Host(name, ip, role, 22, str(self.key_path), " ".join(host_key[:2]))

    def _ensure_routes(self, name: str) -> None:
        """The on-link routes to the other lab subnets on a host an older lab made (the holder adds
        them at creation)."""
        if not EXTRA_SUBNETS:
            return
        routes = sh("ip", "-n", name, "-4", "-o", "route", "show", "dev", "eth0").stdout
        for net in SUBNETS:
            if not any(line.split()[0] == str(net) for line in routes.splitlines() if line.split()):
                sh("ip", "-n", name, "route", "replace", str(net), "dev", "eth0")

    def _start_sshd(self, name: str, ip: str) -> None:
        holder = int((self.hosts_dir / name / "holder.pid").read_text())
        subprocess.run(["nsenter", "-t", str(holder), "-n", "-m", "-u", "--", "env", "-i",
                        f"PATH={HOST_PATH}", "/usr/sbin/sshd", "-E", "/var/log/sshd.log"],
                       check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=20)
        _wait(lambda: _ssh_banner(ip), 10, f"sshd on {name} ({ip}:22)")

    def _start_containerd(self, name: str) -> None:
        holder = int((self.hosts_dir / name / "holder.pid").read_text())
        subprocess.run(["nsenter", "-t", str(holder), "-n", "-m", "-u", "--", "env", "-i",
                        f"PATH={HOST_PATH}", "/bin/sh", "-c", START_CONTAINERD],
                       check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=20)

    def _wait_containerd(self, name: str) -> None:
        sock = self.host_path(name, CONTAINERD_SOCKET)
        pid = int(self.host_path(name, CONTAINERD_PID).read_text())
        def serving() -> bool:
            if not _alive(pid):  # (its comm may still be sh or setsid right after the start)
                raise LabError(f"containerd on {name} exited: see /var/log/containerd.log there")
            with socket.socket(socket.AF_UNIX) as s:
                try:
                    s.connect(str(sock))
                    return True
                except OSError:
                    return False
        _wait(serving, 15, f"containerd on {name} ({CONTAINERD_SOCKET})")
        # A node's containerd without its CRI plugin is no node: the kubelet pulls through it and
        # it reads certs.d. It logs the failure and serves the rest (the socket answers), so the
        # lab reads this start's lines (past its last "starting containerd").
        log = self.host_path(name, "/var/log/containerd.log").read_text(errors="replace")
        failed = [line for line in log[log.rfind("starting containerd"):].splitlines()
                  if "failed to load plugin" in line and CRI_PLUGIN in line]
        if failed:
            raise LabError(f"containerd on {name} runs without its CRI plugin: {failed[0]}")

    def _host_healthy(self, name: str, ip: str) -> bool:
        hdir = self.hosts_dir / name
        if not (hdir / "var-lib-containerd").is_dir():
            return False  # made by a lab without containerd: /var/lib/containerd isn't private
        try:
            pid = int((hdir / "holder.pid").read_text())
        except (OSError, ValueError):
            return False
        if not _is_holder(pid) or (hdir / "frozen").exists() or (hdir / "crashed").exists():
            return False
        if not all((hdir / sub).is_dir() for sub in PRIVATE_DIRS.values()):
            return False  # made by an older lab without one of today's private dirs
        return self._sshd_pid(name) is not None and _ssh_banner(ip)

    def _prepare_host_dir(self, name: str, hdir: Path) -> None:
        hdir.mkdir(parents=True)
        for sub in PRIVATE_DIRS.values():
            if sub != "etc":
                (hdir / sub).mkdir()
        os.chmod(hdir / "tmp", 0o1777)
        os.chmod(hdir / "root", 0o700)
        os.chmod(hdir / "var-lib-etcd", 0o700)
        # /etc is an overlay (lower: the machine's /etc, upper: <hostdir>/etc): private, writable,
        # rename-over works, and it costs nothing to create or remove.
        etc = hdir / "etc"
        etc.mkdir()
        (hdir / "etc-work").mkdir()
        (etc / "hostname").write_text(name + "\n")
        hosts = Path("/etc/hosts").read_text() if Path("/etc/hosts").exists() else ""
        (etc / "hosts").write_text("127.0.0.1\tlocalhost\n" + f"127.0.1.1\t{name}\n" + "".join(
            line + "\n" for line in hosts.splitlines()
            if line.strip() and not line.split()[0].startswith("127.")))
        for d in ("docker", "containerd"):
            (etc / d).mkdir(exist_ok=True)
        (etc / "containerd" / "config.toml").write_text(CONTAINERD_CONFIG)
        ssh_dir = etc / "ssh"
        ssh_dir.mkdir(exist_ok=True)
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{name}",
           "-f", str(ssh_dir / "ssh_host_ed25519_key"))
        (ssh_dir / "sshd_config").write_text(SSHD_CONFIG)
        ak = ssh_dir / "authorized_keys"
        ak.mkdir(mode=0o755, exist_ok=True)
        (ak / "root").write_text(self.key_path.with_suffix(".pub").read_text())
        os.chmod(ak / "root", 0o644)

    def _install_rootfs(self, name: str, data_root: str, cluster: str) -> None:
        """sealer-style rootfs with the lab's init-registry.sh / stop-registry.sh."""
        rootfs = self.host_path(name, f"{data_root}/{cluster}/rootfs")
        for sub in ("scripts", "etc", "certs", "registry"):
            (rootfs / sub).mkdir(parents=True, exist_ok=True)
        for script in (ROOTFS_SRC / "scripts").glob("*.sh"):
            shutil.copyfile(script, rootfs / "scripts" / script.name)
            os.chmod(rootfs / "scripts" / script.name, 0o755)

    def _sshd_pid(self, name: str) -> int | None:
        try:
            pid = int(Path(f"/proc/{self.holder_pid(name)}/root/run/sshd.pid").read_text())
        except (OSError, ValueError, LabError):
            return None
        try:
            if "sshd" in Path(f"/proc/{pid}/comm").read_text():
                return pid
        except OSError:
            pass
        return None

    def _containerd_pid(self, name: str) -> int | None:
        try:
            holder = self.holder_pid(name)
            pid = int(Path(f"/proc/{holder}/root{CONTAINERD_PID}").read_text())
            if (Path(f"/proc/{pid}/comm").read_text().strip() == "containerd" and _alive(pid)
                    and os.readlink(f"/proc/{pid}/ns/mnt") == os.readlink(f"/proc/{holder}/ns/mnt")):
                return pid
        except (OSError, ValueError, LabError):
            pass
        return None

    def _pids_of(self, name: str) -> list[int]:
        """Every process in the host's netns or in its holder's mount ns."""
        return self._pids_of_hosts([name])

    def _pids_of_hosts(self, names: Iterable[str]) -> list[int]:
        """Every process in one of the hosts' netns or in one of their holders' mount ns, from
        one pass over /proc (a 3 + 500 lab has thousands of processes)."""
        nets, mnts = set(), set()
        for name in names:
            try:
                nets.add(f"net:[{os.stat(f'/run/netns/{name}').st_ino}]")
            except OSError:
                pass
            try:
                holder = int((self.hosts_dir / name / "holder.pid").read_text())
                mnts.add(os.readlink(f"/proc/{holder}/ns/mnt"))
            except (OSError, ValueError):
                pass
        pids = set()
        if nets or mnts:
            for d in os.listdir("/proc"):
                if not d.isdigit():
                    continue
                try:
                    if (os.readlink(f"/proc/{d}/ns/net") in nets
                            or os.readlink(f"/proc/{d}/ns/mnt") in mnts):
                        pids.add(int(d))
                except OSError:
                    pass
        pids.discard(os.getpid())
        return sorted(p for p in pids if _alive(p))  # zombies are dead, just not reaped yet

    def _remove_host(self, name: str) -> None:
        self._remove_hosts([name])

    def _remove_hosts(self, names: Iterable[str], nft: bool = True) -> None:
        """Remove hosts and everything of theirs: processes (SIGKILL), namespace, link, nft rules,
        counters and `killed` element, host dir. Batched for many hosts at once (one /proc pass,
        one `ip -batch`, one nft transaction): one by one, a 3 + 500 lab took 2 s a host."""
        names = sorted(set(names))
        if not names:
            return
        for _ in range(3):
            pids = self._pids_of_hosts(names)
            if not pids:
                break
            for pid in pids:
                _signal(pid, signal.SIGKILL)
            _wait(lambda: not any(_alive(p) for p in pids), 10,
                  f"processes of {len(names)} host(s) to die", raise_=False)
        namespaces = {line.split()[0] for line in sh("ip", "netns", "list").stdout.splitlines()
                      if line.split()}
        commands = [f"netns del {n}" for n in names if n in namespaces]
        commands += [f"link del {n}" for n in names if _link_exists(n)]
        if commands:
            sh("ip", "-force", "-batch", "-", input="\n".join(commands) + "\n", check=False,
               timeout=600)
        if nft and sh("nft", "list", "table", "bridge", NFT_TABLE, check=False).returncode == 0:
            self._forget_in_nft(names)
        for name in names:
            hdir = self.hosts_dir / name
            if hdir.exists():
                shutil.rmtree(hdir)

    def _forget_in_nft(self, names: list[str]) -> None:
        """Two nft transactions: the hosts' rules (by handle), then their counters and `killed`
        elements (a counter is still busy within the transaction that deletes its rule), each
        only where it exists (a transaction fails whole on a missing object)."""
        wanted = set(names)
        table = sh("nft", "-a", "list", "table", "bridge", NFT_TABLE, timeout=120).stdout
        rules, ops = [], []
        chain = None
        for line in table.splitlines():
            words = line.split()
            if words[:1] == ["chain"]:
                chain = words[1]
            comment = re.search(r'comment "([^"]+)"', line)
            if chain and comment and comment.group(1) in wanted and "# handle" in line:
                handle = line.rsplit("# handle", 1)[1].strip()
                rules.append(f"delete rule bridge {NFT_TABLE} {chain} handle {handle}")
            if words[:1] == ["counter"] and len(words) > 1:
                counter = words[1]
                if any(counter in (_counter(n), _peer_counter(n)) for n in wanted):
                    ops.append(f"delete counter bridge {NFT_TABLE} {counter}")
        killed = sh("nft", "list", "set", "bridge", NFT_TABLE, "killed", check=False).stdout
        ops += [f'delete element bridge {NFT_TABLE} killed {{ "{n}" }}' for n in names
                if f'"{n}"' in killed]
        for batch in (rules, ops):
            if batch:
                sh("nft", "-f", "-", input="\n".join(batch) + "\n", timeout=300)

    def _write_inventory(self, hosts: list[Host], data_root: str, cluster: str) -> None:
        inv = {
            "bridge": BRIDGE,
            "gateway": GATEWAY,
            "cluster": cluster,
            "data_root": data_root,
            "user": "root",
            "key_path": str(self.key_path),
            "known_hosts": str(self.known_hosts_path),
            "hosts": [h.as_json() for h in hosts],
        }
        tmp = self.inventory_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(inv, indent=2) + "\n")
        tmp.replace(self.inventory_path)
        self.known_hosts_path.write_text("".join(f"{h.ip} {h.host_key}\n" for h in hosts))


# -------------------------------------------------------------------- helpers
NEIGH_SYSCTL = "/proc/sys/net/ipv4/neigh/default/gc_thresh{}"
# Neighbour (ARP) entries to allow per lab host: each master holds one for every node whose
# node entry point health-checks it, each node a few (the masters, the gateway), the machine one
# per host.
NEIGH_PER_HOST = 16


def ensure_neighbour_capacity(hosts: int) -> dict[int, int]:
    """Raise the kernel's IPv4 neighbour-table limits (gc_thresh1/2/3) to fit ``hosts`` lab
    hosts; never lowers them; returns what it changed. The table and its limits are the
    kernel's, shared by every network namespace: on real machines each host has its own (1,024
    entries each by default, enough for a master with 500 nodes), but the lab's 3 masters + 500
    nodes share one, and past 1,024 entries the kernel refuses new neighbours: connects fail
    with `No route to host` (a 500-node deploy with node entry points did, session 13)."""
    want = {3: hosts * NEIGH_PER_HOST}
    want[2], want[1] = want[3] // 2, want[3] // 8
    changed = {}
    for i in (3, 2, 1):   # thresh3 first: the kernel keeps thresh1 <= thresh2 <= thresh3
        path = Path(NEIGH_SYSCTL.format(i))
        try:
            now = int(path.read_text())
            if want[i] > now:
                path.write_text(f"{want[i]}\n")
                changed[i] = want[i]
        except OSError:
            pass
    return changed


INOTIFY_SYSCTL = "/proc/sys/fs/inotify/max_user_instances"
# inotify instances to allow per lab host: containerd's CRI plugin takes one for its CNI config
# monitor (containerd 1.6 pkg/cri/server/service.go, NewCRIService: newCNINetConfSyncer, whose
# fsnotify.NewWatcher is an inotify instance); dockerd and the rest a few; the machine keeps its
# own default (128) on top.
INOTIFY_PER_HOST = 4


def ensure_inotify_capacity(hosts: int) -> int | None:
    """Raise fs.inotify.max_user_instances to fit ``hosts`` lab hosts (never lowers it); returns
    the new value, or None when it was left alone. The limit counts a user's instances across
    every namespace of the machine (the lab's processes are all root): 128 by default, and past
    it containerd starts without its CRI plugin ("failed to create fsnotify watcher: too many
    open files"), which 375 of 503 hosts did at 3 + 500 before this (session 14)."""
    path = Path(INOTIFY_SYSCTL)
    try:
        want = 128 + hosts * INOTIFY_PER_HOST
        if want > int(path.read_text()):
            path.write_text(f"{want}\n")
            return want
    except OSError:
        pass
    return None


@functools.cache
def kex_option() -> list[str]:
    """The lab's own ssh (its helpers, the tests' checks) negotiates the key exchange the CLI and
    the stand-in provider offer first (cli/ssh.py FAST_KEX: OpenSSH 9.2's default sntrup761 costs
    about 140 ms of CPU a session here, curve25519-sha256 about 10 ms)."""
    try:
        known = subprocess.run(["ssh", "-Q", "kex"], capture_output=True, text=True,
                               timeout=10).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return []
    fast = [k for k in ("mlkem768x25519-sha256", "curve25519-sha256") if k in known]
    return ["-o", f"KexAlgorithms=^{fast[0]}"] if fast else []


def _counter(name: str) -> str:
    return "to_" + name.replace("-", "_")


def _peer_counter(name: str) -> str:
    return "etcd_peers_to_" + name.replace("-", "_")


def _link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def _disable_ipv6(dev: str) -> None:
    p = Path(f"/proc/sys/net/ipv6/conf/{dev}/disable_ipv6")
    if p.exists():
        p.write_text("1")


def _netns_exists(name: str) -> bool:
    return name in sh("ip", "netns", "list").stdout.split()


def ensure_service_host(name: str, address: str) -> None:
    """A lab host that is no cluster host (the state database, the S3 store: lab/postgres.py,
    lab/s3.py): network namespace ``name`` whose eth0 is ``address``/24, its veth peer ``name``
    on the lab bridge, nothing else (no sshd: nobody logs in). Idempotent."""
    if not _link_exists(BRIDGE):
        raise LabError(f"no bridge {BRIDGE}: bring the lab up first (`python -m lab up`)")
    if _netns_exists(name) and _link_exists(name) and f" {address}/" in sh(
            "ip", "-n", name, "-4", "-o", "addr", "show", "dev", "eth0", check=False).stdout:
        return
    remove_service_host(name)
    sh("ip", "netns", "add", name)
    # No IPv6 in the namespace (as on every lab host): its link-local chatter (DAD, router and
    # multicast listener messages) is multicast, flooded through every bridge port, and would
    # count as packets to the cluster's hosts (Lab.packets_to: "0 packets to the dead master0").
    sh("nsenter", f"--net=/run/netns/{name}", "--", "sysctl", "-qw",
       "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
    sh("ip", "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", name)
    _disable_ipv6(name)
    sh("ip", "link", "set", name, "master", BRIDGE, "up")
    sh("ip", "-n", name, "link", "set", "lo", "up")
    sh("ip", "-n", name, "addr", "add", f"{address}/{SUBNET.prefixlen}", "dev", "eth0")
    sh("ip", "-n", name, "link", "set", "eth0", "up")
    sh("ip", "-n", name, "route", "add", "default", "via", GATEWAY, check=False)


def remove_service_host(name: str) -> bool:
    """Kill what is left in service host ``name``'s namespace and remove it and its veth; True
    when there was one."""
    had = _netns_exists(name) or _link_exists(name)
    if _netns_exists(name):
        for pid in sh("ip", "netns", "pids", name, check=False).stdout.split():
            _signal(int(pid), 9)
        sh("ip", "netns", "del", name, check=False)
    if _link_exists(name):
        sh("ip", "link", "del", name, check=False)
    return had


def _state(pid: int) -> str:
    """The process state letter (R, S, T, Z, ...), "" when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    return _state(pid) not in ("", "Z")


def _is_holder(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/cmdline").read_bytes() == b"sleep\0infinity\0"
                and os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt"))
    except OSError:
        return False


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait(cond, timeout: float, what: str, raise_: bool = True) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    if raise_:
        raise LabError(f"timed out after {timeout}s waiting for {what}")
    return False


def _ssh_banner(ip: str, port: int = 22) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=1) as s:
            s.settimeout(2)
            return s.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def packets_to(host: str, state_dir: str | None = None) -> int:
    return Lab(state_dir).packets_to(host)
