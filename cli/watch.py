"""`watch`: an unattended failover of master0's registry, decided by a quorum of probers.

The decisions are pure (``cli.failover``); this module does the I/O: one long-lived SSH
connection per prober (an OpenSSH ControlMaster), a round of `scripts/watch-probe.sh` on every
prober each ``--interval``, one JSON line per decision, and the actions through the CLI's own
flows (``recover``'s preflight and ``change.apply_change`` for a failover; ``rejoin``'s for a
returning host).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TextIO

import yaml

import kubeapi
from cli import apiserver, sealer_clusterfile
from cli import stacklock
from cli.change import (Change, Outcome, Result, StackFileGuard, Timer, apply_change,
                        preflight_probe)
from cli.common import (EXIT_INTERRUPTED, EXIT_OK, CliError, add_ssh_key_argument,
                        add_stack_arguments, guarded)
from cli.failover import (HOLD_DOWN, Decision, HoldDown, Kind, Probe, Replica, Returning, Round,
                          Settings, Vote, Watch, master0_tree_of, parse_duration, pick_probers,
                          quorum, rank_candidates, rank_ha_candidates, read_report,
                          stale_standbys)
from cli.lease import (Attempt, Election, Elector, HttpLeaseApi, LeaseSettings, identity,
                       lease_name)
from cli.probe import complete_images
from cli.recover import preflight as recover_preflight
from cli.session import Session
from cli.ssh import SshAccess, ssh_error
from components.remote_scripts import ScriptRun, script_run
from cli.stacklock import ENGINE_RUN, DeadRun, EngineRun
from config import PROJECT, StackConfig

NAME = "watch"
HELP = "probe master0's registry from several hosts; on a quorum over a window, fail over"
DESCRIPTION = """\
Watch master0's registry and recover without a person: `watch --stack NAME`.

Several watchers of one stack (2-3 machines) elect one leader through the Lease
kube-system/sealer-registry-watch-<stack>, written through a live apiserver (the records' rules:
kubernetes.endpoints, else master0's then the other masters' apiservers, none on down_hosts).
Only the leader probes and acts; followers retry every --retry-period and take over a Lease
unchanged for --lease-duration by their own clock. A leader that could not renew for
--renew-deadline stops acting at once: its engine run is killed (SIGKILL, the engine and what it
started). --no-lease: a single watcher, no election.

Every --interval, each prober (up to --probers live cluster hosts other than master0, masters
first) asks https://<master0>:<port>/v2/ (200 or 401: alive) over one long-lived SSH connection
per prober. master0 is decided dead only when a majority of the probers see it dead in every
round for --window; a prober that cannot be reached is no vote (a partition of one prober never
acts); fewer than --min-probers probers decide nothing.

Then: the new master0 is the first live master and deploy host with a complete replica (the
replica stamp <rootfs>/registry/.sealer-replica, else every boot-history ref present), checked as
`recover master0` checks it; the old master0 goes on down_hosts (fenced: no step dials it) and
the recovery `up` runs without preview, then the check of every live host. After a failover,
--hold-down seconds without another; the new master0 is watched. A recovery that did not verify
is rerun, never followed by the fencing of its new master0. The leader records its hold-down in
the Lease (annotation sealer-registry.io/hold-down): a watcher that takes over honours what is
left of it.

A fenced host that answers again is logged and its stale registry stopped over SSH (it ran as
master0, read-write, on data that ended at its death; nodes stay on master0); it stays on
down_hosts. With --rejoin-returning it is rejoined as a standby instead (as `rejoin --host`
does); it is never made master0 again before a replica stamp newer than its rejoin.

