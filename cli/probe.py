"""Reading the hosts: one SSH session per host running `scripts/status-probe.sh`, all hosts at once.

Bounded even when hosts are dead: `ConnectTimeout` per host and one overall deadline for the
whole round. Down hosts (`down_hosts`) are never dialled. `assess` turns the probes into the
status table and the list of problems; `recover` and `rejoin` use the same probe for preflight.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from components.remote_scripts import ScriptRun, script_run
from config import StackConfig
from config.image_store import StoredImage

from cli.common import CliError, resolve_local_path

CONNECT_TIMEOUT_S = 3
HOST_DEADLINE_S = 15.0     # one probe: connect + key exchange + the script (du of the registry)
PROBE_SCRIPT = "status-probe.sh"


@dataclass
class HostProbe:
    """What one host reported; ``reachable`` False means the other fields are unknown."""

    ip: str
    reachable: bool
    error: str = ""
    hostname: str = ""
    registry: str = ""            # running | stopped
    refs_ok: int = 0
    missing_refs: list[str] = field(default_factory=list)
    resolves: str = ""            # where the registry domain points on the host
    ca: str = ""                  # ok | differs | partial | absent | -
    containerd: str = ""          # certs.d | unset | elsewhere:<dirs> | stale | no-cri | down | unknown | -
    disk_avail: int = 0
    registry_bytes: int = 0
    seconds: float = 0.0


def parse_probe(ip: str, stdout: str) -> HostProbe:
    probe = HostProbe(ip=ip, reachable=True)
    seen = False
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "probe":
            seen = True
        elif key == "ref_missing":
            probe.missing_refs.append(value)
        elif key in ("refs_ok", "disk_avail", "registry_bytes"):
            setattr(probe, key, int(value) if value.isdigit() else 0)
        elif key in ("hostname", "registry", "resolves", "ca", "containerd"):
            setattr(probe, key, value)
    if not seen:
        probe.reachable = False
        probe.error = "the probe printed nothing"
    return probe


def ssh_error(stderr: str, returncode: int) -> str:
    """The telling line of an ssh failure (`Connection timed out`, `Connection refused`, ...)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("ssh:") or "Permission denied" in line or "Host key" in line:
            return line.removeprefix("ssh: ").split(": ", 1)[-1] if line.startswith("ssh:") else line
    return lines[-1] if lines else f"ssh exited {returncode}"


