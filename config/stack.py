"""The whole stack config: `StackConfig`, what components receive about the cluster.

Owns the project's name (`PROJECT`, the namespace of every config key), the fields that must be
Pulumi secrets (`SECRET_PATHS`), the top-level keys (master0, down_hosts, distribution and one
section each) and the rules that relate hosts across sections (`cross_problems`: master0 is a live
master, down hosts and deploy hosts are cluster hosts, ...), which the model also runs on a partly
invalid config so everything is reported in one pass. The derived views components use (hosts,
live_hosts, deploy_hosts, rootfs, history, image_ids) are here too.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Iterable, Optional
from urllib.parse import urlsplit

from pydantic import Field, PrivateAttr, model_validator

from config.apps import AppsConfig, BootHistory
from config.base import ConfigModel, duplicates, raise_problems, section, valid_ip, valid_ips
from config.cluster import ClusterConfig
from config.kubernetes import KubernetesConfig
from config.registry import RegistryConfig
from config.scalars import HostIP

PROJECT = "sealer-registry"

# Dotted paths of every field that must be a Pulumi secret in the stack file.
SECRET_PATHS: tuple[str, ...] = (
    "cluster.ssh.private_key",
    "cluster.ssh.password",
    "registry.password",
    "registry.tls.ca_key",
    "registry.tls.key",
    "registry.htpasswd",
    "kubernetes.kubeconfig",
    "apps.image_store.password",
)


# And one per host with its own SSH password: `cluster.ssh.hosts.<ip>.password`.
HOST_SECRET = "password"
_HOST_SECRET_PATH = re.compile(r"cluster\.ssh\.hosts\.\S+\.password")


def is_secret_path(path: str) -> bool:
    """A dotted path of a field that must be a Pulumi secret (`SECRET_PATHS` or a host's
    `cluster.ssh.hosts.<ip>.password`)."""
    return path in SECRET_PATHS or bool(_HOST_SECRET_PATH.fullmatch(path))


def host_secrets(values: Any) -> dict[str, Any]:
    """``{"cluster.ssh.hosts.<ip>.password": value}`` of raw config values."""
    cluster = values.get("cluster") if isinstance(values, dict) else None
    ssh = cluster.get("ssh") if isinstance(cluster, dict) else None
    hosts = ssh.get("hosts") if isinstance(ssh, dict) else None
    if not isinstance(hosts, dict):
        return {}
    return {f"cluster.ssh.hosts.{ip}.{HOST_SECRET}": h[HOST_SECRET] for ip, h in hosts.items()
            if isinstance(h, dict) and h.get(HOST_SECRET) is not None}


class Distribution(StrEnum):
    PRE = "pre"
    POST = "post"


class StackConfig(ConfigModel):
    """The validated stack config; the only thing components receive about the cluster."""

    master0: HostIP
    down_hosts: list[HostIP] = Field(default_factory=list)
    distribution: Distribution
    cluster: ClusterConfig
    registry: RegistryConfig
    apps: AppsConfig
    kubernetes: KubernetesConfig

    _secure_paths: frozenset[str] = PrivateAttr(default=frozenset())

    @model_validator(mode="after")
    def _check(self) -> "StackConfig":
        raise_problems(
            cross_problems(
                master0=self.master0,
                down_hosts=self.down_hosts,
                masters=self.cluster.masters,
                nodes=self.cluster.nodes,
                deploy_hosts=self.registry.local_registry.deploy_hosts,
                host_keys=list(self.cluster.ssh.host_keys),
                ssh_hosts=list(self.cluster.ssh.hosts),
            )
            + endpoint_problems(self.kubernetes.endpoints, self.down_hosts)
            + standby_problems(self.distribution, self.registry.local_registry.standby)
            + ha_problems(ha=self.registry.local_registry.ha,
                          standby=self.registry.local_registry.standby,
                          deploy_hosts=self.registry.local_registry.deploy_hosts,
                          masters=self.cluster.masters,
                          image_store=self.apps.image_store is not None)
            + warm_cert_problems(self.registry.local_registry.standby,
                                 self.registry.tls.cert if self.registry.tls else None,
                                 self.deploy_hosts)
            + entry_problems(self.registry.local_registry.node_entry, self.registry.port,
                             [*self.cluster.masters, *self.cluster.nodes])
        )
        if self.kubernetes.cluster_identifier is None:
            self.kubernetes.cluster_identifier = self.cluster.name
        return self

    @classmethod
    def _problems_despite_errors(cls, data: dict) -> list[tuple[str, str]]:
        master0 = valid_ip(data.get("master0"))
        cluster, registry = section(data, "cluster"), section(data, "registry")
        masters, nodes = valid_ips(cluster.get("masters")), valid_ips(cluster.get("nodes", []))
        if masters is None or nodes is None:
            masters, nodes = [], []
        deploy = section(registry, "local_registry").get("deploy_hosts")
        host_keys = section(section(cluster, "ssh"), "host_keys")
        ssh_hosts = section(section(cluster, "ssh"), "hosts")
        return cross_problems(
            master0=master0,
            down_hosts=valid_ips(data.get("down_hosts", [])) or [],
            masters=masters,
            nodes=nodes,
            deploy_hosts=valid_ips(deploy) if deploy is not None else None,
            host_keys=[ip for k in host_keys for ip in (valid_ips([k]) or [])],
            ssh_hosts=[ip for k in ssh_hosts for ip in (valid_ips([k]) or [])],
        ) + standby_problems(data.get("distribution"), section(registry, "local_registry").get("standby")) + (
            ha_problems(ha=True, standby=section(registry, "local_registry").get("standby"),
                        deploy_hosts=valid_ips(deploy) if deploy is not None else None,
                        masters=masters,
                        image_store=section(data, "apps").get("image_store") is not None)
            if section(registry, "local_registry").get("ha") is True else [])

    # -- derived views the program uses --------------------------------------------------------
    @property
    def hosts(self) -> list[str]:
        """Every cluster host, masters first."""
        return self.cluster.hosts

    @property
    def live_hosts(self) -> list[str]:
        return [h for h in self.hosts if h not in self.down_hosts]

    @property
    def deploy_hosts(self) -> list[str]:
        """Hosts that hold the registry files and may run it (default: master0 only; with
        ``registry.local_registry.ha`` every master, as sealer deploys its HA registry)."""
        local = self.registry.local_registry
        if local.deploy_hosts:
            return list(local.deploy_hosts)
        return list(self.cluster.masters) if local.ha else [self.master0]

    @property
    def ha(self) -> bool:
        """sealer's HA registry layout (registry.local_registry.ha)."""
        return self.registry.local_registry.ha

    @property
    def live_deploy_hosts(self) -> list[str]:
        return [h for h in self.deploy_hosts if h not in self.down_hosts]

    @property
    def rootfs(self) -> str:
        return self.cluster.rootfs

    @property
    def history(self) -> BootHistory:
        return self.apps.boot_history

    @property
    def image_ids(self) -> list[str]:
        """Distinct images whose data the program copies and verifies: the cluster image first,
        then the apps'. None without an image store: the deploy hosts serve what they hold."""
        return self.apps.image_ids

    @property
    def secure_paths(self) -> frozenset[str]:
        """Dotted paths (offline) or top-level keys (run time) that were Pulumi secrets."""
        return self._secure_paths