Log: one JSON line per decision and action on stdout (or --log FILE): ts, event, and per event:
  start {master0, probers, settings, lease}; lease-acquired {identity, why, apiserver,
  transitions, previous}; lease-following {holder}; lease-renew-failed {why, seconds_left};
  lease-unavailable {why}; lease-lost {why, up_in_flight, engine_killed}; lease-released;
  previous-run {holder, run}; hold-down {seconds_left, inherited_s, previous} (a hold-down taken
  over with the Lease); stack-lock {backend, locks, cleared, kept, why} (a dead leader's engine
  lock cleared from a file:// or postgres:// backend); pending-operations {dropped};
  probers {probers}; decision {decision
  (suspect|cleared|undecidable|failover|held|resume|returned|rejoin|gone), target, why, evidence
  {prober: vote}}; order {masters, source} (HA: sealer's master order the candidates follow);
  candidates {ranked, rejected}; fence {old, new, down_hosts}; up {ok,
  seconds, error}; verified {healthy, master0_images, images_expected, problems, fence_pending
  (how many entry hosts the recovery left for its fence phase), seconds}; fence_phase {ok,
  hosts, old, error, problems, seconds} (after a verified recovery in two phases: the node
  steps of the hosts behind a node entry point, cli/change.py);
  sealer_clusterfile {ok, master0, outcomes [{where, state, detail}] or error} (after a
  verified failover: sealer's Clusterfile names the new master0 first, as `recover` does);
  fenced_registry {host, ok, error}; rejoined {host, ok}; config {master0, down_hosts}; signal
  {signal}; stop {exit_code}.
The engine's own output and the progress of `up` go to stderr.

With registry.local_registry.ha (sealer's HA layout: every master serves, nodes pull through
lvscare's VIP, which drops a dead master by itself) the failover fences the dead master0 the same
way and makes the first live master of sealer's Clusterfile (the ConfigMap sealer-clusterfile,
read through a live apiserver; else the stack's masters order) the new master0, checked as
`recover` checks it; no hosts line changes (nodes stay on the VIP), no data moves.

Stops on SIGTERM or SIGINT: between rounds at once (exit 0); during an `up`, the engine gets one
SIGINT (it finishes its steps in flight) and the watcher exits 130; a leader then releases the
Lease (a follower takes over at its next attempt). Exit 2: bad arguments or config (among them
Lease timings where --lease-duration > --renew-deadline > 1.2 x --retry-period does not hold).
The engine's environment is the operator's (PULUMI_BACKEND_URL or `pulumi login`,
PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE).
"""
EPILOG = """\
examples:
  $ python -m cli watch --stack prod
  $ python -m cli watch --stack prod --window 10s --hold-down 5m --log /var/log/sealer-watch.jsonl
  $ python -m cli watch --stack prod --rejoin-returning
  $ python -m cli watch --stack prod --lease-duration 20s --renew-deadline 12s --retry-period 3s
  $ python -m cli watch --stack prod --no-lease
"""

PROBE_SCRIPT = "watch-probe.sh"
UP_MESSAGE = "cli watch:"   # the history message of the watcher's own `up`s
PROBE_TIMEOUT_S = 4.0       # ssh (multiplexed) + curl's 2 s at most
# master0's tree listing (one direct ssh session, in rounds where master0 answers): short, so a
# master0 that dies during the read delays the first dead round by at most this.
TREE_TIMEOUT_S = 3.0
TREE_CONNECT_TIMEOUT_S = 1
MARK_SCRIPT = "mark-stale.sh"
MASTER_ALIVE = ("-o", "ServerAliveInterval=2", "-o", "ServerAliveCountMax=2")


def duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def register(parser: argparse.ArgumentParser) -> None:
    add_stack_arguments(parser)
    parser.add_argument("--interval", type=duration, default=1.0, metavar="DURATION",
                        help="time between the starts of two probe rounds (default 1s)")
    parser.add_argument("--window", type=duration, default=6.0, metavar="DURATION",
                        help="how long a dead majority must hold before a failover (default 6s)")
    parser.add_argument("--hold-down", type=duration, default=60.0, metavar="DURATION",
                        help="after a failover, no other one for this long (default 60s)")
    parser.add_argument("--probers", type=int, default=3, metavar="N",
                        help="probe from up to N live hosts other than master0 (default 3)")
    parser.add_argument("--min-probers", type=int, default=2, metavar="N",
                        help="with fewer probers nothing is decided (default 2, at least 2)")
    parser.add_argument("--rejoin-returning", action="store_true",
                        help="rejoin a fenced host that answers again, as a standby (default: "
                             "only log it)")
    parser.add_argument("--log", metavar="FILE",
                        help="append the JSON lines to FILE instead of stdout")
    lease = parser.add_argument_group(
        "leader election", "several watchers of one stack (on different machines) elect one "
        "leader through the Lease kube-system/sealer-registry-watch-<stack>; only the leader "
        "probes and acts. Must hold: lease-duration > renew-deadline > 1.2 x retry-period")
    lease.add_argument("--lease-duration", type=duration, default=15.0, metavar="DURATION",
                       help="a follower takes over a Lease unchanged for this long (default 15s)")
    lease.add_argument("--renew-deadline", type=duration, default=10.0, metavar="DURATION",
                       help="the leader stops acting (and kills its engine run) when it could not "
                            "renew for this long (default 10s)")
    lease.add_argument("--retry-period", type=duration, default=2.0, metavar="DURATION",
                       help="time between two acquire or renew attempts (default 2s)")
    lease.add_argument("--no-lease", action="store_true",
                       help="no leader election: this watcher acts alone (one watcher per stack, "
                            "nothing coordinates a second one on another machine)")
    add_ssh_key_argument(parser)


# ------------------------------------------------------------------------------ the log


class EventLog:
    """One JSON object per line, flushed at once: ts (UTC), epoch (seconds), event, fields."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self._lock = threading.RLock()  # a signal handler may log while the main thread does

    def __call__(self, event: str, **fields) -> None:
        now = time.time()
        ts = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        line = json.dumps({"ts": ts, "epoch": round(now, 3), "event": event, **fields},
                          default=str)
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    def decision(self, d: Decision) -> None:
        self("decision", **d.as_json())


# ------------------------------------------------------------------------------ signals


def pulumi_children(command: str = "up") -> list[int]:
    """Our child processes that are the engine running ``command`` (`pulumi ... up ...`), from
    /proc; a `pulumi config set` of the same flow is left alone (interrupted, it would leave
    the stack file half changed)."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        comm = stat[stat.find("(") + 1:stat.rfind(")")]
        ppid = int(stat[stat.rfind(")") + 2:].split()[1])
        if ppid == me and comm == "pulumi" and command.encode() in argv[1:]:
            found.append(int(entry.name))
    return found


def process_tree(roots: list[int]) -> list[int]:
    """``roots`` and every descendant (from /proc, read once: a process whose parent dies is
    reparented and its link to the tree lost)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], list(roots)
    while todo:
        pid = todo.pop(0)
        if pid not in out:
            out.append(pid)
            todo.extend(children.get(pid, []))
    return out


def kill_engine_run() -> list[int]:
    """SIGKILL to the engine running `up` and everything it started (language host, program,
    providers and their SSH sessions): a watcher that lost its Lease must not take one more
    step, which the engine's graceful cancel (finish the steps in flight) would. The stack is
    left as a killed engine leaves it (its lock, pending operations) for the next leader."""
    pids = process_tree(pulumi_children())
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


def from_terminal() -> bool:
    """True when we run in the terminal's foreground process group: a Ctrl-C there reached the
    engine too (forwarding another would make it stop at once instead of finishing its steps)."""
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(fd)


class Stop:
    """SIGTERM/SIGINT: stop between rounds; during an `up`, one SIGINT to the engine."""

    def __init__(self, log: EventLog):
        self.log = log
        self.event = threading.Event()
        self.in_up = False
        self.interrupted_up = False
        self.forwarded = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self.handle)
        signal.signal(signal.SIGINT, self.handle)

    def handle(self, signum, _frame) -> None:
        self.event.set()
        name = signal.Signals(signum).name
        if self.in_up:
            self.interrupted_up = True
            if not self.forwarded:
                self.forwarded = True
                pids = [] if signum == signal.SIGINT and from_terminal() else pulumi_children()
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGINT)
                    except ProcessLookupError:
                        pass
                self.log("signal", signal=name, up_in_flight=True, engine_sigint=pids)
                return
        self.log("signal", signal=name, up_in_flight=self.in_up)

    @property
    def stopping(self) -> bool:
        return self.event.is_set()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.event.wait(seconds)


# ------------------------------------------------------------------------------ probers


class ProberLinks:
    """One SSH connection per prober: an OpenSSH ControlMaster (`ssh -M -N`) that every probe of
    that host goes through (ControlMaster=no: without the socket, ssh connects directly). A master
    that died (the host went away) is started again before the next round."""

    def __init__(self, access: SshAccess):
        self.access = access
        self._dir = tempfile.TemporaryDirectory(prefix="sw-")   # short: a socket path <= 108
        self.masters: dict[str, subprocess.Popen] = {}

    def _path(self) -> str:
        return f"{self._dir.name}/%C"

    def options(self) -> list[str]:
        return ["-o", f"ControlPath={self._path()}", "-o", "ControlMaster=no"]

    def keep(self, probers: list[str]) -> None:
        for ip in list(self.masters):
            if ip not in probers:
                self._close(ip)
        for ip in probers:
            proc = self.masters.get(ip)
            if proc is None or proc.poll() is not None:
                argv = self.access.argv(ip, options=["-M", "-N", "-o", "ControlMaster=yes",
                                                     "-o", f"ControlPath={self._path()}",
                                                     "-o", "ControlPersist=no", *MASTER_ALIVE])
                self.masters[ip] = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                                    stdout=subprocess.DEVNULL,
                                                    stderr=subprocess.DEVNULL,
                                                    env=self.access.env(ip),
                                                    start_new_session=True)

    def run(self, ip: str, command: ScriptRun, timeout: float) -> subprocess.CompletedProcess:
        return self.access.run(ip, command, timeout=timeout, options=self.options())

    def _close(self, ip: str) -> None:
        proc = self.masters.pop(ip, None)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def close(self) -> None:
        for ip in list(self.masters):
            self._close(ip)
        self._dir.cleanup()


