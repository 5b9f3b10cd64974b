"""bench/interrupt.py's judge of the state after an interrupted recovery and its rerun: what
`pulumi stack export` must not hold (issue 24 item 4)."""

from __future__ import annotations

from bench.interrupt import engine_ups, state_problems

URN = "urn:pulumi:bench500::sealer-registry::sealer:index:ClusterRegistry$command:remote:Command::"


def export(*names: str, pending: tuple[str, ...] = ()) -> dict:
    return {"deployment": {
        "resources": [{"urn": URN + n} for n in names],
        "pending_operations": [{"resource": {"urn": URN + n}, "type": "creating"} for n in pending]}}


def test_a_clean_state_has_no_problem():
    assert state_problems(export("node-198.18.1.1", "node-198.18.1.2"),
                          ["198.18.1.1", "198.18.1.2"]) == []


def test_a_pending_operation_a_urn_twice_and_a_missing_node_step_are_each_named():
    problems = state_problems(export("node-198.18.1.1", "node-198.18.1.1",
                                     pending=("payload-198.18.1.2",)),
                              ["198.18.1.1", "198.18.1.2"])
    assert problems == ["1 pending operations: ['payload-198.18.1.2']",
                        "1 URNs twice: ['node-198.18.1.1']",
                        "1 live hosts without their node step: ['198.18.1.2']"]


def test_only_a_pulumi_up_under_the_command_is_its_engine(tmp_path):
    """A process named `pulumi` running `up` is found; `pulumi preview` and other programs are
    not (the interrupter kills what this returns)."""
    import os
    import shutil
    import subprocess
    import time

    # `tail -f` started by the name `pulumi` (its comm), following files named like the verbs.
    fake = tmp_path / "pulumi"
    fake.symlink_to(shutil.which("tail"))
    for verb in ("up", "preview"):
        (tmp_path / verb).write_text("")
    up = subprocess.Popen([str(fake), "up", "-f"], cwd=tmp_path, stderr=subprocess.DEVNULL)
    preview = subprocess.Popen([str(fake), "preview", "-f"], cwd=tmp_path, stderr=subprocess.DEVNULL)
    other = subprocess.Popen(["sleep", "30"])
    try:
        time.sleep(0.2)
        assert engine_ups(os.getpid()) == [up.pid]
    finally:
        for child in (up, preview, other):
            child.kill()
            child.wait()
