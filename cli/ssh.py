"""SSH to the cluster's hosts from the operator's machine: OpenSSH with the stack's settings.

One ``SshAccess`` per command (``cli.session.Session.ssh``): the key file (``--ssh-key``, the
configured path, or the stack's secret key decrypted by the engine into a 0600 temp file) and a
known_hosts file of the pinned host keys live as long as it does.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import cache
from pathlib import Path
from typing import Callable, Iterator, Sequence

from cli.common import CliError, resolve_local_path
from components.remote_scripts import ScriptRun
from config import StackConfig

CONNECT_TIMEOUT_S = 3
HOST_DEADLINE_S = 15.0     # one command: connect + key exchange + the script
DEADLINE_ERROR = "ssh: timed out after"  # how run() reports a command past its deadline


# Key exchange offered first. OpenSSH 9.0-9.8 put sntrup761x25519-sha512 first by default, whose
# key generation costs the client about 140 ms of CPU a session on this project's 2-core test
# machine, against about 10 ms for curve25519-sha256 (30 sessions with each: 6.2 s of the
# machine's CPU against 1.8 s, both sides counted; session 15). `status` and the recovery's checks
# open one session a host: 500 nodes paid 70 s of the operator's CPU for it. mlkem768x25519-sha256
# (OpenSSH 9.9+: post-quantum and cheap) goes first where the client has it; else
# curve25519-sha256, the first choice of Go's x/crypto/ssh, which sealer and pulumi-command dial
# the same hosts with. "^" puts it at the head of the client's default list: every other algorithm
# stays offered, for a server that has neither.
FAST_KEX = ("mlkem768x25519-sha256", "curve25519-sha256")


@cache
def kex_option() -> list[str]:
    """``-o KexAlgorithms=^<the fastest of FAST_KEX this ssh knows>`` (nothing if it knows none)."""
    try:
        known = subprocess.run(["ssh", "-Q", "kex"], capture_output=True, text=True,
                               timeout=10).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return []
    for kex in FAST_KEX:
        if kex in known:
            return ["-o", f"KexAlgorithms=^{kex}"]
    return []


def ssh_error(stderr: str, returncode: int) -> str:
    """The telling line of an ssh failure (`Connection timed out`, `Connection refused`, ...)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("ssh:") or "Permission denied" in line or "Host key" in line:
            return line.removeprefix("ssh: ").split(": ", 1)[-1] if line.startswith("ssh:") else line
    return lines[-1] if lines else f"ssh exited {returncode}"


