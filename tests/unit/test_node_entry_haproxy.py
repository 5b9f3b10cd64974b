"""node_entry's HAProxy (issue 21, air-gapped hosts): the `haproxy` mode and `bundle` fields
(accepted and refused, naming the field and the value), which bundle the program ships
(cli/haproxy_bundle.shipped_bundle), and the steps it declares: a ``haproxy-bundle-<ip>`` copy per
entry node before its node step, whose command names the staged tarball and its sha256; the
tarball's bytes never in a step's stdin (Pulumi mocks)."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import pytest

from cli.haproxy_bundle import shipped_bundle
from components.cluster_node import HaproxyBundle
from components.remote_scripts import script_body
from config.errors import ConfigError
from tests.unit.test_components import MASTERS, NODES, declare, make_args
from tests.unit.pulumi_mocks import staged
from tests.unit.test_config import load, problems, render
from material import pki

ENTRY = ("10.103.97.2", 5099)
WARM = dict(standby="warm", deploy_hosts=MASTERS)
NAME = "haproxy-2.6.12-1+deb12u4-amd64.tar.gz"
FIELD = "registry.local_registry.node_entry"


@pytest.fixture(scope="module")
def ca():
    return pki.generate_ca()


def entry_values(**entry):
    values = render()
    values["registry"]["local_registry"].update(standby="warm",
                                                node_entry={"address": "10.103.97.2", **entry})
    return values


# ----------------------------------------------------------------------------- config


def test_haproxy_defaults_to_auto_and_bundle_to_unset():
    entry = load(entry_values()).registry.local_registry.node_entry
    assert str(entry.haproxy) == "auto" and entry.bundle is None


@pytest.mark.parametrize("mode", ["auto", "system", "bundle"])
def test_each_haproxy_mode_is_accepted(mode):
    assert str(load(entry_values(haproxy=mode)).registry.local_registry.node_entry.haproxy) == mode


@pytest.mark.parametrize("path", [NAME, f"/srv/bundles/{NAME}", f"~/b/haproxy-3.0.5-1~bpo12+1-amd64.tar.gz"])
def test_a_bundle_path_with_the_builder_s_name_is_accepted(path):
    assert load(entry_values(bundle=path)).registry.local_registry.node_entry.bundle == path


@pytest.mark.parametrize("bad", ["docker", "AUTO", "", "distro"])
def test_an_unknown_haproxy_mode_is_refused_naming_field_and_value(bad):
    lines = problems(entry_values(haproxy=bad))
    assert any(line.startswith(f"error: {FIELD}.haproxy: '{bad}' is not one of") and "'auto'" in line
               for line in lines), lines


@pytest.mark.parametrize("bad", [True, 1])
def test_a_haproxy_mode_of_another_type_is_refused(bad):
    assert any(line.startswith(f"error: {FIELD}.haproxy: ") for line in problems(entry_values(haproxy=bad)))


@pytest.mark.parametrize("bad", ["haproxy.tar.gz", "/tmp/haproxy-2.6.12-arm64.tar.gz",
                                 "haproxy_2.6.12-1+deb12u4_amd64.deb", "haproxy-1:2.6-amd64.tar.gz"])
def test_a_bundle_of_another_name_is_refused_naming_field_and_value(bad):
    lines = problems(entry_values(bundle=bad))
    assert any(line.startswith(f"error: {FIELD}.bundle: {bad!r} is not a bundle of `make haproxy-bundle`")
               for line in lines), lines


@pytest.mark.parametrize("bad", ["", "a\nb"])
def test_an_empty_or_control_character_bundle_path_is_refused(bad):
    assert any(line.startswith(f"error: {FIELD}.bundle: ") for line in problems(entry_values(bundle=bad)))


def test_a_bundle_with_haproxy_system_is_refused():
    lines = problems(entry_values(haproxy="system", bundle=NAME))
    assert any(line.startswith(f"error: {FIELD}.bundle: is not used with haproxy: system")
               and NAME in line for line in lines), lines


def test_a_bundle_that_cannot_be_read_is_refused_when_files_are_checked(tmp_path):
    """As `cli validate` and the program check the other local files (config/loader.py)."""
    lines = problems(entry_values(bundle=f"missing/{NAME}"), base_dir=tmp_path, check_files=True)
    assert any(line.startswith(f"error: {FIELD}.bundle: cannot read missing/{NAME}") for line in lines), lines
    (tmp_path / NAME).write_bytes(b"tar")
    from config.loader import local_file_problems

    assert not [p for p in local_file_problems(entry_values(bundle=NAME), tmp_path) if p[0] == f"{FIELD}.bundle"]


# ----------------------------------------------------------------- which bundle is shipped


def entry(haproxy="auto", bundle=None):
    return SimpleNamespace(haproxy=haproxy, bundle=bundle)


def test_system_and_no_node_entry_ship_nothing(tmp_path):
    assert shipped_bundle(None, tmp_path) is None
    assert shipped_bundle(entry("system"), tmp_path) is None


@pytest.mark.parametrize("mode", ["auto", "bundle"])
def test_auto_and_bundle_ship_the_one_make_haproxy_bundle_wrote(tmp_path, mode):
    (tmp_path / NAME).write_bytes(b"bundle bytes")
    (tmp_path / "haproxy_2.6.12-1+deb12u4_amd64.deb").write_bytes(b"the .deb is not a bundle")
    path, sha = shipped_bundle(entry(mode), tmp_path)
    assert path == tmp_path / NAME and sha == hashlib.sha256(b"bundle bytes").hexdigest()


def test_node_entry_bundle_wins_over_the_cache(tmp_path):
    (tmp_path / NAME).write_bytes(b"cached")
    mine = tmp_path / "mine" / "haproxy-2.6.12-1+deb12u5-amd64.tar.gz"
    mine.parent.mkdir()
    mine.write_bytes(b"mine")
    assert shipped_bundle(entry(bundle=str(mine)), tmp_path)[0] == mine


def test_no_bundle_built_is_an_error_naming_the_field_and_the_make_target(tmp_path):
    with pytest.raises(ConfigError) as info:
        shipped_bundle(entry("auto"), tmp_path)
    line = info.value.lines()[0]
    assert line.startswith(f"error: {FIELD}.bundle: is not set and {tmp_path} holds no bundle")
    assert "make haproxy-bundle" in line and "node_entry.haproxy: system" in line


def test_two_bundles_in_the_cache_are_an_error_not_a_guess(tmp_path):
    for name in (NAME, "haproxy-2.6.12-1+deb12u5-amd64.tar.gz"):
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(ConfigError) as info:
        shipped_bundle(entry("bundle"), tmp_path)
    assert info.value.lines()[0].startswith(f"error: {FIELD}.bundle: 2 bundles in {tmp_path}")


# ----------------------------------------------------------------------------- steps


@pytest.fixture
def bundle(tmp_path):
    path = tmp_path / NAME
    path.write_bytes(b"\x1f\x8b stand-in bundle " * 1000)
    return HaproxyBundle(str(path), hashlib.sha256(path.read_bytes()).hexdigest())


def test_auto_copies_the_bundle_to_every_entry_node_and_names_it_in_the_node_step(ca, bundle):
    """auto: one copy per host that runs the entry point (not the registry hosts), to
    /var/tmp/<tarball>, from the file on the operator's machine; the node step names the staged
    file and its sha256 (an edited bundle reruns it) and no --haproxy (auto is the script's
    default); the node step's stdin is the script and the CA only."""
    declared = declare(make_args(ca, **WARM, node_entry=ENTRY, haproxy_bundle=bundle)).by_name()
    copies = {n: r for n, r in declared.items() if n.startswith("haproxy-bundle-")}
    assert set(copies) == {f"haproxy-bundle-{ip}" for ip in NODES}
    for ip in NODES:
        copy = copies[f"haproxy-bundle-{ip}"]
        assert copy.typ == "command:remote:CopyToRemote"
        assert copy.inputs["remotePath"] == f"/var/tmp/{NAME}"
        assert copy.inputs["source"].path == bundle.path
        node = declared[f"node-{ip}"].inputs
        assert staged(node["create"]).bash_s == (
            f"bash -s -- --entry 10.103.97.2 --entry-stats-port 5099 --haproxy-bundle "
            f"/var/tmp/{NAME} {bundle.sha256} --mirror {MASTERS[1]} --mirror {MASTERS[2]} "
            f"sea.hub {MASTERS[0]} 5000")
        assert staged(node["create"]).payload.startswith(script_body("configure-node.sh"))
        assert "stand-in bundle" not in staged(node["create"]).payload
    for ip in MASTERS:
        assert "--haproxy" not in declared[f"node-{ip}"].inputs["create"]


