"""sealer's HA registry layout (``registry.local_registry.ha``, pkg/registry/local.go@v0.11.0:148-237):
the config rules, the plan (topology.py), what the program declares (Pulumi mocks), how `status`
judges the hosts, and the refusal of `recover` and `watch`."""

from __future__ import annotations

import argparse
import io
from contextlib import contextmanager

import pytest

import cli.recover as recover
import cli.watch as watch
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


def test_ha_hosts_have_no_data_step_and_no_data_source():
    """Each master serves sealer's data; no replication between masters (the seam)."""
    t = ha_layout()
    for ip in (M1, M2, M3):
        host = t.host(ip)
        assert host.holds_data and not host.copies_data
        assert host.steps() == [HostStep.NODE.of(ip), HostStep.DEPLOY.of(ip),
                                HostStep.ROOTFS.of(ip), HostStep.LAUNCH.of(ip)]
        assert t.data_sources(ip) == []


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


def test_ha_program_launches_every_master_and_declares_no_data_or_standby_step(ca):
    names = set(declare(ha_args(ca)).by_name())
    for ip in MASTERS:
        assert {f"registry-launch-{ip}", f"rootfs-{ip}", f"node-{ip}"} <= names
        assert not {f"data-{ip}", f"registry-standby-{ip}"} & names
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
    probes = {ip: HostProbe(ip=ip, reachable=True, registry="running", registry_mode="read-write",
                            resolves=ip, ca="ok", containerd="certs.d") for ip in (M1, M2, M3)}
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


def test_status_of_ha_needs_no_replica_stamp():
    """No data step in HA: a master without `.sealer-replica` is fine."""
    assert all(p.replica is None for p in ha_probes().values())
    assert assess(ha_config(), [], ha_probes()).healthy


# ------------------------------------------------------------------------------ recover, watch


def test_refuse_ha_refuses_an_ha_stack_and_passes_another():
    with pytest.raises(CliError) as info:
        recover.refuse_ha(ha_config(), "recover")
    assert info.value.code == 2
    assert "registry.local_registry.ha: true" in str(info.value) and "pulls continue" in str(info.value)
    recover.refuse_ha(load(render()), "recover")


class FakeSession:
    """A Session whose config is an HA stack and which fails the test when anything is dialled."""

    def __init__(self, *_args, **_kwargs):
        self.config = ha_config()
        self.out = io.StringIO()
        self.stack = "ha"

    def __getattr__(self, name):
        raise AssertionError(f"the refusal touched session.{name}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@contextmanager
def fake_sessions(monkeypatch):
    monkeypatch.setattr(recover, "Session", FakeSession)
    monkeypatch.setattr(watch, "Session", FakeSession)
    yield


def test_recover_on_an_ha_stack_exits_2_touching_nothing(monkeypatch, capsys):
    with fake_sessions(monkeypatch):
        code = recover.run(argparse.Namespace(host=M2, stack="ha", preview=False, yes=True,
                                              json=False, target="master0"))
    assert code == 2
    assert "sealer's HA registry layout" in capsys.readouterr().err


def test_watch_on_an_ha_stack_exits_2_touching_nothing(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    with fake_sessions(monkeypatch):
        code = watch.run(argparse.Namespace(
            stack="ha", window=6.0, interval=1.0, hold_down=300.0, min_probers=2, probers=3,
            log=None, json=False))
    assert code == 2
    assert "sealer's HA registry layout" in capsys.readouterr().err


def test_ha_program_is_the_same_on_a_second_run(ca):
    """A second `up` changes nothing: every input of every step is the same from one run to the
    next (the material is derived, the payload a reproducible tar)."""
    first, second = declare(ha_args(ca)).by_name(), declare(ha_args(ca)).by_name()
    assert set(first) == set(second)
    assert [n for n in first if first[n].inputs != second[n].inputs] == []
