"""A recovery in two phases (issue 24; cli/change.py): which hosts wait for the fence phase, how
the check between the phases judges them (cli/health.py), the program leaving their node-side
steps out (topology.FENCE_LATER_ENV), and the engine call that keeps them in the state."""

from __future__ import annotations

import pytest

from cli.change import FENCE_SAMPLE, Change, Result, Outcome, fence_plan
from cli.engine import SKIP_CHECKPOINTS_ENV, Engine
from cli.health import FencePending, assess
from config import PROJECT, build_config
from tests.unit.test_cli_status import (IMAGES, M1, M2, M3, N1, _raw_entry_values,
                                        entry_probes)
from topology import FENCE_LATER_ENV, HostStep, Topology

NODES = [f"198.18.1.{i}" for i in range(1, 41)]


def big(master0=M1, down=(), **local) -> dict:
    values = _raw_entry_values(master0, down)
    values["cluster"]["nodes"] = NODES
    values["registry"]["local_registry"].update(local)
    return values


def no_entry() -> dict:
    values = big()
    del values["registry"]["local_registry"]["node_entry"]
    return values


def change(new=M2, down=(M1,)) -> Change:
    return Change(master0=new, down_hosts=list(down), question="", rerun="")


def test_a_recovery_onto_a_warm_standby_defers_every_entry_node_and_samples_a_few():
    before = build_config(big())
    pending = fence_plan(before, change())
    assert pending.hosts == frozenset(NODES)          # the masters run registries: no entry
    assert (pending.master0, pending.mirrors) == (M1, (M2, M3))
    assert len(pending.sampled) == FENCE_SAMPLE and pending.sampled <= pending.hosts
    after = Topology.of(before.model_copy(update={"master0": M2, "down_hosts": [M1]}))
    assert after.verifier in pending.sampled          # it pulls every image through its entry


@pytest.mark.parametrize("values, chg", [
    (big(), Change(master0=None, down_hosts=[M3], question="", rerun="")),   # rejoin-like
    (big(), change(new=M1, down=())),                                          # a resume
    (no_entry(), change()),                                                    # hosts lines
])
def test_no_fence_phase_where_nodes_move_with_the_recovery_or_nothing_moves(values, chg):
    assert fence_plan(build_config(values), chg) is None


def test_a_small_cluster_samples_every_deferred_host():
    values = big()
    values["cluster"]["nodes"] = NODES[:3]
    pending = fence_plan(build_config(values), change())
    assert pending.sampled == pending.hosts == frozenset(NODES[:3])


def pending_for(node_line: str, sampled=True):
    cfg = build_config(_raw_entry_values(M2, [M1]))
    probes = entry_probes(node_line)
    del probes[M1]
    probes[M2].registry_mode = "read-write"
    pending = FencePending(frozenset({N1}), frozenset({N1} if sampled else ()), M1, (M2, M3))
    if not sampled:
        del probes[N1]
    return assess(cfg, IMAGES, probes, pending)


def test_between_the_phases_an_entry_point_with_the_old_layout_and_a_live_standby_up_is_fine():
    result = pending_for(f"{M1}:5000:DOWN {M2}:5000:UP:backup {M3}:5000:UP:backup")
    assert not [p for p in result.problems if N1 in p], result.problems
    # a standby one check short of DOWN still takes the node's connections (HAProxy's "UP 1/2")
    result = pending_for(f"{M1}:5000:DOWN {M2}:5000:DOWN_1/2(L7OK):backup {M3}:5000:UP_1/2(L4TOUT):backup")
    assert not [p for p in result.problems if N1 in p], result.problems
    node = [h for h in result.hosts if h.ip == N1][0]
    assert node.fence_pending and node.entry_cell().endswith("(fence pending)")
    # already fenced (a resumed recovery): the new layout is fine too
    assert not [p for p in pending_for(f"{M2}:5000:UP {M3}:5000:UP:backup").problems if N1 in p]