class SshAccess:
    """ssh argv for the cluster's hosts, from the stack config (user, port, key, pinned host keys,
    jump host). Use as a context manager: it owns a temp dir for known_hosts."""

    def __init__(self, config: StackConfig, key_file: Path):
        self.config = config
        self.key_file = key_file
        self._tmp = tempfile.TemporaryDirectory(prefix="sealer-cli-ssh-")
        self.known_hosts = Path(self._tmp.name) / "known_hosts"
        ssh = config.cluster.ssh
        lines = []
        for ip, key in ssh.host_keys.items():
            name = ip if ssh.port == 22 else f"[{ip}]:{ssh.port}"
            lines.append(f"{name} {key}\n")
        self.known_hosts.write_text("".join(lines))

    def __enter__(self) -> "SshAccess":
        return self

    def __exit__(self, *exc) -> None:
        self._tmp.cleanup()

    def argv(self, ip: str, connect_timeout: int = CONNECT_TIMEOUT_S) -> list[str]:
        ssh = self.config.cluster.ssh
        argv = ["ssh", "-F", "none", "-p", str(ssh.port), "-i", str(self.key_file),
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", f"ConnectTimeout={connect_timeout}",
                "-o", "ServerAliveInterval=3", "-o", "ServerAliveCountMax=2",
                "-o", "LogLevel=ERROR", "-o", "GlobalKnownHostsFile=/dev/null"]
        if ip in ssh.host_keys:
            argv += ["-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={self.known_hosts}"]
        else:
            argv += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        if ssh.jump_host is not None:
            j = ssh.jump_host
            argv += ["-J", f"{j.user}@{j.host}:{j.port}"]
        return [*argv, f"{ssh.user}@{ip}"]

    def run(self, ip: str, script: ScriptRun, timeout: float = HOST_DEADLINE_S,
            connect_timeout: int = CONNECT_TIMEOUT_S) -> subprocess.CompletedProcess:
        """Run ``script`` on ``ip``; a timeout is returned as exit 255 with 'timed out'."""
        try:
            return subprocess.run([*self.argv(ip, connect_timeout), "--", script.command],
                                  input=script.stdin, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess([], 255, "", f"ssh: timed out after {timeout:.0f}s")


def ca_digest(config: StackConfig) -> str:
    """sha256 of the configured CA certificate as the program installs it on hosts, or '-'."""
    tls = config.registry.tls
    if config.registry.local_registry.insecure_mode or tls is None or tls.ca_cert is None:
        return "-"
    return pem_digest(tls.ca_cert)


def pem_digest(text: str) -> str:
    """sha256 of PEM text without blank lines and carriage returns, as status-probe.sh hashes."""
    kept = "".join(line + "\n" for line in text.replace("\r", "").splitlines() if line.strip())
    return hashlib.sha256(kept.encode()).hexdigest()


def probe_command(config: StackConfig, refs: list[str]) -> ScriptRun:
    reg = config.registry
    return script_run(PROBE_SCRIPT, config.rootfs, reg.domain, str(reg.port),
                      ca_digest(config), *refs)


def probe_host(access: SshAccess, ip: str, command: ScriptRun, timeout: float = HOST_DEADLINE_S) -> HostProbe:
    start = time.monotonic()
    done = access.run(ip, command, timeout=timeout)
    if done.returncode != 0:
        probe = HostProbe(ip=ip, reachable=False, error=ssh_error(done.stderr, done.returncode))
        if done.returncode != 255:  # sshd answered; the script failed
            probe.error = f"probe failed (exit {done.returncode}): {ssh_error(done.stderr, done.returncode)}"
    else:
        probe = parse_probe(ip, done.stdout)
    probe.seconds = time.monotonic() - start
    return probe


def probe_hosts(access: SshAccess, ips: list[str], command: ScriptRun,
                timeout: float = HOST_DEADLINE_S) -> dict[str, HostProbe]:
    """Every host at once; returns when the slowest is done or timed out (about ``timeout``)."""
    if not ips:
        return {}
    with ThreadPoolExecutor(max_workers=min(32, len(ips))) as pool:
        futures = {ip: pool.submit(probe_host, access, ip, command, timeout) for ip in ips}
        return {ip: f.result() for ip, f in futures.items()}


# ---------------------------------------------------------------------------------------------
# Assessment: the status table and what is wrong


@dataclass
class HostRow:
    ip: str
    role: str          # master0 | master | node
    reachable: str     # yes | no | down (listed)
    deploy: str        # launch | standby | -
    registry: str      # running | stopped | -
    data: str          # present/expected images, or -
    resolves: str
    ca: str
    containerd: str = "?"  # whether the CRI's containerd reads certs.d (HostProbe.containerd)


# containerd states that are fine: it reads certs.d, or the kubelet does not pull through it.
CONTAINERD_OK = {"certs.d", "no-cri", "-"}
CONTAINERD_CERTS_D = "/etc/containerd/certs.d"
CONTAINERD_WHY = {
    "unset": "its CRI config_path is unset",
    "stale": "its config changed after it started: restart containerd",
    "down": "it is installed but not running",
    "unknown": "`containerd config dump` failed",
}


def containerd_problem(state: str, endpoint: str) -> str | None:
    """Why a host's containerd (what the kubelet pulls with) does not read certs.d, so its pulls
    through ``endpoint`` would not trust the registry's CA; None when that is fine."""
    if state in CONTAINERD_OK:
        return None
    if state.startswith("elsewhere:"):
        why = f"its CRI config_path is {state.removeprefix('elsewhere:')}"
    else:
        why = CONTAINERD_WHY.get(state, f"it reported {state or 'nothing'}")
    return (f"containerd does not read {CONTAINERD_CERTS_D} ({why}), so its pulls through "
            f"{endpoint} would not trust the registry's CA")


@dataclass
class Assessment:
    rows: list[HostRow]
    problems: list[str]
    images_expected: int
    master0_images: int   # complete images on master0 (0 when unreachable)

    @property
    def healthy(self) -> bool:
        return not self.problems


def complete_images(images: list[StoredImage], missing_refs: list[str]) -> int:
    missing = set(missing_refs)
    return sum(1 for img in images if not any(str(ref) in missing for ref in img.refs))


def all_refs(images: list[StoredImage]) -> list[str]:
    return [str(ref) for img in images for ref in img.refs]


def holds_data(config: StackConfig, ip: str) -> bool:
    """Whether the program keeps the registry data on ``ip`` (pre: every deploy host; post: master0)."""
    if ip not in config.deploy_hosts:
        return False
    return config.distribution == "pre" or ip == config.master0


def assess(config: StackConfig, images: list[StoredImage], probes: dict[str, HostProbe]) -> Assessment:
    rows: list[HostRow] = []
    problems: list[str] = []
    expected = len(images)
    master0_images = 0
    secure = ca_digest(config) != "-"
    for ip in config.hosts:
        role = "master0" if ip == config.master0 else ("master" if ip in config.cluster.masters else "node")
        deploy = "-" if ip not in config.deploy_hosts else ("launch" if ip == config.master0 else "standby")
        if ip in config.down_hosts:
            rows.append(HostRow(ip, role, "down (listed)", deploy, "-", "-", "-", "-", "-"))
            continue
        probe = probes.get(ip)
        if probe is None or not probe.reachable:
            why = probe.error if probe else "not probed"
            rows.append(HostRow(ip, role, "no", deploy, "?", "?", "?", "?"))
            problems.append(f"{ip} ({role}) is unreachable: {why}"
                            + ("; if it is dead, recover with `recover master0 --host <master>`"
                               if ip == config.master0 else "; if it is dead, list it in down_hosts"))
            continue
        present = complete_images(images, probe.missing_refs)
        data = f"{present}/{expected}" if ip in config.deploy_hosts else "-"
        rows.append(HostRow(ip, role, "yes", deploy,
                            probe.registry if ip in config.deploy_hosts or probe.registry == "running" else "-",
                            data, probe.resolves or "(none)", probe.ca, probe.containerd or "?"))
        if ip == config.master0:
            master0_images = present
            if probe.registry != "running":
                problems.append(f"{ip} (master0) runs no registry")
        elif probe.registry == "running" and ip in config.deploy_hosts:
            problems.append(f"{ip} runs a registry but is not master0 (a second, possibly stale registry)")
        if holds_data(config, ip) and present < expected:
            problems.append(f"{ip} holds {present} of {expected} images "
                            f"(missing e.g. {probe.missing_refs[0] if probe.missing_refs else '?'})")
        if probe.resolves != config.master0:
            problems.append(f"{ip}: {config.registry.domain} points to {probe.resolves or 'nothing'}, "
                            f"not to master0 {config.master0}")
        if secure and probe.ca != "ok":
            problems.append(f"{ip}: CA trust {probe.ca}: docker and containerd must both hold the configured CA")
        why = containerd_problem(probe.containerd, f"{config.registry.domain}:{config.registry.port}")
        if secure and why:
            problems.append(f"{ip}: {why}")
    return Assessment(rows, problems, expected, master0_images)


def render_table(rows: list[HostRow], domain: str = "sea.hub") -> str:
    head = ("HOST", "ROLE", "REACHABLE", "DEPLOY", "REGISTRY", "IMAGES", f"{domain.upper()} ->", "CA",
            "CONTAINERD")
    body = [(r.ip, r.role, r.reachable, r.deploy, r.registry, r.data, r.resolves, r.ca, r.containerd)
            for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip()
                     for line in (head, *body))


@contextmanager
def ssh_key_file(config: StackConfig, project_dir: str | os.PathLike, explicit: str | None,
                 decrypt: Callable[[], str]) -> Iterator[Path]:
    """The SSH private key as a file: ``--ssh-key``, else ``cluster.ssh.private_key_path``, else
    the stack's encrypted ``cluster.ssh.private_key`` decrypted by the engine into a 0600 temp
    file that is removed afterwards."""
    given = explicit or config.cluster.ssh.private_key_path
    if given:
        path = resolve_local_path(given, project_dir)
        if not path.is_file():
            source = "--ssh-key" if explicit else "cluster.ssh.private_key_path"
            raise CliError(f"{source}: SSH key {path} does not exist")
        yield path
        return
    text = decrypt()
    with tempfile.TemporaryDirectory(prefix="sealer-cli-key-") as tmp:
        path = Path(tmp) / "id"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        yield path
