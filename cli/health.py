"""Judging the hosts: the probes of `cli.probe` against the stack's topology, as a table, a
summary line, the list of problems, or the `--json` document of `status`.

Which host should run the registry, hold data or stand by comes from ``topology`` (the same
plan the program deploys), so the status can never expect something the program does not do.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from cli.probe import HostProbe, all_refs, ca_digest, complete_images, probe_command, probe_hosts
from cli.session import Session
from config import StackConfig
from config.image_store import StoredImage
from topology import Place, RegistryRole, Topology


@dataclass
class HostHealth:
    """One host as the status sees it. ``None`` means unknown: the host is down (listed, not
    dialled) or did not answer."""

    ip: str
    role: str                  # master0 | master | node
    deploy: str                # launch | standby | none
    down: bool                 # listed in down_hosts
    reachable: bool | None     # None: down, not probed
    error: str | None = None   # why it is unreachable
    registry: str | None = None     # running | stopped
    registry_mode: str | None = None  # read-only | read-write while running
    images: int | None = None       # images its registry data holds completely (deploy hosts)
    resolves: str | None = None     # where the registry domain points there ("": nowhere)
    ca: str | None = None           # ok | differs | partial | absent | - (insecure mode)
    # whether the containerd serving the CRI reads certs.d: certs.d | unset | elsewhere:<dirs> |
    # stale | no-cri | down | unknown | - (see scripts/lib/containerd.sh)
    containerd: str | None = None
    replica: dict | None = None     # the replica stamp (deploy hosts): source, age_s, files, bytes

    def replica_cell(self) -> str:
        """``self 4m`` / ``198.18.0.11 2h`` (where it was copied from, how long ago) / ``none``."""
        if self.deploy == RegistryRole.NONE:
            return "-"
        if self.replica is None:
            return "none"
        age = self.replica["age_s"]
        return f"{self.replica['source']} {'?' if age is None else short_age(age)}"

    def row(self, expected: int) -> tuple[str, ...]:
        """The table's cells: HOST ROLE REACHABLE DEPLOY REGISTRY IMAGES REPLICA DOMAIN CA
        CONTAINERD."""
        deploy = "-" if self.deploy == RegistryRole.NONE else self.deploy
        if self.down:
            return (self.ip, self.role, "down (listed)", deploy, "-", "-", "-", "-", "-", "-")
        if not self.reachable:
            return (self.ip, self.role, "no", deploy, "?", "?", "?", "?", "?", "?")
        is_deploy = self.deploy != RegistryRole.NONE
        registry = self.registry if is_deploy or self.registry == "running" else "-"
        if registry == "running" and self.registry_mode == "read-only":
            registry = "read-only"
        data = f"{self.images}/{expected}" if is_deploy else "-"
        return (self.ip, self.role, "yes", deploy, registry, data, self.replica_cell(),
                self.resolves or "(none)", self.ca or "", self.containerd or "?")

    def as_json(self) -> dict:
        return {"ip": self.ip, "role": self.role, "deploy": self.deploy, "down": self.down,
                "reachable": self.reachable, "error": self.error, "registry": self.registry,
                "registry_mode": self.registry_mode,
                "images": self.images, "resolves": self.resolves, "ca": self.ca,
                "containerd": self.containerd, "replica": self.replica}


def short_age(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# containerd states that are fine: it reads certs.d, or the kubelet does not pull through it.
# docker-certs.d: basefs' containerd reads /etc/docker/certs.d, where the CA is written too.
CONTAINERD_OK = {"certs.d", "docker-certs.d", "no-cri", "-"}
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
    hosts: list[HostHealth]
    problems: list[str]
    images_expected: int
    master0_images: int   # complete images on master0 (0 when unreachable)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def rows(self) -> list[tuple[str, ...]]:
        return [h.row(self.images_expected) for h in self.hosts]


def assess(config: StackConfig, images: list[StoredImage], probes: dict[str, HostProbe]) -> Assessment:
    layout = Topology.of(config)
    hosts: list[HostHealth] = []
    problems: list[str] = []
    expected = len(images)
    master0_images = 0
    secure = ca_digest(config) != "-"
    domain, master0 = config.registry.domain, layout.master0
    for plan in layout.hosts:
        ip, role = plan.ip, str(plan.place)
        health = HostHealth(ip, role, str(plan.role), plan.down, None)
        hosts.append(health)
        if plan.down:
            continue
        probe = probes.get(ip)
        if probe is None or not probe.reachable:
            health.reachable = False
            health.error = probe.error if probe else "not probed"
            problems.append(f"{ip} ({role}) is unreachable: {health.error}"
                            + ("; if it is dead, recover with `recover master0 --host <master>`"
                               if plan.place is Place.MASTER0 else "; if it is dead, list it in down_hosts"))
            continue
        present = complete_images(images, probe.missing_refs)
        health.reachable = True
        health.registry, health.resolves, health.ca = probe.registry, probe.resolves, probe.ca
        health.registry_mode = probe.registry_mode or None
        health.containerd = probe.containerd
        health.images = present if plan.deploys else None
        if plan.deploys and probe.replica is not None:
            health.replica = {"source": probe.replica["source"], "age_s": probe.replica_age,
                              "files": probe.replica["files"], "bytes": probe.replica["bytes"]}
        if plan.ha and plan.deploys:
            # sealer's HA layout: every master serves read-write behind lvscare's VIP.
            if plan.place is Place.MASTER0:
                master0_images = present
            if probe.registry != "running":
                problems.append(f"{ip} ({role}, HA) runs no registry: lvscare drops it from the VIP; "
                                "its own pulls fail")
            elif probe.registry_mode == "read-only":
                problems.append(f"{ip} ({role}, HA) runs its registry read-only: pushes to it are refused")
        elif plan.place is Place.MASTER0:
            master0_images = present
            if probe.registry != "running":
                problems.append(f"{ip} (master0) runs no registry")
            elif probe.registry_mode == "read-only":
                problems.append(f"{ip} (master0) runs its registry read-only: pushes are refused")
        elif plan.read_only:
            if probe.registry != "running":
                problems.append(f"{ip} (warm standby) runs no registry: nodes' pulls lose this mirror")
            elif probe.registry_mode != "read-only":
                problems.append(f"{ip} (warm standby) runs its registry read-write: a second "
                                "registry that takes pushes")
        elif probe.registry == "running" and plan.deploys:
            problems.append(f"{ip} runs a registry but is not master0 (a second, possibly stale registry)")
        if plan.holds_data and present < expected:
            problems.append(f"{ip} holds {present} of {expected} images "
                            f"(missing e.g. {probe.missing_refs[0] if probe.missing_refs else '?'})")
        if plan.copies_data and probe.replica is None:
            problems.append(f"{ip} holds no complete replica stamp (registry/.sealer-replica): its "
                            "data step has not completed; run `pulumi up`")
        if plan.ha:
            # sealer's lines: a master maps the domain to itself, a node to lvscare's VIP.
            if plan.deploys and probe.resolves != ip:
                problems.append(f"{ip}: {domain} points to {probe.resolves or 'nothing'}, not to "
                                f"this master's own registry (sealer's HA layout maps it to {ip})")
            elif not probe.resolves:
                problems.append(f"{ip}: {domain} points to nothing (sealer's HA layout maps it to "
                                "lvscare's VIP on nodes)")
        elif probe.resolves != master0:
            problems.append(f"{ip}: {domain} points to {probe.resolves or 'nothing'}, "
                            f"not to master0 {master0}")
        if secure and probe.ca != "ok":
            problems.append(f"{ip}: CA trust {probe.ca}: docker and containerd must both hold the configured CA")
        why = containerd_problem(probe.containerd, f"{domain}:{config.registry.port}")
        if secure and why:
            problems.append(f"{ip}: {why}")
    return Assessment(hosts, problems, expected, master0_images)


def check_cluster(session: Session) -> Assessment:
    """The status probe on every live host at once, judged against the stack's topology."""
    live = [h.ip for h in session.topology.live]
    config, images = session.config, session.images
    probes = probe_hosts(session.ssh(), live, probe_command(config, all_refs(images)))
    return assess(config, images, probes)


