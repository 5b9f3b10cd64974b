"""Judging the hosts: the probes of `cli.probe` against the stack's topology, as a table, a
summary line, the list of problems, or the `--json` document of `status`.

Which host should run the registry, hold data or stand by comes from ``topology`` (the same
plan the program deploys), so the status can never expect something the program does not do.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

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
    registry: str | None = None     # running | stale (a gated warm standby) | stopped
    registry_mode: str | None = None  # read-only | read-write while running
    images: int | None = None       # images its registry data holds completely (deploy hosts)
    resolves: str | None = None     # where the registry domain points there ("": nowhere)
    ca: str | None = None           # ok | differs | partial | absent | - (insecure mode)
    # whether the containerd serving the CRI reads certs.d: certs.d | unset | elsewhere:<dirs> |
    # stale | no-cri | down | unknown | - (see scripts/lib/containerd.sh)
    containerd: str | None = None
    replica: dict | None = None     # the replica stamp (deploy hosts): source, age_s, files, bytes
    tree: dict | None = None        # the live registry tree (deploy hosts): digest, files, bytes
    flags: int | None = None        # how many cache/registry image flags it holds (deploy hosts)
    lacking: "Lag | None" = None    # what it lacks of the reference data (None: in sync, or not judged)
    # The node entry point's servers (hosts that use one): [{address, status, backup}]; None
    # when the host uses none or its stats page did not answer (entry_error then).
    entry: list[dict] | None = None
    entry_error: str | None = None
    # A recovery's fence phase has not run on this host yet (its entry point still lists the old
    # master0 first); False once it has, or when no recovery left it pending.
    fence_pending: bool = False

    def replica_cell(self) -> str:
        """``self 4m`` / ``198.18.0.11 2h`` (where it was copied from, how long ago) / ``none``."""
        if self.deploy == RegistryRole.NONE:
            return "-"
        if self.replica is None:
            return "none"
        age = self.replica["age_s"]
        return f"{self.replica['source']} {'?' if age is None else short_age(age)}"

    def lacks_cell(self) -> str:
        """``none`` / ``2 images`` (flag ids it lacks) / ``tree`` (behind, no id to name) / ``-``."""
        if self.deploy == RegistryRole.NONE or self.tree is None and self.lacking is None:
            return "-"
        if self.lacking is None:
            return "none"
        n = len(self.lacking.ids)
        return f"{n} image{'s' if n != 1 else ''}" if n else "tree"

    def entry_cell(self) -> str:
        """``master0 UP, standbys 2/2 up`` / ``none answers`` / ``-`` (no entry point here)."""
        if self.entry_error:
            return "none answers"
        if self.entry is None:
            return "-"
        primary = [s for s in self.entry if not s["backup"]]
        backups = [s for s in self.entry if s["backup"]]
        head = ", ".join(f"{s['address'].rpartition(':')[0]} {s['status']}" for s in primary) or "no server"
        up = sum(1 for s in backups if serving(s["status"]))
        pending = " (fence pending)" if self.fence_pending else ""
        return f"{head}, standbys {up}/{len(backups)} up{pending}"

    def row(self, expected: int) -> tuple[str, ...]:
        """The table's cells: HOST ROLE REACHABLE DEPLOY REGISTRY IMAGES REPLICA DOMAIN CA
        CONTAINERD LACKS ENTRY."""
        deploy = "-" if self.deploy == RegistryRole.NONE else self.deploy
        if self.down:
            return (self.ip, self.role, "down (listed)", deploy, "-", "-", "-", "-", "-", "-", "-", "-")
        if self.fence_pending and self.reachable is None:
            return (self.ip, self.role, "not probed", deploy, "-", "-", "-", "-", "-", "-", "-",
                    "fence pending")
        if not self.reachable:
            return (self.ip, self.role, "no", deploy, "?", "?", "?", "?", "?", "?", "?", "?")
        is_deploy = self.deploy != RegistryRole.NONE
        registry = self.registry if is_deploy or self.registry == "running" else "-"
        if registry == "running" and self.registry_mode == "read-only":
            registry = "read-only"
        data = f"{self.images}/{expected}" if is_deploy else "-"
        return (self.ip, self.role, "yes", deploy, registry, data, self.replica_cell(),
                self.resolves or "(none)", self.ca or "", self.containerd or "?", self.lacks_cell(),
                self.entry_cell())

    def as_json(self) -> dict:
        return {"ip": self.ip, "role": self.role, "deploy": self.deploy, "down": self.down,
                "reachable": self.reachable, "error": self.error, "registry": self.registry,
                "registry_mode": self.registry_mode,
                "images": self.images, "resolves": self.resolves, "ca": self.ca,
                "containerd": self.containerd, "replica": self.replica, "tree": self.tree,
                "flags": self.flags,
                "lacking": None if self.lacking is None else self.lacking.as_json(),
                "entry": self.entry, "entry_error": self.entry_error,
                "fence_pending": self.fence_pending}


@dataclass(frozen=True)
class Lag:
    """What a deploy host lacks of the data it should hold. ``ids``: image ids (64 hex, as
    sealer's ``<rootfs>/cache/registry/<id>`` flags name them) the reference holds and it does
    not; ``behind``: its tree differs from the reference's; ``reference``: what it was compared
    with (master0's live tree, or in HA the live master holding the most files and the union of
    the live masters' flags)."""

    ids: tuple[str, ...]
    behind: bool
    reference: str

    def as_json(self) -> dict:
        return {"ids": list(self.ids), "behind": self.behind, "reference": self.reference}


def replica_lags(master0: HostProbe | None, replica: HostProbe) -> Lag | None:
    """Non-HA: a replica whose stamp's tree is not master0's live tree lags master0 (sealer's
    `sealer run <app>` adds data on master0 only); it lacks master0's flag ids it does not hold
    whose flag was written after the replica's copy completed (an older flag's data was in the
    tree it copied; replicas copied before flags were copied along hold none). None when in
    sync, or when there is nothing to compare (no stamp, master0 not read)."""
    if master0 is None or master0.tree is None or replica.replica is None:
        return None
    if replica.replica["tree"] == master0.tree["digest"]:
        return None
    copied_at = replica.replica["completed_at"]
    ids = tuple(sorted(i for i in set(master0.flags) - set(replica.flags)
                       if master0.flag_times.get(i, copied_at + 1) > copied_at))
    return Lag(ids, True, f"master0 {master0.ip}")


def ha_lags(probes: dict[str, HostProbe]) -> dict[str, Lag]:
    """HA: each live master against the others (``probes``: the reachable live masters, in
    config order): it lacks the union of their flags it does not hold, and is behind when its
    tree differs from the tree of the master holding the most files (the first such)."""
    if not probes:
        return {}
    union = set().union(*(set(p.flags) for p in probes.values()))
    trees = {ip: p.tree for ip, p in probes.items() if p.tree is not None}
    ref = max(trees, key=lambda ip: trees[ip]["files"], default=None)
    out = {}
    for ip, p in probes.items():
        ids = tuple(sorted(union - set(p.flags)))
        behind = ref is not None and p.tree is not None and p.tree["digest"] != trees[ref]["digest"]
        if ids or behind:
            out[ip] = Lag(ids, behind, f"the live masters (flags' union; most files: {ref})")
    return out


def holders(probes: dict[str, HostProbe], image_id: str) -> list[str]:
    return [ip for ip, p in probes.items() if image_id in p.flags]


def lag_problem(ip: str, role: str, lag: Lag, probes: dict[str, HostProbe], ha: bool) -> str:
    """One problem line naming what ``ip`` lacks and what fills it."""
    if lag.ids:
        held = "; ".join(f"{i} (on {', '.join(holders(probes, i)) or '?'})" for i in lag.ids)
        what = f"lacks images {held}"
    else:
        what = "holds data that differs from the reference's, with no image flag to name (a push?)"
    if ha:
        return (f"{ip} ({role}, HA) {what}: lvscare's VIP sends pulls of them here too (404); "
                "`pulumi up` copies the live masters' union")
    return (f"{ip}: its replica lags {lag.reference} (stamp tree is not master0's live tree: "
            f"data added on master0 after the last `up`, e.g. `sealer run <app>`) and {what}; "
            "`pulumi up` copies it")


def short_age(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# containerd states that are fine: it reads certs.d, or the kubelet does not pull through it.
# docker-certs.d: basefs' containerd reads /etc/docker/certs.d, where the CA is written too;
# elsewhere:<config_path>: configure-node.sh writes the CA and hosts.toml under its first entry
# (scripts/lib/hosts-dir.sh), and the CA column says whether they are there.
CONTAINERD_OK = {"certs.d", "docker-certs.d", "no-cri", "-"}
CONTAINERD_CERTS_D = "/etc/containerd/certs.d"
CONTAINERD_WHY = {
    "unset": "its CRI config_path is unset",
    "stale": "its config changed after it started: restart containerd",
    "down": "it is installed but not running",
    "unknown": "`containerd config dump` failed",
}


def serving(status: str) -> bool:
    """Whether HAProxy sends connections to a server in this stats ``status``: ``UP``, and ``UP
    1/2`` (up, one failed check of the two that take it down), not ``DOWN 1/2`` (down, one good
    check of the two that bring it up), ``DOWN``, ``MAINT`` or ``no check``. Checked on HAProxy
    2.6: a server whose checks start failing reads ``UP 2/3``, ``UP 1/3``, then ``DOWN``; back, it
    reads ``DOWN 1/3``, ``DOWN 2/3``, then ``UP``. A loaded master whose check missed its 2 s
    answers ``UP 1/2`` while it still serves every node."""
    return status == "UP" or status.startswith("UP ")


# The problem an entry point has while master0 does not serve there (DOWN, or DOWN 1/2: coming
# back, one good check of the two); after the fence phase reloaded it, that may still be its
# first checks of the new master0 (cli/change.py fence).
MASTER0_NOT_SERVING = "pulls go to a warm standby, pushes fail"
# The problem an entry point has while no warm standby of it is UP (also for a moment after a
# reload added one: cli/change.py's fence check looks again then).
NO_STANDBY_UP = "the entry point sees no warm standby UP"
# Between a recovery's phases: an entry point the fence phase has not rewritten sees none of the
# servers that serve now UP (the first phase restarted them; it checks them again at its interval).
NONE_UP_UNTIL_FENCE = "its pulls stop until the fence phase rewrites it"
# A warm standby whose registry does not answer: right after an `up` that restarted it, it may
# still be starting (or too slow to answer the probe on a loaded host).
STANDBY_NOT_RUNNING = "(warm standby) runs no registry"
# What a restart by the `up` just done explains and what settles within the entry points' check
# interval: cli/change.py looks once more before it judges.
SETTLING = (NO_STANDBY_UP, NONE_UP_UNTIL_FENCE, STANDBY_NOT_RUNNING)


def entry_problems(ip: str, role: str, probe: HostProbe, master0: str, mirrors: list[str],
                   port: int) -> list[str]:
    """A host that reaches the registry through its node-local entry point: the page answers,
    its servers are master0 then the live warm standbys (what the program declared: a fenced old
    master0 is none of them), master0 is UP there, and a standby is UP to fall back on."""
    if probe.entry is None:
        return [f"{ip} ({role}): {probe.entry_error or 'no entry point reported'}: its pulls have "
                "no node-local entry point; run `pulumi up`"]
    want = [(f"{master0}:{port}", False), *((f"{m}:{port}", True) for m in mirrors)]
    have = [(s["address"], s["backup"]) for s in probe.entry]
    if have != want:
        def show(pairs): return ", ".join(a + (" (backup)" if b else "") for a, b in pairs) or "none"
        return [f"{ip} ({role}): the entry point's servers are {show(have)}, not {show(want)}; "
                "run `pulumi up`"]
    problems = []
    status = probe.entry[0]["status"]
    if not serving(status):
        problems.append(f"{ip} ({role}): the entry point sees master0 {master0} {status}: "
                        f"{MASTER0_NOT_SERVING}")
    if mirrors and not any(serving(s["status"]) for s in probe.entry[1:]):
        problems.append(f"{ip} ({role}): {NO_STANDBY_UP}: pulls stop if "
                        "master0 does")
    return problems


@dataclass(frozen=True)
class FencePending:
    """Between a recovery's two phases (cli/change.py): ``hosts`` reach the registry through a
    node entry point the first phase left as it was (``Topology.deferrable_to_fence``): its
    servers are still ``master0`` (the old one) then ``mirrors`` (the old warm standbys, the new
    master0 among them). Only ``sampled`` of them are probed before the fence phase: a check of
    every node would make the recovery's time grow with the nodes again (issue 24); the fence
    phase's own check probes them all."""

    hosts: frozenset[str]
    sampled: frozenset[str]
    master0: str
    mirrors: tuple[str, ...]


def pending_entry_problems(ip: str, role: str, probe: HostProbe, pending: FencePending,
                           serving_hosts: list[str], port: int) -> list[str]:
    """A host whose entry point the fence phase has not rewritten yet: it lists the old layout
    (or already the new one: a resumed recovery) and one of ``serving_hosts`` (the new master0 and the
    live warm standbys) is UP there, so its pulls go on."""
    if probe.entry is None:
        return [f"{ip} ({role}): {probe.entry_error or 'no entry point reported'}: its pulls have "
                "no node-local entry point; run `pulumi up`"]
    old = [(f"{pending.master0}:{port}", False), *((f"{m}:{port}", True) for m in pending.mirrors)]
    new = [(f"{serving_hosts[0]}:{port}", False), *((f"{m}:{port}", True) for m in serving_hosts[1:])]
    have = [(s["address"], s["backup"]) for s in probe.entry]
    if have not in (old, new):
        def show(pairs): return ", ".join(a + (" (backup)" if b else "") for a, b in pairs) or "none"
        return [f"{ip} ({role}): the entry point's servers are {show(have)}, neither the layout "
                f"before the recovery ({show(old)}) nor after it ({show(new)}); run `pulumi up`"]
    up = [s["address"] for s in probe.entry
          if serving(s["status"]) and s["address"].rsplit(":", 1)[0] in serving_hosts]
    if not up:
        seen = ", ".join(f"{s['address']} {s['status']}" + (f" ({s['check']})" if s.get("check") else "")
                         for s in probe.entry)
        return [f"{ip} ({role}): the entry point sees none of {', '.join(serving_hosts)} UP ({seen}): "
                f"{NONE_UP_UNTIL_FENCE}"]
    return []


def containerd_problem(state: str, endpoint: str) -> str | None:
    """Why a host's containerd (what the kubelet pulls with) does not read certs.d, so its pulls
    through ``endpoint`` would not trust the registry's CA; None when that is fine."""
    if state in CONTAINERD_OK or state.startswith("elsewhere:"):
        return None
    why = CONTAINERD_WHY.get(state, f"it reported {state or 'nothing'}")
    return (f"containerd does not read {CONTAINERD_CERTS_D} ({why}), so its pulls through "
            f"{endpoint} would not trust the registry's CA")


@dataclass
class Assessment:
    hosts: list[HostHealth]
    problems: list[str]
    images_expected: int
    master0_images: int   # complete images on master0 (0 when unreachable)
    asked_again: list[str] = field(default_factory=list)  # hosts probed twice (probe_hosts' again)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def rows(self) -> list[tuple[str, ...]]:
        return [h.row(self.images_expected) for h in self.hosts]


def assess(config: StackConfig, images: list[StoredImage], probes: dict[str, HostProbe],
           pending: FencePending | None = None) -> Assessment:
    """The hosts judged against the stack's topology; with ``pending`` (between a recovery's
    phases) the hosts it defers are judged by ``pending_entry_problems``, and those not sampled
    are not judged (not probed)."""
    layout = Topology.of(config)
    hosts: list[HostHealth] = []
    problems: list[str] = []
    expected = len(images)
    master0_images = 0
    secure = ca_digest(config) != "-"
    domain, master0 = config.registry.domain, layout.master0
    entry = config.registry.local_registry.node_entry
    for plan in layout.hosts:
        ip, role = plan.ip, str(plan.place)
        health = HostHealth(ip, role, str(plan.role), plan.down, None)
        hosts.append(health)
        if plan.down:
            continue
        if pending is not None and ip in pending.hosts:
            health.fence_pending = True
            if ip not in pending.sampled:
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
            if probe.registry == "stale":
                problems.append(f"{ip} (warm standby) is held out of service by its stale gate "
                                "(its copy of master0's data has not completed): run `pulumi up`")
            elif probe.registry != "running":
                problems.append(f"{ip} {STANDBY_NOT_RUNNING}: nodes' pulls lose this mirror")
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
        if plan.deploys:
            health.tree, health.flags = probe.tree, len(probe.flags)
        if plan.copies_data and not plan.ha and plan.place is not Place.MASTER0:
            # (HA: every master against the live masters' union, below.)
            m0 = probes.get(master0)
            health.lacking = replica_lags(m0 if m0 is not None and m0.reachable else None, probe)
            if health.lacking is not None:
                problems.append(lag_problem(ip, role, health.lacking, {master0: m0}, False))
        if plan.ha:
            # sealer's lines: a master maps the domain to itself, a node to lvscare's VIP.
            if plan.deploys and probe.resolves != ip:
                problems.append(f"{ip}: {domain} points to {probe.resolves or 'nothing'}, not to "
                                f"this master's own registry (sealer's HA layout maps it to {ip})")
            elif not probe.resolves:
                problems.append(f"{ip}: {domain} points to nothing (sealer's HA layout maps it to "
                                "lvscare's VIP on nodes)")
        elif entry is not None and layout.uses_entry(ip, entry):
            health.entry, health.entry_error = probe.entry, probe.entry_error or None
            if probe.resolves != entry.address:
                problems.append(f"{ip}: {domain} points to {probe.resolves or 'nothing'}, not to "
                                f"its node entry point {entry.address}")
            if health.fence_pending:
                problems += pending_entry_problems(ip, role, probe, pending,
                                                   [master0, *layout.mirrors], config.registry.port)
            else:
                problems += entry_problems(ip, role, probe, master0, layout.mirrors,
                                           config.registry.port)
        elif probe.resolves != master0:
            problems.append(f"{ip}: {domain} points to {probe.resolves or 'nothing'}, "
                            f"not to master0 {master0}")
        if secure and probe.ca != "ok":
            problems.append(f"{ip}: CA trust {probe.ca}: docker and containerd must both hold the configured CA")
        why = containerd_problem(probe.containerd, f"{domain}:{config.registry.port}")
        if secure and why:
            problems.append(f"{ip}: {why}")
    if layout.ha:
        masters = {h.ip: probes[h.ip] for h in hosts
                   if h.reachable and h.deploy != RegistryRole.NONE and h.ip in probes}
        for h in hosts:
            lag = ha_lags(masters).get(h.ip)
            if lag is not None:
                h.lacking = lag
                problems.append(lag_problem(h.ip, h.role, lag, masters, True))
    return Assessment(hosts, problems, expected, master0_images)


def check_cluster(session: Session, pending: FencePending | None = None,
                  again: bool = False) -> Assessment:
    """The status probe on every live host at once (with ``pending``: but the deferred hosts
    not sampled), judged against the stack's topology. ``again`` (a change's verification): a
    host that answered nothing within the deadline is probed once more (probe_hosts)."""
    skipped = pending.hosts - pending.sampled if pending is not None else frozenset()
    live = [h.ip for h in session.topology.live if h.ip not in skipped]
    config, images = session.config, session.images
    probes = probe_hosts(session.ssh(), live, probe_command(config, all_refs(images)), again=again)
    result = assess(config, images, probes, pending)
    result.asked_again = sorted(ip for ip, probe in probes.items() if probe.attempts > 1)
    return result


def render_table(result: Assessment, domain: str = "sea.hub") -> str:
    head = ("HOST", "ROLE", "REACHABLE", "DEPLOY", "REGISTRY", "IMAGES", "REPLICA",
            f"{domain.upper()} ->", "CA", "CONTAINERD", "LACKS", "ENTRY")
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
        complete = sum(1 for h in deploy if h.reachable and h.lacking is None)
        return (f"{head}: HA, {running} of {len(deploy)} live masters' registries run, "
                f"{complete} of {len(deploy)} hold every image the others hold; master0 "
                f"{config.master0} serves {result.master0_images}/{result.images_expected} images"
                f"{tail} ({seconds:.1f}s)")
    entry = config.registry.local_registry.node_entry
    pointing = sum(1 for h in live if h.resolves == config.master0
                   or entry is not None and h.resolves == entry.address and h.entry is not None)
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
    if result.asked_again:
        print(f"note: {len(result.asked_again)} hosts answered nothing within the probe's deadline "
              f"and were probed again ({', '.join(result.asked_again[:5])}"
              f"{', ...' if len(result.asked_again) > 5 else ''})", file=out)
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
