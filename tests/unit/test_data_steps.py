"""The data steps' shape (Pulumi mocks): which host each runs on, where it copies from, that no
secret reaches a command line, and what a change of master0 plans for them."""

from __future__ import annotations

import base64
from dataclasses import replace

import pulumi
import pytest

from components.access import SshAccess
from components.cluster_registry import ClusterRegistry
from config import Distribution
from tests.unit.pulumi_mocks import RecordingMocks
from tests.unit.test_components import MASTERS, PASSWORD, ROOTFS, SSH_KEY, KUBECONFIG, make_args
from topology import Topology

REMOTE, LOCAL = "command:remote:Command", "command:local:Command"
HOST_PASSWORD = "host-pw with spaces"


@pytest.fixture(scope="module")
def ca():
    from material import pki
    return pki.generate_ca()


def no_store(ca, **overrides):
    """An adopted stack: no image store, the data is the cluster's own."""
    args = make_args(ca, **overrides)
    layout = args.topology
    plain = Topology.build(master0=layout.master0, masters=MASTERS, nodes=[h.ip for h in layout.hosts
                                                                           if h.ip not in MASTERS],
                           deploy_hosts=layout.deploy_hosts, down_hosts=layout.down_hosts,
                           distribution=layout.distribution, image_ids=[])
    return replace(args, topology=plain, image_store="", images=[])


