"""`adopt` offline: reading sealer's Clusterfile (cli/clusterfile.py) and turning what master0
sent into a stack config (cli/adopt.py `build_adoption`, `check_offline`), accept and reject cases.
The Clusterfiles are the lab's (lab/sealer_state.py), i.e. as sealer writes them."""

from __future__ import annotations

import argparse
import io
import json
import tarfile

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from cli.adopt import SealerFiles, build_adoption, check_offline, fingerprint, keyscan
from cli.clusterfile import (ClusterfileError, decrypt_passwd, encrypt_passwd, parse_clusterfile)
from cli.common import CliError
from lab.sealer_state import BASEFS_REGISTRY_CONFIG, clusterfile, sealer_htpasswd, sealer_self_signed

MASTERS = ["10.0.0.11", "10.0.0.12", "10.0.0.13"]
NODES = ["10.0.0.21"]
KEY = "/root/.ssh/id_rsa"
HISTORY = {"type": "boot", "launch": {"app_names": ["app0"]},
           "applications": [{"name": "app0", "image_id": "sha256:" + "ab" * 32, "type": "kube",
                             "launch_cmd": "kubectl apply -f app0.yaml", "version": "v1"}]}
CERT, CERT_KEY = sealer_self_signed("sea.hub")
SSH_KEY = (ed25519.Ed25519PrivateKey.generate()
           .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                          serialization.NoEncryption()).decode())


def text(**overrides) -> str:
    kwargs = dict(name="prod", masters=MASTERS, nodes=NODES, data_root="/data/sealer",
                  domain="sea.hub", port=5000, username="sealer", password="pw-1",
                  ssh={"pk": KEY, "port": "22", "user": "root"}, ha=False)
    kwargs.update(overrides)
    return clusterfile(**kwargs)


def files(cf_text: str | None = None, **overrides) -> SealerFiles:
    values = dict(meta={"clusterfile": "/root/.sealer/Clusterfile",
                        "history": "/root/.sealer/application.json",
                        "rootfs": "/data/sealer/prod/rootfs"},
                  clusterfile=cf_text or text(), history=json.dumps(HISTORY),
                  certs={"sea.hub.crt": CERT, "sea.hub.key": CERT_KEY},
                  registry_config=BASEFS_REGISTRY_CONFIG,
                  htpasswd=sealer_htpasswd("sealer", "pw-1"), files={KEY: SSH_KEY})
    values.update(overrides)
    return SealerFiles(**values)


def args(tmp_path, **overrides) -> argparse.Namespace:
    (tmp_path / "kubeconfig").write_text("apiVersion: v1\nclusters: []\n")
    values = dict(from_ip=MASTERS[0], ssh_key=None, project_dir=str(tmp_path),
                  kubeconfig=str(tmp_path / "kubeconfig"), history_file=None,
                  registry_password_file=None,
                  distribution="pre")
    values.update(overrides)
    return argparse.Namespace(**values)