def test_bundle_mode_says_so_to_the_node(ca, bundle):
    declared = declare(make_args(ca, **WARM, node_entry=ENTRY, entry_haproxy="bundle",
                                 haproxy_bundle=bundle)).by_name()
    assert (f"--entry-stats-port 5099 --haproxy bundle --haproxy-bundle /var/tmp/{NAME} {bundle.sha256} "
            in declared[f"node-{NODES[0]}"].inputs["create"])
    assert f"haproxy-bundle-{NODES[0]}" in declared


def test_system_mode_ships_nothing(ca, bundle):
    declared = declare(make_args(ca, **WARM, node_entry=ENTRY, entry_haproxy="system",
                                 haproxy_bundle=bundle)).by_name()
    assert not [n for n in declared if n.startswith("haproxy-bundle-")]
    create = declared[f"node-{NODES[0]}"].inputs["create"]
    assert "--haproxy system " in create and "--haproxy-bundle" not in create


def test_without_node_entry_no_bundle_is_copied(ca, bundle):
    declared = declare(make_args(ca, **WARM, haproxy_bundle=bundle)).by_name()
    assert not [n for n in declared if n.startswith("haproxy-bundle-")]


def test_the_cli_names_the_node_side_steps_urns_as_the_engine_does(ca, bundle):
    """cli's fence phase excludes node-side steps by URN without running the program
    (topology.HostStep.urn): the URNs the SDK registers for them (its mock monitor builds them
    as the engine does: parent type chain, type, name)."""
    from pulumi.runtime import settings

    from config import PROJECT
    from topology import HostStep

    declare(make_args(ca, **WARM, node_entry=ENTRY, haproxy_bundle=bundle))
    registered = set(settings.get_monitor().resources)
    for ip in NODES:
        for step in HostStep.node_side():
            assert step.urn("unit", PROJECT, ip) in registered, (step, sorted(registered)[:5])
    with pytest.raises(ValueError):
        HostStep.DATA.urn("unit", PROJECT, NODES[0])


