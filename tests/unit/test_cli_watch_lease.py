"""cli/watch.py with the Lease: the flags and their up-front check, only the leader probes and
acts, a leader that loses the Lease kills its engine run (a real child process named `pulumi`
and what it started) and starts no recovery."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from dataclasses import replace
from types import SimpleNamespace

import pytest

from cli import build_parser
from cli import watch as watch_mod
from cli.common import EXIT_REFUSED
from cli.failover import Decision, Kind, Probe, Round, Settings, Vote, Watch
from cli.lease import LeaseSettings
from cli.watch import EventLog, Stop, Watcher, kill_engine_run, process_tree, pulumi_children

# A stand-in engine: ignores SIGINT (a graceful cancel would let it finish its steps) and starts
# a child of its own, as the engine starts the language host and the providers.
ENGINE = """#!/bin/bash
trap '' INT
sleep 300 &
echo "ready $!" >>"$1"
wait
"""


@pytest.fixture
def engine(tmp_path):
    script = tmp_path / "pulumi"
    script.write_text(ENGINE)
    script.chmod(0o755)
    record = tmp_path / "ready"
    proc = subprocess.Popen([str(script), str(record), "up"])
    deadline = time.monotonic() + 5
    while not (record.exists() and record.read_text().strip()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    child = int(record.read_text().split()[1])
    yield proc, child
    for pid in (proc.pid, child):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2] == "Z"  # a zombie: dead, not reaped yet


def events_of(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


# ------------------------------------------------------------------------------ flags


def test_the_lease_flags_default_to_15_10_2():
    args = build_parser().parse_args(["watch", "--stack", "x"])
    assert (args.lease_duration, args.renew_deadline, args.retry_period) == (15.0, 10.0, 2.0)
    assert args.no_lease is False


def test_the_lease_flags_take_durations():
    args = build_parser().parse_args(["watch", "--lease-duration", "30s", "--renew-deadline",
                                      "20000ms", "--retry-period", "3", "--no-lease"])
    assert (args.lease_duration, args.renew_deadline, args.retry_period) == (30.0, 20.0, 3.0)
    assert args.no_lease


@pytest.mark.parametrize("argv,fragment", [
    (["--lease-duration", "10s"], "--lease-duration 10s: must be more than --renew-deadline (10s)"),
    (["--renew-deadline", "2s"], "--renew-deadline 2s: must be more than 1.2 x --retry-period (2.4s)"),
    (["--retry-period", "0s"], "--retry-period 0s: must be more than 0"),
])
def test_watch_refuses_unsafe_lease_timings_before_anything_else(argv, fragment, capsys):
    """Refused with exit 2 and the flag and value named, before a stack or host is touched (the
    stack `x` does not exist)."""
    args = build_parser().parse_args(["watch", "--stack", "x", *argv])
    assert args.run(args) == EXIT_REFUSED
    assert fragment in capsys.readouterr().err


# ------------------------------------------------------------------------------ the engine kill


def test_kill_engine_run_kills_the_engine_and_what_it_started(engine):
    """SIGKILL to the `pulumi ... up` child and its own children (SIGINT would not stop this
    one: the engine's graceful cancel finishes its steps)."""
    proc, child = engine
    assert process_tree([proc.pid]) == [proc.pid, child]
    killed = kill_engine_run()
    assert killed == [proc.pid, child]
    assert proc.wait(5) == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while not gone(child):
        assert time.monotonic() < deadline, "the engine's child outlived it"
        time.sleep(0.02)
    assert pulumi_children() == []


class FakeLease:
    def __init__(self, leading: bool = True):
        self.is_leading = leading
        self.settings = LeaseSettings(15, 10, 0.02)
        self.election = SimpleNamespace(me="watcher-a", seen_annotations={}, took_over=None)

    def leading(self) -> bool:
        return self.is_leading

    def start(self, stop):
        pass


def lease_watcher(leading: bool = True) -> Watcher:
    """A Watcher without a session: what the Lease paths use."""
    w = object.__new__(Watcher)
    w.out = io.StringIO()
    w.log = EventLog(w.out)
    w.stop = Stop(w.log)
    w.lease = FakeLease(leading)
    w.lease_name = "sealer-registry-watch-prod"
    w.lease_stop = threading.Event()
    w.leading = False
    w.engine_run = None
    w.dead_runs = []
    return w


def test_a_leader_that_loses_the_lease_during_up_kills_its_engine_at_once(engine):
    proc, child = engine
    w = lease_watcher(leading=False)
    w.stop.in_up = True
    try:
        w.lease_lost("no renew for 10s (--renew-deadline)")
        assert proc.wait(5) == -signal.SIGKILL
        event = events_of(w.out)[0]
        assert event["event"] == "lease-lost" and event["up_in_flight"] is True
        assert event["engine_killed"] == [proc.pid, child]
    finally:
        w.stop.in_up = False


def test_an_engine_run_started_after_the_loss_is_killed_too(tmp_path):
    """The Lease was lost while the flow was still writing the config: the `up` that follows
    is killed as soon as it appears, until the flow is over."""
    w = lease_watcher(leading=False)
    w.stop.in_up = True
    try:
        w.lease_lost("held by b")
        assert events_of(w.out)[0]["engine_killed"] == []
        script = tmp_path / "pulumi"
        script.write_text(ENGINE)
        script.chmod(0o755)
        late = subprocess.Popen([str(script), str(tmp_path / "r"), "up"])
        assert late.wait(30) == -signal.SIGKILL
    finally:
        w.stop.in_up = False


def test_a_loss_between_rounds_kills_nothing(engine):
    proc, _ = engine
    w = lease_watcher(leading=False)
    w.lease_lost("held by b")
    time.sleep(0.2)
    assert proc.poll() is None
    assert events_of(w.out)[0]["engine_killed"] == []


# ------------------------------------------------------------------------------ who acts


def test_only_the_leader_probes_and_acts():
    """A follower runs no round; on leading it takes the lead (fresh state, resume check) and
    probes; on losing it steps down (no prober connection kept) and probes no more."""
    w = lease_watcher(leading=False)
    w.settings = Settings(window=6, interval=0.01, hold_down=60)
    w.args = SimpleNamespace(probers=3, rejoin_returning=False)
    w.session = SimpleNamespace(stack="prod", config=SimpleNamespace(down_hosts=[]))
    w.watch = SimpleNamespace(master0="10.0.0.11", unverified=False)
    w.last_update = "update succeeded"
    w.code = 0
    calls: list[str] = []
    w.links = SimpleNamespace(keep=lambda probers: calls.append(f"keep {probers}"),
                              close=lambda: calls.append("close"))
    w.sync_config = lambda: calls.append("sync")
    w.take_lead = lambda: calls.append("take_lead")
    w.end_lease = lambda: calls.append("end_lease")
    script = iter([False, False, True, True, True, False, False])

    def one_round():
        calls.append("round")

    w.one_round = one_round

    def leading():
        try:
            return next(script)
        except StopIteration:
            w.stop.event.set()
            return False

    w.lease.leading = leading
    w.step_down = lambda: calls.append("step_down")
    assert w.run() == 0
    acted = [c for c in calls if c != "sync"]
    assert acted == ["take_lead", "round", "round", "step_down", "close", "end_lease"], calls
    assert calls[:2] == ["sync", "sync"]  # the follower keeps its config (the Lease's endpoints)
    assert events_of(w.out)[0]["lease"]["name"] == "kube-system/sealer-registry-watch-prod"


def test_a_failover_decided_after_the_lease_was_lost_starts_no_recovery(monkeypatch):
    """The candidates are checked, but no fence and no `up` once the Lease is lost."""
    w = lease_watcher(leading=False)
    w.settings = Settings(window=6, interval=1, hold_down=60)
    config = SimpleNamespace(ha=False, master0="10.0.0.11", down_hosts=[],
                             cluster=SimpleNamespace(masters=["10.0.0.11", "10.0.0.12"]),
                             deploy_hosts=["10.0.0.11", "10.0.0.12"], distribution="post")
    w.session = SimpleNamespace(config=config, stack="prod")
    w.watch = Watch(w.settings, "10.0.0.11")
    w.read_replicas = lambda hosts: {}
    w.rejoined_at = {}
    applied = []
    w.apply = lambda change: applied.append(change) or True
    monkeypatch.setattr(watch_mod, "recover_preflight", lambda session, host, down: {"ok": True})
    Watcher.failover(w, Decision(Kind.FAILOVER, "10.0.0.11", 1.0, "dead"))
    assert applied == []
    fence = [e for e in events_of(w.out) if e["event"] == "fence"]
    assert fence and fence[-1]["new"] is None and "Lease was lost" in fence[-1]["note"]


def test_a_resume_after_the_lease_was_lost_is_left_to_the_next_leader(monkeypatch):
    w = lease_watcher(leading=False)
    w.settings = Settings(window=6, interval=1, hold_down=60)
    w.session = SimpleNamespace(config=SimpleNamespace(ha=False, master0="10.0.0.12",
                                                       down_hosts=["10.0.0.11"]), stack="prod")
    w.watch = Watch(w.settings, "10.0.0.12")
    applied = []
    w.apply = lambda change: applied.append(change) or True
    monkeypatch.setattr(watch_mod, "recover_preflight", lambda session, host, down: {"ok": True})
    Watcher.failover(w, Decision(Kind.RESUME, "10.0.0.12", 1.0, "not serving"))
    assert applied == []
    assert "next leader" in events_of(w.out)[-1]["note"]


def test_without_a_lease_the_watcher_always_acts():
    w = lease_watcher()
    w.lease = None
    assert w.acting()


def test_a_clean_stop_ends_the_renew_loop_then_releases_the_lease():
    w = lease_watcher(leading=True)
    order = []
    w.lease_thread = SimpleNamespace(join=lambda timeout: order.append(("join", timeout)))
    w.lease.election.release = lambda: order.append("release") or True
    w.end_lease()
    assert w.lease_stop.is_set()
    assert order == [("join", 10), "release"]
    assert events_of(w.out)[-1]["event"] == "lease-released"


def test_a_follower_releases_nothing():
    w = lease_watcher(leading=False)
    w.lease.election.release = lambda: pytest.fail("a follower must not write the Lease")
    w.end_lease()
    assert events_of(w.out) == []


KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {{server: "https://198.18.0.11:6443", insecure-skip-tls-verify: true}}
users:
- name: u
  user: {user}
contexts:
- name: x
  context: {{cluster: c, user: u}}
current-context: x
"""


def _session(tmp_path):
    return SimpleNamespace(config=SimpleNamespace(kubernetes=SimpleNamespace(context="")),
                           project_dir=tmp_path)


@pytest.mark.parametrize("user", ['{exec: {apiVersion: client.authentication.k8s.io/v1, command: aws}}',
                                  '{auth-provider: {name: oidc}}'])
def test_a_kubeconfig_user_with_a_credential_plugin_is_refused_for_the_lease(monkeypatch, tmp_path, user):
    """Our Lease requests cannot run a credential plugin: asked anonymously the watcher would
    follow forever and never act, so it refuses before anything is dialled, naming --no-lease."""
    monkeypatch.setattr(watch_mod.apiserver, "kubeconfig_text",
                        lambda session: (KUBECONFIG.format(user=user), tmp_path))
    with pytest.raises(watch_mod.CliError) as err:
        watch_mod.lease_credentials(_session(tmp_path))
    assert "credential plugin" in str(err.value) and "--no-lease" in str(err.value)


def test_a_kubeconfig_user_with_a_token_is_taken_for_the_lease(monkeypatch, tmp_path):
    monkeypatch.setattr(watch_mod.apiserver, "kubeconfig_text",
                        lambda session: (KUBECONFIG.format(user="{token: abc}"), tmp_path))
    creds = watch_mod.lease_credentials(_session(tmp_path))
    assert creds.headers["Authorization"] == "Bearer abc"


# ------------------------------------------------------------------------------ the stack lock


class FakeEngine:
    def __init__(self, url: str, pending: list[str] = ()):
        self.url, self.pending = url, list(pending)
        self.set_calls: list[tuple] = []

    def backend_url(self):
        return self.url

    def drop_pending_operations(self):
        dropped, self.pending = self.pending, []
        return dropped

    def set_master0(self, ip, down, had):
        self.set_calls.append((ip, list(down)))


def lock_watcher(tmp_path, pending=()):
    from cli.stacklock import EngineRun  # noqa: F401

    w = lease_watcher()
    w.session = SimpleNamespace(stack="prod", engine=FakeEngine(f"file://{tmp_path}", pending),
                                config=SimpleNamespace(master0="10.0.0.11", down_hosts=[]))
    return w


def write_lock(root: Path, pid: int, host: str) -> Path:
    d = root / ".pulumi/locks/organization/sealer-registry/prod"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{pid}.json"
    path.write_text(json.dumps({"pid": pid, "username": "root", "hostname": host,
                                "timestamp": "2026-12-06T18:40:01.5Z"}))
    return path


def test_a_dead_leaders_lock_is_deleted_and_its_pending_operations_dropped(tmp_path):
    from cli.stacklock import DeadRun, EngineRun

    w = lock_watcher(tmp_path, pending=["node-10.0.0.21 (updating)"])
    path = write_lock(tmp_path, 4242, "mgmt-a")
    w.dead_runs = [DeadRun(EngineRun("mgmt-a", "2026-12-06T18:40:00Z", (4242,)), "mgmt-a_1_x")]
    assert w.clear_stale_locks() is True
    assert not path.exists()
    events = {e["event"]: e for e in events_of(w.out)}
    assert events["stack-lock"]["cleared"] == [str(path)] and events["stack-lock"]["kept"] == []
    assert events["pending-operations"]["dropped"] == ["node-10.0.0.21 (updating)"]
    assert w.dead_runs == []


def test_a_lock_that_is_not_a_dead_leaders_blocks_the_up_and_stays(tmp_path):
    from cli.stacklock import DeadRun, EngineRun

    w = lock_watcher(tmp_path, pending=["x (creating)"])
    path = write_lock(tmp_path, 777, "mgmt-a")
    w.dead_runs = [DeadRun(EngineRun("mgmt-a", "2026-12-06T18:40:00Z", (4242,)), "mgmt-a_1_x")]
    assert w.clear_stale_locks() is False
    assert path.exists() and w.session.engine.pending == ["x (creating)"]
    up = [e for e in events_of(w.out) if e["event"] == "up"][0]
    assert up["ok"] is False and "pid 777" in up["error"]


def test_no_lock_and_no_dead_run_reads_nothing_else(tmp_path):
    w = lock_watcher(tmp_path, pending=["x (creating)"])
    assert w.clear_stale_locks() is True
    assert events_of(w.out) == [] and w.session.engine.pending == ["x (creating)"]


def test_a_new_leader_adopts_the_previous_run_and_resumes_it(tmp_path, monkeypatch):
    from cli.stacklock import ENGINE_RUN, EngineRun

    w = lock_watcher(tmp_path)
    run = EngineRun("mgmt-a", "2026-12-06T18:40:00Z", (4242,), master0="10.0.0.12",
                    down_hosts=("10.0.0.11",))
    w.lease.election.took_over = ("mgmt-a_1_x", {ENGINE_RUN: run.to_text()})
    monkeypatch.setattr(watch_mod, "StackFileGuard",
                        lambda session: SimpleNamespace(has_key=lambda key: False))
    assert w.previous_run() == run
    assert w.session.engine.set_calls == [("10.0.0.12", ["10.0.0.11"])]
    assert [d.run for d in w.dead_runs] == [run] and w.lease.election.took_over is None
    kinds = [e["event"] for e in events_of(w.out)]
    assert kinds == ["previous-run", "config"]


def test_a_follower_follows_only_a_verified_recovery(tmp_path, monkeypatch):
    from cli.stacklock import ENGINE_RUN, EngineRun

    w = lock_watcher(tmp_path)
    w.config = w.session.config
    monkeypatch.setattr(watch_mod, "StackFileGuard",
                        lambda session: SimpleNamespace(has_key=lambda key: False))
    running = EngineRun("mgmt-a", "t", (1,), master0="10.0.0.12", down_hosts=("10.0.0.11",))
    w.lease.election.seen_annotations = {ENGINE_RUN: running.to_text()}
    w.follow_leader_record()
    assert w.session.engine.set_calls == []
    w.lease.election.seen_annotations = {ENGINE_RUN: replace(running, state="verified").to_text()}
    w.follow_leader_record()
    assert w.session.engine.set_calls == [("10.0.0.12", ["10.0.0.11"])]


# ------------------------------------------------------------------------------ postgres:// locks

PG_URL = ("postgres://pulumi@198.18.4.5:5432/pulumi?sslmode=verify-full&sslrootcert=/lab/ca.crt"
          "&passfile=/lab/pgpass")
PG_PREFIX = "pulumi/.pulumi/locks/organization/sealer-registry/prod/"


def pg_watcher(monkeypatch, rows: dict[str, str], pending=(), fail: str = ""):
    from cli import stacklock
    from tests.unit.test_cli_stacklock import FakePsql

    w = lease_watcher()
    w.session = SimpleNamespace(stack="prod", engine=FakeEngine(PG_URL, pending),
                                config=SimpleNamespace(master0="10.0.0.11", down_hosts=[]))
    psql = FakePsql(rows, fail=fail)
    real = stacklock.lock_store
    monkeypatch.setattr(watch_mod.stacklock, "lock_store", lambda url: real(url, run=psql))
    return w, psql


def test_a_dead_leaders_lock_row_is_deleted_from_postgres_and_its_pending_operations_dropped(
        monkeypatch):
    from cli.stacklock import DeadRun, EngineRun
    from tests.unit.test_cli_stacklock import blob_of

    state = "pulumi/.pulumi/stacks/sealer-registry/prod.json"
    w, psql = pg_watcher(monkeypatch, {PG_PREFIX + "u1.json": blob_of(4242, "mgmt-a"),
                                       state: "e30="}, pending=["node-10.0.0.21 (updating)"])
    w.dead_runs = [DeadRun(EngineRun("mgmt-a", "2026-12-06T18:40:00Z", (4242,)), "mgmt-a_1_x")]
    assert w.clear_stale_locks() is True
    assert list(psql.rows) == [state]
    events = {e["event"]: e for e in events_of(w.out)}
    assert events["stack-lock"]["cleared"] == [PG_PREFIX + "u1.json"]
    assert events["stack-lock"]["backend"] == "postgres://198.18.4.5:5432/pulumi?table=pulumi_state"
    assert events["pending-operations"]["dropped"] == ["node-10.0.0.21 (updating)"]
    assert w.dead_runs == []


def test_a_postgres_lock_of_another_run_blocks_the_up_and_no_row_is_deleted(monkeypatch):
    from cli.stacklock import DeadRun, EngineRun
    from tests.unit.test_cli_stacklock import blob_of

    rows = {PG_PREFIX + "u1.json": blob_of(4242, "mgmt-a"),
            PG_PREFIX + "u2.json": blob_of(5150, "laptop")}
    w, psql = pg_watcher(monkeypatch, rows, pending=["x (creating)"])
    w.dead_runs = [DeadRun(EngineRun("mgmt-a", "2026-12-06T18:40:00Z", (4242,)), "mgmt-a_1_x")]
    assert w.clear_stale_locks() is False
    assert psql.rows == rows and w.session.engine.pending == ["x (creating)"]
    assert [c[1].split()[0] for c in psql.calls] == ["SELECT"]   # nothing but the read
    up = [e for e in events_of(w.out) if e["event"] == "up"][0]
    assert up["ok"] is False and "laptop (pid 5150)" in up["error"]


def test_an_unreachable_state_database_clears_nothing_and_leaves_the_check_to_the_engine(
        monkeypatch):
    from cli.stacklock import DeadRun, EngineRun

    w, psql = pg_watcher(monkeypatch, {}, pending=["x (creating)"], fail="timeout expired")
    w.dead_runs = [DeadRun(EngineRun("mgmt-a", "2026-12-06T18:40:00Z", (4242,)), "mgmt-a_1_x")]
    assert w.clear_stale_locks() is True
    event = events_of(w.out)[0]
    assert event["event"] == "stack-lock" and event["ok"] is False
    assert "timeout expired" in event["error"] and w.session.engine.pending == ["x (creating)"]
    assert w.dead_runs != []   # tried again before the next `up`


def test_a_gs_or_azblob_backend_is_not_read(monkeypatch):
    for url in ("gs://bucket/state", "azblob://container/state"):
        w = lease_watcher()
        w.session = SimpleNamespace(stack="prod", engine=FakeEngine(url, ["x (c)"]),
                                    config=SimpleNamespace(master0="10.0.0.11", down_hosts=[]))
        assert w.clear_stale_locks() is True and events_of(w.out) == []


# ------------------------------------------------------------------------------ s3:// locks

S3_URL = "s3://state/team?endpoint=https://198.18.4.6:7070&use_path_style=true&region=us-east-1"
S3_PREFIX = "team/.pulumi/locks/organization/sealer-registry/prod/"


def s3_watcher(monkeypatch, pending=()):
    """A watcher whose backend is S3, its boto3 client stubbed (botocore's Stubber: every call
    and its parameters are checked, nothing leaves the process)."""
    import boto3
    from botocore.stub import Stubber

    from cli import stacklock

    w = lease_watcher()
    w.session = SimpleNamespace(stack="prod", engine=FakeEngine(S3_URL, pending),
                                config=SimpleNamespace(master0="10.0.0.11", down_hosts=[]))
    client = boto3.session.Session(aws_access_key_id="AKIDUNIT", aws_secret_access_key="unused"
                                   ).client("s3", endpoint_url="https://198.18.4.6:7070",
                                            region_name="us-east-1")
    monkeypatch.setattr(watch_mod.stacklock, "lock_store",
                        lambda url: stacklock.S3Locks(stacklock.s3_target(url), client))
    return w, Stubber(client)


def s3_listing(stub, keys_bodies: dict[str, dict]):
    import io
    import json as _json

    from botocore.response import StreamingBody

    stub.add_response("list_objects_v2", {"Contents": [{"Key": k} for k in keys_bodies],
                                          "IsTruncated": False},
                      {"Bucket": "state", "Prefix": S3_PREFIX, "Delimiter": "/"})
    for i, (key, doc) in enumerate(keys_bodies.items()):
        raw = _json.dumps(doc).encode()
        stub.add_response("get_object", {"Body": StreamingBody(io.BytesIO(raw), len(raw)),
                                         "ETag": f'"e{i}"'}, {"Bucket": "state", "Key": key})
    stub.add_response("list_objects_v2", {"IsTruncated": False},
                      {"Bucket": "state", "Prefix": "team/.pulumi/locks/prod/", "Delimiter": "/"})


def test_a_dead_leaders_lock_object_is_deleted_from_s3_and_its_pending_operations_dropped(
        monkeypatch):
    from cli.stacklock import DeadRun, EngineRun

    w, stub = s3_watcher(monkeypatch, pending=["node-10.0.0.21 (updating)"])
    key = S3_PREFIX + "u1.json"
    s3_listing(stub, {key: {"pid": 4242, "username": "root", "hostname": "mgmt-a",
                            "timestamp": "2026-12-06T18:40:01Z"}})
    stub.add_response("head_object", {"ETag": '"e0"'}, {"Bucket": "state", "Key": key})
    stub.add_response("delete_object", {}, {"Bucket": "state", "Key": key})
    w.dead_runs = [DeadRun(EngineRun("mgmt-a", "2026-12-06T18:40:00Z", (4242,)), "mgmt-a_1_x")]
    with stub:
        assert w.clear_stale_locks() is True
    stub.assert_no_pending_responses()
    events = {e["event"]: e for e in events_of(w.out)}
    assert events["stack-lock"]["cleared"] == [key]
    assert events["stack-lock"]["backend"] == "s3://state/team/?endpoint=https://198.18.4.6:7070"
    assert events["pending-operations"]["dropped"] == ["node-10.0.0.21 (updating)"]
    assert w.dead_runs == []


def test_an_s3_lock_of_another_run_blocks_the_up_and_nothing_is_deleted(monkeypatch):
    from cli.stacklock import DeadRun, EngineRun

    w, stub = s3_watcher(monkeypatch, pending=["x (creating)"])
    s3_listing(stub, {S3_PREFIX + "u1.json": {"pid": 4242, "username": "root", "hostname": "mgmt-a",
                                              "timestamp": "2026-12-06T18:40:01Z"},
                      S3_PREFIX + "u2.json": {"pid": 5150, "username": "ops", "hostname": "laptop",
                                              "timestamp": "2026-12-06T18:41:01Z"}})
    w.dead_runs = [DeadRun(EngineRun("mgmt-a", "2026-12-06T18:40:00Z", (4242,)), "mgmt-a_1_x")]
    with stub:   # no head_object / delete_object queued: any would fail the test
        assert w.clear_stale_locks() is False
    stub.assert_no_pending_responses()
    assert w.session.engine.pending == ["x (creating)"]
    up = [e for e in events_of(w.out) if e["event"] == "up"][0]
    assert up["ok"] is False and "laptop (pid 5150)" in up["error"]


# ------------------------------------------------------------------------------ hold-down


def hold_watcher(election, hold_s: float = 0.0) -> Watcher:
    w = lease_watcher()
    w.lease = SimpleNamespace(election=election, leading=lambda: True, renew_now=lambda: True)
    w.settings = Settings(window=6, interval=1, hold_down=60)
    w.args = SimpleNamespace(rejoin_returning=False)
    w.watch = Watch(w.settings, "10.0.0.12", fenced=["10.0.0.11"])
    if hold_s:
        w.watch.hold_for(hold_s, time.monotonic(), "recovery of master0 10.0.0.11 -> 10.0.0.12")
    w.hold_down_known = False
    w.config = SimpleNamespace(master0="10.0.0.12", down_hosts=["10.0.0.11"])
    w.previous_run = lambda: None
    w.sync_config = lambda: w.config

    def read_history():
        w.watch.unverified = False
        w.resume_at_start = False

    w.read_history = read_history
    return w


def elect(server, clock, who, w=None):
    from cli.lease import Election
    from tests.unit.test_cli_lease import NAME, SETTINGS

    return Election(server.client(who), who, SETTINGS, NAME, clock=clock, wall=clock.wall,
                    annotations=(lambda: w.lease_annotations()) if w else dict)


def test_a_new_leader_honours_the_hold_down_the_old_one_recorded_in_the_lease():
    """a recovers (hold-down 50 s) and records it with its renews; a dies; b takes over after
    the lease duration and holds for what is left (50 - the 15.1 s it saw the Lease unchanged):
    a dead master0 then is `held`, not failed over."""
    from cli.failover import HOLD_DOWN, HoldDown
    from tests.unit.test_cli_lease import Clock, FakeApiserver

    server, clock = FakeApiserver(), Clock()
    a = hold_watcher(None, hold_s=50)
    a.hold_down_known = True
    a.lease.election = ea = elect(server, clock, "a", a)
    assert ea.try_acquire_or_renew().ok
    record = HoldDown.from_text(server.lease["metadata"]["annotations"][HOLD_DOWN])
    assert 49 < record.left_s <= 50 and "10.0.0.12" in record.why
    b = hold_watcher(None)
    b.lease.election = eb = elect(server, clock, "b", b)
    assert not eb.try_acquire_or_renew().ok
    clock.advance(15.1)
    assert eb.try_acquire_or_renew().ok
    # b's takeover write leaves a's record alone (b has not led yet)
    assert HOLD_DOWN in server.lease["metadata"]["annotations"]
    b.take_lead()
    left = b.watch.hold_left(time.monotonic())
    assert 33 < left <= 34.9, left
    event = next(e for e in events_of(b.out) if e["event"] == "hold-down")
    assert event["previous"] == "a" and 33 < event["inherited_s"] <= 34.9
    now = time.monotonic()
    rounds = [Round(now + t, "10.0.0.12", tuple(Probe(p, Vote.DEAD) for p in ("m1", "m2", "n1")))
              for t in range(8)]
    kinds = [str(d.kind) for r in rounds for d in b.watch.observe(r)]
    assert kinds == ["suspect", "held"], kinds
    # b now writes its own (inherited) hold-down with its renews
    assert eb.try_acquire_or_renew().ok
    assert 32 < HoldDown.from_text(server.lease["metadata"]["annotations"][HOLD_DOWN]).left_s <= 34.9


def take_over_from(**leader):
    """Leader ``a`` (``hold_watcher(None, **leader)``, its hold-down recorded) renews once and
    goes silent; ``b`` takes the expired Lease over and leads. Returns ``b``."""
    from tests.unit.test_cli_lease import Clock, FakeApiserver

    server, clock = FakeApiserver(), Clock()
    a = hold_watcher(None, **leader)
    a.hold_down_known = True
    a.lease.election = ea = elect(server, clock, "a", a)
    assert ea.try_acquire_or_renew().ok
    b = hold_watcher(None)
    b.lease.election = eb = elect(server, clock, "b", b)
    eb.try_acquire_or_renew()
    clock.advance(15.1)
    assert eb.try_acquire_or_renew().ok
    b.take_lead()
    return b


def test_without_a_recorded_hold_down_a_new_leader_holds_none():
    b = take_over_from()
    assert b.watch.hold_left(time.monotonic()) == 0
    assert not [e for e in events_of(b.out) if e["event"] == "hold-down"]


def test_a_hold_down_that_ended_before_the_take_over_is_not_held():
    b = take_over_from(hold_s=10)
    assert b.watch.hold_left(time.monotonic()) == 0


def test_a_leader_that_gets_its_own_lease_back_keeps_its_hold_down():
    """take_lead makes a new decision state; the hold-down in force is carried into it."""
    w = hold_watcher(SimpleNamespace(took_over=None, took_over_unchanged_s=0.0), hold_s=40)
    w.take_lead()
    assert 39 < w.watch.hold_left(time.monotonic()) <= 40


def test_the_hold_down_record_is_written_only_once_leading_and_removed_when_over():
    from cli.failover import HOLD_DOWN

    w = hold_watcher(None, hold_s=30)
    assert HOLD_DOWN not in w.lease_annotations()        # a follower leaves the Lease's record
    w.hold_down_known = True
    assert json.loads(w.lease_annotations()[HOLD_DOWN])["left_s"] > 29
    w.watch = Watch(w.settings, "10.0.0.12")
    assert w.lease_annotations() == {HOLD_DOWN: None}   # none any more: the record goes
