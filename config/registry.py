"""The `registry` section: the builtin registry's name, port, login, TLS material and replicas.

Owns the rules within the section and the content checks of its material: TLS certificates and
keys parse and match (a leaf is issued by the CA), the htpasswd holds a bcrypt entry for the
username that matches the password, the password can travel as one line, and nothing is
rewritten by sealer's init-registry.sh. Whether deploy_hosts are cluster hosts is checked in
config/stack.py. Content checks skip values still encrypted (offline validation).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Optional

from pydantic import Field, SecretStr, StrictBool, field_validator, model_validator

from config.base import ConfigModel, duplicates, is_encrypted, raise_problems
from config.scalars import (CheckInterval, DnsName, HostIP, LocalPath, NonEmptyStr, Port,
                            RegistryUser, control_problem, show)
from material.certs import der_of, load_pem_certificate
from material.registry_config import brought_config_problems

def _pem_certificate(text: str):
    """The first certificate of ``text``; sealer's serial-0 CA-as-leaf loads quietly
    (material.certs: no warning printed, a fallback parse if a cryptography release refuses it)."""
    try:
        return load_pem_certificate(text)
    except ValueError:
        raise ValueError(f"{show(text)} is not a PEM certificate") from None


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



class Standby(StrEnum):
    """What a deploy host other than master0 does with its replica of the registry data."""

    COLD = "cold"  # the registry is kept stopped there (a recovery launches it)
    WARM = "warm"  # the registry serves it read-only (distribution's storage.maintenance.readonly)


# The tarball `python -m cli haproxy-bundle` writes (cli/haproxy_bundle.py), the only name the
# node script takes: the Debian version without its epoch (it names a directory on the node).
HAPROXY_BUNDLE_NAME = re.compile(r"haproxy-(?P<version>[0-9][A-Za-z0-9.+~-]*)-(?P<arch>amd64)\.tar\.gz")


class EntryHaproxy(StrEnum):
    """Which HAProxy the node entry point runs."""

    AUTO = "auto"      # the node's own when installed and >= 2.2, else the program's bundle
    SYSTEM = "system"  # the node's own only: a node without it refuses (nothing is shipped)
    BUNDLE = "bundle"  # the program's bundle always, whatever the node has


class NodeEntry(ConfigModel):
    """A node-local entry point to the registry on every host that runs none (issue 21): HAProxy
    in TCP mode (TLS passed through) listening on ``address``, which the node's /etc/hosts maps
    the domain to, with master0 as its server and the warm standbys as backup servers, each
    health-checked (``GET /v2/`` over TLS every second). A pull never waits on a client's connect
    timeout: a connection HAProxy cannot open to master0 within 0.3 s is retried on a standby.
    ``address`` is held by the node's ``lo`` (like sealer's HA VIP, 10.103.97.2, which is free in
    a cluster without ``ha``); ``stats_port`` is HAProxy's stats page on the node's 127.0.0.1,
    which ``status`` reads."""

    address: HostIP
    stats_port: Port = 5099
    # Seconds between HAProxy's health checks of each server. Each node checks every registry
    # host: 500 nodes x 3 servers at 1 s are 1,500 TLS handshakes a second on the masters; a
    # longer interval only delays noticing a server that came back (a dead one is left at the
    # first failed connect, `observe layer4`).
    check_interval_s: CheckInterval = 1
    # auto and bundle copy the bundle to every entry node (the program cannot know at preview
    # which nodes lack haproxy; one copy per node and bundle, kept by its hash); system copies
    # nothing.
    haproxy: EntryHaproxy = EntryHaproxy.AUTO
    # The tarball on the operator's machine; unset: the one `make haproxy-bundle` wrote under
    # .cache/haproxy-bundle/ (__main__.py finds it, or says to build it).
    bundle: Optional[LocalPath] = None

    @field_validator("bundle")
    @classmethod
    def _check_bundle(cls, value: Optional[str]) -> Optional[str]:
        if value is not None:
            name = value.rstrip("/").rsplit("/", 1)[-1]
            if not HAPROXY_BUNDLE_NAME.fullmatch(name):
                raise_problems([("", f"{value!r} is not a bundle of `make haproxy-bundle`: its file "
                                     f"name must be haproxy-<debian version>-amd64.tar.gz")])
        return value

    @model_validator(mode="after")
    def _check_mode(self) -> "NodeEntry":
        if self.bundle is not None and self.haproxy is EntryHaproxy.SYSTEM:
            raise_problems([("bundle", f"is not used with haproxy: system (got bundle: {self.bundle!r}); "
                                       f"use haproxy: auto or bundle to ship it, or remove it")])
        return self


class LocalRegistry(ConfigModel):
    deploy_hosts: Optional[list[HostIP]] = None
    insecure_mode: StrictBool = False
    standby: Standby = Standby.COLD
    # sealer's HA layout (its default since v0.9, pkg/registry/local.go@v0.11.0:148-237): a
    # read-write registry on every master, masters map the domain to themselves, nodes to a
    # node-local IPVS VIP kept by reg-lvscare. The program keeps the registries and the trust, and
    # rewrites no hosts line (config/stack.py: ha_problems; topology.py: the roles).
    ha: StrictBool = False
    node_entry: Optional[NodeEntry] = None

    @model_validator(mode="after")
    def _check_node_entry(self) -> "LocalRegistry":
        entry = self.node_entry
        if entry is None:
            return self
        problems = []
        if self.ha:
            problems.append(("node_entry", "cannot be combined with ha: true: in sealer's HA layout nodes "
                                           "already reach the masters through lvscare's VIP"))
        elif self.standby is not Standby.WARM:
            problems.append(("node_entry", f"needs standby: warm (got standby: {self.standby}): the entry "
                                           "point's backup servers are the warm standbys; with cold "
                                           "standbys it would only ever reach master0"))
        if self.insecure_mode:
            problems.append(("node_entry", "needs TLS (got insecure_mode: true): its health check is "
                                           "GET /v2/ over TLS verified by the cluster's CA"))
        raise_problems(problems)
        return self

    @field_validator("deploy_hosts")
    @classmethod
    def _check_deploy_hosts(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        if value is not None:
            if not value:
                raise_problems([("", "[] must list at least one host (omit it to default to [master0])")])
            problems = [(p[len("deploy_hosts"):], m) for p, m in duplicates(value, "deploy_hosts")]
            raise_problems(problems)
        return value


class TlsConfig(ConfigModel):
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
        if "ca_cert" in parsed and "cert" in parsed and der_of(self.ca_cert) != der_of(self.cert):
            try:
                parsed["cert"].verify_directly_issued_by(parsed["ca_cert"])
            except Exception:
                subject = parsed["cert"].subject.rfc4514_string()
                problems.append(("cert", f"{subject!r} is not issued by ca_cert"))
        raise_problems(problems)
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


class RegistryConfig(ConfigModel):
    domain: DnsName = "sea.hub"
    port: Port = 5000
    username: Optional[RegistryUser] = None
    password: Optional[SecretStr] = None
    local_registry: LocalRegistry = Field(default_factory=LocalRegistry)
    tls: Optional[TlsConfig] = None
    htpasswd: Optional[SecretStr] = None
    # The registry config to write as-is (an adopted cluster's etc/registry_config.yml).
    config: Optional[NonEmptyStr] = None

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
        if self.config is not None:
            problems += [("config", p) for p in brought_config_problems(self.config, self.port)]
        raise_problems(problems)
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


_BCRYPT = re.compile(r"\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}")
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
