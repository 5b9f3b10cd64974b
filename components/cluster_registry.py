"""The whole registry of one sealer cluster: records, deploy hosts, nodes and the verification.

Which host does what, and every step's name, comes from ``topology.Topology`` (no Pulumi there).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
from pulumi_command import remote

import topology
from config.image_store import StoredImage
from material import RegistryMaterial
from topology import HostStep, Topology

from .access import SshAccess
from .cluster_node import ClusterNodeArgs, HaproxyBundle, node_step
from .data_probe import probe_trees
from .deploy_host import DeployHost, DeployHostArgs, RootfsPayload, StoreSource
from .records import RegistryRecords, RegistryRecordsArgs, sealer_registry_info
from .remote_scripts import host_step, script_run


@dataclass(frozen=True)
class ClusterRegistryArgs:
    cluster_name: str
    rootfs: str
    topology: Topology                  # who launches, stands by, holds data; step names
    domain: str
    port: int
    insecure: bool
    username: str | None
    password: pulumi.Input[str] | None  # secret Output
    material: RegistryMaterial
    access: SshAccess
    store: StoreSource | None           # the image store master0 is filled from (None: own data)
    images: list[StoredImage]           # the cluster image and every boot-history image
    application_json: str
    kubeconfig: pulumi.Input[str]       # secret Output
    kube_context: str | None = None
    cluster_identifier: str = ""
    extra_summary: dict = field(default_factory=dict)
    # registry.local_registry.node_entry as (address, stats port, check interval s): hosts without
    # a registry reach it through a node-local HAProxy (components/cluster_node.py).
    node_entry: tuple[str, int, int] | None = None
    # node_entry.haproxy and the bundle shipped to the entry nodes (auto, bundle).
    entry_haproxy: str = "auto"
    haproxy_bundle: HaproxyBundle | None = None
    # A recovery's first phase: hosts whose node-side steps are not declared (the CLI's
    # `up --exclude` keeps them in the state; topology.FENCE_LATER_ENV).
    fence_later: frozenset[str] = frozenset()


class ClusterRegistry(pulumi.ComponentResource):
    """``sealer:registry:ClusterRegistry``: wires the records, one ``DeployHost`` per live deploy
    host, one ``node-<ip>`` step per live host and ``registry-verify``."""

    def __init__(self, name: str, args: ClusterRegistryArgs,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(topology.ROOT_TYPE, name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        m = args.material
        layout = args.topology
        master0 = layout.master0
        secret = pulumi.Output.secret

        self.records = RegistryRecords(topology.RECORDS, RegistryRecordsArgs(
            kubeconfig=args.kubeconfig,
            context=args.kube_context,
            cluster_identifier=args.cluster_identifier or args.cluster_name,
            summary={
                "domain": args.domain, "port": args.port, "username": args.username or "",
                "insecure_mode": args.insecure, "master0": master0,
                "deploy_hosts": list(layout.deploy_hosts), "distribution": layout.distribution,
                "ca_fingerprint": m.ca_fingerprint or "",
                **({"ha": True} if layout.ha else {}), **args.extra_summary,
            },
            sealer_info=sealer_registry_info(
                domain=args.domain, port=args.port, username=args.username,
                insecure=args.insecure, ha=layout.ha,
                deploy_hosts=list(layout.deploy_hosts), master0=master0),
            registry_yml=m.registry_yml,
            ca_cert=m.ca_cert,
            cert=m.cert,
            key=secret(m.key) if m.key is not None else None,
            htpasswd=secret(m.htpasswd) if m.htpasswd is not None else None,
            application_json=args.application_json,
        ), opts=child)

        payload = RootfsPayload.of(m, args.domain)  # master0's, and a cold standby's
        read_only = RootfsPayload.of(m, args.domain, read_only=True) if layout.mirrors else None

        # The data the data steps sync to, read now from the live hosts that hold it (never a
        # down host): HA, every live master (the union of their trees); else master0 (the
        # source of every replica).
        copying = [h for h in layout.live_deploy if h.copies_data]
        probed = ([h.ip for h in copying] if layout.ha else
                  [master0] if any(h.ip == master0 for h in copying) else [])
        self.probe = (probe_trees(args.access, args.rootfs, probed, lists=layout.ha)
                      if probed else None)
        generation = None
        if self.probe is not None:
            generation = self.probe.union() if layout.ha else self.probe.generation_of(master0)

        self.deploy_hosts: dict[str, DeployHost] = {}
        # master0 first: the replicas' data steps pull from it once its own data step is done.
        # In HA the masters' steps run side by side: each pulls the others' original files.
        for host in sorted(layout.live_deploy, key=lambda h: h.ip != master0):
            first = self.deploy_hosts.get(master0)
            after = (first.data,) if first is not None and first.data is not None and not layout.ha else ()
            self.deploy_hosts[host.ip] = DeployHost(HostStep.DEPLOY.of(host.ip), DeployHostArgs(
                host=host, rootfs=args.rootfs, domain=args.domain, port=args.port,
                access=args.access, payload=read_only if host.read_only else payload,
                store=args.store,
                data_sources=tuple(layout.data_sources(host.ip)),
                after=after,
                data_generation=generation,
            ), opts=child)
        # The registries that serve read-write: master0's; with ha, every live master's.
        launches = [self.deploy_hosts[ip].registry for ip in layout.registries]

        # A node behind an entry point starts its HAProxy once every server it lists serves: one
        # started earlier health-checks a standby still starting every second (downinter), and at
        # 500 nodes that is 500 TLS handshakes a second on the standby as its registry comes up
        # (a 3 + 500 deploy failed on it, session 13). Without an entry point nothing checks them.
        standbys = [self.deploy_hosts[ip].registry for ip in layout.mirrors if ip in self.deploy_hosts]
        self.nodes: dict[str, remote.Command] = {}
        for host in layout.live:
            if host.ip in args.fence_later:
                continue
            entry = layout.uses_entry(host.ip, args.node_entry)
            self.nodes[host.ip] = node_step(ClusterNodeArgs(
                ip=host.ip, domain=args.domain, port=args.port, master0=master0,
                access=args.access, ca_cert=m.ca_cert, mirrors=layout.mirrors,
                after=[*launches, *standbys] if entry else launches,
                maps_domain=host.hosts_entry(master0) is not None,
                entry=args.node_entry if entry else None,
                haproxy=args.entry_haproxy, bundle=args.haproxy_bundle,
            ), opts=child)

        refs = [str(ref) for img in args.images for ref in img.refs]
        password_line = (pulumi.Output.from_input(args.password).apply(lambda p: p + "\n")
                         if args.password is not None else "")
        # The warm standbys too (TLS only): nodes fall back on them while master0 is dead.
        mirrors = [a for ip in layout.mirrors for a in ("--mirror", ip)] if m.tls else []
        # HA: every master's registry, one by one (by name, so sealer's DNS-only cert verifies);
        # the domain resolves to the verifier's own IP or lvscare's VIP, not to master0 ("-").
        each = [a for ip in layout.registries for a in ("--registry", ip)] if layout.ha else []
        # The verifier pulls as every node does: through its entry point when it has one.
        entry = (["--entry", args.node_entry[0]]
                 if layout.uses_entry(layout.verifier, args.node_entry) else [])
        verify = script_run("verify-registry.sh", *mirrors, *each, *entry, args.domain, str(args.port),
                            "https" if m.tls else "http", args.username or "",
                            "-" if layout.ha else master0, *refs, data=password_line)
        self.verify = host_step(
            topology.VERIFY, args.access, layout.verifier, verify,
            # The material can change with nothing else in this command: verify again then.
            triggers=[payload.fingerprint],
            opts=child.merge(pulumi.ResourceOptions(depends_on=[
                *launches, *self.nodes.values(),
                *(d.registry for d in self.deploy_hosts.values()),
                *(d.data for d in self.deploy_hosts.values() if d.data is not None)])))

        self.master0 = master0
        self.endpoint = f"{args.domain}:{args.port}"
        self.data_tree, self.data_images = self._data_outputs(layout)
        self.register_outputs({
            "master0": master0,
            "endpoint": self.endpoint,
            "deploy_hosts": list(self.deploy_hosts),
            "nodes": list(self.nodes),
            "verified": self.verify.stdout,
            "data_tree": self.data_tree,
            "data_images": self.data_images,
        })

    def _data_outputs(self, layout: Topology) -> tuple[pulumi.Output[str] | None,
                                                       pulumi.Output[list[str]] | None]:
        """``data_tree``: the tree the data steps synced to (HA: the union digest; else the tree
        master0's data step reported, which a fill from the image store may have changed after
        the probe); ``data_images``: the source's cache/registry ids (HA: the union's)."""
        if self.probe is None:
            return None, None
        if layout.ha:
            return self.probe.union(), self.probe.union_ids()
        master0 = layout.master0
        probed = self.probe.hosts.apply(lambda h: h[master0].tree)
        step = self.deploy_hosts[master0].data
        tree = probed if step is None else pulumi.Output.all(
            pulumi.Output.unsecret(step.stdout), probed).apply(lambda v: _reported_tree(v[0]) or v[1])
        return tree, self.probe.ids_of(master0)


def _reported_tree(stdout: str | None) -> str | None:
    """The ``tree <sha256>`` line a data step prints last (pull-data.sh, fill-from-store.sh)."""
    for line in reversed((stdout or "").splitlines()):
        parts = line.split()
        if len(parts) == 2 and parts[0] == "tree" and len(parts[1]) == 64:
            return parts[1]
    return None
