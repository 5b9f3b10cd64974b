"""sealer's HA registry layout (``registry.local_registry.ha``, pkg/registry/local.go@v0.11.0:148-237):
the config rules, the plan (topology.py), what the program declares (Pulumi mocks), how `status`
judges the hosts, and the refusal of `recover` and `watch`."""

from __future__ import annotations

import argparse
import io
from contextlib import contextmanager

import pytest

import cli.recover as recover
import cli.failover as failover
from cli.common import CliError
from cli.health import assess, summary_line
from cli.probe import HostProbe
from config import build_config
from tests.unit.test_components import MASTERS, NODES, ca, declare, make_args  # noqa: F401 (fixture)
from tests.unit.test_config import DELETE, load, problems, render
from topology import HostStep, RegistryRole, Topology

M1, M2, M3 = "198.18.0.11", "198.18.0.12", "198.18.0.13"
N1, N2 = "198.18.0.21", "198.18.0.22"
NO_STORE = {"apps__image_store": DELETE, "apps__cluster_image_id": DELETE}


def ha_values(**overrides) -> dict:
    """The test base config with ha: true, no image store and deploy_hosts left to default."""
    values = render(**NO_STORE, registry__local_registry__deploy_hosts=DELETE, **overrides)
    values["registry"]["local_registry"]["ha"] = True
    return values


def ha_layout(**overrides) -> Topology:
    values = dict(master0=M1, masters=[M1, M2, M3], nodes=[N1, N2], deploy_hosts=[M1, M2, M3],
                  down_hosts=[], distribution="pre", image_ids=[], ha=True)
    values.update(overrides)
    return Topology.build(**values)


# ------------------------------------------------------------------------------ config


def test_ha_defaults_to_false_and_master0_only():
    config = load(render())
    assert config.registry.local_registry.ha is False and not config.ha


def test_ha_deploy_hosts_default_to_every_master():
    config = load(ha_values())
    assert config.ha and config.deploy_hosts == [M1, M2, M3]


def test_ha_accepts_deploy_hosts_that_are_masters():
    values = ha_values()
    values["registry"]["local_registry"]["deploy_hosts"] = [M1, M3]
    assert load(values).deploy_hosts == [M1, M3]


def test_ha_refuses_a_node_as_deploy_host_naming_it():
    values = ha_values()
    values["registry"]["local_registry"]["deploy_hosts"] = [M1, N1]
    found = problems(values)
    assert any(p.startswith("error: registry.local_registry.deploy_hosts[1]: 198.18.0.21 is not a master")
               for p in found), found


def test_ha_refuses_warm_standby_naming_both_fields():
    values = ha_values()
    values["registry"]["local_registry"]["standby"] = "warm"
    found = problems(values)
    assert any(p.startswith("error: registry.local_registry.standby: warm cannot be combined with "
                            "registry.local_registry.ha: true") for p in found), found


def test_ha_refuses_an_image_store_naming_it():
    values = render(registry__local_registry__deploy_hosts=DELETE)
    values["registry"]["local_registry"]["ha"] = True
    found = problems(values)
    assert any(p.startswith("error: apps.image_store: is not supported with "
                            "registry.local_registry.ha: true") for p in found), found


@pytest.mark.parametrize("bad", ["yes", 1, "true", None])
def test_ha_takes_only_a_boolean(bad):
    values = ha_values()
    values["registry"]["local_registry"]["ha"] = bad
    assert any(p.startswith("error: registry.local_registry.ha:") for p in problems(values))


def test_ha_rules_are_reported_with_other_errors_in_one_pass():
    """A config that is invalid elsewhere still gets the HA refusals (one validate run)."""
    values = ha_values(cluster__name="")
    values["registry"]["local_registry"]["standby"] = "warm"
    found = problems(values)
    assert any(p.startswith("error: cluster.name:") for p in found), found
    assert any(p.startswith("error: registry.local_registry.standby: warm cannot") for p in found), found


# ------------------------------------------------------------------------------ plan


