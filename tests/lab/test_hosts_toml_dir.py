"""hosts.toml under the config_path the node's containerd really uses (issue 21), on real lab hosts:
a node whose containerd runs basefs' config byte for byte (lab/runtimes.py:
`config_path = "/etc/docker/certs.d/"`, basefs context/containerd/rootfs/etc/dump-config.toml@main)
gets configure-node.sh's hosts.toml beside sealer's `<domain>.crt` in /etc/docker/certs.d (naming
that file, no ca.crt added) and none under /etc/containerd/certs.d; its real containerd pulls
through it, and with master0's registry stopped it goes on through the warm standby the file lists
(only hosts.toml names it); docker on the same node still pulls (it reads only the *.crt there);
the status probe and verify-registry.sh look in the same place. A node on containerd's default
keeps /etc/containerd/certs.d; a `:` list writes into its first entry."""
from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from cli.probe import parse_probe
from components.deploy_host import RootfsPayload
from components.remote_scripts import script_run
from lab import docker, images, runtimes
from lab.hosts import CONTAINERD_CONFIG, NODE_BASE, PREFIX
from lab.pull import containerd_pull
from material import pki
from tests.lab.test_readonly_registry import write_and_launch
from tests.lab.test_registry import (CLIENT, DOMAIN, PASSWORD, PORT, ROOTFS, SERVER, SERVER_IP,
                                     SPARE, SPARE_IP, USER, make_material)

DEFAULT_NODE = f"{PREFIX}{NODE_BASE + 1}"
DOCKER_DIR = f"/etc/docker/certs.d/{DOMAIN}:{PORT}"
CONTAINERD_DIR = f"/etc/containerd/certs.d/{DOMAIN}:{PORT}"
SEALER_CRT = f"{DOCKER_DIR}/{DOMAIN}.crt"


def pem_digest(pem: str) -> str:
    """status-probe.sh's CA_SHA256 (lib/trust.sh pem_digest): no blank lines, no CR."""
    return hashlib.sha256("".join(f"{line}\n" for line in pem.replace("\r", "").splitlines()
                                  if line.strip()).encode()).hexdigest()


def configure(lab, host: str, ca: str):
    run = script_run("configure-node.sh", "--mirror", SPARE_IP, DOMAIN, SERVER_IP, str(PORT), data=ca)
    return lab.ssh(host, run.command, input=run.stdin)


def probe(lab, host: str, ca: str):
    run = script_run("status-probe.sh", ROOTFS, DOMAIN, str(PORT), pem_digest(ca))
    return parse_probe(host, lab.ssh(host, run.command, input=run.stdin).stdout)


def exists(lab, host: str, path: str) -> bool:
    return lab.run(host, f"test -e '{path}'", check=False).returncode == 0


@pytest.fixture(scope="module")
def served(lab, tmp_path_factory):
    """master0 (SERVER, read-write) and a warm standby (SPARE, read-only) serve the same images;
    CLIENT runs basefs' containerd and holds sealer's trust (the CA as <domain>.crt in docker's
    dir, nothing under /etc/containerd/certs.d); DEFAULT_NODE keeps the lab's containerd config."""
    store = tmp_path_factory.mktemp("hosts-dir-store")
    gen = images.generate(store, apps=1, app_size=512 << 10, layers=2, cluster_size=512 << 10,
                          seed=23, history=None)
    tree = io.BytesIO()
    with tarfile.open(fileobj=tree, mode="w") as tar:
        for img in [gen["cluster"], *gen["apps"]]:
            tar.add(Path(img["path"]) / "docker", arcname="docker")
    material = make_material(pki.generate_ca(), [SERVER_IP, SPARE_IP])
    for host in (SERVER, SPARE):
        lab.ssh(host, f"mkdir -p {ROOTFS}/registry && tar -C {ROOTFS}/registry -xf -", input=tree.getvalue())
    rw, ro = RootfsPayload.of(material, DOMAIN), RootfsPayload.of(material, DOMAIN, read_only=True)
    write_and_launch(lab, SERVER, rw)
    write_and_launch(lab, SPARE, ro)
    for node in (CLIENT, DEFAULT_NODE):
        lab.run(node, f"rm -rf '{DOCKER_DIR}' '{CONTAINERD_DIR}'; sed -i '/ {DOMAIN}/d' /etc/hosts")
    runtimes.containerd_basefs(lab, CLIENT)
    lab.run(CLIENT, f"mkdir -p '{DOCKER_DIR}' && cat > '{SEALER_CRT}'", input=material.ca_cert)
    refs = [r for img in [gen["cluster"], *gen["apps"]] for r in img["refs"]]
    yield {"ca": material.ca_cert, "refs": refs, "rw": rw}
    runtimes.containerd_lab_default(lab, CLIENT)
    docker.stop(lab, CLIENT, forget=True)
    for host in (SERVER, SPARE):
        lab.ssh(host, f"bash {ROOTFS}/scripts/stop-registry.sh", check=False)


