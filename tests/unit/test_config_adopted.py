"""Config rules an adopted cluster relies on (each with accepting and rejecting cases): a stack
that names no image store (the data is the cluster's own), a registry config brought as-is, and per-host SSH settings."""

from __future__ import annotations

import pytest

from lab.sealer_state import BASEFS_REGISTRY_CONFIG
from material import build_material
from material.registry_config import brought_config_problems
from tests.unit.test_config import DELETE, PKI, assert_rejected, load, render
from topology import HostStep, Topology


# -- no image store: the data is the cluster's own, copied host to host ----------------------------


def test_a_stack_without_image_store_copies_from_the_cluster():
    """Without apps.image_store and apps.cluster_image_id the stack is valid and names no images;
    the data steps stay (master0 stamps its own data, pre-mode replicas pull it host to host)."""
    config = load(render(apps__image_store=DELETE, apps__cluster_image_id=DELETE))
    assert not config.apps.copies_data
    assert config.image_ids == []
    layout = Topology.of(config)
    steps = layout.resource_names()
    holders = [h.ip for h in layout.live_deploy if h.holds_data]
    assert holders and {HostStep.DATA.of(ip) for ip in holders} == {
        s for s in steps if s.startswith(f"{HostStep.DATA.value}-")}
    assert HostStep.ROOTFS.of("198.18.0.11") in steps


def test_a_stack_with_image_store_copies_the_cluster_image_first():
    config = load(render())
    assert config.apps.copies_data
    assert config.image_ids[0] == config.apps.cluster_image_id
    assert HostStep.DATA.of("198.18.0.12") in Topology.of(config).resource_names()


@pytest.mark.parametrize("given, missing, other", [
    ("image_store", "cluster_image_id", "image_store"),
    ("cluster_image_id", "image_store", "cluster_image_id"),
])
def test_image_store_and_cluster_image_id_come_together(given, missing, other):
    values = render(**{f"apps__{missing}": DELETE})
    assert_rejected(values, f"apps.{missing}", f"is required together with {other}")


# -- registry.config: the registry's own config, brought as-is ----------------------------------


def test_sealers_registry_config_is_accepted_and_written_as_is():
    """basefs' registry_config.yml (no TLS or auth in it: sealer's container env sets those) is
    what the hosts get, byte for byte."""
    config = load(render(registry__config=BASEFS_REGISTRY_CONFIG))
    assert config.registry.config == BASEFS_REGISTRY_CONFIG
    material = build_material(domain="sea.hub", port=5000, deploy_ips=["198.18.0.11"],
                              insecure=False, username="admin", password="s3cret-Passw0rd",
                              ca_cert=PKI.ca_cert, ca_key=PKI.ca_key,
                              registry_config=BASEFS_REGISTRY_CONFIG)
    assert material.registry_yml == BASEFS_REGISTRY_CONFIG


def test_without_a_brought_config_the_program_renders_its_own():
    material = build_material(domain="sea.hub", port=5000, deploy_ips=["198.18.0.11"],
                              insecure=False, username=None, password=None,
                              ca_cert=PKI.ca_cert, ca_key=PKI.ca_key)
    assert "rootdirectory: /var/lib/registry" in material.registry_yml
    assert material.registry_yml != BASEFS_REGISTRY_CONFIG


def test_a_config_after_sealers_sed_with_its_port_is_accepted():
    """sealer's script already ran `sed s/5000/5443/g`: the file holds its port, not 5000."""
    text = BASEFS_REGISTRY_CONFIG.replace("5000", "5443")
    assert brought_config_problems(text, 5443) == []
    load(render(registry__port=5443, registry__config=text))


