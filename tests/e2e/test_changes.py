"""Config changes on a running cluster (issue 5): adopting an existing sealer cluster, adding an
application to the boot history, adding a deploy host. Real engine, real lab hosts."""

from __future__ import annotations

import json
import random

import pytest
from cryptography import x509

from lab import images as lab_images
from lab import store as lab_store
from lab.sealer_state import sealer_self_signed
from lab.stack import DOMAIN, PASSWORD, PORT, SECRETS, ProgramStack, hosts_line, stack_values
from material import pki
from tests.e2e.kube import Kube, configmap_body, create
from tests.e2e.labstack import lab_env  # noqa: F401  (module-scoped lab of 3 masters + 2 nodes)
from tests.e2e.lifecycle import pull_image

SEALER_PASSWORD_IN_CONFIGMAP = "sealer-kept-this-in-plaintext"


@pytest.fixture(scope="module")
def stack(lab_env, toolchain_env):
    stack = ProgramStack("e2e-changes", toolchain_env)
    yield stack
    stack.remove()


def test_adopts_an_existing_sealer_cluster(lab_env, stack):
    """A cluster as sealer left it — stale and duplicate `sea.hub` lines with sealer's markers,
    nodes trusting sealer's self-signed cert, a `sealer-registry` ConfigMap holding the password —
    is adopted: one hosts line per node, the same cert still trusted, no password in the ConfigMap."""
    m0 = lab_env.masters[0]
    cert, key = sealer_self_signed(DOMAIN, [m0])
    for ip in lab_env.all_ips:
        lab_env.lab.run(ip, f"printf '198.18.0.99 {DOMAIN} #hostalias-registry\\n{m0} {DOMAIN} "
                            f"#hostalias-set-by-sealer\\n' >> /etc/hosts && "
                            f"mkdir -p /etc/docker/certs.d/{DOMAIN}:{PORT} && cat > "
                            f"/etc/docker/certs.d/{DOMAIN}:{PORT}/ca.crt", input=cert)
    kube = Kube(lab_env.kubeconfig)
    if kube.configmap("sealer-registry") is None:
        create(kube, "/api/v1/namespaces/kube-system/configmaps", configmap_body(
            "sealer-registry", {"registry": f"password: {SEALER_PASSWORD_IN_CONFIGMAP}\n"}))
    values = stack_values(lab_env, master0=m0, deploy_hosts=[m0])
    values["registry"]["tls"] = {"cert": cert}
    stack.configure(values, {**SECRETS, "registry.tls.key": key})
    stack.up()
    for ip in lab_env.all_ips:
        assert hosts_line(lab_env.lab, ip) == [f"{m0} {DOMAIN} #hostalias-set-by-sealer"]
        assert lab_env.lab.run(ip, f"cat /etc/docker/certs.d/{DOMAIN}:{PORT}/ca.crt").stdout == cert
    for ref in lab_env.refs:
        assert pull_image(lab_env.lab, lab_env.nodes[0], ref) == ref.split("@")[1]
    registry_key = kube.configmap("sealer-registry")["data"]["registry"]
    assert SEALER_PASSWORD_IN_CONFIGMAP not in registry_key and PASSWORD not in registry_key
    assert stack.up().changed() == {}


def test_switching_to_our_ca_keeps_every_step_converged(lab_env, stack):
    """Moving the adopted cluster to a CA of ours: every node gets the new CA and the registry
    restarts with the new leaf; the verification from a node passes."""
    m0 = lab_env.masters[0]
    values = stack_values(lab_env, master0=m0, deploy_hosts=[m0, lab_env.masters[1]])
    stack.configure(values, {**SECRETS, "registry.tls.ca_key": lab_env.ca[1]})
    report = stack.up()
    assert "registry-verify" in report.remote_commands()
    for ip in lab_env.all_ips:
        assert lab_env.lab.run(ip, f"cat /etc/docker/certs.d/{DOMAIN}:{PORT}/ca.crt").stdout == lab_env.ca[0]


def test_adding_a_deploy_host_reissues_the_leaf_with_the_same_ca(lab_env, stack):
    """A third deploy host: the leaf on the deploy hosts now carries its IP as an IP SAN, signed by
    the same CA (nodes' trust unchanged), and the new host holds the data."""
    m0, new = lab_env.masters[0], lab_env.masters[2]
    stack.set("registry.local_registry.deploy_hosts", [m0, lab_env.masters[1], new])
    report = stack.up()
    changed = report.changed()
    assert changed.get(f"data-{new}") == "create"
    assert not [n for n in changed if n.startswith("node-")]  # same CA, same master0
    leaf = lab_env.lab.run(m0, f"cat {lab_env.rootfs}/certs/{DOMAIN}.crt").stdout
    assert new in pki.leaf_sans(leaf)["ip"]
    x509.load_pem_x509_certificate(leaf.encode()).verify_directly_issued_by(
        x509.load_pem_x509_certificate(lab_env.ca[0].encode()))
    blobs = lab_env.lab.run(new, f"find {lab_env.rootfs}/registry -path '*/blobs/*' -name data | wc -l")
    assert int(blobs.stdout) > 0


def test_adding_an_app_distributes_its_data_and_updates_sealer_apps(lab_env, stack, tmp_path):
    """A new application in the boot history: its data reaches every deploy host, `sealer-apps`
    lists it, and the verification proves its manifest from a node."""
    img = lab_images.build_image(lab_env.store, tmp_path, [("library/extra", "v2", 256 << 10, 2)],
                                 "extra", random.Random(7), 1024, 1 << 20)
    history = json.loads(lab_env.history_file.read_text())
    history["applications"].append({"name": "extra", "image_id": img["image_id"], "type": "kube",
                                    "launch_cmd": "kubectl apply -f extra.yaml", "version": "v2"})
    history["launch"]["app_names"].append("extra")
    lab_env.history_file.write_text(json.dumps(history, indent=2) + "\n")
    # The operator pushes the new image to the store and pins its refs in the stack.
    stack.set("apps.image_store.images", lab_store.ensure(lab_env.lab, lab_env.store).images)
    report = stack.up()
    deploy = lab_env.masters
    for ip in deploy:
        assert report.changed().get(f"data-{ip}") == "update", ip
    ref = next(f"{r['repository']}:{r['tag']}@{r['digest']}" for r in img["refs"])
    assert pull_image(lab_env.lab, lab_env.nodes[1], ref) == ref.split("@")[1]
    apps = json.loads(Kube(lab_env.kubeconfig).configmap("sealer-apps")["data"]["application.json"])
    assert "extra" in [a["name"] for a in apps["applications"]]
    assert stack.up().changed() == {}
