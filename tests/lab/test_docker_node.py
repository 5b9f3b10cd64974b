"""The runtimes sealer's nodes run, for real on lab hosts (issue 19): Debian's dockerd pulls
through sea.hub:5000 trusting sealer's CA file under /etc/docker/certs.d (no
insecure-registries) after a `docker login` whose password stays off every command line; a
containerd configured as basefs configures it (config_path /etc/docker/certs.d/) pulls with the
same file."""
from __future__ import annotations

import base64
import os
import time

import pytest

from lab import docker, runtimes
from lab.hosts import CONTAINERD_CONFIG
from lab.pull import containerd_pull
from material import pki
from tests.lab.runtime_fixtures import (DOCKER_CERTS, DOMAIN, PASSWORD, PORT, USER, generate,
                                        map_domain, ref_of, serve, stop_serving, trust)
from tests.lab.test_containerd_pull import CmdlineWatch


@pytest.fixture(scope="module")
def cluster(lab, tmp_path_factory):
    """master0 serves the images as sealer's registry; node 0 runs dockerd, node 1 containerd;
    both map sea.hub to master0 and hold sealer's CA file under /etc/docker/certs.d."""
    master0 = lab.masters()[0]
    docker_node, containerd_node = (n.name for n in lab.nodes()[:2])
    refs = generate(tmp_path_factory.mktemp("store"))
    cert = serve(lab, [master0.name], refs)
    for node in (docker_node, containerd_node):
        trust(lab, node, cert)
        map_domain(lab, node, master0.ip)
    took = docker.start(lab, docker_node)
    yield {"refs": refs, "cert": cert, "docker": docker_node, "containerd": containerd_node,
           "start_s": took}
    docker.stop(lab, docker_node, forget=True)
    runtimes.containerd_lab_default(lab, containerd_node)
    stop_serving(lab, [master0.name])


def test_dockerd_runs_in_the_host_namespaces(lab, cluster):
    """dockerd is a host service in the host's own mount and network namespaces (so it reads the
    host's /etc/hosts and certs.d); a second start leaves it alone."""
    node = cluster["docker"]
    assert docker.running(lab, node)
    pid = lab.service_pid(node, docker.SERVICE)
    holder = lab.holder_pid(node)
    for ns in ("mnt", "net"):
        assert os.readlink(f"/proc/{pid}/ns/{ns}") == os.readlink(f"/proc/{holder}/ns/{ns}")
    assert docker.start(lab, node) == 0.0
    assert lab.service_pid(node, docker.SERVICE) == pid
    info = lab.run(node, f"{docker.DOCKER} -H unix://{docker.SOCKET} info --format "
                         "'{{.ServerVersion}} {{.Driver}} {{.DockerRootDir}}'").stdout.split()
    assert info[1:] == ["overlay2", "/var/lib/docker"], info
    print(f"dockerd {info[0]}: started in {cluster['start_s']:.2f}s, "
          f"RSS {docker.rss_kib(lab, node) / 1024:.0f} MiB")


def test_docker_pull_trusts_sealers_ca_file_and_logs_in_on_stdin(lab, cluster):
    """Every image pulls through sea.hub:5000 with sealer's `<domain>.crt` as the only trust and
    its tag resolves to the generated digest; no process's command line holds the password or its
    Basic token; the image and the login's config are gone afterwards."""
    node = cluster["docker"]
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode())
    assert lab.run(node, f"ls {DOCKER_CERTS}").stdout.split() == [f"{DOMAIN}.crt"]
    with CmdlineWatch() as watch:
        pulls = [(r, docker.pull(lab, node, ref_of(r), USER, PASSWORD)) for r in cluster["refs"]]
    for r, pulled in pulls:
        assert pulled.ok, pulled.stderr
        assert pulled.digest == r["digest"]
        print(f"docker pull {ref_of(r)}: {pulled.seconds:.2f}s (login + pull + rmi)")
    assert any(b"pull\0-q\0" + f"{DOMAIN}:{PORT}".encode() in c for c in watch.seen), \
        "the sampler saw no docker pull"
    assert [c for c in watch.seen if PASSWORD.encode() in c or token in c] == []
    assert lab.run(node, f"{docker.DOCKER} -H unix://{docker.SOCKET} images -q").stdout == ""
    assert lab.run(node, "ls -A /tmp").stdout == ""


