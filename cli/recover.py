"""`recover master0`: move the registry to another master when master0 is dead."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field

from cli import apiserver, sealer_clusterfile
from cli.change import (Change, Outcome, Result, Timer, apply_change, failure, finish,
                        health_summary_json, plan_json, preflight_probe)
from cli.common import (EXIT_DEGRADED, CliError, add_json_argument, add_ssh_key_argument,
                        add_stack_arguments, guarded, parse_ip, print_json)
from cli.change import PREFLIGHT_TIMEOUT_S
from cli.probe import HostProbe, complete_images, probe_command, probe_hosts
from cli.session import Session
from config import StackConfig
from cli.store import check_store
from topology import Place, Topology, image_hex

NAME = "recover"
HELP = "make another master the registry's master0 (the old one is marked down, never dialled)"
DESCRIPTION = """\
Recover the registry after master0 died: `recover master0 --host NEW`.

1. Preflight, touching nothing: NEW must be a master of the cluster, a deploy host, not down,
   reachable over SSH within 3 s; in pre mode its replica must hold every image of the boot
   history; the local image store, when the stack names one, must hold every image; NEW needs
   disk space for the data it lacks. A stack without image store (adopted) copies host to host:
   pre mode needs NEW's own complete replica (its replica stamp), post mode NEW's or another
   live deploy host's. The apiserver the records will be written through (the first of
   kubernetes.endpoints not down; by default NEW's) must answer GET /readyz with the
   kubeconfig's credentials within 5 s. The old master0 is never dialled.
   NEW (or, in post mode without its own replica, the host its data is copied from) must not
   lack images: it is refused when another live deploy host holds an image id it does not
   (sealer's <rootfs>/cache/registry/<id> flags, e.g. after `sealer run <app>`), when it lacks
   an id of the stack output data_images (what the last `up` synced), or when its replica
   stamp's tree is not the stack output data_tree (its copy is older than the last `up`'s),
   unless the image store (apps.image_store) pins the missing ids (in HA: unless the program's
   `up` copies the union of the live masters' data, which fills ids another master holds). A
   stack without those outputs (older) is judged by the live hosts only. The refusal names the
   host and the missing ids.
2. After an interrupted run (its engine killed with SIGKILL, Ctrl-C, a reboot) a rerun resumes:
   the stack lock left by a `pulumi` of this machine that is gone is removed, a truncated
   file:// checkpoint restored from its backup, and the pending operations it left dropped (the
   steps run again: each is idempotent); a live `pulumi` here holding the lock is waited for
   (up to 2 min); a lock written on another machine stops the command, naming its writer.
   Sets master0 to NEW and adds the old master0 to down_hosts (through the engine), runs
   `pulumi preview` and prints the plan. With --preview the previous config is restored and
   nothing else happens.
3. Asks for confirmation (unless --yes), runs `pulumi up` with one line per step, then probes
   every live host as `status` does. Where nodes reach the registry through their node entry
   point (registry.local_registry.node_entry) and NEW was a warm standby, the recovery runs in
   two phases, so that its time does not grow with the nodes: this `up` leaves those nodes'
   steps as they are (their HAProxy already lists NEW as a backup: their pulls go on) and the
   check probes 8 of them; once verified, the fence phase, a plain `up`, rewrites them (NEW
   first, the old master0 gone from their server lists) and every live host is checked again.
4. Prints old and new master0, nodes repointed, images verified and the time of each phase.
5. Once verified, makes sealer's own Clusterfile name NEW first (sealer takes the first master as
   master0 in its next scale-up, run and delete): the ConfigMap kube-system/sealer-clusterfile
   through the same apiserver (a PUT at the resourceVersion read), and ~root/.sealer/Clusterfile
   and ~root/.sealer/<name>/Clusterfile on every live host holding one. Only the host order
   changes, byte for byte; a file already naming NEW first is not written.

