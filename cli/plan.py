"""A preview's steps as a short human plan: which host gets what.

Pure functions of the step map `{resource name: op}` (the names of components/: `registry-launch-<ip>`,
`data-<ip>`, `node-<ip>` ...), so the rendering is unit-tested without an engine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_IP = r"(\d{1,3}(?:\.\d{1,3}){3})"
# (resource name prefix, what it does on a host), in the order the plan lists them.
HOST_STEPS = (
    ("registry-launch-", "launch the registry on"),
    ("data-", "copy the registry data to"),
    ("rootfs-", "write the registry files (config, certificate, htpasswd) on"),
    ("registry-standby-", "keep the registry stopped (standby) on"),
    ("node-", "point {domain} at {master0} on"),
)
RECORDS = {
    "sealer-registry-config": "ConfigMap kube-system/sealer-registry",
    "sealer-registry-secret": "Secret kube-system/sealer-registry",
    "sealer-apps": "ConfigMap kube-system/sealer-apps",
}
VERIFY = "registry-verify"
_DROPS = ("delete", "delete-replaced", "discard")


@dataclass
class Plan:
    lines: list[str]
    repointed: list[str]   # hosts whose domain entry changes
    launch_on: list[str]
    data_to: list[str]
    dropped: dict[str, int]   # down host -> resources forgotten without contact
    records: list[str]
    changes: int

    def text(self) -> str:
        return "\n".join(self.lines)


def split_host(name: str) -> tuple[str, str] | None:
    """('node-', '198.18.0.12') for `node-198.18.0.12`; None for names without a host."""
    for prefix, _label in HOST_STEPS:
        m = re.fullmatch(re.escape(prefix) + _IP, name)
        if m:
            return prefix, m.group(1)
    return None


def _hosts(ips: list[str]) -> str:
    return ips[0] if len(ips) == 1 else f"{len(ips)} hosts: {', '.join(ips)}"


def render(ops: dict[str, str], *, master0: str, domain: str, down_hosts: list[str],
           old_master0: str | None = None) -> Plan:
    by_prefix: dict[str, list[tuple[str, str]]] = {}
    dropped: dict[str, int] = {}
    records: list[str] = []
    other: list[str] = []
    retired: list[str] = []   # steps of live hosts no longer declared (no delete command runs)
    verify = None
    changes = 0
    for name, op in ops.items():
        if op in ("same", "read", "refresh"):
            continue
        changes += 1
        host = split_host(name)
        tail = re.search("-" + _IP + "$", name)
        ip = tail.group(1) if tail else None
        if op in _DROPS and ip in down_hosts:
            dropped[ip] = dropped.get(ip, 0) + 1
        elif op in _DROPS:
            retired.append(name)
        elif host:
            by_prefix.setdefault(host[0], []).append((host[1], op))
        elif name in RECORDS:
            records.append(f"{RECORDS[name]} ({op})")
        elif name == VERIFY:
            verify = op
        else:
            other.append(f"{name} ({op})")

    lines: list[str] = []
    if old_master0 and old_master0 != master0:
        lines.append(f"master0 {old_master0} -> {master0}; {old_master0} goes on down_hosts "
                     "(nothing runs there, it is not contacted)")
    for prefix, label in HOST_STEPS:
        steps = by_prefix.get(prefix)
        if not steps:
            continue
        ips = [ip for ip, _ in steps]
        kinds = sorted({op for _, op in steps})
        what = label.format(domain=domain, master0=master0)
        lines.append(f"  {what} {_hosts(ips)} [{', '.join(kinds)}]")
    if records:
        lines.append(f"  update the records: {', '.join(records)}")
    if verify:
        lines.append(f"  verify from a node: every image of the boot history via {domain} [{verify}]")
    if retired:
        lines.append(f"  retire {len(retired)} steps no longer needed (no command runs): {', '.join(retired)}")
    for ip, count in sorted(dropped.items()):
        lines.append(f"  forget {count} resources of {ip} in the state (down: not contacted)")
    for item in other:
        lines.append(f"  {item}")
    if changes == 0:
        lines.append("  no changes: the hosts already match the config")
    return Plan(
        lines=lines,
        repointed=[ip for ip, _ in by_prefix.get("node-", [])],
        launch_on=[ip for ip, _ in by_prefix.get("registry-launch-", [])],
        data_to=[ip for ip, _ in by_prefix.get("data-", [])],
        dropped=dropped,
        records=records,
        changes=changes,
    )
