"""A cluster as sealer leaves it, on the lab's hosts: what `python -m cli adopt` finds.

Three flavours (`lab.sealer_files.Flavour`), each from sealer's source (sealerio/sealer at the tag
named, basefs = sealerio/basefs); the files themselves are rendered by lab/sealer_files.py.

The runs modelled: `sealer run -f Clusterfile <cluster image>` (v0.11: a user's Clusterfile with
the lab's hosts, `ssh` with `pk` and `passwd`, and for `ha: false` a `localRegistry` block), then
one `sealer run <app image>` per app of the seed history, minutes apart. v0.8: `sealer run
<cluster image> -m .. -n .. -p .. --cluster-name <name>` (flags; `--pk` defaults to
`~/.ssh/id_rsa`, cmd/sealer/cmd/run.go@v0.8.7:86) and no app runs (v0.8 keeps no log of them).

What lands where (paths on the hosts; `<rootfs>` = `<dataRoot>/<name>/rootfs`):

v0.11 (both modes), on master0 (where sealer ran, as root):
- `/root/.sealer/Clusterfile` (0644, os.WriteFile, utils/os/writers.go@v0.11.0:110-119): the
  documents of the last save joined with `---\\n`: Cluster, then the Application document the app
  run saved (`apiVersion: Application`, `kind: sealer.io/v2`; cmd/sealer/cmd/utils/application.go,
  cmd/sealer/cmd/cluster/installer.go:78-83; pkg/clusterfile/clusterfile.go:102-199). `spec.ssh`
  holds `user`, `passwd` in plaintext, `pk`, `port`.
- ConfigMap `kube-system/sealer-clusterfile` key `Clusterfile` (clusterfile.go:39-43,202-229): the
  same save, then edited by the user with `kubectl edit` after it (sealer reads the ConfigMap
  first: clusterfile.go:231-271): ``drift="passwd"`` rotated `spec.ssh.passwd` there, so the
  file is stale by one edit and only the ConfigMap's password opens the hosts.
- ConfigMap `kube-system/sealer-registry` key `registry` (pkg/cluster-runtime/installer.go:417-442).
- `/root/.sealer/application.json` (0600): one indented ImageExtension per run, appended
  (pkg/application/appdriver.go:128-160): the cluster image's (basefs: a `shell` app `calico`,
  LAUNCH calico) and each app image's (the seed's app, typed as the seed says, and in the first
  app image an untyped app with APPCMDS, build/kubefile/parser/kubefile.go:189).
- `/root/.ssh/id_rsa`: the key of `spec.ssh.pk` (the lab's operator key).
On every registry host (HA: every master; non-HA: master0) (pkg/registry/installer.go:106-238;
pkg/imagedistributor/scp_distributor.go:47-98,200-220):
- `<rootfs>/certs/<domain>.crt|.key` (0644|0600), `<rootfs>/etc/registry_htpasswd` (only with a
  login), `<rootfs>/registry/` (every run's registry data, merged),
  `<rootfs>/cache/registry/<image id>` (empty flag per run, mtime of its run), and the registry
  started by `cd <rootfs>/scripts && bash init-registry.sh PORT <rootfs>/registry DOMAIN`.
On every host: `<rootfs>/etc/registry_config.yml` (basefs' file, with the rootfs),
`<rootfs>/cache/image/<image id>` (scp_distributor.go:101-145: rootfs copied to every host),
`/etc/hosts` line (HA masters: own IP; HA nodes: the VIP; non-HA: master0; all marked
`#hostalias-set-by-sealer`: pkg/registry/local.go:136-236), the CA as
`<CertsDir>/<domain>:<port>/<domain>.crt` where CertsDir is the runtime's
(pkg/container-runtime/installer.go:28-33; local.go:239-253), and with a login the auth file as
`/var/lib/kubelet/config.json` (+ `/root/.docker/config.json` on docker hosts) (local.go:255-302).
HA nodes also: `/etc/kubernetes/manifests/reg-lvscare.yaml` (local.go:171-222, pkg/ipvs/ipvs.go)
and the VIP (lab/vip.py: the lab's stand-in for `seautil ipvs` + lvscare, since this kernel has no
IPVS). The Clusterfile's env carries `IPvsVIPv4=<lab VIP>` (how a user moves sealer's VIP,
local.go:512-526) since sealer's 10.103.97.2 is outside the lab's network.

v0.8 (pkg/runtime/registry.go@v0.8.7, masters.go, nodes.go; pkg/clusterfile/util.go:76-117):
- `/root/.sealer/<name>/Clusterfile`: the Cluster alone, `apiVersion: sealer.cloud/v2`, one hosts
  entry per IP (master0's roles `[master, master0]`), `passwd` AES-encrypted with
  `encrypted: true`, `pk` recorded. No ConfigMaps, no application.json, no cache flags.
- every host: `<rootfs>/etc/registry.yml` = sealer's settings (from the cluster image, never
  written by sealer), CA as `/etc/docker/certs.d/<domain>:<port>/<domain>.crt` and again under
  `sea.hub:<port>/`, unmarked hosts lines `<master0> <domain>` (+ `<master0> sea.hub` for a custom
  domain), with a login `/root/.docker/config.json` and `/var/lib/kubelet/config.json`
  (`nerdctl login` + cp, registry.go:35-38).
- master0: `<rootfs>/certs/`, `etc/registry_htpasswd` (`echo`: newline), `registry/` data, and
  the registry started by `cd <rootfs>/scripts && ./init-registry.sh PORT <rootfs>/registry
  DOMAIN` (registry.go:73). No `etc/registry_config.yml`: basefs' v0.8 rootfs has none
  (sealer-v0.8.6 branch), so its script runs the image's default config; the lab's
  init-registry.sh does the same. sealer v0.8's script runs registry:2.7.1 with docker or
  nerdctl; the lab's runs docker-registry in the same container-like root (lab/README.md).

The lab differs from a machine in: the registry is the lab's init-registry.sh (docker-registry
2.8 in a private root, not the registry:2.7.1 container); the VIP is lab/vip.py's (no IPVS);
`/var/lib/kubelet` is a tmpfs private to each host (the machine has no kubelet); the Clusterfile
names the lab's cluster, not sealer's `my-cluster` default.
"""
from __future__ import annotations

