"""topology.py: who launches, stands by, holds data, is down, and every step's name."""

from __future__ import annotations

import pytest

from config import build_config
from topology import (HostStep, Place, RegistryRole, Topology, image_hex, parse_step)

M1, M2, M3 = "198.18.0.11", "198.18.0.12", "198.18.0.13"
N1, N2 = "198.18.0.21", "198.18.0.22"
CLUSTER_IMG, APP_IMG = "sha256:" + "c" * 64, "sha256:" + "a" * 64


def layout(**overrides) -> Topology:
    """3 masters, 2 nodes, M1 and M2 deploy hosts, pre mode; ``overrides`` replace single values."""
    values = dict(master0=M1, masters=[M1, M2, M3], nodes=[N1, N2], deploy_hosts=[M1, M2],
                  down_hosts=[], distribution="pre", image_ids=[CLUSTER_IMG, APP_IMG])
    values.update(overrides)
    return Topology.build(**values)


def test_master0_launches_other_deploy_hosts_stand_by_the_rest_have_no_role():
    t = layout()
    assert [(h.ip, h.role) for h in t.hosts] == [
        (M1, RegistryRole.LAUNCH), (M2, RegistryRole.STANDBY), (M3, RegistryRole.NONE),
        (N1, RegistryRole.NONE), (N2, RegistryRole.NONE)]


def test_place_names_master0_masters_and_nodes():
    assert [h.place for h in layout(master0=M2).hosts] == [
        Place.MASTER, Place.MASTER0, Place.MASTER, Place.NODE, Place.NODE]


def test_pre_mode_every_deploy_host_holds_every_image_cluster_image_first():
    t = layout()
    assert {h.ip: h.images for h in t.hosts if h.holds_data} == {
        M1: (CLUSTER_IMG, APP_IMG), M2: (CLUSTER_IMG, APP_IMG)}


def test_post_mode_only_master0_holds_data():
    t = layout(distribution="post")
    assert [h.ip for h in t.hosts if h.holds_data] == [M1]
    assert t.host(M2).images == ()


def test_duplicate_image_ids_are_held_once():
    t = layout(image_ids=[CLUSTER_IMG, APP_IMG, APP_IMG])
    assert t.host(M1).images == (CLUSTER_IMG, APP_IMG)


def test_down_hosts_are_listed_but_get_no_steps():
    """A down host keeps its place and role (status shows it) but nothing is declared on it."""
    t = layout(master0=M2, down_hosts=[M1])
    old = t.host(M1)
    assert old.down and old.role is RegistryRole.STANDBY and old.steps() == []
    assert M1 not in [h.ip for h in t.live] and t.down_hosts == [M1]
    assert not any(name.endswith(M1) for name in t.resource_names())


def test_moving_master0_moves_the_launch_and_the_data_in_post_mode():
    """The plans of two master0 values: the new master0 launches and (post) gets the data."""
    before, after = layout(distribution="post"), layout(distribution="post", master0=M2, down_hosts=[M1])
    assert before.host(M2).steps() == [f"payload-{M2}", f"node-{M2}", f"deploy-{M2}", f"rootfs-{M2}",
                                       f"registry-standby-{M2}"]
    assert after.host(M2).steps() == [f"payload-{M2}", f"node-{M2}", f"deploy-{M2}", f"rootfs-{M2}",
                                      f"data-{M2}", f"registry-launch-{M2}"]


def test_a_host_without_role_gets_only_its_node_step_and_its_payload():
    assert layout().host(N1).steps() == [f"payload-{N1}", f"node-{N1}"]


def test_verifier_is_the_first_live_node_other_than_master0():
    assert layout().verifier == N1
    assert layout(down_hosts=[N1]).verifier == N2


def test_verifier_falls_back_to_a_master_then_to_master0():
    assert layout(nodes=[]).verifier == M2
    assert layout(masters=[M1], nodes=[], deploy_hosts=[M1]).verifier == M1


