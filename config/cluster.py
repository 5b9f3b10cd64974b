"""The `cluster` section: the sealer cluster's name, data root, hosts and how to reach them by SSH.

Owns the rules within the section (at least one master, no host listed twice, exactly one source
of the SSH private key and its content, host keys per host). Rules that relate these hosts to
other sections (master0, down_hosts, deploy_hosts, host keys of cluster hosts) are in
config/stack.py.
"""

from __future__ import annotations

import posixpath
from typing import Any, Optional

from pydantic import Field, SecretStr, field_validator, model_validator

from config.base import ConfigModel, duplicates, is_encrypted, raise_problems, valid_ips
from config.scalars import (
    ClusterName,
    DataRoot,
    HostIP,
    HostName,
    LocalPath,
    Port,
    SshUser,
    _host_ip,
    _host_key,
    control_problem,
)


class JumpHost(ConfigModel):
    host: HostName
    user: SshUser = "root"
    port: Port = 22


class HostSsh(ConfigModel):
    """One host's own SSH settings (sealer's per-host `ssh` override); unset fields take the
    cluster's (`cluster.ssh.user`, `cluster.ssh.port`, `cluster.ssh.password`)."""

    user: Optional[SshUser] = None
    port: Optional[Port] = None
    password: Optional[SecretStr] = None

    @field_validator("password")
    @classmethod
    def _check_password(cls, value: Optional[SecretStr]) -> Optional[SecretStr]:
        if value is not None and not is_encrypted(value):
            raise_problems([("", p) for p in [_ssh_password_problem(value.get_secret_value())] if p])
        return value


class SshConfig(ConfigModel):
    user: SshUser = "root"
    port: Port = 22
    private_key: Optional[SecretStr] = None
    private_key_path: Optional[LocalPath] = None
    password: Optional[SecretStr] = None
    host_keys: dict[str, str] = Field(default_factory=dict)
    jump_host: Optional[JumpHost] = None
    hosts: dict[str, HostSsh] = Field(default_factory=dict)

    @field_validator("hosts", mode="before")
    @classmethod
    def _check_hosts(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        problems, hosts = [], {}
        for host, settings in value.items():
            try:
                hosts[_host_ip(host)] = settings
            except ValueError as e:
                problems.append((f"[{host}]", str(e)))
        raise_problems(problems)
        return hosts

    def user_for(self, ip: str) -> str:
        override = self.hosts.get(ip)
        return override.user if override is not None and override.user is not None else self.user

    def port_for(self, ip: str) -> int:
        override = self.hosts.get(ip)
        return override.port if override is not None and override.port is not None else self.port

    def password_for(self, ip: str) -> Optional[SecretStr]:
        override = self.hosts.get(ip)
        return override.password if override is not None and override.password is not None else self.password

    @property
    def has_key(self) -> bool:
        return self.private_key is not None or self.private_key_path is not None

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
        raise_problems(problems)
        return keys

    @model_validator(mode="after")
    def _check(self) -> "SshConfig":
        problems = []
        if self.private_key is not None and self.private_key_path is not None:
            problems.append(("", "at most one of private_key / private_key_path (both are set)"))
        if self.password is not None and not is_encrypted(self.password):
            problem = _ssh_password_problem(self.password.get_secret_value())
            if problem:
                problems.append(("password", problem))
        if self.private_key is not None and not is_encrypted(self.private_key):
            problem = _ssh_private_key_problem(self.private_key.get_secret_value())
            if problem:
                problems.append(("private_key", problem))
        raise_problems(problems)
        return self


def _ssh_password_problem(password: str) -> str | None:
    if not password:
        return "<secret> must not be empty"
    if control_problem(password):
        # OpenSSH's askpass helper hands it on as one line.
        return "<secret> holds a line break or control character"
    return None


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
    problems += duplicates(masters, "masters")
    where = {ip: f"cluster.masters[{i}]" for i, ip in reversed(list(enumerate(masters)))}
    for i, ip in enumerate(nodes):
        if ip in where:
            problems.append((f"nodes[{i}]", f"{ip} is also listed at {where[ip]}"))
    problems += duplicates(nodes, "nodes")
    return problems


class ClusterConfig(ConfigModel):
    name: ClusterName
    data_root: DataRoot = "/var/lib/sealer/data"
    masters: list[HostIP]
    nodes: list[HostIP] = Field(default_factory=list)
    ssh: SshConfig

    @model_validator(mode="after")
    def _check(self) -> "ClusterConfig":
        problems = _host_list_problems(self.masters, self.nodes)
        if not self.ssh.has_key:
            without = [ip for ip in self.hosts if self.ssh.password_for(ip) is None]
            if without:
                problems.append(("ssh", "needs private_key or private_key_path, or a password for "
                                        f"every host (none for {', '.join(without)})"))
        raise_problems(problems)
        return self

    @classmethod
    def _problems_despite_errors(cls, data: dict) -> list[tuple[str, str]]:
        masters, nodes = valid_ips(data.get("masters")), valid_ips(data.get("nodes", []))
        if masters is None or nodes is None:
            return []
        return _host_list_problems(masters, nodes)

    @property
    def hosts(self) -> list[str]:
        return [*self.masters, *self.nodes]

    @property
    def rootfs(self) -> str:
        return posixpath.join(self.data_root, self.name, "rootfs")
