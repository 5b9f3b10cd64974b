"""A cluster reached as a non-root user with passwordless sudo: the program's steps, run as that
user through `sudo -n` exactly as its host steps and rsync step run them, install root-owned files
and registry data; without sudo rights they fail instead of prompting."""
from __future__ import annotations

import base64
import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from components.access import SshAccess
from components.remote_scripts import script_run
from lab import images

ROOTFS = "/var/lib/sealer/data/lab/rootfs"
USER = "ops"


@pytest.fixture(scope="module")
def ops(lab):
    for host in lab.hosts():
        lab.add_sudo_user(host.ip, USER)
    return SshAccess(user=USER, port=22, private_key="-")


def ssh_as(lab, ip: str, command: str, data: str = "") -> subprocess.CompletedProcess:
    argv = lab.ssh_argv(ip)
    argv[-1] = f"{USER}@{ip}"
    return subprocess.run([*argv, "--", command], input=data, capture_output=True, text=True,
                          timeout=60)


def test_a_host_step_runs_as_root_through_sudo(lab, ops):
    ip = lab.masters()[0].ip
    assert ssh_as(lab, ip, "id -un").stdout.strip() == USER
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = b"-----BEGIN PRIVATE KEY-----\n"
        info = tarfile.TarInfo("certs/sudo.test.key")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    run = script_run("write-rootfs.sh", ROOTFS, data=base64.b64encode(buf.getvalue()).decode())
    done = ssh_as(lab, ip, ops.as_root(ip, run.command), run.stdin)
    assert done.returncode == 0, done.stderr
    assert lab.run(ip, f"stat -c '%U %a' {ROOTFS}/certs/sudo.test.key").stdout.strip() == "root 600"


def test_without_sudo_rights_a_step_fails_without_prompting(lab, ops):
    ip = lab.nodes()[0].ip
    lab.run(ip, f"mv /etc/sudoers.d/{USER} /root/sudoers.{USER}")
    try:
        run = script_run("write-rootfs.sh", ROOTFS, data="")
        done = ssh_as(lab, ip, ops.as_root(ip, run.command), run.stdin)
        assert done.returncode != 0 and "password is required" in done.stderr, done.stderr
    finally:
        lab.run(ip, f"mv /root/sudoers.{USER} /etc/sudoers.d/{USER}")


def test_rsync_copies_registry_data_as_root_through_sudo(lab, ops, tmp_path):
    summary = images.generate(tmp_path / "store", apps=1, app_size=128 << 10, layers=1,
                              cluster_size=128 << 10, history=None)
    ids = [summary["cluster_image_id"], *(a["image_id"] for a in summary["apps"])]
    host = lab.masters()[1]
    run = script_run("sync-data.sh", *ops.rsync_flags(host.ip), "--host-key", host.host_key,
                     f"{USER}@{host.ip}", "22", ROOTFS, summary["store"],
                     *(i.removeprefix("sha256:") for i in ids), data=lab.key_path.read_text())
    done = subprocess.run(["bash", "-c", run.command], input=run.stdin, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    local = {p.parent.name for p in Path(summary["store"]).glob("*/docker/registry/v2/blobs/sha256/*/*/data")}
    remote = lab.run(host.ip, f"find {ROOTFS}/registry -path '*/blobs/*' -name data -user root").stdout.split()
    assert {Path(p).parent.name for p in remote} == local
