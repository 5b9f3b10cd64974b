"""`adopt` on sealer's own files (tests/unit/fixtures/sealer, written as sealer's source writes
them: see its README.md): the ConfigMap's Clusterfile first, the key and the password kept, the
boot history from the application log and cache/registry flags, the registry mode from the
cluster, v0.8's settings file, the external-only refusal. One behaviour per test."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from cli.adopt import (SealerFiles, boot_history, build_adoption, check_offline,
                       choose_clusterfile, configmaps_from_master0, registry_mode)
from cli.clusterfile import ClusterfileError, parse_clusterfile, parse_registry_settings
from cli.common import CliError
from cli.sealer_log import (Flag, HistoryError, LaunchOverride, history_from_log, launch_cmd,
                            parse_flags, split_log)
from config import BootHistory
from config.registry import LocalRegistry
from lab.sealer_state import BASEFS_REGISTRY_CONFIG, sealer_htpasswd, sealer_self_signed

FIXTURES = Path(__file__).parent / "fixtures" / "sealer"
V011 = (FIXTURES / "v0.11" / "Clusterfile").read_text()
V011_CM = (FIXTURES / "v0.11" / "Clusterfile.configmap").read_text()
LOG = (FIXTURES / "v0.11" / "application.json").read_text()
FLAGS = (FIXTURES / "v0.11" / "flags").read_text()
REGISTRY_CM = (FIXTURES / "v0.11" / "sealer-registry.yaml").read_text()
V08 = (FIXTURES / "v0.8" / "Clusterfile").read_text()
V08_SETTINGS = (FIXTURES / "v0.8" / "registry.yml").read_text()
EXTERNAL = (FIXTURES / "external" / "Clusterfile").read_text()
ID_A, ID_B = "sha256:" + "a" * 64, "sha256:" + "b" * 64
KEY_PATH = "/root/.ssh/id_rsa"
SSH_KEY = (ed25519.Ed25519PrivateKey.generate()
           .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                          serialization.NoEncryption()).decode())
CERT, CERT_KEY = sealer_self_signed("sea.hub")
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG9Dtr2mqbeQpvdiEbL/O0kes/aE/Q4apAHyYrs4P3/n"
HAS_HA_KEY = "ha" in LocalRegistry.model_fields


def files(clusterfile: str = V011, **overrides) -> SealerFiles:
    values = dict(meta={"clusterfile": "/root/.sealer/Clusterfile",
                        "history": "/root/.sealer/application.json",
                        "rootfs": "/var/lib/sealer/data/my-cluster/rootfs"},
                  clusterfile=clusterfile, history=LOG, flags=FLAGS,
                  certs={"sea.hub.crt": CERT, "sea.hub.key": CERT_KEY},
                  registry_config=BASEFS_REGISTRY_CONFIG,
                  htpasswd=sealer_htpasswd("sealer", "Reg-pw1"), files={KEY_PATH: SSH_KEY})
    values.update(overrides)
    return SealerFiles(**values)


def args(tmp_path, **overrides) -> argparse.Namespace:
    (tmp_path / "kubeconfig").write_text("apiVersion: v1\nclusters: []\n")
    values = dict(from_ip="10.0.0.11", ssh_key=None, project_dir=str(tmp_path),
                  kubeconfig=str(tmp_path / "kubeconfig"), history_file=None,
                  registry_password_file=None, distribution="pre")
    values.update(overrides)
    return argparse.Namespace(**values)


def adopt(tmp_path, sealer: SealerFiles | None = None, registry_cm: str | None = None, **kw):
    sealer = sealer or files()
    cf = parse_clusterfile(sealer.clusterfile)
    return build_adoption(cf, sealer, args(tmp_path, **kw),
                          {ip: HOST_KEY for ip in cf.hosts}, registry_cm)


# -- the Clusterfile sealer reads first -----------------------------------------------------------


def test_the_configmaps_clusterfile_is_used_and_the_files_difference_noted():
    notes: list[str] = []
    chosen = choose_clusterfile(V011, "/root/.sealer/Clusterfile", V011_CM, notes)
    assert parse_clusterfile(chosen).nodes == ["10.0.0.21", "10.0.0.22"]
    assert "differs in 1 fields" in notes[0]
    assert "Cluster/my-cluster.spec.hosts[1].ips: ['10.0.0.21', '10.0.0.22'] -> ['10.0.0.21']" in notes[0]


def test_without_the_configmap_the_file_is_the_clusterfile():
    notes: list[str] = []
    assert choose_clusterfile(V08, "/root/.sealer/my-cluster/Clusterfile", None, notes) == V08
    assert "no ConfigMap kube-system/sealer-clusterfile was read" in notes[0]


def test_the_difference_never_shows_a_password():
    notes: list[str] = []
    choose_clusterfile(V011, "f", V011.replace("Reg-pw1", "Other-pw2"), notes)
    assert "localRegistry.password: <secret> -> <secret>" in notes[0]
    assert "Reg-pw1" not in notes[0] and "Other-pw2" not in notes[0]


def test_configmaps_read_with_kubectl_on_master0_found_absent_and_error():
    sealer = files(meta={"cm.sealer-clusterfile": "found", "cm.sealer-registry": "error"},
                   configmaps={"sealer-clusterfile": V011_CM})
    got, problems = configmaps_from_master0(sealer)
    assert got == {"sealer-clusterfile": V011_CM, "sealer-registry": None}
    assert len(problems) == 1 and "sealer-registry could not be read" in problems[0]


def test_the_swapped_application_document_is_read():
    """`apiVersion: Application, kind: sealer.io/v2`, as `sealer run <app>` saves it."""
    cf = parse_clusterfile(V011)
    assert [(a.name, a.launch_apps) for a in cf.applications] == [
        ("my-application", ["setup", "dashboard"])]
    assert cf.image == "docker.io/sealerio/kubernetes:v1.22.15"


# -- logins -----------------------------------------------------------------------------------------


def test_the_key_and_the_password_are_both_kept(tmp_path):
    result = adopt(tmp_path)
    assert result.secrets["cluster.ssh.private_key"] == SSH_KEY
    assert result.secrets["cluster.ssh.password"] == "Seal3r-pw"
    assert any("the engine offers both, as sealer does" in n for n in result.notes)
    check_offline(result, tmp_path)


def test_v08s_encrypted_passwd_is_kept_decrypted_beside_the_key(tmp_path):
    result = adopt(tmp_path, files(V08, history=None, flags="", registry_settings=V08_SETTINGS))
    assert result.secrets["cluster.ssh.password"] == "Seal3r-pw"
    assert result.secrets["cluster.ssh.private_key"] == SSH_KEY
    check_offline(result, tmp_path)


# -- the application log ----------------------------------------------------------------------------


def test_the_log_splits_into_sealers_image_extensions():
    entries = split_log(LOG)
    assert [e["type"] for e in entries] == ["kube-installer", "app-installer"]
    assert entries[1]["env"]["PROXY"] == "a=1&b=2"   # Go's \u0026


def test_a_log_that_is_not_json_is_refused_naming_the_object():
    with pytest.raises(HistoryError, match="object 3"):
        split_log(LOG + "{not json")


def test_flags_are_in_run_order_by_mtime_and_non_ids_skipped():
    flags, skipped = parse_flags(f"20.0 {'b' * 64}\n10.0 {'a' * 64}\n5.0 lock\n")
    assert [f.image_id for f in flags] == [ID_A, ID_B]
    assert skipped == ["lock"]


@pytest.mark.parametrize("app, cmd", [
    ({"name": "calico", "type": "kube", "files": ["a.yaml", "sub/../b.yaml"]},
     "kubectl apply -f application/apps/calico/a.yaml && kubectl apply -f application/apps/calico/b.yaml"),
    ({"name": "web", "type": "helm"}, "helm install web application/apps/web/"),
    ({"name": "setup", "type": "shell", "files": ["install.sh"]},
     "bash application/apps/setup/install.sh"),
    ({"name": "dash", "cmds": ["kubectl apply -f d.yaml", "&&", "echo ok"]},
     "cd application/apps/dash/ && kubectl apply -f d.yaml && echo ok"),
    ({"name": "notes"}, ""),
])
def test_launch_commands_are_sealers_get_app_launch_cmd(app, cmd):
    assert launch_cmd(app) == cmd


def test_the_boot_history_pairs_log_entries_with_flags_in_run_order():
    """Entry 1 (the cluster image) gets the first flag, entry 2 (the app image) the second; the
    shell app and the untyped ones are kept; the Application document's launchApps override the
    app image's launch."""
    cf = parse_clusterfile(V011)
    notes: list[str] = []
    history = boot_history(cf, files(), notes)
    apps = {a["name"]: a for a in history["applications"]}
    assert {n: a["image_id"] for n, a in apps.items()} == {
        "calico": ID_A, "setup": ID_B, "dashboard": ID_B, "notes": ID_B}
    assert (apps["setup"]["type"], apps["dashboard"]["type"], apps["notes"]["type"]) == (
        "shell", None, None)
    assert history["launch"]["app_names"] == ["calico", "setup", "dashboard"]
    assert history["type"] == "kube-installer"
    BootHistory.model_validate(history)
    assert any(f"the cluster image docker.io/sealerio/kubernetes:v1.22.15 is {ID_A}" in n for n in notes)


