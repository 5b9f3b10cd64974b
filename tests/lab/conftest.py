"""Lab tier: real namespaced hosts (needs root, iproute2, nftables, openssh-server, docker-registry).

Every test module that needs hosts brings its own lab up in a temp state dir and takes it down, so a
run leaves nothing behind. Each test is bounded by an alarm.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess

import pytest

from lab import Lab
from lab.hosts import NFT_TABLE, PREFIX

TEST_TIMEOUT_S = 180
CONTROL_PLANE = (b"etcd", b"kube-apiserver", b"kube-controller-manager")  # services on masters
NEEDED = ("ip", "nft", "unshare", "nsenter", "/usr/sbin/sshd", "ssh", "ssh-keygen",
          "docker-registry", "curl", "containerd", "ctr", "dockerd")


def pytest_collection_modifyitems(config, items):
    here = os.path.dirname(__file__)
    missing = [b for b in NEEDED if not shutil.which(b)]
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.lab)
            # Never a silent skip: a lab test that cannot run fails and says why.
            if os.geteuid() != 0:
                item.add_marker(pytest.mark.usefixtures("_needs_root"))
            elif missing:
                item.add_marker(pytest.mark.usefixtures("_needs_lab_deps"))


@pytest.fixture
def _needs_root():
    pytest.fail("lab tests need root")


@pytest.fixture
def _needs_lab_deps():
    missing = [b for b in NEEDED if not shutil.which(b)]
    pytest.fail(f"missing {missing}: run `make lab-deps`")


@pytest.fixture(autouse=True)
def _bounded():
    def expire(signum, frame):
        raise TimeoutError(f"lab test exceeded {TEST_TIMEOUT_S}s")
    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(TEST_TIMEOUT_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _clean_slate() -> None:
    """A crashed earlier run (or a developer's lab) would hold the srl- names: clear them."""
    Lab().down()


def _other_instance(pid: str) -> bool:
    """The process lives in a named netns of another lab instance (e.g. a benchmark's srl1-*)."""
    name = subprocess.run(["ip", "netns", "identify", pid], capture_output=True, text=True).stdout.strip()
    return bool(name) and not name.startswith(PREFIX)


def _leftovers() -> list[str]:
    """Everything of this lab instance (name prefix PREFIX) that still exists; other instances'
    labs running side by side are not ours to judge."""
    found = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [f"netns {line.split()[0]}" for line in netns.splitlines() if line.startswith(PREFIX)]
    found += [f"link {n}" for n in os.listdir("/sys/class/net") if n.startswith(PREFIX)]
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    found += [f"nft {t}" for t in tables.splitlines() if t.split()[-1] == NFT_TABLE]
    with open("/proc/self/mountinfo") as f:
        found += [f"mount {line.split()[4]}" for line in f
                  if f"/hosts/{PREFIX}" in line or f"/netns/{PREFIX}" in line]
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
            service = os.path.basename(cmd.split(b"\0")[0]) in CONTROL_PLANE
            lab_daemon = (cmd.startswith(b"/usr/sbin/sshd") or b"docker-registry\0serve" in cmd
                          or cmd.startswith(b"containerd\0--config\0") or service)
            if (cmd == b"sleep\0infinity\0" or lab_daemon) and _other_instance(pid):
                continue
            if cmd == b"sleep\0infinity\0" and os.readlink(f"/proc/{pid}/ns/mnt") != \
                    os.readlink("/proc/self/ns/mnt"):
                found.append(f"holder process {pid}")
            elif lab_daemon:
                if os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net"):
                    shown = os.path.basename(cmd.split(b"\0")[0]) if service else cmd[:60]
                    found.append(f"process {pid} {shown!r}")
        except OSError:
            pass
    return found


@pytest.fixture
def clean_slate():
    return _clean_slate


@pytest.fixture
def leftovers():
    return _leftovers


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    _clean_slate()
    lab = Lab(tmp_path_factory.mktemp("lab-state"))
    lab.up(masters=3, nodes=2)
    try:
        yield lab
    finally:
        lab.down()