def probe_round(links: ProberLinks, config: StackConfig, probers: list[str],
                targets: list[str]) -> tuple[list[Round], dict[str, Replica]]:
    """Every prober at once, each probing every target; a Round per target."""
    command = script_run(PROBE_SCRIPT, config.rootfs, str(config.registry.port), *targets)

    def one(ip: str) -> tuple[dict[str, Probe], Replica | None]:
        done = links.run(ip, command, PROBE_TIMEOUT_S)
        error = "" if done.returncode == 0 else ssh_error(done.stderr, done.returncode)
        return read_report(ip, targets, done.returncode == 0, done.stdout, error)

    with ThreadPoolExecutor(max_workers=max(1, len(probers))) as pool:
        reports = dict(zip(probers, pool.map(one, probers)))
    at = time.monotonic()
    rounds = [Round(at, t, tuple(reports[p][0][t] for p in probers)) for t in targets]
    replicas = {p: r[1] for p, r in reports.items() if r[1] is not None}
    return rounds, replicas


# ------------------------------------------------------------------------------ the watcher


class Watcher:
    def __init__(self, args: argparse.Namespace, session: Session, log: EventLog, stop: Stop):
        self.args, self.session, self.log, self.stop = args, session, log, stop
        self.settings = Settings(window=args.window, interval=args.interval,
                                 hold_down=args.hold_down, min_probers=args.min_probers)
        config = self.config = session.config
        self.watch = Watch(self.settings, config.master0, fenced=config.down_hosts,
                           rejoin_returning=args.rejoin_returning)
        self.read_history()
        self.links = ProberLinks(session.ssh())
        # Leader election (None: --no-lease): only the leader probes and acts.
        self.lease: Elector | None = None
        self.lease_name = ""
        self.lease_stop = threading.Event()
        self.leading = False      # what the main loop last acted as
        self.probers: list[str] = []
        self.replicas: dict[str, Replica] = {}
        self.rejoined_at: dict[str, float] = {}
        self.marked_stale: dict[str, str] = {}  # standby -> master0 tree it was marked stale for
        # The engine run this leader records in the Lease (cli/stacklock.py), and the runs known
        # to be over that may have left the stack locked (the previous leader's, our killed one).
        self.engine_run: EngineRun | None = None
        self.dead_runs: list[DeadRun] = []
        # The hold-down goes in the Lease too (HOLD_DOWN), once this watcher has led: until
        # then the previous leader's record stays there for whoever leads next.
        self.hold_down_known = False
        self.code = EXIT_OK

    def read_history(self) -> None:
        """The stack's last update: an `up` that failed or was interrupted (a watcher stopped
        mid-recovery, a leader that lost its Lease, an operator's Ctrl-C) left master0 where it
        may not serve yet: a dead decision reruns it first; one of a watcher's own recoveries is
        rerun at once (its hosts may be half repointed)."""
        self.last_update, message = last_update(self.session)
        self.watch.unverified = self.last_update in ("update failed", "update in-progress")
        self.resume_at_start = self.watch.unverified and message.startswith(UP_MESSAGE)

    # -- the Lease ----------------------------------------------------------------------------
    def elect(self, settings: LeaseSettings, creds) -> None:
        """Leader election through the Lease (cli/lease.py), its requests through the
        apiservers of the records' rules for the current config (down_hosts never dialled)."""
        self.lease_name = lease_name(self.session.stack)
        api = HttpLeaseApi(creds, lambda: kubeapi.config_candidates(self.config), self.lease_name,
                           per_endpoint_s=max(1.0, settings.retry_period))
        self.lease = Elector(Election(api, identity(), settings, self.lease_name,
                                      annotations=self.lease_annotations),
                             on_started=self.lease_acquired, on_stopped=self.lease_lost,
                             on_renew_failed=self.lease_renew_failed,
                             on_follow=self.lease_following, on_error=self.lease_unavailable)

    def lease_annotations(self) -> dict[str, str | None]:
        """Written with every renew: this leader's engine run, once it started one (until then
        the previous leader's record stays in the Lease), and, once it leads, its hold-down
        (None removes the record when there is none)."""
        run = self.engine_run
        notes: dict[str, str | None] = {} if run is None else {ENGINE_RUN: run.to_text()}
        if self.hold_down_known:
            notes[HOLD_DOWN] = self.hold_down_record()
        return notes

    def hold_down_record(self) -> str | None:
        watch = self.watch
        left = watch.hold_left(time.monotonic())
        if left <= 0:
            return None
        until = datetime.now(timezone.utc) + timedelta(seconds=left)
        return HoldDown(left, stacklock.utc_stamp(until), watch.hold_why).to_text()

    def inherited_hold_down(self) -> tuple[float, HoldDown | None]:
        """The hold-down the Lease we just took over carries: what was left at its last write,
        less how long we saw it unchanged (cli/lease.py ``took_over_unchanged_s``)."""
        took = self.lease.election.took_over if self.lease else None
        record = HoldDown.from_text(took[1].get(HOLD_DOWN)) if took else None
        if record is None:
            return 0.0, None
        return record.remaining(self.lease.election.took_over_unchanged_s), record

    def acting(self) -> bool:
        """May this watcher act now? Always without a Lease; with one, only while it leads (by
        the local clock: false from the renew deadline on, whatever the renew loop is doing)."""
        return self.lease is None or self.lease.leading()

    def lease_acquired(self, attempt: Attempt) -> None:
        self.log("lease-acquired", lease=f"kube-system/{self.lease_name}",
                 identity=self.lease.election.me, why=attempt.why, apiserver=attempt.endpoint,
                 transitions=attempt.transitions, previous=attempt.holder or None)

    def lease_renew_failed(self, attempt: Attempt, left: float) -> None:
        self.log("lease-renew-failed", why=attempt.why, apiserver=attempt.endpoint or None,
                 seconds_left=round(left, 2))

    def lease_following(self, attempt: Attempt) -> None:
        self.log("lease-following", holder=attempt.holder, apiserver=attempt.endpoint,
                 why=attempt.why)

    def lease_unavailable(self, attempt: Attempt) -> None:
        self.log("lease-unavailable", why=attempt.why, apiserver=attempt.endpoint or None,
                 note="not leading: nothing is probed or done until the Lease can be acquired")

    def lease_lost(self, why: str) -> None:
        """The renew loop's thread, the instant leading ended: the engine run (if any) is killed
        now, and again if one starts before the main loop stops acting (its config writes may
        have been in flight)."""
        in_up = self.stop.in_up
        killed = kill_engine_run() if in_up else []
        run = self.engine_run
        if in_up and run is not None:
            self.dead_runs.append(DeadRun(replace(run, pids=tuple({*run.pids, *killed})),
                                          self.lease.election.me if self.lease else "",
                                          "our own run, killed when the Lease was lost"))
        self.log("lease-lost", why=why, up_in_flight=in_up, engine_killed=killed,
                 note="stopped acting: a follower takes over after the lease duration")
        if in_up:
            threading.Thread(target=self._keep_engine_down, name="lease-lost", daemon=True).start()

    def _keep_engine_down(self) -> None:
        while self.stop.in_up and not self.acting():
            if kill_engine_run():
                self.log("lease-lost", why="an engine run started after the Lease was lost",
                         engine_killed=True)
            time.sleep(0.1)

    def take_lead(self) -> None:
        """Now leading: the decision state starts from the stack as it is (another leader may
        have recovered or half recovered meanwhile), and an unfinished recovery by a watcher
        is rerun first. A hold-down survives the change: the previous leader's (recorded in the
        Lease) or this watcher's own, whichever ends later."""
        inherited, record = self.inherited_hold_down()
        holder = self.lease.election.took_over[0] if self.lease and self.lease.election.took_over \
            else None
        previous = self.previous_run()
        config = self.sync_config()
        before = self.watch
        self.watch = Watch(self.settings, config.master0, fenced=config.down_hosts,
                           rejoin_returning=self.args.rejoin_returning)
        now = time.monotonic()
        own = before.hold_left(now)
        self.watch.hold_for(own, now, before.hold_why)
        if inherited > 0:
            self.watch.hold_for(inherited, now, record.why if record else "")
            self.log("hold-down", seconds_left=round(self.watch.hold_left(now), 2),
                     inherited_s=round(inherited, 2), recorded_left_s=record.left_s,
                     previous=holder, why=record.why or None,
                     note="the previous leader's hold-down, recorded in the Lease: no failover "
                          "before it ends")
        self.hold_down_known = True
        self.read_history()
        self.probers = []
        if previous is not None and previous.state != "verified":
            self.resume_at_start = self.watch.unverified = True
        if self.resume_at_start:
            self.resume()

    def follow_leader_record(self) -> None:
        """A follower keeps its stack file's master0 and down_hosts as the leader's last
        verified recovery left them (the leader records it in the Lease): each watcher has its
        own stack file, and a follower that takes over later must not undo that recovery, nor
        dial the fenced host for the Lease meanwhile."""
        if self.lease is None:
            return
        run = EngineRun.from_text(self.lease.election.seen_annotations.get(ENGINE_RUN))
        if run is None or run.state != "verified" or not run.master0:
            return
        config = self.config
        if (run.master0, sorted(run.down_hosts)) == (config.master0, sorted(config.down_hosts)):
            return
        self.adopt_run(run, f"the leader's verified recovery (recorded in the Lease by {run.host})",
                       "could not follow the leader's recovery")

    def adopt_run(self, run: EngineRun, done: str, failed: str) -> bool:
        """Write RUN's master0 and down_hosts into this watcher's stack file; logs `config`."""
        try:
            self.session.engine.set_master0(run.master0, list(run.down_hosts),
                                            StackFileGuard(self.session).has_key("down_hosts"))
        except Exception as e:  # noqa: BLE001  (CliError, the engine's CommandError)
            self.log("config", error=f"{type(e).__name__}: {str(e).strip()[:500]}", note=failed)
            return False
        self.log("config", master0=run.master0, down_hosts=list(run.down_hosts), note=done)
        return True

    def previous_run(self) -> EngineRun | None:
        """The engine run the previous leader recorded in the Lease we took over: it may have
        left the stack locked (cli/stacklock.py decides whether that lock may go), and the
        recovery it applied is this watcher's config from now on (each watcher keeps its own
        stack file: the one that acted last wrote master0 and down_hosts into the Lease)."""
        took = self.lease.election.took_over if self.lease else None
        if took is None:
            return None
        self.lease.election.took_over = None
        holder, notes = took
        run = EngineRun.from_text(notes.get(ENGINE_RUN))
        self.log("previous-run", holder=holder or None,
                 run=None if run is None else json.loads(run.to_text()),
                 note="no engine run recorded" if run is None else
                      "its lock (if any) may be cleared; its recovery is this watcher's config")
        if run is None:
            return None
        self.dead_runs.append(DeadRun(run, holder, "its lease expired or was released"))
        self.engine_run = run  # kept in the Lease until this leader runs the engine itself
        self.repair_checkpoint()
        config = self.session.config
        if run.master0 and (run.master0 != config.master0
                            or sorted(run.down_hosts) != sorted(config.down_hosts)):
            self.adopt_run(run, f"adopted from the previous leader's engine run ({run.state})",
                           "could not adopt the previous leader's master0 and down_hosts")
        return run

    def step_down(self) -> None:
        """Not leading any more: no probe, no SSH connection kept to the probers."""
        self.links.keep([])
        self.probers = []

    def resume(self) -> None:
        decision = Decision(Kind.RESUME, self.watch.master0, time.monotonic(),
                            f"the stack's last update, a recovery by `cli watch`, did not "
                            f"finish ({self.last_update}): rerun it for master0 "
                            f"{self.watch.master0}")
        self.log.decision(decision)
        self.failover(decision)

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> int:
        self.log("start", stack=self.session.stack, master0=self.watch.master0,
                 down_hosts=list(self.session.config.down_hosts), last_update=self.last_update,
                 resume_first=self.watch.unverified,
                 settings={"interval_s": self.settings.interval, "window_s": self.settings.window,
                           "hold_down_s": self.settings.hold_down, "probers": self.args.probers,
                           "min_probers": self.settings.min_probers,
                           "rejoin_returning": self.args.rejoin_returning},
                 lease=None if self.lease is None else {
                     "name": f"kube-system/{self.lease_name}",
                     "identity": self.lease.election.me,
                     "lease_duration_s": self.lease.settings.lease_duration,
                     "renew_deadline_s": self.lease.settings.renew_deadline,
                     "retry_period_s": self.lease.settings.retry_period})
        if self.lease is None:
            self.leading = True
            if self.resume_at_start:
                self.resume()
        else:
            self.lease_thread = self.lease.start(self.lease_stop)
        try:
            while not self.stop.stopping:
                if not self.acting():
                    if self.leading:
                        self.leading = False
                        self.step_down()
                    self.follow_leader_record()
                    self.sync_config()  # the Lease's endpoints follow down_hosts
                    self.stop.sleep(self.lease.settings.retry_period / 2)
                    continue
                if not self.leading:
                    self.leading = True
                    self.take_lead()
                    continue
                started = time.monotonic()
                self.one_round()
                self.stop.sleep(self.settings.interval - (time.monotonic() - started))
        finally:
            self.links.close()
            self.end_lease()
        if self.stop.interrupted_up:
            self.code = EXIT_INTERRUPTED
        self.log("stop", exit_code=self.code)
        return self.code

    def end_lease(self) -> None:
        """On a clean stop: the renew loop ends and a leader releases the Lease, so that a
        follower takes over at its next attempt instead of after the lease duration."""
        if self.lease is None:
            return
        self.lease_stop.set()
        thread = getattr(self, "lease_thread", None)
        if thread is not None:  # no renew racing the release (bounded: the renew deadline)
            thread.join(self.lease.settings.renew_deadline)
        if self.lease.leading() and self.lease.election.release():
            self.log("lease-released", lease=f"kube-system/{self.lease_name}")

    def one_round(self) -> None:
        config = self.sync_config()
        probers = pick_probers(config.cluster.masters, config.cluster.nodes, self.watch.master0,
                               config.down_hosts, self.args.probers)
        if probers != self.probers:
            self.probers = probers
            self.log("probers", master0=self.watch.master0, probers=probers)
        self.links.keep(probers)
        # A fenced host is not probed during the hold-down: nothing dials the old master0 while
        # the recovery runs and settles.
        now = time.monotonic()
        fenced = [] if self.watch.in_hold_down(now) else sorted(self.watch.fenced)
        targets = [self.watch.master0, *fenced]
        rounds, replicas = probe_round(self.links, config, probers, targets)
        self.replicas.update(replicas)
        for rnd in rounds:
            for decision in self.watch.observe(rnd):
                if not self.acting():
                    return  # the Lease was lost during the round: a follower decides nothing
                self.log.decision(decision)
                if self.stop.stopping:
                    return
                if decision.kind in (Kind.FAILOVER, Kind.RESUME):
                    self.failover(decision)
                    return
                if decision.kind is Kind.REJOIN:
                    self.rejoin(decision.target)
                elif decision.kind is Kind.RETURNED and not self.args.rejoin_returning:
                    self.stop_stale_registry(decision.target)
        if rounds and not self.stop.stopping and self.acting():
            self.gate_stale_standbys(config, rounds[0])

    # -- warm standbys that lag master0 ------------------------------------------------------
    def gate_stale_standbys(self, config: StackConfig, master0_round: Round) -> None:
        """With warm standbys: read master0's live tree (`watch-probe.sh --tree`, one direct SSH
        session, only in a round where a majority of the probers saw master0 answer: nothing dials
        a master0 that looks dead) and put the stale gate on every standby whose replica stamp
        was copied from another tree (decided by failover.stale_standbys; scripts/mark-stale.sh
        compares again on the host). The gate lifts when the next `pulumi up` copies master0's
        tree to it. One JSON-lines event per standby marked."""
        local = config.registry.local_registry
        if str(local.standby) != "warm" or local.ha:
            return
        master0 = master0_round.target
        if not master0_round.probes or master0_round.count(Vote.ALIVE) < quorum(len(master0_round.probes)):
            return
        standbys = [ip for ip in config.deploy_hosts if ip != master0 and ip not in config.down_hosts]
        if not standbys:
            return
        done = self.links.access.run(master0, script_run(PROBE_SCRIPT, "--tree", config.rootfs,
                                                         str(config.registry.port)),
                                     timeout=TREE_TIMEOUT_S, connect_timeout=TREE_CONNECT_TIMEOUT_S)
        tree = master0_tree_of(done.stdout) if done.returncode == 0 else None
        for ip, why in stale_standbys(tree, standbys, self.replicas, self.marked_stale).items():
            assert tree is not None
            run = script_run(MARK_SCRIPT, config.rootfs, tree)
            marked = (self.links.run(ip, run, PROBE_TIMEOUT_S) if ip in self.probers
                      else self.links.access.run(ip, run, timeout=PROBE_TIMEOUT_S))
            fields = dict(part.partition("=")[::2] for part in marked.stdout.split())
            result = fields.get("result", "") if marked.returncode == 0 else ""
            if result in ("marked", "already", "fresh"):
                self.marked_stale[ip] = tree
            error = "" if marked.returncode == 0 else ssh_error(marked.stderr, marked.returncode)
            self.log("stale_standby", host=ip, master0=master0, master0_tree=tree,
                     stamp_tree=fields.get("stamp_tree") or None, result=result or None,
                     ok=marked.returncode == 0, error=error or None, why=why)

    def sync_config(self) -> StackConfig:
        """The stack file again (an operator may have run `recover` or `rejoin`): the watcher
        follows what the config says."""
        try:
            config = self.session.reload()
        except CliError as e:
            self.log("config", error=e.message, note="the stack file is not valid now: keeping "
                                                     "the previous config")
            self.session._config = self.config
            return self.config
        self.config = config
        if config.master0 != self.watch.master0:
            self.log("config", master0=config.master0, down_hosts=list(config.down_hosts),
                     note="master0 changed outside the watcher: watching it")
            self.watch.master0 = config.master0
            self.watch.dead.reset()
        for ip in list(self.watch.fenced):
            if ip not in config.down_hosts:
                self.watch.rejoined(ip)
        for ip in config.down_hosts:
            self.watch.fenced.setdefault(ip, Returning())
        return config

    # -- a failover ----------------------------------------------------------------------------
    def read_replicas(self, hosts: list[str]) -> dict[str, Replica]:
        """The replica of each host: the stamp its last probe reported (read again on the
        masters that are not probers), and for those without a stamp, status-probe's refs."""
        session, config = self.session, self.session.config
        missing = [ip for ip in hosts if ip not in self.replicas]
        if missing:
            command = script_run(PROBE_SCRIPT, config.rootfs, str(config.registry.port))
            for ip in missing:
                done = session.ssh().run(ip, command, timeout=PROBE_TIMEOUT_S)
                _, replica = read_report(ip, [], done.returncode == 0, done.stdout)
                if replica is not None:
                    self.replicas[ip] = replica
        replicas = {}
        for ip in hosts:
            rep = self.replicas.get(ip, Replica(stamp_problem="not read"))
            if rep.stamp is None:
                probe = preflight_probe(session, ip)
                if probe.reachable:
                    images = session.images
                    rep = Replica(stamp_problem=rep.stamp_problem,
                                  refs_complete=complete_images(images, probe.missing_refs) == len(images))
            replicas[ip] = rep
        return replicas

    def failover(self, decision: Decision) -> None:
        config = self.session.config
        old = self.watch.master0
        resume = decision.kind is Kind.RESUME
        if resume:
            new, down = old, list(config.down_hosts)
            try:
                checked = recover_preflight(self.session, new, down)
            except CliError as e:
                self.log("candidates", ranked=[new], chosen=None, rejected={new: e.message},
                         note=f"the rerun of the recovery cannot start there; if it stays dead "
                              f"after the hold-down ({self.settings.hold_down:g}s), a failover "
                              "fences it")
                self.watch.held_off(time.monotonic())
                self.record_hold_down()
                self.watch.unverified = False
                return
            self.log("candidates", ranked=[new], chosen=new, rejected={}, preflight=checked,
                     note="rerun of the recovery that made it master0")
        elif config.ha:
            # sealer's HA layout: the first live master of sealer's Clusterfile becomes master0.
            down = [*config.down_hosts, old]
            order, read_from = sealer_clusterfile.read_masters(self.session, config, down)
            replicas = {}
            ranked, rejected = rank_ha_candidates(
                sealer_masters=order, masters=config.cluster.masters,
                deploy_hosts=config.deploy_hosts, down=config.down_hosts, old_master0=old)
            self.log("order", masters=order or config.cluster.masters,
                     source=read_from if order else f"the stack's masters ({read_from})")
        else:
            hosts = [ip for ip in config.cluster.masters
                     if ip != old and ip not in config.down_hosts and ip in config.deploy_hosts]
            replicas = self.read_replicas(hosts)
            down = [*config.down_hosts, old]
            ranked, rejected = rank_candidates(
                masters=config.cluster.masters, deploy_hosts=config.deploy_hosts,
                down=config.down_hosts, old_master0=old, replicas=replicas,
                rejoined_at=self.rejoined_at, require_replica=str(config.distribution) == "pre")
        if not resume:
            new = None
            for host in ranked:
                try:
                    checked = recover_preflight(self.session, host, down)
                except CliError as e:
                    rejected[host] = f"preflight: {e.message}"
                    continue
                new = host
                self.log("candidates", ranked=ranked, chosen=host, rejected=rejected,
                         preflight=checked,
                         replica=_replica_json(replicas.get(host)))
                break
            if new is None:
                self.log("candidates", ranked=ranked, chosen=None, rejected=rejected,
                         note=f"no host can become master0; master0 stays {old}; trying again "
                              f"after the hold-down ({self.settings.hold_down:g}s)")
                self.watch.held_off(time.monotonic())
                self.record_hold_down()
                return
            if self.stop.stopping:
                self.log("fence", old=old, new=None, note="stopping: no recovery started")
                return
            if not self.acting():
                self.log("fence", old=old, new=None, note="the Lease was lost: no recovery "
                                                          "started")
                return
            self.log("fence", old=old, new=new, down_hosts=down,
                     note=f"{old} goes on down_hosts: no step of the recovery dials it")
        elif not self.acting():
            self.log("candidates", ranked=[new], chosen=None, rejected={},
                     note="the Lease was lost: the rerun is left to the next leader")
            return
        verified = self.apply(Change(
            master0=new, down_hosts=down, skip_preview=True, clear_dead_locks=False,
            question="", rerun=f"python -m cli recover master0 --host {new} --stack "
                               f"{self.session.stack} --yes",
            after_up=lambda seconds: self.log("up", ok=True, master0=new,
                                              seconds=round(seconds, 2))))
        if verified and self.acting():
            self.put_master0_first(new)
        self.watch.failed_over(new, time.monotonic(), verified)
        self.record_hold_down()

    def record_hold_down(self) -> None:
        """The hold-down that just started goes into the Lease now, not at the next renew: a
        leader that dies meanwhile leaves it to the next one."""
        if self.lease is not None and self.hold_down_known and self.acting():
            self.lease.renew_now()

    def put_master0_first(self, new: str) -> None:
        """sealer's Clusterfile names the new master0 first (cli/sealer_clusterfile.py), as
        `recover` does; a failure is logged and retried by the next failover or a `recover`
        rerun, the registry stays recovered."""
        try:
            report = sealer_clusterfile.update(self.session, self.session.config, new)
        except Exception as e:  # noqa: BLE001  (the watcher goes on)
            self.log("sealer_clusterfile", ok=False, master0=new,
                     error=f"{type(e).__name__}: {str(e).strip()[:500]}")
            return
        self.log("sealer_clusterfile", ok=report.ok, master0=new, outcomes=report.as_json())

    def apply(self, change: Change) -> bool:
        """`up` (and the check of every host) through the CLI's change flow; True when verified."""
        timer = Timer()
        what = (f"master0 {change.master0}, down_hosts {', '.join(change.down_hosts) or 'none'}"
                if change.master0 else f"down_hosts {', '.join(change.down_hosts) or 'none'}")
        self.session.engine.message = f"{UP_MESSAGE} {what}"
        if not self.clear_stale_locks():
            return False
        if self.lease is not None:
            self.engine_run = EngineRun(
                host=socket.gethostname(), started=stacklock.utc_stamp(),
                master0=change.master0 or self.session.config.master0,
                down_hosts=tuple(change.down_hosts))
            if not self.lease.renew_now():
                self.log("up", ok=False, error="the Lease could not record the engine run: no "
                                               "`up` started (not leading any more?)")
                return False
        self.stop.in_up = True
        recorder = threading.Thread(target=self._record_engine_pids, name="engine-pids",
                                    daemon=True)
        recorder.start()
        logged = []

        def verified(result: Result) -> bool:
            """The recovery is verified: said now, before a fence phase runs (its time is not
            the recovery's), which runs only while this watcher still leads."""
            logged.append(result)
            self._log_verified(result, timer)
            return self.acting() and not self.stop.stopping

        try:
            result = apply_change(self.session, replace(change, after_verify=verified), timer,
                                  assume_yes=True)
        except CliError as e:
            self.log("up", ok=False, error=e.message, interrupted=self.stop.interrupted_up)
            self._run_ended("failed")
            return False
        except Exception as e:  # noqa: BLE001  (the engine's own errors: the watcher goes on)
            self.log("up", ok=False, error=f"{type(e).__name__}: {str(e).strip()[:2000]}",
                     interrupted=self.stop.interrupted_up)
            self._run_ended("failed")
            return False
        finally:
            self.stop.in_up = False
        health = result.health
        ok = result.outcome is Outcome.APPLIED and health is not None and health.healthy
        if self.engine_run is not None and self.acting():
            self.engine_run = replace(self.engine_run, state="verified" if ok else "failed")
            self.lease.renew_now()
        if not logged:
            self._log_verified(result, timer)
        if result.pending is not None and ok:
            fenced = result.fence is not None and result.fence.healthy
            self.log("fence_phase", ok=fenced, hosts=len(result.pending.hosts),
                     old=result.pending.master0, error=result.fence_error,
                     problems=list(result.fence.problems) if result.fence else [],
                     seconds={k: round(v, 2) for k, v in timer.phases.items()})
        return ok

    def _log_verified(self, result: Result, timer: Timer) -> None:
        health = result.health
        ok = result.outcome is Outcome.APPLIED and health is not None and health.healthy
        self.log("verified", healthy=ok, master0=result.config.master0 if result.config else None,
                 master0_images=health.master0_images if health else None,
                 images_expected=health.images_expected if health else None,
                 problems=list(health.problems) if health else [],
                 verify_step=any(line.strip().startswith("verify from a node")
                                 for line in result.plan.lines),
                 repointed=result.plan.repointed, launch_on=result.plan.launch_on,
                 fence_pending=len(result.pending.hosts) if result.pending else 0,
                 seconds={k: round(v, 2) for k, v in timer.phases.items()})

    def _run_ended(self, state: str) -> None:
        """The engine run ended by itself (its lock is gone): the Lease says so."""
        if self.engine_run is not None and self.lease is not None and self.acting():
            self.engine_run = replace(self.engine_run, state=state)
            self.lease.renew_now()

    def _record_engine_pids(self) -> None:
        """During an `up`: the engine's pid into the Lease as soon as it runs (the pid its lock
        file carries), so that a new leader can tell its lock from anyone else's."""
        while self.stop.in_up and self.lease is not None and self.engine_run is not None:
            pids = pulumi_children()
            if pids:
                self.engine_run = replace(self.engine_run, pids=tuple(pids))
                recorded = self.lease.renew_now()
                self.log("engine-run", pids=pids, recorded_in_lease=recorded)
                return
            time.sleep(0.02)

    def repair_checkpoint(self) -> None:
        """A dead run's truncated checkpoint (file:// backends) restored from the backend's own
        backup of the previous one (cli/stacklock.py)."""
        root = stacklock.file_backend_root(self.session.engine.backend_url())
        if root is None:
            return
        done = stacklock.repair_checkpoint(root, PROJECT, self.session.stack)
        if done:
            self.log("checkpoint", note=done)

    def clear_stale_locks(self) -> bool:
        """Before an `up`: a stack lock written by an engine run known to be over (the previous
        leader's, whose lease expired; our own killed run) is deleted through the backend's own
        storage (a file:// lock file, a postgres:// row, an s3:// object: cli/stacklock.py), and
        the pending operations that run left are taken out of the state. Any other lock is left
        alone and the `up` does not start (False): it may be a person's `pulumi up`. gs:// and
        azblob:// locks are not read here: the engine's own refusal says whose lock it is."""
        engine = self.session.engine
        try:
            store = stacklock.lock_store(engine.backend_url())
        except stacklock.LockStoreError as e:
            self.log("stack-lock", ok=False, error=str(e), note="the engine's own check decides")
            return True
        if store is None:
            return True
        try:
            locks = store.read(PROJECT, self.session.stack)
        except stacklock.LockStoreError as e:
            self.log("stack-lock", ok=False, backend=store.where, error=str(e),
                     note="not read: nothing cleared; the engine's own check decides")
            return True
        if not locks and not self.dead_runs:
            return True
        verdict = stacklock.decide(locks, self.dead_runs)
        if verdict.blocked:
            self._log_locks(store, locks, verdict, [])
            self.log("up", ok=False, error="the stack is locked by an engine run that is not a "
                     "previous leader's: waiting (if that process is gone, `pulumi cancel` "
                     f"removes every lock of the stack): {verdict.why}")
            return False
        failed: dict[str, str] = {}
        for lock in verdict.clear:
            why = stacklock.remove_lock(store, lock)
            if why:
                failed[lock.where] = why
        if locks:
            self._log_locks(store, locks, verdict, failed)
        if failed:
            self.log("up", ok=False, error=f"a dead run's stack lock was not removed: "
                                           f"{'; '.join(failed.values())}")
            return False
        if verdict.clear:
            self.repair_checkpoint()
        try:
            dropped = engine.drop_pending_operations()
        except CliError as e:
            self.log("pending-operations", ok=False, error=e.message)
            return False
        if dropped:
            self.log("pending-operations", ok=True, dropped=dropped,
                     note="left by a killed engine run; the next `up` runs those steps again")
        self.dead_runs = []
        return True

    def _log_locks(self, store, locks, verdict, failed: dict[str, str]) -> None:
        self.log("stack-lock", backend=store.where, locks=[lock.as_json() for lock in locks],
                 cleared=[lock.where for lock in verdict.clear if lock.where not in failed],
                 kept=[lock.where for lock in verdict.keep], why=verdict.why,
                 **({"failed": failed} if failed else {}))

    # -- a returning host --------------------------------------------------------------------
    def stop_stale_registry(self, host: str) -> None:
        """A fenced host that came back still runs the registry it ran as master0: read-write,
        on data that stopped at its death. No node points at it, but anything dialling its IP
        (a stale mirror list, a person, a script) would read stale tags or push where nothing
        replicates. Fencing ends that: its registry is stopped as a cold standby's is
        (scripts/standby-registry.sh), and the host stays on down_hosts for the operator (or
        --rejoin-returning) to take back."""
        config = self.session.config
        done = self.links.access.run(host, script_run("standby-registry.sh", config.rootfs),
                                     timeout=60)
        error = "" if done.returncode == 0 else ssh_error(done.stderr, done.returncode)
        self.log("fenced_registry", host=host, ok=done.returncode == 0, error=error or None,
                 note="its stale registry is stopped; it stays on down_hosts")

    def rejoin(self, host: str) -> None:
        config = self.session.config
        down = [ip for ip in config.down_hosts if ip != host]
        probe = preflight_probe(self.session, host)
        if not probe.reachable:
            self.log("rejoined", host=host, ok=False, error=f"cannot reach it over SSH: {probe.error}")
            return
        try:
            api = apiserver.check(self.session, down)
        except CliError as e:
            self.log("rejoined", host=host, ok=False, error=e.message)
            return
        if not self.acting():
            self.log("rejoined", host=host, ok=False, error="the Lease was lost: not rejoined")
            return
        ok = self.apply(Change(master0=None, down_hosts=down, skip_preview=True, question="",
                               clear_dead_locks=False,
                               rerun=f"python -m cli rejoin --host {host} --stack "
                                     f"{self.session.stack} --yes",
                               after_up=lambda seconds: self.log("up", ok=True, rejoin=host,
                                                                 seconds=round(seconds, 2))))
        self.rejoined_at[host] = time.time()
        self.replicas.pop(host, None)
        self.watch.rejoined(host)
        self.log("rejoined", host=host, ok=ok, apiserver=api.endpoint,
                 note=f"standby: it points at master0 {self.watch.master0}; it becomes a "
                      "candidate for master0 only with a replica stamp written after now")