def test_counts_that_differ_are_refused_naming_both_and_history_file():
    cf = parse_clusterfile(V011)
    with pytest.raises(CliError, match="holds 2 image extensions but master0's cache/registry "
                                       "holds 1 image ids.*--history-file"):
        boot_history(cf, files(flags=FLAGS.splitlines()[0] + "\n"), [])


def test_an_image_run_again_is_counted_once():
    entries = split_log(LOG)
    built = history_from_log([entries[0], entries[1], entries[1]],
                             [Flag(ID_A, 1.0), Flag(ID_B, 2.0)])
    assert {a["image_id"] for a in built.history["applications"]} == {ID_A, ID_B}
    assert any("repeat an earlier one" in n for n in built.notes)


def test_an_override_naming_no_logged_app_is_ignored_with_a_note():
    entries = split_log(LOG)
    built = history_from_log(entries, [Flag(ID_A, 1.0), Flag(ID_B, 2.0)],
                             overrides=[LaunchOverride("Application document x", ["nope"])])
    assert built.history["launch"]["app_names"] == ["calico", "setup"]
    assert any("which no logged image holds" in n for n in built.notes)


def test_the_seed_document_still_works():
    seed = {"type": "boot", "launch": {"app_names": ["app0"]},
            "applications": [{"name": "app0", "image_id": ID_A, "type": "kube",
                              "launch_cmd": "kubectl apply -f app0.yaml", "version": "v1"}]}
    import json
    assert boot_history(parse_clusterfile(V011), files(history=json.dumps(seed)), []) == seed