@pytest.mark.parametrize("text, fragment", [
    ("version: [0.1", "is not valid YAML"),
    ("- a list", "is not a YAML mapping"),
    (BASEFS_REGISTRY_CONFIG.replace("http:\n", "http:\n  secret: s3cret\n"),
     "holds credentials (http.secret)"),
    ("version: 0.1\nstorage:\n  s3:\n    accesskey: AKIA\n    secretkey: x\n",
     "holds credentials (storage.s3.accesskey, storage.s3.secretkey)"),
])
def test_a_brought_config_that_cannot_be_kept_as_is_is_rejected(text, fragment):
    assert_rejected(render(registry__config=text), "registry.config", fragment)


def test_a_config_that_sealers_sed_would_rewrite_is_rejected():
    """basefs' file (':5000') on a cluster configured with port 5443: every launch would rewrite it."""
    assert_rejected(render(registry__port=5443, registry__config=BASEFS_REGISTRY_CONFIG),
                    "registry.config", "holds '5000' while the port is 5443")


def test_build_material_refuses_a_brought_config_it_cannot_keep():
    with pytest.raises(ValueError, match="registry.config holds credentials"):
        build_material(domain="sea.hub", port=5000, deploy_ips=["198.18.0.11"], insecure=False,
                       username=None, password=None, ca_cert=PKI.ca_cert, ca_key=PKI.ca_key,
                       registry_config="http:\n  secret: s3cret\n")


# -- cluster.ssh.hosts: per-host SSH settings ---------------------------------------------------


def test_per_host_ssh_settings_override_the_cluster_defaults_field_by_field():
    config = load(render(cluster__ssh__hosts={"198.18.0.21": {"port": 2222},
                                              "198.18.0.22": {"user": "ops", "port": 22}}))
    ssh = config.cluster.ssh
    assert (ssh.user_for("198.18.0.21"), ssh.port_for("198.18.0.21")) == ("root", 2222)
    assert (ssh.user_for("198.18.0.22"), ssh.port_for("198.18.0.22")) == ("ops", 22)
    assert (ssh.user_for("198.18.0.11"), ssh.port_for("198.18.0.11")) == ("root", 22)


@pytest.mark.parametrize("hosts, path, fragment", [
    ({"198.18.0.99": {"port": 2222}}, "cluster.ssh.hosts[198.18.0.99]", "is not a cluster host"),
    ({"node-1": {"port": 2222}}, "cluster.ssh.hosts[node-1]", "is not a valid IP address"),
    ({"198.18.0.21": {"port": 0}}, "cluster.ssh.hosts.198.18.0.21.port", ""),
    ({"198.18.0.21": {"user": "-oProxyCommand=x"}}, "cluster.ssh.hosts.198.18.0.21.user", "is not a valid user name"),
    ({"198.18.0.21": {"passwd": "x"}}, "cluster.ssh.hosts.198.18.0.21.passwd", "unknown key"),
])
def test_bad_per_host_ssh_settings_are_rejected(hosts, path, fragment):
    assert_rejected(render(cluster__ssh__hosts=hosts), path, fragment)