def declare(args, passwords=None):
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="sealer-registry", stack="unit", preview=False)
    holder = {}

    @pulumi.runtime.test
    def run():
        access = SshAccess(user="root", port=22, private_key=pulumi.Output.secret(SSH_KEY),
                           passwords={ip: pulumi.Output.secret(p) for ip, p in (passwords or {}).items()},
                           host_keys={MASTERS[0]: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyOfMaster0"})
        full = replace(args, access=access, password=pulumi.Output.secret(PASSWORD),
                       kubeconfig=pulumi.Output.secret(KUBECONFIG))
        holder["registry"] = ClusterRegistry("sealer-registry", full)
        return holder["registry"].verify.id

    run()
    return mocks, holder["registry"]


def test_a_replica_pulls_from_master0_on_its_own_host_after_master0_s_data(ca):
    """Pre mode: the replica's data step runs on the replica (its SSH connection), pulls from
    master0 with master0's host key, and waits for master0's own data step."""
    mocks, registry = declare(make_args(ca, deploy_hosts=MASTERS))
    steps = mocks.by_name()
    for replica in MASTERS[1:]:
        step = steps[f"data-{replica}"]
        assert step.typ == REMOTE and step.inputs["connection"]["host"] == replica
        assert step.inputs["create"].startswith(f"bash -s -- --replica {ROOTFS} --generation ")
        assert step.inputs["create"].endswith(f" --source {MASTERS[0]} 22 root "
                                              "'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyOfMaster0'")
        assert registry.deploy_hosts[replica].data_after == [registry.deploy_hosts[MASTERS[0]].data]
    assert registry.deploy_hosts[MASTERS[0]].data_after == []


def test_a_new_image_in_the_store_makes_the_replicas_pull_again(ca):
    """master0's data changes with the store's images; the replica's step input changes too."""
    args = make_args(ca)
    fewer = replace(args, topology=Topology.build(
        master0=MASTERS[0], masters=MASTERS, nodes=[h.ip for h in args.topology.hosts if h.ip not in MASTERS],
        deploy_hosts=MASTERS[:2], down_hosts=[], distribution="pre",
        image_ids=[args.images[0].image_id]), images=args.images[:1])
    one, two = (declare(a)[0].by_name()[f"data-{MASTERS[1]}"].inputs["create"] for a in (fewer, args))
    assert one != two and "--generation" in one


def test_master0_with_an_image_store_is_filled_from_it_and_stamped_self(ca):
    step = declare(make_args(ca))[0].by_name()[f"data-{MASTERS[0]}"]
    assert step.typ == LOCAL
    assert "--stamp-self" in step.inputs["create"].split()


def test_without_image_store_master0_keeps_its_data_or_pulls_from_the_other_deploy_hosts(ca):
    """Adopted (no store): master0's step runs on master0, candidates in deploy_hosts order."""
    args = no_store(ca, deploy_hosts=[MASTERS[0], MASTERS[2], MASTERS[1]])
    step = declare(args)[0].by_name()[f"data-{MASTERS[0]}"]
    assert step.typ == REMOTE and step.inputs["connection"]["host"] == MASTERS[0]
    create = step.inputs["create"]
    assert create.startswith(f"bash -s -- --master0 {ROOTFS} --source {MASTERS[2]} 22 root - "
                             f"--source {MASTERS[1]} 22 root -")


def test_the_secret_goes_on_stdin_only_and_the_step_is_quiet(ca):
    """The cluster key and a source's own password reach the pull only on its (secret) stdin, as
    base64 lines; the step logs nothing and keeps its output secret."""
    args = no_store(ca, deploy_hosts=MASTERS)
    mocks, _ = declare(args, passwords={MASTERS[0]: HOST_PASSWORD})
    step = mocks.by_name()[f"data-{MASTERS[1]}"]
    for secret in (SSH_KEY, HOST_PASSWORD, base64.b64encode(HOST_PASSWORD.encode()).decode()):
        assert secret not in step.inputs["create"]
    stdin = step.inputs["stdin"]
    assert "stdin" in step.secret_paths
    assert f"\nkey {base64.b64encode(SSH_KEY.encode()).decode()}\n" in stdin
    assert stdin.endswith(f"password {MASTERS[0]} {base64.b64encode(HOST_PASSWORD.encode()).decode()}\n")
    assert step.inputs["logging"] == "none"


def test_moving_master0_repoints_the_pulls_and_never_names_the_old_master0(ca):
    """No store, pre mode: master0 moves from MASTERS[0] (down) to MASTERS[1]. The new master0's
    data step is updated in place (same type) to keep its replica; the other replica's step now
    pulls from the new master0; no data step names or dials the old master0."""
    before = declare(no_store(ca, deploy_hosts=MASTERS))[0].by_name()
    after = declare(no_store(ca, deploy_hosts=MASTERS, master0=MASTERS[1],
                             down_hosts=[MASTERS[0]]))[0].by_name()
    assert f"data-{MASTERS[0]}" not in after
    new = after[f"data-{MASTERS[1]}"]
    assert new.typ == before[f"data-{MASTERS[1]}"].typ == REMOTE
    assert new.inputs["create"].startswith(f"bash -s -- --master0 {ROOTFS} --source {MASTERS[2]} ")
    other = after[f"data-{MASTERS[2]}"]
    assert other.inputs["create"].startswith(f"bash -s -- --replica {ROOTFS} --source {MASTERS[1]} ")
    for step in (new, other):
        assert step.inputs["connection"]["host"] != MASTERS[0]
        assert MASTERS[0] not in step.inputs["create"] and MASTERS[0] not in step.inputs["stdin"]
        assert not step.inputs.get("delete")


def test_post_mode_recovery_copies_from_the_live_deploy_hosts_only(ca):
    args = no_store(ca, deploy_hosts=MASTERS, master0=MASTERS[2], down_hosts=[MASTERS[0]],
                    distribution=Distribution.POST)
    steps = declare(args)[0].by_name()
    assert [n for n in steps if n.startswith("data-")] == [f"data-{MASTERS[2]}"]
    assert steps[f"data-{MASTERS[2]}"].inputs["create"] == (
        f"bash -s -- --master0 {ROOTFS} --source {MASTERS[1]} 22 root -")


def test_pull_sources_and_credentials_per_host():
    """A source's own user, port and host key; its password if it has one, else the key."""
    access = SshAccess(user="root", port=22, private_key="KEY", hosts={"10.0.0.2": ("ops", 2222)},
                       passwords={"10.0.0.3": "pw"}, host_keys={"10.0.0.2": "ssh-ed25519 AAAA"})
    assert access.pull_sources(["10.0.0.2", "10.0.0.3"]) == [
        "--source", "10.0.0.2", "2222", "ops", "ssh-ed25519 AAAA",
        "--source", "10.0.0.3", "22", "root", "-"]
    assert Topology.build(master0="10.0.0.1", masters=["10.0.0.1", "10.0.0.2"], nodes=["10.0.0.3"],
                          deploy_hosts=["10.0.0.1", "10.0.0.3", "10.0.0.2"], down_hosts=["10.0.0.2"],
                          distribution="pre", image_ids=[]).data_sources("10.0.0.1") == ["10.0.0.3"]
