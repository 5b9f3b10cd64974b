"""The one flow of `recover` and `rejoin`: change master0 and/or down_hosts through the engine,
preview and print the plan, confirm, `up` with live progress, then check every live host with
the status probe.

The stack file is saved before the change; a preview-only run, a refusal or an error before `up`
puts it back byte for byte. Once `up` has started the new config stays: the state may already
have moved, and every step is idempotent, so the fix is a rerun.

The change's `up`s save the state once, at their end (cli/engine.py SKIP_CHECKPOINTS_ENV), not
when each step starts and ends: at 3 + 500 each save writes the whole 4.7 MB state. What that
gives up is the record of an interrupted run's finished steps; what it keeps: a run that fails
or is cancelled (Ctrl-C: the engine lets the steps in flight end) still saves what it did, and
a killed engine (kill -9, a lost machine) leaves the state exactly as before the run, with no
pending operation and nothing half-recorded. The rerun this module asks for then runs those
steps again: every step checks before it acts (the scripts' contract), none creates what a
second create would duplicate (commands and the records' server-side apply), and the steps of a
host on down_hosts are never run, so nothing reaches the old master0 either way. A plain
`pulumi up` by the operator keeps the engine's checkpoints.
"""

from __future__ import annotations

import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Callable
from enum import StrEnum

import yaml

from cli import plan as plan_mod
from cli import stacklock
from cli.common import EXIT_DEGRADED, EXIT_OK, CliError
from cli.engine import UpFailed
from cli.health import (MASTER0_NOT_SERVING, SETTLING, Assessment, FencePending, check_cluster,
                        report)
from cli.probe import HostProbe, all_refs, probe_command, probe_host
from cli.session import Session
from config import PROJECT, StackConfig
from components.cluster_node import recorded_servers
from topology import HostStep, Topology, parse_step

PREFLIGHT_TIMEOUT_S = 10.0
# Deferred entry hosts probed between a recovery's two phases (the verifier among them): enough
# to see that nodes' pulls go on, few enough that the check costs the same at 15 nodes and 500.
FENCE_SAMPLE = 8
# After the fence phase: entry points it reloaded may not have checked their standby twice yet.
FENCE_SETTLE_S = 3.0
# A stack lock held by a live `pulumi` on this machine (an interrupted run still winding down:
# after Ctrl-C the engine lets its steps in flight end): how long the command waits for it.
LOCK_WAIT_S = 120.0


@dataclass
class Timer:
    phases: dict[str, float] = field(default_factory=dict)
    start: float = field(default_factory=time.monotonic)

    def add(self, name: str, seconds: float) -> None:
        self.phases[name] = self.phases.get(name, 0.0) + seconds

    def line(self) -> str:
        parts = ", ".join(f"{k} {v:.1f}s" for k, v in self.phases.items())
        return f"{parts}; total {sum(self.phases.values()):.1f}s"


@dataclass(frozen=True)
class Change:
    """What a command changes in the stack config, and how it talks about it."""

    master0: str | None        # the new master0; None: master0 stays
    down_hosts: list[str]      # the whole list after the change
    question: str              # asked before `up` (unless --yes)
    rerun: str                 # the command that resumes after a failed `up`
    preview_only: bool = False
    # `cli watch`: no preview (the plan is read from the steps `up` ran) and a hook when `up` is
    # done, before the check of every host.
    skip_preview: bool = False
    after_up: Callable[[float], None] | None = None
    # A recovery in two phases: called once the first is verified, before the fence phase; False
    # skips the fence phase (`watch`: the Lease was lost or a stop was asked for meanwhile).
    after_verify: Callable[["Result"], bool] | None = None
    # Before the change: clear the stack lock of a dead engine run of this machine
    # (``clear_dead_locks``). `watch` clears by its own rule (the Lease's record of runs).
    clear_dead_locks: bool = True


class Outcome(StrEnum):
    PREVIEWED = "previewed"    # --preview: the plan was shown, the config restored
    ABORTED = "aborted"        # not confirmed: the config restored
    APPLIED = "applied"        # `up` ran and every live host was checked


