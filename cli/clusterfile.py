"""sealer's Clusterfile, read for `adopt`: the hosts, their roles and SSH settings, the registry.

The format (sealerio/sealer `types/api/v2`, `apiVersion: sealer.io/v2`; earlier
`cluster.sealer.cool/v2` and `sealer.cloud/v2` carry the same Cluster fields): a YAML stream of
documents, one `kind: Cluster` with `metadata.name` and

    spec.hosts[]       {ips: [...], roles: [master|node|...], ssh: {...}, env: [...]}
    spec.ssh           {user, passwd, pk, pkPasswd, port (a string), encrypted}
    spec.registry.localRegistry  {domain, port, username, password, ha, insecure, cert}
    spec.dataRoot      default /var/lib/sealer/data

A host's `ssh` overrides `spec.ssh` field by field (sealer merges them with mergo); `user`
defaults to root and `port` to 22. `pk` is a key *path on the machine that ran sealer*. With
`encrypted: true`, `passwd` is AES-CBC ciphertext under the fixed key in sealer's utils/hash.
sealer v0.9+ fills a missing `localRegistry.ha` with true: a registry on every master behind an
IPVS VIP; before `sealer.io/v2` the registry ran on master0 only. master0 is the first IP of the
first host entry.

Pure parsing: no I/O. `parse_clusterfile` raises `ClusterfileError` with one clear line.
"""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass, field
from typing import Any

import yaml

DEFAULT_DATA_ROOT = "/var/lib/sealer/data"
DEFAULT_DOMAIN = "sea.hub"
DEFAULT_PORT = 5000
# sealer's utils/hash aesKey (base64): public in its source, so an "encrypted" passwd is only
# obfuscated. The IV is the key's first 16 bytes.
_SEALER_AES_KEY = "ZU9WbzRMVXRQZ2pzTGowR2hNWUpIZjRkWld4aWVRWko="
HA_API_VERSIONS = ("sealer.io/v2",)


class ClusterfileError(ValueError):
    pass


@dataclass(frozen=True)
class Ssh:
    """One host's SSH settings after sealer's merge (the host's own, else spec.ssh)."""

    user: str = "root"
    port: int = 22
    passwd: str = ""          # decrypted when the Clusterfile had `encrypted: true`
    pk: str = ""              # a path on master0
    pk_passwd: str = ""


@dataclass(frozen=True)
class Registry:
    domain: str = DEFAULT_DOMAIN
    port: int = DEFAULT_PORT
    username: str = ""
    password: str = ""
    ha: bool = False
    insecure: bool = False


@dataclass(frozen=True)
class Clusterfile:
    api_version: str
    name: str
    data_root: str
    masters: list[str]
    nodes: list[str]
    ssh: Ssh                                   # spec.ssh with sealer's defaults
    hosts_ssh: dict[str, Ssh] = field(default_factory=dict)  # every host, merged
    registry: Registry = field(default_factory=Registry)

    @property
    def master0(self) -> str:
        return self.masters[0]

    @property
    def rootfs(self) -> str:
        return f"{self.data_root.rstrip('/')}/{self.name}/rootfs"

    @property
    def hosts(self) -> list[str]:
        return [*self.masters, *self.nodes]

    def overrides(self) -> dict[str, Ssh]:
        """The hosts whose merged SSH settings differ from spec.ssh."""
        return {ip: s for ip, s in self.hosts_ssh.items() if s != self.ssh}


def decrypt_passwd(ciphertext: str) -> str:
    """sealer's AesDecrypt: base64 of AES-256-CBC, IV = key[:16], PKCS#7 padding."""
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    key = base64.b64decode(_SEALER_AES_KEY)
    try:
        data = base64.b64decode(ciphertext, validate=True)
        decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
        padded = decryptor.update(data) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        return (unpadder.update(padded) + unpadder.finalize()).decode()
    except (ValueError, UnicodeDecodeError):
        raise ClusterfileError("an `encrypted: true` passwd does not decrypt with sealer's key") from None


def encrypt_passwd(plaintext: str) -> str:
    """sealer's AesEncrypt (for tests and the lab)."""
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    key = base64.b64decode(_SEALER_AES_KEY)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext.encode()) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode()


def _mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ClusterfileError(f"{where} is not a mapping")
    return value


def _port(value: Any, where: str) -> int:
    text = str(value).strip()
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ClusterfileError(f"{where} {value!r} is not a port")
    return int(text)


