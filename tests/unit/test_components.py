"""Shape of the program: which resources a config declares, with which inputs (Pulumi mocks)."""

from __future__ import annotations

import base64
import json
from dataclasses import replace

import pulumi
import yaml
import pytest

from components.access import SshAccess
from components.cluster_registry import ClusterRegistry, ClusterRegistryArgs
from components.deploy_host import StoreSource, rootfs_files
from config import PROJECT
from config.image_store import ImageRef, StoredImage
from config import Distribution
from material import build_material, pki
from components.remote_scripts import STAGED_PATH, script_body
from tests.unit.pulumi_mocks import RecordingMocks, staged
from topology import Topology

MASTERS = ["198.18.0.11", "198.18.0.12", "198.18.0.13"]
NODES = ["198.18.0.21", "198.18.0.22", "198.18.0.23", "198.18.0.24"]
PASSWORD = "s3cret-Passw0rd!"
SSH_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nssh-key-body-for-tests\n-----END OPENSSH PRIVATE KEY-----\n"
KUBECONFIG = "apiVersion: v1\nkind: Config\nusers: [{name: admin, user: {token: kube-token-xyz}}]\n"
ROOTFS = "/var/lib/sealer/data/lab/rootfs"
IMAGES = [
    StoredImage("sha256:" + "a" * 64, (ImageRef("library/cluster", "v1", "sha256:" + "1" * 64),)),
    StoredImage("sha256:" + "b" * 64, (ImageRef("apps/app0", "v1", "sha256:" + "2" * 64),)),
]
STORE = "store.example.com:443"
STORE_LOGIN = "reader:st0re-Pull-s3cret"  # USER:PASSWORD at the image store
STORE_CA = "-----BEGIN CERTIFICATE-----\nstore-ca-for-tests\n-----END CERTIFICATE-----\n"


def store_source(images=IMAGES, registry_ca: str | None = None) -> StoreSource:
    """The image store of ``images`` as __main__.store_source makes it, without its logins
    (secret Outputs exist only inside a Pulumi run: ``with_logins``)."""
    return StoreSource(registry=STORE, refs=tuple(str(r) for img in images for r in img.refs),
                       ca_pem=STORE_CA, registry_ca=registry_ca)


def with_logins(args: ClusterRegistryArgs) -> ClusterRegistryArgs:
    """``args`` whose store logs in at the store and at master0's registry (secret Outputs)."""
    if args.store is None:
        return args
    registry_login = pulumi.Output.secret(f"{args.username}:{PASSWORD}") if args.username else None
    return replace(args, store=replace(args.store, login=pulumi.Output.secret(STORE_LOGIN),
                                       registry_login=registry_login))


@pytest.fixture(scope="module")
def ca():
    return pki.generate_ca()


def make_args(ca, **overrides) -> ClusterRegistryArgs:
    """A valid 3-master, 4-node cluster; ``overrides`` replace single fields (the topology's
    master0, masters, nodes, deploy_hosts, down_hosts, distribution, standby included)."""
    layout = dict(master0=MASTERS[0], masters=MASTERS, nodes=NODES, deploy_hosts=MASTERS[:2],
                  down_hosts=[], distribution=Distribution.PRE, standby="cold", ha=False)
    for key in layout:
        if key in overrides:
            layout[key] = overrides.pop(key)
    fields = dict(
        cluster_name="lab", rootfs=ROOTFS,
        topology=Topology.build(**layout, image_ids=[img.image_id for img in IMAGES]),
        domain="sea.hub", port=5000, insecure=False, username="admin", password=None,
        material=None, access=None, store=..., images=IMAGES,
        application_json=json.dumps({"type": "app", "applications": []}), kubeconfig=None)
    fields.update(overrides)
    if fields["material"] is None:
        fields["material"] = build_material(
            domain=fields["domain"], port=fields["port"],
            deploy_ips=layout["deploy_hosts"], insecure=fields["insecure"],
            username=fields["username"], password=PASSWORD if fields["username"] else None,
            ca_cert=ca[0], ca_key=ca[1])
    if fields["store"] is ...:
        material = fields["material"]
        fields["store"] = store_source(fields["images"], material.ca_cert if material.tls else None)
    return ClusterRegistryArgs(**fields)


