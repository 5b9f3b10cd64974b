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
