"""Who does what in the cluster, decided once from the validated stack config.

For every cluster host: its place in the cluster (master0, master, node), its registry role
(launch on master0, standby on the other deploy hosts, none elsewhere), whether it holds the
registry data and which images, whether it is down, and the names of the steps the program declares
for it. The components name their resources from here, the CLI reads a preview's step names back
with ``parse_step``, the status judges hosts by the same roles, and the bench checks plans with it.

No Pulumi here: the plans of two configs (say two values of ``master0``) compare in a unit test.

Resource names are part of the stack's state (a URN is type + name + parent): renaming a step
makes the engine replace it, so the names below never change.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from config import StackConfig

# The component that holds everything (`ClusterRegistry`) and its non-host children.
ROOT = "sealer-registry"
RECORDS = "records"                         # component of the in-cluster records
K8S_PROVIDER = "k8s"                        # the records' kubernetes provider
REGISTRY_CONFIG = "sealer-registry-config"  # ConfigMap kube-system/sealer-registry
REGISTRY_SECRET = "sealer-registry-secret"  # Secret kube-system/sealer-registry
APPS = "sealer-apps"                        # ConfigMap kube-system/sealer-apps
VERIFY = "registry-verify"                  # pulls every image through the domain from one host
RECORD_STEPS = (REGISTRY_CONFIG, REGISTRY_SECRET, APPS)
# The first phase of a recovery in two (cli/change.py): the hosts whose node-side steps the program
# does not declare, comma-separated. Only the CLI sets it, together with `up --exclude` of those
# steps' URNs, which keeps them in the state as they are (the engine drops no excluded resource).
FENCE_LATER_ENV = "SEALER_REGISTRY_FENCE_LATER"
# Resource types, for URNs the CLI names without running the program (``HostStep.urn``).
ROOT_TYPE = "sealer:registry:ClusterRegistry"
COMMAND_TYPE = "command:remote:Command"
COPY_TYPE = "command:remote:CopyToRemote"


class Place(StrEnum):
    """Where a host sits in the cluster."""

    MASTER0 = "master0"
    MASTER = "master"
    NODE = "node"


class RegistryRole(StrEnum):
    LAUNCH = "launch"    # master0 (with ha: every deploy host, each read-write on its own data):
    #                      the registry runs here
    STANDBY = "standby"  # any other deploy host: data and files ready, registry stopped (cold)
    #                      or serving its replica read-only (warm)
    NONE = "none"        # not a deploy host: a registry client only


class HostStep(StrEnum):
    """A per-host step; its resource name is ``<value>-<ip>`` (``HostStep.NODE.of(ip)``)."""

    DEPLOY = "deploy"                      # component: the deploy host's steps below
    ROOTFS = "rootfs"                      # registry config, certificate, htpasswd on the host
    DATA = "data"                          # registry data: master0 keeps/stamps or fills its own, replicas
    #                                        pull it; HA: each master pulls the others' (the union)
    LAUNCH = "registry-launch"             # the registry runs (master0)
    STANDBY = "registry-standby"           # the registry is kept stopped (other deploy hosts)
    NODE = "node"                          # CA trust and the domain's hosts entry
    PAYLOAD = "payload"                    # the node step's script and CA, staged on the host
    HAPROXY = "haproxy-bundle"             # node_entry's HAProxy bundle copied to the node

    @classmethod
    def node_side(cls) -> tuple[HostStep, ...]:
        """The steps that point a host at the registry (a recovery's fence phase may run them)."""
        return (cls.PAYLOAD, cls.NODE, cls.HAPROXY)

    def of(self, ip: str) -> str:
        return f"{self.value}-{ip}"

    def urn(self, stack: str, project: str, ip: str) -> str:
        """The step's URN for a host (node-side steps only: children of the root component,
        components/cluster_registry.py and cluster_node.py)."""
        kind = {HostStep.NODE: COMMAND_TYPE, HostStep.PAYLOAD: COPY_TYPE,
                HostStep.HAPROXY: COPY_TYPE}.get(self)
        if kind is None:
            raise ValueError(f"{self.value}: not a node-side step")
        return f"urn:pulumi:{stack}::{project}::{ROOT_TYPE}${kind}::{self.of(ip)}"


def parse_step(name: str) -> tuple[HostStep, str] | None:
    """``(HostStep.NODE, '198.18.0.12')`` for ``node-198.18.0.12``; None for any other name."""
    for step in HostStep:
        prefix = f"{step.value}-"
        if name.startswith(prefix):
            try:
                return step, str(ipaddress.ip_address(name[len(prefix):]))
            except ValueError:
                return None
    return None


def image_hex(image_id: str) -> str:
    """The image store's directory name of an image id (``sha256:<hex>`` -> ``<hex>``)."""
    return image_id.removeprefix("sha256:")


@dataclass(frozen=True)
class HostPlan:
    ip: str
    place: Place
    role: RegistryRole
    down: bool                 # listed in down_hosts: nothing is declared on it, never dialled
    holds_data: bool           # the program keeps the registry data here (pre: every deploy host)
    images: tuple[str, ...]    # image-store ids of that data, the cluster image first (empty:
                               # no image store; the data is the cluster's own)
    # A warm standby: its registry serves its replica read-only (standby role, warm, pre mode).
    read_only: bool = False
    # sealer's HA layout (registry.local_registry.ha): see Topology.build.
    ha: bool = False

    @property
    def copies_data(self) -> bool:
        """The program has a data step here: every deploy host holding data. In HA each master
        pulls what the other live masters hold and it lacks (``Topology.data_sources``), so every
        master's registry serves the union of their data."""
        return self.holds_data

    def hosts_entry(self, master0: str) -> str | None:
        """The address this host's hosts line maps the registry domain to; None: the program
        leaves /etc/hosts alone (HA: masters map it to themselves, nodes to lvscare's VIP, both
        sealer's)."""
        return None if self.ha else master0

    @property
    def deploys(self) -> bool:
        """A deploy host: it holds the registry files (and launches or keeps the registry)."""
        return self.role is not RegistryRole.NONE

    @property
    def registry_step(self) -> str | None:
        if self.role is RegistryRole.LAUNCH:
            return HostStep.LAUNCH.of(self.ip)
        if self.role is RegistryRole.STANDBY:
            return HostStep.STANDBY.of(self.ip)
        return None

    def steps(self) -> list[str]:
        """Names of the resources the program declares for this host (none when it is down)."""
        if self.down:
            return []
        names = [HostStep.PAYLOAD.of(self.ip), HostStep.NODE.of(self.ip)]
        if self.deploys:
            names += [HostStep.DEPLOY.of(self.ip), HostStep.ROOTFS.of(self.ip)]
            if self.copies_data:
                names.append(HostStep.DATA.of(self.ip))
            names.append(self.registry_step)
        return names


@dataclass(frozen=True)
class Topology:
    master0: str
    distribution: str          # "pre": every deploy host holds the data; "post": master0 only
    hosts: tuple[HostPlan, ...]  # every cluster host in config order (masters first)
    deploy_hosts: tuple[str, ...]  # as configured (down ones included)
    verifier: str              # the live host that verifies: a node other than master0 if any
    standby: str = "cold"      # registry.local_registry.standby: cold | warm
    ha: bool = False           # registry.local_registry.ha: sealer's HA layout

    @classmethod
    def of(cls, config: StackConfig) -> Topology:
        """The plan of a validated stack config."""
        return cls.build(master0=config.master0, masters=config.cluster.masters,
                         nodes=config.cluster.nodes, deploy_hosts=config.deploy_hosts,
                         down_hosts=config.down_hosts, distribution=str(config.distribution),
                         image_ids=config.image_ids,
                         standby=str(config.registry.local_registry.standby),
                         ha=config.registry.local_registry.ha)

    @classmethod
    def build(cls, *, master0: str, masters: Iterable[str], nodes: Iterable[str],
              deploy_hosts: Iterable[str], down_hosts: Iterable[str], distribution: str,
              image_ids: Iterable[str], standby: str = "cold", ha: bool = False) -> Topology:
        """The plan from the config's values (``of`` is the usual entry).

        Down hosts get nothing: no resource of theirs is declared, so the engine drops their old
        resources from state without dialling them (none has a delete command). When a host is
        taken off ``down_hosts`` its resources are created again and the idempotent scripts bring
        it in line with the current master0 (a warm standby, or a stopped registry when cold: a
        revived old master0 never serves its stale data read-write).

        With ``ha`` (sealer's HA layout, pkg/registry/local.go@v0.11.0:148-237) every deploy host
        (the masters) launches its own read-write registry on the data it holds, each has a data
        step that adds the other live masters' data it lacks (the union), no host is read-only,
        and no host's hosts line is the program's. master0 is still the host sealer treats as
        master0 (its Clusterfile's first master)."""
        masters, nodes = list(masters), list(nodes)
        deploy, down = list(deploy_hosts), set(down_hosts)
        images = tuple(dict.fromkeys(image_ids))
        hosts = []
        for ip in [*masters, *nodes]:
            place = Place.MASTER0 if ip == master0 else Place.MASTER if ip in masters else Place.NODE
            role = RegistryRole.NONE
            if ip in deploy:
                launches = ha or ip == master0
                role = RegistryRole.LAUNCH if launches else RegistryRole.STANDBY
            holds = role is not RegistryRole.NONE and (ha or distribution == "pre" or ip == master0)
            read_only = role is RegistryRole.STANDBY and holds and str(standby) == "warm"
            hosts.append(HostPlan(ip, place, role, ip in down, holds, images if holds else (),
                                  read_only, bool(ha)))
        live = {h.ip for h in hosts if not h.down}
        others = [ip for ip in [*nodes, *masters] if ip in live and ip != master0]
        return cls(master0, str(distribution), tuple(hosts), tuple(deploy),
                   others[0] if others else master0, str(standby), bool(ha))

    @property
    def live(self) -> list[HostPlan]:
        return [h for h in self.hosts if not h.down]

    @property
    def live_deploy(self) -> list[HostPlan]:
        return [h for h in self.live if h.deploys]

    @property
    def mirrors(self) -> list[str]:
        """The live warm standbys, in config order: the registry hosts a node's containerd tries
        after master0 (pull and resolve only)."""
        return [h.ip for h in self.live if h.read_only]

    def uses_entry(self, ip: str, entry: object | None) -> bool:
        """Whether host ``ip`` reaches the registry through the node-local entry point
        (registry.local_registry.node_entry): every host that runs no registry (a registry host
        holds the port on every address, and reaches master0 directly)."""
        return entry is not None and not self.ha and self.host(ip).role is RegistryRole.NONE

    @property
    def registries(self) -> list[str]:
        """The live hosts whose registry serves read-write (master0; with ha, every live master
        deploy host), in config order: what ``registry-verify`` checks one by one."""
        return [h.ip for h in self.live if h.role is RegistryRole.LAUNCH]

    @property
    def down_hosts(self) -> list[str]:
        return [h.ip for h in self.hosts if h.down]

    def data_sources(self, ip: str) -> list[str]:
        """Where the data step of deploy host ``ip`` copies from, in order, host to host: a
        replica pulls from master0 (never from a down host); master0 keeps its own data, or
        copies from the first other live deploy host (config order) holding a complete replica.

        In HA: every other live deploy host (config order). Each master pulls from each of them
        what it lacks (scripts/pull-data.sh --union: no --delete; a file it holds newer is kept,
        so a tag pushed to two masters ends as the newest push everywhere), so every master
        serves the union of the masters' data: a push that landed on one master, and the apps a
        master added by scale-up never got (sealer copies it the cluster image only)."""
        if self.ha:
            down = set(self.down_hosts)
            return [d for d in self.deploy_hosts if d != ip and d not in down]
        if ip != self.master0:
            return [self.master0]
        down = set(self.down_hosts)
        return [d for d in self.deploy_hosts if d != ip and d not in down]

    def deferrable_to_fence(self, before: Topology, entry: object | None) -> list[str]:
        """The live hosts whose node-side steps (payload, node, HAProxy bundle) a recovery from
        ``before`` to this plan may leave for a second, fence phase (issue 24): hosts that reach
        the registry through their node-local entry point (``uses_entry``) in both plans, when
        the new master0 was a live warm standby of ``before``, i.e. already a backup server of
        every such entry point. Their pulls go on unchanged: HAProxy sends them to a healthy
        backup while the old master0 fails its check. What the fence phase then changes on them
        is only what fences: the old master0 leaves their server lists (a revived stale copy is
        never served) and the new master0 becomes their first server (pushes reach it). Empty
        when master0 does not move, in sealer's HA layout (no entry point: lvscare's VIP), or
        when the new master0 is no warm standby of ``before`` (their entry points do not list
        it: nodes must move with the recovery)."""
        if (entry is None or self.ha or before.ha or self.master0 == before.master0
                or self.master0 not in before.mirrors):
            return []
        return [h.ip for h in self.live
                if self.uses_entry(h.ip, entry) and before.uses_entry(h.ip, entry)]

    def fence_later(self, value: str, entry: object | None) -> tuple[frozenset[str], list[str]]:
        """``FENCE_LATER_ENV``'s value -> (the hosts whose node-side steps are not declared,
        problems). Only live hosts behind a node entry point qualify: anything else would leave
        a host the recovery must move pointing at the dead master0."""
        ips = [v.strip() for v in value.split(",") if v.strip()]
        problems = []
        for ip in ips:
            try:
                ok = not self.host(ip).down and self.uses_entry(ip, entry)
            except KeyError:
                ok = False
            if not ok:
                problems.append(f"{ip!r} is not a live host behind the node entry point")
        return frozenset(ips), problems

    def host(self, ip: str) -> HostPlan:
        for h in self.hosts:
            if h.ip == ip:
                return h
        raise KeyError(f"{ip} is not a host of the cluster")

    def resource_names(self) -> set[str]:
        """Every resource name the program declares for this plan (``pulumi stack`` shows them)."""
        names = {ROOT, RECORDS, K8S_PROVIDER, *RECORD_STEPS, VERIFY}
        for h in self.hosts:
            names.update(h.steps())
        return names
