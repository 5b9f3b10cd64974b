"""Warm standby on real lab hosts: a registry launched by the program's own steps on the
read-only payload (distribution's storage.maintenance.readonly) serves pulls of its replica over
TLS verified by the CA (the leaf's IP SAN for https://<replica-ip>:<port>) and refuses every push;
a node's containerd, configured by configure-node.sh with the replica as a mirror, keeps pulling
through sea.hub when master0's registry is gone; a role flip relaunches on the other config; the
status probe says read-only."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from cli.probe import parse_probe
from components.deploy_host import RootfsPayload
from components.remote_scripts import script_run
from lab import images
from lab.pull import containerd_pull
from material import pki
from tests.lab.test_registry import (CLIENT, DOMAIN, PASSWORD, PORT, ROOTFS, SERVER, SERVER_IP,
                                     SPARE, SPARE_IP, USER, make_material, step)

CERTS_D = f"/etc/containerd/certs.d/{DOMAIN}:{PORT}"


def write_and_launch(lab, host: str, payload: RootfsPayload):
    """The program's rootfs-<ip> step, then its registry-launch-<ip> (or warm registry-standby-<ip>)."""
    step(lab, host, "write-rootfs.sh", ROOTFS, data=payload.data)
    return step(lab, host, "launch-registry.sh", ROOTFS, str(PORT), DOMAIN, payload.fingerprint)


ACCEPT = ("application/vnd.oci.image.manifest.v1+json,"
          "application/vnd.docker.distribution.manifest.v2+json")


def http_code(lab, host: str, method: str, url: str, auth: bool = True) -> tuple[int, str]:
    """curl from ``host`` verifying TLS with its installed CA; credentials from a 0600 file.
    Returns the status code and the body."""
    cfg = f'cacert = "{CERTS_D}/ca.crt"\n' + (f'user = "{USER}:{PASSWORD}"\n' if auth else "")
    body = "--data-binary ''" if method in ("POST", "PUT") else ""
    done = lab.run(host, f"umask 077; f=$(mktemp); b=$(mktemp); cat >$f; curl -sS -o $b "
                         f"-w '%{{http_code}}' -K $f -X {method} -H 'Accept: {ACCEPT}' "
                         f"-H 'Content-Type: application/octet-stream' {body} '{url}'; rc=$?; "
                         f"cat $b >&2; rm -f $f $b; exit $rc", input=cfg, check=False)
    return int(done.stdout or 0), done.stderr


def configure_node(lab, host: str, ca: str, *mirrors: str):
    args = [a for ip in mirrors for a in ("--mirror", ip)]
    run = script_run("configure-node.sh", *args, DOMAIN, SERVER_IP, str(PORT), data=ca)
    return lab.ssh(host, run.command, input=run.stdin)


@pytest.fixture(scope="module")
def warm(lab, tmp_path_factory):
    """The same data on SERVER (master0, read-write) and SPARE (warm standby, read-only), each
    launched by the program's steps; CLIENT maps sea.hub to SERVER and lists SPARE as a mirror."""
    store = tmp_path_factory.mktemp("store")
    gen = images.generate(store, apps=2, app_size=1 << 20, layers=2, cluster_size=1 << 20,
                          seed=13, history=None)
    tree = io.BytesIO()
    with tarfile.open(fileobj=tree, mode="w") as tar:
        for img in [gen["cluster"], *gen["apps"]]:
            tar.add(Path(img["path"]) / "docker", arcname="docker")
    material = make_material(pki.generate_ca(), [SERVER_IP, SPARE_IP])
    rw = RootfsPayload.of(material, DOMAIN)
    ro = RootfsPayload.of(material, DOMAIN, read_only=True)
    for host in (SERVER, SPARE):
        lab.ssh(host, f"mkdir -p {ROOTFS}/registry && tar -C {ROOTFS}/registry -xf -",
                input=tree.getvalue())
    write_and_launch(lab, SERVER, rw)
    write_and_launch(lab, SPARE, ro)
    configure_node(lab, CLIENT, material.ca_cert, SPARE_IP)
    refs = [r for img in [gen["cluster"], *gen["apps"]] for r in img["refs"]]
    yield {"rw": rw, "ro": ro, "refs": refs, "ca": material.ca_cert}
    for host in (SERVER, SPARE):
        lab.ssh(host, f"bash {ROOTFS}/scripts/stop-registry.sh", check=False)


def test_the_warm_replica_serves_pulls_over_tls_verified_by_its_ip(lab, warm):
    """https://<replica-ip>:<port> verifies with the installed CA (the leaf's IP SAN) and serves
    the manifest of every ref."""
    assert http_code(lab, CLIENT, "GET", f"https://{SPARE_IP}:{PORT}/v2/")[0] == 200
    assert http_code(lab, CLIENT, "GET", f"https://{SPARE_IP}:{PORT}/v2/", auth=False)[0] == 401
    for ref in warm["refs"]:
        code, _ = http_code(lab, CLIENT, "GET",
                            f"https://{SPARE_IP}:{PORT}/v2/{ref['repository']}/manifests/{ref['digest']}")
        assert code == 200, ref


