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


def test_no_engine_up_under_a_process_without_children():
    import os
    assert engine_ups(os.getpid()) == []