def test_resource_names_hold_the_fixed_steps_and_every_live_host_s():
    names = layout(nodes=[N1]).resource_names()
    assert {"sealer-registry", "records", "k8s", "sealer-registry-config",
            "sealer-registry-secret", "sealer-apps", "registry-verify"} <= names
    assert {f"{step}-{ip}" for ip in (M1, M2, M3, N1) for step in ("node", "payload")} <= names
    assert len(names) == 7 + 2 * 4 + 2 * 4  # fixed, node and payload steps, two deploy hosts x 4 steps


def test_host_of_an_unknown_ip_is_refused():
    with pytest.raises(KeyError, match="198.18.0.99 is not a host"):
        layout().host("198.18.0.99")


@pytest.mark.parametrize("step", list(HostStep))
def test_parse_step_reads_back_every_host_step_name(step):
    assert parse_step(step.of(M2)) == (step, M2)


@pytest.mark.parametrize("name", ["registry-verify", "sealer-registry-config", "node-not-an-ip",
                                  "nodes-198.18.0.12", "registry-198.18.0.12", "node-198.18.0.12-x",
                                  "198.18.0.12"])
def test_parse_step_rejects_other_names(name):
    assert parse_step(name) is None


def test_image_hex_is_the_store_directory_name():
    assert image_hex(CLUSTER_IMG) == "c" * 64


def test_of_a_validated_config_uses_its_hosts_roles_and_images():
    """From a StackConfig: deploy_hosts default to master0 alone, the cluster image comes first."""
    config = build_config({
        "master0": M2, "down_hosts": [M1], "distribution": "post",
        "cluster": {"name": "lab", "masters": [M1, M2], "nodes": [N1],
                    "ssh": {"private_key_path": "/nonexistent/id"}},
        "registry": {"local_registry": {"insecure_mode": True}},
        "apps": {"history": {"type": "boot", "applications": [
            {"name": "app0", "image_id": APP_IMG, "type": "kube"}]},
            "image_store": {"registry": "store.example.com", "images": {
                CLUSTER_IMG: ["sealer/cluster-base:v1@sha256:" + "0c" * 32],
                APP_IMG: ["library/app0:v1@sha256:" + "0a" * 32]}},
            "cluster_image_id": CLUSTER_IMG},
        "kubernetes": {"kubeconfig_path": "/nonexistent"},
    })
    t = Topology.of(config)
    assert t.master0 == M2 and t.distribution == "post" and t.deploy_hosts == (M2,)
    assert [(h.ip, h.role, h.down) for h in t.hosts] == [
        (M1, RegistryRole.NONE, True), (M2, RegistryRole.LAUNCH, False), (N1, RegistryRole.NONE, False)]
    assert t.host(M2).images == (CLUSTER_IMG, APP_IMG)


ENTRY = object()  # node_entry configured (only its presence matters here)


def warm(**overrides) -> Topology:
    return layout(**{"deploy_hosts": [M1, M2, M3], "standby": "warm", **overrides})


def test_a_recovery_onto_a_warm_standby_defers_the_entry_hosts_node_steps_to_the_fence():
    before, after = warm(), warm(master0=M2, down_hosts=[M1])
    assert before.mirrors == [M2, M3]
    assert after.deferrable_to_fence(before, ENTRY) == [N1, N2]


@pytest.mark.parametrize("before, after, entry", [
    (warm(), warm(master0=M2, down_hosts=[M1]), None),                     # no entry point
    (warm(), warm(), ENTRY),                                               # master0 stays
    (layout(), layout(master0=M2, down_hosts=[M1]), ENTRY),                # cold: not a backup
    (warm(down_hosts=[M2]), warm(master0=M2, down_hosts=[M1]), ENTRY),     # M2 was down
    (warm(ha=True), warm(master0=M2, down_hosts=[M1], ha=True), ENTRY),    # lvscare's VIP
])
def test_nothing_is_deferred_where_nodes_must_move_with_the_recovery(before, after, entry):
    assert after.deferrable_to_fence(before, entry) == []


def test_node_side_steps_are_the_ones_that_point_a_host_at_the_registry():
    assert {s.value for s in HostStep.node_side()} == {"payload", "node", "haproxy-bundle"}
