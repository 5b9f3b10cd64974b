"""sealer's own files, rendered byte for byte as its source writes them (no I/O here).

Every function names the sealer source it models as `path@tag` (sealerio/sealer unless it says
basefs). lab/sealer_state.py puts these files on the lab's hosts; unit tests and the `adopt`
helper can use them directly.

Three flavours of cluster (`Flavour`):

- `v0.11-ha`: sealer v0.11.0's default (HA registry: one on every master, nodes reach it through
  an IPVS VIP kept by the `reg-lvscare` static pod);
- `v0.11`: v0.11.0 with `registry.localRegistry.ha: false` (one registry on master0);
- `v0.8`: sealer v0.8.7 (one registry on master0, sealer's settings in `etc/registry.yml`).
"""
from __future__ import annotations

import base64
import datetime
import enum
import json
from dataclasses import dataclass, field
from typing import Any

import bcrypt
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID


class Flavour(str, enum.Enum):
    V011_HA = "v0.11-ha"
    V011 = "v0.11"
    V08 = "v0.8"

    @property
    def ha(self) -> bool:
        return self is Flavour.V011_HA

    @property
    def v011(self) -> bool:
        return self is not Flavour.V08

    @classmethod
    def parse(cls, value: "str | Flavour") -> "Flavour":
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"flavour: {value!r} is not one of "
                             f"{', '.join(f.value for f in cls)}") from None


SEA_HUB = "sea.hub"
# utils/shellcommand/hostsfile.go@v0.11.0 DefaultSealerHostAliasAnnotation
HOST_ALIAS_MARK = "#hostalias-set-by-sealer"
# common/common.go@v0.11.0: DefaultVIP, RegLvsCareStaticPodName, LvsCareRepoAndTag, StaticPodDir;
# pkg/registry/local.go@v0.11.0:48 LvscarePodFileName.
SEALER_DEFAULT_VIP = "10.103.97.2"
ENV_VIP = "IPvsVIPv4"
LVSCARE_POD = "reg-lvscare"
LVSCARE_IMAGE = "sealerio/lvscare:v1.1.3-beta.8"
STATIC_POD_DIR = "/etc/kubernetes/manifests"
LVSCARE_MANIFEST = f"{STATIC_POD_DIR}/reg-lvscare.yaml"
# pkg/container-runtime/installer.go@v0.11.0:28-33 (CertsDir per runtime); v0.8.7 knows docker's only
# (pkg/runtime/init.go@v0.8.7:44 DockerCertDir).
CERTS_DIRS = {"docker": "/etc/docker/certs.d", "containerd": "/etc/containerd/certs.d"}
KUBELET_AUTH = "/var/lib/kubelet/config.json"     # pkg/registry/local.go@v0.11.0:263
DOCKER_AUTH = "/root/.docker/config.json"         # installer.go@v0.11.0:71 (root's home)
# basefs context/Kubefile (main): the official cluster image's labels and its CNI app.
BASEFS_LABELS = {
    "cluster.alpha.sealer.io/cluster-runtime-version": "v1.22.15",
    "cluster.alpha.sealer.io/cluster-runtime-type": "kubernetes",
    "cluster.alpha.sealer.io/container-runtime-type": "docker",
    "cluster.alpha.sealer.io/container-runtime-version": "19.03.14",
    # build/kubefile/parser/kubefile.go@v0.11.0:246-253: `CNI calico ...` adds this label.
    "cluster.alpha.sealer.io/kube-cni-calico": "true",
}

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


# -- Go's encoders ---------------------------------------------------------------------------------

def go_json_indent(value: Any, indent: str = "  ") -> str:
    """encoding/json MarshalIndent(v, "", indent): Go escapes <, > and & (HTML-safe) and U+2028/9;
    other non-ASCII stays raw; map keys sorted (callers pass structs as dicts in field order)."""
    text = json.dumps(value, indent=indent, ensure_ascii=False)
    for ch, esc in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


class _GoYAMLDumper(yaml.SafeDumper):
    """go-yaml's style: a string that would read back as another type is double-quoted."""


def _represent_str(dumper: yaml.SafeDumper, value: str):
    tag = dumper.resolve(yaml.ScalarNode, value, (True, False))
    style = '"' if tag != "tag:yaml.org,2002:str" or value == "" else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_GoYAMLDumper.add_representer(str, _represent_str)