def one_watcher(session: Session) -> None:
    """Refuses a second watcher of the same stack from this project directory (two would both
    act); the lock lives as long as this process. Watchers on other machines are coordinated by
    the Lease (cli/lease.py; with --no-lease, they are the operator's to avoid)."""
    path = session.project_dir / f".watch-{session.stack.replace('/', '_')}.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return  # a read-only clone: nothing to hold
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise CliError(f"another `cli watch` watches stack {session.stack} from this directory "
                       f"(it holds {path}): one watcher per stack") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _HELD.append(fd)  # closed (and unlocked) when the process ends


_HELD: list[int] = []


def lease_credentials(session: Session):
    """The kubeconfig's credentials and trust for the Lease's requests; CliError (exit 2)
    before anything is dialled when they cannot be used."""
    text, base = apiserver.kubeconfig_text(session)
    try:
        kubeapi.current_server(text, session.config.kubernetes.context or None)
        creds = apiserver._Credentials(text, session.config.kubernetes.context or None, base)
    except (ValueError, OSError, ssl.SSLError, yaml.YAMLError) as e:
        raise CliError(f"the kubeconfig cannot be used for the watchers' Lease: {e} (or run a "
                       "single watcher with --no-lease)") from None
    # Asked anonymously, every Lease request is refused: the watcher would follow forever and
    # never act. Refused up front instead.
    if creds.note:
        raise CliError(f"the kubeconfig's user has neither a client certificate nor a token{creds.note}; "
                       "the watchers' Lease needs one that may get, create and update Leases in "
                       "kube-system (or run a single watcher with --no-lease)")
    return creds


