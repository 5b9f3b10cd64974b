"""A registry deploy host: rootfs files, registry data, and either the running registry
(master0), a registry kept stopped (every other deploy host, cold standby) or a registry serving
its replica read-only (warm standby). Which host does what, and the names of its steps, come from
its ``topology.HostPlan``."""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
from dataclasses import dataclass

import pulumi
from pulumi_command import local, remote

from material import RegistryMaterial
from material.registry_config import read_only_registry_yml
from topology import HostPlan, HostStep, RegistryRole, image_hex

from .access import SshAccess
from .remote_scripts import host_step, local_step, script_run


def rootfs_files(material: RegistryMaterial, domain: str, read_only: bool = False) -> dict[str, str]:
    """The files this program owns under the rootfs, by path relative to it; with ``read_only``
    the registry config of a warm standby (distribution's read-only mode on)."""
    config = read_only_registry_yml(material.registry_yml) if read_only else material.registry_yml
    # sealer's init-registry.sh reads registry_config.yml, and only that. etc/registry.yml is
    # never written: in sealer v0.8 it is sealer's own settings file {ip, domain, port, username,
    # password}, read on every sealer command (pkg/runtime/registry.go@v0.8.7).
    files = {"etc/registry_config.yml": config}
    if material.htpasswd is not None:
        files["etc/registry_htpasswd"] = material.htpasswd
    if material.cert is not None and material.key is not None:
        files[f"certs/{domain}.crt"] = material.cert
        files[f"certs/{domain}.key"] = material.key
    return files