def test_no_log_and_no_flags_is_an_empty_history_v08():
    notes: list[str] = []
    history = boot_history(parse_clusterfile(V08), files(V08, history=None, flags=""), notes)
    assert history["applications"] == [] and "sealer before v0.9" in notes[0]
    BootHistory.model_validate(history)


# -- the registry mode ------------------------------------------------------------------------------


def test_the_registry_configmap_decides_ha_over_the_clusterfile():
    notes: list[str] = []
    mode = registry_mode(parse_clusterfile(V011), files(), REGISTRY_CM, notes)
    assert (mode.ha, mode.vip, mode.deploy_hosts) == (
        True, "10.103.97.2", ("10.0.0.11", "10.0.0.12", "10.0.0.13"))
    assert "ConfigMap (what sealer deployed) is followed" in notes[0]


def test_without_the_configmap_the_clusterfiles_ha_false_is_followed():
    mode = registry_mode(parse_clusterfile(V011), files(), None, [])
    assert mode.ha is False and "localRegistry" in mode.source


def test_a_localregistry_without_ha_is_ha_as_sealers_decoder_says():
    cf = parse_clusterfile(V011.replace("      ha: false\n", ""))
    assert registry_mode(cf, files(), None, []).ha is True


def test_v08_with_its_settings_file_is_not_ha():
    cf = parse_clusterfile(V08)
    mode = registry_mode(cf, files(V08, registry_settings=V08_SETTINGS), None, [])
    assert mode.ha is False and "v0.8" in mode.source