def declare(args: ClusterRegistryArgs) -> RecordingMocks:
    """Declares the program for ``args`` against fresh mocks; returns what was declared."""
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack="unit", preview=False)

    @pulumi.runtime.test
    def run():
        access = SshAccess(user="root", port=22, private_key=pulumi.Output.secret(SSH_KEY))
        full = replace(with_logins(args), access=access,
                       password=pulumi.Output.secret(PASSWORD) if args.username else None,
                       kubeconfig=pulumi.Output.secret(KUBECONFIG))
        registry = ClusterRegistry("sealer-registry", full)
        return registry.verify.id

    run()
    return mocks


def test_names_and_counts_for_three_masters_four_nodes(ca):
    """Every live host gets one node step (CA trust + hosts entry); each deploy host gets
    rootfs, data (pre mode) and one registry step; master0 launches, the other deploy host stands by."""
    names = set(declare(make_args(ca)).by_name())
    for ip in MASTERS + NODES:
        assert {f"node-{ip}", f"payload-{ip}"} <= names
        assert not {f"hosts-{ip}", f"ca-trust-{ip}"} & names
    for ip in MASTERS[:2]:
        assert {f"deploy-{ip}", f"rootfs-{ip}", f"data-{ip}"} <= names
    assert f"registry-launch-{MASTERS[0]}" in names
    assert f"registry-standby-{MASTERS[1]}" in names
    assert not any(n.endswith(MASTERS[2]) for n in names if n.startswith(("deploy-", "rootfs-", "data-", "registry-")))
    remote = [r for r in declare(make_args(ca)).of_type("command:remote:Command")]
    # 7 node steps + 2 rootfs + 2 registry steps + verify + the replica's data pull
    assert len(remote) == 7 + 2 + 2 + 1 + 1
    declared = declare(make_args(ca)).by_name()
    node = declared[f"node-{NODES[0]}"].inputs
    run = staged(node["create"])
    assert run.args == ["sea.hub", MASTERS[0], "5000"]
    assert run.payload == script_body("configure-node.sh") + ca[0]
    assert "stdin" not in node  # the script and the CA are in the staged file, not in the state
    copy = declared[f"payload-{NODES[0]}"]
    assert copy.typ == "command:remote:CopyToRemote"
    assert copy.inputs["source"].path.endswith(f"{run.sha256}.run")
    assert copy.inputs["remotePath"] == STAGED_PATH


def test_no_remote_command_has_a_delete_command(ca):
    """A delete command would dial a host that may be dead; none is declared."""
    mocks = declare(make_args(ca))
    commands = mocks.of_type("command:remote:Command") + mocks.of_type("command:local:Command")
    assert commands
    assert all(not r.inputs.get("delete") for r in commands)


def test_post_mode_puts_data_on_master0_only(ca):
    """In post mode only master0 holds registry data."""
    names = set(declare(make_args(ca, distribution=Distribution.POST)).by_name())
    assert f"data-{MASTERS[0]}" in names
    assert f"data-{MASTERS[1]}" not in names


def test_down_hosts_get_no_resources(ca):
    """A host in down_hosts is never dialled: nothing at all is declared on it."""
    mocks = declare(make_args(ca, master0=MASTERS[1], down_hosts=[MASTERS[0]]))
    assert not [r.name for r in mocks.resources if r.name.endswith(MASTERS[0])]
    for r in mocks.of_type("command:remote:Command"):
        assert r.inputs["connection"]["host"] != MASTERS[0], r.name


def test_changing_master0_changes_only_launch_hosts_entries_and_verify(ca):
    """Moving master0 (old one down) changes: the registry roles of old and new master0, every
    node's hosts entry, the records, the verification; nothing else's inputs."""
    before = declare(make_args(ca)).by_name()
    after = declare(make_args(ca, master0=MASTERS[1], down_hosts=[MASTERS[0]])).by_name()
    removed = set(before) - set(after)
    added = set(after) - set(before)
    assert added == {f"registry-launch-{MASTERS[1]}"}
    assert {f"registry-standby-{MASTERS[1]}", f"registry-launch-{MASTERS[0]}",
            f"node-{MASTERS[0]}", f"rootfs-{MASTERS[0]}",
            f"data-{MASTERS[0]}"} <= removed
    changed = {n for n in set(before) & set(after) if before[n].inputs != after[n].inputs}
    # The node steps' arguments only: their staged script and CA (payload-<ip>) stay.
    expected = {f"node-{ip}" for ip in MASTERS[1:] + NODES} | {
        "registry-verify", "sealer-registry-config", f"data-{MASTERS[1]}"}
    assert changed == expected
    # With an image store the new master0's data comes from it: its pull step (remote) becomes
    # the store push (local), a replace whose delete half runs no command (none is declared).
    data = f"data-{MASTERS[1]}"
    assert (before[data].typ, after[data].typ) == ("command:remote:Command", "command:local:Command")
    assert not before[data].inputs.get("delete") and MASTERS[0] not in after[data].inputs["create"]


