"""A recovery that resumes runs in two phases again (issue 24; cli/change.py resume_fence_plan):
the old layout is read back from the node steps' commands in the state
(components/cluster_node.py recorded_servers)."""

from __future__ import annotations

import io

import pytest

from cli import change as change_mod
from cli.change import FENCE_SAMPLE, Change, resume_fence_plan
from cli.engine import Steps
from components.access import SshAccess
from components.cluster_node import (ClusterNodeArgs, HaproxyBundle, RecordedServers,
                                     node_script_args, recorded_servers)
from components.remote_scripts import staged_run
from config import PROJECT, build_config
from tests.unit.test_cli_status import CA_CERT, M1, M2, M3
from tests.unit.test_fence_phase import NODES, big
from topology import HostStep

ENTRY = ("127.0.0.99", 5099, 10)


def node_create(master0=M1, mirrors=(M2, M3), user="root", **kw) -> str:
    """The command ``node_step`` gives the engine for one node (the state keeps it as create)."""
    access = SshAccess(user=user, port=22, private_key=None)
    args = ClusterNodeArgs(ip=NODES[0], domain="sea.hub", port=5000, master0=master0,
                           access=access, ca_cert=kw.pop("ca_cert", CA_CERT),
                           mirrors=list(mirrors), **kw)
    staged = staged_run("configure-node.sh", *node_script_args(args), data=args.ca_cert or "")
    return access.as_root(args.ip, staged.command)


@pytest.mark.parametrize("kw, want", [
    (dict(entry=ENTRY), RecordedServers(M1, (M2, M3), True)),
    (dict(entry=ENTRY, user="admin", haproxy="bundle",
          bundle=HaproxyBundle("/x/haproxy-bundle.tar.gz", "ab" * 32)),
     RecordedServers(M1, (M2, M3), True)),
    (dict(entry=(*ENTRY[:2], 1), maps_domain=False), RecordedServers(M1, (M2, M3), True)),
    (dict(), RecordedServers(M1, (M2, M3), False)),                       # hosts lines
    (dict(ca_cert=None, mirrors=()), RecordedServers(M1, (), False)),    # insecure
])
def test_the_node_step_s_command_reads_back_as_the_servers_it_gave(kw, want):
    assert recorded_servers(node_create(**kw)) == want


@pytest.mark.parametrize("create", [
    "", "bash -s -- sea.hub 198.18.1.1 5000", "bash -c 'x' run-staged",
    "bash -c 'x' run-staged sha f --unknown y sea.hub 198.18.1.1 5000",
    "bash -c 'x' run-staged sha f --mirror", "bash -c 'x' run-staged sha f sea.hub",
    "bash -c 'unbalanced",
])
def test_any_other_command_reads_back_as_nothing(create):
    assert recorded_servers(create) is None


def state(creates: dict[str, str]) -> dict:
    """The node steps of ``creates`` and, as a real state has them, the registry hosts' node steps
    (no entry point: they map the domain to master0; a first phase moves them) and a payload step."""
    masters = {M2: node_create(master0=M2, mirrors=(M3,)), M3: node_create(master0=M2, mirrors=(M3,))}
    return {"resources": [
        {"urn": HostStep.NODE.urn("s", PROJECT, ip), "inputs": {"create": c}}
        for ip, c in {**masters, **creates}.items()] + [
        {"urn": HostStep.PAYLOAD.urn("s", PROJECT, NODES[0]), "inputs": {"source": {}}}]}


def after_recovery():
    return build_config(big(master0=M2, down=(M1,)))


def test_a_resumed_recovery_defers_the_nodes_that_still_list_the_old_master0():
    old = node_create(entry=ENTRY)
    new = node_create(master0=M2, mirrors=(M3,), entry=ENTRY)
    rewritten = set(NODES[:5])        # a cut fence phase had rewritten these
    pending = resume_fence_plan(after_recovery(), state(
        {ip: new if ip in rewritten else old for ip in NODES}))
    assert pending.hosts == frozenset(NODES) - rewritten
    assert (pending.master0, pending.mirrors) == (M1, (M2, M3))
    assert len(pending.sampled) == FENCE_SAMPLE and pending.sampled <= pending.hosts