def test_hosts_left_for_the_fence_phase_get_no_node_side_step(ca, bundle):
    """A recovery's first phase (FENCE_LATER_ENV): the program declares nothing on those hosts
    (the engine's --exclude keeps their steps in the state), everything else as always."""
    later = frozenset({NODES[0]})
    declared = declare(make_args(ca, **WARM, node_entry=ENTRY, haproxy_bundle=bundle,
                                 fence_later=later)).by_name()
    for step in ("node", "payload", "haproxy-bundle"):
        assert f"{step}-{NODES[0]}" not in declared
        assert f"{step}-{NODES[1]}" in declared
    assert "registry-verify" in declared and f"node-{MASTERS[0]}" in declared


def test_the_check_interval_defaults_to_one_second_and_is_bounded():
    assert load(entry_values()).registry.local_registry.node_entry.check_interval_s == 1
    assert load(entry_values(check_interval_s=10)).registry.local_registry.node_entry.check_interval_s == 10
    for bad in (0, 61, "5", 2.5):
        lines = problems(entry_values(check_interval_s=bad))
        assert any(f"{FIELD}.check_interval_s" in line for line in lines), (bad, lines)


def test_a_longer_check_interval_reaches_the_node_and_the_default_adds_nothing(ca):
    longer = declare(make_args(ca, **WARM, node_entry=(*ENTRY, 10), entry_haproxy="system")).by_name()
    assert "--entry-stats-port 5099 --entry-check-interval 10 " in longer[f"node-{NODES[0]}"].inputs["create"]
    default = declare(make_args(ca, **WARM, node_entry=(*ENTRY, 1), entry_haproxy="system")).by_name()
    assert "--entry-check-interval" not in default[f"node-{NODES[0]}"].inputs["create"]


def test_haproxy_checks_at_the_interval_the_node_step_names(tmp_path):
    """entry_render's `inter`: configure-node.sh --entry-check-interval sets it (bash, no host)."""
    import subprocess
    from pathlib import Path

    scripts = Path(__file__).resolve().parents[2] / "scripts"
    render = (f'source {scripts}/lib/common.sh; source {scripts}/lib/entry.sh; '
              'ENTRY_CHECK_INTERVAL=${1:-1}; entry_render sea.hub 5000 10.103.97.2 5099 /ca.crt '
              '198.18.0.11 198.18.0.12')
    for interval in ("", "7"):
        out = subprocess.run(["bash", "-c", render, "render", *([interval] if interval else [])],
                             capture_output=True, text=True, check=True).stdout
        assert f"inter {interval or 1}s fall 2 rise 2" in out
        assert (" fastinter 1s" in out) == bool(interval)
        assert "downinter" not in out   # a DOWN server is checked at the interval


def test_an_entry_node_starts_its_haproxy_after_every_server_it_lists(ca):
    """An entry node's step waits for master0's launch and both warm standbys' registry steps
    (HAProxy started earlier checks a starting standby every second: at 500 nodes a TLS storm on
    it); a registry host's step (no entry point) waits for the launch only."""
    from tests.unit.test_data_steps import declare as declare_recorded

    mocks, _ = declare_recorded(make_args(ca, **WARM, node_entry=ENTRY))
    waits = mocks.depends_on
    for ip in NODES:
        assert {f"registry-launch-{MASTERS[0]}", f"registry-standby-{MASTERS[1]}",
                f"registry-standby-{MASTERS[2]}"} <= waits[f"node-{ip}"], waits[f"node-{ip}"]
    for ip in MASTERS:
        assert not {n for n in waits[f"node-{ip}"] if n.startswith("registry-standby-")}
    plain, _ = declare_recorded(make_args(ca, **WARM))
    for ip in NODES:
        assert not {n for n in plain.depends_on[f"node-{ip}"] if n.startswith("registry-standby-")}
