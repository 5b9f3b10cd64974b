"""The lab's sealer-made cluster (lab/sealer_state.py) is what a client of a real one sees: the
registry on master0 serves the image data through `sea.hub` with sealer's self-signed cert (as
trusted by each host) and sealer's htpasswd, every host maps the domain to master0 once, and
master0 keeps the Clusterfile, the boot history and the key sealer reaches the hosts with."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from components.deploy_host import material_fingerprint, rootfs_files, rootfs_payload
from components.remote_scripts import script_run
from lab import images
from lab.sealer_state import BASEFS_REGISTRY_CONFIG, HOST_ALIAS_MARK, make_sealer_state
from material import build_material


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


# -- the program's launch step on the cluster sealer left ------------------------------------------


def registry_pid(lab, host: str) -> int | None:
    pids = [pid for pid in lab.pids(host)
            if b"docker-registry\0serve" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(pids) <= 1, pids
    return pids[0] if pids else None


def program_steps(lab, state, material):
    """The program's rootfs and launch steps on master0, as its host steps run them."""
    payload = rootfs_payload(rootfs_files(material, state.domain))
    wrote = script_run("write-rootfs.sh", state.rootfs, data=payload)
    lab.ssh(state.master0, wrote.command, input=wrote.stdin)
    fingerprint = material_fingerprint(payload)
    run = script_run("launch-registry.sh", state.rootfs, str(state.port), state.domain, fingerprint)
    return lab.ssh(state.master0, run.command, input=run.stdin)


def adopted_material(state, registry_config: str | None):
    return build_material(domain=state.domain, port=state.port, deploy_ips=[state.master0],
                          insecure=False, username=state.username, password=state.password,
                          cert=state.cert, key=state.key, htpasswd=state.htpasswd,
                          registry_config=registry_config)


def test_launch_keeps_sealers_registry_when_it_serves_the_adopted_material(small_lab, sealer):
    """sealer's cert, key, htpasswd and registry config brought as they are: the files on master0
    stay byte-identical and the launch step keeps sealer's registry (same pid), stamping it; the
    next launch takes the stamp."""
    state, _ = sealer
    before = registry_pid(small_lab, state.master0)
    files = {p: small_lab.run(state.master0, f"stat -c '%i %Y' {state.rootfs}/{p}").stdout
             for p in ("etc/registry_config.yml", "etc/registry_htpasswd", f"certs/{state.domain}.crt")}
    out = program_steps(small_lab, state, adopted_material(state, state.registry_config))
    assert "kept it, skipped init-registry.sh" in out.stderr, out.stderr
    assert registry_pid(small_lab, state.master0) == before
    assert files == {p: small_lab.run(state.master0, f"stat -c '%i %Y' {state.rootfs}/{p}").stdout
                     for p in files}
    again = program_steps(small_lab, state, adopted_material(state, state.registry_config))
    assert "already runs with this material" in again.stderr
    assert registry_pid(small_lab, state.master0) == before


def test_launch_restarts_a_registry_that_serves_other_files(small_lab, sealer):
    """The program's own config instead of sealer's: the running registry still has sealer's in
    its root, so the launch replaces it, and the new one answers with sealer's cert and login."""
    state, _ = sealer
    before = registry_pid(small_lab, state.master0)
    out = program_steps(small_lab, state, adopted_material(state, None))
    assert "stopping any running registry" in out.stderr, out.stderr
    after = registry_pid(small_lab, state.master0)
    assert after is not None and after != before
    assert fetch(small_lab, state.nodes[0], state, "/v2/") == "200"