def sigs_yaml(doc: Any) -> str:
    """sigs.k8s.io/yaml Marshal: JSON field names, keys sorted, go-yaml v2 block style."""
    return yaml.dump(doc, Dumper=_GoYAMLDumper, sort_keys=True, default_flow_style=False,
                     allow_unicode=True)


def go_yaml_v3(doc: Any) -> str:
    """kyaml's yaml.Marshal (go-yaml v3, indent 2, compact sequences): field order as given."""
    return yaml.dump(doc, Dumper=_GoYAMLDumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=True)


# -- certificate and htpasswd ----------------------------------------------------------------------

def _serial_zero(cert: x509.Certificate, key: rsa.RSAPrivateKey) -> bytes:
    """The DER of ``cert`` with serial 0, re-signed with ``key``.

    sealer's Go template sets `SerialNumber: 0`; cryptography's builder refuses anything below 1.
    The certificate is built with serial 1 (DER `02 01 01`, the same length as `02 01 00`), the one
    byte is changed in the TBSCertificate and the TBS is signed again: same length, so the outer
    DER keeps its layout and only the TBS and the trailing signature bytes change."""
    der = cert.public_bytes(serialization.Encoding.DER)
    tbs = cert.tbs_certificate_bytes
    version_and_serial = bytes.fromhex("a003020102020101")
    at = tbs.find(version_and_serial)
    if at < 0 or at > 8:
        raise ValueError("unexpected TBSCertificate layout")
    new_tbs = tbs[:at + len(version_and_serial) - 1] + b"\x00" + tbs[at + len(version_and_serial):]
    signature = key.sign(new_tbs, padding.PKCS1v15(), hashes.SHA256())
    if len(signature) != len(cert.signature) or not der.endswith(cert.signature):
        raise ValueError("unexpected signature layout")
    start = der.find(tbs)
    return der[:start] + new_tbs + der[start + len(tbs):-len(signature)] + signature


def go_self_signed_ca(common_name: str, dns_names: list[str], organization: list[str] = (),
                      years: int = 100) -> tuple[str, str]:
    """A CA as Go's x509.CreateCertificate makes it from sealer's template (serial 0, NotBefore now,
    NotAfter now + years × 365 d, KeyUsage digitalSignature|keyEncipherment|certSign (critical),
    BasicConstraints CA (critical), SubjectKeyId from the key (Go ≥ 1.15 adds it to CAs, no AKI
    when self-signed), SAN DNS names only, RSA 2048, SHA256WithRSA), extensions in Go's order;
    the key as PKCS#1 `RSA PRIVATE KEY` (pkg/clustercert/cert/generator.go@v0.11.0:48-50,165-183,
    281-287; pkg/cert/cert.go@v0.8.7:84-105)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    # crypto/x509/pkix Name.ToRDNSequence: O before CN.
    name = x509.Name([*(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organization),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(1)
               .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=365 * years))
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                            key_encipherment=True, data_encipherment=False,
                                            key_agreement=False, key_cert_sign=True, crl_sign=False,
                                            encipher_only=False, decipher_only=False), True)
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False))
    if dns_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), False)
    der = _serial_zero(builder.sign(key, hashes.SHA256()), key)
    pem = base64.encodebytes(der).decode().replace("\n", "")
    cert_pem = ("-----BEGIN CERTIFICATE-----\n"
                + "".join(pem[i:i + 64] + "\n" for i in range(0, len(pem), 64))
                + "-----END CERTIFICATE-----\n")
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode()
    return cert_pem, key_pem


def registry_ca(flavour: Flavour, domain: str, extra_dns: list[str] = ()) -> tuple[str, str]:
    """The registry's cert for ``flavour``: v0.11 CN `registry-ca`, SAN the domain then the user's
    `cert.subjectAltName` IPs and DNS names, all as DNS names (pkg/registry/installer.go@v0.11.0
    :181-200); v0.8 CN = the domain, O `sealer`, SAN the domain (+ sea.hub when it differs)
    (pkg/runtime/registry.go@v0.8.7:176-192)."""
    if flavour.v011:
        return go_self_signed_ca("registry-ca", [domain, *extra_dns])
    return go_self_signed_ca(domain, [domain] + ([SEA_HUB] if domain != SEA_HUB else []),
                             organization=["sealer"])


def htpasswd(flavour: Flavour, username: str, password: str) -> str:
    """`user:` + Go bcrypt DefaultCost (`$2a$10$`). v0.11 writes it with no newline
    (pkg/registry/utils.go@v0.11.0:23-33, installer.go:123-152); v0.8 with `echo '...' > file`
    (pkg/runtime/registry.go@v0.8.7:63-72): a trailing newline."""
    digest = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10, prefix=b"2a")).decode()
    line = f"{username}:{digest}"
    return line if flavour.v011 else line + "\n"


def docker_auth_config(endpoints: list[str], username: str, password: str) -> str:
    """The docker-style auth file a login leaves (containers/image's and the docker CLI's layout:
    `{"auths": {endpoint: {"auth": base64(user:password)}}}`, tab-indented). sealer v0.11 copies
    it to the runtime's config and to /var/lib/kubelet/config.json (local.go@v0.11.0:255-302);
    v0.8.7 runs `nerdctl login` twice and `cp /root/.docker/config.json /var/lib/kubelet`
    (registry.go@v0.8.7:35-38,74-78)."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return go_json_indent({"auths": {ep: {"auth": token} for ep in endpoints}}, indent="\t")


