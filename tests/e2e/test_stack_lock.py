"""The stack lock and pending operations a killed engine run leaves, with the REAL engine
(pulumi v3.274.0 from the toolchain) on a file:// backend, and how `cli watch` clears them
(cli/stacklock.py): the lock file carries the `pulumi up` process's pid and the hostname; a new
leader's verdict keeps a lock of another pid (the engine then still refuses to run) and clears
the killed run's; the pending operation is dropped from the state and the next `up` succeeds.
A tiny project with one slow local command; no lab needed. Every wait is bounded."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import pytest

from cli.engine import Engine
from cli.stacklock import DeadRun, EngineRun, decide, read_locks, utc_stamp

PROGRAM = """\
import pulumi
import pulumi_command as command
quick = command.local.Command("quick", create="true")
command.local.Command("slow", create="sleep 60; : lockprobe", opts=pulumi.ResourceOptions(depends_on=[quick]))
"""


@pytest.fixture
def project(tmp_path, toolchain_env):
    proj, state = tmp_path / "proj", tmp_path / "state"
    proj.mkdir()
    state.mkdir()
    (proj / "Pulumi.yaml").write_text("name: lockprobe\nruntime: python\n")
    (proj / "__main__.py").write_text(PROGRAM)
    env = dict(toolchain_env, PULUMI_BACKEND_URL=f"file://{state}",
               PULUMI_SKIP_UPDATE_CHECK="true")
    saved = os.environ.get("PULUMI_BACKEND_URL")
    os.environ["PULUMI_BACKEND_URL"] = env["PULUMI_BACKEND_URL"]
    subprocess.run(["pulumi", "--non-interactive", "stack", "init", "dev"], cwd=proj, env=env,
                   check=True, capture_output=True)
    yield proj, state, env
    os.environ["PULUMI_BACKEND_URL"] = saved or toolchain_env["PULUMI_BACKEND_URL"]


def marked() -> list[int]:
    """The slow step's shell (its command line carries the marker)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and b": lockprobe" in open(f"/proc/{entry}/cmdline", "rb").read():
                found.append(int(entry))
        except OSError:
            pass
    return found


def killed_up(proj, state, env) -> tuple[int, str]:
    """`pulumi up` killed with SIGKILL while its slow step runs (as a leader that lost its Lease
    kills its run); returns its pid and when the run started (UTC)."""
    started = utc_stamp()
    up = subprocess.Popen(["pulumi", "--non-interactive", "up", "--yes", "--stack", "dev"],
                          cwd=proj, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not marked():
            assert time.monotonic() < deadline and up.poll() is None, "the slow step never ran"
            time.sleep(0.1)
    finally:
        os.killpg(up.pid, signal.SIGKILL)  # the engine and everything it started
        up.wait(10)
        for pid in marked():
            os.kill(pid, signal.SIGKILL)
    return up.pid, started


def test_a_killed_up_leaves_its_lock_and_only_its_run_is_cleared(project):
    proj, state, env = project
    pid, started = killed_up(proj, state, env)
    locks = read_locks(state, "lockprobe", "dev")
    print(f"\nlocks after the kill: {[lock.as_json() for lock in locks]}")
    assert [(lock.pid, lock.hostname) for lock in locks] == [(pid, socket.gethostname())]
    engine = Engine("dev", proj)
    pending = [op["type"] for op in engine.export().get("pending_operations") or []]
    assert pending == ["creating"], pending

    # Another engine run (pid) on the same host: not the dead leader's, kept; the engine refuses.
    other = DeadRun(EngineRun(host=socket.gethostname(), started=started, pids=(pid + 1,)))
    verdict = decide(locks, [other])
    assert verdict.blocked and not verdict.clear
    refused = subprocess.run(["pulumi", "--non-interactive", "up", "--yes", "--stack", "dev"],
                             cwd=proj, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "currently locked" in refused.stderr + refused.stdout

    # The dead leader's run (its recorded pid): cleared, pending operations dropped, `up` runs.
    verdict = decide(locks, [DeadRun(EngineRun(host=socket.gethostname(), started=started,
                                               pids=(pid,)))])
    assert verdict.clear == tuple(locks) and not verdict.blocked
    for lock in verdict.clear:
        os.unlink(lock.where)
    dropped = engine.drop_pending_operations()
    assert dropped == ["slow (creating)"], dropped
    assert not engine.export().get("pending_operations")
    # The rerun creates the step again (`sleep 60` is too long for a test: the program is
    # swapped for a quick one, as the recovery's steps are quick to rerun).
    (proj / "__main__.py").write_text(PROGRAM.replace("sleep 60", "true"))
    done = subprocess.run(["pulumi", "--non-interactive", "up", "--yes", "--stack", "dev"],
                          cwd=proj, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    after = engine.export()
    assert not after.get("pending_operations")
    names = sorted(r["urn"].rsplit("::", 1)[-1] for r in after["resources"]
                   if r["type"] == "command:local:Command")
    assert names == ["quick", "slow"]
    assert read_locks(state, "lockprobe", "dev") == []
