"""The stacks the lab, the demo and the e2e tests write validate under every rule, local files
included (`check_files`, as `cli validate` and a preview check them). The lab's state is faked
(inventory, key, kubeconfig, image store, boot history): no host is brought up.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from config import ConfigError, build_config
from lab import demo, stackfile
from lab import store as lab_store
from lab.hosts import DEFAULT_CLUSTER, DEFAULT_DATA_ROOT, SUBNET, Lab
from material import pki
from lab.stack import PASSWORD
from tests.e2e import labstack, lifecycle

CLUSTER_IMG = "sha256:" + "c0" * 32
APP_IMG = "sha256:" + "a0" * 32


def _key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def _public(key) -> str:
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


@pytest.fixture
def lab(tmp_path) -> Lab:
    lab = Lab(tmp_path / "state")
    lab.state.mkdir()
    operator = _key()
    lab.key_path.write_text(operator.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                                   serialization.NoEncryption()).decode())
    hosts = [{"name": f"h{n}", "ip": str(SUBNET.network_address + n), "role": role, "host_key": _public(_key())}
             for n, role in [(11, "master"), (12, "master"), (13, "master"), (21, "node"), (22, "node")]]
    lab.inventory_path.write_text(json.dumps({"cluster": DEFAULT_CLUSTER, "data_root": DEFAULT_DATA_ROOT,
                                              "user": "root", "hosts": hosts}))
    (lab.state / "kubeconfig").write_text("apiVersion: v1\nclusters: []\n")
    (lab.state / "images").mkdir()
    # The lab's store registry: its CA (what lab.store makes) and one image per id of the history.
    ca_file = lab.state / "store-registry" / "ca" / "store-ca.crt"
    ca_file.parent.mkdir(parents=True)
    ca_file.write_text(pki.generate_ca()[0])
    for image_id, repo in [(CLUSTER_IMG, "sealer/cluster-base"), (APP_IMG, "library/app0")]:
        image = lab.state / "images" / image_id.removeprefix("sha256:")
        (image / "docker" / "registry" / "v2").mkdir(parents=True)
        (image / "image.json").write_text(json.dumps({"image_id": image_id, "refs": [
            {"repository": repo, "tag": "v1", "digest": "sha256:" + "d0" * 32}]}))
    history = {"type": "boot", "applications": [{"name": "app0", "image_id": APP_IMG, "type": "helm",
                                                 "launch_cmd": "helm install app0 app0", "version": "v1"}],
               "launch": {"app_names": ["app0"]}}
    (lab.state / "application.json").write_text(json.dumps(history))
    (lab.state / "images.json").write_text(json.dumps({"store": str(lab.state / "images"),
                                                       "history": str(lab.state / "application.json"),
                                                       "cluster_image_id": CLUSTER_IMG}))
    return lab


def _set(values: dict, dotted: str, value) -> None:
    node = values
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def validate(values: dict, secrets: dict[str, str]):
    for dotted, value in secrets.items():
        _set(values, dotted, value)
    return build_config(values, check_files=True)


def test_lab_stackfile_values_validate(lab):
    """`python -m lab stackfile`: plain values plus the secrets it sets through the engine."""
    plain, secrets = stackfile.stack_config(lab)
    config = validate(plain, secrets)
    assert config.master0 == str(SUBNET.network_address + 11) and config.cluster.ssh.user == "root"


def test_demo_values_validate(lab):
    """The demo's stack, with the password and the CA it adds later (`config set`, `cli init-pki`)."""
    state = lab.state
    plain = demo.stack_config(lab, state / "images", state / "application.json", CLUSTER_IMG, state / "kubeconfig")
    ca_cert, ca_key = pki.generate_ca()
    config = validate(plain, {"registry.password": "demo-Passw0rd", "registry.tls.ca_cert": ca_cert,
                              "registry.tls.ca_key": ca_key, **lab_store.SECRETS})
    assert config.deploy_hosts == [str(SUBNET.network_address + 11), str(SUBNET.network_address + 12)]


def _lab_env(lab: Lab) -> SimpleNamespace:
    inv = lab.inventory()
    return SimpleNamespace(
        lab=lab, inventory=inv, key_path=lab.key_path, store=lab.state / "images",
        history_file=lab.state / "application.json", cluster_image_id=CLUSTER_IMG,
        kubeconfig=lab.state / "kubeconfig", ca=pki.generate_ca(),
        masters=[h["ip"] for h in inv["hosts"] if h["role"] == "master"],
        nodes=[h["ip"] for h in inv["hosts"] if h["role"] == "node"])


def test_e2e_lifecycle_values_validate(lab):
    """tests/e2e/lifecycle.py's stack (also the faults suite's and the bench's base)."""
    env = _lab_env(lab)
    plain = lifecycle.stack_values(env, master0=env.masters[0])
    config = validate(plain, {**lifecycle.SECRETS, "registry.tls.ca_key": env.ca[1]})
    assert config.hosts == [*env.masters, *env.nodes]


def test_e2e_cli_values_validate(lab):
    """tests/e2e/labstack.py's stack for the CLI tests, with the CA `cli init-pki` adds."""
    env = _lab_env(lab)
    plain = labstack.cli_stack_values(env, master0=env.masters[0], deploy_hosts=env.masters[:2])
    config = validate(plain, {"registry.password": PASSWORD, "registry.tls.ca_cert": env.ca[0],
                              "registry.tls.ca_key": env.ca[1], **lab_store.SECRETS})
    assert config.deploy_hosts == env.masters[:2]


def test_a_lab_with_its_files_gone_is_refused(lab):
    """The same check fails once the lab's files are gone (it reads them for real)."""
    plain, secrets = stackfile.stack_config(lab)
    (lab.state / "kubeconfig").unlink()
    with pytest.raises(ConfigError) as info:
        validate(plain, secrets)
    assert "kubernetes.kubeconfig_path: cannot read" in str(info.value)