def test_a_resumed_recovery_runs_in_one_phase_when_the_state_does_not_allow_two():
    old = node_create(entry=ENTRY)
    cfg = after_recovery()
    # every node already rewritten: nothing to defer
    assert resume_fence_plan(cfg, state({ip: node_create(master0=M2, mirrors=(M3,), entry=ENTRY)
                                         for ip in NODES})) is None
    # two old layouts (two recoveries cut in a row)
    other = node_create(master0=M3, mirrors=(M2,), entry=ENTRY)
    assert resume_fence_plan(cfg, state({NODES[0]: other, **{ip: old for ip in NODES[1:]}})) is None
    # a node whose entry point does not list the new master0 must move with the registry
    assert resume_fence_plan(cfg, state({NODES[0]: node_create(mirrors=(M3,), entry=ENTRY),
                                         **{ip: old for ip in NODES[1:]}})) is None
    # hosts-line nodes (no entry point recorded) and unreadable commands
    assert resume_fence_plan(cfg, state({ip: node_create() for ip in NODES})) is None
    assert resume_fence_plan(cfg, state({NODES[0]: "bash -s -- x", **{ip: old for ip in NODES[1:]}})) is None
    assert resume_fence_plan(cfg, None) is None


class ResumeEngine:
    def __init__(self, tmp_path, deployment):
        self.stack_file = tmp_path / "Pulumi.prod.yaml"
        self.stack_file.write_text("config: {}\n")
        self.deployment, self.deferred = deployment, None

    def set_master0(self, ip, down_hosts, had_down_hosts):
        pass

    def export(self):
        return self.deployment

    def preview(self, defer=frozenset()):
        self.deferred = defer
        return Steps(), 0.5


class ResumeSession:
    def __init__(self, engine):
        self.out, self.engine, self.stack = io.StringIO(), engine, "prod"
        self.config = after_recovery()


def test_recover_run_again_after_a_cut_previews_its_first_phase_without_the_old_layout_nodes(tmp_path):
    old = node_create(entry=ENTRY)
    session = ResumeSession(ResumeEngine(tmp_path, state({ip: old for ip in NODES})))
    result = change_mod.apply_change(
        session, Change(master0=M2, down_hosts=[M1], question="", rerun="", preview_only=True),
        change_mod.Timer(), assume_yes=True)
    assert result.outcome is change_mod.Outcome.PREVIEWED
    assert session.engine.deferred == frozenset(NODES)
    assert f"the node steps of {len(NODES)} hosts behind their node entry point" in session.out.getvalue()


def test_a_recovery_after_one_whose_fence_phase_never_ran_reads_the_nodes_layout_from_the_state(tmp_path):
    """master0 M1 -> M2 (its fence phase never ran: the nodes list M1, M2, M3), then M2 dies too:
    the nodes still list M1 first, not the M2 the config names, and M3 is their standby."""
    older = node_create(master0=M1, mirrors=(M2, M3), entry=ENTRY)
    session = ResumeSession(ResumeEngine(tmp_path, state({ip: older for ip in NODES})))
    assert session.config.master0 == M2 and session.config.down_hosts == [M1]
    seen = {}
    real = change_mod.resume_fence_plan

    def spy(config, deployment):
        seen["pending"] = real(config, deployment)
        return seen["pending"]

    change_mod.resume_fence_plan, saved = spy, change_mod.resume_fence_plan
    try:
        change_mod.apply_change(
            session, Change(master0=M3, down_hosts=[M1, M2], question="", rerun="", preview_only=True),
            change_mod.Timer(), assume_yes=True)
    finally:
        change_mod.resume_fence_plan = saved
    pending = seen["pending"]
    assert (pending.master0, pending.mirrors) == (M1, (M2, M3))
    assert session.engine.deferred == frozenset(NODES)
