"""A table of invalid stack files: each exits `validate` with 2 and names the offending field.

Every case edits a copy of Pulumi.dev.yaml (paths are relative to the `sealer-registry:`
namespace; `[i]` indexes lists) and runs `python -m cli validate` in-process. The table is meant
to grow (the security issue reuses it): add a row, not a test function.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

import cli

REPO = Path(__file__).resolve().parents[2]
DEV = yaml.safe_load((REPO / "Pulumi.dev.yaml").read_text())
NS = "sealer-registry"
DELETE = object()
SECURE = {"secure": "v1:cGxhY2Vob2xkZXIh:UkVQTEFDRQ=="}
LEAKED = "Plaintext-Leak-9f3c"  # a plaintext secret that must never be echoed
STORE_IMAGES = "apps.image_store.images"
APP0_IMG, APP1_IMG = (f"sha256:{b * 32}" for b in ("a0", "a1"))  # Pulumi.dev.yaml's boot history
PEM_KEY = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49\n-----END PRIVATE KEY-----\n"


def _tokens(path: str) -> list:
    tokens: list = []
    for part in path.replace("]", "").split("."):
        name, *indexes = part.split("[")
        tokens.append(name)
        tokens += [int(i) for i in indexes]
    return tokens


def edit(doc: dict, path: str, value) -> None:
    tokens = _tokens(path)
    tokens[0] = f"{NS}:{tokens[0]}"
    node = doc["config"]
    for token in tokens[:-1]:
        if isinstance(node, dict) and token not in node:
            node[token] = {}
        node = node[token]
    last = tokens[-1]
    if value is DELETE:
        del node[last]
    elif isinstance(node, list) and last == len(node):
        node.append(value)
    else:
        node[last] = value


# (id, edits, expected error path, fragment of the message)
CASES = [
    ("master0-not-an-ip", {"master0": "master-0"}, "master0", "'master-0' is not a valid IP address"),
    ("master0-is-a-node", {"master0": "198.18.0.21"}, "master0", "198.18.0.21 is not a master (masters: 198.18.0.11, 198.18.0.12, 198.18.0.13)"),
    ("master0-is-down", {"down_hosts": ["198.18.0.11"]}, "master0", "is listed in down_hosts"),
    ("master0-missing", {"master0": DELETE}, "master0", "is required"),
    ("down-host-not-in-cluster", {"down_hosts": ["198.18.0.99"]}, "down_hosts[0]", "198.18.0.99 is not a cluster host"),
    ("down-host-bad-ip", {"down_hosts": ["198.18.0"]}, "down_hosts[0]", "'198.18.0' is not a valid IP address"),
    ("down-hosts-not-a-list", {"down_hosts": "198.18.0.12"}, "down_hosts", "expected a list, got '198.18.0.12'"),
    ("distribution-unknown", {"distribution": "middle"}, "distribution", "'middle' is not one of 'pre' or 'post'"),
    ("distribution-missing", {"distribution": DELETE}, "distribution", "is required"),
    ("cluster-missing", {"cluster": DELETE}, "cluster", "is required"),
    ("cluster-name-uppercase", {"cluster.name": "My_Cluster"}, "cluster.name", "'My_Cluster' is not a valid cluster name"),
    ("cluster-data-root-relative", {"cluster.data_root": "var/lib/sealer"}, "cluster.data_root", "'var/lib/sealer' is not an absolute path"),
    ("cluster-master-bad-ip", {"cluster.masters[1]": "10.0.0.300"}, "cluster.masters[1]", "'10.0.0.300' is not a valid IP address"),
    ("cluster-node-is-master", {"cluster.nodes[0]": "198.18.0.13"}, "cluster.nodes[0]", "198.18.0.13 is also listed at cluster.masters[2]"),
    ("cluster-masters-empty", {"cluster.masters": []}, "cluster.masters", "at least one master"),
    ("cluster-unknown-key", {"cluster.workers": ["198.18.0.31"]}, "cluster.workers", "unknown key 'workers'"),
    ("ssh-port-zero", {"cluster.ssh.port": 0}, "cluster.ssh.port", "0 is not a valid port"),
    ("ssh-both-key-sources", {"cluster.ssh.private_key": SECURE}, "cluster.ssh", "both are set"),
    ("ssh-no-key", {"cluster.ssh.private_key_path": DELETE}, "cluster.ssh", "needs private_key or private_key_path, or a password for every host"),
    ("ssh-password-plaintext", {"cluster.ssh.password": "hunter2"}, "cluster.ssh.password", "must be a Pulumi secret"),
    ("ssh-host-password-plaintext", {"cluster.ssh.hosts": {"198.18.0.21": {"password": "hunter2"}}}, "cluster.ssh.hosts.198.18.0.21.password", "must be a Pulumi secret"),
    ("ssh-private-key-plaintext", {"cluster.ssh.private_key_path": DELETE, "cluster.ssh.private_key": PEM_KEY}, "cluster.ssh.private_key", "must be a Pulumi secret (pulumi config set --secret --path cluster.ssh.private_key ...)"),
    ("ssh-host-key-unknown-host", {"cluster.ssh.host_keys": {"198.18.0.99": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"}}, "cluster.ssh.host_keys[198.18.0.99]", "is not a cluster host"),
    ("ssh-host-key-malformed", {"cluster.ssh.host_keys": {"198.18.0.11": "AAAA"}}, "cluster.ssh.host_keys[198.18.0.11]", "'AAAA' is not a public host key"),
    ("ssh-jump-host-invalid", {"cluster.ssh.jump_host": {"host": "bad host"}}, "cluster.ssh.jump_host.host", "'bad host' is neither an IP address nor a valid DNS name"),
    ("ssh-unknown-key", {"cluster.ssh.identity": "~/.ssh/id_rsa"}, "cluster.ssh.identity", "unknown key 'identity'"),
    ("registry-domain-underscore", {"registry.domain": "sea_hub"}, "registry.domain", "'sea_hub' is not a valid DNS name"),
    ("registry-domain-ip", {"registry.domain": "198.18.0.11"}, "registry.domain", "'198.18.0.11' is an IP address"),
    ("registry-port-too-high", {"registry.port": 65536}, "registry.port", "65536 is not a valid port (1-65535)"),
    ("registry-port-string", {"registry.port": "5000"}, "registry.port", "expected an integer, got '5000'"),
    ("registry-password-plaintext", {"registry.password": LEAKED}, "registry.password", "must be a Pulumi secret (pulumi config set --secret --path registry.password ...)"),
    ("registry-username-without-password", {"registry.password": DELETE}, "registry.password", "is required when username is set (username: 'admin')"),
    ("registry-password-without-username", {"registry.username": DELETE}, "registry.username", "is required when password is set"),
    ("registry-deploy-host-unknown", {"registry.local_registry.deploy_hosts[2]": "198.18.0.99"}, "registry.local_registry.deploy_hosts[2]", "198.18.0.99 is not a cluster host"),
    ("registry-deploy-hosts-without-master0", {"registry.local_registry.deploy_hosts": ["198.18.0.12"]}, "registry.local_registry.deploy_hosts", "master0 198.18.0.11 is not a deploy host"),
    ("registry-insecure-mode-string", {"registry.local_registry.insecure_mode": "no"}, "registry.local_registry.insecure_mode", "expected true or false, got 'no'"),
    ("registry-standby-unknown", {"registry.local_registry.standby": "hot"}, "registry.local_registry.standby", "'hot' is not one of 'cold' or 'warm'"),
    ("registry-ha-not-a-bool", {"registry.local_registry.ha": "yes"}, "registry.local_registry.ha", "expected true or false, got 'yes'"),
    ("registry-ha-node-deploy-host", {"registry.local_registry.ha": True, "registry.local_registry.deploy_hosts": ["198.18.0.11", "198.18.0.21"], "apps.image_store": DELETE, "apps.cluster_image_id": DELETE}, "registry.local_registry.deploy_hosts[1]", "198.18.0.21 is not a master: with ha: true"),
    ("registry-ha-warm", {"registry.local_registry.ha": True, "registry.local_registry.standby": "warm", "apps.image_store": DELETE, "apps.cluster_image_id": DELETE}, "registry.local_registry.standby", "warm cannot be combined with registry.local_registry.ha: true"),
    ("registry-ha-image-store", {"registry.local_registry.ha": True}, "apps.image_store", "is not supported with registry.local_registry.ha: true"),
    ("registry-standby-warm-in-post", {"distribution": "post", "registry.local_registry.standby": "warm"}, "registry.local_registry.standby", "warm needs distribution: pre (got distribution: post"),
    ("registry-tls-missing", {"registry.tls": DELETE}, "registry.tls", "is required unless local_registry.insecure_mode is true"),
    ("registry-tls-with-insecure-mode", {"registry.local_registry.insecure_mode": True}, "registry.tls", "must not be set when local_registry.insecure_mode is true"),
    ("registry-tls-ca-cert-garbage", {"registry.tls.ca_cert": "not a certificate"}, "registry.tls.ca_cert", "'not a certificate' is not a PEM certificate"),
    ("registry-tls-ca-key-plaintext", {"registry.tls.ca_key": PEM_KEY}, "registry.tls.ca_key", "must be a Pulumi secret (pulumi config set --secret --path registry.tls.ca_key ...)"),
    ("registry-tls-cert-without-key", {"registry.tls.cert": DEV["config"][f"{NS}:registry"]["tls"]["ca_cert"]}, "registry.tls.key", "is required together with cert"),
    ("registry-tls-key-plaintext", {"registry.tls.cert": DEV["config"][f"{NS}:registry"]["tls"]["ca_cert"], "registry.tls.key": LEAKED}, "registry.tls.key", "must be a Pulumi secret"),
    ("registry-tls-only-ca-cert", {"registry.tls.ca_key": DELETE}, "registry.tls", "needs ca_cert+ca_key"),
    ("registry-htpasswd-plaintext", {"registry.htpasswd": "admin:" + LEAKED}, "registry.htpasswd", "must be a Pulumi secret (pulumi config set --secret --path registry.htpasswd ...)"),
    ("registry-unknown-key", {"registry.passwd": "x"}, "registry.passwd", "did you mean 'password'?"),
    ("registry-username-encrypted", {"registry.username": SECURE}, "registry.username", "is encrypted, but it is not a secret field"),
    ("registry-encrypted-as-a-whole", {"registry": SECURE}, "registry", "is encrypted, but it is not a secret field"),
    ("registry-password-secure-not-a-string", {"registry.password": {"secure": 42}}, "registry.password", "secure value must be a non-empty ciphertext string"),
    ("apps-cluster-image-id-short", {"apps.cluster_image_id": "sha256:abc"}, "apps.cluster_image_id", "'sha256:abc' is not an image id"),
    ("apps-image-id-uppercase", {"apps.history.applications[0].image_id": "sha256:" + "AB" * 32}, "apps.history.applications[0].image_id", "is not an image id"),
    ("apps-image-id-no-prefix", {"apps.history.applications[1].image_id": "a1" * 32}, "apps.history.applications[1].image_id", "is not an image id"),
    ("apps-type-unknown", {"apps.history.applications[1].type": "chart"}, "apps.history.applications[1].type", "'chart' is not one of 'helm', 'kube' or 'shell'"),
    ("apps-duplicate-name", {"apps.history.applications[1].name": "app0"}, "apps.history.applications[1].name", "listed twice"),
    ("apps-launch-unknown-app", {"apps.history.launch.app_names[1]": "app9"}, "apps.history.launch.app_names[1]", "'app9' names no application (applications: app0, app1)"),
    ("apps-history-and-file", {"apps.history_file": "/root/.sealer/application.json"}, "apps", "exactly one of history / history_file is required (both are set)"),
    ("apps-history-file-missing", {"apps.history": DELETE, "apps.history_file": "/nonexistent/application.json"}, "apps.history_file", "cannot read /nonexistent/application.json"),
    ("apps-image-store-missing", {"apps.image_store": DELETE}, "apps.image_store", "is required together with cluster_image_id"),
    ("apps-cluster-image-id-missing", {"apps.cluster_image_id": DELETE}, "apps.cluster_image_id", "is required together with image_store"),
    ("apps-application-unknown-key", {"apps.history.applications[0].chart": "x"}, "apps.history.applications[0].chart", "unknown key 'chart'"),
    ("kubernetes-both-sources", {"kubernetes.kubeconfig": SECURE}, "kubernetes", "both are set"),
    ("kubernetes-kubeconfig-plaintext", {"kubernetes.kubeconfig_path": DELETE, "kubernetes.kubeconfig": "apiVersion: v1"}, "kubernetes.kubeconfig", "must be a Pulumi secret (pulumi config set --secret --path kubernetes.kubeconfig ...)"),
    ("kubernetes-cluster-identifier-invalid", {"kubernetes.cluster_identifier": "My Cluster"}, "kubernetes.cluster_identifier", "'My Cluster' is not a valid cluster name"),
    ("kubernetes-unknown-key", {"kubernetes.contxt": "lab"}, "kubernetes.contxt", "did you mean 'context'?"),
    ("kubernetes-endpoint-not-https", {"kubernetes.endpoints": ["http://198.18.0.12:6443"]}, "kubernetes.endpoints[0]", "'http://198.18.0.12:6443' is not an https:// URL"),
    ("kubernetes-endpoints-empty", {"kubernetes.endpoints": []}, "kubernetes.endpoints", "is empty"),
    ("kubernetes-endpoints-all-down", {"kubernetes.endpoints": ["https://198.18.0.12:6443"], "down_hosts": ["198.18.0.12"]}, "kubernetes.endpoints", "no apiserver left: the host of every endpoint (https://198.18.0.12:6443) is in down_hosts"),
    # values that would break a shell command, ssh, curl, htpasswd, DNS or /etc/hosts later
    ("registry-domain-trailing-newline", {"registry.domain": "sea.hub\n"}, "registry.domain", "'sea.hub\\n' is not a valid DNS name"),
    ("cluster-name-trailing-newline", {"cluster.name": "my-cluster\n"}, "cluster.name", "'my-cluster\\n' is not a valid cluster name"),
    ("ssh-user-is-an-option", {"cluster.ssh.user": "-oProxyCommand=touch /tmp/pwned"}, "cluster.ssh.user", "'-oProxyCommand=touch /tmp/pwned' is not a valid user name"),
    ("ssh-jump-user-with-at", {"cluster.ssh.jump_host": {"host": "bastion.example.com", "user": "root@evil"}}, "cluster.ssh.jump_host.user", "'root@evil' is not a valid user name"),
    ("registry-username-with-quote", {"registry.username": 'ad"min'}, "registry.username", "'ad\"min' is not a valid user name"),
    ("registry-domain-numeric", {"registry.domain": "0x7f.1"}, "registry.domain", "'0x7f.1' reads as an IP address"),
    ("registry-domain-localhost", {"registry.domain": "localhost"}, "registry.domain", "'localhost' already names the local machine on every host"),
    ("cluster-data-root-with-space", {"cluster.data_root": "/var/lib/sealer data"}, "cluster.data_root", "sealer's init-registry.sh splits the registry path on whitespace"),
    ("ssh-host-key-two-lines", {"cluster.ssh.host_keys": {"198.18.0.11": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5\n198.18.0.12 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"}}, "cluster.ssh.host_keys[198.18.0.11]", "holds a line break or control character"),
    ("master0-loopback", {"master0": "127.0.0.1"}, "master0", "'127.0.0.1' is a loopback address (127.0.0.0/8, where every machine reaches itself), not a cluster host's address"),
    ("node-ipv6", {"cluster.nodes[0]": "fd00::21"}, "cluster.nodes[0]", "IPv6 hosts are not supported yet: rsync/ssh/curl targets are built for IPv4"),
    ("kubernetes-context-newline", {"kubernetes.context": "lab\n"}, "kubernetes.context", "holds a line break or control character"),
    ("apps-name-with-slash", {"apps.history.applications[0].name": "../app0"}, "apps.history.applications[0].name", "'../app0' is not a valid application name"),
    ("ssh-key-path-missing", {"cluster.ssh.private_key_path": "missing/id_ed25519"}, "cluster.ssh.private_key_path", "cannot read missing/id_ed25519"),
    ("kubeconfig-path-missing", {"kubernetes.kubeconfig_path": "/nonexistent/kubeconfig"}, "kubernetes.kubeconfig_path", "cannot read /nonexistent/kubeconfig: No such file or directory"),
    ("apps-image-store-a-path", {"apps.image_store": "/nonexistent/images"}, "apps.image_store", "'/nonexistent/images' is a path; the image store is a registry holding the cluster's images"),
    ("apps-image-store-registry-url", {"apps.image_store.registry": "https://198.18.0.1:5443"}, "apps.image_store.registry", "'https://198.18.0.1:5443' is not host[:port] (give host[:port], without https://)"),
    ("apps-image-store-registry-bad-port", {"apps.image_store.registry": "198.18.0.1:0"}, "apps.image_store.registry", "port 0 is not in 1..65535"),
    ("apps-image-store-password-plaintext", {"apps.image_store.password": LEAKED}, "apps.image_store.password", "must be a Pulumi secret (pulumi config set --secret --path apps.image_store.password ...)"),
    ("apps-image-store-password-alone", {"apps.image_store.username": DELETE}, "apps.image_store.username", "is required when password is set"),
    ("apps-image-store-username-alone", {"apps.image_store.password": DELETE}, "apps.image_store.password", "is required when username is set (username: 'store-reader')"),
    ("apps-image-store-image-missing", {f"{STORE_IMAGES}.{APP1_IMG}": DELETE}, STORE_IMAGES, f"has no refs for {APP1_IMG} (a boot-history image)"),
    ("apps-image-store-ref-unpinned", {f"{STORE_IMAGES}.{APP0_IMG}[0]": "library/app0:v1"}, f"{STORE_IMAGES}.{APP0_IMG}[0]", "'library/app0:v1' is not 'repository:tag@sha256:<64 hex>'"),
    ("apps-image-store-unknown-key", {"apps.image_store.path": ".lab/images"}, "apps.image_store.path", "unknown key 'path'"),
    ("apps-image-store-ca-file-not-there", {"apps.image_store.ca_file": "/nonexistent/ca.pem"}, "apps.image_store.ca_file", "cannot read /nonexistent/ca.pem: No such file or directory"),
    ("apps-image-store-ca-file-not-pem", {"apps.image_store.ca_file": ".lab/id_ed25519"}, "apps.image_store.ca_file", "is not a file of PEM certificates"),
    ("top-level-unknown-key", {"master": "198.18.0.11"}, "master", "unknown key 'master' (did you mean 'master0'?"),
    ("flat-dotted-key", {"registry.password": DELETE, "'registry.password'": LEAKED}, "registry.password", "is a flat key; nest it with `pulumi config set --path registry.password ...`"),
]


def _apply(doc: dict, edits: dict) -> dict:
    doc = copy.deepcopy(doc)
    for path, value in edits.items():
        if path.startswith("'"):  # a literal key, not a path
            doc["config"][f"{NS}:{path.strip(chr(39))}"] = value
        else:
            edit(doc, path, value if value is DELETE else copy.deepcopy(value))
    return doc


def run_validate(tmp_path: Path, doc, capsys) -> tuple[int, str, str]:
    # the local files Pulumi.dev.yaml names (the lab makes them)
    store_ca = tmp_path / ".lab" / "store-registry" / "ca" / "store-ca.crt"
    store_ca.parent.mkdir(parents=True, exist_ok=True)
    store_ca.write_text(DEV["config"][f"{NS}:registry"]["tls"]["ca_cert"])
    (tmp_path / ".lab" / "id_ed25519").write_text("key\n")
    (tmp_path / ".lab" / "kubeconfig").write_text("apiVersion: v1\n")
    path = tmp_path / "Pulumi.case.yaml"
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    code = cli.main(["validate", "--stack", "case", "--project-dir", str(tmp_path)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_table_is_large_enough():
    """The security suite expects at least 40 distinct invalid configurations."""
    assert len(CASES) >= 40
    assert len({case[0] for case in CASES}) == len(CASES)


def test_unedited_dev_stack_is_valid(tmp_path, capsys):
    """The base of every case is valid, so each case fails only because of its edit."""
    code, out, err = run_validate(tmp_path, _apply(DEV, {}), capsys)
    assert (code, out.startswith("ok: stack case is valid")) == (0, True), err


@pytest.mark.parametrize("case_id, edits, path, fragment", CASES, ids=[case[0] for case in CASES])
def test_invalid_stack_exits_2_naming_the_field(tmp_path, capsys, case_id, edits, path, fragment):
    """validate exits 2 and prints `error: <path>: ...` with the expected message; no stdout."""
    code, out, err = run_validate(tmp_path, _apply(DEV, edits), capsys)
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert all(line.startswith("error: ") for line in lines), err
    assert any(line.startswith(f"error: {path}: ") and fragment in line for line in lines), err
    assert LEAKED not in err


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("config: [1, 2\n", "is not valid YAML"),
        ("- just\n- a list\n", "must be a YAML mapping"),
        ("config: 5\n", "'config:' must be a mapping"),
        ("config:\n  master0: 198.18.0.11\n", "config key 'master0' has no namespace"),
        ("config: {}\n", "master0: is required"),
    ],
)
def test_malformed_stack_file_exits_2(tmp_path, capsys, text, fragment):
    """Broken files are reported, not crashed on."""
    code, out, err = run_validate(tmp_path, text, capsys)
    assert code == 2 and fragment in err, err