@pytest.mark.parametrize("line, fragment", [
    (f"{M1}:5000:UP {M2}:5000:DOWN:backup {M3}:5000:DOWN:backup", f"sees none of {M2}, {M3} UP"),
    # one good check of the two that bring a server back: not serving yet
    (f"{M1}:5000:UP {M2}:5000:DOWN_1/2:backup {M3}:5000:DOWN:backup", f"sees none of {M2}, {M3} UP"),
    # what each server's last check said, as HAProxy's stats page does (why it is DOWN)
    (f"{M1}:5000:UP(L7OK) {M2}:5000:DOWN(L4CON):backup {M3}:5000:DOWN_1/2(L7OK):backup",
     f"UP ({M1}:5000 UP (L7OK), {M2}:5000 DOWN (L4CON), {M3}:5000 DOWN 1/2 (L7OK)): its pulls stop"),
    (f"{M1}:5000:DOWN {M3}:5000:UP:backup", "neither the layout before the recovery"),
    ("unreachable", "no entry point answers"),
])
def test_between_the_phases_a_node_whose_pulls_stop_is_a_problem(line, fragment):
    problems = [p for p in pending_for(line).problems if N1 in p]
    assert any(fragment in p for p in problems), problems


def test_a_deferred_host_not_sampled_is_neither_probed_nor_a_problem():
    result = pending_for("", sampled=False)
    assert not [p for p in result.problems if N1 in p], result.problems
    row = {r[0]: r for r in result.rows()}[N1]
    assert row[2] == "not probed" and row[-1] == "fence pending"


def test_the_fence_phase_decides_the_exit_code():
    pending = FencePending(frozenset({N1}), frozenset({N1}), M1, (M2,))
    healthy = assess(build_config(_raw_entry_values(M2, [M1])), IMAGES, {}, pending)
    healthy.problems.clear()
    done = Result(Outcome.APPLIED, None, None, healthy, pending)
    assert done.exit_code == 1                       # the fence phase did not run
    done.fence = healthy
    assert done.exit_code == 0


def test_the_program_leaves_only_live_entry_hosts_out():
    layout = Topology.of(build_config(big(master0=M2, down=[M1])))
    entry = object()
    ips, problems = layout.fence_later(f"{NODES[0]}, {NODES[1]}", entry)
    assert ips == frozenset(NODES[:2]) and problems == []
    _, problems = layout.fence_later(f"{M2},10.0.0.9,{M1}", entry)
    assert len(problems) == 3                        # a registry host, a stranger, a down host
    assert layout.fence_later("", entry) == (frozenset(), [])
    _, problems = layout.fence_later(NODES[0], None)  # no node entry point: nothing qualifies
    assert problems


class FakeWorkspace:
    def __init__(self):
        self.env_vars = {}


class FakeStack:
    def __init__(self):
        self.workspace = FakeWorkspace()
        self.calls = []

    def up(self, **kw):
        self.calls.append(("up", kw["exclude"], dict(self.workspace.env_vars)))

    def preview(self, **kw):
        self.calls.append(("preview", kw["exclude"], dict(self.workspace.env_vars)))


def test_the_engine_names_the_deferred_steps_and_tells_the_program_for_that_run_only():
    engine = Engine.__new__(Engine)
    engine.stack, engine.stack_name, engine.output, engine.message = FakeStack(), "prod", None, ""
    engine.up(defer=frozenset({N1}))
    engine.preview()
    (_, exclude, env), (_, none, env2) = engine.stack.calls
    assert exclude == [s.urn("prod", PROJECT, N1) for s in HostStep.node_side()]
    assert env == {FENCE_LATER_ENV: N1} and none is None and env2 == {}
    assert engine.stack.workspace.env_vars == {}


def test_a_change_up_skips_the_engine_checkpoints_for_that_run_only():
    engine = Engine.__new__(Engine)
    engine.stack, engine.stack_name, engine.output, engine.message = FakeStack(), "prod", None, ""
    engine.stack.workspace.env_vars["KEEP"] = "1"
    engine.up(checkpoints=False)
    engine.up()
    (_, _, skipped), (_, _, plain) = engine.stack.calls
    assert skipped == {"KEEP": "1", SKIP_CHECKPOINTS_ENV: "true"}
    assert plain == {"KEEP": "1"} == engine.stack.workspace.env_vars


