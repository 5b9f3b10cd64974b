"""`recover` and `rejoin` after an interrupted run of this machine (issue 24 item 4): the stack lock
of an engine killed with SIGKILL is cleared, with the pending operations it left and a truncated
file:// checkpoint; a live engine here is waited for; any other lock stops the command before the
config changes, naming its writer (cli/change.py clear_dead_locks, cli/stacklock.py gone_here)."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess

import pytest

from cli import change as change_mod
from cli import stacklock
from cli.common import CliError
from config import PROJECT

STACK = "prod"


def write_lock(root, hostname: str, pid: int, name: str = "a1") -> str:
    d = root / ".pulumi" / "locks" / "organization" / PROJECT / STACK
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{name}.json"
    path.write_text(json.dumps({"pid": pid, "username": "op", "hostname": hostname,
                                "timestamp": "2026-12-07T04:00:00.000000001Z"}))
    return str(path)


def dead_pid() -> int:
    """A pid no process holds any more (a child started, killed and reaped)."""
    child = subprocess.Popen(["sleep", "30"])
    child.kill()
    child.wait()
    return child.pid


class FakeEngine:
    def __init__(self, root, pending=()):
        self.root, self.pending, self.dropped = root, list(pending), 0

    def backend_url(self) -> str:
        return f"file://{self.root}"

    def drop_pending_operations(self) -> list[str]:
        self.dropped += 1
        gone, self.pending = self.pending, []
        return gone


class FakeSession:
    def __init__(self, root, pending=()):
        self.engine, self.out, self.stack = FakeEngine(root, pending), io.StringIO(), STACK


def test_a_lock_of_a_killed_engine_of_this_machine_goes_with_its_pending_operations(tmp_path):
    lock = write_lock(tmp_path, socket.gethostname(), dead_pid())
    session = FakeSession(tmp_path, pending=["node-198.18.0.20 (creating)"])
    change_mod.clear_dead_locks(session, resumed=False)
    assert not os.path.exists(lock)
    assert session.engine.dropped == 1
    text = session.out.getvalue()
    assert "cleared the stack lock of op@" in text and "its engine process on this machine is gone" in text
    assert "dropped 1 pending operations" in text and "node-198.18.0.20 (creating)" in text


def test_a_truncated_checkpoint_is_restored_from_its_backup_once_the_lock_is_cleared(tmp_path):
    stacks = tmp_path / ".pulumi" / "stacks" / PROJECT
    stacks.mkdir(parents=True)
    (stacks / f"{STACK}.json").write_text('{"version": 3, "checkpoint": {"sta')
    (stacks / f"{STACK}.json.bak").write_text('{"version": 3, "checkpoint": {}}')
    write_lock(tmp_path, socket.gethostname(), dead_pid())
    session = FakeSession(tmp_path)
    change_mod.clear_dead_locks(session, resumed=False)
    assert json.loads((stacks / f"{STACK}.json").read_text()) == {"version": 3, "checkpoint": {}}
    assert "restored from" in session.out.getvalue()


def test_a_lock_of_another_machine_stops_the_command_naming_its_writer(tmp_path):
    lock = write_lock(tmp_path, "ops-laptop", dead_pid())
    session = FakeSession(tmp_path, pending=["x (updating)"])
    with pytest.raises(CliError) as err:
        change_mod.clear_dead_locks(session, resumed=True)
    assert "op@ops-laptop" in err.value.message and "Nothing was changed" in err.value.message
    assert f"pulumi cancel --stack {STACK}" in err.value.message
    assert os.path.exists(lock) and session.engine.dropped == 0


def test_a_live_engine_here_is_waited_for_then_named(tmp_path, monkeypatch):
    """An engine winding down after Ctrl-C holds its lock until its steps in flight end: the
    command waits (bounded), and a lock still held then stops it."""
    lock = write_lock(tmp_path, socket.gethostname(), os.getpid())
    monkeypatch.setattr(stacklock, "engine_alive", lambda pid: pid == os.getpid())
    monkeypatch.setattr(change_mod, "LOCK_WAIT_S", 0.3)
    session = FakeSession(tmp_path)
    with pytest.raises(CliError, match="locked by another engine run"):
        change_mod.clear_dead_locks(session, resumed=False)
    assert "waiting up to 0s for the engine run holding the stack's lock" in session.out.getvalue()
    assert os.path.exists(lock)


def test_a_live_engine_that_ends_while_waited_for_lets_the_command_go_on(tmp_path, monkeypatch):
    """The engine removes its own lock as it ends: the next look finds none."""
    lock = write_lock(tmp_path, socket.gethostname(), os.getpid())
    monkeypatch.setattr(stacklock, "engine_alive", lambda pid: True)
    monkeypatch.setattr(change_mod.time, "sleep", lambda s: os.unlink(lock))
    session = FakeSession(tmp_path)
    change_mod.clear_dead_locks(session, resumed=False)
    assert session.engine.dropped == 0 and "cleared" not in session.out.getvalue()
    assert "waiting up to 120s" in session.out.getvalue()


def test_no_lock_drops_pending_operations_only_when_the_recovery_resumes(tmp_path):
    fresh = FakeSession(tmp_path, pending=["x (updating)"])
    change_mod.clear_dead_locks(fresh, resumed=False)
    assert fresh.engine.dropped == 0
    resumed = FakeSession(tmp_path, pending=["x (updating)"])
    change_mod.clear_dead_locks(resumed, resumed=True)
    assert resumed.engine.dropped == 1


def test_a_pid_reused_by_another_program_is_a_dead_engine():
    here = socket.gethostname()
    locks = [stacklock.StackLock("a", os.getpid(), "op", here, "t"),      # python, not pulumi
             stacklock.StackLock("b", dead_pid(), "op", here, "t"),
             stacklock.StackLock("c", dead_pid(), "op", "elsewhere", "t")]
    dead = stacklock.gone_here(locks, here)
    assert [d.run.pids for d in dead] == [(locks[0].pid,), (locks[1].pid,)]
    verdict = stacklock.decide(locks, dead)
    assert [lock.where for lock in verdict.clear] == ["a", "b"]
    assert [lock.where for lock in verdict.keep] == ["c"]