def last_update(session: Session) -> tuple[str | None, str]:
    """The stack's last engine run as "<kind> <result>" (e.g. "update succeeded"; None for a
    stack never updated) and its message."""
    try:
        runs = session.engine.stack.history(page_size=1, show_secrets=False)
    except Exception as e:  # noqa: BLE001  (the engine's errors vary; the watcher goes on)
        return f"unknown: {str(e).splitlines()[0] if str(e) else type(e).__name__}", ""
    if not runs:
        return None, ""
    return f"{runs[0].kind} {runs[0].result}", runs[0].message or ""


def _replica_json(rep: Replica | None) -> dict | None:
    if rep is None:
        return None
    stamp = rep.stamp
    return {"stamp": None if stamp is None else {"source": stamp.source,
                                                 "completed_at": stamp.completed_at,
                                                 "files": stamp.files, "bytes": stamp.bytes},
            "stamp_problem": rep.stamp_problem, "refs_complete": rep.refs_complete}


@guarded(NAME)
def run(args: argparse.Namespace) -> int:
    settings = Settings(window=args.window, interval=args.interval, hold_down=args.hold_down,
                        min_probers=args.min_probers)
    problems = settings.problems()
    if args.probers < 2:
        problems.append(f"--probers {args.probers}: must be at least 2")
    lease = LeaseSettings(lease_duration=args.lease_duration, renew_deadline=args.renew_deadline,
                          retry_period=args.retry_period)
    if not args.no_lease:
        problems += lease.problems()
    if problems:
        raise CliError("\n".join(problems))
    stream = open(args.log, "a", buffering=1) if args.log else sys.stdout
    log = EventLog(stream)
    stop = Stop(log)
    stop.install()
    try:
        with Session(args) as session:
            session.out = sys.stderr
            one_watcher(session)
            session.images  # a missing image store refuses before any host is dialled
            session.engine.output = lambda line: print(f"engine: {line}", file=sys.stderr,
                                                       flush=True)
            creds = None if args.no_lease else lease_credentials(session)
            watcher = Watcher(args, session, log, stop)
            if creds is not None:
                watcher.elect(lease, creds)
            return watcher.run()
    finally:
        if stream is not sys.stdout:
            stream.close()
