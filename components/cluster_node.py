"""A cluster host as a registry client: its ``sea.hub`` mapping and its trust in the CA."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
from pulumi_command import remote

from .access import SshAccess
from .remote_scripts import host_step, script_run


@dataclass(frozen=True)
class ClusterNodeArgs:
    ip: str
    domain: str
    port: int
    master0: str
    access: SshAccess
    ca_cert: str | None  # None in insecure mode: nothing to trust
    # The hosts entry moves only once these are done (the new registry is up).
    after: list[pulumi.Resource] = field(default_factory=list)


class ClusterNode(pulumi.ComponentResource):
    """``node-<ip>``: ``ca-trust-<ip>`` then ``hosts-<ip>``. No delete commands (see DeployHost)."""

    def __init__(self, name: str, args: ClusterNodeArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sealer:registry:ClusterNode", name, None, opts)
        ip = args.ip
        child = pulumi.ResourceOptions(parent=self)
        connection = args.access.connection(ip)
        before_hosts: list[pulumi.Resource] = list(args.after)

        self.ca_trust: remote.Command | None = None
        if args.ca_cert is not None:
            trust = script_run("trust-ca.sh", args.domain, str(args.port), data=args.ca_cert)
            self.ca_trust = host_step(f"ca-trust-{ip}", connection, trust, opts=child)
            before_hosts.append(self.ca_trust)

        point = script_run("set-hosts.sh", args.domain, args.master0)
        self.hosts = host_step(f"hosts-{ip}", connection, point, opts=child.merge(
            pulumi.ResourceOptions(depends_on=before_hosts)))
        self.register_outputs({"ip": ip, "registry": args.master0})