# -- application.json ------------------------------------------------------------------------------

@dataclass
class App:
    """One application of an image extension (pkg/define/application/v1/application.go@v0.11.0
    :27-41: name, type omitempty, files omitempty, version omitempty, env, cmds)."""

    name: str
    type: str = ""
    files: list[str] = field(default_factory=list)
    version: str = ""
    env: dict[str, str] = field(default_factory=dict)
    cmds: list[str] = field(default_factory=list)

    def as_go(self) -> dict:
        out: dict[str, Any] = {"name": self.name}
        for key, value in (("type", self.type), ("files", self.files), ("version", self.version),
                           ("env", dict(sorted(self.env.items()))), ("cmds", self.cmds)):
            if value:
                out[key] = value
        return out


@dataclass
class ImageExtension:
    """pkg/define/image/v1/sealer_image.go@v0.11.0:86-122 in field order: buildClient,
    schemaVersion, type (omitempty), applications, labels, env (omitempty), launch (a struct:
    always written, `{}` when empty)."""

    type: str                       # kube-installer | app-installer
    applications: list[App]
    labels: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    launch_cmds: list[str] = field(default_factory=list)
    launch_app_names: list[str] = field(default_factory=list)
    sealer_version: str = "v0.11.0"
    buildah_version: str = "1.30.0"

    def as_go(self) -> dict:
        out: dict[str, Any] = {
            "buildClient": {"sealerVersion": self.sealer_version,
                            "buildahVersion": self.buildah_version},
            "schemaVersion": "v1alpha1",
        }
        if self.type:
            out["type"] = self.type
        if self.applications:
            out["applications"] = [a.as_go() for a in self.applications]
        if self.labels:
            out["labels"] = dict(sorted(self.labels.items()))
        if self.env:
            out["env"] = dict(sorted(self.env.items()))
        launch: dict[str, Any] = {}
        if self.launch_cmds:
            launch["cmds"] = self.launch_cmds
        if self.launch_app_names:
            launch["app_names"] = self.launch_app_names
        out["launch"] = launch
        return out


def application_log(extensions: list[ImageExtension]) -> str:
    """`~/.sealer/application.json` after these runs: each run appends
    json.MarshalIndent(extension, "", "  ") to the file (O_APPEND, 0600), no separator, no newline
    (pkg/application/appdriver.go@v0.11.0:128-160)."""
    return "".join(go_json_indent(e.as_go()) for e in extensions)


def split_application_log(text: str) -> list[dict]:
    """The objects of an application log, as json.Decoder would read them one after another (the
    reader `adopt` uses: cli/sealer_log.py)."""
    from cli.sealer_log import split_log

    return split_log(text)


# -- Clusterfile -----------------------------------------------------------------------------------

def cluster_env(user_env: list[str], domain: str, port: int, runtime_type: str) -> list[str]:
    """spec.env after sealer's decoder: the user's entries, then the registry ones it appends
    (pkg/clusterfile/decoder.go@v0.11.0:210-290)."""
    env = list(user_env)
    env += [f"LocalRegistryDomain={domain}", f"LocalRegistryPort={port}",
            f"LocalRegistryURL={domain}:{port}", f"RegistryDomain={domain}",
            f"RegistryPort={port}", f"RegistryURL={domain}:{port}"]
    if runtime_type:
        env.append(f"ContainerRuntime={runtime_type}")
    return env


