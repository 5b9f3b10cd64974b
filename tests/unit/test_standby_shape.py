"""Warm standby (``registry.local_registry.standby: warm``): which payload and which registry
step each deploy host gets, how a move of master0 flips the roles, what nodes' containerd is told,
and the config rules (Pulumi mocks; the config models)."""

from __future__ import annotations

import base64
import io
import subprocess
import tarfile
import tomllib

import pytest
import yaml

from components.remote_scripts import SCRIPTS_DIR, script_body
from material.registry_config import (DRAIN_TIMEOUT, is_read_only, read_only_registry_yml,
                                      render_registry_yml)
from tests.unit.test_components import MASTERS, NODES, ROOTFS, declare, make_args
from tests.unit.pulumi_mocks import staged
from tests.unit.test_config import load, problems, render
from topology import Topology
from material import pki

WARM = dict(standby="warm", deploy_hosts=MASTERS)


@pytest.fixture(scope="module")
def ca():
    return pki.generate_ca()


def rootfs_config(declared, ip: str) -> str:
    """etc/registry_config.yml as the rootfs step of ``ip`` writes it (the tar after the script)."""
    stdin = declared[f"rootfs-{ip}"].inputs["stdin"]
    body = script_body("write-rootfs.sh")
    assert stdin.startswith(body)
    tar = tarfile.open(fileobj=io.BytesIO(base64.b64decode(stdin[len(body):])))
    files = {m.name: tar.extractfile(m).read().decode() for m in tar.getmembers()}
    assert "etc/registry.yml" not in files
    return files["etc/registry_config.yml"]


def registry_command(declared, step: str) -> tuple[str, str]:
    """(the command line, the script it runs) of a registry step."""
    inputs = declared[step].inputs
    for script in ("launch-registry.sh", "standby-registry.sh"):
        if inputs["stdin"] == script_body(script):
            return inputs["create"], script
    raise AssertionError(f"{step} runs an unknown script")


# ----------------------------------------------------------------------------- config


def test_read_only_config_turns_on_distribution_s_read_only_mode_and_keeps_the_rest():
    ours = render_registry_yml(domain="sea.hub", port=5000, tls=True, auth=True)
    ro = read_only_registry_yml(ours)
    assert not is_read_only(ours) and is_read_only(ro)
    assert "maintenance:\n    readonly:\n      enabled: true\n" in ro
    gate = "  file:\n  - file: /var/lib/registry/.sealer-stale\n    interval: 1s\n"
    assert gate in ro
    assert ro.replace("  maintenance:\n    readonly:\n      enabled: true\n", "").replace(gate, "") == ours
    assert "  draintimeout: 10s\n" in ours  # master0's own drains too: nothing to add
    brought = "version: 0.1\nstorage:\n  filesystem: {rootdirectory: /var/lib/registry}\n  maintenance:\n    uploadpurging: {enabled: false}\n"
    kept = read_only_registry_yml(brought)
    assert is_read_only(kept) and "uploadpurging" in kept
    with pytest.raises(ValueError):
        read_only_registry_yml("- a list\n")


def test_read_only_config_gates_on_the_stale_marker_once_in_the_volume_the_registry_sees():
    """distribution answers 503 everywhere while the file check fails: the marker's path is the
    data volume's mount point in sealer's container (/var/lib/registry), whatever the brought
    config's rootdirectory; a brought health.file list keeps its checks, and a second pass adds
    no second gate."""
    brought = ("version: 0.1\nstorage:\n  filesystem: {rootdirectory: /srv/elsewhere}\n"
               "health:\n  file:\n  - {file: /tmp/drain, interval: 5s}\n")
    doc = yaml.safe_load(read_only_registry_yml(read_only_registry_yml(brought)))
    assert doc["health"]["file"] == [{"file": "/tmp/drain", "interval": "5s"},
                                     {"file": "/var/lib/registry/.sealer-stale", "interval": "1s"}]
    ours = render_registry_yml(domain="sea.hub", port=5000, tls=True, auth=True)
    assert "sealer-stale" not in ours  # master0 never gates itself