def endpoint_problems(endpoints: Optional[list[str]], down_hosts: Iterable[str]) -> list[tuple[str, str]]:
    """Configured apiserver endpoints that all sit on down hosts leave nothing to write the
    records through: refused here, offline, instead of an `up` that fails at the records.
    (Without `kubernetes.endpoints` master0 is a candidate, and master0 is never down.)"""
    if not endpoints:
        return []
    down = set(down_hosts)
    if all((urlsplit(url).hostname or "") in down for url in endpoints):
        return [("kubernetes.endpoints", f"no apiserver left: the host of every endpoint "
                 f"({', '.join(endpoints)}) is in down_hosts; list a live apiserver")]
    return []


def standby_problems(distribution: object, standby: object) -> list[tuple[str, str]]:
    """A warm standby serves its own replica of the data: only `pre` puts one on every deploy
    host (in `post` the other deploy hosts hold nothing until a recovery copies it)."""
    if str(standby) == "warm" and str(distribution) == "post":
        return [("registry.local_registry.standby",
                 "warm needs distribution: pre (got distribution: post, where only master0 holds "
                 "the registry data and a warm standby would serve nothing)")]
    return []


def ha_problems(*, ha: bool, standby: object, deploy_hosts: Optional[list[str]],
                masters: list[str], image_store: bool) -> list[tuple[str, str]]:
    """sealer's HA layout (pkg/registry/local.go@v0.11.0:148-237) runs a read-write registry on
    every master and puts nodes behind lvscare's VIP: no warm standby (there is no read-only
    replica to fall back on, every registry takes pushes), registries on masters only (sealer's
    VIP's real servers are the masters), and no image store yet (each master serves sealer's own
    data; filling or copying it between masters comes with the HA data issue)."""
    if not ha:
        return []
    problems: list[tuple[str, str]] = []
    if str(standby) == "warm":
        problems.append(("registry.local_registry.standby",
                         "warm cannot be combined with registry.local_registry.ha: true (got "
                         "standby: warm, ha: true): in sealer's HA layout every master serves "
                         "read-write and nodes pull through lvscare's VIP; use standby: cold, or "
                         "ha: false for master0 plus read-only standbys"))
    if deploy_hosts is not None and masters:
        for i, ip in enumerate(deploy_hosts):
            if ip not in masters:
                problems.append((f"registry.local_registry.deploy_hosts[{i}]",
                                 f"{ip} is not a master: with ha: true a registry runs on masters "
                                 f"only, as sealer's HA layout does (masters: {', '.join(masters)})"))
    if image_store:
        problems.append(("apps.image_store",
                         "is not supported with registry.local_registry.ha: true yet: every master "
                         "serves its own registry data (sealer's), which the program neither fills "
                         "nor copies; remove apps.image_store (and apps.cluster_image_id) or set "
                         "ha: false"))
    return problems