import copy
import json
import os
import shlex
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cli.clusterfile import encrypt_passwd
from lab import sealer_files as sf
from lab.hosts import INSTANCE, Lab, LabError
from lab.sealer_files import (BASEFS_REGISTRY_CONFIG, CERTS_DIRS, HOST_ALIAS_MARK, SEA_HUB,  # noqa: F401
                              Flavour)

SEALER_HOME = "/root/.sealer"
SEALER_PK = "/root/.ssh/id_rsa"       # sealer's `--pk` default (run.go@v0.8.7:86; flags v0.11)
SEALER_KEY = SEALER_PK                # kept for callers of the previous module
SSH_PASSWORD = "Sealer-Lab-Passw0rd"  # the cluster's SSH password when a caller gives none
CLUSTER_IMAGE = "docker.io/sealerio/kubernetes:v1.22.15"
APP_IMAGE = "docker.io/lab/{name}:{version}"
RUN_INTERVAL_S = 300                  # runs are minutes apart: flag mtimes 5 min apart
RUNTIMES = ("docker", "containerd", "containerd-basefs")
CONTAINERD_LAB_CERTS = 'config_path = "/etc/containerd/certs.d"'
CONTAINERD_BASEFS_CERTS = 'config_path = "/etc/docker/certs.d/"'   # basefs dump-config.toml@main


@dataclass
class SealerCluster:
    """What the lab made, for tests to compare what adopt reads with. Paths are on the hosts."""

    flavour: Flavour
    name: str
    master0: str
    masters: list[str]
    nodes: list[str]
    rootfs: str
    domain: str
    port: int
    username: str
    password: str
    cert: str
    key: str
    htpasswd: str | None                  # None: no login set, no file
    registry_config: str | None           # <rootfs>/etc/registry_config.yml after the script's sed
    clusterfile: str                      # the file's text
    clusterfile_path: str
    clusterfile_configmap: str | None     # sealer-clusterfile's Clusterfile (None: no ConfigMap)
    registry_configmap: str | None        # sealer-registry's registry
    application_log: str                  # ~/.sealer/application.json ("" for v0.8: none)
    image_ids: list[str]                  # 64 hex, run order (cluster image first)
    cluster_image: str                    # spec.image
    app_images: list[str]                 # `sealer run <name>` of each app run, in order
    runtime: str                          # the cluster's runtime type (decides CertsDir)
    runtimes: dict[str, str]              # ip -> docker | containerd | containerd-basefs
    trust_files: dict[str, str]           # ip -> the CA file sealer wrote (the first one)
    trust_paths: dict[str, list[str]]     # ip -> every CA file sealer wrote
    registry_hosts: list[str]
    vip: str | None
    ssh_user: str
    ssh_password: str | None              # the password the hosts accept now
    ssh_pk: str | None                    # spec.ssh.pk (on master0)
    registry_settings: str | None = None  # v0.8 <rootfs>/etc/registry.yml
    history: dict = field(default_factory=dict)    # the seed the lab derived the runs from
    cache_flags: dict[str, list[str]] = field(default_factory=dict)  # ip -> cache/registry ids
    lvscare_manifest: str | None = None

    @property
    def hosts(self) -> list[str]:
        return [*self.masters, *self.nodes]


    @property
    def history_path(self) -> str:
        return f"{SEALER_HOME}/application.json"

    def hosts_line(self, ip: str) -> str:
        """The /etc/hosts line sealer left on ``ip`` for the domain."""
        if self.flavour is Flavour.V011_HA:
            target = ip if ip in self.masters else self.vip
        else:
            target = self.master0
        return sf.hosts_line(self.flavour, target, self.domain)


# -- compatibility with the previous module's helpers ----------------------------------------------

def sealer_self_signed(domain: str, ips: list[str] = ()) -> tuple[str, str]:
    """v0.11's registry cert (CN registry-ca, serial 0, SAN DNS:<domain> and each of ``ips`` as a
    DNS name: pkg/registry/installer.go@v0.11.0:181-200)."""
    return sf.registry_ca(Flavour.V011, domain, list(ips))


