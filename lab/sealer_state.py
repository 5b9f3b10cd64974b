"""A cluster as sealer (v0.9+) leaves it, on the lab's hosts: what `python -m cli adopt` reads.

sealer's own behaviour, from the public sealerio/sealer and sealerio/basefs sources:

- The Clusterfile (`apiVersion: sealer.io/v2`, `kind: Cluster`; sealer keeps it as
  `~/.sealer/Clusterfile` of the user that ran it, root, on master0, and in ConfigMap
  `kube-system/sealer-clusterfile`): `metadata.name`, `spec.hosts[]` of `{ips, roles, ssh, env}`
  where a host's `ssh` overrides `spec.ssh` field by field (`user`, `passwd`, `pk` = a key *path on
  the machine that runs sealer*, `pkPasswd`, `port` as a string, `encrypted`),
  `spec.registry.localRegistry` `{domain, port, username, password, ha, insecure, cert}` and
  `spec.dataRoot`. sigs.k8s.io/yaml writes keys sorted.
- The rootfs `<dataRoot>/<name>/rootfs` on master0: `certs/<domain>.crt|.key` (one self-signed
  cert, CN `registry-ca`, used as its own CA, extra SAN IPs written as DNS names),
  `etc/registry_config.yml` (basefs' file, no TLS or auth in it: the container's environment sets
  those), `etc/registry_htpasswd` (one `user:<bcrypt $2a$10$>` line, no newline), `registry/` (the
  distribution storage), and the registry started by `scripts/init-registry.sh PORT VOLUME DOMAIN`.
- Every host: `<master0> <domain> #hostalias-set-by-sealer` in /etc/hosts (non-HA registry) and
  the cert as `<certs.d of the runtime>/<domain>:<port>/<domain>.crt`.
- The boot history `~/.sealer/application.json` (in this project's seed format, see
  /work/shared/notes/sealer-compat.md; sealer itself appends image-extension documents there).

`make_sealer_state` writes all of that through the holder's view of each host (no SSH) and starts
the registry with the rootfs' own `init-registry.sh`, as sealer does.
"""
from __future__ import annotations

import datetime
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from cli.clusterfile import encrypt_passwd
from lab.hosts import Lab

# basefs' context/rootfs/etc/registry_config.yml, byte for byte (it has no final newline).
BASEFS_REGISTRY_CONFIG = """\
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3"""

HOST_ALIAS_MARK = "#hostalias-set-by-sealer"
CERTS_DIRS = {"docker": "/etc/docker/certs.d", "containerd": "/etc/containerd/certs.d"}
SEALER_HOME = "/root/.sealer"
SEALER_KEY = "/root/.ssh/id_ed25519"   # the key sealer reaches the hosts with (spec.ssh.pk)


