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
from tests.unit.pulumi_mocks import EMPTY_TREE, RecordingMocks
from components.deploy_host import StoreSource
from tests.unit.test_components import (IMAGES, KUBECONFIG, MASTERS, PASSWORD, ROOTFS, SSH_KEY, STORE, STORE_CA,
                                        STORE_LOGIN, make_args, store_source, with_logins)
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
    return replace(args, topology=plain, store=None, images=[])


def declare(args, passwords=None):
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="sealer-registry", stack="unit", preview=False)
    holder = {}
    mocks.depends_on = record_dependencies()

    @pulumi.runtime.test
    def run():
        access = SshAccess(user="root", port=22, private_key=pulumi.Output.secret(SSH_KEY),
                           passwords={ip: pulumi.Output.secret(p) for ip, p in (passwords or {}).items()},
                           host_keys={MASTERS[0]: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyOfMaster0"})
        full = replace(with_logins(args), access=access, password=pulumi.Output.secret(PASSWORD),
                       kubeconfig=pulumi.Output.secret(KUBECONFIG))
        holder["registry"] = ClusterRegistry("sealer-registry", full)
        return holder["registry"].verify.id

    run()
    return mocks, holder["registry"]


def record_dependencies() -> dict[str, set[str]]:
    """Name -> names of the resources it waits for, as the mock monitor is asked to register
    them (the mocks themselves see no dependencies)."""
    monitor = pulumi.runtime.settings.get_monitor()
    register, depends_on = monitor.RegisterResource, {}

    def recording(request):
        depends_on[request.name] = {urn.rsplit("::", 1)[-1] for urn in request.dependencies}
        return register(request)

    monitor.RegisterResource = recording
    return depends_on


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
        image_ids=[args.images[0].image_id]), images=args.images[:1],
        store=replace(args.store, refs=tuple(str(r) for r in args.images[0].refs)))
    one, two = (declare(a)[0].by_name()[f"data-{MASTERS[1]}"].inputs["create"] for a in (fewer, args))
    assert one != two and "--generation" in one


def test_master0_with_an_image_store_is_filled_from_it_through_its_launched_registry(ca):
    """With a store, master0's data step runs on this machine (local command): fill-from-store.sh
    reaches master0 over SSH (key on stdin), the store at its address, master0's registry at the
    registry port, and copies every pinned ref in order. It runs after master0's registry launch
    (it copies into the running registry); the replicas' pulls and the verification wait for it."""
    mocks, registry = declare(make_args(ca, deploy_hosts=MASTERS))
    steps, depends_on = mocks.by_name(), mocks.depends_on
    fill = steps[f"data-{MASTERS[0]}"]
    assert fill.typ == LOCAL
    refs = [str(ref) for img in IMAGES for ref in img.refs]
    assert fill.inputs["create"] == " ".join([
        "bash -s -- --key-stdin --host-key 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyOfMaster0'",
        "--dest-tls verify", "--data-generation", EMPTY_TREE, f"root@{MASTERS[0]}", "22", ROOTFS,
        STORE, "5000", *refs])
    assert fill.inputs["stdin"].startswith("SCRIPT_NAME=fill-from-store.sh\n")
    assert f"registry-launch-{MASTERS[0]}" in depends_on[f"data-{MASTERS[0]}"]
    for replica in MASTERS[1:]:
        assert f"data-{MASTERS[0]}" in depends_on[f"data-{replica}"]
        assert registry.deploy_hosts[replica].data_after == [registry.deploy_hosts[MASTERS[0]].data]
    assert {f"data-{ip}" for ip in MASTERS} <= depends_on["registry-verify"]
    assert f"data-{MASTERS[0]}" not in depends_on[f"registry-launch-{MASTERS[0]}"]


def test_the_fill_step_gets_every_secret_on_its_secret_stdin_only(ca):
    """The SSH key, the store's login and master0's registry login reach the fill only as base64
    lines of its secret stdin; its command line holds none of them; with the cluster's TLS, the
    cluster's CA (dest-ca) and the store's CA (store-ca) come the same way."""
    args = make_args(ca)
    fill = declare(args)[0].by_name()[f"data-{MASTERS[0]}"]
    stdin = fill.inputs["stdin"]
    assert "stdin" in fill.secret_paths
    lines = stdin[stdin.index("\nssh "):].split("\n")[1:-1]
    assert lines == [f"ssh {b64(SSH_KEY)}", f"store-auth {b64(STORE_LOGIN)}", f"dest-auth {b64('admin:' + PASSWORD)}",
                     f"store-ca {b64(STORE_CA)}", f"dest-ca {b64(args.material.ca_cert)}"]
    for secret in (SSH_KEY, STORE_LOGIN, STORE_LOGIN.split(":")[1], PASSWORD, b64(STORE_LOGIN)):
        assert secret not in fill.inputs["create"]
    assert STORE_LOGIN.split(":")[1] not in stdin and PASSWORD not in stdin


