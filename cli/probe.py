"""Reading the hosts: one SSH session per host running `scripts/status-probe.sh`, all hosts at once.

Bounded even when hosts are dead: `ConnectTimeout` per host and one overall deadline for the
whole round. Down hosts (`down_hosts`) are never dialled. `cli.health` judges what the probes
report; `recover` and `rejoin` use the same probe for their preflight.
"""

from __future__ import annotations

import hashlib
import os
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from cli.ssh import DEADLINE_ERROR, HOST_DEADLINE_S, SshAccess, ssh_error
from components.remote_scripts import ScriptRun, script_run
from config import StackConfig
from config.image_store import StoredImage

PROBE_SCRIPT = "status-probe.sh"


@dataclass
class HostProbe:
    """What one host reported; ``reachable`` False means the other fields are unknown."""

    ip: str
    reachable: bool
    error: str = ""
    hostname: str = ""
    registry: str = ""            # running | stale (a gated warm standby: 503 while its marker exists) | stopped
    registry_mode: str = ""       # read-only | read-write when running, else ""
    refs_ok: int = 0
    missing_refs: list[str] = field(default_factory=list)
    resolves: str = ""            # where the registry domain points on the host
    ca: str = ""                  # ok | differs | partial | absent | -
    containerd: str = ""          # certs.d | unset | elsewhere:<dirs> (trust written under the first) | stale | no-cri | down | unknown | -
    disk_avail: int = 0
    registry_bytes: int = 0
    replica: dict | None = None   # the replica stamp when complete (scripts/lib/replica.sh)
    tree: dict | None = None      # the live registry tree: {digest, files, bytes} (None: no tree)
    flags: list[str] = field(default_factory=list)  # ids of <rootfs>/cache/registry/, sorted
    flag_times: dict[str, int] = field(default_factory=dict)  # id -> its flag's mtime (host clock)
    clock: int = 0                # the host's unix time when probed
    # The node entry point's servers as HAProxy's stats report them, in its config's order:
    # [{"address": "ip:port", "status": "UP", "backup": bool}]; None when not asked or no page
    # answered (then entry_error says so).
    entry: list[dict] | None = None
    entry_error: str = ""
    seconds: float = 0.0
    # The session went past its deadline (not a refused or unanswered connect: the host took
    # longer than the deadline to answer); attempts: how many probes it took (probe_hosts' again).
    slow: bool = False
    attempts: int = 1

    @property
    def replica_age(self) -> int | None:
        """Seconds since the stamp was written, by the host's own clock."""
        if self.replica is None or not self.clock:
            return None
        return max(0, self.clock - int(self.replica.get("completed_at", self.clock)))


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
        elif key == "replica":
            probe.replica = parse_stamp(value)
        elif key == "tree":
            probe.tree = parse_tree(value)
        elif key == "flags":
            for item in value.split():
                image_id, _, mtime = item.partition(":")
                if _HEX64.fullmatch(image_id):
                    probe.flags.append(image_id)
                    if mtime.isdigit():
                        probe.flag_times[image_id] = int(mtime)
            probe.flags.sort()
        elif key == "entry":
            probe.entry, probe.entry_error = parse_entry(value)
        elif key in ("refs_ok", "disk_avail", "registry_bytes", "clock"):
            setattr(probe, key, int(value) if value.isdigit() else 0)
        elif key in ("hostname", "registry", "registry_mode", "resolves", "ca", "containerd"):
            setattr(probe, key, value)
    if not seen:
        probe.reachable = False
        probe.error = "the probe printed nothing"
    return probe


_HEX64 = re.compile(r"[0-9a-f]{64}")


def parse_entry(text: str) -> tuple[list[dict] | None, str]:
    """status-probe.sh's ``entry=<ip:port>:<status>[(<check>)][:backup] ...`` (HAProxy's status
    and its last check's result, blanks as ``_``: ``UP_1/2(L7OK)``), or ``entry=unreachable``."""
    if text.strip() == "unreachable":
        return None, "no entry point answers on its stats port"
    servers = []
    for item in text.split():
        head, _, tail = item.rpartition(":backup") if item.endswith(":backup") else (item, "", "")
        address, _, status = head.rpartition(":")
        status, _, check = status.partition("(")
        servers.append({"address": address, "status": status.replace("_", " "),
                        "backup": item.endswith(":backup"),
                        "check": check.removesuffix(")").replace("_", " ")})
    return servers, ""


def parse_tree(text: str) -> dict | None:
    """status-probe.sh's ``tree=<sha256> <files> <bytes>``; None when empty or malformed."""
    parts = text.split()
    if len(parts) != 3 or not _HEX64.fullmatch(parts[0]) or not all(p.isdigit() for p in parts[1:]):
        return None
    return {"digest": parts[0], "files": int(parts[1]), "bytes": int(parts[2])}


