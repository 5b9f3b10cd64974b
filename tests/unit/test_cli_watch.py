"""cli/watch.py's plumbing that needs no lab: the JSON-lines log, the stop on SIGTERM/SIGINT with
one SIGINT forwarded to an engine in flight (a real child process named `pulumi`), the argument
checks."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli import build_parser
from cli.common import EXIT_REFUSED
from cli.failover import Decision, Kind
from cli.watch import EventLog, Stop, pulumi_children

ENGINE = """#!/bin/bash
trap 'echo INT >>"$1"; exit 0' INT  # $2: the engine's command, as in its argv
echo ready >>"$1"
while :; do sleep 0.02; done
"""


def test_event_log_writes_one_json_object_per_line():
    out = io.StringIO()
    log = EventLog(out)
    log("start", master0="10.0.0.11")
    log.decision(Decision(Kind.FAILOVER, "10.0.0.11", 1.0, "3 of 3", {"10.0.0.12": "dead: x"}))
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["event"] for e in lines] == ["start", "decision"]
    assert lines[1]["decision"] == "failover" and lines[1]["evidence"] == {"10.0.0.12": "dead: x"}
    assert all(e["ts"].endswith("Z") and isinstance(e["epoch"], float) for e in lines)


@pytest.fixture
def engine(tmp_path):
    """A child process named `pulumi` that records each SIGINT it gets."""
    script = tmp_path / "pulumi"
    script.write_text(ENGINE)
    script.chmod(0o755)
    record = tmp_path / "signals"
    # A shell started in the background by a non-interactive shell (`cmd &`, nohup) inherits
    # SIGINT ignored, and bash cannot trap a signal ignored at entry; the Go engine re-enables it
    # (os/signal.Notify does), so the stand-in gets SIGINT's default back before it starts.
    proc = subprocess.Popen([str(script), str(record), "up"],
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 5
    while not (record.exists() and "ready" in record.read_text()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    yield proc, record
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def received(record: Path) -> list[str]:
    return [line for line in record.read_text().splitlines() if line == "INT"]


def test_sigterm_during_up_forwards_one_sigint_to_the_engine(engine):
    proc, record = engine
    assert proc.pid in pulumi_children()
    out = io.StringIO()
    stop = Stop(EventLog(out))
    stop.in_up = True
    stop.handle(signal.SIGTERM, None)
    stop.handle(signal.SIGTERM, None)   # a second signal never forwards a second SIGINT
    assert proc.wait(5) == 0
    assert received(record) == ["INT"]
    assert stop.stopping and stop.interrupted_up
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert events[0]["engine_sigint"] == [proc.pid]


def test_only_an_engine_running_up_is_interrupted(engine):
    """`pulumi config set` (the flow's first steps) is never interrupted: the stack file would
    be half changed."""
    proc, _ = engine
    assert proc.pid in pulumi_children("up")
    assert proc.pid not in pulumi_children("config")


def test_sigterm_between_rounds_leaves_children_alone(engine):
    proc, record = engine
    stop = Stop(EventLog(io.StringIO()))
    stop.handle(signal.SIGTERM, None)
    time.sleep(0.2)
    assert proc.poll() is None and received(record) == []
    assert stop.stopping and not stop.interrupted_up


def test_stop_sleep_returns_at_once_when_stopped():
    stop = Stop(EventLog(io.StringIO()))
    stop.event.set()
    start = time.monotonic()
    stop.sleep(5)
    assert time.monotonic() - start < 1


@pytest.mark.parametrize("argv,fragment", [
    (["--window", "1s"], "must hold at least two rounds"),
    (["--hold-down", "2s"], "must be at least the window"),
    (["--min-probers", "1"], "--min-probers 1: must be at least 2"),
    (["--probers", "1"], "--probers 1: must be at least 2"),
])
def test_watch_refuses_settings_that_could_act_on_thin_evidence(argv, fragment, capsys):
    args = build_parser().parse_args(["watch", "--stack", "x", *argv])
    assert args.run(args) == EXIT_REFUSED
    assert fragment in capsys.readouterr().err


@pytest.mark.parametrize("value,seconds", [("6s", 6.0), ("1500ms", 1.5), ("2m", 120.0)])
def test_watch_accepts_durations(value, seconds):
    args = build_parser().parse_args(["watch", "--window", value])
    assert args.window == seconds


def test_watch_rejects_a_bad_duration(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["watch", "--interval", "soon"])
    assert "'soon' is not a duration" in capsys.readouterr().err


def test_watch_is_listed_in_the_cli_help():
    done = subprocess.run([sys.executable, "-m", "cli", "--help"], capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parents[2])
    assert "watch" in done.stdout


def test_a_second_watcher_of_the_same_stack_is_refused(tmp_path):
    """The lock is per stack and project directory; held by a live process, refused with exit 2
    naming it; another stack is fine."""
    from types import SimpleNamespace

    from cli.common import CliError
    from cli.watch import _HELD, one_watcher

    session = SimpleNamespace(project_dir=tmp_path, stack="prod")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, types, time; sys.path.insert(0, %r)\n"
        "from cli.watch import one_watcher\n"
        "one_watcher(types.SimpleNamespace(project_dir=__import__('pathlib').Path(%r), stack='prod'))\n"
        "print('held', flush=True); time.sleep(30)") % (str(Path(__file__).resolve().parents[2]),
                                                         str(tmp_path))],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CliError) as e:
            one_watcher(session)
        assert e.value.code == EXIT_REFUSED and "one watcher per stack" in e.value.message
        one_watcher(SimpleNamespace(project_dir=tmp_path, stack="other"))
        holder.kill()
        holder.wait()
        one_watcher(session)  # free again once the holder is gone
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        while _HELD:
            os.close(_HELD.pop())


# ------------------------------------------------------------------------------ stale standbys

from types import SimpleNamespace  # noqa: E402

from cli.failover import Probe, Replica, Round, Stamp, Vote  # noqa: E402
from cli.watch import Watcher  # noqa: E402
from components.remote_scripts import SCRIPTS_DIR  # noqa: E402

M0, S1, S2 = "10.0.0.11", "10.0.0.12", "10.0.0.13"
OLD, NEW = "a" * 64, "b" * 64


def mark(rootfs: Path, tree: str) -> str:
    done = subprocess.run(["bash", str(SCRIPTS_DIR / "mark-stale.sh"), str(rootfs), tree],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_mark_stale_script_writes_the_marker_only_for_a_stamp_of_another_tree(tmp_path):
    """It compares its own stamp again: fresh (same tree) and no stamp leave no marker; a stamp
    of another tree gets one, once."""
    registry = tmp_path / "registry"
    registry.mkdir()
    assert mark(tmp_path, NEW) == "result=no-stamp stamp_tree="
    (registry / ".sealer-replica").write_text(
        f'{{"source": "{M0}", "completed_at": 1, "files": 1, "bytes": 1, "tree": "{NEW}"}}\n')
    assert mark(tmp_path, NEW) == f"result=fresh stamp_tree={NEW}"
    assert not (registry / ".sealer-stale").exists()
    (registry / ".sealer-replica").write_text(
        f'{{"source": "{M0}", "completed_at": 1, "files": 1, "bytes": 1, "tree": "{OLD}"}}\n')
    assert mark(tmp_path, NEW) == f"result=marked stamp_tree={OLD}"
    assert (registry / ".sealer-stale").exists()
    assert mark(tmp_path, NEW) == f"result=already stamp_tree={OLD}"


class FakeLinks:
    def __init__(self, tree: str):
        self.calls: list[tuple[str, str]] = []
        self.access = self
        self.tree = tree

    def _done(self, ip, script):
        self.calls.append((ip, script.command))
        out = f"probe=1\nreplica=none\ntree={self.tree}\n" if "--tree" in script.command else \
            f"result=marked stamp_tree={OLD}\n"
        return subprocess.CompletedProcess([], 0, out, "")

    def run(self, ip, script, timeout=None, **_options):
        return self._done(ip, script)


def watcher(tree: str, replicas: dict) -> SimpleNamespace:
    events: list[dict] = []
    config = SimpleNamespace(
        registry=SimpleNamespace(port=5000, local_registry=SimpleNamespace(standby="warm", ha=False)),
        deploy_hosts=[M0, S1, S2], down_hosts=[], rootfs="/r")
    return SimpleNamespace(links=FakeLinks(tree), probers=[S1, S2], replicas=replicas,
                           marked_stale={}, log=lambda event, **f: events.append({"event": event, **f}),
                           events=events, config=config)


def alive_round(votes=(Vote.ALIVE, Vote.ALIVE)) -> Round:
    return Round(1.0, M0, tuple(Probe(p, v) for p, v in zip((S1, S2), votes)))


def stamp_of(tree: str) -> Replica:
    return Replica(stamp=Stamp(source=M0, completed_at=1, files=1, bytes=1, tree=tree))


def test_the_watcher_gates_a_lagging_standby_once_and_logs_it():
    """master0 answers and its tree moved: the standby copied from the old tree is marked (one
    mark-stale.sh run, one `stale_standby` event naming both trees), the fresh one is not; the
    next round marks nothing again."""
    w = watcher(NEW, {S1: stamp_of(OLD), S2: stamp_of(NEW)})
    Watcher.gate_stale_standbys(w, w.config, alive_round())
    assert [ip for ip, cmd in w.links.calls] == [M0, S1]
    assert "mark-stale.sh" not in w.links.calls[0][1] and w.links.calls[1][1].endswith(f"/r {NEW}")
    assert [(e["event"], e["host"], e["master0_tree"], e["stamp_tree"], e["result"]) for e in w.events] == [
        ("stale_standby", S1, NEW, OLD, "marked")]
    Watcher.gate_stale_standbys(w, w.config, alive_round())
    assert [ip for ip, _ in w.links.calls] == [M0, S1, M0] and len(w.events) == 1


def test_the_watcher_reads_no_tree_from_a_master0_that_looks_dead_or_without_warm_standbys():
    w = watcher(NEW, {S1: stamp_of(OLD)})
    Watcher.gate_stale_standbys(w, w.config, alive_round((Vote.DEAD, Vote.ALIVE)))
    assert w.links.calls == [] and w.events == []
    w.config.registry.local_registry.standby = "cold"
    Watcher.gate_stale_standbys(w, w.config, alive_round())
    assert w.links.calls == []