def test_a_host_password_replaces_the_key_of_the_fill(ca):
    """master0 reached with its own password: --password-stdin, the password is the ssh line."""
    fill = declare(make_args(ca), passwords={MASTERS[0]: HOST_PASSWORD})[0].by_name()[f"data-{MASTERS[0]}"]
    assert fill.inputs["create"].startswith("bash -s -- --password-stdin --host-key 'ssh-ed25519 ")
    assert f"\nssh {b64(HOST_PASSWORD)}\n" in fill.inputs["stdin"]
    assert HOST_PASSWORD not in fill.inputs["create"] and SSH_KEY not in fill.inputs["stdin"]


def test_in_post_mode_only_master0_is_filled_and_the_verification_waits_for_it(ca):
    mocks, _ = declare(make_args(ca, deploy_hosts=MASTERS, distribution=Distribution.POST))
    assert [n for n in mocks.by_name() if n.startswith("data-")] == [f"data-{MASTERS[0]}"]
    assert mocks.by_name()[f"data-{MASTERS[0]}"].typ == LOCAL
    assert f"data-{MASTERS[0]}" in mocks.depends_on["registry-verify"]


# -- StoreSource: what the fill step is given ------------------------------------------------


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def stdin_of(store: StoreSource, ssh_secret) -> tuple[str, bool]:
    """The plain text of ``store.stdin(ssh_secret)`` and whether it is secret (in a Pulumi run)."""
    out = {}

    @pulumi.runtime.test
    def run():
        stdin = store.stdin(ssh_secret() if callable(ssh_secret) else ssh_secret)

        def keep(values):
            out["text"], out["secret"] = values[0], values[1]
        return pulumi.Output.all(stdin, pulumi.Output.from_input(stdin).is_secret()).apply(keep)

    pulumi.runtime.set_mocks(RecordingMocks(), project="sealer-registry", stack="unit", preview=False)
    run()
    return out["text"], out["secret"]


def test_store_stdin_is_name_and_base64_lines_of_what_is_given_and_secret():
    store = StoreSource(registry=STORE, refs=("a:v1@sha256:" + "0" * 64,), ca_pem=STORE_CA,
                        login=STORE_LOGIN, registry_login="admin:" + PASSWORD, registry_ca="CLUSTER CA\n")
    text, secret = stdin_of(store, lambda: pulumi.Output.secret(SSH_KEY))
    assert secret
    assert text == (f"ssh {b64(SSH_KEY)}\nstore-auth {b64(STORE_LOGIN)}\ndest-auth {b64('admin:' + PASSWORD)}\n"
                    f"store-ca {b64(STORE_CA)}\ndest-ca {b64('CLUSTER CA' + chr(10))}\n")
    for line in text.splitlines():
        name, value = line.split(" ")
        assert name in {"ssh", "store-auth", "dest-auth", "store-ca", "dest-ca"} and base64.b64decode(value, validate=True)
    for plain in (SSH_KEY.strip(), STORE_LOGIN, STORE_LOGIN.split(":")[1], PASSWORD, "CLUSTER CA"):
        assert plain not in text


def test_store_stdin_without_logins_or_cas_has_only_the_ssh_line_and_is_still_secret():
    """Anonymous store, system trust, insecure master0 registry: nothing but the SSH secret, which
    is made secret even when given as plain text."""
    text, secret = stdin_of(StoreSource(registry=STORE, refs=()), "plain-ssh-password")
    assert (text, secret) == (f"ssh {b64('plain-ssh-password')}\n", True)


def test_store_generation_follows_the_refs_only():
    """The replicas pull again when master0's refs change, not when a login or CA does."""
    one = store_source()
    assert one.generation == store_source().generation == replace(one, ca_pem=None, login="x:y").generation
    assert len(one.generation) == 16
    assert store_source(IMAGES[:1]).generation != one.generation
    assert replace(one, refs=tuple(reversed(one.refs))).generation != one.generation


def test_without_image_store_master0_keeps_its_data_or_pulls_from_the_other_deploy_hosts(ca):
    """Adopted (no store): master0's step runs on master0, candidates in deploy_hosts order."""
    args = no_store(ca, deploy_hosts=[MASTERS[0], MASTERS[2], MASTERS[1]])
    step = declare(args)[0].by_name()[f"data-{MASTERS[0]}"]
    assert step.typ == REMOTE and step.inputs["connection"]["host"] == MASTERS[0]
    create = step.inputs["create"]
    assert create.startswith(f"bash -s -- --master0 {ROOTFS} --data-generation {EMPTY_TREE} --source {MASTERS[2]} 22 root - "
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
    assert new.inputs["create"].startswith(
        f"bash -s -- --master0 {ROOTFS} --data-generation {EMPTY_TREE} --source {MASTERS[2]} ")
    other = after[f"data-{MASTERS[2]}"]
    assert other.inputs["create"].startswith(
        f"bash -s -- --replica {ROOTFS} --data-generation {EMPTY_TREE} --source {MASTERS[1]} ")
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
        f"bash -s -- --master0 {ROOTFS} --data-generation {EMPTY_TREE} --source {MASTERS[1]} 22 root -")


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
