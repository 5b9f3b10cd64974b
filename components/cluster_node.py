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
import shlex
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


# configure-node.sh's options and how many values each takes (its ``parse_args``).
NODE_OPTIONS = {"--keep-hosts": 0, "--mirror": 1, "--entry": 1, "--entry-stats-port": 1,
                "--entry-check-interval": 1, "--haproxy": 1, "--haproxy-bundle": 2}


@dataclass(frozen=True)
class RecordedServers:
    """What a ``node-<ip>`` step told its node, read back from the step's command as the state
    keeps it (``recorded_servers``): the master0 and the warm standbys (``--mirror``) its
    entry point (or hosts.toml) lists, and whether it has an entry point."""

    master0: str
    mirrors: tuple[str, ...]
    entry: bool


def recorded_servers(create: str) -> RecordedServers | None:
    """The inverse of ``node_step``'s command line: ``[sudo -n] bash -c RUN_STAGED run-staged
    SHA256 FILE [OPTIONS] DOMAIN MASTER0 [PORT]``. A recovery that resumes reads from the state
    which nodes still list the old master0 (cli/change.py ``resume_fence_plan``). None for any
    other command (a step an older program wrote, a changed layout): the caller then runs the
    recovery in one phase, which is always safe."""
    try:
        argv = shlex.split(create)
    except ValueError:
        return None
    if argv[:2] == ["sudo", "-n"]:
        argv = argv[2:]
    if len(argv) < 6 or argv[:2] != ["bash", "-c"] or argv[3] != "run-staged":
        return None
    args, mirrors, entry, positional = argv[6:], [], False, []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in NODE_OPTIONS:
            values = args[i + 1:i + 1 + NODE_OPTIONS[arg]]
            if len(values) < NODE_OPTIONS[arg]:
                return None
            if arg == "--mirror":
                mirrors.append(values[0])
            entry = entry or arg == "--entry"
            i += 1 + NODE_OPTIONS[arg]
        elif arg.startswith("--"):
            return None
        else:
            positional.append(arg)
            i += 1
    if len(positional) not in (2, 3):
        return None
    return RecordedServers(positional[1], tuple(mirrors), entry)


def bundle_step(ip: str, access: SshAccess, bundle: HaproxyBundle,
                opts: pulumi.ResourceOptions | None = None) -> remote.CopyToRemote:
    """``haproxy-bundle-<ip>``: the bundle's tarball copied to the node. A file asset: the state
    keeps its path and hash, not its bytes (a command's stdin would be stored whole), and the copy
    runs again only when the hash changes. No delete: dropping it never dials the host."""
    return remote.CopyToRemote(HostStep.HAPROXY.of(ip), connection=access.connection(ip),
                               source=pulumi.FileAsset(str(Path(bundle.path).resolve())),
                               remote_path=bundle.staged, opts=opts)


def ships_bundle(args: ClusterNodeArgs) -> bool:
    return (args.ca_cert is not None and args.entry is not None and args.bundle is not None
            and args.haproxy != "system")


def node_script_args(args: ClusterNodeArgs) -> list[str]:
    """configure-node.sh's arguments for ``args`` (``recorded_servers`` reads them back)."""
    keep = [] if args.maps_domain else ["--keep-hosts"]
    if args.ca_cert is None:
        return [*keep, args.domain, args.master0]
    entry: list[str] = []
    if args.entry is not None:
        entry = ["--entry", args.entry[0], "--entry-stats-port", str(args.entry[1])]
        if args.entry[2:] and args.entry[2] != 1:   # 1 s: the script's default
            entry += ["--entry-check-interval", str(args.entry[2])]
        if args.haproxy != "auto":
            entry += ["--haproxy", args.haproxy]
        if ships_bundle(args):
            entry += ["--haproxy-bundle", args.bundle.staged, args.bundle.sha256]
    mirrors = [a for ip in args.mirrors for a in ("--mirror", ip)]
    return [*keep, *entry, *mirrors, args.domain, args.master0, str(args.port)]


def node_step(args: ClusterNodeArgs, opts: pulumi.ResourceOptions | None = None) -> remote.Command:
    """``node-<ip>``: ``configure-node.sh [--keep-hosts] [--entry ADDRESS --entry-stats-port N
    [--entry-check-interval S] [--haproxy MODE] [--haproxy-bundle FILE SHA256]] [--mirror IP]...
    DOMAIN MASTER0 [PORT]``
    with the CA on stdin, after ``haproxy-bundle-<ip>`` where the entry point ships the bundle.
    No delete command (see DeployHost): dropping a down host's step never dials it."""
    copied: list[pulumi.Resource] = []
    if ships_bundle(args):
        copied.append(bundle_step(args.ip, args.access, args.bundle, opts))
    staged = staged_run("configure-node.sh", *node_script_args(args),
                        data=args.ca_cert if args.ca_cert is not None else "")
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