def test_ha_every_deploy_host_launches_read_write_and_nothing_is_read_only():
    t = ha_layout()
    assert [(h.ip, h.role, h.read_only) for h in t.hosts] == [
        (M1, RegistryRole.LAUNCH, False), (M2, RegistryRole.LAUNCH, False),
        (M3, RegistryRole.LAUNCH, False), (N1, RegistryRole.NONE, False),
        (N2, RegistryRole.NONE, False)]
    assert t.registries == [M1, M2, M3] and t.mirrors == []


def test_ha_masters_have_a_data_step_pulling_from_every_other_live_master():
    """Each master pulls what the other live masters hold (the union); never from a down one."""
    t = ha_layout()
    for ip in (M1, M2, M3):
        host = t.host(ip)
        assert host.holds_data and host.copies_data
        assert host.steps() == [HostStep.PAYLOAD.of(ip), HostStep.NODE.of(ip), HostStep.DEPLOY.of(ip),
                                HostStep.ROOTFS.of(ip), HostStep.DATA.of(ip), HostStep.LAUNCH.of(ip)]
        assert t.data_sources(ip) == [m for m in (M1, M2, M3) if m != ip]
    down = ha_layout(down_hosts=[M2])
    assert down.data_sources(M1) == [M3] and down.data_sources(M3) == [M1]


def test_ha_maps_no_hosts_line_and_non_ha_maps_master0():
    assert all(h.hosts_entry(M1) is None for h in ha_layout().hosts)
    plain = ha_layout(ha=False, deploy_hosts=[M1, M2])
    assert all(h.hosts_entry(M1) == M1 for h in plain.hosts)


def test_ha_down_master_gets_nothing_and_is_not_verified():
    t = ha_layout(down_hosts=[M2])
    assert t.host(M2).steps() == [] and t.registries == [M1, M3]


def test_ha_plan_of_a_config():
    t = Topology.of(load(ha_values()))
    assert t.ha and t.registries == [M1, M2, M3]
    assert not Topology.of(load(render())).ha


# ------------------------------------------------------------------------------ program


def ha_args(ca, **overrides):
    return make_args(ca, deploy_hosts=MASTERS, ha=True, store=None, images=[], **overrides)


def test_ha_program_launches_every_master_with_a_data_step_and_no_standby_step(ca):
    names = set(declare(ha_args(ca)).by_name())
    for ip in MASTERS:
        assert {f"registry-launch-{ip}", f"rootfs-{ip}", f"node-{ip}", f"data-{ip}"} <= names
        assert f"registry-standby-{ip}" not in names
    for ip in NODES:
        assert f"node-{ip}" in names and f"rootfs-{ip}" not in names


def test_ha_launches_use_the_same_read_write_payload_and_sealer_s_contract(ca):
    by_name = declare(ha_args(ca)).by_name()
    creates = {by_name[f"registry-launch-{ip}"].inputs["create"] for ip in MASTERS}
    assert len(creates) == 1  # same rootfs, port, domain, fingerprint on every master
    stdins = {by_name[f"rootfs-{ip}"].inputs["stdin"] for ip in MASTERS}
    assert len(stdins) == 1
    assert "init-registry.sh" in by_name[f"registry-launch-{MASTERS[1]}"].inputs["stdin"]


def test_ha_nodes_keep_their_hosts_line_and_non_ha_nodes_do_not(ca):
    ha = declare(ha_args(ca)).by_name()
    for ip in MASTERS + NODES:
        assert " --keep-hosts " in ha[f"node-{ip}"].inputs["create"]
    plain = declare(make_args(ca)).by_name()
    for ip in MASTERS + NODES:
        assert "--keep-hosts" not in plain[f"node-{ip}"].inputs["create"]


def test_ha_nodes_wait_for_every_master_s_registry(ca, monkeypatch):
    import components.cluster_registry as cr

    seen = {}
    real = cr.node_step

    def spy(args, opts=None):
        seen[args.ip] = len(args.after)
        return real(args, opts=opts)
    monkeypatch.setattr(cr, "node_step", spy)
    declare(ha_args(ca))
    assert seen == {ip: len(MASTERS) for ip in MASTERS + NODES}
    seen.clear()
    declare(make_args(ca))
    assert set(seen.values()) == {1}  # non-HA: master0's launch only


