"""A cluster host as a registry client: ``node-<ip>`` trusts the CA and maps ``sea.hub``.

The script and the CA reach the host once per change, as a file: ``payload-<ip>`` copies them
(``staged_run``), and ``node-<ip>`` checks that file's sha256 and runs it. Sent on the step's
stdin they were stored twice per host in the state (57 KB a host; issue 24).

One step per host, not a component of two: a recovery rewrites every host's mapping, and the
engine's cost per step grows with the size of the state it checkpoints after each one, so a
50-node cluster gets 50 small steps rather than 100 steps under 50 components (bench/README.md).
The CA trust rides along: the script rewrites a trust file only when its content differs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pulumi
from pulumi_command import remote

from topology import HostStep

from .access import SshAccess
from .remote_scripts import STAGED_PATH, ScriptRun, host_step, staged_run


# Where the bundle's tarball lands on a node: a directory every login user may write (the copy
# runs as the SSH user, root or not) that survives reboots; the script copies the file into a
# root-owned directory before it checks its sha256 and unpacks it.
BUNDLE_STAGING_DIR = "/var/tmp"


@dataclass(frozen=True)
class HaproxyBundle:
    """node_entry's HAProxy bundle on the operator's machine (`python -m cli haproxy-bundle`)
    and its sha256, which the node checks before it unpacks the copy."""

    path: str
    sha256: str

    @property
    def staged(self) -> str:
        return f"{BUNDLE_STAGING_DIR}/{Path(self.path).name}"


@dataclass(frozen=True)
class ClusterNodeArgs:
    ip: str
    domain: str
    port: int
    master0: str
    access: SshAccess
    ca_cert: str | None  # None in insecure mode: nothing to trust
    # Warm standbys, after master0 in the node's containerd hosts.toml (TLS only: without a CA
    # there is no hosts.toml).
    mirrors: list[str] = field(default_factory=list)
    # The hosts entry moves only once these are done (the new registry is up).
    after: list[pulumi.Resource] = field(default_factory=list)
    # False in sealer's HA layout: the domain's hosts line is sealer's (a master's own IP, a
    # node's lvscare VIP) and stays as it is.
    maps_domain: bool = True
    # (address, stats port, check interval s) of the node-local entry point
    # (registry.local_registry.node_entry): the domain maps to the address, HAProxy there
    # forwards to master0, else to a healthy mirror. Only on hosts that run no registry (the
    # port is taken on the others).
    entry: tuple[str, int, int] | None = None
    # node_entry.haproxy (auto, system, bundle) and the bundle copied to the node for auto and
    # bundle (None: nothing shipped; the node's own haproxy or a refusal).
    haproxy: str = "auto"
    bundle: HaproxyBundle | None = None


def bundle_step(ip: str, access: SshAccess, bundle: HaproxyBundle,
                opts: pulumi.ResourceOptions | None = None) -> remote.CopyToRemote:
    """``haproxy-bundle-<ip>``: the bundle's tarball copied to the node. A file asset: the state
    keeps its path and hash, not its bytes (a command's stdin would be stored whole), and the copy
    runs again only when the hash changes. No delete: dropping it never dials the host."""
    return remote.CopyToRemote(HostStep.HAPROXY.of(ip), connection=access.connection(ip),
                               source=pulumi.FileAsset(str(Path(bundle.path).resolve())),
                               remote_path=bundle.staged, opts=opts)


def node_step(args: ClusterNodeArgs, opts: pulumi.ResourceOptions | None = None) -> remote.Command:
    """``node-<ip>``: ``configure-node.sh [--keep-hosts] [--entry ADDRESS --entry-stats-port N
    [--entry-check-interval S] [--haproxy MODE] [--haproxy-bundle FILE SHA256]] [--mirror IP]...
    DOMAIN MASTER0 [PORT]``
    with the CA on stdin, after ``haproxy-bundle-<ip>`` where the entry point ships the bundle.
    No delete command (see DeployHost): dropping a down host's step never dials it."""
    keep = [] if args.maps_domain else ["--keep-hosts"]
    copied: list[pulumi.Resource] = []
    if args.ca_cert is None:
        staged = staged_run("configure-node.sh", *keep, args.domain, args.master0)
    else:
        entry: list[str] = []
        if args.entry is not None:
            entry = ["--entry", args.entry[0], "--entry-stats-port", str(args.entry[1])]
            if args.entry[2:] and args.entry[2] != 1:   # 1 s: the script's default
                entry += ["--entry-check-interval", str(args.entry[2])]
            if args.haproxy != "auto":
                entry += ["--haproxy", args.haproxy]
            if args.bundle is not None and args.haproxy != "system":
                entry += ["--haproxy-bundle", args.bundle.staged, args.bundle.sha256]
                copied.append(bundle_step(args.ip, args.access, args.bundle, opts))
        mirrors = [a for ip in args.mirrors for a in ("--mirror", ip)]
        staged = staged_run("configure-node.sh", *keep, *entry, *mirrors, args.domain,
                            args.master0, str(args.port), data=args.ca_cert)
    copied.append(payload_step(args.ip, args.access, staged.payload, opts))
    after = pulumi.ResourceOptions(depends_on=[*args.after, *copied])
    return host_step(HostStep.NODE.of(args.ip), args.access, args.ip, ScriptRun(staged.command, None),
                     opts=after if opts is None else opts.merge(after))


def payload_step(ip: str, access: SshAccess, payload: Path,
                 opts: pulumi.ResourceOptions | None = None) -> remote.CopyToRemote:
    """``payload-<ip>``: the node step's script and CA copied to STAGED_PATH in the login user's
    home. A file asset: the state keeps its path and hash; the copy runs again only when the
    hash changes (a new script or CA), not when master0 moves. No delete: dropping it never
    dials the host. The path is relative to the project (the engine runs the program and the
    providers there): the same in every clone, so a watcher on another machine does not see
    every payload step changed."""
    return remote.CopyToRemote(HostStep.PAYLOAD.of(ip), connection=access.connection(ip),
                               source=pulumi.FileAsset(os.path.relpath(payload)),
                               remote_path=STAGED_PATH, opts=opts)