def render_table(result: Assessment, domain: str = "sea.hub") -> str:
    head = ("HOST", "ROLE", "REACHABLE", "DEPLOY", "REGISTRY", "IMAGES", "REPLICA",
            f"{domain.upper()} ->", "CA", "CONTAINERD")
    body = result.rows()
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip()
                     for line in (head, *body))


def summary_line(config: StackConfig, result: Assessment, seconds: float) -> str:
    live = [h for h in result.hosts if not h.down]
    if config.ha:
        deploy = [h for h in live if h.deploy != RegistryRole.NONE]
        running = sum(1 for h in deploy if h.registry == "running")
        head = "healthy" if result.healthy else f"degraded ({len(result.problems)} problems)"
        down = len(result.hosts) - len(live)
        tail = f"; {down} listed down, not probed" if down else ""
        return (f"{head}: HA, {running} of {len(deploy)} live masters' registries run; master0 "
                f"{config.master0} serves {result.master0_images}/{result.images_expected} images"
                f"{tail} ({seconds:.1f}s)")
    pointing = sum(1 for h in live if h.resolves == config.master0)
    down = len(result.hosts) - len(live)
    tail = f"; {down} listed down, not probed" if down else ""
    head = "healthy" if result.healthy else f"degraded ({len(result.problems)} problems)"
    return (f"{head}: master0 {config.master0} serves {result.master0_images}/{result.images_expected} "
            f"images; {pointing} of {len(live)} live hosts point at it{tail} ({seconds:.1f}s)")


def report(config: StackConfig, result: Assessment, seconds: float, out=sys.stdout) -> None:
    """The table, one `problem:` line per problem, and the summary line."""
    print(render_table(result, config.registry.domain), file=out)
    for problem in result.problems:
        print(f"problem: {problem}", file=out)
    print(summary_line(config, result, seconds), file=out)


def health_json(config: StackConfig, result: Assessment, seconds: float) -> dict:
    """The keys `status --json` documents besides command/stack/exit_code/error."""
    return {
        "healthy": result.healthy,
        "master0": config.master0,
        "domain": config.registry.domain,
        "images_expected": result.images_expected,
        "master0_images": result.master0_images,
        "hosts": [h.as_json() for h in result.hosts],
        "problems": list(result.problems),
        "seconds": round(seconds, 2),
    }