def test_basefs_node_gets_hosts_toml_beside_sealer_s_crt_in_docker_s_dir(lab, served):
    """configure-node.sh finds basefs' config_path through `containerd config dump` and writes
    hosts.toml there, naming sealer's <domain>.crt (kept byte for byte, no ca.crt beside it),
    master0 first, the warm standby after; nothing under /etc/containerd/certs.d. A rerun
    changes nothing."""
    assert runtimes.containerd_config_path(lab, CLIENT) == "/etc/docker/certs.d/"
    done = configure(lab, CLIENT, served["ca"])
    assert "containerd reads registry hosts from /etc/docker/certs.d" in done.stderr, done.stderr
    toml = lab.run(CLIENT, f"cat '{DOCKER_DIR}/hosts.toml'").stdout
    assert f'ca = "{SEALER_CRT}"' in toml and 'ca.crt' not in toml, toml
    assert toml.index(f'[host."https://{DOMAIN}:{PORT}"]') < toml.index(f'[host."https://{SPARE_IP}:{PORT}"]')
    assert sorted(lab.run(CLIENT, f"ls '{DOCKER_DIR}'").stdout.split()) == ["hosts.toml", f"{DOMAIN}.crt"]
    assert lab.run(CLIENT, f"cat '{SEALER_CRT}'").stdout == served["ca"]
    assert not exists(lab, CLIENT, CONTAINERD_DIR)
    before = lab.run(CLIENT, f"stat -c %Y.%i '{DOCKER_DIR}/hosts.toml'").stdout
    again = configure(lab, CLIENT, served["ca"])
    assert "wrote:" not in again.stderr, again.stderr
    assert lab.run(CLIENT, f"stat -c %Y.%i '{DOCKER_DIR}/hosts.toml'").stdout == before


def test_basefs_containerd_pulls_through_the_written_hosts_toml_and_its_mirror(lab, served):
    """The node's real containerd pulls every image through sea.hub with the hosts dir its
    config_path names; with master0's registry stopped the pulls go on through the warm standby,
    which only hosts.toml lists: containerd read the file in docker's dir."""
    configure(lab, CLIENT, served["ca"])
    for ref in served["refs"]:
        pulled = containerd_pull(lab, CLIENT, f"{ref['repository']}:{ref['tag']}", USER, PASSWORD, DOMAIN, PORT)
        assert pulled.ok and pulled.digest == ref["digest"], pulled.stderr
    lab.ssh(SERVER, f"bash {ROOTFS}/scripts/stop-registry.sh")
    try:
        for ref in served["refs"]:
            pulled = containerd_pull(lab, CLIENT, f"{ref['repository']}:{ref['tag']}", USER, PASSWORD,
                                     DOMAIN, PORT)
            assert pulled.ok and pulled.digest == ref["digest"], pulled.stderr
            assert "trying next host" in pulled.stderr, pulled.stderr
            print(f"{ref['repository']}:{ref['tag']} via the standby, basefs node: {pulled.seconds:.2f}s")
    finally:
        lab.run(SERVER, f"rm -f {ROOTFS}/etc/.sealer-registry-material")
        write_and_launch(lab, SERVER, served["rw"])


def test_docker_on_the_basefs_node_still_pulls_with_hosts_toml_in_its_certs_dir(lab, served):
    """docker reads only the *.crt (and client pairs) of /etc/docker/certs.d/<domain>:<port>: the
    hosts.toml beside sealer's file changes nothing for it."""
    configure(lab, CLIENT, served["ca"])
    docker.start(lab, CLIENT)
    ref = served["refs"][-1]
    pulled = docker.pull(lab, CLIENT, f"{DOMAIN}:{PORT}/{ref['repository']}:{ref['tag']}", USER, PASSWORD)
    assert pulled.ok and pulled.digest == ref["digest"], pulled.stderr


