"""The program's data plan from the probe of the live hosts' trees (components/data_probe.py),
under Pulumi mocks: which hosts are probed (live ones only, never with a secret on the command
line), how the data steps are keyed (master0's generation without HA, the union digest with HA),
what a second run with the same trees declares (the same inputs), and the outputs."""

from __future__ import annotations

import base64
from dataclasses import replace

import pulumi
import pytest

from components.data_probe import HostTree, ProbeError, parse, tree_digest, union_lines

from components.access import SshAccess
from components.cluster_registry import ClusterRegistry
from config import PROJECT
from tests.unit.pulumi_mocks import RecordingMocks, probe_stdout
from tests.unit.test_components import (KUBECONFIG, MASTERS, PASSWORD, SSH_KEY, ca,  # noqa: F401
                                        make_args, with_logins)
from tests.unit.test_data_steps import record_dependencies

RUN = "command:local:run"
LINES = {
    MASTERS[0]: ["blobs/sha256/aa/" + "a" * 64 + "/data 10", "repositories/x/_layers/l 71"],
    MASTERS[1]: ["blobs/sha256/bb/" + "b" * 64 + "/data 20", "repositories/x/_layers/l 71"],
    MASTERS[2]: ["blobs/sha256/aa/" + "a" * 64 + "/data 10"],
}
IDS = {MASTERS[0]: ["1" * 64], MASTERS[1]: ["2" * 64, "1" * 64], MASTERS[2]: []}


def run_program(args, trees=None, ids=None, passwords=None):
    """Declares the program against mocks whose probe reports ``trees``/``ids``; returns
    (mocks, outputs of the ClusterRegistry: data_tree, data_images)."""
    mocks = RecordingMocks(trees=dict(trees or {}), ids=dict(ids or {}))
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack="unit", preview=False)
    mocks.depends_on = record_dependencies()
    got = {}

    @pulumi.runtime.test
    def run():
        access = SshAccess(user="root", port=22, private_key=pulumi.Output.secret(SSH_KEY),
                           passwords={ip: pulumi.Output.secret(p) for ip, p in (passwords or {}).items()})
        full = replace(with_logins(args), access=access,
                       password=pulumi.Output.secret(PASSWORD) if args.username else None,
                       kubeconfig=pulumi.Output.secret(KUBECONFIG))
        registry = ClusterRegistry("sealer-registry", full)
        if registry.data_tree is None:
            return registry.verify.id
        return pulumi.Output.all(registry.data_tree, registry.data_images).apply(
            lambda v: got.update(tree=v[0], images=v[1]))

    run()
    return mocks, got


def ha_args(ca, **kw):  # noqa: F811
    return make_args(ca, deploy_hosts=MASTERS, ha=True, store=None, images=[], **kw)


def probes(mocks) -> list:
    return [c for c in mocks.calls if c.token == RUN]


# ------------------------------------------------------------------------------ parsing


def test_parse_reads_every_host_and_the_union_is_tree_list_s_order():
    ips = MASTERS
    stdout = probe_stdout(" ".join(f"--host {ip} 22 root" for ip in ips) + " --lists", LINES, IDS)
    hosts = parse(stdout, ips)
    assert hosts[MASTERS[1]].ids == tuple(sorted(IDS[MASTERS[1]]))
    assert hosts[MASTERS[0]].tree == tree_digest(LINES[MASTERS[0]])
    union = union_lines(list(hosts.values()))
    assert union == sorted({line for v in LINES.values() for line in v}, key=str.encode)
    assert len(union) == 3


def test_parse_names_each_host_that_did_not_answer_and_says_down_hosts():
    stdout = (probe_stdout(f"--host {MASTERS[0]} 22 root", LINES, IDS)
              + f"\nunreachable {MASTERS[1]} ssh: connect to host: Connection timed out")
    with pytest.raises(ProbeError) as err:
        parse(stdout, MASTERS)
    text = str(err.value)
    assert f"{MASTERS[1]} (ssh: connect to host: Connection timed out)" in text
    assert f"{MASTERS[2]} (no answer)" in text and "down_hosts" in text
    assert f"{MASTERS[0]} (" not in text


@pytest.mark.parametrize("stamp,generation,expected", [
    ("t" * 64, "g1", "g1"),     # the stamped tree holds: the generation the last step ran with
    ("s" * 64, "g1", "t" * 64),  # changed behind the program's back: the tree
    (None, None, "t" * 64),      # never synced: the tree
    ("t" * 64, None, "t" * 64),  # stamped by a step that recorded no generation
])
def test_data_generation(stamp, generation, expected):
    assert HostTree("ip", "t" * 64, stamp, generation, 1, ()).data_generation == expected


# ------------------------------------------------------------------------------ non-HA


def test_non_ha_probes_master0_only_and_keys_every_data_step_with_its_tree(ca):  # noqa: F811
    args = make_args(ca, deploy_hosts=MASTERS, store=None, images=[])
    mocks, got = run_program(args, LINES, IDS)
    calls = probes(mocks)
    assert len(calls) == 1
    command = calls[0].args["command"]
    assert f"--host {MASTERS[0]} 22 root --key-stdin" in command and "--lists" not in command
    assert MASTERS[1] not in command and MASTERS[2] not in command
    tree = tree_digest(LINES[MASTERS[0]])
    steps = mocks.by_name()
    for ip in MASTERS:
        assert f"--data-generation {tree} " in steps[f"data-{ip}"].inputs["create"], ip
    assert got == {"tree": tree, "images": IDS[MASTERS[0]]}