def cluster_document(*, flavour: Flavour, name: str, image: str, masters: list[str],
                     nodes: list[str], ssh: dict[str, Any], domain: str, port: int,
                     username: str = "", password: str = "", runtime_type: str = "",
                     user_env: list[str] = (), data_root: str = "/var/lib/sealer/data",
                     host_ssh: dict[str, dict[str, Any]] | None = None) -> dict:
    """The Cluster document as sealer saves it (types/api/v2/cluster_types.go@v0.11.0; v0.8.7).

    v0.11: the decoder fills `registry.localRegistry` (domain, port, ha, insecure; `cert: {}` as
    TLSCert is a struct) and appends the registry env, `dataRoot` defaults
    (decoder.go@v0.11.0:185-295); `hosts[].ssh` and `containerRuntime` are structs, written `{}`
    when empty. v0.8: `apiVersion: sealer.cloud/v2`, no registry/containerRuntime/dataRoot
    fields (types/api/v2/cluster_types.go@v0.8.7:31-45), the first master's roles
    `[master, master0]`. ``host_ssh`` gives a host its own `hosts[]` entry with an `ssh` override."""
    host_ssh = host_ssh or {}
    hosts: list[dict[str, Any]] = []
    meta = {"creationTimestamp": None, "name": name}
    if not flavour.v011:
        # apply/run.go@v0.8.7:97-155 getHosts: one entry per IP, master0 with two roles.
        for i, ip in enumerate(masters):
            hosts.append({"ips": [ip], "roles": ["master", "master0"] if i == 0 else ["master"],
                          "ssh": dict(host_ssh.get(ip, {}))})
        hosts += [{"ips": [ip], "roles": ["node"], "ssh": dict(host_ssh.get(ip, {}))}
                  for ip in nodes]
        spec = {"hosts": hosts, "image": image, "ssh": dict(ssh)}
        if user_env:
            spec["env"] = list(user_env)
        return {"apiVersion": "sealer.cloud/v2", "kind": "Cluster", "metadata": meta,
                "spec": spec, "status": {}}
    for role, ips in (("master", masters), ("node", nodes)):
        plain = [ip for ip in ips if ip not in host_ssh]
        if plain:
            hosts.append({"ips": plain, "roles": [role], "ssh": {}})
        hosts += [{"ips": [ip], "roles": [role], "ssh": dict(host_ssh[ip])}
                  for ip in ips if ip in host_ssh]
    local: dict[str, Any] = {"cert": {}, "domain": domain, "ha": flavour.ha, "insecure": False,
                             "port": port}
    if username:
        local["username"] = username
    if password:
        local["password"] = password
    spec = {
        "containerRuntime": {"type": runtime_type} if runtime_type else {},
        "dataRoot": data_root,
        "env": cluster_env(user_env, domain, port, runtime_type),
        "hosts": hosts,
        "image": image,
        "registry": {"localRegistry": local},
        "ssh": dict(ssh),
    }
    return {"apiVersion": "sealer.io/v2", "kind": "Cluster", "metadata": meta, "spec": spec,
            "status": {}}


def application_document(name: str = "my-application", launch_apps: list[str] | None = None,
                         cmds: list[str] = ()) -> dict:
    """The Application document `sealer run <app image>` saves: ConstructApplication fills
    `Kind` with the group version and `APIVersion` with the kind, swapped
    (cmd/sealer/cmd/utils/application.go@v0.11.0:23-37); the installer saves it with the Cluster
    (cmd/sealer/cmd/cluster/installer.go@v0.11.0:78-83)."""
    spec: dict[str, Any] = {}
    if cmds:
        spec["cmds"] = list(cmds)
    if launch_apps is not None:
        spec["launchApps"] = list(launch_apps)
    return {"apiVersion": "Application", "kind": "sealer.io/v2",
            "metadata": {"creationTimestamp": None, "name": name}, "spec": spec, "status": {}}


def clusterfile_text(docs: list[dict]) -> str:
    """SaveAll: each document through sigs.k8s.io/yaml, joined with `---\\n` in the order Cluster,
    Application, Configs, Plugins, kubeadm documents (pkg/clusterfile/clusterfile.go@v0.11.0
    :102-199)."""
    return "---\n".join(sigs_yaml(d) for d in docs)


