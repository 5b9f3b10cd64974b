"""sealer-registry: the registry of one sealer cluster, recoverable by changing `master0`.

Reads and validates the whole stack config before declaring anything (a bad config touches no
host), computes the registry material, and wires the components. Nothing else lives here.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pulumi

import kubeapi
import program_state
from components.access import JumpHost, SshAccess
from components.cluster_node import HaproxyBundle
from components.cluster_registry import ClusterRegistry, ClusterRegistryArgs
from components.deploy_host import StoreSource
from config.errors import ConfigError
from config.loader import load_stack_file, read_runtime_config, stack_file_path
from material import build_material, pki
from topology import FENCE_LATER_ENV, ROOT, Topology


def secret_text(value) -> str | None:
    return None if value is None else value.get_secret_value()


def read_file(path: str, field: str) -> str:
    try:
        return Path(path).expanduser().read_text()
    except OSError as exc:
        raise ConfigError([(field, f"cannot read {path!r}: {exc.strerror}")]) from exc


def store_source(cfg, images, material) -> StoreSource | None:
    """How master0 is filled from apps.image_store (None: no store, the cluster's own data)."""
    store = cfg.apps.image_store
    if store is None:
        return None
    reg = cfg.registry
    login = secret_text(store.password)
    registry_password = secret_text(reg.password)
    return StoreSource(
        registry=store.registry,
        refs=tuple(str(ref) for img in images for ref in img.refs),
        ca_pem=read_file(store.ca_file, "apps.image_store.ca_file") if store.ca_file else None,
        login=pulumi.Output.secret(f"{store.username}:{login}") if login is not None else None,
        # The registry's machine user for the fill (cheap bcrypt, material.FILL_USER), else the
        # configured login (a brought htpasswd).
        registry_login=(pulumi.Output.secret(material.fill_login) if material.fill_login else
                        pulumi.Output.secret(f"{reg.username}:{registry_password}")
                        if registry_password is not None else None),
        registry_ca=material.ca_cert if _names_loopback(material) else None,
        dest_tls=("verify" if _names_loopback(material) else "skip-verify") if material.tls else "http")


def haproxy_bundle(entry) -> HaproxyBundle | None:
    """The HAProxy bundle node_entry ships (haproxy: auto or bundle), or None."""
    from cli.haproxy_bundle import shipped_bundle

    found = shipped_bundle(entry)
    return HaproxyBundle(str(found[0]), found[1]) if found is not None else None


def _names_loopback(material) -> bool:
    """fill-from-store.sh reaches master0's registry at 127.0.0.1, through its SSH tunnel: the CA
    verifies that only when the serving cert names 127.0.0.1 (the program's leaf does; sealer's
    own cert, brought by `adopt`, names the domain and the IPs as DNS names only). Otherwise the
    fill uses TLS unverified inside the tunnel, whose far end is master0 (its SSH host key)."""
    return material.tls and "127.0.0.1" in pki.leaf_sans(material.cert)["ip"]


def main() -> None:
    # The engine only knows secrecy per top-level key; the stack file shows each value, so a
    # plaintext password next to an encrypted key is refused here as `cli validate` refuses it
    # (and so are missing local files, as there).
    stack_file = stack_file_path(pulumi.get_stack())
    if stack_file.is_file():
        load_stack_file(stack_file, check_files=True)
    cfg = read_runtime_config()
    reg, cluster, tls = cfg.registry, cfg.cluster, cfg.registry.tls
    history = cfg.history
    # The cluster image first; none without apps.image_store (the data is the cluster's own).
    images = cfg.apps.stored_images
    ssh_key = secret_text(cluster.ssh.private_key) or (read_file(
        cluster.ssh.private_key_path, "cluster.ssh.private_key_path")
        if cluster.ssh.private_key_path else None)
    # `pulumi config set` drops a value's final newline; OpenSSH refuses a key file without it.
    ssh_key = ssh_key.rstrip("\n") + "\n" if ssh_key else None
    ssh_password = secret_text(cluster.ssh.password)
    kubeconfig = secret_text(cfg.kubernetes.kubeconfig) or read_file(
        cfg.kubernetes.kubeconfig_path, "kubernetes.kubeconfig_path")
    # The kubeconfig usually names master0, dead in a recovery: the records go through the first
    # live apiserver of kubernetes.endpoints (default: the masters), chosen offline.
    apiserver = kubeapi.choose(cfg)
    try:
        kubeconfig = kubeapi.provider_kubeconfig(kubeconfig, cfg.kubernetes.context or None, apiserver)
    except ValueError as exc:
        field = "kubernetes.kubeconfig" if cfg.kubernetes.kubeconfig else "kubernetes.kubeconfig_path"
        raise ConfigError([(field, str(exc))]) from None
    password = secret_text(reg.password)
    try:
        material = build_material(
            domain=reg.domain, port=reg.port, deploy_ips=cfg.deploy_hosts,
            insecure=reg.local_registry.insecure_mode, username=reg.username, password=password,
            ca_cert=tls.ca_cert if tls else None, ca_key=secret_text(tls.ca_key) if tls else None,
            cert=tls.cert if tls else None, key=secret_text(tls.key) if tls else None,
            htpasswd=secret_text(reg.htpasswd), registry_config=reg.config)
    except ValueError as exc:
        raise ConfigError([("registry", str(exc))]) from None

    jump = cluster.ssh.jump_host
    access = SshAccess(
        user=cluster.ssh.user, port=cluster.ssh.port,
        private_key=pulumi.Output.secret(ssh_key) if ssh_key else None,
        password=pulumi.Output.secret(ssh_password) if ssh_password else None,
        passwords={ip: pulumi.Output.secret(h.password.get_secret_value())
                   for ip, h in cluster.ssh.hosts.items() if h.password is not None},
        host_keys=dict(cluster.ssh.host_keys),
        jump=JumpHost(jump.host, jump.user, jump.port) if jump else None,
        hosts={ip: (cluster.ssh.user_for(ip), cluster.ssh.port_for(ip)) for ip in cluster.ssh.hosts})

    layout = Topology.of(cfg)
    # A recovery's first phase (cli/change.py): these hosts' node-side steps are left out, and the
    # CLI's `up --exclude` keeps them in the state as they are.
    fence_later, problems = layout.fence_later(os.environ.get(FENCE_LATER_ENV, ""),
                                               reg.local_registry.node_entry)
    if problems:
        raise ConfigError([(FENCE_LATER_ENV, p) for p in problems])

    registry = ClusterRegistry(ROOT, ClusterRegistryArgs(
        cluster_name=cluster.name, rootfs=cfg.rootfs, topology=layout, fence_later=fence_later,
        domain=reg.domain, port=reg.port,
        insecure=reg.local_registry.insecure_mode, username=reg.username,
        password=pulumi.Output.secret(password) if password else None,
        material=material, access=access, store=store_source(cfg, images, material),
        images=images, application_json=json.dumps(history.model_dump(mode="json"), indent=2, sort_keys=True),
        kubeconfig=pulumi.Output.secret(kubeconfig), kube_context=cfg.kubernetes.context or None,
        cluster_identifier=cfg.kubernetes.cluster_identifier,
        node_entry=((entry.address, entry.stats_port, entry.check_interval_s)
                    if (entry := reg.local_registry.node_entry) is not None else None),
        entry_haproxy=str(entry.haproxy) if entry is not None else "auto",
        haproxy_bundle=haproxy_bundle(entry),
    ))

    pulumi.export("master0", registry.master0)
    pulumi.export("endpoint", registry.endpoint)
    pulumi.export("deploy_hosts", cfg.deploy_hosts)
    pulumi.export("down_hosts", list(cfg.down_hosts))
    pulumi.export("apiserver", apiserver)
    pulumi.export("ca_fingerprint", material.ca_fingerprint)
    # What `status` compares the hosts with: the tree digest the data steps synced to at this up
    # (HA: the union of the live masters' trees) and the source's cache/registry image ids.
    if registry.data_tree is not None:
        pulumi.export("data_tree", registry.data_tree)
        pulumi.export("data_images", registry.data_images)


program_state.keep_call_site_only()
try:
    main()
except ConfigError as err:
    # One line per problem, the same as `python -m cli validate`, and nothing declared.
    for line in err.lines():
        print(line, file=sys.stderr)
    raise SystemExit(2) from None
