"""What the deploy hosts' registry data is now, read at program time (preview and up alike) so
that the data steps change only when the data they sync changes.

``probe_trees`` runs scripts/probe-trees.sh on the machine that runs `pulumi`, through
pulumi-command's function ``local.run_output``: one read-only SSH session per host, the secrets
on the script's stdin only. Down hosts are never asked (the caller passes live hosts only). A host
that does not answer fails the program, naming it.

The generation a data step runs with (``data_generation``) is the source's tree digest (sha256 of
lib/replica.sh's tree_list lines), except when the source still holds exactly the tree its last
verified step stamped: then it is the generation that step ran with (the host's
``.sealer-generation``). So a fill from the image store, which changes master0's tree after the
probe, does not make the next `up` run again, and a tree changed behind the program's back (a
`sealer run <app>` on master0, a push) does.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
from dataclasses import dataclass

import pulumi
from pulumi_command import local

from .access import SshAccess
from .remote_scripts import script_run

EMPTY_TREE = hashlib.sha256(b"").hexdigest()


class ProbeError(Exception):
    """A live host the plan needs could not be read."""


@dataclass(frozen=True)
class HostTree:
    ip: str
    tree: str                 # sha256 of the host's tree_list lines
    stamp: str | None         # the tree in its .sealer-replica (None: no stamp)
    generation: str | None    # its .sealer-generation (None: none)
    files: int
    ids: tuple[str, ...]      # <rootfs>/cache/registry flags, sorted
    lines: tuple[str, ...] | None = None  # tree_list lines (with --lists)

    @property
    def data_generation(self) -> str:
        """The generation of this host as a source (module docstring)."""
        if self.stamp == self.tree and self.generation:
            return self.generation
        return self.tree


def probe_args(access: SshAccess, ips: list[str]) -> list[str]:
    """probe-trees.sh's host arguments: ``--host IP PORT USER FLAG...`` each."""
    args: list[str] = []
    for ip in ips:
        args += ["--host", ip, str(access.port_for(ip)), access.user_for(ip), *access.rsync_flags(ip)]
    return args


def probe_stdin(access: SshAccess, ips: list[str]) -> pulumi.Output[str]:
    """``ssh IP BASE64`` per host (the secret ``rsync_flags`` names): a secret Output."""
    secrets = [access.rsync_secret(ip) for ip in ips]
    return pulumi.Output.secret(pulumi.Output.all(*secrets).apply(lambda values: "".join(
        f"ssh {ip} {base64.b64encode(v.encode()).decode()}\n" for ip, v in zip(ips, values))))


def parse(stdout: str, ips: list[str]) -> dict[str, HostTree]:
    """probe-trees.sh's stdout, by host; ProbeError names every host that did not answer."""
    hosts: dict[str, dict] = {}
    unreachable: dict[str, str] = {}
    for line in stdout.splitlines():
        kind, _, rest = line.partition(" ")
        ip, _, value = rest.partition(" ")
        if kind == "host":
            f = value.split()
            fields = dict(zip(f[::2], f[1::2]))
            hosts.setdefault(ip, {}).update(
                tree=fields["tree"], stamp=None if fields["stamp"] == "-" else fields["stamp"],
                generation=None if fields["generation"] == "-" else fields["generation"],
                files=int(fields["files"]))
        elif kind == "ids":
            hosts.setdefault(ip, {})["ids"] = tuple(sorted(value.split()))
        elif kind == "list":
            text = gzip.decompress(base64.b64decode(value)).decode()
            hosts.setdefault(ip, {})["lines"] = tuple(text.splitlines())
        elif kind == "unreachable":
            unreachable[ip] = value
    missing = [ip for ip in ips if ip not in unreachable and "tree" not in hosts.get(ip, {})]
    if unreachable or missing:
        named = [f"{ip} ({unreachable.get(ip) or 'no answer'})" for ip in ips
                 if ip in unreachable or ip in missing]
        raise ProbeError(
            "cannot read the registry data of " + ", ".join(named) + ": the plan needs every "
            "live deploy host holding data; if a host is down, list it in down_hosts")
    return {ip: HostTree(ip, h["tree"], h["stamp"], h["generation"], h["files"],
                         h.get("ids", ()), h.get("lines")) for ip, h in hosts.items() if ip in ips}


def union_lines(trees: list[HostTree]) -> list[str]:
    """The union of the hosts' tree_list lines, sorted bytewise as tree_list sorts them."""
    lines: set[str] = set()
    for t in trees:
        assert t.lines is not None, f"{t.ip}: probed without --lists"
        lines.update(t.lines)
    return sorted(lines, key=lambda s: s.encode())


def tree_digest(lines: list[str] | tuple[str, ...]) -> str:
    """What lib/replica.sh's write_stamp puts in "tree" for these lines."""
    return hashlib.sha256("".join(f"{line}\n" for line in lines).encode()).hexdigest()


@dataclass(frozen=True)
class Probe:
    """The probed hosts (an Output, known in preview too)."""

    hosts: pulumi.Output[dict[str, HostTree]]

    def generation_of(self, ip: str) -> pulumi.Output[str]:
        return self.hosts.apply(lambda h: h[ip].data_generation)

    def union(self) -> pulumi.Output[str]:
        """The union digest of every probed host's tree (HA)."""
        return self.hosts.apply(lambda h: tree_digest(union_lines(list(h.values()))))

    def union_ids(self) -> pulumi.Output[list[str]]:
        return self.hosts.apply(lambda h: sorted({i for t in h.values() for i in t.ids}))

    def ids_of(self, ip: str) -> pulumi.Output[list[str]]:
        return self.hosts.apply(lambda h: list(h[ip].ids))


def probe_trees(access: SshAccess, rootfs: str, ips: list[str], *, lists: bool,
                opts: pulumi.InvokeOutputOptions | None = None) -> Probe:
    """Reads ``ips`` (live hosts only) with scripts/probe-trees.sh through ``local.run_output``.
    The result is unsecreted: digests, counts and image ids are not secrets (the stdin is)."""
    run = script_run("probe-trees.sh", *(["--lists"] if lists else []), rootfs,
                     *probe_args(access, ips), data=probe_stdin(access, ips))
    result = local.run_output(command=run.command, stdin=run.stdin,
                              add_previous_output_in_env=False, logging=local.Logging.STDERR,
                              opts=opts)
    hosts = pulumi.Output.unsecret(result.stdout).apply(lambda out: parse(out or "", ips))
    return Probe(hosts)