def sealer_htpasswd(username: str, password: str) -> str:
    """v0.11's htpasswd line (no newline): see lab.sealer_files.htpasswd."""
    return sf.htpasswd(Flavour.V011, username, password)


def clusterfile(*, name: str, masters: list[str], nodes: list[str], data_root: str,
                domain: str, port: int, username: str, password: str, ssh: dict[str, str],
                host_ssh: dict[str, dict[str, str]] | None = None, ha: bool = False,
                image: str = CLUSTER_IMAGE) -> str:
    """A v0.11 Cluster document alone, as sealer saves it (see lab.sealer_files)."""
    return sf.clusterfile_text([sf.cluster_document(
        flavour=Flavour.V011_HA if ha else Flavour.V011, name=name, image=image, masters=masters,
        nodes=nodes, ssh=ssh, domain=domain, port=port, username=username, password=password,
        runtime_type="", data_root=data_root, host_ssh=host_ssh)])


# -- host I/O --------------------------------------------------------------------------------------

def _write(lab: Lab, host: str, path: str, text: str, mode: int = 0o644,
           mtime: float | None = None) -> None:
    target = lab.host_path(host, path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    target.chmod(mode)
    if mtime is not None:
        os.utime(target, (mtime, mtime))


def _copy_registry_data(lab: Lab, host: str, rootfs: str, store: Path, image_id: str) -> None:
    """What sealer's distributor copies into `<rootfs>/registry` for one image: its storage tree,
    merged with the earlier runs' (scp_distributor.go@v0.11.0:47-98)."""
    dest = lab.host_path(host, f"{rootfs}/registry")
    dest.mkdir(parents=True, exist_ok=True)
    src = store / image_id / "docker"
    if not src.is_dir():
        raise LabError(f"store {store}: no registry data for image {image_id}")
    shutil.copytree(src, dest / "docker", dirs_exist_ok=True, copy_function=shutil.copy2)


def set_host_alias(lab: Lab, host: str, domain: str, ip: str) -> None:
    """v0.11 CommandSetHostAlias: drop lines holding ' <domain> ', append `<ip> <domain> #mark`
    (utils/shellcommand/hostsfile.go@v0.11.0:23-25)."""
    d = shlex.quote(f" {domain} ")
    lab.run(host, f"if grep {d} /etc/hosts >/dev/null; then sed -i '/ {domain} /d' /etc/hosts; fi; "
                  f"echo {shlex.quote(sf.hosts_line(Flavour.V011, ip, domain))} >> /etc/hosts")


def _add_etc_host_v08(lab: Lab, host: str, line: str) -> None:
    """v0.8 RemoteAddEtcHosts: `cat /etc/hosts |grep '<line>' || echo '<line>' >> /etc/hosts`
    (pkg/runtime/masters.go@v0.8.7:47)."""
    q = shlex.quote(line)
    lab.run(host, f"grep {q} /etc/hosts >/dev/null || echo {q} >> /etc/hosts")


def _private_kubelet_dir(lab: Lab, host: str) -> None:
    """/var/lib/kubelet private to the host (a tmpfs in its mount namespace): the machine's own
    directory must never receive a lab host's files."""
    Path("/var/lib/kubelet").mkdir(parents=True, exist_ok=True)
    lab.run(host, "mountpoint -q /var/lib/kubelet || "
                  "mount -t tmpfs -o mode=0755,size=4m lab-kubelet /var/lib/kubelet")


def _accept_password(lab: Lab, host: str, user: str, password: str) -> None:
    """The host takes ``password`` for ``user`` over SSH, as sealer's hosts do (it tries the key
    and the password: utils/ssh/connect.go@v0.11.0:97-110). The lab keeps root key-only through
    `Lab.allow_password_login`; sealer's usual user is root, so for root the host's private
    sshd_config gets `PermitRootLogin yes` + `PasswordAuthentication yes` here (stdin only)."""
    if user != "root":
        lab.allow_password_login(host, user, password)
        return
    lab.run(host, "chpasswd", input=f"root:{password}\n")
    lab.run(host, "sed -i -e 's/^PermitRootLogin .*/PermitRootLogin yes/' "
                  "-e 's/^PasswordAuthentication no$/PasswordAuthentication yes/' /etc/ssh/sshd_config && "
                  "grep -q '^PermitRootLogin yes$' /etc/ssh/sshd_config")
    name = lab.host(host).name
    lab.stop_sshd(name)
    lab.start_sshd(name)


def _set_containerd_certs(lab: Lab, host: str, basefs: bool) -> None:
    """The host's containerd reads CAs where basefs' config says (`/etc/docker/certs.d/`, basefs
    context/containerd/rootfs/etc/dump-config.toml@main) or where the lab's does
    (`/etc/containerd/certs.d`). Uses rt's lab.runtimes when it exists; restarts containerd only
    when the line changes."""
    try:
        from lab import runtimes  # type: ignore[attr-defined]
        fn = getattr(runtimes, "containerd_basefs" if basefs else "containerd_lab_default", None)
    except ImportError:
        fn = None
    if fn is not None:
        fn(lab, host)
        return
    conf = lab.host_path(host, "/etc/containerd/config.toml")
    text = conf.read_text()
    want, other = ((CONTAINERD_BASEFS_CERTS, CONTAINERD_LAB_CERTS) if basefs
                   else (CONTAINERD_LAB_CERTS, CONTAINERD_BASEFS_CERTS))
    if want in text:
        return
    if other not in text:
        raise LabError(f"{host}: /etc/containerd/config.toml has no CRI config_path line")
    conf.write_text(text.replace(other, want))
    name = lab.host(host).name
    lab.stop_containerd(name)
    lab.start_containerd(name)


def _vip_module():
    try:
        from lab import vip  # type: ignore[attr-defined]
    except ImportError:
        return None
    return vip


# Until lab/vip.py exists: its address (198.19.<instance>.2: inside 198.18.0.0/15, outside every
# instance's /24).
FALLBACK_VIP = f"198.19.{INSTANCE}.2"


def lab_vip() -> str:
    """The lab's registry VIP (lab/vip.py's constant, inside 198.18.0.0/15)."""
    mod = _vip_module()
    if mod is None:
        return FALLBACK_VIP
    for name in ("VIP", "REGISTRY_VIP", "VIP_ADDRESS", "DEFAULT_VIP"):
        value = getattr(mod, name, None)
        if isinstance(value, str):
            return value
    raise LabError("lab/vip.py names no VIP constant (VIP, REGISTRY_VIP, VIP_ADDRESS, DEFAULT_VIP)")


def _docker_module():
    try:
        from lab import docker  # type: ignore[attr-defined]
    except ImportError:
        return None
    return docker


def default_runtimes(lab: Lab, nodes: list[str], masters: list[str]) -> dict[str, str]:
    """First node docker (when lab/docker.py exists), every other host containerd with basefs'
    config (basefs ships docker; its containerd flavour reads `/etc/docker/certs.d/`). sealer's
    registry on masters is the lab's script either way, not a container."""
    out = {m: "containerd-basefs" for m in masters}
    for i, node in enumerate(nodes):
        out[node] = "docker" if i == 0 and _docker_module() is not None else "containerd-basefs"
    return out


def _configmap(cp, name: str, key: str, text: str) -> None:
    """Create or replace ConfigMap kube-system/<name> as sealer's client does (create, on
    AlreadyExists update)."""
    from lab import controlplane
    body = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "kube-system"}, "data": {key: text}}
    status, out = controlplane.request(cp, "POST", "/api/v1/namespaces/kube-system/configmaps", body)
    if status == 409:
        status, out = controlplane.request(
            cp, "PUT", f"/api/v1/namespaces/kube-system/configmaps/{name}", body)
    if status not in (200, 201):
        raise LabError(f"ConfigMap kube-system/{name}: HTTP {status}")


