"""node_entry on a node WITHOUT haproxy (an air-gapped sealer host): the program's bundle of
Debian's package (python -m cli haproxy-bundle, built here or taken from the cache) is copied to
the node as the program stages it (/var/tmp/<tarball>) and configure-node.sh --entry unpacks it
under /opt/sealer-registry/haproxy/<version> and runs the entry point from there, through the
bundle's own loader. The node's /usr/sbin/haproxy is hidden in its own mount namespace (an
overlay on /usr/sbin with a whiteout for it), and /opt and /var/tmp are made private to the node, so the
machine's haproxy, /opt and /var/tmp are left as they are. Real registries on the three lab
masters, as tests/lab/test_node_entry.py runs them. The tests run in order on one lab."""
from __future__ import annotations

import hashlib

import pytest

from cli import haproxy_bundle
from tests.lab.runtime_fixtures import DOMAIN, PASSWORD, PORT, USER
from tests.lab.test_node_entry import (CONFIG, ENTRY, PIDFILE, cluster, configure,  # noqa: F401
                                       entry_args, entry_pid, pulls, servers, snapshot, wait_for)

BUNDLE_ROOT = "/opt/sealer-registry/haproxy"
STAGED_DIR = "/var/tmp"


@pytest.fixture(scope="module")
def bundle():
    """The real bundle (apt-get download haproxy; reused from .cache/haproxy-bundle/ when there):
    (path, sha256, version)."""
    deb, path = haproxy_bundle.ensure()
    return path, haproxy_bundle.sha256_of(path), deb.version


@pytest.fixture(scope="module")
def node(lab, cluster, bundle):  # noqa: F811
    """The node without haproxy and with the bundle staged, as the program's copy leaves it."""
    ip = cluster["node"]
    path, _, _ = bundle
    # Private to this host's mount namespace: the machine's /opt keeps no trace of the test, and
    # the staged tarball is the node's own.
    lab.run(ip, "mkdir -p /tmp/opt-upper /tmp/opt-work && "
                "mount -t overlay srl-opt -o lowerdir=/opt,upperdir=/tmp/opt-upper,workdir=/tmp/opt-work /opt && "
                f"mount -t tmpfs -o mode=1777,size=64m srl-var-tmp {STAGED_DIR} && "
                # a whiteout in an overlay on /usr/sbin: haproxy is gone there, as on a host that
                # never had the package (a non-executable file bound over it would still be
                # found by `command -v`)
                "mkdir -p /tmp/sbin-upper /tmp/sbin-work && mknod /tmp/sbin-upper/haproxy c 0 0 && "
                "mount -t overlay srl-sbin -o lowerdir=/usr/sbin,upperdir=/tmp/sbin-upper,workdir=/tmp/sbin-work /usr/sbin")
    assert lab.run(ip, "command -v haproxy", check=False).returncode != 0
    lab.run(ip, f"cat > '{STAGED_DIR}/{path.name}'", input=path.read_bytes())
    return ip


def bundle_args(bundle) -> list[str]:
    path, sha, _ = bundle
    return ["--haproxy-bundle", f"{STAGED_DIR}/{path.name}", sha]


def with_bundle(c: dict, bundle, *mode: str) -> list[str]:
    args = entry_args(c)
    return [*args[:4], *mode, *bundle_args(bundle), *args[4:]]


def test_without_the_bundle_a_node_without_haproxy_refuses(lab, cluster, node):
    """The node really has no haproxy: the entry point cannot come from anywhere but the bundle."""
    rc, err = configure(lab, node, *entry_args(cluster), cert=cluster["cert"])
    assert rc != 0
    assert "haproxy is not installed, and the program sent no bundle" in err, err
    assert lab.run(node, f"test -e {PIDFILE}", check=False).returncode != 0


