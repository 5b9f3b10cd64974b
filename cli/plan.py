"""A preview's steps as a short human plan: which host gets what.

Pure functions of the step map `{resource name: op}`; the names are read back with
``topology.parse_step`` (the components take them from ``topology`` too), so the rendering is
unit-tested without an engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import topology
from topology import HostStep, parse_step

# What each host step does on a host, in the order the plan lists them.
HOST_STEPS = (
    (HostStep.LAUNCH, "launch the registry on"),
    (HostStep.DATA, "copy the registry data to"),
    (HostStep.ROOTFS, "write the registry files (config, certificate, htpasswd) on"),
    (HostStep.STANDBY, "keep the registry stopped (standby) on"),
    (HostStep.HAPROXY, "copy the HAProxy bundle (node_entry) to"),
    (HostStep.NODE, "point {domain} at {master0} on"),
    (HostStep.PAYLOAD, "stage the node script and CA on"),
)
RECORDS = {
    topology.REGISTRY_CONFIG: "ConfigMap kube-system/sealer-registry",
    topology.REGISTRY_SECRET: "Secret kube-system/sealer-registry",
    topology.APPS: "ConfigMap kube-system/sealer-apps",
}
LABELS = dict(HOST_STEPS)
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


def _hosts(ips: list[str]) -> str:
    return ips[0] if len(ips) == 1 else f"{len(ips)} hosts: {', '.join(ips)}"


# sealer's HA layout: a node step keeps /etc/hosts as sealer wrote it (masters: their own IP,
# nodes: lvscare's VIP); it only checks the CA trust.
HA_NODE_LABEL = "check the CA trust, hosts lines left as sealer wrote them (HA), on"


def render(ops: dict[str, str], *, master0: str, domain: str, down_hosts: list[str],
           old_master0: str | None = None, ha: bool = False) -> Plan:
    by_step: dict[HostStep, list[tuple[str, str]]] = {}
    dropped: dict[str, int] = {}
    records: list[str] = []
    other: list[str] = []
    retired: list[str] = []   # steps of live hosts no longer declared (no delete command runs)
    verify = None
    provider = None
    changes = 0
    for name, op in ops.items():
        if op in ("same", "read", "refresh"):
            continue
        changes += 1
        host = parse_step(name)
        ip = host[1] if host else None
        if op in _DROPS and ip in down_hosts:
            dropped[ip] = dropped.get(ip, 0) + 1
        elif op in _DROPS:
            retired.append(name)
        elif host and host[0] in LABELS:
            by_step.setdefault(host[0], []).append((host[1], op))
        elif name in RECORDS:
            records.append(f"{RECORDS[name]} ({op})")
        elif name == topology.VERIFY:
            verify = op
        elif name == topology.K8S_PROVIDER:
            provider = op
        else:
            other.append(f"{name} ({op})")

    lines: list[str] = []
    if old_master0 and old_master0 != master0:
        lines.append(f"master0 {old_master0} -> {master0}; {old_master0} goes on down_hosts "
                     "(nothing runs there, it is not contacted)")
    for step, label in HOST_STEPS:
        steps = by_step.get(step)
        if not steps:
            continue
        ips = [ip for ip, _ in steps]
        kinds = sorted({op for _, op in steps})
        what = HA_NODE_LABEL if ha and step is HostStep.NODE else label.format(domain=domain, master0=master0)
        lines.append(f"  {what} {_hosts(ips)} [{', '.join(kinds)}]")
    if provider:
        # Its kubeconfig follows the first live apiserver (kubeapi.py); the cluster identifier is
        # fixed, so this is an in-place update that replaces no record.
        lines.append(f"  reach the cluster through another apiserver (kubernetes provider) [{provider}]")
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
        repointed=[] if ha else [ip for ip, _ in by_step.get(HostStep.NODE, [])],
        launch_on=[ip for ip, _ in by_step.get(HostStep.LAUNCH, [])],
        data_to=[ip for ip, _ in by_step.get(HostStep.DATA, [])],
        dropped=dropped,
        records=records,
        changes=changes,
    )
