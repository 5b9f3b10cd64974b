"""A real client pulls (issue 12 part 4): a lab node's containerd pulls generated images from a
registry on a master through sea.hub, trusting only what configure-node.sh wrote to
/etc/containerd/certs.d, with credentials that never appear on a command line; verify-registry.sh
does the same for the program; the status probe tells whether containerd reads certs.d."""
from __future__ import annotations

import base64
import io
import os
import tarfile
import threading
import time
from pathlib import Path

import pytest

from cli.probe import parse_probe
from components.remote_scripts import script_run
from lab import images
from lab.hosts import CONTAINERD_CONFIG
from lab.pull import containerd_pull
from material import pki
from tests.lab.test_registry import (CLIENT, DOMAIN, PASSWORD, PORT, ROOTFS, SERVER, SERVER_IP, USER,
                                     launch, make_material, write_rootfs)

CERTS_D = f"/etc/containerd/certs.d/{DOMAIN}:{PORT}"
VERIFY_NS = "sealer-registry-verify"


class CmdlineWatch:
    """Samples every process's command line (lab hosts share the machine's PID view) from /proc
    while a pull runs; bounded by its own deadline."""

    def __init__(self, deadline_s: float = 120):
        self.seen: set[bytes] = set()
        self.samples = 0
        self._deadline = time.monotonic() + deadline_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        self.seen.add(Path(f"/proc/{pid}/cmdline").read_bytes())
                    except OSError:
                        pass
            self.samples += 1
            time.sleep(0.01)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def configure_node(lab, host: str, ca: bytes):
    """configure-node.sh as the program runs it: over SSH, script and CA on stdin."""
    run = script_run("configure-node.sh", DOMAIN, SERVER_IP, str(PORT), data=ca.decode())
    return lab.ssh(host, run.command, input=run.stdin)


def refs_of(gen: dict) -> list[dict]:
    return [r for img in [gen["cluster"], *gen["apps"]] for r in img["refs"]]


def ref_text(ref: dict) -> str:
    return f"{ref['repository']}:{ref['tag']}@{ref['digest']}"


@pytest.fixture(scope="module")
def served(lab, tmp_path_factory):
    """The cluster image (2 repos) and 2 apps served by the first master over TLS with htpasswd
    auth; the first node configured by configure-node.sh (sea.hub -> master, CA in certs.d)."""
    store = tmp_path_factory.mktemp("store")
    gen = images.generate(store, apps=2, app_size=4 << 20, layers=3, cluster_size=2 << 20,
                          seed=11, history=None)
    tree = io.BytesIO()
    with tarfile.open(fileobj=tree, mode="w") as tar:
        for img in [gen["cluster"], *gen["apps"]]:
            tar.add(Path(img["path"]) / "docker", arcname="docker")
    lab.ssh(SERVER, f"mkdir -p {ROOTFS}/registry && tar -C {ROOTFS}/registry -xf -", input=tree.getvalue())
    # The registry's files and launch exactly as the program's steps make them.
    material = make_material(pki.generate_ca(), [SERVER_IP])
    _, fingerprint = write_rootfs(lab, SERVER, material)
    launch(lab, SERVER, fingerprint)
    ca = material.ca_cert.encode()
    configure_node(lab, CLIENT, ca)
    yield {"gen": gen, "ca": ca, "refs": refs_of(gen)}
    lab.ssh(SERVER, f"bash {ROOTFS}/scripts/stop-registry.sh")


def test_pull_verifies_tls_with_the_installed_ca_and_keeps_credentials_off_argv(lab, served):
    """Every image pulls through sea.hub (manifest, config, every layer digest-checked by
    containerd) and its tag resolves to the generated digest; during the pulls no process's
    command line holds the password or its Basic token, and no ctr skips TLS or goes plain."""
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode())
    with CmdlineWatch() as watch:
        pulls = {ref["repository"]: containerd_pull(lab, CLIENT, f"{ref['repository']}:{ref['tag']}",
                                                    USER, PASSWORD, DOMAIN, PORT)
                 for ref in served["refs"]}
    for ref in served["refs"]:
        pulled = pulls[ref["repository"]]
        assert pulled.ok, pulled.stderr
        assert pulled.digest == ref["digest"]
        print(f"pull {ref['repository']}:{ref['tag']}: {pulled.seconds:.2f}s")
    assert watch.samples > 20
    ctr = [c for c in watch.seen if c.startswith(b"ctr\0")]
    assert any(b"--hosts-dir" in c for c in ctr), "the sampler saw no pull"
    assert [c for c in watch.seen if PASSWORD.encode() in c or token in c] == []
    assert [c for c in ctr if any(flag in c.split(b"\0") for flag in
                                  (b"--skip-verify", b"-k", b"--plain-http", b"--user", b"-u"))] == []
    # the node's own certs.d is untouched (credentials went to a private copy) and nothing is left
    assert "Authorization" not in lab.run(CLIENT, f"cat {CERTS_D}/hosts.toml").stdout
    assert "lab-pull" not in lab.run(CLIENT, "ctr namespaces ls -q").stdout