def read_configmap(cp, name: str, key: str) -> str | None:
    from lab import controlplane
    status, out = controlplane.request(cp, "GET", f"/api/v1/namespaces/kube-system/configmaps/{name}")
    if status == 404:
        return None
    if status != 200:
        raise LabError(f"ConfigMap kube-system/{name}: HTTP {status}")
    return json.loads(out).get("data", {}).get(key)


def _delete_configmap(cp, name: str) -> None:
    from lab import controlplane
    controlplane.request(cp, "DELETE", f"/api/v1/namespaces/kube-system/configmaps/{name}")


def _reset(lab: Lab, hosts: list[str], nodes: list[str], rootfs: str, domain: str, port: int,
           cp) -> None:
    """Remove what an earlier sealer state (any flavour) left, so the hosts look fresh."""
    vip = _vip_module()
    names = {domain, SEA_HUB}
    for ip in hosts:
        lab.run(ip, f"if [ -x {rootfs}/scripts/stop-registry.sh ]; then "
                    f"bash {rootfs}/scripts/stop-registry.sh >/dev/null 2>&1 || true; fi", check=False)
        dirs = " ".join(shlex.quote(f"{d}/{n}:{port}") for d in CERTS_DIRS.values() for n in names)
        lab.run(ip, f"rm -rf {dirs} {rootfs}/registry {rootfs}/cache {rootfs}/certs/* "
                    f"{rootfs}/etc/registry_config.yml {rootfs}/etc/registry_htpasswd "
                    f"{rootfs}/etc/registry.yml {SEALER_HOME} {sf.LVSCARE_MANIFEST} "
                    f"/root/.docker/config.json; "
                    f"if mountpoint -q /var/lib/kubelet; then rm -f {sf.KUBELET_AUTH}; fi")
        for n in names:
            lab.run(ip, f"sed -i '/ {n}\\( \\|$\\)/d' /etc/hosts")
        if vip is not None and ip in nodes:
            try:
                vip.remove(lab, ip)
            except Exception:  # noqa: BLE001 - a host that never had a VIP
                pass
    if cp is not None:
        # A test before may have killed and revived master0: its apiserver answers again only
        # once its etcd member is back (a DELETE right after the revive timed out in CI).
        from lab import controlplane
        controlplane.wait_ready(cp)
        _delete_configmap(cp, "sealer-clusterfile")
        _delete_configmap(cp, "sealer-registry")