def test_declared_names_are_the_topology_s(ca):
    """Children take their names from the topology: the program declares exactly the names
    ``Topology.resource_names`` lists, in a recovered post-mode cluster with a node down too."""
    args = make_args(ca, master0=MASTERS[1], down_hosts=[MASTERS[0], NODES[2]],
                     distribution=Distribution.POST, deploy_hosts=MASTERS)
    assert set(declare(args).by_name()) == args.topology.resource_names()


def test_urns_keep_their_names_types_and_parents(ca):
    """A URN is type chain + name: the state of an existing stack must find every resource
    again after a refactor (else the engine replaces it). These are the URNs of a 2-host cluster."""
    m, n = MASTERS[0], NODES[0]
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack="unit", preview=False)
    args = make_args(ca, masters=[m], nodes=[n], deploy_hosts=[m])

    @pulumi.runtime.test
    def run():
        access = SshAccess(user="root", port=22, private_key=pulumi.Output.secret(SSH_KEY))
        return ClusterRegistry("sealer-registry", replace(
            args, access=access, kubeconfig=pulumi.Output.secret(KUBECONFIG))).verify.id

    run()
    # The mock monitor qualifies a type with its parent's type only (the engine with the whole
    # chain); parent type + type + name still pin every URN.
    prefix = f"urn:pulumi:unit::{PROJECT}::"
    urns = {urn.removeprefix(prefix) for urn in pulumi.runtime.settings.get_monitor().resources}
    reg, records, deploy = ("sealer:registry:ClusterRegistry", "sealer:registry:Records",
                            "sealer:registry:DeployHost")
    remote, local = "command:remote:Command", "command:local:Command"
    assert urns == {
        f"pulumi:pulumi:Stack${reg}::sealer-registry",
        f"{reg}${records}::records",
        f"{records}$pulumi:providers:kubernetes::k8s",
        f"{records}$kubernetes:core/v1:ConfigMap::sealer-registry-config",
        f"{records}$kubernetes:core/v1:Secret::sealer-registry-secret",
        f"{records}$kubernetes:core/v1:ConfigMap::sealer-apps",
        f"{reg}${deploy}::deploy-{m}",
        f"{deploy}${remote}::rootfs-{m}",
        f"{deploy}${local}::data-{m}",
        f"{deploy}${remote}::registry-launch-{m}",
        f"{reg}${remote}::node-{m}",
        f"{reg}${remote}::node-{n}",
        f"{reg}$command:remote:CopyToRemote::payload-{m}",
        f"{reg}$command:remote:CopyToRemote::payload-{n}",
        f"{reg}${remote}::registry-verify",
    }


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


# Inputs that may carry a secret; each must be a secret Output (checked below).
SECRET_INPUTS = {"stdin", "stringData", "connection", "kubeconfig", "proxy"}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# The logins of the image store's fill step, as its stdin carries them (base64 of USER:PASSWORD).
STORE_SECRETS = [STORE_LOGIN.split(":", 1)[1], _b64(STORE_LOGIN), _b64(f"admin:{PASSWORD}"), _b64(SSH_KEY)]


def test_no_secret_in_non_secret_inputs_or_command_text(ca):
    """Password, SSH key, TLS key, htpasswd, kubeconfig and the image store's logins appear only
    in stdin, Secret data, the connection and the provider's kubeconfig — never in a command line
    or a ConfigMap."""
    args = make_args(ca)
    secrets = [PASSWORD, SSH_KEY, args.material.key, args.material.htpasswd, "kube-token-xyz",
               args.material.htpasswd.split(":", 1)[1], *STORE_SECRETS]
    for r in declare(args).resources:
        for key, value in r.inputs.items():
            if key in SECRET_INPUTS:
                continue
            for text in _strings(value):
                for s in secrets:
                    assert s not in text, f"{r.name}.{key} holds a secret"


