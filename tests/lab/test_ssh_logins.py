"""Clusters reached as a non-root user with passwordless sudo, and by password.

The program's steps, run as that user through `sudo -n` exactly as its host steps and rsync step
run them, install root-owned files and registry data; without sudo rights they fail instead of
prompting. With a password, rsync and the CLI's ssh log in through an askpass helper (no password
in argv or the environment); a wrong password fails at once."""
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


PASSWORD = "ops-Passw0rd with spaces"


@pytest.fixture(scope="module")
def ops(lab):
    for host in lab.hosts():
        lab.add_sudo_user(host.ip, USER)
    return SshAccess(user=USER, port=22, private_key="-")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    summary = images.generate(tmp_path_factory.mktemp("store") / "store", apps=1,
                              app_size=128 << 10, layers=1, cluster_size=128 << 10, history=None)
    ids = [summary["cluster_image_id"], *(a["image_id"] for a in summary["apps"])]
    return Path(summary["store"]), [i.removeprefix("sha256:") for i in ids]


def sync(access: SshAccess, host, store, secret: str) -> subprocess.CompletedProcess:
    path, ids = store
    run = script_run("sync-data.sh", *access.rsync_flags(host.ip), "--host-key", host.host_key,
                     f"{USER}@{host.ip}", "22", ROOTFS, str(path), *ids, data=secret)
    return subprocess.run(["bash", "-c", run.command], input=run.stdin, capture_output=True,
                          text=True, timeout=120, start_new_session=True)


def blobs_as_root(lab, ip: str) -> set[str]:
    found = lab.run(ip, f"find {ROOTFS}/registry -path '*/blobs/*' -name data -user root").stdout
    return {Path(p).parent.name for p in found.split()}


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


def test_rsync_copies_registry_data_as_root_through_sudo(lab, ops, store):
    host = lab.masters()[1]
    done = sync(ops, host, store, lab.key_path.read_text())
    assert done.returncode == 0, done.stderr
    local = {p.parent.name for p in store[0].glob("*/docker/registry/v2/blobs/sha256/*/*/data")}
    assert blobs_as_root(lab, host.ip) == local


def test_rsync_logs_in_with_a_password_through_askpass(lab, ops, store):
    """The password goes on stdin, ssh gets it from the askpass helper; a wrong one fails fast."""
    host = lab.nodes()[0]
    lab.allow_password_login(host.ip, USER, PASSWORD)
    access = SshAccess(user=USER, port=22, private_key=None, password=PASSWORD)
    assert access.rsync_flags(host.ip)[0] == "--password-stdin"
    done = sync(access, host, store, access.rsync_secret(host.ip))
    assert done.returncode == 0, done.stderr
    local = {p.parent.name for p in store[0].glob("*/docker/registry/v2/blobs/sha256/*/*/data")}
    assert blobs_as_root(lab, host.ip) == local
    wrong = sync(access, host, store, "not-" + PASSWORD)
    assert wrong.returncode != 0 and "Permission denied" in wrong.stderr, wrong.stderr


def test_the_clis_ssh_logs_in_with_a_password_without_showing_it(lab, ops):
    from cli.ssh import SshAccess as CliSsh
    from config import build_config

    host = lab.nodes()[0]
    lab.allow_password_login(host.ip, USER, PASSWORD)
    inv = lab.inventory()
    config = build_config({
        "master0": lab.masters()[0].ip, "distribution": "pre",
        "cluster": {"name": "lab", "masters": [h.ip for h in lab.masters()],
                    "nodes": [h.ip for h in lab.nodes()],
                    "ssh": {"user": USER, "password": PASSWORD,
                            "host_keys": {h["ip"]: h["host_key"] for h in inv["hosts"]}}},
        "registry": {"local_registry": {"insecure_mode": True}},
        "apps": {"history": {"type": "boot"}},
        "kubernetes": {"kubeconfig_path": "/dev/null"},
    })
    with CliSsh(config, None, {host.ip: PASSWORD}) as cli:
        argv, env = cli.argv(host.ip), cli.env(host.ip)
        assert PASSWORD not in " ".join(argv) and PASSWORD not in "".join(env.values())
        done = cli.run(host.ip, script_run("standby-registry.sh", ROOTFS))
        assert done.returncode == 0, done.stderr
        whoami = subprocess.run([*argv, "--", "sudo -n id -un"], env=env, capture_output=True,
                                text=True, timeout=30, start_new_session=True)
        assert whoami.stdout.strip() == "root", whoami.stderr
