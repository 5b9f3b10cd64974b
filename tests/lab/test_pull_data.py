"""scripts/pull-data.sh on real hosts: a deploy host pulls master0's registry tree host to host
(rsync over SSH run on the replica, the key or a password on stdin), a resync copies nothing, an
interrupted copy converges without a partial file or a stamp before it completes, a corrupt blob
fails the copy, and master0's own step keeps its data or fills it from a live replica."""
from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest

from components.access import SshAccess, credential_lines
from components.remote_scripts import script_run
from lab import images

ROOTFS = "/var/lib/sealer/data/lab/rootfs"
REG = f"{ROOTFS}/registry"
USER, PASSWORD = "ops", "ops-Pull pw 1"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("pull-store")
    summary = images.generate(root / "store", apps=2, app_size=256 << 10, layers=2,
                              cluster_size=512 << 10, history=None)
    ids = [summary["cluster_image_id"], *(a["image_id"] for a in summary["apps"])]
    return Path(summary["store"]), [i.removeprefix("sha256:") for i in ids]


def seed(lab, ip, store) -> None:
    """What master0's data step does with an image store: the push, stamped "self"."""
    path, ids = store
    run = script_run("sync-data.sh", "--key-stdin", "--host-key", lab.host(ip).host_key,
                     "--stamp-self", f"root@{ip}", "22", ROOTFS, str(path), *ids,
                     data=lab.key_path.read_text())
    done = subprocess.run(["bash", "-c", run.command], input=run.stdin, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def wipe(lab, ip) -> None:
    lab.run(ip, f"rm -rf {REG}/docker {REG}/.sealer-replica*")


def pull(lab, ip, mode, sources, access=None, **popen) -> subprocess.CompletedProcess | subprocess.Popen:
    """The data step as the program runs it: `bash -s` over SSH on ``ip`` as root."""
    access = access or SshAccess(user="root", port=22, private_key=lab.key_path.read_text(),
                                 host_keys={h.ip: h.host_key for h in lab.hosts()})
    creds = credential_lines(access.private_key, {ip: access.password_for(ip) for ip in sources
                                                  if access.password_for(ip) is not None})
    run = script_run("pull-data.sh", mode, ROOTFS, *access.pull_sources(sources), data=creds)
    stdin = run.stdin
    argv = [*lab.ssh_argv(ip), "--", run.command]
    if popen:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        proc.stdin.write(stdin)
        proc.stdin.close()
        return proc
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=150)


def stamp(lab, ip) -> dict | None:
    done = lab.run(ip, f"cat {REG}/.sealer-replica", check=False)
    return json.loads(done.stdout) if done.returncode == 0 else None


def blob_check(lab, ip) -> tuple[int, int]:
    """(blobs under their final name, how many do not hash to that name)."""
    out = lab.run(ip, f"cd {REG} && find . -path '*/blobs/sha256/*/data' -print0 | xargs -0 -r sha256sum | "
                      "awk '{n=split($2,p,\"/\"); if (p[n-1] != $1) bad++} END {print NR, bad+0}'").stdout.split()
    return int(out[0]), int(out[1])


def tree(lab, ip) -> set[str]:
    return set(lab.run(ip, f"cd {REG}/docker/registry/v2 && find . -type f ! -path '*/.~tmp~/*'").stdout.split())


def test_a_replica_pulls_master0_s_tree_then_resyncs_nothing(lab, store):
    m0, replica = lab.masters()[0].ip, lab.masters()[1].ip
    seed(lab, m0, store)
    source = stamp(lab, m0)
    assert source and source["source"] == "self" and source["files"] > 0
    wipe(lab, replica)
    first = pull(lab, replica, "--replica", [m0])
    assert first.returncode == 0, first.stderr
    assert tree(lab, replica) == tree(lab, m0)
    got = stamp(lab, replica)
    assert got["source"] == m0
    assert (got["tree"], got["files"], got["bytes"]) == (source["tree"], source["files"], source["bytes"])
    assert blob_check(lab, replica)[1] == 0
    again = pull(lab, replica, "--replica", [m0])
    assert again.returncode == 0 and "0 paths received" in again.stderr, again.stderr


def test_the_replica_s_extra_files_survive_an_empty_source(lab, store):
    """No --delete: a source that lost its data (stamp kept) cannot wipe a replica."""
    m0, replica = lab.masters()[0].ip, lab.masters()[2].ip
    seed(lab, m0, store)
    assert pull(lab, replica, "--replica", [m0]).returncode == 0
    before = tree(lab, replica)
    lab.run(m0, f"mv {REG}/docker {REG}/docker.away")
    try:
        done = pull(lab, replica, "--replica", [m0])
        assert tree(lab, replica) == before, done.stderr
    finally:
        lab.run(m0, f"rm -rf {REG}/docker && mv {REG}/docker.away {REG}/docker")


def test_a_corrupt_blob_on_the_source_fails_the_copy_and_leaves_no_stamp(lab, store):
    m0, replica = lab.masters()[0].ip, lab.nodes()[0].ip
    seed(lab, m0, store)
    blob = lab.run(m0, f"find {REG} -path '*/blobs/*' -name data -size +10k | head -1").stdout.strip()
    lab.run(m0, f"cp {blob} /tmp/blob.good && printf 'X' | dd of={blob} bs=1 seek=100 conv=notrunc status=none")
    try:
        wipe(lab, replica)
        done = pull(lab, replica, "--replica", [m0])
        assert done.returncode != 0
        assert "corrupt blob: " in done.stderr and Path(blob).parent.name in done.stderr, done.stderr
        assert stamp(lab, replica) is None
    finally:
        lab.run(m0, f"cp /tmp/blob.good {blob}")


