"""scripts/sync-data.sh on real hosts: the union of images arrives, a resync sends nothing, and a
blob whose content does not match its digest fails the copy."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from components.remote_scripts import script_run
from lab import images

ROOTFS = "/var/lib/sealer/data/lab/rootfs"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("sync-store")
    summary = images.generate(root / "store", apps=2, app_size=256 << 10, layers=2,
                              cluster_size=512 << 10, history=root / "application.json")
    return Path(summary["store"]), [summary["cluster_image_id"], *(a["image_id"] for a in summary["apps"])]


def sync(lab, ip, store, ids) -> subprocess.CompletedProcess:
    host = lab.host(ip)
    run = script_run("sync-data.sh", "--key-stdin", "--host-key", host.host_key, f"root@{ip}", "22",
                     ROOTFS, str(store), *(i.removeprefix("sha256:") for i in ids),
                     data=lab.key_path.read_text())
    return subprocess.run(["bash", "-c", run.command], input=run.stdin, capture_output=True,
                          text=True, timeout=120)


def test_copies_the_union_then_resyncs_nothing(lab, store):
    """Every image's blobs arrive; a second sync sends no file."""
    path, ids = store
    ip = lab.masters()[0].ip
    first = sync(lab, ip, path, ids)
    assert first.returncode == 0, first.stderr
    sent = [line for line in first.stderr.splitlines() if "paths sent" in line]
    assert sent and not sent[0].split(": ", 1)[1].startswith("0 paths")
    local = {p.parent.name for p in path.glob("*/docker/registry/v2/blobs/sha256/*/*/data")}
    remote = lab.run(ip, f"find {ROOTFS}/registry -path '*/blobs/*' -name data").stdout.split()
    assert {Path(p).parent.name for p in remote} == local
    again = sync(lab, ip, path, ids)
    assert again.returncode == 0 and "0 paths sent, 0 blobs" in again.stderr, again.stderr


def test_a_corrupt_blob_fails_the_copy(lab, store, tmp_path):
    """A blob whose bytes no longer match its name is caught by the hash check on the host."""
    path, ids = store
    bad = tmp_path / "store"
    shutil.copytree(path, bad)
    blob = next(bad.glob("*/docker/registry/v2/blobs/sha256/*/*/data"))
    data = bytearray(blob.read_bytes())
    data[0] ^= 0xFF
    blob.write_bytes(bytes(data))
    done = sync(lab, lab.masters()[1].ip, bad, ids)
    assert done.returncode != 0
    assert f"corrupt blob: " in done.stderr and blob.parent.name in done.stderr, done.stderr


def test_a_host_killed_mid_transfer_converges_on_rerun_without_corrupt_blobs(lab, tmp_path):
    """The host dies (packets dropped, processes frozen) while blobs stream to it: the copy fails
    within its keepalive bound; after the host is back, the rerun completes and every blob under
    its final name hashes to that name (no truncated blob was ever renamed into place)."""
    import threading
    import time

    summary = images.generate(tmp_path / "big", apps=1, app_size=64 << 20, layers=4,
                              cluster_size=192 << 20, min_layer=16 << 20, max_layer=64 << 20,
                              history=tmp_path / "application.json")
    ids = [summary["cluster_image_id"], summary["apps"][0]["image_id"]]
    ip = lab.masters()[2].ip
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(first=sync(lab, ip, Path(summary["store"]), ids)))
    worker.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and worker.is_alive():
        partial = lab.run(ip, f"find {ROOTFS}/registry -name '.~tmp~' -o -name '.data.*' | head -1",
                          check=False).stdout.strip()
        if partial:
            break
        time.sleep(0.02)
    assert worker.is_alive(), "the copy finished before the host could be killed"
    lab.kill(ip)
    worker.join(timeout=90)
    assert not worker.is_alive() and result["first"].returncode != 0
    lab.revive(ip)
    again = sync(lab, ip, Path(summary["store"]), ids)
    assert again.returncode == 0, again.stderr
    check = lab.run(ip, f"cd {ROOTFS}/registry && find . -path '*/blobs/sha256/*/data' -print0 | "
                        "xargs -0 sha256sum | awk '{n=split($2,p,\"/\"); if (p[n-1] != $1) bad++} "
                        "END {print NR, bad+0}'").stdout.split()
    assert int(check[0]) > 0 and check[1] == "0", check
    leftovers = lab.run(ip, f"find {ROOTFS}/registry -name '.~tmp~' -o -name '.data.*'").stdout
    assert leftovers == "", leftovers


def test_a_stale_receiver_is_ended_and_its_partial_files_removed(lab, store):
    """What a dead session leaves on the host: an rsync receiver still attached to the replica and
    partial files under `.~tmp~`. The next copy ends that receiver (and no receiver on another
    host that shares this kernel, same path) and removes the partial files once it completes."""
    import time

    path, ids = store
    ip, other = lab.masters()[0].ip, lab.masters()[1].ip
    assert sync(lab, ip, path, ids).returncode == 0
    blob_dir = lab.run(ip, f"dirname $(find {ROOTFS}/registry -path '*/blobs/*' -name data | head -1)").stdout.strip()
    lab.run(ip, f"mkdir -p {blob_dir}/.~tmp~ && head -c 1000 /dev/urandom > {blob_dir}/.~tmp~/data")
    receiver = f"rsync --server -logDtpre.iLsfxCIvu --delay-updates . {ROOTFS}/registry/"
    for host in (ip, other):
        lab.run(host, f"mkdir -p {ROOTFS}/registry && setsid -f bash -c "
                      f"'sleep 60 | {receiver}' >/dev/null 2>&1 </dev/null")

    def receivers(host: str) -> int:
        # pids whose mount namespace is the host's (the lab's hosts share one pid namespace)
        out = lab.run(host, f"for p in $(pgrep -x -f '{receiver}'); do "
                            "[ \"$(readlink /proc/$p/ns/mnt)\" = \"$(readlink /proc/self/ns/mnt)\" ] && echo $p; "
                            "done; true").stdout.split()
        return len(out)

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (receivers(ip), receivers(other)) != (1, 1):
        time.sleep(0.1)
    assert (receivers(ip), receivers(other)) == (1, 1)
    try:
        done = sync(lab, ip, path, ids)
        assert done.returncode == 0, done.stderr
        # The copy's own receiver has the same command line and may still be exiting when the
        # client returns (seen on a loaded machine): wait a little for it. The stale one would
        # stay for its 60 s.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and receivers(ip) != 0:
            time.sleep(0.1)
        assert receivers(ip) == 0
        assert receivers(other) == 1
        assert lab.run(ip, f"find {ROOTFS}/registry -name '.~tmp~'").stdout == ""
    finally:
        lab.run(other, f"pkill -x -f '{receiver}'; true")
        lab.run(ip, f"pkill -x -f '{receiver}'; true")