# -- ConfigMap sealer-registry, reg-lvscare ----------------------------------------------------------

def registry_info(*, domain: str, port: int, username: str, password: str, ha: bool,
                  deploy_hosts: list[str], vip: str) -> str:
    """ConfigMap `kube-system/sealer-registry` key `registry`: RegistryInfo through kyaml's
    yaml.Marshal (go-yaml v3, which ignores json tags: field names lowercased, embedded structs
    as their lowercased type name, nil pointers `null`, net.IP through MarshalText)
    (pkg/cluster-runtime/installer.go@v0.11.0:43,55-56,417-442; pkg/registry/configurator.go
    :27-36; pkg/registry/local.go:58-67; types/api/v2/cluster_types.go:77-113). Non-HA keeps
    master0 only and no VIP."""
    local = {
        "localregistry": {
            "registryconfig": {"domain": domain, "port": port, "username": username,
                               "password": password},
            "ha": ha,
            "insecure": False,
            "cert": {"subjectaltname": None},
        },
        "deployhosts": list(deploy_hosts) if ha else list(deploy_hosts[:1]),
        "vip": vip if ha else "",
    }
    return go_yaml_v3({"external": None, "local": local})


def lvscare_manifest(*, vip: str, port: int, masters: list[str], domain: str,
                     insecure: bool = False) -> str:
    """`/etc/kubernetes/manifests/reg-lvscare.yaml` on nodes: the v1.Pod of pkg/ipvs/ipvs.go
    @v0.11.0:41-105 through sigs.k8s.io/yaml, written with `echo "<yaml>" > file`
    (ipvs.go:32-38): one more newline, and the shell eats the `""` of `type: ""` (the hostPath
    type), leaving `type: ` (null). Real servers sorted as strings, health path `/`, scheme
    https unless insecure (pkg/registry/local.go@v0.11.0:171-200)."""
    reals = [f"{m}:{port}" for m in sorted(masters)]
    args = ["care", "--vs", f"{vip}:{port}", "--health-path", "/", "--health-schem",
            "http" if insecure else "https"]
    for rs in reals:
        args += ["--rs", rs]
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"creationTimestamp": None, "name": LVSCARE_POD, "namespace": "kube-system"},
        "spec": {
            "containers": [{
                "args": args, "command": ["/usr/bin/lvscare"],
                "image": f"{domain}:{port}/{LVSCARE_IMAGE}", "imagePullPolicy": "IfNotPresent",
                "name": "main", "resources": {}, "securityContext": {"privileged": True},
                "volumeMounts": [{"mountPath": "/lib/modules", "name": "lib-modules",
                                  "readOnly": True}],
            }],
            "hostNetwork": True,
            "volumes": [{"hostPath": {"path": "/lib/modules", "type": ""}, "name": "lib-modules"}],
        },
        "status": {},
    }
    # Inside echo's double quotes each `""` closes and reopens the quoting: it vanishes.
    return sigs_yaml(pod).replace('""', "") + "\n"


def registry_settings_v08(*, ip: str | None, domain: str, port: int, username: str,
                          password: str) -> str:
    """v0.8's `<rootfs>/etc/registry.yml`: sealer's own settings (RegistryConfig
    {ip, domain, port (string), username, password}), read by GetRegistryConfig through
    sigs.k8s.io/yaml, never written by sealer: it comes with the cluster image (basefs
    sealer-v0.8.6 context/rootfs/etc/registry.yml has `domain`, quoted `port`, empty `username`,
    `password`). The lab writes the image's layout with the cluster's values
    (pkg/runtime/registry.go@v0.8.7:43-49,113-141)."""
    lines = []
    if ip:
        lines.append(f"ip: {ip}")
    lines += [f"domain: {domain}", f'port: "{port}"', f'username: "{username}"',
              f'password: "{password}"']
    return "\n".join(lines) + "\n"


def hosts_line(flavour: Flavour, ip: str, domain: str) -> str:
    """v0.11: CommandSetHostAlias's line (utils/shellcommand/hostsfile.go@v0.11.0:23-25);
    v0.8: RemoteAddEtcHosts's unmarked line (pkg/runtime/masters.go@v0.8.7:47)."""
    return f"{ip} {domain} {HOST_ALIAS_MARK}" if flavour.v011 else f"{ip} {domain}"