def test_ha_verification_checks_each_master_by_name_and_not_the_master0_mapping(ca):
    create = declare(ha_args(ca)).by_name()["registry-verify"].inputs["create"]
    each = " ".join(f"--registry {ip}" for ip in MASTERS)
    assert create == f"bash -s -- {each} sea.hub 5000 https admin -", create
    plain = declare(make_args(ca)).by_name()["registry-verify"].inputs["create"]
    assert "--registry" not in plain and f" admin {MASTERS[0]} " in plain


def test_ha_records_say_ha_in_sealer_s_keys_and_ours(ca):
    """The `registry` value keeps sealer's shape (`local.localregistry.ha`, `local.deployhosts`:
    what `adopt` reads to decide the mode) next to the program's summary."""
    import yaml

    ha = yaml.safe_load(declare(ha_args(ca)).by_name()["sealer-registry-config"]
                        .inputs["data"]["registry"])
    assert ha["ha"] is True and ha["local"]["localregistry"]["ha"] is True
    assert ha["local"]["deployhosts"] == MASTERS and "vip" not in ha["local"]
    plain = yaml.safe_load(declare(make_args(ca)).by_name()["sealer-registry-config"]
                           .inputs["data"]["registry"])
    assert "ha" not in plain and plain["local"]["localregistry"]["ha"] is False
    assert plain["local"]["deployhosts"] == [MASTERS[0]] and plain["local"]["vip"] == ""


# ------------------------------------------------------------------------------ status


def ha_config(down=()):
    values = ha_values(down_hosts=list(down))
    values["cluster"]["ssh"] = {"private_key_path": "/nonexistent/id"}
    values["kubernetes"] = {"kubeconfig_path": "/nonexistent"}
    return build_config(values)


def ha_probes() -> dict[str, HostProbe]:
    """sealer's HA cluster, healthy: every master runs read-write and maps the domain to
    itself; nodes map it to the VIP."""
    union = {"source": "union", "completed_at": 1, "files": 3, "bytes": 9, "tree": "a" * 64}
    probes = {ip: HostProbe(ip=ip, reachable=True, registry="running", registry_mode="read-write",
                            resolves=ip, ca="ok", containerd="certs.d", replica=dict(union))
              for ip in (M1, M2, M3)}
    for ip in (N1, N2):
        probes[ip] = HostProbe(ip=ip, reachable=True, registry="stopped", resolves="10.103.97.2",
                               ca="ok", containerd="certs.d")
    return probes


def test_status_of_a_healthy_ha_cluster_has_no_problem_and_shows_every_registry():
    config = ha_config()
    result = assess(config, [], ha_probes())
    assert result.problems == []
    rows = {row[0]: row for row in result.rows()}
    assert [rows[ip][4] for ip in (M1, M2, M3)] == ["running"] * 3
    assert [rows[ip][3] for ip in (M1, M2, M3)] == ["launch"] * 3
    assert "HA, 3 of 3 live masters' registries run" in summary_line(config, result, 0.1)


def test_status_of_ha_reports_a_master_without_registry_and_a_wrong_mapping():
    probes = ha_probes()
    probes[M2].registry, probes[M2].registry_mode = "stopped", ""
    probes[M3].resolves = M1
    probes[N1].resolves = ""
    found = assess(ha_config(), [], probes).problems
    assert any(p.startswith(f"{M2} (master, HA) runs no registry") for p in found), found
    assert any(p.startswith(f"{M3}: sea.hub points to {M1}, not to this master's own") for p in found), found
    assert any(p.startswith(f"{N1}: sea.hub points to nothing") for p in found), found
    assert len(found) == 3


def test_status_of_ha_wants_the_union_stamp_on_every_master():
    """Every HA master has a data step (the union): one without `.sealer-replica` has not
    completed it."""
    probes = ha_probes()
    probes[M2].replica = None
    found = assess(ha_config(), [], probes).problems
    assert [p for p in found if p.startswith(f"{M2} holds no complete replica stamp")], found