def sealer_self_signed(domain: str, ips: list[str] = ()) -> tuple[str, str]:
    """A cert the way sealer makes it: self-signed, CN registry-ca, used as its own CA, the
    domain and any extra IPs written as DNS SANs (sealer's bug: clients dialling an IP fail)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "registry-ca")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365 * 100))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain),
                                                        *(x509.DNSName(ip) for ip in ips)]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption()).decode())


def sealer_htpasswd(username: str, password: str) -> str:
    """sealer's GenerateHTTPBasicAuth: `user:` + Go's bcrypt at DefaultCost ($2a$10$), no newline."""
    digest = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10, prefix=b"2a"))
    return f"{username}:{digest.decode()}"


def clusterfile(*, name: str, masters: list[str], nodes: list[str], data_root: str,
                domain: str, port: int, username: str, password: str, ssh: dict[str, str],
                host_ssh: dict[str, dict[str, str]] | None = None, ha: bool = False,
                image: str = "docker.io/sealerio/kubernetes:v1.22.15") -> str:
    """The Clusterfile as sealer saves it (sigs.k8s.io/yaml: keys sorted). ``host_ssh`` gives a
    host its own `hosts[]` entry with an `ssh` override, as an operator writes per-host settings."""
    host_ssh = host_ssh or {}
    hosts: list[dict[str, Any]] = []
    for role, ips in (("master", masters), ("node", nodes)):
        plain = [ip for ip in ips if ip not in host_ssh]
        if plain:
            hosts.append({"ips": plain, "roles": [role], "ssh": {}})
        hosts += [{"ips": [ip], "roles": [role], "ssh": dict(host_ssh[ip])} for ip in ips if ip in host_ssh]
    env = [f"LocalRegistryDomain={domain}", f"LocalRegistryPort={port}",
           f"LocalRegistryURL={domain}:{port}", f"RegistryDomain={domain}",
           f"RegistryPort={port}", f"RegistryURL={domain}:{port}", "ContainerRuntime=containerd"]
    doc = {
        "apiVersion": "sealer.io/v2",
        "kind": "Cluster",
        "metadata": {"creationTimestamp": None, "name": name},
        "spec": {
            "containerRuntime": {"type": "containerd"},
            "dataRoot": data_root,
            "env": env,
            "hosts": hosts,
            "image": image,
            "registry": {"localRegistry": {
                "cert": {}, "domain": domain, "ha": ha, "insecure": False,
                "password": password, "port": port, "username": username}},
            "ssh": dict(ssh),
        },
        "status": {},
    }
    return yaml.safe_dump(doc, sort_keys=True, default_flow_style=False)


@dataclass
class SealerCluster:
    """What the lab made, for tests to compare the adopted stack with."""

    name: str
    master0: str
    masters: list[str]
    nodes: list[str]
    rootfs: str
    domain: str
    port: int
    username: str
    password: str
    cert: str
    key: str
    htpasswd: str
    registry_config: str
    clusterfile: str
    history: dict
    runtime: str
    trust_files: dict[str, str] = field(default_factory=dict)   # ip -> path of the trusted cert

    @property
    def hosts(self) -> list[str]:
        return [*self.masters, *self.nodes]

    @property
    def clusterfile_path(self) -> str:
        return f"{SEALER_HOME}/Clusterfile"

    @property
    def history_path(self) -> str:
        return f"{SEALER_HOME}/application.json"


def _write(lab: Lab, host: str, path: str, text: str, mode: int = 0o644) -> None:
    target = lab.host_path(host, path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    target.chmod(mode)


def _copy_registry_data(lab: Lab, host: str, rootfs: str, store: Path, image_ids: list[str]) -> None:
    """What sealer's distributor leaves in `<rootfs>/registry`: every image's storage tree,
    merged, with the files' times kept."""
    dest = lab.host_path(host, f"{rootfs}/registry")
    dest.mkdir(parents=True, exist_ok=True)
    for image_id in dict.fromkeys(image_ids):
        shutil.copytree(store / image_id.removeprefix("sha256:") / "docker", dest / "docker",
                        dirs_exist_ok=True, copy_function=shutil.copy2)


def set_host_alias(lab: Lab, host: str, domain: str, ip: str) -> None:
    """sealer's CommandSetHostAlias: drop lines holding ' <domain> ', append `<ip> <domain> #mark`."""
    lab.run(host, f"if grep ' {domain} ' /etc/hosts >/dev/null; then sed -i '/ {domain} /d' /etc/hosts; fi; "
                  f"echo '{ip} {domain} {HOST_ALIAS_MARK}' >> /etc/hosts")