def test_status_and_verification_look_where_containerd_reads(lab, served):
    """The status probe's CA column checks docker's dir and containerd's hosts dir (the same
    one here): ok; its CONTAINERD column says docker-certs.d. verify-registry.sh pulls with the
    hosts.toml it finds there and checks the warm standby."""
    configure(lab, CLIENT, served["ca"])
    seen = probe(lab, CLIENT, served["ca"])
    assert (seen.ca, seen.containerd) == ("ok", "docker-certs.d")
    refs = [f"{r['repository']}:{r['tag']}@{r['digest']}" for r in served["refs"]]
    run = script_run("verify-registry.sh", "--mirror", SPARE_IP, DOMAIN, str(PORT), "https", USER,
                     SERVER_IP, *refs, data=PASSWORD + "\n")
    done = lab.ssh(CLIENT, run.command, input=run.stdin, check=False, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith(f"verified {len(refs)} (containerd pull through {DOMAIN}:{PORT}; "
                                                  "containerd here: docker-certs.d)"), done.stdout


def test_a_node_on_containerd_s_default_keeps_etc_containerd_certs_d(lab, served):
    """The lab's config (config_path /etc/containerd/certs.d): the CA as ca.crt and hosts.toml
    there, as before; docker's dir gets only ca.crt; the node pulls; the probe says ok."""
    assert runtimes.containerd_config_path(lab, DEFAULT_NODE) == "/etc/containerd/certs.d"
    done = configure(lab, DEFAULT_NODE, served["ca"])
    assert "containerd reads registry hosts from /etc/containerd/certs.d" in done.stderr, done.stderr
    assert lab.run(DEFAULT_NODE, f"ls '{CONTAINERD_DIR}'").stdout.split() == ["ca.crt", "hosts.toml"]
    assert lab.run(DEFAULT_NODE, f"ls '{DOCKER_DIR}'").stdout.split() == ["ca.crt"]
    assert f'ca = "{CONTAINERD_DIR}/ca.crt"' in lab.run(DEFAULT_NODE, f"cat '{CONTAINERD_DIR}/hosts.toml'").stdout
    ref = served["refs"][0]
    pulled = containerd_pull(lab, DEFAULT_NODE, f"{ref['repository']}:{ref['tag']}", USER, PASSWORD, DOMAIN, PORT)
    assert pulled.ok and pulled.digest == ref["digest"], pulled.stderr
    seen = probe(lab, DEFAULT_NODE, served["ca"])
    assert (seen.ca, seen.containerd) == ("ok", "certs.d")


def test_a_config_path_list_is_written_into_its_first_entry(lab, served):
    """`config_path = "/etc/registries:/etc/containerd/certs.d"`: hosts.toml and the CA go to
    /etc/registries/<domain>:<port>, and containerd pulls with that directory."""
    listed = CONTAINERD_CONFIG.replace('"/etc/containerd/certs.d"', '"/etc/registries:/etc/containerd/certs.d"')
    assert listed != CONTAINERD_CONFIG
    try:
        lab.run(DEFAULT_NODE, "cat > /etc/containerd/config.toml", input=listed)
        lab.stop_containerd(DEFAULT_NODE)
        lab.start_containerd(DEFAULT_NODE)
        done = configure(lab, DEFAULT_NODE, served["ca"])
        assert "containerd reads registry hosts from /etc/registries" in done.stderr, done.stderr
        first = f"/etc/registries/{DOMAIN}:{PORT}"
        assert lab.run(DEFAULT_NODE, f"ls '{first}'").stdout.split() == ["ca.crt", "hosts.toml"]
        ref = served["refs"][0]
        pulled = containerd_pull(lab, DEFAULT_NODE, f"{ref['repository']}:{ref['tag']}", USER, PASSWORD,
                                 DOMAIN, PORT, certs_dir="/etc/registries")
        assert pulled.ok and pulled.digest == ref["digest"], pulled.stderr
        assert probe(lab, DEFAULT_NODE, served["ca"]).ca == "ok"
    finally:
        lab.run(DEFAULT_NODE, "cat > /etc/containerd/config.toml", input=CONTAINERD_CONFIG)
        lab.stop_containerd(DEFAULT_NODE)
        lab.start_containerd(DEFAULT_NODE)
