"""Rules of the stack config (config/, a module per section): every rule has an accepting and a rejecting test.

`render(**overrides)` builds a valid config as plain values (secrets decrypted, as the program
sees them at run time); an override key is a path with `__` for `.` and list indexes, e.g.
`render(cluster__masters__1="10.0.0.300")`, and the value DELETE removes the key.
"""

from __future__ import annotations

import copy
import datetime
import json

import bcrypt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from config import ConfigError, StackConfig, build_config
from config import AppType, Distribution

DELETE = object()
IMG = "sha256:" + "ab" * 32
IMG1 = "sha256:" + "ef" * 32
CLUSTER_IMG = "sha256:" + "cd" * 32
STORE = "store.example.com"
PASSWORD = "s3cret-Passw0rd"


def _pem_key(key) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _cert(subject: str, key, issuer: str, issuer_key, ca: bool) -> str:
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


class PKI:
    ca_key_obj = ec.generate_private_key(ec.SECP256R1())
    leaf_key_obj = ec.generate_private_key(ec.SECP256R1())
    other_key_obj = ec.generate_private_key(ec.SECP256R1())
    ca_key = _pem_key(ca_key_obj)
    ca_cert = _cert("test CA", ca_key_obj, "test CA", ca_key_obj, ca=True)
    leaf_key = _pem_key(leaf_key_obj)
    leaf_cert = _cert("sea.hub", leaf_key_obj, "test CA", ca_key_obj, ca=False)
    other_key = _pem_key(other_key_obj)
    # A leaf signed by a different CA (same issuer name, other key): must not pass as issued by ca_cert.
    foreign_cert = _cert("sea.hub", leaf_key_obj, "test CA", other_key_obj, ca=False)
    ssh_key = (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
        .decode()
    )
    htpasswd = "admin:" + bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode() + "\n"


def pinned(ref: str, digest_byte: str) -> str:
    """``ref`` pinned by a made-up manifest digest (``digest_byte`` repeated): an image store ref."""
    return f"{ref}@sha256:{digest_byte * 32}"


def base_values() -> dict:
    return {
        "master0": "198.18.0.11",
        "down_hosts": [],
        "distribution": "pre",
        "cluster": {
            "name": "my-cluster",
            "data_root": "/var/lib/sealer/data",
            "masters": ["198.18.0.11", "198.18.0.12", "198.18.0.13"],
            "nodes": ["198.18.0.21", "198.18.0.22"],
            "ssh": {"user": "root", "port": 22, "private_key_path": "~/.ssh/id_ed25519"},
        },
        "registry": {
            "domain": "sea.hub",
            "port": 5000,
            "username": "admin",
            "password": PASSWORD,
            "local_registry": {"deploy_hosts": ["198.18.0.11", "198.18.0.12"], "insecure_mode": False},
            "tls": {"ca_cert": PKI.ca_cert, "ca_key": PKI.ca_key},
        },
        "apps": {
            "history": {
                "type": "boot",
                "applications": [
                    {"name": "app0", "image_id": IMG, "type": "helm", "launch_cmd": "helm install app0", "version": "v1"},
                    {"name": "app1", "image_id": IMG1, "type": "kube"},
                ],
                "launch": {"app_names": ["app0", "app1"]},
            },
            "image_store": {"registry": STORE, "images": {
                CLUSTER_IMG: [pinned("sealer/cluster-base:v1.22.15", "c0")],
                IMG: [pinned("library/app0:v1", "a0"), pinned("library/app0-init:v1", "a1")],
                IMG1: [pinned("library/app1:latest", "b0")],
            }},
            "cluster_image_id": CLUSTER_IMG,
        },
        "kubernetes": {"kubeconfig_path": "~/.kube/config"},
    }


def _parts(path: str) -> list:
    return [int(p) if p.isdigit() else p for p in path.split("__")]


def apply(values: dict, parts: list, value) -> None:
    node = values
    for part in parts[:-1]:
        if isinstance(node, dict) and part not in node:
            node[part] = {}
        node = node[part]
    last = parts[-1]
    if value is DELETE:
        del node[last]
    elif isinstance(node, list) and last == len(node):
        node.append(value)
    else:
        node[last] = value


def render(**overrides) -> dict:
    values = copy.deepcopy(base_values())
    for path, value in overrides.items():
        apply(values, _parts(path), value)
    return values


def load(values: dict, **kwargs) -> StackConfig:
    return build_config(values, **kwargs)


