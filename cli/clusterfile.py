"""sealer's Clusterfile, read for `adopt`: the hosts, their roles and SSH settings, the registry.

The format (sealerio/sealer types/api/v2/cluster_types.go@v0.11.0; v0.9.0 wrote
`cluster.sealer.cool/v2`, v0.8.7 `sealer.cloud/v2` with the same Cluster fields but no registry):
a YAML stream of documents (pkg/clusterfile/clusterfile.go@v0.11.0:102-199), one Cluster with
`metadata.name` and

    spec.image         the cluster image's name
    spec.hosts[]       {ips: [...], roles: [master|master0|node|...], ssh: {...}, env: [...]}
    spec.ssh           {user, passwd, pk, pkPasswd, port (a string), encrypted}
    spec.registry      {localRegistry: {domain, port (an int), username, password, ha, insecure,
                        cert}, externalRegistry: {domain, port, username, password}}
    spec.dataRoot      default /var/lib/sealer/data
    spec.appNames, spec.cmd   overrides of the cluster image's launch

and Application documents (`sealer run <app image>` saves one with `apiVersion: Application,
kind: sealer.io/v2`, swapped: cmd/sealer/cmd/utils/application.go@v0.11.0:23-37; both spellings
are read here).

A host's `ssh` overrides `spec.ssh` field by field (sealer merges them with mergo); `user`
defaults to root and `port` to 22. `pk` is a key *path on the machine that ran sealer*; sealer
tries the key and the password (utils/ssh/connect.go@v0.11.0:97-110). With `encrypted: true`
(v0.8), `passwd` is AES-CBC ciphertext under the fixed key in sealer's utils/hash.

The registry as the v0.11 decoder fills it (pkg/clusterfile/decoder.go@v0.11.0:185-209, which
does not look at apiVersion): no `localRegistry` and no `externalRegistry` -> a local registry
with `ha: true`; a `localRegistry` without `ha` -> `ha: true`; only `externalRegistry` -> no
builtin registry. Whether the running cluster is HA is decided by `adopt` from the cluster itself
(cli/adopt.py `registry_mode`); this module only reports what the file says. master0 is the
first IP of the hosts with role master, in order.

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
SECRET_KEYS = ("passwd", "password", "pkPasswd")


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
    """spec.registry.localRegistry as the v0.11 decoder fills it."""

    domain: str = DEFAULT_DOMAIN
    port: int = DEFAULT_PORT
    username: str = ""
    password: str = ""
    ha: bool = True                  # the decoder's default when `ha` is missing
    insecure: bool = False
    local_given: bool = True         # a `localRegistry` block is in the file
    ha_given: bool = False           # the block sets `ha`
    external: dict | None = None     # spec.registry.externalRegistry, when set


@dataclass(frozen=True)
class ApplicationDoc:
    """An Application document (either apiVersion/kind spelling)."""

    name: str
    launch_apps: list[str] | None
    cmds: list[str]


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
    image: str = ""                            # spec.image: the cluster image
    app_names: list[str] | None = None         # spec.appNames
    cmds: list[str] = field(default_factory=list)  # spec.cmd
    applications: list[ApplicationDoc] = field(default_factory=list)
    quirks: list[str] = field(default_factory=list)  # what sealer v0.11 would read otherwise

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


def documents(text: str) -> list:
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise ClusterfileError(f"is not valid YAML: {str(e).splitlines()[0]}") from None


def _is_application(doc: Any) -> bool:
    return isinstance(doc, dict) and "Application" in (doc.get("kind"), doc.get("apiVersion"))


def cluster_document(text: str) -> dict:
    """The `kind: Cluster` document of a Clusterfile (a YAML stream)."""
    clusters = [d for d in documents(text) if isinstance(d, dict) and d.get("kind") == "Cluster"]
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

    quirks: list[str] = []
    registry = _registry(_mapping(spec.get("registry"), "spec.registry"), quirks)
    applications = []
    for doc in documents(text):
        if _is_application(doc):
            app_spec = _mapping(doc.get("spec"), "Application spec")
            launch = app_spec.get("launchApps")
            applications.append(ApplicationDoc(
                name=str(_mapping(doc.get("metadata"), "Application metadata").get("name") or ""),
                launch_apps=None if launch is None else [str(n) for n in launch],
                cmds=[str(c) for c in app_spec.get("cmds") or []]))
    return Clusterfile(api_version=api_version, name=name,
                       data_root=str(spec.get("dataRoot") or DEFAULT_DATA_ROOT),
                       masters=masters, nodes=nodes, ssh=_merged({}, default),
                       hosts_ssh=hosts_ssh, registry=registry, image=str(spec.get("image") or ""),
                       app_names=(None if spec.get("appNames") is None
                                  else [str(n) for n in spec["appNames"]]),
                       cmds=[str(c) for c in spec.get("cmd") or []],
                       applications=applications, quirks=quirks)


def _registry(raw: dict, quirks: list[str]) -> Registry:
    """spec.registry as decoder.go@v0.11.0:185-209 fills it."""
    where = "spec.registry.localRegistry"
    external = raw.get("externalRegistry")
    if external is not None:
        external = _mapping(external, "spec.registry.externalRegistry")
    local_given = raw.get("localRegistry") is not None
    if not local_given and external is not None:
        return Registry(local_given=False, external=external)
    local = _mapping(raw.get("localRegistry"), where)
    port = DEFAULT_PORT
    if local.get("port") not in (None, "", 0):
        if isinstance(local["port"], str):
            quirks.append(f"{where}.port is the string {local['port']!r}: sealer v0.11 decodes an "
                          "int there and would refuse this file")
        port = _port(local["port"], f"{where}.port")
    ha = local.get("ha")
    if ha is not None and not isinstance(ha, bool):
        raise ClusterfileError(f"{where}.ha {ha!r} is not true or false")
    return Registry(
        domain=str(local.get("domain") or DEFAULT_DOMAIN), port=port,
        username=str(local.get("username") or ""), password=str(local.get("password") or ""),
        ha=True if ha is None else ha, insecure=local.get("insecure") is True,
        local_given=local_given, ha_given=ha is not None, external=external)


def _flatten(value: Any, path: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, child in value.items():
            _flatten(child, f"{path}.{key}" if path else str(key), out)
    elif isinstance(value, list) and value and any(isinstance(v, (dict, list)) for v in value):
        for i, child in enumerate(value):
            _flatten(child, f"{path}[{i}]", out)
    else:
        out[path] = value


def differences(ours: str, theirs: str, limit: int = 12) -> list[str]:
    """The fields in which two Clusterfiles differ (`path: A -> B`, secrets shown as <secret>),
    documents matched by kind and name; at most ``limit`` lines."""
    def fields(text: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for doc in documents(text):
            if isinstance(doc, dict):
                kind = "Application" if _is_application(doc) else str(doc.get("kind"))
                name = str(_mapping(doc.get("metadata"), "metadata").get("name") or "")
                _flatten({k: v for k, v in doc.items() if k not in ("kind", "apiVersion")},
                         f"{kind}/{name}", out)
        return out

    def show(fields: dict[str, Any], key: str) -> str:
        if key not in fields:
            return "(absent)"
        secret = key.rsplit(".", 1)[-1] in SECRET_KEYS and fields[key]
        return "<secret>" if secret else str(fields[key])

    a, b = fields(ours), fields(theirs)
    lines = [f"{k}: {show(a, k)} -> {show(b, k)}"
             for k in dict.fromkeys([*a, *b]) if a.get(k, "(absent)") != b.get(k, "(absent)")]
    return lines[:limit] + ([f"... and {len(lines) - limit} more"] if len(lines) > limit else [])


@dataclass(frozen=True)
class RegistrySettings:
    """sealer v0.8's `<rootfs>/etc/registry.yml`: its own settings `{ip, domain, port, username,
    password}`, read through sigs.k8s.io/yaml (port a string field; a bare number is taken too), no
    `ip` meaning master0 (pkg/runtime/registry.go@v0.8.7:31-49,113-141). Not a distribution
    config."""

    ip: str = ""
    domain: str = DEFAULT_DOMAIN
    port: int = DEFAULT_PORT
    username: str = ""
    password: str = ""


def parse_registry_settings(text: str) -> RegistrySettings:
    where = "etc/registry.yml"
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ClusterfileError(f"{where} is not valid YAML: {str(e).splitlines()[0]}") from None
    doc = _mapping(doc, where)
    unknown = set(doc) - {"ip", "domain", "port", "username", "password"}
    if unknown:
        raise ClusterfileError(f"{where} has keys sealer's settings file does not have "
                               f"({', '.join(sorted(map(str, unknown)))}): is it a registry config?")
    return RegistrySettings(
        ip=_ip(doc["ip"], f"{where} ip") if doc.get("ip") else "",
        domain=str(doc.get("domain") or DEFAULT_DOMAIN),
        port=_port(doc["port"], f"{where} port") if doc.get("port") not in (None, "") else DEFAULT_PORT,
        username=str(doc.get("username") or ""), password=str(doc.get("password") or ""))