def test_secret_carrying_inputs_are_secret_outputs(ca):
    """Every input that carries a secret reaches the engine marked secret."""
    args = make_args(ca)
    secrets = [PASSWORD, SSH_KEY, args.material.key, args.material.htpasswd, "kube-token-xyz", *STORE_SECRETS]
    seen = set()
    for r in declare(args).resources:
        for key, value in r.inputs.items():
            if any(s in text for text in _strings(value) for s in secrets):
                seen.add(f"{r.name}.{key}")
                assert any(p == key or p.startswith(key + ".") or key.startswith(p)
                           for p in r.secret_paths), f"{r.name}.{key} carries a secret in plaintext"
    assert f"data-{MASTERS[0]}.stdin" in seen  # the fill step: the store's login on its stdin


def test_rootfs_files_are_the_ones_sealers_init_registry_reads(ca):
    """etc/registry_config.yml (what sealer's init-registry.sh mounts as the registry's config)
    holds the config; the htpasswd and the cert pair sit where that script mounts them from.
    etc/registry.yml is never among them: in sealer v0.8 it is sealer's own settings file."""
    material = make_args(ca).material
    files = rootfs_files(material, "sea.hub")
    assert set(files) == {"etc/registry_config.yml", "etc/registry_htpasswd",
                          "certs/sea.hub.crt", "certs/sea.hub.key"}
    assert files["etc/registry_config.yml"] == material.registry_yml
    insecure = rootfs_files(make_args(ca, insecure=True).material, "sea.hub")
    assert set(insecure) == {"etc/registry_config.yml", "etc/registry_htpasswd"}
    assert "etc/registry.yml" not in rootfs_files(material, "sea.hub", read_only=True)


def test_records_hold_config_certs_and_history_but_no_secret(ca):
    """ConfigMap sealer-registry: the registry config (as registry_config.yml only: registry.yml
    is sealer v0.8's settings file's name), CA, leaf, summary with master0 and deploy hosts;
    Secret sealer-registry: the key and htpasswd; sealer-apps: application.json."""
    args = make_args(ca)
    by_name = declare(args).by_name()
    cm = by_name["sealer-registry-config"].inputs
    assert cm["metadata"] == {"name": "sealer-registry", "namespace": "kube-system",
                              "labels": {"app.kubernetes.io/managed-by": "pulumi"},
                              "annotations": {"pulumi.com/patchForce": "true"}}
    assert "registry.yml" not in cm["data"]
    assert cm["data"]["registry_config.yml"] == args.material.registry_yml
    assert cm["data"]["ca.crt"] == args.material.ca_cert
    assert cm["data"]["tls.crt"] == args.material.cert
    assert "master0: 198.18.0.11" in cm["data"]["registry"]
    assert "password" not in cm["data"]["registry"]
    # sealer's own keys, in its shape (go-yaml v3, lowercase), without the password.
    sealer = yaml.safe_load(cm["data"]["registry"])
    assert sealer["external"] is None
    assert sealer["local"]["localregistry"] == {
        "registryconfig": {"domain": "sea.hub", "port": 5000, "username": "admin"},
        "ha": False, "insecure": False, "cert": {"subjectaltname": None}}
    assert sealer["local"]["deployhosts"] == ["198.18.0.11"]
    secret = by_name["sealer-registry-secret"].inputs
    assert set(secret["stringData"]) == {"tls.key", "htpasswd"}
    apps = by_name["sealer-apps"].inputs
    assert json.loads(apps["data"]["application.json"]) == json.loads(args.application_json)
    provider = by_name["k8s"].inputs
    assert provider["clusterIdentifier"] == "lab"
    assert provider["enableConfigMapMutable"] == "true" or provider["enableConfigMapMutable"] is True


def test_insecure_mode_has_no_ca_trust_and_plain_http_verify(ca):
    """Insecure mode: no certificates, no CA trust (the node step gets no port and no CA),
    verification over http."""
    mocks = declare(make_args(ca, insecure=True, username=None))
    node = mocks.by_name()[f"node-{NODES[0]}"].inputs
    run = staged(node["create"])
    assert run.args == ["sea.hub", MASTERS[0]]
    assert run.payload == script_body("configure-node.sh")  # the script alone: no CA after it
    verify = mocks.by_name()["registry-verify"].inputs["create"]
    assert " http " in verify