def make_sealer_state(lab: Lab, *, history: dict, store: Path | None = None,
                      image_ids: list[str] = (), domain: str = "sea.hub", port: int = 5000,
                      username: str = "sealer", password: str = "sealer-Passw0rd",
                      runtime: str = "containerd", ha: bool = False,
                      host_ssh: dict[str, dict[str, str]] | None = None,
                      ssh_user: str = "root", ssh_password: str | None = None,
                      start_registry: bool = True) -> SealerCluster:
    """Leave the lab's hosts as sealer leaves a non-HA cluster (see the module docstring).

    ``store``/``image_ids``: registry data to put in master0's `<rootfs>/registry` (the lab's
    image store layout, merged as sealer's distribution storage). ``history``: the boot history
    written to master0's `~/.sealer/application.json`. The registry is started through the
    rootfs' `init-registry.sh`, as sealer does, unless ``start_registry`` is False.
    ``ssh_user``: the Clusterfile's SSH user; other than root, every host gets that login with
    passwordless sudo (`Lab.add_sudo_user`). ``ssh_password``: the Clusterfile reaches the hosts
    with this passwd (written `encrypted: true`, as sealer can) and no pk; the user may log in
    with it (`Lab.allow_password_login`). Trust sealer did not write (an earlier stack's) is
    removed first: a fresh cluster trusts only sealer's file.
    """
    inv = lab.inventory()
    masters = [h["ip"] for h in inv["hosts"] if h["role"] == "master"]
    nodes = [h["ip"] for h in inv["hosts"] if h["role"] == "node"]
    master0 = masters[0]
    rootfs = f"{inv['data_root']}/{inv['cluster']}/rootfs"
    cert, key = sealer_self_signed(domain)
    htpasswd = sealer_htpasswd(username, password)
    ssh = {"pk": SEALER_KEY, "port": "22", "user": ssh_user}
    if ssh_password is not None:
        ssh = {"passwd": encrypt_passwd(ssh_password), "encrypted": True, "port": "22",
               "user": ssh_user}
    text = clusterfile(name=inv["cluster"], masters=masters, nodes=nodes,
                       data_root=inv["data_root"], domain=domain, port=port, username=username,
                       password=password, ssh=ssh, host_ssh=host_ssh, ha=ha)

    _write(lab, master0, f"{SEALER_HOME}/Clusterfile", text, 0o600)
    _write(lab, master0, f"{SEALER_HOME}/application.json", json.dumps(history, indent=2), 0o600)
    _write(lab, master0, SEALER_KEY, lab.key_path.read_text(), 0o600)
    _write(lab, master0, f"{rootfs}/certs/{domain}.crt", cert)
    _write(lab, master0, f"{rootfs}/certs/{domain}.key", key, 0o600)
    _write(lab, master0, f"{rootfs}/etc/registry_config.yml", BASEFS_REGISTRY_CONFIG)
    _write(lab, master0, f"{rootfs}/etc/registry_htpasswd", htpasswd, 0o644)
    if store is not None:
        _copy_registry_data(lab, master0, rootfs, Path(store), list(image_ids))

    trust = {}
    for ip in [*masters, *nodes]:
        if ssh_user != "root":
            lab.add_sudo_user(ip, ssh_user)
        if ssh_password is not None:
            lab.allow_password_login(ip, ssh_user, ssh_password)
        lab.run(ip, " ".join(f"rm -rf '{d}/{domain}:{port}';" for d in CERTS_DIRS.values()))
        path = f"{CERTS_DIRS[runtime]}/{domain}:{port}/{domain}.crt"
        _write(lab, ip, path, cert)
        trust[ip] = path
        set_host_alias(lab, ip, domain, master0)

    if start_registry:
        lab.run(master0, f"cd {rootfs}/scripts && bash init-registry.sh {port} {rootfs}/registry {domain}",
                timeout=60)
    registry_config = lab.host_path(master0, f"{rootfs}/etc/registry_config.yml").read_text()
    return SealerCluster(
        name=inv["cluster"], master0=master0, masters=masters, nodes=nodes, rootfs=rootfs,
        domain=domain, port=port, username=username, password=password, cert=cert, key=key,
        htpasswd=htpasswd, registry_config=registry_config, clusterfile=text, history=history,
        runtime=runtime, trust_files=trust)