def test_the_warm_replica_refuses_every_push_and_master0_takes_it(lab, warm):
    """A blob upload, a manifest put and a delete on the replica answer 405 (read-only mode
    registers no write handler); the same upload on master0 is accepted (202)."""
    repo = warm["refs"][0]["repository"]
    digest = warm["refs"][0]["digest"]
    replica = f"https://{SPARE_IP}:{PORT}/v2/{repo}"
    for method, url in (("POST", f"{replica}/blobs/uploads/"),
                        ("PUT", f"{replica}/manifests/pushed"),
                        ("DELETE", f"{replica}/manifests/{digest}")):
        code, body = http_code(lab, CLIENT, method, url)
        assert code == 405, (method, code, body)  # distribution serves no write handler
    code, body = http_code(lab, CLIENT, "POST", f"https://{SERVER_IP}:{PORT}/v2/{repo}/blobs/uploads/")
    assert code == 202, body


def test_a_node_pulls_through_the_mirror_when_master0_serves_nothing(lab, warm):
    """With master0's registry stopped (connection refused), containerd on the node pulls every
    image through sea.hub from the warm replica, credentials handed to each host as CRI does."""
    lab.ssh(SERVER, f"bash {ROOTFS}/scripts/stop-registry.sh")
    try:
        for ref in warm["refs"]:
            pulled = containerd_pull(lab, CLIENT, f"{ref['repository']}:{ref['tag']}", USER,
                                     PASSWORD, DOMAIN, PORT)
            assert pulled.ok and pulled.digest == ref["digest"], pulled.stderr
            assert "trying next host" in pulled.stderr, pulled.stderr
            print(f"{ref['repository']}:{ref['tag']} via the mirror: {pulled.seconds:.2f}s")
        without = containerd_pull(lab, CLIENT, f"{ref['repository']}:{ref['tag']}", "", "",
                                  DOMAIN, PORT)
        # The mirror refuses an anonymous pull (containerd reports the first host's error).
        assert not without.ok and without.digest == "", without.stderr
    finally:
        write_and_launch(lab, SERVER, warm["rw"])


def probe(lab, host: str):
    run = script_run("status-probe.sh", ROOTFS, DOMAIN, str(PORT), "-")
    return parse_probe(host, lab.ssh(host, run.command, input=run.stdin).stdout)


def test_status_probe_tells_a_read_only_registry_from_a_read_write_one(lab, warm):
    assert (probe(lab, SPARE).registry, probe(lab, SPARE).registry_mode) == ("running", "read-only")
    assert (probe(lab, SERVER).registry, probe(lab, SERVER).registry_mode) == ("running", "read-write")
    assert probe(lab, CLIENT).registry_mode == ""


def test_a_role_flip_relaunches_the_registry_on_the_other_config(lab, warm):
    """The standby promoted (read-write payload) takes pushes; demoted again (read-only payload)
    it refuses them: launch-registry.sh relaunches on a fingerprint change, never keeps the old
    mode; a rerun with the same payload keeps the running registry."""
    url = f"https://{SPARE_IP}:{PORT}/v2/{warm['refs'][0]['repository']}/blobs/uploads/"
    try:
        promoted = write_and_launch(lab, SPARE, warm["rw"])
        assert "stopping any running registry" in promoted.stderr, promoted.stderr
        assert http_code(lab, CLIENT, "POST", url)[0] == 202
    finally:
        demoted = write_and_launch(lab, SPARE, warm["ro"])
    assert "stopping any running registry" in demoted.stderr
    assert http_code(lab, CLIENT, "POST", url)[0] == 405
    again = write_and_launch(lab, SPARE, warm["ro"])
    assert "skipped init-registry.sh" in again.stderr


def verify(lab, mirrors: list[str], refs: list[str]):
    """registry-verify's script as the program runs it for a warm stack (password on stdin)."""
    args = [a for ip in mirrors for a in ("--mirror", ip)]
    run = script_run("verify-registry.sh", *args, DOMAIN, str(PORT), "https", USER, SERVER_IP, *refs,
                     data=PASSWORD + "\n")
    return lab.ssh(CLIENT, run.command, input=run.stdin, check=False, timeout=300)


def test_the_verification_checks_each_warm_standby(lab, warm):
    """Every ref resolves on the replica too and its upload is refused; a read-write registry
    named as a warm standby fails the verification."""
    refs = [f"{r['repository']}:{r['tag']}@{r['digest']}" for r in warm["refs"]]
    done = verify(lab, [SPARE_IP], refs)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1] == (f"verified {len(refs)} on 1 warm standbys ({SPARE_IP}): "
                                           "read-only, over TLS by IP")
    wrong = verify(lab, [SERVER_IP], refs)
    assert wrong.returncode != 0
    assert f"warm standby {SERVER_IP} answers an upload with 202, not 405" in wrong.stderr