def rootfs_payload(files: dict[str, str]) -> str:
    """Base64 of a reproducible tar of ``files`` (fixed order, mtime, owner): the same files give
    the same bytes, so an unchanged config is no diff."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path in sorted(files):
            data = files[path].encode()
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), 0o600, 0
            tar.addfile(info, io.BytesIO(data))
    return base64.b64encode(buf.getvalue()).decode()


def material_fingerprint(payload: str) -> str:
    """Short digest of the rootfs payload; the launch restarts the registry when it changes."""
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RootfsPayload:
    """The rootfs files as the hosts receive them, and their fingerprint; made once per program
    (master0 gets the read-write one; warm standbys the read-only one, cold standbys the
    read-write one, ready for a recovery; the verification reruns when master0's changes)."""

    data: str          # rootfs_payload(...): base64 of a reproducible tar
    fingerprint: str   # material_fingerprint(data)

    @classmethod
    def of(cls, material: RegistryMaterial, domain: str, read_only: bool = False) -> RootfsPayload:
        data = rootfs_payload(rootfs_files(material, domain, read_only))
        return cls(data, material_fingerprint(data))


@dataclass(frozen=True)
class StoreSource:
    """The image store (config/image_store.py) as master0's fill step needs it: skopeo copies
    each ref from ``registry`` into master0's registry (scripts/fill-from-store.sh)."""

    registry: str                                  # HOST:PORT of the store
    refs: tuple[str, ...]                          # REPOSITORY:TAG@DIGEST of every image, in order
    ca_pem: str | None = None                      # the store's CA (None: the system's trust)
    login: pulumi.Input[str] | None = None         # secret "USER:PASSWORD" at the store
    registry_login: pulumi.Input[str] | None = None  # secret "USER:PASSWORD" at master0's registry
    registry_ca: str | None = None                 # the cluster's CA, when it verifies 127.0.0.1
    dest_tls: str = "verify"                       # verify | skip-verify (a cert without 127.0.0.1) | http

    @property
    def generation(self) -> str:
        """Changes with the refs: the replicas pull again when master0's images change."""
        return hashlib.sha256(" ".join(self.refs).encode()).hexdigest()[:16]

    def stdin(self, ssh_secret: pulumi.Input[str]) -> pulumi.Output[str]:
        """fill-from-store.sh's stdin: ``NAME BASE64`` lines (a secret Output)."""
        def lines(values: list) -> str:
            secret, login, registry_login = values
            parts = {"ssh": secret, "store-auth": login, "dest-auth": registry_login,
                     "store-ca": self.ca_pem, "dest-ca": self.registry_ca}
            return "".join(f"{name} {_b64(value)}\n" for name, value in parts.items() if value is not None)
        return pulumi.Output.secret(pulumi.Output.all(ssh_secret, self.login, self.registry_login).apply(lines))


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@dataclass(frozen=True)
class DeployHostArgs:
    host: HostPlan     # a deploy host: role launch or standby; its images, if it holds data
    rootfs: str
    domain: str
    port: int
    access: SshAccess
    payload: RootfsPayload  # read-only for a warm standby (host.read_only)
    store: StoreSource | None  # the image store master0 is filled from (None: the cluster's own data)
    data_sources: tuple[str, ...] = ()  # hosts the data step may copy from (topology.data_sources)
    after: tuple[pulumi.Resource, ...] = ()  # a replica's data step runs after master0's
    # What the data step syncs to (components/data_probe.py): master0's probed generation, or in
    # HA the union digest of the live masters' trees. A change reruns the step; None: not probed.
    data_generation: pulumi.Input[str] | None = None


class DeployHost(pulumi.ComponentResource):
    """``deploy-<ip>``: ``rootfs-<ip>``, ``data-<ip>``, ``registry-launch|standby-<ip>``.

    With ``registry.local_registry.ha`` every deploy host (a master) gets ``rootfs-<ip>``,
    ``data-<ip>`` (it pulls from every other live master what it lacks: the union of their data,
    scripts/pull-data.sh --union) and ``registry-launch-<ip>``: its own read-write registry,
    launched only when it does not serve these files already (so sealer's registries keep
    running after an adoption).

    ``registry-standby-<ip>`` stops the registry (cold) or, on a warm standby, launches it through
    the rootfs' init-registry.sh like master0's but on the read-only payload: the fingerprint
    differs from master0's, so a host that changes role (master0 moved, a revived old master0
    taken off down_hosts) has its registry relaunched on the config of its new role.

    No child has a delete command: removing this host from the stack (it died, it left the
    deploy hosts, master0 moved) never dials it.
    """

    registry: remote.Command

    def __init__(self, name: str, args: DeployHostArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sealer:registry:DeployHost", name, None, opts)
        host = args.host
        ip = host.ip
        if not host.deploys or host.down:
            raise ValueError(f"{ip} is not a live deploy host")
        child = pulumi.ResourceOptions(parent=self)

        write = script_run("write-rootfs.sh", args.rootfs,
                           data=pulumi.Output.secret(args.payload.data))
        self.rootfs = host_step(HostStep.ROOTFS.of(ip), args.access, ip, write, quiet=True, opts=child)
        steps: list[pulumi.Resource] = [self.rootfs]

        images = [image_hex(i) for i in host.images]
        self.data: local.Command | remote.Command | None = None
        self.data_after = list(args.after)  # what the data step waits for (tests read it)
        fills = host.role is RegistryRole.LAUNCH and args.store is not None and host.copies_data
        if host.copies_data and not fills:
            # Host to host: the step runs on this host and pulls over SSH (the cluster's key or
            # the source's password on stdin only; quiet step). Replicas run after master0's data
            # step; with an image store, master0's data changes with the refs: pull again then.
            # Without an image store or a probe, the program cannot see a change of master0's
            # tree. In HA every master pulls from every other live master (the union).
            generation = ["--generation", args.store.generation] if args.store is not None else []
            probed = ["--data-generation", args.data_generation] if args.data_generation is not None else []
            sources = list(args.data_sources)
            mode = ("--union" if host.ha else
                    "--master0" if host.role is RegistryRole.LAUNCH else "--replica")
            pull = script_run(
                "pull-data.sh", mode, args.rootfs, *generation, *probed,
                *args.access.pull_sources(sources),
                data=args.access.pull_credentials(sources))
            self.data = host_step(HostStep.DATA.of(ip), args.access, ip, pull, quiet=True,
                                  opts=child.merge(pulumi.ResourceOptions(depends_on=list(args.after))))
            steps.append(self.data)

        after_files = child.merge(pulumi.ResourceOptions(depends_on=steps))
        if host.role is RegistryRole.LAUNCH or host.read_only:
            launch = script_run("launch-registry.sh", args.rootfs, str(args.port), args.domain,
                                args.payload.fingerprint)
            self.registry = host_step(host.registry_step, args.access, ip, launch, opts=after_files)
        else:
            standby = script_run("standby-registry.sh", args.rootfs)
            self.registry = host_step(host.registry_step, args.access, ip, standby, opts=after_files)

        if fills:
            # master0 from the image store, through its running registry (skopeo on this
            # machine: store -> master0; every secret on the step's stdin).
            store = args.store
            assert store is not None
            probed = ["--data-generation", args.data_generation] if args.data_generation is not None else []
            fill = script_run(
                "fill-from-store.sh", *args.access.rsync_flags(ip), "--dest-tls", store.dest_tls, *probed,
                f"{args.access.user_for(ip)}@{ip}", str(args.access.port_for(ip)), args.rootfs,
                store.registry, str(args.port), *store.refs,
                data=store.stdin(args.access.rsync_secret(ip)))
            self.data = local_step(HostStep.DATA.of(ip), fill, opts=child.merge(
                pulumi.ResourceOptions(depends_on=[self.registry, *args.after])))

        self.register_outputs({
            "ip": ip,
            "role": str(host.role),
            "images": images,
        })