# -- the runs --------------------------------------------------------------------------------------

@dataclass
class _Run:
    image_name: str
    image_id: str | None          # 64 hex, None when the caller gave no id for it
    extension: sf.ImageExtension


def _runs(history: dict, image_ids: list[str], cluster_image: str) -> list[_Run]:
    """The seed's images as sealer runs: the cluster image, then one `sealer run` per app."""
    ids = [i.removeprefix("sha256:") for i in image_ids]
    runs = [_Run(cluster_image, ids[0] if ids else None, sf.ImageExtension(
        type="kube-installer",
        applications=[sf.App("calico", "shell", ["calico.sh"])],
        labels=dict(sf.BASEFS_LABELS), launch_app_names=["calico"]))]
    for i, app in enumerate(history.get("applications", [])):
        name, version = app["name"], app.get("version", "")
        kind = app.get("type", "")
        apps = []
        if kind == "helm":
            apps.append(sf.App(name, "helm", [name], version,
                               cmds=[app["launch_cmd"]] if app.get("launch_cmd") else []))
        elif kind == "shell":
            apps.append(sf.App(name, "shell", [f"{name}.sh"], version))
        elif kind:
            apps.append(sf.App(name, "kube", [f"{name}.yaml"], version))
        else:
            apps.append(sf.App(name, "", [], version, cmds=[app.get("launch_cmd") or "true"]))
        if i == 0:
            # An app sealer could not type: APPCMDS is then required (kubefile.go@v0.11.0:189);
            # its `&&` shows Go's HTML escaping in the log.
            apps.append(sf.App(f"{name}-post", "", [], version, env={"MODE": "a&b"},
                               cmds=["chmod +x post.bin && ./post.bin"]))
        image_id = ids[i + 1] if i + 1 < len(ids) else app.get("image_id")
        runs.append(_Run(APP_IMAGE.format(name=name, version=version or "latest"),
                         image_id.removeprefix("sha256:") if image_id else None,
                         sf.ImageExtension(type="app-installer", applications=apps,
                                           launch_app_names=[a.name for a in apps])))
    return runs