def _ssh_fields(raw: Any, where: str) -> dict[str, Any]:
    """The fields a `ssh:` mapping sets (empty ones are unset, as for mergo)."""
    raw = _mapping(raw, where)
    unknown = set(raw) - {"user", "passwd", "pk", "pkPasswd", "port", "encrypted"}
    if unknown:
        raise ClusterfileError(f"{where} has unknown keys: {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    if raw.get("user"):
        out["user"] = str(raw["user"])
    if raw.get("port") not in (None, ""):
        out["port"] = _port(raw["port"], f"{where}.port")
    if raw.get("passwd"):
        out["passwd"] = str(raw["passwd"])
        out["encrypted"] = raw.get("encrypted") is True
    if raw.get("pk"):
        out["pk"] = str(raw["pk"])
    if raw.get("pkPasswd"):
        out["pk_passwd"] = str(raw["pkPasswd"])
    return out


def _merged(own: dict[str, Any], default: dict[str, Any]) -> Ssh:
    fields = {**default, **own}
    passwd = fields.pop("passwd", "")
    encrypted = fields.pop("encrypted", False)
    if passwd and encrypted:
        passwd = decrypt_passwd(passwd)
    return Ssh(passwd=passwd, **fields)


def _ip(value: Any, where: str) -> str:
    try:
        return str(ipaddress.ip_address(str(value).strip()))
    except ValueError:
        raise ClusterfileError(f"{where} {value!r} is not an IP address") from None


def cluster_document(text: str) -> dict:
    """The `kind: Cluster` document of a Clusterfile (a YAML stream)."""
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise ClusterfileError(f"is not valid YAML: {str(e).splitlines()[0]}") from None
    clusters = [d for d in documents if isinstance(d, dict) and d.get("kind") == "Cluster"]
    if len(clusters) != 1:
        raise ClusterfileError(f"has {len(clusters)} `kind: Cluster` documents, expected one")
    return clusters[0]


def parse_clusterfile(text: str) -> Clusterfile:
    doc = cluster_document(text)
    api_version = str(doc.get("apiVersion") or "")
    name = str(_mapping(doc.get("metadata"), "metadata").get("name") or "")
    if not name:
        raise ClusterfileError("has no metadata.name")
    spec = _mapping(doc.get("spec"), "spec")
    default = _ssh_fields(spec.get("ssh"), "spec.ssh")
    masters: list[str] = []
    nodes: list[str] = []
    hosts_ssh: dict[str, Ssh] = {}
    hosts = spec.get("hosts") or []
    if not isinstance(hosts, list) or not hosts:
        raise ClusterfileError("spec.hosts lists no hosts")
    for i, host in enumerate(hosts):
        host = _mapping(host, f"spec.hosts[{i}]")
        roles = [str(r) for r in host.get("roles") or []]
        ips = [_ip(ip, f"spec.hosts[{i}].ips") for ip in host.get("ips") or []]
        own = _ssh_fields(host.get("ssh"), f"spec.hosts[{i}].ssh")
        for ip in ips:
            if ip in hosts_ssh:
                raise ClusterfileError(f"spec.hosts[{i}]: {ip} is listed twice")
            hosts_ssh[ip] = _merged(own, default)
            # sealer: master is a role; a host with both roles is a master.
            (masters if "master" in roles else nodes).append(ip)
    if not masters:
        raise ClusterfileError("spec.hosts has no host with role master")

    local = _mapping(_mapping(spec.get("registry"), "spec.registry").get("localRegistry"),
                     "spec.registry.localRegistry")
    ha_default = api_version in HA_API_VERSIONS
    ha = local.get("ha")
    registry = Registry(
        domain=str(local.get("domain") or DEFAULT_DOMAIN),
        port=_port(local["port"], "spec.registry.localRegistry.port") if local.get("port") else DEFAULT_PORT,
        username=str(local.get("username") or ""),
        password=str(local.get("password") or ""),
        ha=ha_default if ha is None else ha is True,
        insecure=local.get("insecure") is True,
    )
    return Clusterfile(api_version=api_version, name=name,
                       data_root=str(spec.get("dataRoot") or DEFAULT_DATA_ROOT),
                       masters=masters, nodes=nodes, ssh=_merged({}, default),
                       hosts_ssh=hosts_ssh, registry=registry)
