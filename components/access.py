"""How the program reaches hosts: SSH settings shared by every per-host resource. A user other
than root runs every step through `sudo -n` (passwordless sudo is required, never prompted)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import pulumi
from pulumi_command import remote

# A host that is down but not marked down in config must fail the step fast, not after the
# provider's default 10 dials x 15 s.
DIAL_ERROR_LIMIT = 3
PER_DIAL_TIMEOUT_S = 5


@dataclass(frozen=True)
class JumpHost:
    host: str
    user: str = "root"
    port: int = 22


@dataclass(frozen=True)
class SshAccess:
    """SSH user, port and key or password for every cluster host. ``private_key`` and the
    passwords are secret Outputs (or None). ``hosts``: a host's own (user, port), where it
    differs (sealer's per-host ssh override); ``passwords``: a host's own password."""

    user: str
    port: int
    private_key: pulumi.Input[str] | None
    host_keys: dict[str, str] = field(default_factory=dict)
    jump: JumpHost | None = None
    hosts: dict[str, tuple[str, int]] = field(default_factory=dict)
    password: pulumi.Input[str] | None = None
    passwords: dict[str, pulumi.Input[str]] = field(default_factory=dict)

    def password_for(self, ip: str) -> pulumi.Input[str] | None:
        return self.passwords.get(ip, self.password)

    def user_for(self, ip: str) -> str:
        return self.hosts.get(ip, (self.user, self.port))[0]

    def as_root(self, ip: str, command: str) -> str:
        """``command`` as root on ``ip``: through `sudo -n` (never prompting) for another user."""
        return command if self.user_for(ip) == "root" else f"sudo -n {command}"

    def port_for(self, ip: str) -> int:
        return self.hosts.get(ip, (self.user, self.port))[1]

    def connection(self, ip: str) -> remote.ConnectionArgs:
        proxy = None
        if self.jump is not None:
            proxy = remote.ProxyConnectionArgs(
                host=self.jump.host, port=self.jump.port, user=self.jump.user,
                private_key=self.private_key,
                dial_error_limit=DIAL_ERROR_LIMIT, per_dial_timeout=PER_DIAL_TIMEOUT_S)
        return remote.ConnectionArgs(
            host=ip,
            port=self.port_for(ip),
            user=self.user_for(ip),
            private_key=self.private_key,
            password=self.password_for(ip),
            host_key=self.host_keys.get(ip),
            proxy=proxy,
            dial_error_limit=DIAL_ERROR_LIMIT,
            per_dial_timeout=PER_DIAL_TIMEOUT_S,
        )

    def _one_login_is_password(self, ip: str) -> bool:
        """Where one secret must do (sync-data.sh, fill-from-store.sh): the host's own password,
        else the cluster key, else the cluster password. sealer keeps both key and passwd and an
        adopted stack does too; the key goes first (a passwd in a Clusterfile goes stale)."""
        if ip in self.passwords:
            return True
        return self.private_key is None and self.password is not None

    def rsync_flags(self, ip: str) -> list[str]:
        """Flags of ``scripts/sync-data.sh`` for ``ip``; the key, or the host's password, goes
        on its stdin (``rsync_secret``)."""
        flags = ["--password-stdin" if self._one_login_is_password(ip) else "--key-stdin"]
        if self.user_for(ip) != "root":
            flags.append("--sudo")
        if ip in self.host_keys:
            flags += ["--host-key", self.host_keys[ip]]
        if self.jump is not None:
            flags += ["--jump", f"{self.jump.user}@{self.jump.host}:{self.jump.port}"]
        return flags

    def rsync_secret(self, ip: str) -> pulumi.Input[str]:
        """What ``rsync_flags`` says goes on sync-data.sh's stdin."""
        secret = self.password_for(ip) if self._one_login_is_password(ip) else self.private_key
        assert secret is not None, f"no SSH key or password for {ip}"
        return secret

    def pull_sources(self, ips: list[str]) -> list[str]:
        """``scripts/pull-data.sh`` arguments naming each source host, in order: ``--source IP
        PORT USER HOST_KEY|-``. Between cluster hosts there is no jump host; the host key is
        checked when the config gives one."""
        args: list[str] = []
        for ip in ips:
            args += ["--source", ip, str(self.port_for(ip)), self.user_for(ip),
                     self.host_keys.get(ip, "-")]
        return args

    def pull_credentials(self, ips: list[str]) -> pulumi.Output[str]:
        """What ``scripts/pull-data.sh`` reads on its stdin to log in to ``ips``
        (``credential_lines``). A secret Output: it travels only on the step's stdin."""
        passwords = {ip: self.password_for(ip) for ip in ips if self.password_for(ip) is not None}
        order = list(passwords)
        return pulumi.Output.secret(pulumi.Output.all(self.private_key, *passwords.values()).apply(
            lambda v: credential_lines(v[0], dict(zip(order, v[1:])))))


def credential_lines(key: str | None, passwords: dict[str, str]) -> str:
    """``key <base64>`` (the cluster key, if any) and ``password <ip> <base64>`` per source with
    its own password: one line each, so no secret's bytes can break the format."""
    out = [] if key is None else [f"key {_b64(key)}"]
    out += [f"password {ip} {_b64(p)}" for ip, p in passwords.items()]
    return "".join(line + "\n" for line in out)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