# ------------------------------------------------------------------ the two `up`s (cli/change._up)

import io  # noqa: E402

from cli import change as change_mod  # noqa: E402
from cli.engine import Steps, UpFailed  # noqa: E402


class FakeEngine:
    def __init__(self, fence_fails: bool = False):
        self.calls, self.fence_fails = [], fence_fails

    def up(self, out, defer=frozenset(), checkpoints=True):
        assert not checkpoints, "a change's up saves the state at its end only"
        self.calls.append(defer)
        if self.fence_fails and not defer:
            raise UpFailed(Steps(), "step node-198.18.1.1 failed: ssh: connect timed out")
        return Steps(), 1.0


class FakeSession:
    def __init__(self, engine):
        self.out, self.engine, self.stack = io.StringIO(), engine, "prod"
        self.config = build_config(big(master0=M2, down=[M1]))

    def reload(self):
        return self.config


class FakeGuard:
    committed = False


def two_phases(monkeypatch, after_verify=None, fence_fails=False, healthy=True, problems=None):
    """``problems``: the problems of each check in turn (then none); else ``healthy`` says."""
    checks = []
    monkeypatch.setattr(change_mod.time, "sleep", lambda s: checks.append(("slept", s)))

    def check(session, pending=None, again=False):
        assert again, "a recovery's verification probes a slow host again"
        checks.append(pending)
        result = assess(session.config, IMAGES, {}, pending)
        if problems is not None:
            result.problems[:] = problems.pop(0) if problems else []
        else:
            result.problems[:] = [] if healthy else ["198.18.1.1 (node): no entry point answers"]
        return result

    monkeypatch.setattr(change_mod, "check_cluster", check)
    monkeypatch.setattr(change_mod, "report", lambda *a, **k: None)
    session = FakeSession(FakeEngine(fence_fails))
    pending = fence_plan(build_config(big()), change())
    result = change_mod._up(session, Change(master0=M2, down_hosts=[M1], question="",
                                            rerun="python -m cli recover ...",
                                            after_verify=after_verify),
                            change_mod.Timer(), FakeGuard(), lambda ops: None, pending)
    return session, result, checks


def test_the_recovery_up_defers_the_nodes_then_the_fence_phase_runs_them_all(monkeypatch):
    session, result, checks = two_phases(monkeypatch)
    assert session.engine.calls == [frozenset(NODES), frozenset()]
    assert checks == [result.pending, None]          # sampled first, every host after the fence
    assert result.fence is not None and result.exit_code == 0


def test_a_failed_check_after_the_recovery_runs_no_fence_phase(monkeypatch):
    session, result, _ = two_phases(monkeypatch, healthy=False)
    assert session.engine.calls == [frozenset(NODES)] and result.exit_code == 1


def test_a_watcher_that_stopped_leading_does_not_start_the_fence_phase(monkeypatch):
    seen = []
    session, result, _ = two_phases(monkeypatch, after_verify=lambda r: seen.append(r) or False)
    assert seen == [result] and session.engine.calls == [frozenset(NODES)]
    assert "not started" in result.fence_error and result.exit_code == 1


def test_a_failed_fence_phase_leaves_the_recovery_verified_and_says_how_to_finish(monkeypatch):
    _, result, _ = two_phases(monkeypatch, fence_fails=True)
    assert result.health.healthy and result.fence is None and result.exit_code == 1
    assert "the registry is recovered, but the fence phase failed" in result.fence_error
    assert "python -m cli recover" in change_mod.failure(result, "x")