# ------------------------------------------------------------------------------ completeness

ID_A, ID_B, ID_C = ("a" * 64, "b" * 64, "c" * 64)
TREE = {"digest": "d" * 64, "files": 10, "bytes": 1000}


def test_status_of_ha_names_what_each_master_lacks_of_the_live_masters_union():
    """sealer's scale-up copies only the cluster image to a new master; a push through the VIP
    lands on one: each master is judged against the union of the live masters' flags and the
    tree of the master holding the most files. The table's LACKS column and --json say it."""
    probes = ha_probes()
    for ip in (M1, M2, M3):
        probes[ip].flags, probes[ip].tree = [ID_A, ID_B], dict(TREE)
    probes[M3].flags = [ID_A]
    probes[M3].tree = {"digest": "e" * 64, "files": 7, "bytes": 700}
    result = assess(ha_config(), [], probes)
    assert len(result.problems) == 1, result.problems
    assert result.problems[0].startswith(f"{M3} (master, HA) lacks images {ID_B} (on {M1}, {M2})")
    rows = {row[0]: row for row in result.rows()}
    assert [rows[ip][-2] for ip in (M1, M2, M3)] == ["none", "none", "1 image"]
    lag = next(h for h in result.hosts if h.ip == M3).as_json()["lacking"]
    assert lag == {"ids": [ID_B], "behind": True, "reference": lag["reference"]} and M1 in lag["reference"]
    assert "1 of 3 live masters' registries" not in summary_line(ha_config(), result, 0.1)
    assert "2 of 3 hold every image the others hold" in summary_line(ha_config(), result, 0.1)


def test_status_of_ha_a_tree_that_differs_with_the_same_flags_is_behind():
    probes = ha_probes()
    for ip in (M1, M2, M3):
        probes[ip].flags, probes[ip].tree = [ID_A], dict(TREE)
    probes[M2].tree = {"digest": "e" * 64, "files": 9, "bytes": 900}
    result = assess(ha_config(), [], probes)
    assert [p.split(" ")[0] for p in result.problems] == [M2], result.problems
    assert "no image flag to name" in result.problems[0]
    assert {row[0]: row[-2] for row in result.rows()}[M2] == "tree"


def test_status_of_ha_a_down_master_is_not_part_of_the_union():
    probes = ha_probes()
    for ip in (M1, M2):
        probes[ip].flags, probes[ip].tree = [ID_A], dict(TREE)
    probes[M3] = HostProbe(M3, reachable=False, error="timed out")
    assert assess(ha_config(down=[M3]), [], probes).healthy


# ------------------------------------------------------------------------------ recover, watch


def ha_session(probes: dict[str, HostProbe], outputs: dict | None = None, down=(M1,)):
    """A session of an HA stack whose hosts answer with ``probes`` (the old master0 M1 never)."""
    import types

    config = ha_config()
    calls = []

    def probe_hosts(access, ips, command, timeout):
        calls.extend(ips)
        assert M1 not in ips, "the old master0 was dialled"
        return {ip: probes[ip] for ip in ips}

    return types.SimpleNamespace(config=config, images=[], ssh=lambda: None, calls=calls,
                                 engine=types.SimpleNamespace(outputs=lambda *k: dict(outputs or {}))), probe_hosts


@pytest.fixture
def ha_recover(monkeypatch):
    def make(probes, outputs=None):
        session, probe_hosts = ha_session(probes, outputs)
        monkeypatch.setattr(recover, "probe_hosts", probe_hosts)
        monkeypatch.setattr(recover, "preflight_probe", lambda s, host: probes[host])
        monkeypatch.setattr(recover.apiserver, "check",
                            lambda s, down, master0: argparse.Namespace(endpoint=f"https://{master0}:6443"))
        return session
    return make


def flagged(flags, ip) -> HostProbe:
    return HostProbe(ip, reachable=True, registry="running", flags=list(flags), tree=dict(TREE),
                     disk_avail=1 << 30)