def test_docker_pull_with_another_ca_or_none_fails_on_x509(lab, cluster):
    node, ref = cluster["docker"], ref_of(cluster["refs"][-1])
    try:
        trust(lab, node, pki.generate_ca()[0])
        wrong = docker.pull(lab, node, ref, USER, PASSWORD)
        assert not wrong.ok and "x509: certificate signed by unknown authority" in wrong.stderr, \
            wrong.stderr
        lab.run(node, f"rm -rf '{DOCKER_CERTS}'")
        missing = docker.pull(lab, node, ref, USER, PASSWORD)
        assert not missing.ok and "x509: certificate signed by unknown authority" in missing.stderr
    finally:
        trust(lab, node, cluster["cert"])
    assert docker.pull(lab, node, ref, USER, PASSWORD).ok


def test_docker_pull_without_or_with_a_wrong_login_is_refused(lab, cluster):
    node, ref = cluster["docker"], ref_of(cluster["refs"][0])
    anonymous = docker.pull(lab, node, ref)
    assert not anonymous.ok and "no basic auth credentials" in anonymous.stderr, anonymous.stderr
    wrong = docker.pull(lab, node, ref, USER, "not-the-password")
    assert not wrong.ok and "401 Unauthorized" in wrong.stderr, wrong.stderr


def test_dockerd_comes_back_after_a_crash_and_stops_on_demand(lab, cluster):
    """A crash kills dockerd with the host; the revive (a reboot) starts it again, and it pulls.
    A stop stops it; a start brings it back."""
    node, ref = cluster["docker"], ref_of(cluster["refs"][0])
    lab.kill(node, crash=True)
    assert not docker.running(lab, node)
    lab.revive(node)
    deadline = time.monotonic() + 30
    while not docker.running(lab, node) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert docker.running(lab, node)
    assert docker.pull(lab, node, ref, USER, PASSWORD).ok
    assert docker.stop(lab, node)
    assert not docker.running(lab, node)
    assert not docker.stop(lab, node)
    assert docker.start(lab, node) > 0
    assert docker.pull(lab, node, ref, USER, PASSWORD).ok


def test_pull_rejects_a_ref_without_registry(lab, cluster):
    with pytest.raises(ValueError, match="ref must be <registry>/<repo>:<tag>, got 'app:v1'"):
        docker.pull(lab, cluster["docker"], "app:v1")


def test_containerd_with_basefs_config_reads_sealers_docker_certs_dir(lab, cluster):
    """basefs' config (config_path /etc/docker/certs.d/): containerd pulls trusting sealer's
    `<domain>.crt` there, with no hosts.toml; with the lab's config (/etc/containerd/certs.d,
    empty for the domain) the same pull fails on x509: the pull honours the host's config_path."""
    node = cluster["containerd"]
    repo_tag = f"{cluster['refs'][0]['repository']}:{cluster['refs'][0]['tag']}"
    lab.run(node, f"rm -rf /etc/containerd/certs.d/{DOMAIN}:{PORT}")
    assert runtimes.containerd_config_path(lab, node) == runtimes.LAB_CONFIG_PATH
    lab_default = containerd_pull(lab, node, repo_tag, USER, PASSWORD)
    assert not lab_default.ok and "x509: certificate signed by unknown authority" in lab_default.stderr

    assert runtimes.containerd_basefs(lab, node) is True
    assert runtimes.containerd_basefs(lab, node) is False  # idempotent: no second restart
    assert lab.run(node, "cat /etc/containerd/config.toml").stdout == \
        runtimes.BASEFS_CONTAINERD_CONFIG
    assert runtimes.containerd_config_path(lab, node) == "/etc/docker/certs.d/"
    with CmdlineWatch() as watch:
        pulled = containerd_pull(lab, node, repo_tag, USER, PASSWORD)
    assert pulled.ok, pulled.stderr
    assert pulled.digest == cluster["refs"][0]["digest"]
    assert [c for c in watch.seen if PASSWORD.encode() in c] == []
    print(f"containerd (basefs config) pull {repo_tag}: {pulled.seconds:.2f}s")
    anonymous = containerd_pull(lab, node, repo_tag)
    assert not anonymous.ok and "401 Unauthorized" in anonymous.stderr, anonymous.stderr
    assert "x509" not in anonymous.stderr  # the loose .crt is trusted without hosts.toml too
    assert lab.run(node, f"ls {DOCKER_CERTS}").stdout.split() == [f"{DOMAIN}.crt"]

    assert runtimes.containerd_lab_default(lab, node) is True
    assert lab.run(node, "cat /etc/containerd/config.toml").stdout == CONTAINERD_CONFIG
    assert runtimes.containerd_config_path(lab, node) == runtimes.LAB_CONFIG_PATH
