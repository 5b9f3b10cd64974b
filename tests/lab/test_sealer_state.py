"""The lab's sealer-made cluster (lab/sealer_state.py) is what a client of a real one sees: the
registry on master0 serves the image data through `sea.hub` with sealer's self-signed cert (as
trusted by each host) and sealer's htpasswd, every host maps the domain to master0 once, and
master0 keeps the Clusterfile, the boot history and the key sealer reaches the hosts with."""
from __future__ import annotations

import json

import pytest
import yaml

from lab import images
from lab.sealer_state import BASEFS_REGISTRY_CONFIG, HOST_ALIAS_MARK, make_sealer_state


@pytest.fixture(scope="module")
def small_lab(tmp_path_factory):
    from lab import Lab

    Lab().down()
    lab = Lab(tmp_path_factory.mktemp("lab-state"))
    lab.up(masters=2, nodes=1)
    try:
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="module")
def sealer(small_lab, tmp_path_factory):
    store = tmp_path_factory.mktemp("store")
    gen = images.generate(store, apps=1, app_size=256 << 10, layers=1, cluster_size=256 << 10,
                          seed=3, history=None)
    ids = [gen["cluster_image_id"], *(a["image_id"] for a in gen["apps"])]
    state = make_sealer_state(small_lab, history=gen["application"], store=store, image_ids=ids)
    refs = [r for img in [gen["cluster"], *gen["apps"]] for r in img["refs"]]
    return state, refs


def fetch(lab, host: str, state, path: str, creds: bool = True):
    """HTTP status of GET https://<domain>:<port><path> from ``host``, trusting the cert file sealer
    installed there; the credentials go to curl on stdin."""
    auth = "-K -" if creds else ""
    out = lab.run(host, f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 10 "
                        f"--cacert {state.trust_files[host]} {auth} "
                        f"-H 'Accept: application/vnd.oci.image.manifest.v1+json' "
                        f"https://{state.domain}:{state.port}{path}",
                  input=f'user = "{state.username}:{state.password}"\n' if creds else "", check=False)
    return out.stdout.strip()


def test_every_host_reaches_sealers_registry_with_sealers_cert_and_login(small_lab, sealer):
    state, refs = sealer
    for host in state.hosts:
        assert fetch(small_lab, host, state, "/v2/") == "200", host
        assert fetch(small_lab, host, state, "/v2/", creds=False) == "401", host
    node = state.nodes[0]
    for ref in refs:
        assert fetch(small_lab, node, state, f"/v2/{ref['repository']}/manifests/{ref['digest']}") == "200"
    assert fetch(small_lab, node, state, "/v2/library/absent/manifests/v1") == "404"


def test_hosts_map_the_domain_to_master0_once_with_sealers_mark(small_lab, sealer):
    state, _ = sealer
    for host in state.hosts:
        lines = [line for line in small_lab.run(host, "cat /etc/hosts").stdout.splitlines()
                 if f" {state.domain} " in f"{line} "]
        assert lines == [f"{state.master0} {state.domain} {HOST_ALIAS_MARK}"], host


def test_master0_keeps_what_sealer_keeps(small_lab, sealer):
    state, _ = sealer
    m0 = state.master0
    doc = yaml.safe_load(small_lab.run(m0, f"cat {state.clusterfile_path}").stdout)
    assert (doc["apiVersion"], doc["kind"], doc["metadata"]["name"]) == ("sealer.io/v2", "Cluster", state.name)
    by_role = {role: [ip for h in doc["spec"]["hosts"] if role in h["roles"] for ip in h["ips"]]
               for role in ("master", "node")}
    assert by_role == {"master": state.masters, "node": state.nodes}
    assert doc["spec"]["registry"]["localRegistry"]["ha"] is False
    assert json.loads(small_lab.run(m0, f"cat {state.history_path}").stdout) == state.history
    pk = doc["spec"]["ssh"]["pk"]
    assert small_lab.run(m0, f"stat -c %a {pk}").stdout.strip() == "600"
    assert small_lab.run(m0, f"cat {state.rootfs}/certs/{state.domain}.crt").stdout == state.cert
    assert small_lab.run(m0, f"cat {state.rootfs}/etc/registry_htpasswd").stdout == state.htpasswd
    # sealer's script ran its sed on the config: with port 5000 the content is basefs' own.
    assert state.registry_config == BASEFS_REGISTRY_CONFIG