def test_every_config_the_program_launches_drains_on_sigterm():
    """The recovery stops the promoted standby's registry while nodes pull from it: its config
    (and master0's) sets http.draintimeout, so distribution closes its listener and finishes the
    requests it serves instead of exiting mid-request; a brought value is kept, and a brought
    config without http gets one."""
    ours = yaml.safe_load(render_registry_yml(domain="sea.hub", port=5000, tls=True, auth=True))
    assert ours["http"]["draintimeout"] == DRAIN_TIMEOUT == "10s"
    assert yaml.safe_load(read_only_registry_yml(yaml.safe_dump(ours)))["http"]["draintimeout"] == "10s"
    brought = "version: 0.1\nhttp:\n  addr: :5000\n  draintimeout: 30s\n"
    assert yaml.safe_load(read_only_registry_yml(brought))["http"] == {"addr": ":5000", "draintimeout": "30s"}
    bare = yaml.safe_load(read_only_registry_yml("version: 0.1\nstorage: {}\n"))
    assert bare["http"] == {"draintimeout": "10s"}


@pytest.mark.parametrize("standby", ["cold", "warm"])
def test_standby_values_are_accepted_in_pre_mode(standby):
    values = render()
    values["registry"]["local_registry"]["standby"] = standby
    assert str(load(values).registry.local_registry.standby) == standby


def test_standby_defaults_to_cold():
    assert str(load(render()).registry.local_registry.standby) == "cold"


def test_cold_standby_is_accepted_in_post_mode():
    values = render(distribution="post")
    values["registry"]["local_registry"]["standby"] = "cold"
    assert str(load(values).distribution) == "post"


def test_warm_standby_in_post_mode_is_refused_naming_the_field_and_value():
    values = render(distribution="post")
    values["registry"]["local_registry"]["standby"] = "warm"
    found = problems(values)
    assert any(p.startswith("error: registry.local_registry.standby: warm needs distribution: pre")
               and "got distribution: post" in p for p in found), found


@pytest.mark.parametrize("bad", ["hot", "WARM", "", True, 1])
def test_unknown_standby_values_are_refused(bad):
    values = render()
    values["registry"]["local_registry"]["standby"] = bad
    assert any(p.startswith("error: registry.local_registry.standby:") for p in problems(values))


# ----------------------------------------------------------------------------- topology


def test_topology_marks_only_live_pre_mode_standbys_read_only():
    kw = dict(master0=MASTERS[0], masters=MASTERS, nodes=NODES, deploy_hosts=MASTERS,
              down_hosts=[MASTERS[2]], distribution="pre", image_ids=["sha256:" + "a" * 64])
    warm = Topology.build(**kw, standby="warm")
    assert [h.ip for h in warm.hosts if h.read_only] == MASTERS[1:]
    assert warm.mirrors == [MASTERS[1]]  # the down standby is no mirror
    assert Topology.build(**kw).mirrors == []
    assert Topology.build(**{**kw, "distribution": "post"}, standby="warm").mirrors == []


# ----------------------------------------------------------------------------- program shape


def test_warm_standbys_launch_the_read_only_config_and_master0_the_read_write_one(ca):
    """master0's rootfs holds the read-write config and registry-launch runs launch-registry.sh;
    each other deploy host's rootfs holds the read-only config and its registry-standby step runs
    launch-registry.sh too, with the fingerprint of the read-only files."""
    declared = declare(make_args(ca, **WARM)).by_name()
    m0 = MASTERS[0]
    assert not is_read_only(rootfs_config(declared, m0))
    launch, script = registry_command(declared, f"registry-launch-{m0}")
    assert script == "launch-registry.sh"
    for ip in MASTERS[1:]:
        assert is_read_only(rootfs_config(declared, ip))
        cmd, script = registry_command(declared, f"registry-standby-{ip}")
        assert script == "launch-registry.sh"
        assert cmd.split()[3:6] == launch.split()[3:6] == [ROOTFS, "5000", "sea.hub"]
        assert cmd.split()[6] != launch.split()[6]  # another fingerprint: other files


def test_cold_standbys_stop_the_registry_and_hold_the_read_write_config(ca):
    declared = declare(make_args(ca, deploy_hosts=MASTERS)).by_name()
    for ip in MASTERS[1:]:
        assert not is_read_only(rootfs_config(declared, ip))
        assert registry_command(declared, f"registry-standby-{ip}") == (
            f"bash -s -- {ROOTFS}", "standby-registry.sh")
        assert "--mirror" not in declared[f"node-{ip}"].inputs["create"]


def test_nodes_list_the_live_warm_standbys_after_master0(ca):
    declared = declare(make_args(ca, **WARM)).by_name()
    for ip in MASTERS + NODES:
        assert staged(declared[f"node-{ip}"].inputs["create"]).bash_s == (
            f"bash -s -- --mirror {MASTERS[1]} --mirror {MASTERS[2]} sea.hub {MASTERS[0]} 5000")