def settling_problems() -> list[str]:
    """What the check between the phases found at 3 + 500 (session 16), made by ``assess``: the
    other warm standby's registry not answering yet and a sampled node's entry point (old layout)
    seeing none of the servers that serve now UP."""
    cfg = build_config(_raw_entry_values(M2, [M1]))
    probes = entry_probes(f"{M1}:5000:DOWN {M2}:5000:DOWN:backup {M3}:5000:DOWN:backup")
    del probes[M1]
    probes[M2].registry_mode = "read-write"
    probes[M3].registry, probes[M3].registry_mode = "stopped", ""
    probes[M2].resolves = probes[M3].resolves = M2   # the first phase repointed the registry hosts
    pending = FencePending(frozenset({N1}), frozenset({N1}), M1, (M2, M3))
    problems = assess(cfg, IMAGES, probes, pending).problems
    assert len(problems) == 2 and any(M3 in p for p in problems), problems
    return problems


def test_entry_points_that_saw_the_standbys_restart_get_one_more_look_after_their_interval(monkeypatch):
    """The new master0's registry restarts read-write during the first `up`, the other standby's
    too: an entry point that saw them fail marks them DOWN and checks them again only at its
    interval, and a restarted standby may not answer the probe yet (3 + 500: a standby "runs no
    registry" and 4 of the 8 sampled nodes saw no server UP right after the `up`). One more look
    after the interval + FENCE_SETTLE_S; a problem of another kind gets none."""
    from cli.health import NO_STANDBY_UP

    for first in (settling_problems(), [f"198.18.1.1 (node): {NO_STANDBY_UP}: pulls stop if ..."]):
        session, result, checks = two_phases(monkeypatch, problems=[list(first)])
        settle = 1 + change_mod.FENCE_SETTLE_S         # node_entry.check_interval_s defaults to 1
        assert checks == [result.pending, ("slept", settle), result.pending, None], first
        assert result.health.healthy and result.exit_code == 0
    _, result, checks = two_phases(monkeypatch, problems=[["198.18.1.1 (node): no entry point answers"]])
    assert checks == [result.pending] and result.exit_code == 1
    mixed = settling_problems() + ["198.18.1.1 (node): no entry point answers"]
    _, result, checks = two_phases(monkeypatch, problems=[mixed])
    assert checks == [result.pending] and result.exit_code == 1


def test_a_killed_engine_is_said_so_not_by_its_last_warning():
    from pulumi.automation._cmd import CommandResult
    from pulumi.automation.errors import CommandError

    from cli.engine import _failure

    killed = CommandError(CommandResult("", "warning: using pulumi-language-python from $PATH\n", -9))
    assert _failure(Steps(), killed) == "the engine (`pulumi`) was killed by signal 9"
    failed = CommandError(CommandResult("", "error: update failed\n", 255))
    assert _failure(Steps(), failed) == "update failed"


def test_the_fence_check_looks_again_after_the_interval_when_reloaded_entry_points_see_master0_down(monkeypatch):
    """3 + 300 (session 17): the fence phase reloaded all 300 entry points within 4 minutes and
    its check found the new master0 DOWN (or DOWN 1/2) on many of them, the other standby not UP
    on others; no second look came (that wording was not one that settles) and the one the
    standby's got waited 3 s, not the interval. Now: one more look after the entry points'
    interval + FENCE_SETTLE_S for those; any other problem still gets none."""
    from cli.health import MASTER0_NOT_SERVING, NO_STANDBY_UP

    down = [f"198.18.1.1 (node): the entry point sees master0 {M2} DOWN 1/2: {MASTER0_NOT_SERVING}",
            f"198.18.1.2 (node): {NO_STANDBY_UP}: pulls stop if master0 does"]
    _, result, checks = two_phases(monkeypatch, problems=[[], list(down)])
    settle = 1 + change_mod.FENCE_SETTLE_S         # node_entry.check_interval_s defaults to 1
    assert checks == [result.pending, None, ("slept", settle), None], checks
    assert result.fence.healthy and result.exit_code == 0
    _, result, checks = two_phases(monkeypatch, problems=[[], down + ["198.18.1.3 (node): no entry point answers"]])
    assert checks == [result.pending, None] and result.exit_code == 1