def problems(values: dict, **kwargs) -> list[str]:
    with pytest.raises(ConfigError) as info:
        build_config(values, **kwargs)
    return info.value.lines()


def assert_rejected(values: dict, path: str, fragment: str = "") -> list[str]:
    lines = problems(values)
    matching = [line for line in lines if line.startswith(f"error: {path}: ") and fragment in line]
    assert matching, f"no problem at {path!r} containing {fragment!r}; got:\n" + "\n".join(lines)
    return lines


# -- the base is valid ------------------------------------------------------------------------


def test_rendered_base_config_is_valid():
    """The render() baseline passes every rule, so each reject test isolates one rule."""
    config = load(render())
    assert config.distribution is Distribution.PRE
    assert config.history.applications[0].type is AppType.HELM


# -- IP addresses -----------------------------------------------------------------------------


def test_ipv6_hosts_are_refused_everywhere_an_ip_is_taken():
    """rsync, ssh and curl targets are built for IPv4: an IPv6 host is refused in every list, with
    the reason, instead of failing later in a target like `root@fd00::11:/path`."""
    values = render(
        master0="fd00::11",
        cluster__masters=["fd00::11", "198.18.0.12"],
        cluster__nodes=["fd00::21"],
        down_hosts=["::ffff:198.18.0.12"],
        registry__local_registry__deploy_hosts=["FD00::11"],
        cluster__ssh__host_keys={"fd00::21": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"},
        cluster__ssh__jump_host={"host": "fd00::1"},
    )
    lines = problems(values)
    why = "IPv6 hosts are not supported yet: rsync/ssh/curl targets are built for IPv4"
    for path, value in [("master0", "'fd00::11'"), ("cluster.masters[0]", "'fd00::11'"),
                        ("cluster.nodes[0]", "'fd00::21'"), ("down_hosts[0]", "'::ffff:198.18.0.12'"),
                        ("registry.local_registry.deploy_hosts[0]", "'FD00::11'"),
                        ("cluster.ssh.host_keys[fd00::21]", "'fd00::21'"),
                        ("cluster.ssh.jump_host.host", "'fd00::1'")]:
        assert f"error: {path}: {value}: {why}; give the host's IPv4 address" in lines, "\n".join(lines)


def test_invalid_ip_is_rejected_with_value_in_message():
    """A malformed IP is reported at its list index, quoting the value."""
    lines = problems(render(cluster__masters__1="10.0.0.300"))
    assert "error: cluster.masters[1]: '10.0.0.300' is not a valid IP address" in lines


def test_invalid_master0_ip_is_rejected():
    """master0 must be an IP address, not a host name."""
    assert_rejected(render(master0="master-0"), "master0", "'master-0' is not a valid IP address")


def test_non_string_ip_is_rejected():
    """An IP given as a number (YAML 10) is a type error that shows the value."""
    assert_rejected(render(cluster__nodes__0=10), "cluster.nodes[0]", "expected a string, got 10")


def test_unique_hosts_are_accepted():
    """Distinct masters and nodes are fine."""
    assert load(render()).hosts == ["198.18.0.11", "198.18.0.12", "198.18.0.13", "198.18.0.21", "198.18.0.22"]


def test_node_that_is_also_a_master_is_rejected():
    """An IP may appear once across masters and nodes."""
    assert_rejected(render(cluster__nodes__0="198.18.0.12"), "cluster.nodes[0]", "198.18.0.12 is also listed at cluster.masters[1]")


def test_duplicate_master_is_rejected():
    """The same master listed twice is a mistake, not a no-op."""
    assert_rejected(render(cluster__masters__2="198.18.0.11"), "cluster.masters[2]", "listed twice")


def test_empty_masters_is_rejected():
    """A cluster has at least one master (master0)."""
    assert_rejected(render(cluster__masters=[]), "cluster.masters", "at least one master")


# -- master0 / down_hosts / deploy_hosts ------------------------------------------------------


def test_master0_may_be_any_master():
    """Recovery moves master0 to another master."""
    config = load(render(master0="198.18.0.12"))
    assert config.master0 == "198.18.0.12"


def test_master0_that_is_a_node_is_rejected():
    """master0 must be one of cluster.masters; the message lists them."""
    lines = problems(render(master0="198.18.0.21", registry__local_registry__deploy_hosts=["198.18.0.21"]))
    assert "error: master0: 198.18.0.21 is not a master (masters: 198.18.0.11, 198.18.0.12, 198.18.0.13)" in lines


def test_down_host_other_than_master0_is_accepted():
    """A dead node or replica is declared in down_hosts and left out of live_hosts."""
    config = load(render(down_hosts=["198.18.0.12", "198.18.0.21"]))
    assert config.live_hosts == ["198.18.0.11", "198.18.0.13", "198.18.0.22"]
    assert config.live_deploy_hosts == ["198.18.0.11"]


def test_master0_in_down_hosts_is_rejected():
    """A dead master0 must be replaced by choosing a live master, not kept and marked down."""
    assert_rejected(render(down_hosts=["198.18.0.11"]), "master0", "198.18.0.11 is listed in down_hosts")


def test_down_host_outside_cluster_is_rejected():
    """down_hosts names cluster hosts only (a typo would otherwise silently keep a host live)."""
    assert_rejected(render(down_hosts=["198.18.0.99"]), "down_hosts[0]", "198.18.0.99 is not a cluster host")


def test_deploy_hosts_default_to_master0():
    """Without local_registry.deploy_hosts the registry runs on master0 only."""
    values = render(registry__local_registry__deploy_hosts=DELETE)
    assert load(values).deploy_hosts == ["198.18.0.11"]


def test_deploy_host_may_be_a_node():
    """Any cluster host may carry a replica."""
    assert load(render(registry__local_registry__deploy_hosts=["198.18.0.11", "198.18.0.21"])).deploy_hosts[1] == "198.18.0.21"


def test_deploy_host_outside_cluster_is_rejected():
    """Every deploy host is a cluster host."""
    assert_rejected(
        render(registry__local_registry__deploy_hosts__2="198.18.0.99"),
        "registry.local_registry.deploy_hosts[2]",
        "198.18.0.99 is not a cluster host",
    )


def test_deploy_hosts_without_master0_are_rejected():
    """master0 always serves the registry (its /etc/hosts alias points at master0)."""
    assert_rejected(
        render(registry__local_registry__deploy_hosts=["198.18.0.12"]),
        "registry.local_registry.deploy_hosts",
        "master0 198.18.0.11 is not a deploy host",
    )


def test_empty_deploy_hosts_is_rejected():
    """An explicit empty list is a mistake; omit the key to get the default."""
    assert_rejected(render(registry__local_registry__deploy_hosts=[]), "registry.local_registry.deploy_hosts", "at least one host")


def test_duplicate_deploy_host_is_rejected():
    """A replica listed twice is reported at its index."""
    assert_rejected(
        render(registry__local_registry__deploy_hosts__2="198.18.0.11"),
        "registry.local_registry.deploy_hosts[2]",
        "listed twice",
    )


# -- ports ------------------------------------------------------------------------------------


@pytest.mark.parametrize("port", [1, 5000, 65535])
def test_registry_port_in_range_is_accepted(port):
    """Ports 1-65535 are valid."""
    assert load(render(registry__port=port)).registry.port == port


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_registry_port_out_of_range_is_rejected(port):
    """Port 0 and above 65535 are rejected, quoting the value."""
    assert_rejected(render(registry__port=port), "registry.port", f"{port} is not a valid port")


@pytest.mark.parametrize("port", [5001, 4999, 500, 5005, 50])
def test_registry_port_surviving_sealers_sed_is_accepted(port):
    """sealer's init-registry.sh runs `sed s/5000/PORT/g` on the config: ports without '5000'
    come out of it unchanged."""
    assert load(render(registry__port=port)).registry.port == port


@pytest.mark.parametrize("port, grown", [(15000, ":115000"), (50001, ":500011"), (25000, ":225000")])
def test_registry_port_grown_by_sealers_sed_is_rejected(port, grown):
    """A port containing '5000' (other than 5000) would grow under sealer's sed on every launch."""
    assert_rejected(render(registry__port=port), "registry.port", f"turning ':{port}' into '{grown}'")


@pytest.mark.parametrize("domain", ["hub5000.local", "r-5000"])
def test_registry_domain_with_sealers_sed_token_is_rejected(domain):
    """A domain containing '5000' is in the config's TLS paths, which sealer's sed would rewrite."""
    assert_rejected(render(registry__domain=domain), "registry.domain", "contains '5000'")


def test_ssh_port_in_range_is_accepted():
    """A non-default SSH port is used as given."""
    assert load(render(cluster__ssh__port=2222)).cluster.ssh.port == 2222


def test_ssh_port_out_of_range_is_rejected():
    """The SSH port obeys the same range."""
    assert_rejected(render(cluster__ssh__port=70000), "cluster.ssh.port", "70000 is not a valid port")


def test_port_as_string_is_rejected():
    """Ports are integers; a quoted "5000" is a type error rather than a silent conversion."""
    assert_rejected(render(registry__port="5000"), "registry.port", "expected an integer, got '5000'")


# -- registry domain, credentials -------------------------------------------------------------


@pytest.mark.parametrize("domain", ["sea.hub", "registry-1.example.com", "hub", "a" * 63 + ".io"])
def test_valid_domain_is_accepted(domain):
    """RFC 1123 names: letters, digits, '-', labels up to 63 characters."""
    assert load(render(registry__domain=domain)).registry.domain == domain


@pytest.mark.parametrize(
    "domain, fragment",
    [
        ("-sea.hub", "is not a valid DNS name"),
        ("sea_hub", "is not a valid DNS name"),
        ("sea..hub", "is not a valid DNS name"),
        ("a" * 64 + ".io", "is not a valid DNS name"),
        ("10.0.0.1", "is an IP address"),
        ("", "is not a valid DNS name"),
    ],
)
def test_invalid_domain_is_rejected(domain, fragment):
    """Anything that is not a DNS host name is rejected with the value quoted."""
    assert_rejected(render(registry__domain=domain), "registry.domain", fragment)


def test_registry_without_credentials_is_accepted():
    """username and password may both be omitted (no auth)."""
    config = load(render(registry__username=DELETE, registry__password=DELETE))
    assert config.registry.username is None and config.registry.password is None


def test_username_without_password_is_rejected():
    """username and password come together."""
    assert_rejected(render(registry__password=DELETE), "registry.password", "is required when username is set (username: 'admin')")


def test_password_without_username_is_rejected():
    """A password alone cannot be used."""
    assert_rejected(render(registry__username=DELETE), "registry.username", "is required when password is set")


def test_username_with_colon_is_rejected():
    """htpasswd uses ':' as separator, so a user name may not contain it."""
    assert_rejected(render(registry__username="ad:min"), "registry.username", "'ad:min' is not a valid user name (letters, digits, '.', '_' and '-', 1-64 characters")


def test_password_is_a_secret_str_and_never_printed():
    """The password is SecretStr; neither the model repr nor an error reveals it."""
    config = load(render())
    assert config.registry.password.get_secret_value() == PASSWORD
    assert PASSWORD not in repr(config)
    lines = problems(render(registry__port=0, registry__username=DELETE))
    assert all(PASSWORD not in line for line in lines)


# -- TLS ----------------------------------------------------------------------------------------


def test_tls_is_required_in_secure_mode():
    """Without insecure_mode the registry serves TLS, so tls must be given."""
    assert_rejected(render(registry__tls=DELETE), "registry.tls", "is required unless local_registry.insecure_mode is true")


def test_insecure_mode_without_tls_is_accepted():
    """insecure_mode runs a plain-HTTP registry and needs no TLS material."""
    config = load(render(registry__tls=DELETE, registry__local_registry__insecure_mode=True))
    assert config.registry.local_registry.insecure_mode is True


def test_insecure_mode_with_tls_is_rejected():
    """TLS material in insecure mode would be silently ignored; that contradiction is an error."""
    assert_rejected(render(registry__local_registry__insecure_mode=True), "registry.tls", "must not be set")


def test_insecure_mode_must_be_boolean():
    """insecure_mode is true/false, not a string."""
    assert_rejected(render(registry__local_registry__insecure_mode="yes"), "registry.local_registry.insecure_mode", "expected true or false, got 'yes'")


def test_tls_adopting_leaf_only_is_accepted():
    """cert+key alone adopts an existing leaf (sealer cluster adoption)."""
    config = load(render(registry__tls={"cert": PKI.leaf_cert, "key": PKI.leaf_key}))
    assert config.registry.tls.ca_key is None


def test_tls_with_ca_and_leaf_is_accepted():
    """A CA plus a leaf it issued is accepted."""
    tls = {"ca_cert": PKI.ca_cert, "ca_key": PKI.ca_key, "cert": PKI.leaf_cert, "key": PKI.leaf_key}
    assert load(render(registry__tls=tls)).registry.tls.cert == PKI.leaf_cert


def test_tls_with_ca_cert_only_is_rejected():
    """A CA certificate without its key can neither issue a leaf nor serve."""
    assert_rejected(render(registry__tls={"ca_cert": PKI.ca_cert}), "registry.tls", "needs ca_cert+ca_key")


def test_tls_cert_without_key_is_rejected():
    """An adopted leaf needs its key."""
    assert_rejected(render(registry__tls={"cert": PKI.leaf_cert}), "registry.tls.key", "is required together with cert")


def test_tls_ca_key_without_ca_cert_is_rejected():
    """A CA key is useless without the CA certificate."""
    assert_rejected(render(registry__tls={"ca_key": PKI.ca_key, "cert": PKI.leaf_cert, "key": PKI.leaf_key}), "registry.tls.ca_cert", "is required together with ca_key")


def test_tls_cert_that_is_not_pem_is_rejected():
    """Certificates must parse; the message quotes the bad value."""
    assert_rejected(render(registry__tls__ca_cert="not a cert"), "registry.tls.ca_cert", "'not a cert' is not a PEM certificate")


def test_tls_key_that_is_not_pem_is_rejected_without_showing_it():
    """Keys must parse; the message says <secret> instead of the value."""
    lines = assert_rejected(render(registry__tls__ca_key="garbage-key"), "registry.tls.ca_key", "<secret> is not a PEM private key")
    assert all("garbage-key" not in line for line in lines)


def test_tls_key_not_matching_cert_is_rejected():
    """ca_key must be the key of ca_cert."""
    assert_rejected(render(registry__tls__ca_key=PKI.other_key), "registry.tls.ca_key", "does not match the public key of ca_cert")


def test_tls_leaf_not_issued_by_ca_is_rejected():
    """An adopted leaf must chain to the given CA, or nodes trusting the CA would reject it."""
    tls = {"ca_cert": PKI.ca_cert, "ca_key": PKI.ca_key, "cert": PKI.foreign_cert, "key": PKI.leaf_key}
    assert_rejected(render(registry__tls=tls), "registry.tls.cert", "is not issued by ca_cert")


# -- htpasswd ---------------------------------------------------------------------------------


def test_htpasswd_matching_credentials_is_accepted():
    """An adopted htpasswd with a bcrypt entry for the username and password is accepted."""
    assert load(render(registry__htpasswd=PKI.htpasswd)).registry.htpasswd is not None


def test_htpasswd_without_entry_for_username_is_rejected():
    """The program logs in as registry.username, so the file must contain that user."""
    assert_rejected(render(registry__htpasswd=PKI.htpasswd.replace("admin:", "other:")), "registry.htpasswd", "no entry for username 'admin'")


def test_htpasswd_with_other_password_is_rejected():
    """The entry must match registry.password."""
    assert_rejected(render(registry__password="wrong-password", registry__htpasswd=PKI.htpasswd), "registry.htpasswd", "does not match registry.password")


def test_htpasswd_with_non_bcrypt_hash_is_rejected():
    """The distribution registry accepts only bcrypt hashes."""
    assert_rejected(render(registry__htpasswd="admin:{SHA}abcdef\n"), "registry.htpasswd", "line 1 is not 'user:<bcrypt hash>'")


def test_htpasswd_without_credentials_is_rejected():
    """With htpasswd auth the program itself needs username and password."""
    values = render(registry__username=DELETE, registry__password=DELETE, registry__htpasswd=PKI.htpasswd)
    assert_rejected(values, "registry.htpasswd", "requires username and password")


# -- images and applications ------------------------------------------------------------------


def test_image_ids_are_accepted_and_deduplicated():
    """image_ids lists the cluster image first, then each distinct application image."""
    config = load(render(apps__history__applications__1__image_id=IMG))
    assert config.image_ids == [CLUSTER_IMG, IMG]


@pytest.mark.parametrize(
    "image_id",
    ["sha256:" + "AB" * 32, "ab" * 32, "sha256:" + "a" * 63, "sha512:" + "ab" * 32, "sha256:" + "g" * 64],
)
def test_invalid_application_image_id_is_rejected(image_id):
    """image_id is 'sha256:' + 64 lowercase hex digits."""
    assert_rejected(render(apps__history__applications__0__image_id=image_id), "apps.history.applications[0].image_id", "is not an image id")


def test_invalid_cluster_image_id_is_rejected():
    """cluster_image_id follows the same format."""
    assert_rejected(render(apps__cluster_image_id="sha256:xyz"), "apps.cluster_image_id", "'sha256:xyz' is not an image id")


def test_duplicate_application_name_is_rejected():
    """Application names are unique (launch refers to them by name)."""
    assert_rejected(render(apps__history__applications__1__name="app0"), "apps.history.applications[1].name", "listed twice")


@pytest.mark.parametrize("app_type", ["helm", "kube", "shell"])
def test_application_type_helm_kube_or_shell_is_accepted(app_type):
    """sealer knows helm, kube and shell applications (pkg/define/application/types.go@v0.11.0)."""
    assert load(render(apps__history__applications__0__type=app_type)).history.applications[0].type == app_type


@pytest.mark.parametrize("untyped", ["missing", None])
def test_an_application_with_no_type_is_accepted(untyped):
    """sealer writes no `type` when its build found none (omitempty): the app has type null."""
    stack = render()
    app = stack["apps"]["history"]["applications"][0]
    if untyped == "missing":
        del app["type"]
    else:
        app["type"] = None
    assert load(stack).history.applications[0].type is None


@pytest.mark.parametrize("bad", ["chart", "unknown", ""])
def test_unknown_application_type_is_rejected(bad):
    """Any other application type is rejected, naming the allowed ones (sealer's build never
    writes `unknown`: it leaves the type out)."""
    assert_rejected(render(apps__history__applications__0__type=bad), "apps.history.applications[0].type", f"{bad!r} is not one of 'helm', 'kube' or 'shell'")


def test_launch_naming_unknown_application_is_rejected():
    """launch.app_names entries refer to applications."""
    assert_rejected(render(apps__history__launch__app_names__2="app9"), "apps.history.launch.app_names[2]", "'app9' names no application")


def test_empty_launch_is_accepted():
    """A history may launch nothing."""
    assert load(render(apps__history__launch__app_names=[])).history.launch.app_names == []


def test_history_and_history_file_together_are_rejected():
    """Exactly one of history / history_file."""
    assert_rejected(render(apps__history_file="/tmp/application.json"), "apps", "exactly one of history / history_file")


def test_neither_history_nor_history_file_is_rejected():
    """One source of boot history is required."""
    assert_rejected(render(apps__history=DELETE), "apps", "neither is set")


def test_history_file_is_loaded_relative_to_base_dir(tmp_path):
    """history_file is read at load time; a relative path is resolved against the project dir."""
    (tmp_path / "application.json").write_text(json.dumps(base_values()["apps"]["history"]))
    config = load(render(apps__history=DELETE, apps__history_file="application.json"), base_dir=tmp_path)
    assert [a.name for a in config.history.applications] == ["app0", "app1"]


def test_missing_history_file_is_rejected_with_its_path(tmp_path):
    """A missing file is reported at apps.history_file with the path."""
    lines = problems(render(apps__history=DELETE, apps__history_file="nope.json"), base_dir=tmp_path)
    assert any(line.startswith("error: apps.history_file: cannot read nope.json") and str(tmp_path) in line for line in lines)


def test_history_file_with_invalid_json_is_rejected(tmp_path):
    """A file that is not JSON is reported with its path."""
    (tmp_path / "h.json").write_text("{not json")
    lines = problems(render(apps__history=DELETE, apps__history_file=str(tmp_path / "h.json")))
    assert any(line.startswith(f"error: apps.history_file: {tmp_path / 'h.json'} is not valid JSON") for line in lines)


def test_history_file_with_invalid_content_is_rejected(tmp_path):
    """Problems inside the file name apps.history_file, the path, and the field inside."""
    history = base_values()["apps"]["history"]
    history["applications"][0]["image_id"] = "sha256:bad"
    (tmp_path / "h.json").write_text(json.dumps(history))
    lines = problems(render(apps__history=DELETE, apps__history_file=str(tmp_path / "h.json")))
    assert f"error: apps.history_file: {tmp_path / 'h.json'}: applications[0].image_id: 'sha256:bad' is not an image id ('sha256:' followed by 64 lowercase hex digits)" in lines


# -- cluster ----------------------------------------------------------------------------------


def test_dns_label_cluster_name_is_accepted():
    """Cluster names are DNS-label-like."""
    assert load(render(cluster__name="prod-01")).cluster.name == "prod-01"


@pytest.mark.parametrize("name", ["My_Cluster", "-x", "x-", "a" * 64, ""])
def test_invalid_cluster_name_is_rejected(name):
    """Uppercase, underscores, edge dashes and long names are rejected."""
    assert_rejected(render(cluster__name=name), "cluster.name", "is not a valid cluster name")


def test_absolute_data_root_is_accepted_and_rootfs_derived():
    """rootfs = <data_root>/<name>/rootfs."""
    config = load(render(cluster__data_root="/data/sealer/"))
    assert config.rootfs == "/data/sealer/my-cluster/rootfs"


def test_default_data_root_is_sealers():
    """Without data_root, sealer's default is used."""
    assert load(render(cluster__data_root=DELETE)).rootfs == "/var/lib/sealer/data/my-cluster/rootfs"


@pytest.mark.parametrize("root, fragment", [("var/lib/sealer", "is not an absolute path"), ("/var/../etc", "must not contain '..'")])
def test_relative_or_escaping_data_root_is_rejected(root, fragment):
    """data_root is an absolute path without '..'."""
    assert_rejected(render(cluster__data_root=root), "cluster.data_root", fragment)


# -- ssh --------------------------------------------------------------------------------------


def test_ssh_inline_private_key_is_accepted():
    """An inline key (a Pulumi secret) replaces private_key_path."""
    config = load(render(cluster__ssh__private_key_path=DELETE, cluster__ssh__private_key=PKI.ssh_key))
    assert config.cluster.ssh.private_key.get_secret_value() == PKI.ssh_key


def test_ssh_with_both_key_sources_is_rejected():
    """Exactly one of private_key / private_key_path."""
    assert_rejected(render(cluster__ssh__private_key=PKI.ssh_key), "cluster.ssh", "both are set")


def test_ssh_without_key_is_rejected():
    """The program needs one way to log in."""
    assert_rejected(render(cluster__ssh__private_key_path=DELETE), "cluster.ssh",
                    "needs private_key or private_key_path, or a password for every host")


def test_ssh_private_key_that_does_not_parse_is_rejected():
    """An inline key must be a usable private key; the value is never shown."""
    values = render(cluster__ssh__private_key_path=DELETE, cluster__ssh__private_key="nonsense")
    assert_rejected(values, "cluster.ssh.private_key", "<secret> is not an SSH private key")


def test_ssh_defaults():
    """user root, port 22."""
    ssh = load(render(cluster__ssh={"private_key_path": "/k"})).cluster.ssh
    assert (ssh.user, ssh.port) == ("root", 22)


def test_host_keys_of_cluster_hosts_are_accepted():
    """host_keys pins the key of each listed host."""
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE1lZmFrZWtleWZha2VrZXlmYWtla2V5ZmFrZWtleQ=="
    config = load(render(cluster__ssh__host_keys={"198.18.0.11": key}))
    assert config.cluster.ssh.host_keys == {"198.18.0.11": key}


def test_host_key_for_unknown_host_is_rejected():
    """A pinned key for a host outside the cluster is a typo."""
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"
    assert_rejected(render(cluster__ssh__host_keys={"198.18.0.99": key}), "cluster.ssh.host_keys[198.18.0.99]", "is not a cluster host")


def test_malformed_host_key_is_rejected():
    """A host key is '<type> <base64>'."""
    assert_rejected(render(cluster__ssh__host_keys={"198.18.0.11": "not-a-key"}), "cluster.ssh.host_keys[198.18.0.11]", "'not-a-key' is not a public host key")


@pytest.mark.parametrize("host", ["1.2.3.4", "bastion.example.com"])
def test_jump_host_ip_or_name_is_accepted(host):
    """The jump host may be an IP or a DNS name; user and port default to root/22."""
    jump = load(render(cluster__ssh__jump_host={"host": host})).cluster.ssh.jump_host
    assert (jump.host, jump.user, jump.port) == (host, "root", 22)


def test_invalid_jump_host_is_rejected():
    """Anything else is rejected with the value."""
    assert_rejected(render(cluster__ssh__jump_host={"host": "bad host"}), "cluster.ssh.jump_host.host", "'bad host' is neither an IP address nor a valid DNS name")


# -- kubernetes -------------------------------------------------------------------------------


def test_cluster_identifier_defaults_to_cluster_name():
    """Keeps the kubernetes provider identity off master0's IP."""
    assert load(render()).kubernetes.cluster_identifier == "my-cluster"


def test_explicit_cluster_identifier_is_kept():
    """An explicit identifier wins over the default."""
    assert load(render(kubernetes__cluster_identifier="other")).kubernetes.cluster_identifier == "other"


def test_kubernetes_with_both_sources_is_rejected():
    """Exactly one of kubeconfig / kubeconfig_path."""
    assert_rejected(render(kubernetes__kubeconfig="apiVersion: v1\nclusters: []\n"), "kubernetes", "both are set")


def test_kubernetes_without_source_is_rejected():
    """The provider needs a kubeconfig."""
    assert_rejected(render(kubernetes__kubeconfig_path=DELETE), "kubernetes", "neither is set")


def test_inline_kubeconfig_is_accepted():
    """An inline kubeconfig is a YAML document with clusters; context must be one of its contexts."""
    kubeconfig = "apiVersion: v1\nclusters: []\ncontexts:\n- name: lab\n"
    config = load(render(kubernetes={"kubeconfig": kubeconfig, "context": "lab"}))
    assert config.kubernetes.context == "lab"


def test_inline_kubeconfig_with_unknown_context_is_rejected():
    """A context that the kubeconfig does not define is reported with the known ones."""
    kubeconfig = "apiVersion: v1\nclusters: []\ncontexts:\n- name: lab\n"
    assert_rejected(render(kubernetes={"kubeconfig": kubeconfig, "context": "prod"}), "kubernetes.context", "'prod' is not a context of kubeconfig (contexts: lab)")


# -- vocabularies, unknown keys ---------------------------------------------------------------


@pytest.mark.parametrize("mode", ["pre", "post"])
def test_distribution_pre_or_post_is_accepted(mode):
    """distribution is a StrEnum."""
    assert load(render(distribution=mode)).distribution == mode


def test_unknown_distribution_is_rejected():
    """Other modes are rejected, naming the allowed ones."""
    assert_rejected(render(distribution="middle"), "distribution", "'middle' is not one of 'pre' or 'post'")


def test_missing_required_key_is_reported():
    """A missing top-level key is named."""
    assert_rejected(render(master0=DELETE), "master0", "is required")


@pytest.mark.parametrize(
    "path, dotted",
    [
        ("extra", "extra"),
        ("cluster__sshh", "cluster.sshh"),
        ("cluster__ssh__jump_host__hots", "cluster.ssh.jump_host.hots"),
        ("registry__tls__ca_crt", "registry.tls.ca_crt"),
        ("registry__local_registry__insecure", "registry.local_registry.insecure"),
        ("apps__history__applications__0__image", "apps.history.applications[0].image"),
        ("apps__history__launch__apps", "apps.history.launch.apps"),
        ("kubernetes__ctx", "kubernetes.ctx"),
    ],
)
def test_unknown_keys_are_rejected_everywhere(path, dotted):
    """Every model forbids extra keys, so a typo is never silently ignored."""
    assert_rejected(render(**{path: "x"}), dotted, "unknown key")


def test_unknown_key_suggests_the_closest_field():
    """The message lists the allowed keys and the likely intended one."""
    lines = problems(render(registry__passwrd="x"))
    assert any("did you mean 'password'?" in line and "allowed: domain, port" in line for line in lines)


# -- error reporting --------------------------------------------------------------------------


def test_every_problem_is_one_error_line():
    """Each line is `error: <dotted.path>: <message>`."""
    for line in problems(render(registry__port=0, cluster__masters__1="x")):
        assert line.startswith("error: ") and line.count(": ") >= 2


def test_all_problems_are_collected_in_one_pass():
    """Field errors in several sections and a cross-section rule are reported together."""
    values = render(
        registry__port=0,
        cluster__name="Bad_Name",
        apps__history__applications__0__type="chart",
        apps__history__launch__app_names__2="app9",
        down_hosts=["198.18.0.99"],
    )
    paths = {line.split(": ")[1] for line in problems(values)}
    assert {
        "registry.port",
        "cluster.name",
        "apps.history.applications[0].type",
        "apps.history.launch.app_names[2]",
        "down_hosts[0]",
    } <= paths


def test_config_error_is_a_value_error_with_problem_list():
    """ConfigError derives from ValueError and exposes (path, message) pairs."""
    with pytest.raises(ValueError) as info:
        build_config(render(registry__port=0))
    assert isinstance(info.value, ConfigError)
    assert info.value.problems[0].path == "registry.port"
    assert "registry.port" in str(info.value)


def test_derived_views():
    """hosts, live_hosts, deploy_hosts, rootfs and history are what components consume."""
    config = load(render(down_hosts=["198.18.0.22"]))
    assert config.hosts[:3] == config.cluster.masters
    assert "198.18.0.22" not in config.live_hosts
    assert config.deploy_hosts == ["198.18.0.11", "198.18.0.12"]
    assert config.rootfs == "/var/lib/sealer/data/my-cluster/rootfs"
    assert config.history.launch.app_names == ["app0", "app1"]