def test_master0_move_flips_roles_and_a_revived_old_master0_comes_back_read_only(ca):
    """Recovery (old master0 down): the new master0 launches the read-write files (master0's
    fingerprint), the remaining standby stays read-only and nodes drop the new master0 from their
    mirrors. Rejoin (old master0 off down_hosts): it comes back as a read-only standby."""
    before = declare(make_args(ca, **WARM)).by_name()
    old, new, other = MASTERS
    recovered = declare(make_args(ca, **WARM, master0=new, down_hosts=[old])).by_name()
    assert not is_read_only(rootfs_config(recovered, new))
    cmd, script = registry_command(recovered, f"registry-launch-{new}")
    assert script == "launch-registry.sh"
    assert cmd.split()[6] == registry_command(before, f"registry-launch-{old}")[0].split()[6]
    assert is_read_only(rootfs_config(recovered, other))
    assert recovered[f"registry-standby-{other}"].inputs == before[f"registry-standby-{other}"].inputs
    assert staged(recovered[f"node-{NODES[0]}"].inputs["create"]).bash_s == f"bash -s -- --mirror {other} sea.hub {new} 5000"
    assert not [n for n in recovered if n.endswith(old)]

    rejoined = declare(make_args(ca, **WARM, master0=new)).by_name()
    assert is_read_only(rootfs_config(rejoined, old))
    cmd, script = registry_command(rejoined, f"registry-standby-{old}")
    assert script == "launch-registry.sh"
    assert cmd == registry_command(before, f"registry-standby-{other}")[0]
    assert staged(rejoined[f"node-{NODES[0]}"].inputs["create"]).bash_s == (
        f"bash -s -- --mirror {old} --mirror {other} sea.hub {new} 5000")


def test_warm_standby_changes_nothing_in_a_cluster_without_standbys(ca):
    """With master0 as the only deploy host, warm and cold declare the same inputs."""
    cold = declare(make_args(ca, deploy_hosts=[MASTERS[0]])).by_name()
    warm = declare(make_args(ca, deploy_hosts=[MASTERS[0]], standby="warm")).by_name()
    assert {n: r.inputs for n, r in cold.items()} == {n: r.inputs for n, r in warm.items()}


def test_insecure_mode_nodes_get_no_mirror(ca):
    declared = declare(make_args(ca, **WARM, insecure=True)).by_name()
    assert staged(declared[f"node-{NODES[0]}"].inputs["create"]).bash_s == f"bash -s -- sea.hub {MASTERS[0]}"


# ----------------------------------------------------------------------------- hosts.toml


def hosts_toml(*mirrors: str, via_vip: bool = False) -> dict:
    """configure-node.sh's hosts.toml for sea.hub:5000 with ``mirrors``, parsed; ``via_vip``: as
    --keep-hosts (sealer's HA layout) renders it."""
    script = (SCRIPTS_DIR / "configure-node.sh").read_text().removesuffix('main "$@"\n')
    args = " ".join(f"MIRRORS+=({m})" for m in mirrors) + ("\nVIA_VIP=1" if via_vip else "")
    done = subprocess.run(["bash", "-c", f"{script}\n{args}\nrender_hosts_toml sea.hub 5000"],
                          capture_output=True, text=True, check=True,
                          env={"PATH": "/usr/bin:/bin"})
    parsed = tomllib.loads(done.stdout)
    # containerd tries the [host] tables in file order (1.6 sorts them by line number).
    order = [line.split('"')[1] for line in done.stdout.splitlines() if line.startswith("[host.")]
    assert order == list(parsed["host"])
    return parsed


def test_hosts_toml_lists_master0_then_the_mirrors_pull_only():
    ca = "/etc/containerd/certs.d/sea.hub:5000/ca.crt"
    doc = hosts_toml("198.18.0.12", "198.18.0.13")
    assert doc["server"] == "https://sea.hub:5000" and doc["ca"] == ca
    assert list(doc["host"]) == ["https://sea.hub:5000", "https://198.18.0.12:5000",
                                 "https://198.18.0.13:5000"]
    assert doc["host"]["https://sea.hub:5000"]["capabilities"] == ["pull", "resolve", "push"]
    for url in list(doc["host"])[1:]:
        assert doc["host"][url] == {"capabilities": ["pull", "resolve"], "ca": ca,
                                    "dial_timeout": "2s"}
    assert doc["host"]["https://sea.hub:5000"]["dial_timeout"] == "2s"
    # The server entry, tried last with the top-level settings, is bounded too.
    assert doc["dial_timeout"] == "2s"