def entry_problems(entry, port: int, hosts: list[str]) -> list[tuple[str, str]]:
    """The node entry point's address is held by every node's ``lo``: a cluster host's own IP
    there would capture that host's traffic; its stats page must not take the registry's port."""
    if entry is None:
        return []
    problems = []
    if entry.address in hosts:
        problems.append(("registry.local_registry.node_entry.address",
                         f"{entry.address} is a cluster host; give an address no host holds (each "
                         f"node puts it on its lo), such as 10.103.97.2"))
    if entry.stats_port == port:
        problems.append(("registry.local_registry.node_entry.stats_port",
                         f"{entry.stats_port} is the registry's port (registry.port: {port})"))
    return problems


def warm_cert_problems(standby: object, cert: Optional[str],
                       deploy_hosts: list[str]) -> list[tuple[str, str]]:
    """A warm standby is a mirror nodes reach as ``https://<ip>:<port>``: TLS verifies the IP
    against the certificate's IP SANs (Go and containerd do not match an IP written as a DNS SAN,
    which is how sealer writes them). The program's own leaf names every deploy host; a brought
    ``registry.tls.cert`` must too. Every deploy host, not only today's standbys: a recovery
    makes the old master0 a standby."""
    if str(standby) != "warm" or not cert:
        return []
    from material import pki

    try:
        sans = pki.leaf_sans(cert)
    except ValueError:
        return []  # reported by the registry section
    missing = [ip for ip in deploy_hosts if ip not in sans["ip"]]
    if not missing:
        return []
    names = ", ".join([f"DNS:{d}" for d in sans["dns"]] + [f"IP:{a}" for a in sans["ip"]]) or "none"
    return [("registry.tls.cert",
             f"standby: warm serves the replicas by IP, and this certificate has no IP SAN for "
             f"{', '.join(missing)} (its SANs: {names}); bring one that names every deploy host "
             f"as an IP SAN, give registry.tls.ca_cert and ca_key instead (the program then "
             f"issues a leaf that does), or use standby: cold")]


def cross_problems(
    *,
    master0: Optional[str],
    down_hosts: Iterable[str],
    masters: list[str],
    nodes: list[str],
    deploy_hosts: Optional[list[str]],
    host_keys: Iterable[str] = (),
    ssh_hosts: Iterable[str] = (),
) -> list[tuple[str, str]]:
    """Rules that relate hosts across sections; inputs are already-valid (normalised) IPs.

    Called by `StackConfig` and, on a partly invalid config, by its `_problems_despite_errors`
    with whatever parsed.
    """
    problems: list[tuple[str, str]] = []
    hosts = [*masters, *nodes]
    down = list(down_hosts)
    listing = ", ".join(hosts)
    if master0 is not None and masters and master0 not in masters:
        problems.append(("master0", f"{master0} is not a master (masters: {', '.join(masters)})"))
    if master0 is not None and master0 in down:
        problems.append(("master0", f"{master0} is listed in down_hosts; choose a live master as master0"))
    if hosts:
        for i, ip in enumerate(down):
            if ip not in hosts:
                problems.append((f"down_hosts[{i}]", f"{ip} is not a cluster host (hosts: {listing})"))
    problems += duplicates(down, "down_hosts")
    if deploy_hosts is not None:
        if hosts:
            for i, ip in enumerate(deploy_hosts):
                if ip not in hosts:
                    problems.append((f"registry.local_registry.deploy_hosts[{i}]", f"{ip} is not a cluster host (hosts: {listing})"))
        if master0 is not None and deploy_hosts and master0 not in deploy_hosts:
            problems.append(("registry.local_registry.deploy_hosts", f"master0 {master0} is not a deploy host (deploy_hosts: {', '.join(deploy_hosts)})"))
    if hosts:
        for ip in host_keys:
            if ip not in hosts:
                problems.append((f"cluster.ssh.host_keys[{ip}]", f"{ip} is not a cluster host (hosts: {listing})"))
        for ip in ssh_hosts:
            if ip not in hosts:
                problems.append((f"cluster.ssh.hosts[{ip}]", f"{ip} is not a cluster host (hosts: {listing})"))
    return problems