def test_wrong_or_missing_ca_fails_on_x509(lab, served):
    ref = served["refs"][-1]
    repo_tag = f"{ref['repository']}:{ref['tag']}"
    try:
        lab.run(CLIENT, f"cat > {CERTS_D}/ca.crt", input=pki.generate_ca()[0])  # another CA
        wrong = containerd_pull(lab, CLIENT, repo_tag, USER, PASSWORD, DOMAIN, PORT)
        assert not wrong.ok and "x509: certificate signed by unknown authority" in wrong.stderr, wrong.stderr
        lab.run(CLIENT, f"rm -rf {CERTS_D}")  # no trust at all: the system roots
        missing = containerd_pull(lab, CLIENT, repo_tag, USER, PASSWORD, DOMAIN, PORT)
        assert not missing.ok and "x509: certificate signed by unknown authority" in missing.stderr
    finally:
        configure_node(lab, CLIENT, served["ca"])
    assert containerd_pull(lab, CLIENT, repo_tag, USER, PASSWORD, DOMAIN, PORT).ok


def test_without_or_with_wrong_credentials_fails_401(lab, served):
    ref = served["refs"][0]
    repo_tag = f"{ref['repository']}:{ref['tag']}"
    for user, password in (("", ""), (USER, "not-the-password")):
        pulled = containerd_pull(lab, CLIENT, repo_tag, user, password, DOMAIN, PORT)
        assert not pulled.ok and "401 Unauthorized" in pulled.stderr, pulled.stderr


def verify(lab, refs: list[str], password: str = PASSWORD, host: str = CLIENT):
    """verify-registry.sh as the program runs it (registry-verify): over SSH, password on stdin."""
    run = script_run("verify-registry.sh", DOMAIN, str(PORT), "https", USER, SERVER_IP, *refs,
                     data=password + "\n")
    start = time.monotonic()
    done = lab.ssh(host, run.command, input=run.stdin, check=False, timeout=300)
    return done, time.monotonic() - start


def leftovers(lab, host: str = CLIENT) -> tuple[str, str]:
    return (lab.run(host, "ctr namespaces ls -q").stdout,
            lab.run(host, "ls -A /tmp; ls -A /var/lib/containerd/io.containerd.content.v1.content/blobs/sha256 "
                          "2>/dev/null || true").stdout)


def test_verify_registry_pulls_every_ref_through_containerd(lab, served):
    """registry-verify's script pulls every ref through containerd (the password on stdin only,
    never on a command line), says so, and leaves no image, blob, namespace or temp file."""
    refs = [ref_text(r) for r in served["refs"]]
    before = leftovers(lab)
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode())
    with CmdlineWatch() as watch:
        done, took = verify(lab, refs)
    assert done.returncode == 0, done.stderr
    assert any(c.startswith(b"ctr\0-n\0" + VERIFY_NS.encode()) for c in watch.seen)
    assert [c for c in watch.seen if PASSWORD.encode() in c or token in c] == []
    assert done.stdout.startswith(f"verified {len(refs)} (containerd pull through {DOMAIN}:{PORT}; "
                                  "containerd here: certs.d)"), done.stdout
    for r in served["refs"]:
        assert f"pulled {DOMAIN}:{PORT}/{r['repository']}:{r['tag']} " in done.stderr
    print(f"verify-registry.sh, {len(refs)} images: {took:.2f}s\n{done.stderr}")
    assert leftovers(lab) == before
    assert VERIFY_NS not in before[0]