def test_an_external_only_clusterfile_is_refused():
    with pytest.raises(CliError, match="has only an external registry .*externalRegistry"):
        registry_mode(parse_clusterfile(EXTERNAL), files(EXTERNAL), None, [])


def test_an_external_only_registry_configmap_is_refused():
    with pytest.raises(CliError, match="has only an external registry"):
        registry_mode(parse_clusterfile(V011), files(),
                      "external:\n  domain: r.example.com\nlocal: null\n", [])


def test_an_ha_cluster_is_adopted_with_every_master_a_deploy_host(tmp_path):
    result = adopt(tmp_path, registry_cm=REGISTRY_CM)
    local = result.plain["registry"]["local_registry"]
    assert local["ha"] is True and local["deploy_hosts"] == ["10.0.0.11", "10.0.0.12", "10.0.0.13"]
    assert any("the VIP 10.103.97.2 stays lvscare's" in n for n in result.notes)


@pytest.mark.skipif(not HAS_HA_KEY, reason="registry.local_registry.ha comes with the prog branch")
def test_an_ha_adoption_validates_offline(tmp_path):
    check_offline(adopt(tmp_path, registry_cm=REGISTRY_CM), tmp_path)


def test_a_non_ha_adoption_carries_no_ha_key(tmp_path):
    result = adopt(tmp_path)
    assert "ha" not in result.plain["registry"]["local_registry"]
    check_offline(result, tmp_path)


# -- v0.8 -------------------------------------------------------------------------------------------


def test_v08s_settings_file_gives_domain_port_and_login(tmp_path):
    sealer = files(V08, history=None, flags="",
                   registry_settings=V08_SETTINGS.replace("sea.hub", "hub.local"),
                   certs={"hub.local.crt": CERT, "hub.local.key": CERT_KEY})
    result = adopt(tmp_path, sealer)
    reg = result.plain["registry"]
    assert (reg["domain"], reg["port"], reg["username"]) == ("hub.local", 5000, "sealer")
    assert result.secrets["registry.password"] == "Reg-pw1"
    assert reg["config"] == BASEFS_REGISTRY_CONFIG   # registry_config.yml, never registry.yml


def test_v08_without_registry_config_adopts_the_running_registrys_config(tmp_path):
    """v0.8's rootfs has no etc/registry_config.yml: the config the running registry reads is
    adopted (the program writes it where init-registry.sh reads it: no restart)."""
    sealer = files(V08, history=None, flags="", registry_settings=V08_SETTINGS,
                   registry_config=None, running_config=BASEFS_REGISTRY_CONFIG)
    result = adopt(tmp_path, sealer)
    assert result.plain["registry"]["config"] == BASEFS_REGISTRY_CONFIG
    assert any("running registry's own config is adopted" in n for n in result.notes)


def test_a_running_config_is_ignored_when_the_rootfs_has_one(tmp_path):
    sealer = files(running_config="version: 0.1\nother: true\n")
    assert adopt(tmp_path, sealer).plain["registry"]["config"] == BASEFS_REGISTRY_CONFIG


def test_a_running_config_the_program_cannot_keep_is_noted_not_adopted(tmp_path):
    sealer = files(V08, history=None, flags="", registry_settings=V08_SETTINGS,
                   registry_config=None, running_config="version: 0.1\nhttp:\n  secret: s3cret\n")
    result = adopt(tmp_path, sealer)
    assert "config" not in result.plain["registry"]
    assert any("the running registry's config" in n for n in result.notes)


def test_v08s_settings_file_on_another_host_is_refused(tmp_path):
    sealer = files(V08, history=None, flags="", registry_settings="ip: 10.0.0.12\n" + V08_SETTINGS)
    with pytest.raises(CliError, match="puts the registry on 10.0.0.12 .*not on master0 10.0.0.11"):
        adopt(tmp_path, sealer)