def test_hosts_toml_without_mirrors_is_today_s():
    assert hosts_toml() == {"server": "https://sea.hub:5000",
                            "ca": "/etc/containerd/certs.d/sea.hub:5000/ca.crt",
                            "host": {"https://sea.hub:5000": {
                                "capabilities": ["pull", "resolve", "push"],
                                "ca": "/etc/containerd/certs.d/sea.hub:5000/ca.crt"}}}


def test_hosts_toml_in_the_ha_layout_bounds_both_tries_of_the_vip():
    """sealer's HA layout: the [host] table and the server are the domain (lvscare's VIP on a
    node), so a request whose connection went to a dead master is tried again on a new one;
    dial_timeout on both makes containerd 2.0.7+ do it after 2 s (1.6/1.7 ignore the key)."""
    doc = hosts_toml(via_vip=True)
    assert doc["server"] == "https://sea.hub:5000" and list(doc["host"]) == ["https://sea.hub:5000"]
    assert doc["dial_timeout"] == "2s"
    assert doc["host"]["https://sea.hub:5000"] == {
        "capabilities": ["pull", "resolve", "push"],
        "ca": "/etc/containerd/certs.d/sea.hub:5000/ca.crt", "dial_timeout": "2s"}


def test_configure_node_refuses_a_mirror_that_is_not_an_address(tmp_path):
    done = subprocess.run(["bash", str(SCRIPTS_DIR / "configure-node.sh"), "--mirror", "$(id)",
                           "sea.hub", "198.18.0.11", "5000", str(tmp_path / "hosts")],
                          capture_output=True, text=True, input="")
    assert done.returncode != 0 and "--mirror needs an IP address" in done.stderr


def test_the_bench_s_replicas_first_variant_only_reorders_the_hosts():
    """bench/standby.py's alternative order: the same tables, the warm standbys before master0."""
    from bench.standby import replicas_first

    script = (SCRIPTS_DIR / "configure-node.sh").read_text().removesuffix('main "$@"\n')
    text = subprocess.run(["bash", "-c", f"{script}\nMIRRORS+=(198.18.0.12 198.18.0.13)\n"
                                         "render_hosts_toml sea.hub 5000"],
                          capture_output=True, text=True, check=True).stdout
    original, reordered = tomllib.loads(text), tomllib.loads(replicas_first(text))
    assert reordered == original
    order = [line.split('"')[1] for line in replicas_first(text).splitlines() if line.startswith("[host.")]
    assert order == ["https://198.18.0.12:5000", "https://198.18.0.13:5000", "https://sea.hub:5000"]


def test_the_verification_checks_the_warm_standbys_and_not_cold_ones(ca):
    warm = declare(make_args(ca, **WARM)).by_name()["registry-verify"].inputs["create"]
    assert warm.startswith(f"bash -s -- --mirror {MASTERS[1]} --mirror {MASTERS[2]} sea.hub 5000 https admin {MASTERS[0]} ")
    cold = declare(make_args(ca, deploy_hosts=MASTERS)).by_name()["registry-verify"].inputs["create"]
    assert cold.startswith(f"bash -s -- sea.hub 5000 https admin {MASTERS[0]} ")


# ------------------------------------------------------- warm standby with a brought certificate


def brought(ips: list[str]) -> dict:
    """registry.tls {cert, key}: a leaf naming ``ips`` as IP SANs (plus the domain, localhost and
    loopback, as the program's own leaf)."""
    ca_cert, ca_key = pki.generate_ca()
    cert, key = pki.issue_leaf(ca_cert, ca_key, "sea.hub", ips)
    return {"cert": cert, "key": key}


def warm_values(tls: dict) -> dict:
    values = render()
    values["registry"]["local_registry"]["standby"] = "warm"
    values["registry"]["tls"] = tls
    return values


def test_warm_standby_with_a_brought_cert_naming_every_deploy_host_is_accepted():
    config = load(warm_values(brought(["198.18.0.11", "198.18.0.12"])))
    assert str(config.registry.local_registry.standby) == "warm"


def test_warm_standby_with_a_brought_cert_without_the_replicas_ips_is_refused_offline():
    """Nodes reach a warm standby as https://<ip>:<port>: the cert must name it as an IP SAN;
    the message names the field and every missing IP."""
    found = problems(warm_values(brought(["198.18.0.11"])))
    hits = [p for p in found if p.startswith("error: registry.tls.cert: standby: warm serves the "
                                             "replicas by IP")]
    assert len(hits) == 1, found
    assert "no IP SAN for 198.18.0.12 " in hits[0] and "IP:198.18.0.11" in hits[0]