def test_every_ssh_client_of_the_program_uses_a_hosts_own_user_and_port(tmp_path):
    """The engine's connections, the rsync target and the CLI's ssh argv all take the per-host
    settings; other hosts keep the cluster's."""
    from cli.ssh import SshAccess as CliSsh
    from components.access import SshAccess

    config = load(render(cluster__ssh__hosts={"198.18.0.21": {"user": "ops", "port": 2222}},
                         cluster__ssh__host_keys={"198.18.0.21": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"}))
    ssh = config.cluster.ssh
    access = SshAccess(user=ssh.user, port=ssh.port, private_key="k",
                       hosts={ip: (ssh.user_for(ip), ssh.port_for(ip)) for ip in ssh.hosts})
    node, master = access.connection("198.18.0.21"), access.connection("198.18.0.11")
    assert (node.user, node.port, master.user, master.port) == ("ops", 2222, "root", 22)
    with CliSsh(config, tmp_path / "id") as cli:
        argv = cli.argv("198.18.0.21")
        assert argv[-1] == "ops@198.18.0.21" and argv[argv.index("-p") + 1] == "2222"
        assert cli.known_hosts.read_text() == "[198.18.0.21]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5\n"
        assert cli.argv("198.18.0.11")[-1] == "root@198.18.0.11"


def test_a_non_root_user_runs_every_step_through_sudo():
    """Steps on a host reached as another user than root run through `sudo -n` (never a prompt),
    rsync's remote side too; root's commands are unchanged (no diff for existing stacks)."""
    from components.access import SshAccess

    access = SshAccess(user="ops", port=22, private_key="k", hosts={"198.18.0.11": ("root", 22)})
    assert access.as_root("198.18.0.21", "bash -s -- x") == "sudo -n bash -s -- x"
    assert access.as_root("198.18.0.11", "bash -s -- x") == "bash -s -- x"
    assert "--sudo" in access.rsync_flags("198.18.0.21")
    assert "--sudo" not in access.rsync_flags("198.18.0.11")


# -- SSH passwords ------------------------------------------------------------------------------


def test_a_password_alone_is_a_login_and_a_hosts_own_password_wins():
    config = load(render(cluster__ssh__private_key_path=DELETE, cluster__ssh__password="pw-0",
                         cluster__ssh__hosts={"198.18.0.21": {"password": "pw-21"}}))
    ssh = config.cluster.ssh
    assert not ssh.has_key
    assert ssh.password_for("198.18.0.21").get_secret_value() == "pw-21"
    assert ssh.password_for("198.18.0.11").get_secret_value() == "pw-0"


def test_hosts_without_a_key_or_password_are_named():
    values = render(cluster__ssh__private_key_path=DELETE,
                    cluster__ssh__hosts={"198.18.0.21": {"password": "pw-21"}})
    assert_rejected(values, "cluster.ssh", "a password for every host (none for 198.18.0.11, "
                                           "198.18.0.12, 198.18.0.13, 198.18.0.22)")


@pytest.mark.parametrize("password, fragment", [("", "must not be empty"),
                                                ("pw\nroot", "holds a line break")])
def test_a_password_that_cannot_travel_as_one_line_is_rejected(password, fragment):
    assert_rejected(render(cluster__ssh__password=password), "cluster.ssh.password", fragment)
    assert_rejected(render(cluster__ssh__hosts={"198.18.0.21": {"password": password}}),
                    "cluster.ssh.hosts.198.18.0.21.password", fragment)


def test_the_engine_and_rsync_log_in_with_a_hosts_password():
    from components.access import SshAccess

    access = SshAccess(user="root", port=22, private_key="key", password="pw-0",
                       passwords={"198.18.0.21": "pw-21"})
    assert access.connection("198.18.0.21").password == "pw-21"
    assert access.connection("198.18.0.11").password == "pw-0"
    assert access.rsync_flags("198.18.0.21")[0] == "--password-stdin"
    assert access.rsync_secret("198.18.0.21") == "pw-21"
    keyed = SshAccess(user="root", port=22, private_key="key")
    assert (keyed.rsync_flags("198.18.0.11")[0], keyed.rsync_secret("198.18.0.11")) == ("--key-stdin", "key")


def test_one_secret_is_the_key_where_the_cluster_has_both_key_and_password():
    """sealer keeps both pk and passwd (and tries both); where one secret must do, the key goes
    first: a passwd left stale in a Clusterfile must not lock the program out."""
    from components.access import SshAccess

    both = SshAccess(user="root", port=22, private_key="key", password="pw-0")
    assert (both.rsync_flags("198.18.0.11")[0], both.rsync_secret("198.18.0.11")) == ("--key-stdin", "key")
    only = SshAccess(user="root", port=22, private_key=None, password="pw-0")
    assert (only.rsync_flags("198.18.0.11")[0], only.rsync_secret("198.18.0.11")) == ("--password-stdin", "pw-0")