class SshAccess:
    """ssh argv for the cluster's hosts, from the stack config (user, port, key, pinned host keys,
    jump host, passwords). Use as a context manager: it owns a temp dir for known_hosts and, for
    hosts logged in to with a password, a 0600 password file and the askpass helper that prints
    it (ssh asks it: SSH_ASKPASS_REQUIRE=force); no password is ever in argv or the environment."""

    def __init__(self, config: StackConfig, key_file: Path | None,
                 passwords: dict[str, str] | None = None,
                 gate: AbstractContextManager | None = None):
        """``gate``: held around each ssh run, e.g. a semaphore shared by several stacks' probes
        (`status --all`) so that no more than N sessions run at once overall."""
        self.config = config
        self.key_file = key_file
        self.gate = gate if gate is not None else nullcontext()
        self._tmp = tempfile.TemporaryDirectory(prefix="sealer-cli-ssh-")
        self.known_hosts = Path(self._tmp.name) / "known_hosts"
        ssh = config.cluster.ssh
        lines = []
        for ip, key in ssh.host_keys.items():
            port = ssh.port_for(ip)
            name = ip if port == 22 else f"[{ip}]:{port}"
            lines.append(f"{name} {key}\n")
        self.known_hosts.write_text("".join(lines))
        self._askpass: dict[str, Path] = {}
        for i, (ip, password) in enumerate(sorted((passwords or {}).items())):
            secret = Path(self._tmp.name) / f"password-{i}"
            fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(password)
            helper = Path(self._tmp.name) / f"askpass-{i}"
            helper.write_text(f"#!/bin/sh\nexec cat '{secret}'\n")
            helper.chmod(0o700)
            self._askpass[ip] = helper

    def __enter__(self) -> "SshAccess":
        return self

    def __exit__(self, *exc) -> None:
        self._tmp.cleanup()

    def argv(self, ip: str, connect_timeout: int = CONNECT_TIMEOUT_S,
             options: Sequence[str] = ()) -> list[str]:
        """``options``: more ssh options, e.g. a ControlPath (`cli watch` keeps one connection per
        prober)."""
        ssh = self.config.cluster.ssh
        argv = ["ssh", "-F", "none", "-p", str(ssh.port_for(ip)),
                "-o", f"ConnectTimeout={connect_timeout}",
                "-o", "ServerAliveInterval=3", "-o", "ServerAliveCountMax=2",
                "-o", "LogLevel=ERROR", "-o", "GlobalKnownHostsFile=/dev/null", *kex_option()]
        if self.key_file is not None:
            argv += ["-i", str(self.key_file), "-o", "IdentitiesOnly=yes"]
        if ip in self._askpass:
            argv += ["-o", "BatchMode=no", "-o", "NumberOfPasswordPrompts=1",
                     "-o", "PreferredAuthentications=publickey,keyboard-interactive,password"]
        else:
            argv += ["-o", "BatchMode=yes"]
        if ip in ssh.host_keys:
            argv += ["-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={self.known_hosts}"]
        else:
            argv += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        if ssh.jump_host is not None:
            j = ssh.jump_host
            argv += ["-J", f"{j.user}@{j.host}:{j.port}"]
        return [*argv, *options, f"{ssh.user_for(ip)}@{ip}"]

    def env(self, ip: str) -> dict[str, str] | None:
        """The environment of ssh to ``ip``: the askpass helper for a password host."""
        if ip not in self._askpass:
            return None
        return dict(os.environ, SSH_ASKPASS=str(self._askpass[ip]), SSH_ASKPASS_REQUIRE="force")

    def run(self, ip: str, script: ScriptRun, timeout: float = HOST_DEADLINE_S,
            connect_timeout: int = CONNECT_TIMEOUT_S,
            options: Sequence[str] = ()) -> subprocess.CompletedProcess:
        """Run ``script`` on ``ip``; a timeout is returned as exit 255 with 'timed out'."""
        command = script.command
        if self.config.cluster.ssh.user_for(ip) != "root":
            command = f"sudo -n {command}"  # as the program's steps run (components/access.py)
        try:
            with self.gate:
                return subprocess.run([*self.argv(ip, connect_timeout, options), "--", command],
                                      input=script.stdin, capture_output=True, text=True,
                                      timeout=timeout, env=self.env(ip))
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess([], 255, "", f"{DEADLINE_ERROR} {timeout:.0f}s")


@contextmanager
def ssh_key_file(config: StackConfig, project_dir: str | os.PathLike, explicit: str | None,
                 decrypt: Callable[[], str]) -> Iterator[Path | None]:
    """The SSH private key as a file: ``--ssh-key``, else ``cluster.ssh.private_key_path``, else
    the stack's encrypted ``cluster.ssh.private_key`` decrypted by the engine into a 0600 temp
    file that is removed afterwards; None when the stack logs in with passwords only."""
    given = explicit or config.cluster.ssh.private_key_path
    if given:
        path = resolve_local_path(given, project_dir)
        if not path.is_file():
            source = "--ssh-key" if explicit else "cluster.ssh.private_key_path"
            raise CliError(f"{source}: SSH key {path} does not exist")
        yield path
        return
    if config.cluster.ssh.private_key is None:
        yield None
        return
    text = decrypt()
    with tempfile.TemporaryDirectory(prefix="sealer-cli-key-") as tmp:
        path = Path(tmp) / "id"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        yield path