def test_warm_standby_refuses_sealer_s_dns_only_certificate(tmp_path):
    """sealer's CA-as-leaf (serial 0, SAN DNS:sea.hub only) cannot serve replicas by IP."""
    from tests.unit.test_certs_serial0 import sealer_cert

    cert, key = sealer_cert(tmp_path)
    found = problems(warm_values({"cert": cert, "key": key}))
    assert any(p.startswith("error: registry.tls.cert: standby: warm") and
               "198.18.0.11, 198.18.0.12" in p and "DNS:sea.hub" in p for p in found), found
    cold = render()
    cold["registry"]["tls"] = {"cert": cert, "key": key}
    assert str(load(cold).registry.local_registry.standby) == "cold"  # cold is fine


def test_warm_standby_with_the_program_s_own_leaf_needs_no_check():
    """ca_cert + ca_key: the program issues a leaf naming every deploy host."""
    values = render()
    values["registry"]["local_registry"]["standby"] = "warm"
    assert str(load(values).registry.local_registry.standby) == "warm"


# ---------------------------------------------------------------- node entry point (issue 21)

ENTRY = ("10.103.97.2", 5099)


def test_hosts_without_a_registry_reach_it_through_the_node_entry_point(ca):
    """Every host that runs no registry gets --entry (HAProxy there, master0 first, the warm
    standbys as backups); the registry hosts hold the port and keep mapping master0 directly;
    the verifier, a plain node, checks that the domain resolves to the entry address."""
    declared = declare(make_args(ca, **WARM, node_entry=ENTRY)).by_name()
    for ip in NODES:
        assert staged(declared[f"node-{ip}"].inputs["create"]).bash_s == (
            f"bash -s -- --entry 10.103.97.2 --entry-stats-port 5099 --mirror {MASTERS[1]} "
            f"--mirror {MASTERS[2]} sea.hub {MASTERS[0]} 5000")
    for ip in MASTERS:
        assert "--entry" not in declared[f"node-{ip}"].inputs["create"]
    assert "--entry 10.103.97.2 sea.hub" in declared["registry-verify"].inputs["create"]


def test_a_recovery_rewrites_the_entry_point_s_servers_and_drops_the_fenced_host(ca):
    """The new master0 becomes the entry point's server, the remaining standby its backup; the
    old master0 (down, fenced) is no server at all: a revived stale old master0 serves no node."""
    old, new, other = MASTERS
    recovered = declare(make_args(ca, **WARM, node_entry=ENTRY, master0=new,
                                  down_hosts=[old])).by_name()
    assert staged(recovered[f"node-{NODES[0]}"].inputs["create"]).bash_s == (
        f"bash -s -- --entry 10.103.97.2 --entry-stats-port 5099 --mirror {other} sea.hub {new} 5000")


def test_without_node_entry_nothing_changes(ca):
    plain = declare(make_args(ca, **WARM)).by_name()
    assert all("--entry" not in r.inputs.get("create", "") for r in plain.values()
               if "create" in r.inputs)


@pytest.mark.parametrize("local, fragment", [
    (dict(standby="cold"), "needs standby: warm (got standby: cold)"),
    (dict(standby="warm", insecure_mode=True), "needs TLS (got insecure_mode: true)"),
])
def test_node_entry_rules_name_the_field(local, fragment):
    values = render()
    values["registry"]["local_registry"].update(local, node_entry={"address": "10.103.97.2"})
    if local.get("insecure_mode"):
        values["registry"].pop("tls", None)
    lines = problems(values)
    assert any(line.startswith("error: registry.local_registry.node_entry: ") and fragment in line
               for line in lines), lines


def test_node_entry_address_must_not_be_a_cluster_host_nor_its_stats_the_registry_port():
    values = render()
    host = values["cluster"]["nodes"][0]
    values["registry"]["local_registry"].update(standby="warm",
                                                node_entry={"address": host, "stats_port": 5000})
    lines = problems(values)
    assert any(line.startswith("error: registry.local_registry.node_entry.address: ")
               and f"{host} is a cluster host" in line for line in lines), lines
    assert any(line.startswith("error: registry.local_registry.node_entry.stats_port: 5000 is the "
                               "registry's port") for line in lines), lines


def test_a_valid_node_entry_loads_with_its_default_stats_port():
    values = render()
    values["registry"]["local_registry"].update(standby="warm", node_entry={"address": "10.103.97.2"})
    cfg = load(values)
    assert cfg.registry.local_registry.node_entry.stats_port == 5099