def test_an_interrupted_copy_converges_without_partial_files_or_early_stamp(lab, tmp_path):
    """The step's session dies while blobs stream: no stamp while the copy is unfinished; the
    rerun ends the stale rsync, completes, leaves no partial file, and every blob hashes to its name."""
    summary = images.generate(tmp_path / "big", apps=1, app_size=64 << 20, layers=4,
                              cluster_size=192 << 20, min_layer=16 << 20, max_layer=64 << 20, history=None)
    big = (Path(summary["store"]), [i.removeprefix("sha256:") for i in
                                    (summary["cluster_image_id"], summary["apps"][0]["image_id"])])
    m0, replica = lab.masters()[0].ip, lab.nodes()[1].ip
    seed(lab, m0, big)
    wipe(lab, replica)
    proc = pull(lab, replica, "--replica", [m0], popen=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if lab.run(replica, f"find {REG} -name '.~tmp~' | head -1", check=False).stdout.strip():
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the copy finished before it could be interrupted"
    assert stamp(lab, replica) is None
    proc.kill()  # the operator's session to the replica dies; what runs there may go on
    proc.wait(timeout=10)
    assert lab.run(replica, f"test -e {REG}/.sealer-replica.run", check=False).returncode == 0
    # The interrupted run's rsync goes on writing on the replica (its session died, not it): the
    # rerun must find it and end it, or the two race over .~tmp~ (CI: "rename failed").
    running = f"pgrep --ns $$ --nslist mnt -f '^rsync .*:{REG}/docker {REG}/$'"
    assert lab.run(replica, running, check=False).returncode == 0, "the interrupted copy's rsync ended with its session"
    # Held where it is (SIGSTOP), as a transfer stalled on a slow link: left running, it may
    # finish on its own before the rerun starts (a fresh CI machine: the rerun then found the
    # tree in sync and nothing to end), and the rerun would not be tested.
    lab.run(replica, running.replace("pgrep", "pkill --signal STOP", 1))
    again = pull(lab, replica, "--replica", [m0])
    assert again.returncode == 0, again.stderr
    assert "ended the rsync of an interrupted copy" in again.stderr, again.stderr
    assert lab.run(replica, running, check=False).returncode == 1
    assert stamp(lab, replica)["source"] == m0
    assert tree(lab, replica) >= tree(lab, m0)
    count, bad = blob_check(lab, replica)
    assert count > 0 and bad == 0
    time.sleep(1)  # a stale copy that was not ended would still be writing
    assert lab.run(replica, f"find {REG} -name '.~tmp~' -o -name '.sealer-replica.run'").stdout == ""
    assert blob_check(lab, replica)[1] == 0


def test_master0_keeps_its_replica_or_fills_itself_from_a_live_one(lab, store):
    """--master0: a complete replica is kept (copies nothing, stamped self); an interrupted one is
    filled from the first source holding a complete stamp; none: a clear failure naming each."""
    m0, a, b = lab.masters()[0].ip, lab.masters()[1].ip, lab.masters()[2].ip
    seed(lab, m0, store)
    assert pull(lab, a, "--replica", [m0]).returncode == 0
    kept = pull(lab, a, "--master0", [b])
    assert kept.returncode == 0 and "copying nothing" in kept.stderr, kept.stderr
    assert stamp(lab, a)["source"] == "self"
    # b: an interrupted copy (run mark, no stamp), sources: a host without stamp, then a
    wipe(lab, b)
    lab.run(b, f"mkdir -p {REG}/docker/registry/v2/blobs && touch {REG}/docker/registry/v2/blobs/x "
               f"&& echo 1 > {REG}/.sealer-replica.run")
    node = lab.nodes()[0].ip
    wipe(lab, node)
    filled = pull(lab, b, "--master0", [node, a])
    assert filled.returncode == 0, filled.stderr
    assert f"{node} holds no complete replica" in filled.stderr and f"copying from {a}" in filled.stderr
    assert stamp(lab, b)["source"] == "self" and tree(lab, b) >= tree(lab, m0)
    wipe(lab, b)
    lab.run(b, f"echo 1 > {REG}/.sealer-replica.run")
    none = pull(lab, b, "--master0", [node])
    assert none.returncode != 0
    assert "no source holds the registry data; tried: this host" in none.stderr
    assert f"{node} (no complete replica)" in none.stderr, none.stderr


def test_a_non_root_source_by_password_through_sudo(lab, store):
    """The source is reached as a sudo user with a password: askpass reads it from a 0600 file,
    the sender runs as root through `sudo -n rsync`; a wrong password fails."""
    m0, replica = lab.masters()[0].ip, lab.masters()[1].ip
    seed(lab, m0, store)
    lab.add_sudo_user(m0, USER)
    lab.allow_password_login(m0, USER, PASSWORD)
    lab.run(m0, f"chmod 0700 {REG}")  # only root (sudo) can read the tree
    try:
        access = SshAccess(user=USER, port=22, private_key=None, password=PASSWORD,
                           host_keys={m0: lab.host(m0).host_key})
        wipe(lab, replica)
        done = pull(lab, replica, "--replica", [m0], access=access)
        assert done.returncode == 0, done.stderr
        assert PASSWORD not in done.stderr
        assert tree(lab, replica) == tree(lab, m0)
        wrong = SshAccess(user=USER, port=22, private_key=None, password="not-" + PASSWORD,
                          host_keys={m0: lab.host(m0).host_key})
        bad = pull(lab, replica, "--replica", [m0], access=wrong)
        assert bad.returncode != 0 and "cannot read" in bad.stderr, bad.stderr
    finally:
        lab.run(m0, f"chmod 0755 {REG}")