def test_recover_preflight_on_an_ha_stack_takes_the_master_s_own_data(ha_recover):
    """HA: no store, no stamps; the new master0 serves its own data and lacks nothing the other
    live masters hold; the old master0 is never probed."""
    session = ha_recover({M2: flagged([ID_A], M2), M3: flagged([ID_A], M3)})
    checked = recover.preflight(session, M2, [M1])
    assert checked["data_source"].startswith(f"{M2}'s own registry data (HA")
    assert checked["lacking"]["ids"] == [] and checked["lacking"]["outputs"] is False
    assert session.calls == [M3]


def test_recover_on_ha_refuses_a_master_lacking_what_another_live_master_holds(ha_recover,
                                                                             monkeypatch):
    """Without the program's union copy between masters (Topology.data_sources [] in HA), the
    ids another live master holds and the candidate lacks refuse it, named."""
    monkeypatch.setattr(Topology, "data_sources", lambda self, ip: [])
    session = ha_recover({M2: flagged([ID_A], M2), M3: flagged([ID_A, ID_B], M3)})
    with pytest.raises(CliError) as info:
        recover.preflight(session, M2, [M1])
    assert info.value.code == 2
    assert f"{M2} lacks images {ID_B} (held by {M3})" in info.value.message
    assert info.value.detail["lacking"]["unfilled"] == [ID_B]


def test_recover_on_ha_takes_a_lacking_master_when_up_copies_the_live_masters_union(ha_recover,
                                                                                    monkeypatch):
    """With the union copy (each master's data step pulls from the other live masters), the ids
    a live master holds are filled by the recovery's `up`: not a refusal, and said so."""
    monkeypatch.setattr(Topology, "data_sources", lambda self, ip: [M3])
    session = ha_recover({M2: flagged([ID_A], M2), M3: flagged([ID_A, ID_B], M3)})
    lacking = recover.preflight(session, M2, [M1])["lacking"]
    assert (lacking["ids"], lacking["unfilled"]) == ([ID_B], [])
    assert lacking["filled_by"] == "the union copy between the live masters"


def test_recover_on_ha_refuses_ids_only_the_last_up_recorded(ha_recover):
    """An id of the stack output data_images that no live master holds (it was on the dead
    master0 only) cannot be filled by any copy between live masters."""
    session = ha_recover({M2: flagged([ID_A], M2), M3: flagged([ID_A], M3)},
                         {"data_images": [ID_A, ID_C], "data_tree": "f" * 64})
    with pytest.raises(CliError, match=rf"{M2} lacks images {ID_C} \(synced by the last `up`\)"):
        recover.preflight(session, M2, [M1])


def test_rank_ha_candidates_follows_sealer_s_clusterfile_order():
    """The first live master of sealer's Clusterfile (not the stack's order) is first; the old
    master0, down hosts and masters that are not deploy hosts are rejected with the reason;
    without sealer's order the stack's masters order is used."""
    ranked, rejected = failover.rank_ha_candidates(
        sealer_masters=[M1, M3, M2], masters=[M1, M2, M3], deploy_hosts=[M1, M2, M3], down=[],
        old_master0=M1)
    assert ranked == [M3, M2] and rejected == {M1: "the old master0 (fenced)"}
    ranked, rejected = failover.rank_ha_candidates(
        sealer_masters=None, masters=[M1, M2, M3], deploy_hosts=[M1, M2], down=[M2],
        old_master0=M1)
    assert ranked == [] and rejected == {M1: "the old master0 (fenced)", M2: "on down_hosts",
                                         M3: "not a deploy host"}
    ranked, _ = failover.rank_ha_candidates(
        sealer_masters=[M3, "198.18.0.99"], masters=[M1, M2, M3], deploy_hosts=[M1, M2, M3],
        down=[], old_master0=M3)
    assert ranked == [M1, M2]


def test_ha_program_is_the_same_on_a_second_run(ca):
    """A second `up` changes nothing: every input of every step is the same from one run to the
    next (the material is derived, the payload a reproducible tar)."""
    first, second = declare(ha_args(ca)).by_name(), declare(ha_args(ca)).by_name()
    assert set(first) == set(second)
    assert [n for n in first if first[n].inputs != second[n].inputs] == []