def make_sealer_state(lab: Lab, *, history: dict, store: Path | None = None,
                      image_ids: list[str] = (), domain: str = SEA_HUB, port: int = 5000,
                      username: str = "sealer", password: str = "sealer-Passw0rd",
                      runtime: str = "docker", ha: bool = False,
                      flavour: Flavour | str | None = None,
                      runtimes: dict[str, str] | None = None,
                      host_ssh: dict[str, dict[str, str]] | None = None,
                      ssh_user: str = "root", ssh_password: str | None = None,
                      ssh_pk: str | None = SEALER_PK, cp=None, drift: str = "passwd",
                      cluster_image: str = CLUSTER_IMAGE,
                      start_registry: bool = True) -> SealerCluster:
    """Leave the lab's hosts as sealer ``flavour`` leaves a cluster (module docstring).

    ``flavour``: `v0.11-ha`, `v0.11` or `v0.8`; None keeps the previous meaning of ``ha``
    (False: `v0.11`). ``history``: the lab's seed (`{type, applications[{name, image_id, type,
    launch_cmd, version}], launch}`): which app images exist and their apps; sealer's own files
    are derived from it. ``store``/``image_ids``: registry data per run (cluster image first).
    ``username``/``password``: the registry login ("" = none: no htpasswd, no auth files).
    ``runtime``: the cluster's container runtime type (sealer has one per cluster: the image label
    `container-runtime-type`, basefs: docker; pkg/cluster-runtime/installer.go@v0.11.0:444-451): it
    decides where sealer writes the CA on every host (its CertsDir) and the auth file.
    ``runtimes``: what each host runs, ip -> docker | containerd | containerd-basefs (default
    `default_runtimes`); basefs' containerd reads `/etc/docker/certs.d/`, so with
    ``runtime="containerd"`` its nodes do not find sealer's CA (sealer writes
    `/etc/containerd/certs.d`), as on a real containerd cluster built from basefs. ``ssh_password``: the Clusterfile's passwd
    (default `SSH_PASSWORD`); the hosts accept it (and the key). ``ssh_pk``: None records no pk.
    ``cp``: the lab's control plane (lab.controlplane.up): v0.11 ConfigMaps are written through it;
    without it there are none. ``drift``: "passwd" (the user rotated spec.ssh.passwd in
    sealer-clusterfile after the last save; only with ``cp``) or "none".
    """
    flavour = Flavour.parse(flavour) if flavour is not None else (
        Flavour.V011_HA if ha else Flavour.V011)
    if drift not in ("passwd", "none"):
        raise ValueError(f"drift: {drift!r} is not one of passwd, none")
    inv = lab.inventory()
    masters = [h["ip"] for h in inv["hosts"] if h["role"] == "master"]
    nodes = [h["ip"] for h in inv["hosts"] if h["role"] == "node"]
    hosts = [*masters, *nodes]
    master0 = masters[0]
    name, data_root = inv["cluster"], inv["data_root"]
    rootfs = f"{data_root}/{name}/rootfs"
    if runtime not in ("docker", "containerd"):
        raise ValueError(f"runtime: {runtime!r} is not one of docker, containerd")
    runtimes = dict(runtimes or default_runtimes(lab, nodes, masters))
    for ip in hosts:
        runtimes.setdefault(ip, "containerd")
        if runtimes[ip] not in RUNTIMES:
            raise ValueError(f"runtimes[{ip}]: {runtimes[ip]!r} is not one of {', '.join(RUNTIMES)}")
    login = bool(username and password)
    ssh_password = ssh_password if ssh_password is not None else SSH_PASSWORD
    vip = lab_vip() if flavour.ha else None
    registry_hosts = masters if flavour.ha else [master0]
    _reset(lab, hosts, nodes, rootfs, domain, port, cp)

    cert, key = sf.registry_ca(flavour, domain)
    htpasswd = sf.htpasswd(flavour, username, password) if login else None
    # v0.8 keeps no record of runs (no log, no flags): the data of every image is merged alike.
    runs = _runs(history, list(image_ids), cluster_image)
    start = time.time() - RUN_INTERVAL_S * (len(runs) + 1)
    run_times = [start + RUN_INTERVAL_S * i for i in range(len(runs))]

    # -- SSH: users, passwords, the key sealer uses ---------------------------------------------
    for ip in hosts:
        if ssh_user != "root":
            lab.add_sudo_user(ip, ssh_user)
    ssh: dict[str, Any] = {"passwd": ssh_password, "port": "22", "user": ssh_user}
    if ssh_pk:
        ssh["pk"] = ssh_pk
        _write(lab, master0, ssh_pk, lab.key_path.read_text(), 0o600)
    accepted = ssh_password
    if flavour.v011 and cp is not None and drift == "passwd":
        accepted = ssh_password + "-rotated"
    for ip in hosts:
        _accept_password(lab, ip, ssh_user, accepted)

    # -- runtimes --------------------------------------------------------------------------------
    docker = _docker_module()
    docker_hosts, running_docker = [], False
    for ip in hosts:
        rt = runtimes[ip]
        if rt == "docker":
            if docker is None:
                raise LabError(f"runtimes[{ip}] = docker needs lab/docker.py")
            docker_hosts.append(ip)
            running_docker = running_docker or docker.running(lab, ip)
        else:
            _set_containerd_certs(lab, ip, basefs=(rt == "containerd-basefs"))

    # -- rootfs, registry data, flags ------------------------------------------------------------
    registry_settings = None
    for ip in hosts:
        if flavour.v011:
            _write(lab, ip, f"{rootfs}/etc/registry_config.yml", BASEFS_REGISTRY_CONFIG)
            for run, t in zip(runs, run_times):
                if run.image_id:
                    _write(lab, ip, f"{rootfs}/cache/image/{run.image_id}", "", 0o644, mtime=t)
        else:
            registry_settings = sf.registry_settings_v08(ip=None, domain=domain, port=port,
                                                         username=username, password=password)
            _write(lab, ip, f"{rootfs}/etc/registry.yml", registry_settings)
    cache_flags: dict[str, list[str]] = {}
    for ip in registry_hosts:
        _write(lab, ip, f"{rootfs}/certs/{domain}.crt", cert)
        _write(lab, ip, f"{rootfs}/certs/{domain}.key", key, 0o600)
        if htpasswd is not None:
            _write(lab, ip, f"{rootfs}/etc/registry_htpasswd", htpasswd)
        lab.host_path(ip, f"{rootfs}/registry").mkdir(parents=True, exist_ok=True)
        if store is not None:
            ids = [r.image_id for r in runs if r.image_id] if flavour.v011 else \
                [i.removeprefix("sha256:") for i in image_ids]
            for image_id in dict.fromkeys(ids):
                _copy_registry_data(lab, ip, rootfs, Path(store), image_id)
        if flavour.v011:
            cache_flags[ip] = []
            for run, t in zip(runs, run_times):
                if run.image_id:
                    _write(lab, ip, f"{rootfs}/cache/registry/{run.image_id}", "", 0o644, mtime=t)
                    cache_flags[ip].append(run.image_id)

    # -- trust, hosts lines, auth, lvscare -------------------------------------------------------
    endpoints = [f"{domain}:{port}"]
    if not flavour.v011 and domain != SEA_HUB:
        endpoints.append(f"{SEA_HUB}:{port}")
    auth = sf.docker_auth_config(endpoints, username, password) if login else None
    trust_paths: dict[str, list[str]] = {}
    lvscare = None
    for ip in hosts:
        if flavour.v011:
            certs_dir = CERTS_DIRS[runtime]
            trust_paths[ip] = [f"{certs_dir}/{domain}:{port}/{domain}.crt"]
        else:
            trust_paths[ip] = list(dict.fromkeys(
                f"{CERTS_DIRS['docker']}/{n}:{port}/{domain}.crt" for n in (domain, SEA_HUB)))
        for path in trust_paths[ip]:
            _write(lab, ip, path, cert)
        if flavour is Flavour.V011_HA:
            set_host_alias(lab, ip, domain, ip if ip in masters else vip)
        elif flavour is Flavour.V011:
            set_host_alias(lab, ip, domain, master0)
        else:
            _add_etc_host_v08(lab, ip, sf.hosts_line(flavour, master0, domain))
            if domain != SEA_HUB:
                _add_etc_host_v08(lab, ip, sf.hosts_line(flavour, master0, SEA_HUB))
        if auth is not None:
            _private_kubelet_dir(lab, ip)
            _write(lab, ip, sf.KUBELET_AUTH, auth, 0o600)
            if runtime == "docker" or not flavour.v011:
                _write(lab, ip, sf.DOCKER_AUTH, auth, 0o600)
        if flavour.ha and ip in nodes:
            lvscare = sf.lvscare_manifest(vip=vip, port=port, masters=masters, domain=domain)
            _write(lab, ip, sf.LVSCARE_MANIFEST, lvscare, 0o644)

    # dockerd resolves through Go's resolver, which caches /etc/hosts for 5 s (net/hosts.go
    # cacheMaxAge): one started now reads the new lines; one that ran before may answer from the
    # old file for up to 5 s, so wait that out once.
    hosts_written = time.monotonic()
    for ip in docker_hosts:
        docker.start(lab, ip)
    if running_docker:
        time.sleep(max(0.0, 5.1 - (time.monotonic() - hosts_written)))

    # -- the registries --------------------------------------------------------------------------
    if start_registry:
        launch = "bash init-registry.sh" if flavour.v011 else "./init-registry.sh"
        for ip in registry_hosts:
            lab.run(ip, f"cd {rootfs}/scripts && {launch} {port} {rootfs}/registry {domain}",
                    timeout=60)
    vipmod = _vip_module()
    if flavour.ha and vipmod is not None:
        for ip in nodes:
            vipmod.ensure(lab, ip, vip, port, masters)
    registry_config = None
    if flavour.v011:
        registry_config = lab.host_path(master0, f"{rootfs}/etc/registry_config.yml").read_text()

    # -- sealer's records on master0 -------------------------------------------------------------
    user_env = [f"{sf.ENV_VIP}={vip}"] if flavour.ha else []
    cluster = sf.cluster_document(flavour=flavour, name=name, image=cluster_image, masters=masters,
                                  nodes=nodes, ssh=ssh, domain=domain, port=port,
                                  username=username if login else "",
                                  password=password if login else "",
                                  runtime_type="" if runtime == "docker" else runtime,
                                  user_env=user_env, data_root=data_root, host_ssh=host_ssh)
    configmap_text = registry_text = None
    log = ""
    if flavour.v011:
        docs = [cluster]
        if len(runs) > 1:
            docs.append(sf.application_document())
        text = sf.clusterfile_text(docs)
        path = f"{SEALER_HOME}/Clusterfile"
        _write(lab, master0, path, text, 0o644, mtime=run_times[-1])
        log = sf.application_log([r.extension for r in runs])
        _write(lab, master0, f"{SEALER_HOME}/application.json", log, 0o600, mtime=run_times[-1])
        registry_text = sf.registry_info(domain=domain, port=port, username=username,
                                         password=password, ha=flavour.ha,
                                         deploy_hosts=registry_hosts, vip=vip or "")
        if cp is not None:
            edited = copy.deepcopy(docs)
            if drift == "passwd":
                edited[0]["spec"]["ssh"]["passwd"] = accepted
            configmap_text = sf.clusterfile_text(edited)
            _configmap(cp, "sealer-clusterfile", "Clusterfile", configmap_text)
            _configmap(cp, "sealer-registry", "registry", registry_text)
    else:
        cluster["spec"]["ssh"]["passwd"] = encrypt_passwd(ssh_password)
        cluster["spec"]["ssh"]["encrypted"] = True
        text = sf.clusterfile_text([cluster])
        path = f"{SEALER_HOME}/{name}/Clusterfile"
        _write(lab, master0, path, text, 0o644)

    return SealerCluster(
        flavour=flavour, name=name, master0=master0, masters=masters, nodes=nodes, rootfs=rootfs,
        domain=domain, port=port, username=username, password=password, cert=cert, key=key,
        htpasswd=htpasswd, registry_config=registry_config, clusterfile=text,
        clusterfile_path=path, clusterfile_configmap=configmap_text,
        registry_configmap=registry_text if cp is not None else None, application_log=log,
        image_ids=[r.image_id for r in runs if r.image_id] if flavour.v011 else
        [i.removeprefix("sha256:") for i in image_ids],
        cluster_image=cluster_image,
        app_images=[r.image_name for r in runs[1:]] if flavour.v011 else [],
        runtime=runtime, runtimes=runtimes, trust_files={ip: p[0] for ip, p in trust_paths.items()},
        trust_paths=trust_paths, registry_hosts=list(registry_hosts), vip=vip,
        ssh_user=ssh_user, ssh_password=accepted, ssh_pk=ssh_pk,
        registry_settings=registry_settings, history=history, cache_flags=cache_flags,
        lvscare_manifest=lvscare)