@pytest.mark.parametrize("text, fragment", [
    ("domain: sea.hub\nport: five\n", "port 'five' is not a port"),
    ("version: 0.1\nstorage: {}\n", "is it a registry config"),
    ("- a\n", "is not a mapping"),
])
def test_a_settings_file_that_is_not_sealers_is_refused(text, fragment):
    with pytest.raises(ClusterfileError, match=fragment):
        parse_registry_settings(text)


def test_a_settings_file_port_as_a_bare_number_is_read():
    assert parse_registry_settings("port: 5001\n").port == 5001


def test_a_quoted_localregistry_port_is_read_and_noted():
    cf = parse_clusterfile(V011.replace("      port: 5000\n", '      port: "5000"\n'))
    assert cf.registry.port == 5000
    assert "sealer v0.11 decodes an int there" in cf.quirks[0]


# -- what a node shows ------------------------------------------------------------------------------

LVSCARE = (FIXTURES / "v0.11" / "reg-lvscare.yaml").read_text()


def node(ip: str, *lines: str, lvscare: str | None = None):
    from cli.adopt import NodeFacts
    return NodeFacts(ip, list(lines), lvscare)


def test_a_node_running_reg_lvscare_shows_ha_and_the_vip():
    from cli.adopt import node_evidence
    ha, shown, vip = node_evidence(node("10.0.0.21", "10.103.97.2 sea.hub #hostalias-set-by-sealer",
                                        lvscare=LVSCARE), parse_clusterfile(V011))
    assert (ha, vip) == (True, "10.103.97.2") and "reg-lvscare" in shown


@pytest.mark.parametrize("host, line, ha", [
    ("10.0.0.21", "10.0.0.11 sea.hub #hostalias-set-by-sealer", False),   # node -> master0
    ("10.0.0.21", "10.0.0.11 sea.hub", False),                             # v0.8's unmarked line
    ("10.0.0.12", "10.0.0.12 sea.hub #hostalias-set-by-sealer", True),    # master -> itself
    ("10.0.0.21", "10.103.97.2 sea.hub #hostalias-set-by-sealer", True),  # node -> a VIP
    ("10.0.0.21", "10.0.0.12 sea.hub", None),                              # another master: unclear
])
def test_a_hosts_line_shows_the_mode(host, line, ha):
    from cli.adopt import node_evidence
    assert node_evidence(node(host, line), parse_clusterfile(V011))[0] is ha


def test_a_host_with_no_line_shows_nothing_and_the_clusterfile_decides():
    notes: list[str] = []
    mode = registry_mode(parse_clusterfile(V011), files(), None, notes, node("10.0.0.21"))
    assert mode.ha is False and "not shown by 10.0.0.21" in notes[0]


def test_what_a_node_shows_is_followed_over_the_clusterfile():
    notes: list[str] = []
    mode = registry_mode(parse_clusterfile(V011), files(), None, notes,
                         node("10.0.0.21", lvscare=LVSCARE))
    assert mode.ha is True and "the Clusterfile says ha: false" in notes[0]


def test_v08_with_a_node_mapping_master0_is_not_ha():
    mode = registry_mode(parse_clusterfile(V08), files(V08, registry_settings=V08_SETTINGS), None,
                         [], node("10.0.0.21", "10.0.0.11 sea.hub"))
    assert mode.ha is False


def test_node_facts_from_the_read_scripts_tar():
    import io
    import tarfile

    from cli.adopt import NodeFacts
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in {"./node/hosts": "10.0.0.11 sea.hub\n", "./node/reg-lvscare.yaml": LVSCARE}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data.encode())
            tar.addfile(info, io.BytesIO(data.encode()))
    facts = NodeFacts.from_tar("10.0.0.21", buf.getvalue())
    assert (facts.hosts_lines, facts.lvscare) == (["10.0.0.11 sea.hub"], LVSCARE)


def test_history_file_overrides_a_log_that_cannot_be_paired(tmp_path):
    import json
    (tmp_path / "history.json").write_text(json.dumps(
        {"type": "boot", "applications": [{"name": "calico", "image_id": ID_A}]}))
    result = adopt(tmp_path, files(flags=""), history_file="history.json")
    assert result.plain["apps"] == {"history_file": str(tmp_path / "history.json")}
    check_offline(result, tmp_path)