--json prints one object on stdout when the command ends (the progress goes to stderr):
  command "recover", stack, exit_code, error (null, or why it failed; a refusal or a failed
  `up` has only these four keys; a refusal for lacking images adds lacking {...} as below),
  outcome (previewed|aborted|applied), resumed (NEW already was master0), old_master0, master0,
  down_hosts, preflight {host, replica_images, images_expected, disk_avail_bytes, needed_bytes,
  apiserver, data_source, lacking {host (the host judged: NEW or its data's source), master0
  (NEW), ids [image ids it lacks], held_by
  {id: [live hosts holding it]}, stale_tree, filled_by (null, or what fills the gap), unfilled
  [ids], outputs (the stack had data_tree/data_images)}}, plan {changes, repointed, launch_on,
  data_to, dropped {ip: resources}, records, lines}, verified (null unless applied: {healthy,
  master0_images, images_expected, problems}), fence (null unless the recovery ran in two
  phases: {hosts (how many the first left), sampled, healthy (null when the fence phase did not
  run), problems, error}), seconds {preflight, preview, up, verify[, fence, fence_verify]},
  sealer_clusterfile (null unless verified: [{where, state (updated|unchanged|absent|failed),
  detail}]).

With registry.local_registry.ha (sealer's HA layout: a registry on every master, nodes pull
through lvscare's VIP, which drops a dead master by itself) the recovery fences the dead master0
(down_hosts: nothing dials it again), makes NEW master0 (sealer's first master: choose the first
live master of sealer's Clusterfile; `watch` does) and keeps every other master serving. No hosts
line changes: masters keep mapping the domain to themselves, nodes stay on the VIP; data is
NEW's own (no copy from a store).

Exit codes: 0 recovered and verified (or previewed); 1 `up` or the verification failed, or
sealer's Clusterfile could not be edited (a rerun is safe), or not confirmed; 2 refused (bad
input or preflight, e.g. NEW lacks images): nothing was changed. The engine's environment is the operator's: `pulumi` on PATH (or --pulumi), PULUMI_BACKEND_URL / `pulumi
login`, PULUMI_CONFIG_PASSPHRASE.
"""
EPILOG = """\
examples:
  $ python -m cli recover master0 --host 198.18.0.12 --stack demo --preview
  $ python -m cli recover master0 --host 198.18.0.12 --stack demo --yes
  $ python -m cli recover master0 --host 198.18.0.12 --yes --json | jq .verified.healthy
"""


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", choices=["master0"], help="what to recover (only master0)")
    parser.add_argument("--host", required=True, metavar="IP", help="the master that becomes master0")
    add_stack_arguments(parser)
    parser.add_argument("--preview", action="store_true",
                        help="show the plan, then restore the config; change nothing")
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    add_ssh_key_argument(parser)
    add_json_argument(parser)


def check_role(config: StackConfig, host: str) -> None:
    """The refusals that need only the config (and its topology)."""
    cluster = config.cluster
    try:
        plan = Topology.of(config).host(host)
    except KeyError:
        raise CliError(f"{host} is not a host of cluster {cluster.name} "
                       f"(masters: {', '.join(cluster.masters)}; nodes: {', '.join(cluster.nodes) or 'none'})") from None
    if plan.place is Place.NODE:
        raise CliError(f"{host} is a node, not a master: master0 must be one of the masters "
                       f"({', '.join(cluster.masters)})")
    if plan.down:
        raise CliError(f"{host} is listed in down_hosts; if it is back, take it off with "
                       f"`python -m cli rejoin --host {host} --stack <stack>` first")
    if not plan.deploys:
        raise CliError(f"{host} is not a deploy host (registry.local_registry.deploy_hosts: "
                       f"{', '.join(config.deploy_hosts)}): it holds no registry files to serve from")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def preflight(session: Session, host: str, down_hosts: list[str]) -> dict:
    """Refuses (CliError, exit 2) unless ``host`` can become master0 and the records can be
    written once ``down_hosts`` is set; touches nothing."""
    config = session.config
    check_role(config, host)
    images = session.images  # a missing image refuses here (post and pre)
    probe: HostProbe = preflight_probe(session, host)
    if not probe.reachable:
        raise CliError(f"cannot reach {host} over SSH: {probe.error} (nothing was changed)")
    present = complete_images(images, probe.missing_refs)
    if config.distribution == "pre" and present < len(images) and not config.ha:
        raise CliError(f"{host}'s replica holds {present} of {len(images)} images (missing "
                       f"{probe.missing_refs[0]}); in pre mode the new master0 must already hold "
                       "the data: run `pulumi up` while master0 is alive, or use post mode")
    others = other_live_deploy_hosts(session, host, down_hosts)
    judged = probe
    if config.ha:
        # Every master serves the data it holds; the new master0 keeps its own.
        source, needed = f"{host}'s own registry data (HA: every master serves its own)", 0
    elif config.apps.copies_data and present == len(images):
        # The fill step finds every ref served already and copies nothing: the store may be down.
        source, needed = f"{host}'s own replica", 0
    elif config.apps.copies_data:
        source, needed = store_source(session, probe)
    else:
        source, needed, source_ip = data_source(session, host, probe, others)
        judged = others[source_ip] if source_ip != host else probe
    lacking = candidate_lacks(config, host, judged, others, stack_outputs(session))
    refuse_lacking(config, lacking)
    if probe.disk_avail < needed:
        raise CliError(f"{host} has {human_bytes(probe.disk_avail)} free under {config.rootfs}, "
                       f"the registry data needs {human_bytes(needed)} more")
    api = apiserver.check(session, down_hosts, master0=host)
    return {"host": host, "replica_images": present, "images_expected": len(images),
            "disk_avail_bytes": probe.disk_avail, "needed_bytes": needed,
            "apiserver": api.endpoint, "data_source": source, "lacking": lacking.as_json()}


# The stack outputs the program exports after each `up` (the data the live deploy hosts were
# synced to): `data_tree`, the sha256 of the synced registry tree (replica.sh's tree_list), and
# `data_images`, the sorted image ids (cache/registry flags) synced with it. An older stack has
# neither: the live hosts alone are judged then.
DATA_OUTPUTS = ("data_tree", "data_images")


def stack_outputs(session: Session) -> dict:
    """The data outputs of the last `up`, read through the engine ({} for an older stack)."""
    found = session.engine.outputs(*DATA_OUTPUTS)
    out = {}
    if isinstance(found.get("data_tree"), str) and found["data_tree"]:
        out["data_tree"] = found["data_tree"]
    if isinstance(found.get("data_images"), list):
        out["data_images"] = sorted(str(i).removeprefix("sha256:") for i in found["data_images"])
    return out


def other_live_deploy_hosts(session: Session, host: str, down_hosts: list[str]) -> dict[str, HostProbe]:
    """The status probe (no refs) of every live deploy host other than ``host`` once
    ``down_hosts`` is set (the old master0 is never dialled), all at once."""
    config, down = session.config, set(down_hosts)
    others = [ip for ip in config.deploy_hosts if ip != host and ip not in down]
    return probe_hosts(session.ssh(), others, probe_command(config, []), PREFLIGHT_TIMEOUT_S)


@dataclass(frozen=True)
class Lacking:
    """What the new master0 (or the host its data comes from) lacks of the registry data.

    ``ids``: image ids (sealer's `<rootfs>/cache/registry/<id>` flags) it does not hold, each
    with where it is known from (``held_by``: live hosts holding it; [] when only the last `up`
    recorded it, stack output `data_images`); ``stale_tree``: its replica stamp's tree is not the
    tree the last `up` synced (stack output `data_tree`); ``filled_by``: what fills the gap during
    the recovery `up` (the image store for ids it pins; in HA the union copy between live
    masters), or None; ``unfilled``: the ids nothing fills. ``outputs``: whether the stack had
    the data outputs (False: judged by the live hosts only)."""

    host: str
    master0: str = ""
    ids: tuple[str, ...] = ()
    held_by: dict = field(default_factory=dict)
    stale_tree: bool = False
    filled_by: str | None = None
    unfilled: tuple[str, ...] = ()
    outputs: bool = False

    @property
    def refused(self) -> bool:
        return bool(self.unfilled) or (self.stale_tree and self.filled_by is None)

    def as_json(self) -> dict:
        return {"host": self.host, "master0": self.master0, "ids": list(self.ids), "held_by": self.held_by,
                "stale_tree": self.stale_tree, "filled_by": self.filled_by,
                "unfilled": list(self.unfilled), "outputs": self.outputs}


def candidate_lacks(config: StackConfig, host: str, judged: HostProbe,
                    others: dict[str, HostProbe], outputs: dict) -> Lacking:
    """What ``judged`` (the new master0 ``host``, or the host its data is copied from) lacks:
    ids the last `up` synced (``outputs["data_images"]``) or another live deploy host holds
    (``others``' flags) that it does not hold, and whether its replica stamp's tree is not the
    tree the last `up` synced (``outputs["data_tree"]``; not judged for a stamp of master0's own
    data, "self"). Pure: the probes are read by the caller."""
    own = set(judged.flags)
    live = {ip: p for ip, p in others.items() if p.reachable and ip != judged.ip}
    wanted = set(outputs.get("data_images", ()))
    for p in live.values():
        wanted |= set(p.flags)
    ids = tuple(sorted(wanted - own))
    held_by = {i: [ip for ip, p in live.items() if i in p.flags] for i in ids}
    stamp = judged.replica
    stale = (not config.ha and "data_tree" in outputs and stamp is not None
             and stamp["source"] != "self" and stamp["tree"] != outputs["data_tree"])
    filled_by, unfilled = None, ids
    if config.apps.copies_data:
        store = {image_hex(i) for i in config.image_ids}
        unfilled = tuple(i for i in ids if i not in store)
        filled_by = f"the image store {config.apps.image_store.registry}"
    elif config.ha and Topology.of(config).data_sources(host):
        # The program's `up` copies the union of the live masters' data to each of them.
        unfilled = tuple(i for i in ids if not held_by[i])
        filled_by = "the union copy between the live masters"
    return Lacking(judged.ip, host, ids, held_by, stale, filled_by if ids or stale else None,
                   unfilled, bool(outputs))


def refuse_lacking(config: StackConfig, lacking: Lacking) -> None:
    """Exit 2, touching nothing, when the new master0 would serve less than the cluster holds and
    nothing fills the gap; the refusal names the host and the missing ids (and, with --json,
    carries ``lacking``)."""
    if not lacking.refused:
        return
    host = lacking.host
    if lacking.master0 and lacking.master0 != host:
        host = f"{host} (the new master0 {lacking.master0} would copy its data from it)"
    parts = []
    if lacking.unfilled:
        def where(i: str) -> str:
            held = lacking.held_by.get(i) or []
            return f"{i} (held by {', '.join(held)})" if held else f"{i} (synced by the last `up`)"
        parts.append(f"lacks images {', '.join(where(i) for i in lacking.unfilled)}")
    if lacking.stale_tree and lacking.filled_by is None:
        parts.append("its replica stamp's tree is not the tree the last `up` synced (stack output "
                     "data_tree): its copy is older")
    store = ("the stack names no image store (apps.image_store) that could fill them"
             if not config.apps.copies_data else
             "the image store (apps.image_store) pins none of them")
    raise CliError(f"{host} {' and '.join(parts)}; {store}: recovering onto it would lose them. "
                   "Choose a master holding them (`python -m cli status` names what each lacks), "
                   "or bring the old master0 back and run `pulumi up`; nothing was changed",
                   detail={"lacking": lacking.as_json()})


def store_source(session: Session, probe: HostProbe) -> tuple[str, int]:
    """The image store fills the new master0: it must serve every pinned ref now."""
    store = session.config.apps.image_store
    assert store is not None
    check = check_store(store, session.store_password(), session.images, session.project_dir)
    if check.problems:
        more = f" (and {len(check.problems) - 1} more)" if len(check.problems) > 1 else ""
        raise CliError(f"the image store {store.registry} (apps.image_store.registry) serves "
                       f"{check.served} of {check.refs} refs: {check.problems[0]}{more}; "
                       "nothing was changed")
    return f"the image store {store.registry}", max(0, check.bytes - probe.registry_bytes)


def data_source(session: Session, host: str, probe: HostProbe,
                others: dict[str, HostProbe]) -> tuple[str, int, str]:
    """Where the new master0's data comes from when the stack names no image store (an adopted
    cluster), how many bytes it lacks, and that host: its own complete replica (pre mode needs
    one), else (post) the first other live deploy host (``others``, probed) holding a complete
    replica, as its data step will choose. Refuses when there is none: the new master0 would
    serve no data."""
    config = session.config
    if probe.replica is not None:
        return f"{host}'s own replica", 0, host
    if config.distribution == "pre":
        raise CliError(f"{host} holds no complete replica (no registry/.sealer-replica stamp; the "
                       "stack names no image store): in pre mode the new master0 must already hold "
                       "the data: run `pulumi up` while master0 is alive, or choose a master whose "
                       "`status` REPLICA column shows a stamp")
    for ip, other in others.items():
        replica = other.replica if other.reachable else None
        if replica is not None:
            return f"{ip}'s replica", max(0, int(replica["bytes"]) - probe.registry_bytes), ip
    tried = ", ".join(f"{ip} ({'no complete replica' if p.reachable else 'unreachable'})"
                      for ip, p in others.items()) or "no other live deploy host"
    raise CliError(f"no source for the registry data: {host} holds no complete replica, the stack "
                   f"names no image store (apps.image_store), and no live deploy host holds one "
                   f"(tried: {tried})")


def lacking_line(lacking: dict) -> str:
    """The preflight's word on what the new master0 lacks (it was not refused)."""
    judged = "" if lacking["outputs"] else " (judged by the live hosts: the stack has no data outputs)"
    if not lacking["ids"] and not lacking["stale_tree"]:
        return f"it lacks no image another live host or the last `up` has{judged}"
    what = f"{len(lacking['ids'])} image(s)" if lacking["ids"] else "a newer tree"
    return f"it lacks {what}, filled by {lacking['filled_by']}{judged}"


def rerun_hint(args: argparse.Namespace) -> str:
    return f"python -m cli recover master0 --host {args.host} --stack {args.stack} --yes"


def document(args: argparse.Namespace, old: str, down: list[str], checked: dict,
             result: Result, timer: Timer, code: int) -> dict:
    """The `--json` object (keys documented in DESCRIPTION)."""
    return {
        "command": NAME, "stack": args.stack, "exit_code": code,
        "error": failure(result, rerun_hint(args)),
        "outcome": str(result.outcome), "resumed": args.host == old,
        "old_master0": old, "master0": args.host, "down_hosts": down,
        "preflight": checked, "plan": plan_json(result.plan),
        "verified": health_summary_json(result.health),
        "fence": fence_json(result),
        "seconds": {k: round(v, 2) for k, v in timer.phases.items()},
    }


def fence_json(result: Result) -> dict | None:
    """The fence phase of a recovery in two (cli/change.py), or None."""
    if result.pending is None:
        return None
    fence = result.fence
    return {"hosts": len(result.pending.hosts), "sampled": len(result.pending.sampled),
            "healthy": None if fence is None else fence.healthy,
            "problems": [] if fence is None else list(fence.problems), "error": result.fence_error}


@guarded(NAME)
def run(args: argparse.Namespace) -> int:
    timer = Timer()
    start = time.monotonic()
    args.host = parse_ip(args.host)
    with Session(args) as session:
        out = session.out
        config = session.config
        host, old = args.host, config.master0
        resume = host == old
        down = list(config.down_hosts) + ([] if resume or old in config.down_hosts else [old])
        checked = preflight(session, host, down)
        timer.add("preflight", time.monotonic() - start)
        print(f"preflight ok: {host} is a reachable master and deploy host; replica "
              f"{checked['replica_images']}/{checked['images_expected']} images; "
              f"data from {checked['data_source']}; {lacking_line(checked['lacking'])}; "
              f"{human_bytes(checked['disk_avail_bytes'])} free; the records go through the "
              f"apiserver {checked['apiserver']}, which answers ({timer.phases['preflight']:.1f}s)"
              + ("" if not resume else f"; master0 is already {host}: resuming"), file=out)

        result = apply_change(session, Change(
            master0=host, down_hosts=down, preview_only=args.preview, rerun=rerun_hint(args),
            question=f"recover: make {host} master0 of stack {session.stack}?"), timer, args.yes)
        if result.outcome is Outcome.PREVIEWED:
            print(f"preview only: the stack config is restored (master0 {old}); nothing was changed",
                  file=out)
        elif result.outcome is Outcome.APPLIED:
            plan, health = result.plan, result.health
            print(f"recovered: master0 {old} -> {host}" if not resume else f"resumed: master0 {host}",
                  file=out)
            if config.ha:
                print("  nodes repointed:  none (HA: every master keeps its registry and its own "
                      "hosts line, nodes stay on lvscare's VIP)", file=out)
            else:
                print(f"  nodes repointed:  {len(plan.repointed)} ({', '.join(plan.repointed) or 'none'})",
                      file=out)
            print(f"  images verified:  {health.master0_images}/{health.images_expected} on {host} "
                  f"(registry-verify and the status probe)", file=out)
            if result.pending is not None:
                state = ("done" if result.fence is not None and result.fence.healthy else
                         "FAILED" if result.fence_error or result.fence is not None else "not run")
                print(f"  fence phase:      {state}: {len(result.pending.hosts)} entry hosts' node "
                      f"steps ({result.pending.master0} gone from their servers)", file=out)
            print(f"  down_hosts:       {', '.join(result.config.down_hosts) or 'none'} (not contacted)",
                  file=out)
            print(f"  time:             {timer.line()}", file=out)
        sealer = None
        if result.outcome is Outcome.APPLIED and result.health.healthy:
            sealer = sealer_clusterfile.update(session, result.config, host)
            print(f"sealer's Clusterfile (master0 {host} first, nothing else changed):", file=out)
            for outcome in sealer.outcomes:
                print(f"  {outcome.line()}", file=out)
        code = finish(result, rerun_hint(args))
        if sealer is not None and not sealer.ok:
            code = EXIT_DEGRADED
            print(f"error: {sealer_failure(sealer, args)}", file=sys.stderr)
        if args.json:
            doc = document(args, old, down, checked, result, timer, code)
            doc["sealer_clusterfile"] = None if sealer is None else sealer.as_json()
            if sealer is not None and not sealer.ok:
                doc["error"] = sealer_failure(sealer, args)
            print_json(doc)
        return code


def sealer_failure(report: sealer_clusterfile.Report, args: argparse.Namespace) -> str:
    failed = [o.line() for o in report.outcomes if o.state == "failed"]
    return (f"the registry is recovered, but sealer's Clusterfile could not be made to name "
            f"{args.host} first ({'; '.join(failed)}): sealer's next scale-up, run or delete "
            f"would target the old master0; after fixing the cause a rerun is safe: "
            f"{rerun_hint(args)}")
