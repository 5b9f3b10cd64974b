"""Pydantic models of the `sealer-registry` stack config (docs/design.md, "Stack config").

Field-level rules live on the models; rules that relate hosts across sections (master0 is a
master, down hosts and deploy hosts are cluster hosts, ...) live in `cross_problems` so the loader
can also run them on a partly invalid config and report everything in one pass.

Secrets are `SecretStr`. A value that is encrypted in the stack file and cannot be read offline
arrives as an `EncryptedSecret`; content checks (PEM parsing, htpasswd, ...) skip those.
"""

from __future__ import annotations

import difflib
import json
import os
import posixpath
import re
from enum import StrEnum
from pathlib import Path
from typing import Any, Iterable, Optional, get_args, get_origin

import yaml
from pydantic import (
    TypeAdapter,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from config.errors import Problem
from config.scalars import (
    ApiserverURL,
    AppName,
    ClusterName,
    DataRoot,
    DnsName,
    HostIP,
    HostName,
    ImageId,
    LocalPath,
    NonEmptyStr,
    NonEmptyText,
    Port,
    RegistryUser,
    SshUser,
    Text,
    _host_ip,
    _host_key,
    control_problem,
    show,
)

PROJECT = "sealer-registry"

# Dotted paths of every field that must be a Pulumi secret in the stack file.
SECRET_PATHS: tuple[str, ...] = (
    "cluster.ssh.private_key",
    "registry.password",
    "registry.tls.ca_key",
    "registry.tls.key",
    "registry.htpasswd",
    "kubernetes.kubeconfig",
)

ENCRYPTED_PLACEHOLDER = "<encrypted>"


class EncryptedSecret(SecretStr):
    """A secret that is present but still encrypted (offline validation); its content is unknown."""

    def __init__(self, ciphertext: str = "") -> None:
        super().__init__(ENCRYPTED_PLACEHOLDER)
        self.ciphertext = ciphertext


def is_encrypted(value: object) -> bool:
    return isinstance(value, EncryptedSecret)


class Distribution(StrEnum):
    PRE = "pre"
    POST = "post"


class AppType(StrEnum):
    HELM = "helm"
    KUBE = "kube"


# ---------------------------------------------------------------------------------------------
# Problem plumbing: a validator may report several problems, each with a path relative to it.

_PROBLEMS = "config_problems"


def join_path(base: str, rel: str) -> str:
    if not rel:
        return base
    if not base:
        return rel
    return base + rel if rel.startswith("[") else f"{base}.{rel}"


def _raise_problems(problems: list[tuple[str, str]]) -> None:
    if problems:
        text = "\n".join(f"{p or '.'}: {m}" for p, m in problems)
        raise PydanticCustomError(_PROBLEMS, "{text}", {"problems": list(problems), "text": text})


def _duplicates(items: list[str], field: str) -> list[tuple[str, str]]:
    seen: dict[str, int] = {}
    problems = []
    for i, item in enumerate(items):
        if item in seen:
            problems.append((f"{field}[{i}]", f"{item} is listed twice (also at {field}[{seen[item]}])"))
        else:
            seen[item] = i
    return problems


# ---------------------------------------------------------------------------------------------
# Content checks for secrets and PEM material (skipped for EncryptedSecret)


def _pem_certificate(text: str):
    from cryptography import x509

    try:
        certs = x509.load_pem_x509_certificates(text.encode())
    except ValueError:
        raise ValueError(f"{show(text)} is not a PEM certificate") from None
    return certs[0]


def _pem_private_key(text: str):
    from cryptography.hazmat.primitives import serialization

    try:
        return serialization.load_pem_private_key(text.encode(), password=None)
    except TypeError:
        raise ValueError("<secret> is a passphrase-protected key; give it unencrypted") from None
    except (ValueError, Exception) as e:  # cryptography raises ValueError / UnsupportedAlgorithm
        raise ValueError(f"<secret> is not a PEM private key ({type(e).__name__})") from None


def _public_der(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


_BCRYPT = re.compile(r"\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}")


# ---------------------------------------------------------------------------------------------
# Models


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    @classmethod
    def _problems_despite_errors(cls, data: dict) -> list[tuple[str, str]]:
        """Cross-field rules to check on raw input when some field failed (default: none)."""
        return []

    @model_validator(mode="wrap")
    @classmethod
    def _collect_all(cls, data: Any, handler: Any) -> Any:
        # A field error stops pydantic before the model's own rules run; run them anyway on the
        # raw input so one validation reports every problem.
        try:
            return handler(data)
        except ValidationError as e:
            extra = cls._problems_despite_errors(data) if isinstance(data, dict) else []
            if not extra:
                raise
            details = [_init_details(err) for err in e.errors(include_url=False)]
            text = "\n".join(f"{p}: {m}" for p, m in extra)
            details.append(
                InitErrorDetails(
                    type=PydanticCustomError(_PROBLEMS, "{text}", {"problems": extra, "text": text}),
                    loc=(),
                    input=data,
                )
            )
            raise ValidationError.from_exception_data(e.title, details, hide_input=True) from None


def _init_details(err: dict) -> InitErrorDetails:
    if err["type"] == _PROBLEMS:
        kind: Any = PydanticCustomError(_PROBLEMS, "{text}", err["ctx"])
        return InitErrorDetails(type=kind, loc=err["loc"], input=err.get("input"))
    details = InitErrorDetails(type=err["type"], loc=err["loc"], input=err.get("input"))
    if "ctx" in err:
        details["ctx"] = err["ctx"]
    return details


_ip_adapter: TypeAdapter[str] = TypeAdapter(HostIP)


def _valid_ips(value: Any) -> Optional[list[str]]:
    """All items as normalised IPs, or None unless every item is a valid IP (a partial list misleads)."""
    if not isinstance(value, list):
        return None
    try:
        return [_ip_adapter.validate_python(item) for item in value]
    except ValidationError:
        return None


def _sub(data: Any, key: str) -> dict:
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, dict) else {}


class JumpHost(_Model):
    host: HostName
    user: SshUser = "root"
    port: Port = 22


class SshConfig(_Model):
    user: SshUser = "root"
    port: Port = 22
    private_key: Optional[SecretStr] = None
    private_key_path: Optional[LocalPath] = None
    host_keys: dict[str, str] = Field(default_factory=dict)
    jump_host: Optional[JumpHost] = None

    @field_validator("host_keys")
    @classmethod
    def _check_host_keys(cls, value: dict[str, str]) -> dict[str, str]:
        problems, keys = [], {}
        for host, key in value.items():
            try:
                ip = _host_ip(host)
            except ValueError as e:
                problems.append((f"[{host}]", str(e)))
                continue
            try:
                keys[ip] = _host_key(key)
            except ValueError as e:
                problems.append((f"[{host}]", str(e)))
        _raise_problems(problems)
        return keys

    @model_validator(mode="after")
    def _check(self) -> "SshConfig":
        problems = []
        if (self.private_key is None) == (self.private_key_path is None):
            given = "both are set" if self.private_key is not None else "neither is set"
            problems.append(("", f"exactly one of private_key / private_key_path is required ({given})"))
        if self.private_key is not None and not is_encrypted(self.private_key):
            problem = _ssh_private_key_problem(self.private_key.get_secret_value())
            if problem:
                problems.append(("private_key", problem))
        _raise_problems(problems)
        return self


def _ssh_private_key_problem(text: str) -> str | None:
    from cryptography.hazmat.primitives import serialization

    data = text.encode()
    try:
        if b"OPENSSH PRIVATE KEY" in data:
            serialization.load_ssh_private_key(data, password=None)
        else:
            serialization.load_pem_private_key(data, password=None)
    except TypeError:
        return "<secret> is a passphrase-protected key; give it unencrypted"
    except Exception as e:  # ValueError, UnsupportedAlgorithm
        return f"<secret> is not an SSH private key ({type(e).__name__})"
    return None


def _host_list_problems(masters: list[str], nodes: list[str]) -> list[tuple[str, str]]:
    problems = []
    if not masters:
        problems.append(("masters", "[] must list at least one master"))
    problems += _duplicates(masters, "masters")
    where = {ip: f"cluster.masters[{i}]" for i, ip in reversed(list(enumerate(masters)))}
    for i, ip in enumerate(nodes):
        if ip in where:
            problems.append((f"nodes[{i}]", f"{ip} is also listed at {where[ip]}"))
    problems += _duplicates(nodes, "nodes")
    return problems


class ClusterConfig(_Model):
    name: ClusterName
    data_root: DataRoot = "/var/lib/sealer/data"
    masters: list[HostIP]
    nodes: list[HostIP] = Field(default_factory=list)
    ssh: SshConfig

    @model_validator(mode="after")
    def _check(self) -> "ClusterConfig":
        _raise_problems(_host_list_problems(self.masters, self.nodes))
        return self

    @classmethod
    def _problems_despite_errors(cls, data: dict) -> list[tuple[str, str]]:
        masters, nodes = _valid_ips(data.get("masters")), _valid_ips(data.get("nodes", []))
        if masters is None or nodes is None:
            return []
        return _host_list_problems(masters, nodes)

    @property
    def hosts(self) -> list[str]:
        return [*self.masters, *self.nodes]

    @property
    def rootfs(self) -> str:
        return posixpath.join(self.data_root, self.name, "rootfs")


class LocalRegistry(_Model):
    deploy_hosts: Optional[list[HostIP]] = None
    insecure_mode: StrictBool = False

    @field_validator("deploy_hosts")
    @classmethod
    def _check_deploy_hosts(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        if value is not None:
            if not value:
                _raise_problems([("", "[] must list at least one host (omit it to default to [master0])")])
            problems = [(p[len("deploy_hosts"):], m) for p, m in _duplicates(value, "deploy_hosts")]
            _raise_problems(problems)
        return value


class TlsConfig(_Model):
    ca_cert: Optional[NonEmptyStr] = None
    ca_key: Optional[SecretStr] = None
    cert: Optional[NonEmptyStr] = None
    key: Optional[SecretStr] = None

    @model_validator(mode="after")
    def _check(self) -> "TlsConfig":
        problems: list[tuple[str, str]] = []
        if (self.cert is None) != (self.key is None):
            missing = "key" if self.key is None else "cert"
            problems.append((missing, "is required together with " + ("cert" if missing == "key" else "key")))
        if self.ca_key is not None and self.ca_cert is None:
            problems.append(("ca_cert", "is required together with ca_key"))
        issue = self.ca_cert is not None and self.ca_key is not None
        adopt = self.cert is not None and self.key is not None
        if not problems and not issue and not adopt:
            given = ", ".join(k for k in ("ca_cert", "ca_key", "cert", "key") if getattr(self, k) is not None)
            problems.append(("", f"needs ca_cert+ca_key (to issue a leaf) or cert+key (to adopt one); got {{{given}}}"))

        parsed: dict[str, Any] = {}
        for name in ("ca_cert", "cert"):
            text = getattr(self, name)
            if text is not None:
                try:
                    parsed[name] = _pem_certificate(text)
                except ValueError as e:
                    problems.append((name, str(e)))
        for name in ("ca_key", "key"):
            secret = getattr(self, name)
            if secret is not None and not is_encrypted(secret):
                try:
                    parsed[name] = _pem_private_key(secret.get_secret_value())
                except ValueError as e:
                    problems.append((name, str(e)))
        for cert_name, key_name in (("ca_cert", "ca_key"), ("cert", "key")):
            if cert_name in parsed and key_name in parsed:
                if _public_der(parsed[cert_name].public_key()) != _public_der(parsed[key_name].public_key()):
                    problems.append((key_name, f"<secret> does not match the public key of {cert_name}"))
        if "ca_cert" in parsed and "cert" in parsed and parsed["ca_cert"] != parsed["cert"]:
            try:
                parsed["cert"].verify_directly_issued_by(parsed["ca_cert"])
            except Exception:
                subject = parsed["cert"].subject.rfc4514_string()
                problems.append(("cert", f"{subject!r} is not issued by ca_cert"))
        _raise_problems(problems)
        return self


# sealer's init-registry.sh runs `sed -i "s/5000/$PORT/g"` on the registry config before it mounts
# it into the registry container: whatever else holds this string is rewritten on every launch.
_SEALER_SED = "5000"


def _sealer_sed_problems(domain: str, port: int) -> list[tuple[str, str]]:
    problems = []
    if _SEALER_SED in domain:
        problems.append(("domain", f"{domain!r} contains '{_SEALER_SED}': sealer's init-registry.sh "
                                   f"replaces every '{_SEALER_SED}' in etc/registry_config.yml with the port"))
    if _SEALER_SED in str(port) and port != int(_SEALER_SED):
        grown = f":{port}".replace(_SEALER_SED, str(port))
        problems.append(("port", f"{port} contains '{_SEALER_SED}': sealer's init-registry.sh runs "
                                 f"`sed s/{_SEALER_SED}/{port}/g` on its config, turning ':{port}' into "
                                 f"'{grown}'; use 5000 or a port without '{_SEALER_SED}'"))
    return problems


class RegistryConfig(_Model):
    domain: DnsName = "sea.hub"
    port: Port = 5000
    username: Optional[RegistryUser] = None
    password: Optional[SecretStr] = None
    local_registry: LocalRegistry = Field(default_factory=LocalRegistry)
    tls: Optional[TlsConfig] = None
    htpasswd: Optional[SecretStr] = None

    @model_validator(mode="after")
    def _check(self) -> "RegistryConfig":
        problems: list[tuple[str, str]] = []
        if self.username is not None and self.password is None:
            problems.append(("password", f"is required when username is set (username: {self.username!r})"))
        if self.password is not None and self.username is None:
            problems.append(("username", "is required when password is set"))
        if self.password is not None and not is_encrypted(self.password):
            problem = _password_problem(self.password.get_secret_value())
            if problem:
                problems.append(("password", problem))
        insecure = self.local_registry.insecure_mode
        if self.tls is None and not insecure:
            problems.append(("tls", "is required unless local_registry.insecure_mode is true (run `python -m cli init-pki`)"))
        if self.tls is not None and insecure:
            problems.append(("tls", "must not be set when local_registry.insecure_mode is true (got tls and insecure_mode: true)"))
        if self.htpasswd is not None:
            problems += self._htpasswd_problems()
        problems += _sealer_sed_problems(self.domain, self.port)
        _raise_problems(problems)
        return self

    def _htpasswd_problems(self) -> list[tuple[str, str]]:
        if self.username is None or self.password is None:
            return [("htpasswd", "requires username and password (the program logs in to the registry)")]
        assert self.htpasswd is not None
        if is_encrypted(self.htpasswd):
            return []
        entries: dict[str, str] = {}
        for number, line in enumerate(self.htpasswd.get_secret_value().splitlines(), start=1):
            if not line.strip():
                continue
            user, sep, digest = line.partition(":")
            if not sep or not user or not _BCRYPT.fullmatch(digest.strip()):
                return [("htpasswd", f"<secret> line {number} is not 'user:<bcrypt hash>' (the registry accepts only bcrypt)")]
            entries[user] = digest.strip()
        if not entries:
            return [("htpasswd", "<secret> has no entries")]
        if self.username not in entries:
            return [("htpasswd", f"<secret> has no entry for username {self.username!r} (users: {', '.join(entries)})")]
        if not is_encrypted(self.password):
            import bcrypt

            if not bcrypt.checkpw(self.password.get_secret_value().encode(), entries[self.username].encode()):
                return [("htpasswd", f"<secret> entry for {self.username!r} does not match registry.password")]
        return []


_BCRYPT_MAX_BYTES = 72


def _password_problem(password: str) -> str | None:
    if not password:
        return "<secret> must not be empty"
    if control_problem(password):
        # verify-registry.sh reads it as one line; docker login and curl's config take one line.
        return "<secret> holds a line break or control character (the password is handed on as one line)"
    if len(password.encode()) > _BCRYPT_MAX_BYTES:
        return f"<secret> is {len(password.encode())} bytes in UTF-8; htpasswd's bcrypt uses at most {_BCRYPT_MAX_BYTES}"
    return None


class Application(_Model):
    name: AppName
    image_id: ImageId
    type: AppType
    launch_cmd: str = ""  # shell code by design: sealer runs it; it only travels inside JSON
    version: Text = ""


class Launch(_Model):
    app_names: list[str] = Field(default_factory=list)


def _app_name_problems(names: list[str], launch: list[str]) -> list[tuple[str, str]]:
    problems = [(f"{p}.name", m) for p, m in _duplicates(names, "applications")]
    for i, name in enumerate(launch):
        if name not in names:
            problems.append((f"launch.app_names[{i}]", f"{name!r} names no application (applications: {', '.join(names) or 'none'})"))
    return problems


class BootHistory(_Model):
    """sealer's boot-history document (`application.json`)."""

    type: NonEmptyText
    applications: list[Application] = Field(default_factory=list)
    launch: Launch = Field(default_factory=Launch)

    @model_validator(mode="after")
    def _check(self) -> "BootHistory":
        _raise_problems(_app_name_problems([a.name for a in self.applications], self.launch.app_names))
        return self

    @classmethod
    def _problems_despite_errors(cls, data: dict) -> list[tuple[str, str]]:
        apps = data.get("applications", [])
        launch = _sub(data, "launch").get("app_names", [])
        if not isinstance(apps, list) or not isinstance(launch, list):
            return []
        names = [a.get("name") if isinstance(a, dict) else None for a in apps]
        if not all(isinstance(n, str) for n in names) or not all(isinstance(n, str) for n in launch):
            return []
        return _app_name_problems(names, launch)

    @property
    def image_ids(self) -> list[str]:
        return list(dict.fromkeys(a.image_id for a in self.applications))


def resolve_path(value: str, base_dir: str | os.PathLike | None) -> Path:
    path = Path(os.path.expanduser(value))
    if not path.is_absolute():
        path = Path(base_dir or os.getcwd()) / path
    return path


class AppsConfig(_Model):
    history: Optional[BootHistory] = None
    history_file: Optional[LocalPath] = None
    image_store: LocalPath
    cluster_image_id: ImageId

    _loaded_history: Optional[BootHistory] = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> "AppsConfig":
        if (self.history is None) == (self.history_file is None):
            given = "both are set" if self.history is not None else "neither is set"
            _raise_problems([("", f"exactly one of history / history_file is required ({given})")])
        if self.history_file is not None:
            base_dir = (info.context or {}).get("base_dir")
            self._loaded_history = _load_history_file(self.history_file, base_dir)
        return self

    @property
    def boot_history(self) -> BootHistory:
        history = self.history if self.history is not None else self._loaded_history
        assert history is not None
        return history


def _load_history_file(given: str, base_dir: Any) -> BootHistory:
    path = resolve_path(given, base_dir)
    where = given if str(path) == given else f"{given} ({path})"
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        _raise_problems([("history_file", f"cannot read {where}: {e.strerror or e}")])
    except ValueError as e:
        _raise_problems([("history_file", f"{where} is not valid JSON: {e}")])
    try:
        return BootHistory.model_validate(data)
    except ValidationError as e:
        problems = explain(e, root=BootHistory)
        _raise_problems([("history_file", f"{where}: {p.path or '.'}: {p.message}") for p in problems])
    raise AssertionError("unreachable")


class KubernetesConfig(_Model):
    kubeconfig: Optional[SecretStr] = None
    kubeconfig_path: Optional[LocalPath] = None
    context: Text = ""
    cluster_identifier: Optional[ClusterName] = None
    # The apiservers the records are written through, in order; the first whose host is not in
    # down_hosts is used (kubeapi.py). Unset: https://<ip>:6443 of master0, then the other masters.
    endpoints: Optional[list[ApiserverURL]] = None

    @model_validator(mode="after")
    def _check(self) -> "KubernetesConfig":
        problems = []
        if self.endpoints is not None:
            if not self.endpoints:
                problems.append(("endpoints", "is empty: list at least one https:// URL, or leave it "
                                 "out to use https://<ip>:6443 of the masters"))
            problems += _duplicates(self.endpoints, "endpoints")
        if (self.kubeconfig is None) == (self.kubeconfig_path is None):
            given = "both are set" if self.kubeconfig is not None else "neither is set"
            problems.append(("", f"exactly one of kubeconfig / kubeconfig_path is required ({given})"))
        if self.kubeconfig is not None and not is_encrypted(self.kubeconfig):
            problems += self._kubeconfig_problems(self.kubeconfig.get_secret_value())
        _raise_problems(problems)
        return self

    def _kubeconfig_problems(self, text: str) -> list[tuple[str, str]]:
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError:
            doc = None
        if not isinstance(doc, dict) or not isinstance(doc.get("clusters"), list):
            return [("kubeconfig", "<secret> is not a kubeconfig (a YAML document with 'clusters')")]
        contexts = [c.get("name") for c in doc.get("contexts") or [] if isinstance(c, dict)]
        if self.context and self.context not in contexts:
            return [("context", f"{self.context!r} is not a context of kubeconfig (contexts: {', '.join(map(str, contexts)) or 'none'})")]
        return []


class StackConfig(_Model):
    """The validated stack config; the only thing components receive about the cluster."""

    master0: HostIP
    down_hosts: list[HostIP] = Field(default_factory=list)
    distribution: Distribution
    cluster: ClusterConfig
    registry: RegistryConfig
    apps: AppsConfig
    kubernetes: KubernetesConfig

    _secure_paths: frozenset[str] = PrivateAttr(default=frozenset())

    @model_validator(mode="after")
    def _check(self) -> "StackConfig":
        _raise_problems(
            cross_problems(
                master0=self.master0,
                down_hosts=self.down_hosts,
                masters=self.cluster.masters,
                nodes=self.cluster.nodes,
                deploy_hosts=self.registry.local_registry.deploy_hosts,
                host_keys=list(self.cluster.ssh.host_keys),
            )
        )
        if self.kubernetes.cluster_identifier is None:
            self.kubernetes.cluster_identifier = self.cluster.name
        return self

    @classmethod
    def _problems_despite_errors(cls, data: dict) -> list[tuple[str, str]]:
        try:
            master0: Optional[str] = _ip_adapter.validate_python(data.get("master0"))
        except ValidationError:
            master0 = None
        cluster, registry = _sub(data, "cluster"), _sub(data, "registry")
        masters, nodes = _valid_ips(cluster.get("masters")), _valid_ips(cluster.get("nodes", []))
        if masters is None or nodes is None:
            masters, nodes = [], []
        deploy = _sub(registry, "local_registry").get("deploy_hosts")
        host_keys = _sub(_sub(cluster, "ssh"), "host_keys")
        return cross_problems(
            master0=master0,
            down_hosts=_valid_ips(data.get("down_hosts", [])) or [],
            masters=masters,
            nodes=nodes,
            deploy_hosts=_valid_ips(deploy) if deploy is not None else None,
            host_keys=[ip for k in host_keys for ip in (_valid_ips([k]) or [])],
        )

    # -- derived views the program uses --------------------------------------------------------
    @property
    def hosts(self) -> list[str]:
        """Every cluster host, masters first."""
        return self.cluster.hosts

    @property
    def live_hosts(self) -> list[str]:
        return [h for h in self.hosts if h not in self.down_hosts]

    @property
    def deploy_hosts(self) -> list[str]:
        """Hosts that run a registry replica (default: master0 only)."""
        return list(self.registry.local_registry.deploy_hosts or [self.master0])

    @property
    def live_deploy_hosts(self) -> list[str]:
        return [h for h in self.deploy_hosts if h not in self.down_hosts]

    @property
    def rootfs(self) -> str:
        return self.cluster.rootfs

    @property
    def history(self) -> BootHistory:
        return self.apps.boot_history

    @property
    def image_ids(self) -> list[str]:
        """Distinct images the registry must serve: the cluster image first, then the apps'."""
        return list(dict.fromkeys([self.apps.cluster_image_id, *self.history.image_ids]))

    @property
    def secure_paths(self) -> frozenset[str]:
        """Dotted paths (offline) or top-level keys (run time) that were Pulumi secrets."""
        return self._secure_paths


def cross_problems(
    *,
    master0: Optional[str],
    down_hosts: Iterable[str],
    masters: list[str],
    nodes: list[str],
    deploy_hosts: Optional[list[str]],
    host_keys: Iterable[str] = (),
) -> list[tuple[str, str]]:
    """Rules that relate hosts across sections; inputs are already-valid (normalised) IPs.

    Called by `StackConfig` and, on a partly invalid config, by the loader with whatever parsed.
    """
    problems: list[tuple[str, str]] = []
    hosts = [*masters, *nodes]
    down = list(down_hosts)
    listing = ", ".join(hosts)
    if master0 is not None and masters and master0 not in masters:
        problems.append(("master0", f"{master0} is not a master (masters: {', '.join(masters)})"))
    if master0 is not None and master0 in down:
        problems.append(("master0", f"{master0} is listed in down_hosts; choose a live master as master0"))
    if hosts:
        for i, ip in enumerate(down):
            if ip not in hosts:
                problems.append((f"down_hosts[{i}]", f"{ip} is not a cluster host (hosts: {listing})"))
    problems += _duplicates(down, "down_hosts")
    if deploy_hosts is not None:
        if hosts:
            for i, ip in enumerate(deploy_hosts):
                if ip not in hosts:
                    problems.append((f"registry.local_registry.deploy_hosts[{i}]", f"{ip} is not a cluster host (hosts: {listing})"))
        if master0 is not None and deploy_hosts and master0 not in deploy_hosts:
            problems.append(("registry.local_registry.deploy_hosts", f"master0 {master0} is not a deploy host (deploy_hosts: {', '.join(deploy_hosts)})"))
    if hosts:
        for ip in host_keys:
            if ip not in hosts:
                problems.append((f"cluster.ssh.host_keys[{ip}]", f"{ip} is not a cluster host (hosts: {listing})"))
    return problems


# ---------------------------------------------------------------------------------------------
# pydantic errors -> problems


def _model_in(annotation: Any) -> Optional[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _model_at(root: type[BaseModel], loc: tuple) -> Optional[type[BaseModel]]:
    model: Optional[type[BaseModel]] = root
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if model else None
        if field is None:
            return None
        origin = get_origin(field.annotation)
        if origin is dict:
            return None
        model = _model_in(field.annotation)
    return model


def loc_path(loc: Iterable[Any]) -> str:
    path = ""
    for part in loc:
        path = path + f"[{part}]" if isinstance(part, int) else join_path(path, str(part))
    return path


_TYPE_WORDS = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
}


def _message(err: dict, path: str, root: type[BaseModel]) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    shown = "<secret>" if path in SECRET_PATHS else show(value)
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        model = _model_at(root, tuple(err["loc"][:-1]))
        if model is None:
            return "unknown key"
        allowed = list(model.model_fields)
        key = str(err["loc"][-1])
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown key {key!r} ({hint}allowed: {', '.join(allowed)})"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    if kind == "enum":
        return f"{shown} is not one of {ctx.get('expected')}"
    if kind in _TYPE_WORDS:
        return f"expected {_TYPE_WORDS[kind]}, got {shown}"
    return f"{err['msg']} (got {shown})"


def explain(error: ValidationError, root: type[BaseModel] = None) -> list[Problem]:  # type: ignore[assignment]
    """Turn a pydantic ValidationError into problems with dotted paths, one per problem."""
    root = root or StackConfig
    problems: list[Problem] = []
    for err in error.errors(include_url=False):
        base = loc_path(err["loc"])
        if err["type"] == _PROBLEMS:
            found = [Problem(join_path(base, rel), message) for rel, message in err["ctx"]["problems"]]
        else:
            found = [Problem(base, _message(err, base, root))]
        problems += [p for p in found if p not in problems]
    return problems
