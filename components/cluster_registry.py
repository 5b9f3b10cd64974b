"""The whole registry of one sealer cluster: records, deploy hosts, nodes and the verification.

Which host does what is a pure function of the config (``plan``), so tests can compare the plans
of two ``master0`` values without Pulumi.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
from pulumi_command import remote

from config.image_store import StoredImage
from config.models import Distribution
from material import RegistryMaterial

from .access import SshAccess
from .cluster_node import ClusterNodeArgs, node_step
from .deploy_host import (DeployHost, DeployHostArgs, RegistryRole, material_fingerprint,
                          rootfs_files, rootfs_payload)
from .records import RegistryRecords, RegistryRecordsArgs
from .remote_scripts import host_step, script_run


@dataclass(frozen=True)
class HostPlan:
    ip: str
    deploy: RegistryRole | None  # None: not a live deploy host
    holds_data: bool


@dataclass(frozen=True)
class ClusterPlan:
    master0: str
    hosts: tuple[HostPlan, ...]  # live hosts only, in config order
    verifier: str                # the live host that verifies, a node other than master0 if any


def plan(*, master0: str, masters: list[str], nodes: list[str], deploy_hosts: list[str],
         down_hosts: list[str], distribution: Distribution) -> ClusterPlan:
    """What each live host gets. Down hosts get nothing: no resource of theirs is declared, so
    the engine drops their old resources from state without dialling them (none has a delete
    command). When a host is taken off ``down_hosts`` its resources are created again and the
    idempotent scripts bring it in line with the current master0."""
    down = set(down_hosts)
    hosts = []
    for ip in [*masters, *nodes]:
        if ip in down:
            continue
        role = None
        if ip in deploy_hosts:
            role = RegistryRole.LAUNCH if ip == master0 else RegistryRole.STANDBY
        holds = role is not None and (distribution == Distribution.PRE or ip == master0)
        hosts.append(HostPlan(ip, role, holds))
    live = [h.ip for h in hosts]
    others = [ip for ip in [*nodes, *masters] if ip in live and ip != master0]
    return ClusterPlan(master0, tuple(hosts), others[0] if others else master0)


@dataclass(frozen=True)
class ClusterRegistryArgs:
    cluster_name: str
    rootfs: str
    master0: str
    masters: list[str]
    nodes: list[str]
    deploy_hosts: list[str]
    down_hosts: list[str]
    distribution: Distribution
    domain: str
    port: int
    insecure: bool
    username: str | None
    password: pulumi.Input[str] | None  # secret Output
    material: RegistryMaterial
    access: SshAccess
    image_store: str
    images: list[StoredImage]           # the cluster image and every boot-history image
    application_json: str
    kubeconfig: pulumi.Input[str]       # secret Output
    kube_context: str | None = None
    cluster_identifier: str = ""
    extra_summary: dict = field(default_factory=dict)


class ClusterRegistry(pulumi.ComponentResource):
    """``sealer:registry:ClusterRegistry``: wires the records, one ``DeployHost`` per live deploy
    host, one ``node-<ip>`` step per live host and ``registry-verify``."""

    def __init__(self, name: str, args: ClusterRegistryArgs,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("sealer:registry:ClusterRegistry", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        m = args.material
        layout = plan(master0=args.master0, masters=args.masters, nodes=args.nodes,
                      deploy_hosts=args.deploy_hosts, down_hosts=args.down_hosts,
                      distribution=args.distribution)
        secret = pulumi.Output.secret

        self.records = RegistryRecords("records", RegistryRecordsArgs(
            kubeconfig=args.kubeconfig,
            context=args.kube_context,
            cluster_identifier=args.cluster_identifier or args.cluster_name,
            summary={
                "domain": args.domain, "port": args.port, "username": args.username or "",
                "insecure_mode": args.insecure, "master0": args.master0,
                "deploy_hosts": list(args.deploy_hosts), "distribution": str(args.distribution),
                "ca_fingerprint": m.ca_fingerprint or "", **args.extra_summary,
            },
            registry_yml=m.registry_yml,
            ca_cert=m.ca_cert,
            cert=m.cert,
            key=secret(m.key) if m.key is not None else None,
            htpasswd=secret(m.htpasswd) if m.htpasswd is not None else None,
            application_json=args.application_json,
        ), opts=child)

        image_hex = tuple(img.hex for img in args.images)
        self.deploy_hosts: dict[str, DeployHost] = {}
        for host in layout.hosts:
            if host.deploy is None:
                continue
            self.deploy_hosts[host.ip] = DeployHost(f"deploy-{host.ip}", DeployHostArgs(
                ip=host.ip, role=host.deploy, rootfs=args.rootfs, domain=args.domain,
                port=args.port, access=args.access, material=m,
                image_store=args.image_store, images=image_hex if host.holds_data else (),
            ), opts=child)
        launch = self.deploy_hosts[args.master0].registry

        self.nodes: dict[str, remote.Command] = {}
        for host in layout.hosts:
            self.nodes[host.ip] = node_step(ClusterNodeArgs(
                ip=host.ip, domain=args.domain, port=args.port, master0=args.master0,
                access=args.access, ca_cert=m.ca_cert, after=[launch],
            ), opts=child)

        refs = [str(ref) for img in args.images for ref in img.refs]
        fingerprint = material_fingerprint(rootfs_payload(rootfs_files(m, args.domain)))
        password_line = (pulumi.Output.from_input(args.password).apply(lambda p: p + "\n")
                         if args.password is not None else "")
        verify = script_run("verify-registry.sh", args.domain, str(args.port),
                            "https" if m.tls else "http", args.username or "", args.master0,
                            *refs, data=password_line)
        self.verify = host_step(
            "registry-verify", args.access.connection(layout.verifier), verify,
            # The material can change with nothing else in this command: verify again then.
            triggers=[fingerprint],
            opts=child.merge(pulumi.ResourceOptions(depends_on=[
                launch, *self.nodes.values(),
                *(d.registry for d in self.deploy_hosts.values())])))

        self.master0 = args.master0
        self.endpoint = f"{args.domain}:{args.port}"
        self.register_outputs({
            "master0": args.master0,
            "endpoint": self.endpoint,
            "deploy_hosts": list(self.deploy_hosts),
            "nodes": list(self.nodes),
            "verified": self.verify.stdout,
        })