def test_the_entry_point_runs_from_the_bundle_and_pulls_go_through_it(lab, cluster, node, bundle):
    """auto: unpacked into BUNDLE_ROOT/<version> (every file's sha256 checked), HAProxy runs
    through the bundle's loader (its executable, its command line), the servers are UP, and
    containerd pulls every image through the entry point."""
    c = cluster
    _, sha, version = bundle
    rc, err = configure(lab, node, *with_bundle(c, bundle), cert=c["cert"])
    assert rc == 0, err
    home = f"{BUNDLE_ROOT}/{version}"
    assert "haproxy is not installed): using the program's bundle" in err, err
    assert f"installed the HAProxy bundle haproxy-{version}-amd64.tar.gz in {home}" in err, err
    assert lab.run(node, f"cat {home}/.tarball-sha256").stdout.strip() == sha
    lab.run(node, f"cd {home} && sha256sum --quiet --strict -c SHA256SUMS")
    pid = entry_pid(lab, node)
    assert lab.run(node, f"readlink /proc/{pid}/exe").stdout.strip() == f"{home}/lib/ld-linux-x86-64.so.2"
    cmdline = lab.run(node, f"tr '\\0' ' ' < /proc/{pid}/cmdline").stdout
    assert cmdline.startswith(f"{home}/lib/ld-linux-x86-64.so.2 --library-path {home}/lib "
                              f"--argv0 {home}/bin/haproxy-entry {home}/bin/haproxy "), cmdline
    assert f"-f {CONFIG}" in cmdline
    maps = lab.run(node, f"cat /proc/{pid}/maps").stdout
    assert f"{home}/lib/libssl.so.3" in maps and "/usr/lib/x86_64-linux-gnu/libssl" not in maps
    # The machine's package made the haproxy user (the lab's /etc is the machine's): the bundle's
    # own libc looks it up and HAProxy drops root to it.
    if lab.run(node, "getent passwd haproxy", check=False).returncode == 0:
        assert lab.run(node, f"ps -o user= -p {pid}").stdout.strip() == "haproxy"
    m0, m1, m2 = c["masters"]
    want = [f"{m0}:{PORT} UP", f"{m1}:{PORT} UP backup", f"{m2}:{PORT} UP backup"]
    wait_for(lambda: servers(lab, node) == want, 10, f"servers {want}")
    mapped = [line for line in lab.run(node, "cat /etc/hosts").stdout.splitlines()
              if DOMAIN in line.split("#")[0].split()[1:]]
    assert mapped == [f"{ENTRY} {DOMAIN} #hostalias-set-by-sealer"]
    rnd = pulls(lab, c, "containerd through the bundle's entry point")
    assert rnd.failures == []


def test_a_rerun_changes_nothing(lab, cluster, node, bundle):
    """Same arguments again: the bundle's directory is kept (same inode and mtime), the config
    its mtime, HAProxy its pid."""
    _, _, version = bundle
    home = f"{BUNDLE_ROOT}/{version}"
    stat = f"stat -c '%i %Y' {home} {home}/bin/haproxy {CONFIG}"
    before, pid = lab.run(node, stat).stdout, entry_pid(lab, node)
    rc, err = configure(lab, node, *with_bundle(cluster, bundle), cert=cluster["cert"])
    assert rc == 0, err
    assert f"unchanged: the HAProxy bundle in {home}" in err and "unchanged: the entry point runs" in err, err
    assert "installed the HAProxy bundle" not in err
    assert lab.run(node, stat).stdout == before
    assert entry_pid(lab, node) == pid


def test_mode_system_refuses_and_changes_nothing(lab, cluster, node, bundle):
    """--haproxy system (node_entry.haproxy: system) uses the host's haproxy only: refused with
    what to do, before anything changes; the running entry point keeps serving."""
    before, pid = snapshot(lab, node), entry_pid(lab, node)
    rc, err = configure(lab, node, *with_bundle(cluster, bundle, "--haproxy", "system"), cert=cluster["cert"])
    assert rc != 0
    assert "haproxy is not installed (node_entry.haproxy: system uses the host's only)" in err, err
    assert "node_entry.haproxy: auto or bundle" in err, err
    assert snapshot(lab, node) == before
    assert entry_pid(lab, node) == pid


def test_a_bundle_other_than_the_program_s_is_not_used(lab, cluster, node, bundle):
    """The staged file does not have the sha256 the program sent (another build, a damaged
    copy): refused, nothing unpacked, the running entry point as it was."""
    path, sha, version = bundle
    other = hashlib.sha256(b"another bundle").hexdigest()
    args = entry_args(cluster)
    before, pid = snapshot(lab, node), entry_pid(lab, node)
    listing = lab.run(node, f"ls -a {BUNDLE_ROOT}").stdout
    rc, err = configure(lab, node, *args[:4], "--haproxy", "bundle", "--haproxy-bundle",
                        f"{STAGED_DIR}/{path.name}", other, *args[4:], cert=cluster["cert"])
    assert rc != 0
    assert f"has sha256 {sha}, the program sent {other}" in err, err
    assert lab.run(node, f"ls -a {BUNDLE_ROOT}").stdout == listing
    assert snapshot(lab, node) == before
    assert entry_pid(lab, node) == pid