def parse_clusterfile(text: str) -> list[dict]:
    """The documents of a Clusterfile, as sealer's YAML-to-JSON decoder splits them."""
    return [d for d in yaml.safe_load_all(text) if d]


PULL_SCRIPT = Path(__file__).resolve().parent / "sealer_pull.sh"


def containerd_certs_dir(lab: Lab, host: str) -> str:
    """The CRI `config_path` of the host's containerd (rt's lab.runtimes when present)."""
    try:
        from lab import runtimes  # type: ignore[attr-defined]
        found = runtimes.containerd_config_path(lab, host)
    except (ImportError, AttributeError):
        import tomllib
        conf = tomllib.loads(lab.host_path(host, "/etc/containerd/config.toml").read_text())
        found = (conf.get("plugins", {}).get("io.containerd.grpc.v1.cri", {})
                 .get("registry", {}).get("config_path"))
    if not found:
        raise LabError(f"{host}: its containerd names no CRI config_path")
    return found


def pull(lab: Lab, state: SealerCluster, host: str, repo_tag: str, timeout: int = 120):
    """A real pull of ``<domain>:<port>/<repo_tag>`` on ``host`` by the engine it runs, with the
    cluster's login (on stdin), trusting only what that engine reads: docker through
    lab/docker.py (`/etc/docker/certs.d`), containerd through its CRI `config_path`
    (lab/sealer_pull.sh). Returns lab.pull.Pull."""
    from lab.pull import Pull
    engine = state.runtimes.get(host, "containerd")
    user = state.username if state.htpasswd is not None else ""
    secret = state.password if user else ""
    if engine == "docker":
        docker = _docker_module()
        if docker is None:
            raise LabError("lab/docker.py is not there")
        return docker.pull(lab, host, f"{state.domain}:{state.port}/{repo_tag}", user, secret,
                           timeout=timeout)
    began = time.monotonic()
    q = shlex.quote
    args = " ".join(q(a) for a in (containerd_certs_dir(lab, host), state.domain, str(state.port),
                                   repo_tag, user, "lab-sealer-pull", str(int(timeout))))
    done = lab.run(host, f"bash -c {q(PULL_SCRIPT.read_text())} sealer-pull {args}",
                   input=secret + "\n", check=False, timeout=timeout + 60)
    digest = done.stdout.strip() if done.returncode == 0 else ""
    return Pull(done.returncode == 0 and digest.startswith("sha256:"), digest, done.stderr,
                time.monotonic() - began)