@dataclass
class Result:
    outcome: Outcome
    plan: plan_mod.Plan
    config: StackConfig | None = None      # as `up` left it
    health: Assessment | None = None       # after the (first) `up`: the recovery verified
    # A recovery in two phases (``fence_plan``): the hosts the first left pending, and the check
    # after the fence phase (None: no fence phase, or it did not run or failed: ``fence_error``).
    pending: FencePending | None = None
    fence: Assessment | None = None
    fence_error: str | None = None

    @property
    def exit_code(self) -> int:
        if self.outcome is Outcome.PREVIEWED:
            return EXIT_OK
        if self.outcome is Outcome.ABORTED or not self.health.healthy:
            return EXIT_DEGRADED
        if self.pending is not None and (self.fence is None or not self.fence.healthy):
            return EXIT_DEGRADED
        return EXIT_OK


def fence_plan(before: StackConfig, change: Change) -> FencePending | None:
    """Whether a change is a recovery that can run in two phases (issue 24): the first moves the
    registry (master0, standbys, records, verification) and leaves the node-side steps of the
    hosts behind a node entry point as they are (their HAProxy already lists the new master0
    as a backup, so their pulls go on); once that is verified, the fence phase (a plain `up`)
    rewrites them: the old master0 leaves their server lists, the new one becomes their first.
    The first phase's time then does not grow with the nodes. None: one phase (hosts-line
    nodes, HA, a cold standby, master0 not moving)."""
    if change.master0 is None:
        return None
    old = Topology.of(before)
    new = Topology.of(before.model_copy(update={"master0": change.master0,
                                               "down_hosts": list(change.down_hosts)}))
    hosts = new.deferrable_to_fence(old, before.registry.local_registry.node_entry)
    if not hosts:
        return None
    return _pending(new, hosts, old.master0, tuple(old.mirrors))


