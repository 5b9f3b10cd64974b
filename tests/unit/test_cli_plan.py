"""cli/plan.py: a preview's steps read as a plan of which host gets what."""

from __future__ import annotations

import pytest

from cli.plan import render

OLD, NEW = "198.18.0.11", "198.18.0.12"
M3, N1, N2 = "198.18.0.13", "198.18.0.21", "198.18.0.22"


def recovery_ops(post: bool = False) -> dict[str, str]:
    """The steps a recovery preview reports (pre mode; post adds the data copy)."""
    ops = {
        f"registry-launch-{NEW}": "create",
        f"registry-standby-{NEW}": "delete",
        f"node-{NEW}": "update", f"node-{M3}": "update",
        f"node-{N1}": "update", f"node-{N2}": "update",
        "k8s": "update",
        "sealer-registry-config": "update",
        "registry-verify": "update",
        f"registry-launch-{OLD}": "delete", f"rootfs-{OLD}": "delete", f"data-{OLD}": "delete",
        f"node-{OLD}": "delete",
        f"rootfs-{NEW}": "same", "sealer-apps": "same",
    }
    if post:
        ops[f"data-{NEW}"] = "create"
    return ops


def test_recovery_plan_names_each_host_and_what_it_gets():
    """The plan lists the launch on the new master0, the hosts entries with their count and IPs,
    the records and the verification, and says the old master0 is not contacted."""
    plan = render(recovery_ops(), master0=NEW, domain="sea.hub", down_hosts=[OLD], old_master0=OLD)
    text = plan.text()
    assert text.splitlines()[0] == (f"master0 {OLD} -> {NEW}; {OLD} goes on down_hosts "
                                    "(nothing runs there, it is not contacted)")
    assert f"  launch the registry on {NEW} [create]" in text
    assert f"  point sea.hub at {NEW} on 4 hosts: {NEW}, {M3}, {N1}, {N2} [update]" in text
    assert "  reach the cluster through another apiserver (kubernetes provider) [update]" in text
    assert "  update the records: ConfigMap kube-system/sealer-registry (update)" in text
    assert "  verify from a node: every image of the boot history via sea.hub [update]" in text
    assert f"  forget 4 resources of {OLD} in the state (down: not contacted)" in text
    assert plan.repointed == [NEW, M3, N1, N2]
    assert plan.launch_on == [NEW] and plan.data_to == []


def test_unchanged_steps_are_left_out():
    """`same` steps are not part of the plan."""
    text = render(recovery_ops(), master0=NEW, domain="sea.hub", down_hosts=[OLD]).text()
    assert "sealer-apps" not in text and "registry files" not in text


def test_post_mode_plan_copies_the_data_to_the_new_master0():
    plan = render(recovery_ops(post=True), master0=NEW, domain="sea.hub", down_hosts=[OLD])
    assert f"  copy the registry data to {NEW} [create]" in plan.text()
    assert plan.data_to == [NEW]


def test_a_delete_on_a_live_host_is_not_reported_as_forgotten():
    """Only resources of down hosts are "forgotten"; the standby step of the new master0 that
    goes away is retired (none of our steps has a delete command), and counts as no host work."""
    plan = render(recovery_ops(), master0=NEW, domain="sea.hub", down_hosts=[OLD])
    assert plan.dropped == {OLD: 4}
    assert f"  retire 1 steps no longer needed (no command runs): registry-standby-{NEW}" in plan.text()
    assert "keep the registry stopped" not in plan.text()


def test_no_changes_says_so():
    plan = render({"node-198.18.0.21": "same"}, master0=NEW, domain="sea.hub", down_hosts=[])
    assert plan.changes == 0
    assert plan.lines == ["  no changes: the hosts already match the config"]


def test_unknown_resources_are_listed_verbatim():
    plan = render({"something-else": "create"}, master0=NEW, domain="sea.hub", down_hosts=[])
    assert plan.lines == ["  something-else (create)"]


@pytest.mark.parametrize("first, second", [("create", "delete"), ("delete", "create")])
def test_a_step_that_changes_type_reads_as_a_replace_with_the_new_type(first, second):
    """The data step of a new master0 turns from a remote pull into the store push: the engine
    creates one URN and deletes the other under one name; the plan copies the data there."""
    from cli.engine import Steps
    steps = Steps()
    types = {"create": "command:local:Command", "delete": "command:remote:Command"}
    steps.record("data-198.18.0.12", types[first], first)
    steps.record("data-198.18.0.12", types[second], second)
    assert steps.ops == {"data-198.18.0.12": "replace"}
    assert steps.types == {"data-198.18.0.12": "command:local:Command"}
    plan = render(steps.ops, master0="198.18.0.12", domain="sea.hub", down_hosts=["198.18.0.11"])
    assert plan.data_to == ["198.18.0.12"]


def test_an_ha_recovery_plan_moves_no_hosts_line():
    """sealer's HA layout: the node steps update (their inputs name master0) but keep /etc/hosts
    as sealer wrote it: the plan does not say the domain moves, and no host counts as repointed."""
    ops = {f"node-{ip}": "update" for ip in (NEW, M3, N1, N2)}
    ops.update({"sealer-registry-config": "update", f"registry-launch-{OLD}": "delete"})
    plan = render(ops, master0=NEW, domain="sea.hub", down_hosts=[OLD], old_master0=OLD, ha=True)
    assert "point sea.hub" not in plan.text()
    assert (f"  check the CA trust, hosts lines left as sealer wrote them (HA), on 4 hosts: "
            f"{NEW}, {M3}, {N1}, {N2} [update]") in plan.text()
    assert plan.repointed == []