# -- python -m lab sealer ----------------------------------------------------------------------------

SECRET_FIELDS = ("password", "cert", "key", "htpasswd", "ssh_password", "clusterfile",
                 "clusterfile_configmap", "registry_configmap", "registry_settings",
                 "application_log", "history", "lvscare_manifest")


def summary(state: SealerCluster) -> dict:
    """What `python -m lab sealer` prints: where things are, never a secret or a file's text."""
    out = {k: v for k, v in vars(state).items() if k not in SECRET_FIELDS}
    out["flavour"] = state.flavour.value
    out["configmaps"] = state.clusterfile_configmap is not None
    out["login"] = state.htpasswd is not None
    return out


def add_arguments(p) -> None:
    p.add_argument("--flavour", default=Flavour.V011_HA.value,
                   choices=[f.value for f in Flavour],
                   help="what sealer left: v0.11-ha (sealer's default), v0.11 (ha: false), v0.8")
    p.add_argument("--store", type=Path, help="image store (default <state>/images)")
    p.add_argument("--no-login", action="store_true", help="no registry username/password")
    p.add_argument("--runtime", default="docker", choices=["docker", "containerd"],
                   help="the cluster's container runtime type (where sealer writes the CA)")
    p.add_argument("--ssh-user", default="root")
    p.add_argument("--control-plane", action="store_true",
                   help="start the control plane if it is not up (for the v0.11 ConfigMaps); "
                        "without it the ConfigMaps are written only when it already serves")


def main(a, lab: Lab) -> dict:
    """`python -m lab sealer`: the lab's images (from `python -m lab images`) run by sealer."""
    from lab import controlplane
    summary_file = lab.state / "images.json"
    history, ids, store = {}, [], None
    if summary_file.exists():
        images = json.loads(summary_file.read_text())
        history = json.loads(Path(images["history"]).read_text()) if images.get("history") else {}
        ids = [images["cluster_image_id"], *(i["image_id"] for i in images.get("apps", []))]
        store = Path(a.store or images["store"])
    cp = None
    if a.control_plane or controlplane.status(lab)["ready"]:
        try:
            cp = controlplane.up(lab)
        except controlplane.ControlPlaneError as e:
            raise LabError(f"control plane: {e}") from None
    kwargs = {"username": "", "password": ""} if a.no_login else {}
    state = make_sealer_state(lab, flavour=a.flavour, history=history, store=store,
                              image_ids=ids, runtime=a.runtime, ssh_user=a.ssh_user, cp=cp,
                              **kwargs)
    return summary(state)