def leaves(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from leaves(value)
    elif isinstance(node, list):
        for value in node:
            yield from leaves(value)
    else:
        yield node


HOST_KEYS = {ip: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG9Dtr2mqbeQpvdiEbL/O0kes/aE/Q4apAHyYrs4P3/n"
             for ip in [*MASTERS, *NODES]}


def adopt(tmp_path, sealer: SealerFiles | None = None, **arg_overrides):
    sealer = sealer or files()
    return build_adoption(parse_clusterfile(sealer.clusterfile), sealer,
                          args(tmp_path, **arg_overrides), HOST_KEYS)


# -- the Clusterfile ---------------------------------------------------------------------------


def test_clusterfile_hosts_roles_registry_and_rootfs():
    cf = parse_clusterfile(text())
    assert (cf.name, cf.masters, cf.nodes, cf.master0) == ("prod", MASTERS, NODES, MASTERS[0])
    assert cf.rootfs == "/data/sealer/prod/rootfs"
    assert (cf.registry.domain, cf.registry.port, cf.registry.username, cf.registry.ha) == (
        "sea.hub", 5000, "sealer", False)
    assert cf.ssh.pk == KEY and cf.overrides() == {}


def test_clusterfile_defaults_are_sealers():
    """No dataRoot, registry section or ssh port: sealer's defaults; the v0.11 decoder makes the
    registry HA whatever the apiVersion (decoder.go@v0.11.0:185-209 never looks at it)."""
    doc = yaml.safe_load(text())
    del doc["spec"]["dataRoot"], doc["spec"]["registry"], doc["spec"]["ssh"]["port"]
    cf = parse_clusterfile(yaml.safe_dump(doc))
    assert (cf.data_root, cf.registry.domain, cf.registry.port, cf.ssh.port) == (
        "/var/lib/sealer/data", "sea.hub", 5000, 22)
    assert (cf.registry.ha, cf.registry.local_given, cf.registry.ha_given) == (True, False, False)
    doc["apiVersion"] = "sealer.cloud/v2"
    assert parse_clusterfile(yaml.safe_dump(doc)).registry.ha is True


def test_per_host_ssh_overrides_merge_field_by_field_and_decrypt():
    """A host's ssh overrides spec.ssh field by field; an `encrypted: true` passwd is sealer's
    AES ciphertext and is decrypted."""
    secret = encrypt_passwd("node-Passw0rd")
    cf = parse_clusterfile(text(host_ssh={"10.0.0.21": {"port": "2222", "passwd": secret,
                                                        "encrypted": True}}))
    node = cf.hosts_ssh["10.0.0.21"]
    assert (node.user, node.port, node.pk, node.passwd) == ("root", 2222, KEY, "node-Passw0rd")
    assert list(cf.overrides()) == ["10.0.0.21"]
    assert decrypt_passwd(secret) == "node-Passw0rd"


def test_a_multi_document_clusterfile_is_read_by_its_cluster_document():
    extra = "apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\n---\n"
    assert parse_clusterfile(extra + text()).name == "prod"


@pytest.mark.parametrize("mutate, fragment", [
    (lambda d: d.update(kind="Plugin"), "0 `kind: Cluster` documents"),
    (lambda d: d["metadata"].pop("name"), "no metadata.name"),
    (lambda d: d["spec"].update(hosts=[]), "lists no hosts"),
    (lambda d: d["spec"]["hosts"][0].update(roles=["node"]), "no host with role master"),
    (lambda d: d["spec"]["hosts"][1].update(ips=["10.0.0.11"]), "10.0.0.11 is listed twice"),
    (lambda d: d["spec"]["hosts"][0].update(ips=["master-1"]), "'master-1' is not an IP address"),
    (lambda d: d["spec"]["ssh"].update(port="ssh"), "spec.ssh.port 'ssh' is not a port"),
    (lambda d: d["spec"]["ssh"].update(password="x"), "spec.ssh has unknown keys: password"),
    (lambda d: d["spec"]["ssh"].update(passwd="not-base64!", encrypted=True), "does not decrypt"),
])
def test_a_clusterfile_that_cannot_be_read_is_refused_with_the_reason(mutate, fragment):
    doc = yaml.safe_load(text())
    mutate(doc)
    with pytest.raises(ClusterfileError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        parse_clusterfile(yaml.safe_dump(doc))


# -- what master0 sends ------------------------------------------------------------------------


def test_sealer_files_from_the_read_scripts_tar():
    buf = io.BytesIO()
    members = {"./meta": f"clusterfile=/root/.sealer/Clusterfile\nrootfs=/r\nfile.0={KEY}\n",
               "./clusterfile": "kind: Cluster\n", "./rootfs/certs/sea.hub.crt": CERT,
               "./rootfs/etc/registry_htpasswd": "u:x", "./files/0": SSH_KEY}
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data.encode())
            tar.addfile(info, io.BytesIO(data.encode()))
    got = SealerFiles.from_tar(buf.getvalue())
    assert (got.meta["rootfs"], got.certs, got.htpasswd, got.files) == (
        "/r", {"sea.hub.crt": CERT}, "u:x", {KEY: SSH_KEY})
    assert got.history is None and got.registry_config is None
    with pytest.raises(CliError, match="no readable tar"):
        SealerFiles.from_tar(b"not a tar")


# -- the stack config --------------------------------------------------------------------------


def test_adoption_brings_sealers_material_and_keeps_every_secret_out_of_the_plain_config(tmp_path):
    """Hosts, the Clusterfile's key (a secret), sealer's cert (plain) and key, htpasswd and
    password (secrets), its registry config as-is, the boot history inline, every master a
    deploy host (replicas of sealer's data, host to host) and no image store; the whole config
    validates offline."""
    result = adopt(tmp_path)
    plain = result.plain
    assert plain["cluster"]["masters"] == MASTERS and plain["cluster"]["nodes"] == NODES
    assert plain["cluster"]["ssh"]["host_keys"] == HOST_KEYS
    assert plain["registry"]["tls"] == {"cert": CERT}
    assert plain["registry"]["config"] == BASEFS_REGISTRY_CONFIG
    assert plain["registry"]["local_registry"]["deploy_hosts"] == MASTERS
    assert plain["apps"] == {"history": HISTORY}
    assert set(result.secrets) == {"cluster.ssh.private_key", "registry.tls.key",
                                   "registry.htpasswd", "registry.password"}
    assert not set(leaves(plain)) & set(result.secrets.values())
    check_offline(result, tmp_path)


def test_per_host_port_becomes_cluster_ssh_hosts(tmp_path):
    sealer = files(text(host_ssh={"10.0.0.21": {"port": "2222"}}))
    result = adopt(tmp_path, sealer)
    assert result.plain["cluster"]["ssh"]["hosts"] == {"10.0.0.21": {"port": 2222}}
    check_offline(result, tmp_path)


def test_a_registry_config_that_cannot_be_kept_is_left_out_with_a_note(tmp_path):
    result = adopt(tmp_path, files(registry_config="http:\n  secret: x\n"))
    assert "config" not in result.plain["registry"]
    assert any("restarts once" in note for note in result.notes)


def test_a_non_root_clusterfile_user_is_the_stacks_user(tmp_path):
    """sealer reaches the hosts as `ops` (with sudo): so does the stack; one host as root."""
    sealer = files(text(ssh={"pk": KEY, "user": "ops"}, host_ssh={"10.0.0.21": {"user": "root"}}))
    result = adopt(tmp_path, sealer)
    assert result.plain["cluster"]["ssh"]["user"] == "ops"
    assert result.plain["cluster"]["ssh"]["hosts"] == {"10.0.0.21": {"user": "root"}}
    check_offline(result, tmp_path)


def test_the_clusterfiles_passwords_become_secrets(tmp_path):
    """Hosts sealer reaches by password: spec.ssh.passwd is cluster.ssh.password, a host's own
    (decrypted when `encrypted`) its cluster.ssh.hosts password; a host with the pk uses the key."""
    sealer = files(text(ssh={"passwd": "pw-0", "user": "root"},
                        host_ssh={"10.0.0.21": {"passwd": encrypt_passwd("pw-21"), "encrypted": True},
                                  "10.0.0.13": {"pk": KEY}}))
    result = adopt(tmp_path, sealer)
    assert result.secrets["cluster.ssh.password"] == "pw-0"
    assert result.secrets['cluster.ssh.hosts["10.0.0.21"].password'] == "pw-21"
    assert result.secrets["cluster.ssh.private_key"] == SSH_KEY
    assert "private_key_path" not in result.plain["cluster"]["ssh"]
    check_offline(result, tmp_path)


def test_ssh_key_stands_in_where_the_clusterfile_gives_no_usable_login(tmp_path):
    sealer = files(text(host_ssh={"10.0.0.21": {"pk": "/root/.ssh/other"}}))
    (tmp_path / "id").write_text(SSH_KEY)
    result = adopt(tmp_path, sealer, ssh_key="id")
    assert result.plain["cluster"]["ssh"]["private_key_path"] == str(tmp_path / "id")
    assert "cluster.ssh.private_key" not in result.secrets
    assert any("no usable login for 10.0.0.21" in note for note in result.notes)


@pytest.mark.parametrize("sealer, overrides, fragment", [
    (files(), {"from_ip": "10.0.0.12"}, "not the Clusterfile's master0 10.0.0.11"),
    (files(text(host_ssh={"10.0.0.21": {"pk": "/root/.ssh/other"}})), {}, "no usable login for 10.0.0.21 (no passwd"),
    (files(text(ssh={"pk": KEY, "pkPasswd": "x"})), {}, "a passphrase-protected one"),
    (files(files={}), {}, f"pk {KEY} cannot be read on master0"),
    (files(certs={}), {}, "holds no sea.hub.crt and sea.hub.key"),
    (files(history=None, flags="1.5 " + "ab" * 32 + "\n"), {}, "no application log"),
    (files(history='{"schemaVersion": "v1alpha1", "buildClient": {}}'), {},
     "holds 1 image extensions but master0's cache/registry holds 0 image ids"),
    (files(text(username="", password="")), {}, "names no registry username/password"),
])
def test_adoption_refuses_what_it_cannot_keep(tmp_path, sealer, overrides, fragment):
    with pytest.raises(CliError, match=fragment.replace("(", r"\(")):
        adopt(tmp_path, sealer, **overrides)


def test_offline_check_reports_every_problem_before_anything_is_written(tmp_path):
    """A password the htpasswd does not accept is refused with the config's own message."""
    result = adopt(tmp_path, files(htpasswd=sealer_htpasswd("sealer", "other")))
    with pytest.raises(CliError, match="registry.htpasswd: <secret> entry for 'sealer' does not match"):
        check_offline(result, tmp_path)


# -- host keys ---------------------------------------------------------------------------------


def test_fingerprint_is_ssh_keygens():
    line = HOST_KEYS[MASTERS[0]]
    assert fingerprint(line).startswith("SHA256:") and "=" not in fingerprint(line)


def test_keyscan_of_a_closed_port_pins_nothing():
    assert keyscan({"127.0.0.1": 1}) == {}