def _pending(new: Topology, hosts: list[str], master0: str, mirrors: tuple[str, ...]) -> FencePending:
    # The verifier (it pulls every image through its entry point) and hosts spread over the list.
    first = [new.verifier] if new.verifier in hosts else []
    rest = [ip for ip in hosts if ip not in first]
    step = max(1, len(rest) // max(1, FENCE_SAMPLE - len(first)))
    sampled = (first + rest[::step])[:FENCE_SAMPLE]
    return FencePending(frozenset(hosts), frozenset(sampled), master0, mirrors)


def resume_fence_plan(config: StackConfig, deployment: dict | None) -> FencePending | None:
    """A recovery that resumes (the config already names the new master0: the last run was cut)
    in two phases again: ``fence_plan``'s rule, with the old layout read from the state instead
    of the config before the change. The hosts left for the fence phase are the live entry hosts
    whose ``node-<ip>`` step, as the state records it, still lists an old master0 first and the
    new master0 among its warm standbys: their pulls go on through it. Nodes a cut fence phase
    already rewrote are not deferred (their steps are unchanged). None (one phase, as before)
    when no node lists another master0, or the nodes name different old layouts (two
    recoveries cut in a row), or a step's command is not one this program writes."""
    entry = config.registry.local_registry.node_entry
    new = Topology.of(config)
    if entry is None or new.ha or not deployment:
        return None
    layouts: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for res in deployment.get("resources") or []:
        step = parse_step(str(res.get("urn", "")).rsplit("::", 1)[-1])
        if step is None or step[0] is not HostStep.NODE:
            continue
        ip = step[1]
        recorded = recorded_servers(str((res.get("inputs") or {}).get("create", "")))
        if recorded is None:
            return None
        if recorded.master0 == config.master0:
            continue
        try:
            deferrable = new.uses_entry(ip, entry) and not new.host(ip).down
        except KeyError:
            deferrable = False              # a host the config no longer has: the up drops it
        if not deferrable:
            continue                        # a registry host (or down): it moves in the first phase
        if not recorded.entry or config.master0 not in recorded.mirrors:
            return None                     # a node that must move with the registry
        layouts.setdefault((recorded.master0, recorded.mirrors), []).append(ip)
    if len(layouts) != 1:
        return None
    (master0, mirrors), hosts = next(iter(layouts.items()))
    order = {h.ip: i for i, h in enumerate(new.live)}
    return _pending(new, sorted(hosts, key=lambda ip: order.get(ip, len(order))), master0, mirrors)


class StackFileGuard:
    """Saves the stack file; ``restore`` puts it back unless `up` has started."""

    def __init__(self, session: Session):
        self.path = session.engine.stack_file
        self.saved = self.path.read_bytes()
        self.committed = False

    def restore(self) -> None:
        if not self.committed:
            self.path.write_bytes(self.saved)

    def has_key(self, key: str) -> bool:
        doc = yaml.safe_load(self.saved) or {}
        return f"{PROJECT}:{key}" in (doc.get("config") or {})


def preflight_probe(session: Session, ip: str) -> HostProbe:
    """The status probe on the one host a change needs (ConnectTimeout 3 s): nothing else is
    dialled."""
    run = probe_command(session.config, all_refs(session.images))
    return probe_host(session.ssh(), ip, run, PREFLIGHT_TIMEOUT_S)


def plan_json(plan: plan_mod.Plan) -> dict:
    return {"changes": plan.changes, "repointed": plan.repointed, "launch_on": plan.launch_on,
            "data_to": plan.data_to, "dropped": plan.dropped, "records": plan.records,
            "lines": [line.strip() for line in plan.lines]}


def health_summary_json(health: Assessment | None) -> dict | None:
    if health is None:
        return None
    return {"healthy": health.healthy, "master0_images": health.master0_images,
            "images_expected": health.images_expected, "problems": list(health.problems)}


def confirm(question: str, assume_yes: bool, out=sys.stdout) -> bool:
    if assume_yes:
        return True
    if not sys.stdin.isatty():
        raise CliError("not confirmed: stdin is not a terminal; pass --yes to proceed without asking")
    try:
        print(f"{question} [y/N] ", end="", file=out, flush=True)
        answer = input()
    except EOFError:
        answer = ""
    return answer.strip().lower() in ("y", "yes")


def clear_dead_locks(session: Session, resumed: bool) -> None:
    """Before the change, what an interrupted run of this machine left: its stack lock (an engine
    killed with SIGKILL, or on a machine that rebooted, never removes it and every later `up`
    refuses: "the stack is currently locked"), its truncated checkpoint (file://) and the pending
    operations it had started (the steps run again: each is idempotent). Only locks written on
    this machine by a `pulumi` process that is gone (cli/stacklock.py ``gone_here``); a live
    engine here (one winding down after Ctrl-C) is waited for up to LOCK_WAIT_S; any other lock
    stops the command before anything changed, naming its writer. A recovery that resumes
    (master0 already the new one) drops pending operations even when no lock was left."""
    out, engine = session.out, session.engine
    try:
        store = stacklock.lock_store(engine.backend_url())
    except stacklock.LockStoreError as e:
        print(f"note: the stack's locks were not read ({e}); the engine's own check decides", file=out)
        store = None
    cleared: list[stacklock.StackLock] = []
    if store is not None:
        host, deadline, said = socket.gethostname(), time.monotonic() + LOCK_WAIT_S, False
        while True:
            try:
                locks = store.read(PROJECT, session.stack)
            except stacklock.LockStoreError as e:
                print(f"note: the stack's locks were not read ({e}); the engine's own check "
                      "decides", file=out)
                locks = []
            live = [lock for lock in locks if lock.hostname == host and stacklock.engine_alive(lock.pid)]
            if not live or time.monotonic() > deadline:
                break
            if not said:
                print(f"waiting up to {LOCK_WAIT_S:.0f}s for the engine run holding the stack's "
                      f"lock to end: {live[0].describe()}", file=out, flush=True)
                said = True
            time.sleep(1.0)
        verdict = stacklock.decide(locks, stacklock.gone_here(locks, host))
        if verdict.blocked:
            raise CliError(
                "the stack is locked by another engine run: "
                + "; ".join(f"{lock.describe()} ({lock.where})" for lock in verdict.keep)
                + ". Nothing was changed. If that run is over (its machine is gone), `pulumi "
                f"cancel --stack {session.stack}` removes every lock of the stack; then rerun",
                EXIT_DEGRADED)
        for lock in verdict.clear:
            why = stacklock.remove_lock(store, lock)
            if why:
                raise CliError(f"the stack lock of a dead engine run was not removed "
                               f"({lock.describe()}): {why}. Nothing was changed", EXIT_DEGRADED)
            cleared.append(lock)
            print(f"cleared the stack lock of {lock.describe()}: its engine process on this "
                  "machine is gone", file=out)
        root = stacklock.file_backend_root(engine.backend_url()) if cleared else None
        if root is not None:
            repaired = stacklock.repair_checkpoint(root, PROJECT, session.stack)
            if repaired:
                print(f"checkpoint: {repaired}", file=out)
    if cleared or resumed:
        dropped = engine.drop_pending_operations()
        if dropped:
            print(f"dropped {len(dropped)} pending operations an interrupted run left (the next "
                  f"`up` runs those steps again): {', '.join(dropped[:5])}"
                  + (" ..." if len(dropped) > 5 else ""), file=out)


def apply_change(session: Session, change: Change, timer: Timer, assume_yes: bool) -> Result:
    """Set, preview, print the plan, [restore and stop | confirm], up, check every live host."""
    out, engine = session.out, session.engine
    before = session.config
    resumed = change.master0 is not None and change.master0 == before.master0
    if change.clear_dead_locks and not change.preview_only:
        clear_dead_locks(session, resumed=resumed)
    guard = StackFileGuard(session)
    try:
        had_down_hosts = guard.has_key("down_hosts")
        if change.master0 is not None:
            engine.set_master0(change.master0, change.down_hosts, had_down_hosts)
        else:
            engine.set_down_hosts(change.down_hosts, had_down_hosts)
    except BaseException:
        guard.restore()
        raise
    master0 = change.master0 or before.master0

    def render(ops: dict[str, str]) -> plan_mod.Plan:
        return plan_mod.render(ops, master0=master0, domain=before.registry.domain,
                               down_hosts=change.down_hosts,
                               old_master0=before.master0 if change.master0 else None,
                               ha=before.ha)

    pending = fence_plan(before, change)
    if resumed or (pending is not None and before.down_hosts):
        # The state says which layout the nodes still have (one `stack export`): a resumed
        # recovery's config no longer names the old master0, and after an earlier recovery whose
        # fence phase never finished (hosts already down) the nodes may still list an older one
        # than the config before this change says.
        after = before.model_copy(update={"master0": master0, "down_hosts": list(change.down_hosts)})
        try:
            pending = resume_fence_plan(after, session.engine.export())
        except Exception as e:  # noqa: BLE001  (CommandError: the state unreadable)
            pending = None
            print(f"note: the state was not read ({e.__class__.__name__}); the recovery runs "
                  "in one phase", file=out)
    defer = pending.hosts if pending is not None else frozenset()
    if change.skip_preview:
        return _up(session, change, timer, guard, render, pending)
    try:
        steps, seconds = engine.preview(defer=defer)
    except CliError as e:
        guard.restore()
        raise CliError(f"{e.message} (the stack config is restored; nothing was changed)", e.code) from None
    except BaseException:
        guard.restore()
        raise
    timer.add("preview", seconds)
    plan = render(steps.ops)
    print(f"plan for stack {session.stack} (pulumi preview, {seconds:.1f}s):", file=out)
    print(plan.text(), file=out)
    if pending is not None:
        print(f"  fence phase after the recovery is verified: the node steps of "
              f"{len(pending.hosts)} hosts behind their node entry point (their pulls go on "
              f"through the warm standbys meanwhile); {len(pending.sampled)} of them checked "
              "before it", file=out)
    if change.preview_only:
        guard.restore()
        return Result(Outcome.PREVIEWED, plan)
    if not confirm(change.question, assume_yes, out):
        guard.restore()
        print("aborted: the stack config is restored; nothing was changed", file=out)
        return Result(Outcome.ABORTED, plan)
    return _up(session, change, timer, guard, lambda _ops: plan, pending)


def _up(session: Session, change: Change, timer: Timer, guard: StackFileGuard, render,
        pending: FencePending | None = None) -> Result:
    """`up` with live progress, then the check of every live host; ``render`` makes the plan
    (from the preview's steps, or from those `up` ran). With ``pending``: the first `up` leaves
    those hosts' node-side steps out and the check samples them; once verified, the fence phase
    (``fence``)."""
    out, engine = session.out, session.engine
    print(f"pulumi up (stack {session.stack}"
          + (f"; {len(pending.hosts)} entry hosts' node steps left for the fence phase"
             if pending is not None else "") + "):", file=out)
    guard.committed = True
    try:
        steps, seconds = engine.up(out, defer=pending.hosts if pending is not None
                                   else frozenset(), checkpoints=False)
    except UpFailed as e:
        raise CliError(f"pulumi up failed: {e.message}\nnote: the stack config keeps the "
                       f"change; after fixing the cause a rerun is safe (every step is "
                       f"idempotent): {change.rerun}", EXIT_DEGRADED) from None
    timer.add("up", seconds)
    plan = render(steps.ops)
    if change.after_up is not None:
        change.after_up(seconds)

    print("verifying every live host" + (f" (of the {len(pending.hosts)} entry hosts left for "
                                          f"the fence phase, {len(pending.sampled)})"
                                          if pending is not None else "") + ":", file=out)
    start = time.monotonic()
    after = session.reload()
    health = check_cluster(session, pending, again=True)
    if pending is not None and only_settling(health):
        # The new master0's registry restarted as read-write: an entry point that saw it fail is
        # DOWN and checks it again at its interval (the other standby's restart likewise). One
        # more look once every entry point has checked again.
        time.sleep(entry_settle_s(after))
        health = check_cluster(session, pending, again=True)
    timer.add("verify", time.monotonic() - start)
    report(after, health, time.monotonic() - start, out)
    result = Result(Outcome.APPLIED, plan, after, health, pending)
    if pending is not None and health.healthy:
        if change.after_verify is not None and not change.after_verify(result):
            result.fence_error = (f"the registry is recovered; the fence phase was not started "
                                  f"(this process stopped acting): {change.rerun} finishes it")
            return result
        fence(session, change, timer, result)
    return result


def only_settling(health: Assessment, also: tuple[str, ...] = ()) -> bool:
    """Every problem is one a restart by the `up` just done explains and that settles within the
    entry points' check interval (health.SETTLING): an entry point that sees none of its
    standbys UP (before the fence phase: none of the servers that serve now), a warm standby
    whose registry does not answer yet. Between the phases at 3 + 500 the check found a standby
    not answering and 4 of 8 sampled entry points seeing no server UP; no second look was taken
    because the between-phases wording was not recognised."""
    return not health.healthy and bool(health.problems) and all(
        any(kind in p for kind in (*SETTLING, *also)) for p in health.problems)


def entry_settle_s(config: StackConfig) -> float:
    """How long until every entry point has checked each server again: a DOWN server is checked
    at node_entry.check_interval_s (scripts/lib/entry.sh), then once more a second later
    (fastinter, rise 2)."""
    entry = config.registry.local_registry.node_entry
    return (entry.check_interval_s if entry is not None else 1) + FENCE_SETTLE_S


def fence(session: Session, change: Change, timer: Timer, result: Result) -> None:
    """The fence phase: a plain `up` (the node-side steps the first phase left), then the check
    of every live host. A failure leaves the registry recovered and says how to finish."""
    out, engine = session.out, session.engine
    print(f"fence phase: pulumi up (the node steps of {len(result.pending.hosts)} entry hosts: "
          f"{result.pending.master0} leaves their servers):", file=out)
    try:
        _steps, seconds = engine.up(out, checkpoints=False)
    except UpFailed as e:
        result.fence_error = (f"the registry is recovered, but the fence phase failed: {e.message}; "
                              f"their pulls go on through the warm standbys; a rerun finishes it "
                              f"(every step is idempotent): {change.rerun}")
        return
    timer.add("fence", seconds)
    print("verifying every live host:", file=out)
    start = time.monotonic()
    result.fence = check_cluster(session, again=True)
    if only_settling(result.fence, also=(MASTER0_NOT_SERVING,)):
        # Every entry point was just reloaded (at 3 + 300, all 300 within 4 minutes): a server
        # it gained is checked before it counts as UP (rise 2), and one it saw fail (the new
        # master0 answering 300 first checks at once on a loaded host) is checked again only at
        # its interval. One more look once that has had time (3 + 300 refused without it: the
        # new master0 DOWN or DOWN 1/2 on many nodes, and the look came after 3 s, not 10 + 3).
        time.sleep(entry_settle_s(session.config))
        result.fence = check_cluster(session, again=True)
    timer.add("fence_verify", time.monotonic() - start)
    report(session.config, result.fence, time.monotonic() - start, out)


def finish(result: Result, rerun: str) -> int:
    """The exit code; when the check after `up` (or the fence phase) found problems, one
    `error:` line says so."""
    why = failure(result, rerun)
    if why:
        print(f"error: {why}", file=sys.stderr)
    return result.exit_code


def failure(result: Result, rerun: str) -> str | None:
    if result.outcome is Outcome.APPLIED and not result.health.healthy:
        return (f"the status check after `up` found {len(result.health.problems)} problems "
                f"(above); a rerun is safe: {rerun}")
    if result.outcome is Outcome.APPLIED and result.pending is not None:
        if result.fence_error:
            return result.fence_error
        if result.fence is not None and not result.fence.healthy:
            return (f"the registry is recovered; the check after the fence phase found "
                    f"{len(result.fence.problems)} problems (above); a rerun is safe: {rerun}")
    return None