STAMP_KEYS = {"source": str, "completed_at": int, "files": int, "bytes": int, "tree": str}


def parse_stamp(text: str) -> dict | None:
    """The replica stamp's fields, or None when there is none or it does not parse."""
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if not isinstance(doc, dict) or any(not isinstance(doc.get(k), t) or isinstance(doc.get(k), bool)
                                        for k, t in STAMP_KEYS.items()):
        return None
    return {k: doc[k] for k in STAMP_KEYS}


def ca_digest(config: StackConfig) -> str:
    """sha256 of the configured CA certificate as the program installs it on hosts, or '-'."""
    tls = config.registry.tls
    if config.registry.local_registry.insecure_mode or tls is None:
        return "-"
    # A brought cert without ca_cert (an adopted sealer cluster: its CA is the server cert) is
    # what the nodes trust.
    trusted = tls.ca_cert if tls.ca_cert is not None else tls.cert
    return "-" if trusted is None else pem_digest(trusted)


def pem_digest(text: str) -> str:
    """sha256 of PEM text without blank lines and carriage returns, as status-probe.sh hashes."""
    kept = "".join(line + "\n" for line in text.replace("\r", "").splitlines() if line.strip())
    return hashlib.sha256(kept.encode()).hexdigest()


def probe_command(config: StackConfig, refs: list[str]) -> ScriptRun:
    reg = config.registry
    entry = reg.local_registry.node_entry
    stats = ["--entry-stats", str(entry.stats_port)] if entry is not None else []
    return script_run(PROBE_SCRIPT, *stats, config.rootfs, reg.domain, str(reg.port),
                      ca_digest(config), *refs)


def probe_host(access: SshAccess, ip: str, command: ScriptRun, timeout: float = HOST_DEADLINE_S) -> HostProbe:
    start = time.monotonic()
    done = access.run(ip, command, timeout=timeout)
    if done.returncode != 0:
        probe = HostProbe(ip=ip, reachable=False, error=ssh_error(done.stderr, done.returncode),
                          slow=done.stderr.startswith(DEADLINE_ERROR))
        if done.returncode != 255:  # sshd answered; the script failed
            probe.error = f"probe failed (exit {done.returncode}): {ssh_error(done.stderr, done.returncode)}"
    else:
        probe = parse_probe(ip, done.stdout)
    probe.seconds = time.monotonic() - start
    return probe


def probe_sessions() -> int:
    """Probes at once: 32, but no more than 8 per core of this machine. Each session's key exchange
    and the ssh process cost the local CPU, and each probe has its own deadline (HOST_DEADLINE_S):
    on a 2-core machine at 3 + 500 (the lab, whose hosts share those cores) 32 at once took 15 s
    each and 212 of 503 timed out, while the total time is set by the CPU, not the count."""
    return max(4, min(32, 8 * (os.cpu_count() or 1)))


def probe_hosts(access: SshAccess, ips: list[str], command: ScriptRun,
                timeout: float = HOST_DEADLINE_S, again: bool = False) -> dict[str, HostProbe]:
    """Every host at once; returns when the slowest is done or timed out (about ``timeout``).
    ``again``: a host whose probe went past the deadline (it connected, or its key exchange
    began, but it did not answer in time: a loaded host, not a dead one, whose connect fails at
    CONNECT_TIMEOUT_S) is probed once more after the others, with the same deadline; what it
    answers then is what counts (``attempts`` 2). A dead host costs nothing more."""
    if not ips:
        return {}
    probes = _probe_round(access, ips, command, timeout)
    slow = [ip for ip, probe in probes.items() if probe.slow]
    if again and slow:
        for ip, probe in _probe_round(access, slow, command, timeout).items():
            probe.attempts = 2
            probes[ip] = probe
    return probes


def _probe_round(access: SshAccess, ips: list[str], command: ScriptRun,
                 timeout: float) -> dict[str, HostProbe]:
    with ThreadPoolExecutor(max_workers=min(probe_sessions(), len(ips))) as pool:
        futures = {ip: pool.submit(probe_host, access, ip, command, timeout) for ip in ips}
        return {ip: f.result() for ip, f in futures.items()}


def complete_images(images: list[StoredImage], missing_refs: list[str]) -> int:
    missing = set(missing_refs)
    return sum(1 for img in images if not any(str(ref) in missing for ref in img.refs))


def all_refs(images: list[StoredImage]) -> list[str]:
    return [str(ref) for img in images for ref in img.refs]