def test_verify_registry_fails_naming_a_missing_image_and_cleans_up(lab, served):
    """A tag gone from the registry fails the verification naming it (the e2e gate asserts the
    same words); the images that did pull are removed from containerd all the same."""
    gone = served["refs"][-1]
    link = f"{ROOTFS}/registry/docker/registry/v2/repositories/{gone['repository']}/_manifests/tags/{gone['tag']}"
    before = leftovers(lab)
    lab.run(SERVER, f"mv {link} {link}.away")
    try:
        done, _ = verify(lab, [ref_text(r) for r in served["refs"]])
    finally:
        lab.run(SERVER, f"mv {link}.away {link}")
    assert done.returncode != 0
    assert f"{gone['repository']}:{gone['tag']} resolves to nothing through containerd" in done.stderr
    assert "not found" in done.stderr and "x509" not in done.stderr, done.stderr
    assert f"1 of {len(served['refs'])} images did not pull" in done.stderr
    assert leftovers(lab) == before


def test_verify_registry_rejects_a_wrong_password_and_a_wrong_mapping(lab, served):
    refs = [ref_text(served["refs"][0])]
    done, _ = verify(lab, refs, password="not-the-password")
    assert done.returncode != 0 and "401 Unauthorized" in done.stderr, done.stderr
    other = lab.run(CLIENT, f"getent hosts {DOMAIN}").stdout.split()[0]
    assert other == SERVER_IP
    run = script_run("verify-registry.sh", DOMAIN, str(PORT), "https", USER, "198.18.255.1", *refs,
                     data=PASSWORD + "\n")
    wrong = lab.ssh(CLIENT, run.command, input=run.stdin, check=False)
    assert wrong.returncode != 0 and "not to master0 198.18.255.1" in wrong.stderr


def test_verify_registry_without_containerd_checks_manifests_with_curl(lab, served):
    """A node whose containerd does not answer (docker-only) keeps the manifest check, and says so."""
    refs = [ref_text(r) for r in served["refs"]]
    lab.stop_containerd(CLIENT)
    try:
        done, _ = verify(lab, refs)
    finally:
        lab.start_containerd(CLIENT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (f"verified {len(refs)} (manifests with curl: no containerd answers "
                                   "on this node)")


def probe(lab, host: str = CLIENT):
    run = script_run("status-probe.sh", ROOTFS, DOMAIN, str(PORT), "-")
    return parse_probe(host, lab.ssh(host, run.command, input=run.stdin).stdout)


def test_status_probe_tells_whether_containerd_reads_certs_d(lab, served):
    """certs.d with the lab's config; unset once containerd restarts without config_path; stale
    when the config was edited after the daemon started; down when it is stopped."""
    assert probe(lab).containerd == "certs.d"
    try:
        lab.run(CLIENT, "cat > /etc/containerd/config.toml",
                input=CONTAINERD_CONFIG.replace("config_path", "# config_path"))
        lab.stop_containerd(CLIENT)
        lab.start_containerd(CLIENT)
        assert probe(lab).containerd == "unset"
        lab.run(CLIENT, "cat > /etc/containerd/config.toml", input=CONTAINERD_CONFIG)
        assert probe(lab).containerd == "stale"
        lab.stop_containerd(CLIENT)
        assert probe(lab).containerd == "down"
    finally:
        lab.run(CLIENT, "cat > /etc/containerd/config.toml", input=CONTAINERD_CONFIG)
        lab.stop_containerd(CLIENT)
        lab.start_containerd(CLIENT)
    assert probe(lab).containerd == "certs.d"
    assert probe(lab, SERVER).containerd == "certs.d"  # masters run the runtime too


def test_status_probe_accepts_basefs_containerd_reading_docker_certs_d(lab, served):
    """sealer's basefs runs containerd with `config_path = "/etc/docker/certs.d/"`: the CA sealer
    and the program write there is what its CRI trusts, so the probe says docker-certs.d (fine),
    not elsewhere."""
    from lab import runtimes

    try:
        runtimes.containerd_basefs(lab, CLIENT)
        assert probe(lab).containerd == "docker-certs.d"
    finally:
        runtimes.containerd_lab_default(lab, CLIENT)
    assert probe(lab).containerd == "certs.d"