def test_non_ha_unchanged_tree_declares_the_same_steps_and_a_changed_one_only_the_data(ca):  # noqa: F811
    args = make_args(ca, deploy_hosts=MASTERS, store=None, images=[])
    first = run_program(args, LINES, IDS)[0].by_name()
    same = run_program(args, LINES, IDS)[0].by_name()
    assert [n for n in first if first[n].inputs != same[n].inputs] == []
    grown = {**LINES, MASTERS[0]: [*LINES[MASTERS[0]], "repositories/new/_layers/l 71"]}
    changed = run_program(args, grown, IDS)[0].by_name()
    assert sorted(n for n in first if first[n].inputs != changed[n].inputs) == \
        sorted(f"data-{ip}" for ip in MASTERS)


def test_the_probe_gets_no_secret_on_its_command_line_and_the_password_on_stdin(ca):  # noqa: F811
    host_password = "M0-only pw"
    args = make_args(ca, deploy_hosts=MASTERS, store=None, images=[])
    mocks, _ = run_program(args, LINES, IDS, passwords={MASTERS[0]: host_password})
    call = probes(mocks)[0]
    command, stdin = call.args["command"], call.args["stdin"]
    for secret in (SSH_KEY, host_password, base64.b64encode(host_password.encode()).decode(),
                   base64.b64encode(SSH_KEY.encode()).decode()):
        assert secret not in command
    assert "--password-stdin" in command
    assert stdin.endswith(f"ssh {MASTERS[0]} {base64.b64encode(host_password.encode()).decode()}\n")
    # the invoke logs only the script's stderr (host names and counts), never its stdin
    assert call.args["logging"] == "stderr" and call.args["addPreviousOutputInEnv"] is False


def test_a_down_master0_is_never_probed_and_the_new_master0_is(ca):  # noqa: F811
    args = make_args(ca, deploy_hosts=MASTERS, master0=MASTERS[1], down_hosts=[MASTERS[0]],
                     store=None, images=[])
    mocks, _ = run_program(args, LINES, IDS)
    (call,) = probes(mocks)
    assert MASTERS[0] not in call.args["command"] and MASTERS[0] not in call.args["stdin"]
    assert f"--host {MASTERS[1]} " in call.args["command"]


# ------------------------------------------------------------------------------ HA


def test_ha_probes_every_live_master_with_lists_and_keys_steps_with_the_union(ca):  # noqa: F811
    mocks, got = run_program(ha_args(ca), LINES, IDS)
    (call,) = probes(mocks)
    command = call.args["command"]
    assert "--lists" in command and all(f"--host {ip} " in command for ip in MASTERS)
    union = tree_digest(sorted({line for v in LINES.values() for line in v}, key=str.encode))
    steps = mocks.by_name()
    for ip in MASTERS:
        create = steps[f"data-{ip}"].inputs["create"]
        assert create.startswith(f"bash -s -- --union /var/lib/sealer/data/lab/rootfs "
                                 f"--data-generation {union} "), create
        others = [m for m in MASTERS if m != ip]
        assert [w for w in create.split() if w in MASTERS] == others
        assert SSH_KEY not in create and base64.b64encode(SSH_KEY.encode()).decode() not in create
        assert "stdin" in steps[f"data-{ip}"].secret_paths
    assert got == {"tree": union, "images": sorted({i for v in IDS.values() for i in v})}


def test_ha_data_steps_run_side_by_side_and_the_launch_waits_for_its_own(ca):  # noqa: F811
    mocks, _ = run_program(ha_args(ca), LINES, IDS)
    deps = mocks.depends_on
    for ip in MASTERS:
        assert not [d for d in deps.get(f"data-{ip}", []) if d.startswith("data-")], ip
        assert f"data-{ip}" in deps[f"registry-launch-{ip}"], ip
        assert f"data-{ip}" in deps["registry-verify"]


def test_ha_down_master_is_neither_probed_nor_a_source(ca):  # noqa: F811
    mocks, _ = run_program(ha_args(ca, down_hosts=[MASTERS[2]]), LINES, IDS)
    (call,) = probes(mocks)
    assert MASTERS[2] not in call.args["command"] and MASTERS[2] not in call.args["stdin"]
    steps = mocks.by_name()
    assert f"data-{MASTERS[2]}" not in steps
    for ip in MASTERS[:2]:
        assert MASTERS[2] not in steps[f"data-{ip}"].inputs["create"]


def test_ha_same_union_same_plan_whatever_master_held_what(ca):  # noqa: F811
    """After an up every master holds the union: the next probe gives the same union digest,
    so no step's inputs change."""
    before = run_program(ha_args(ca), LINES, IDS)[0].by_name()
    union = sorted({line for v in LINES.values() for line in v}, key=str.encode)
    after = run_program(ha_args(ca), {ip: union for ip in MASTERS}, IDS)[0].by_name()
    assert [n for n in before if before[n].inputs != after[n].inputs] == []
