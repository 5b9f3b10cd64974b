"""HA data at the script level on real hosts: scripts/probe-trees.sh reads each master's tree,
stamp, generation and cache/registry flags (read-only, the key on stdin); scripts/pull-data.sh
--union, run on every master side by side as the program's data steps run, leaves every master
with the union of the masters' trees (blobs hashed, flags added), a second run copies nothing and
the probed union is unchanged; a tag pushed to two masters ends as the newest push everywhere; a
corrupt blob fails the step with no stamp; a master that does not answer is named."""
from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from components.access import SshAccess, credential_lines
from components.data_probe import ProbeError, parse, probe_args, tree_digest, union_lines
from components.remote_scripts import script_run
from lab import images

ROOTFS = "/var/lib/sealer/data/lab/rootfs"
REG = f"{ROOTFS}/registry"
CACHE = f"{ROOTFS}/cache/registry"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("union-store")
    summary = images.generate(root / "store", apps=2, app_size=192 << 10, layers=2,
                              cluster_size=384 << 10, history=None, seed=7)
    ids = [summary["cluster_image_id"], *(a["image_id"] for a in summary["apps"])]
    return Path(summary["store"]), [i.removeprefix("sha256:") for i in ids]


def access_of(lab) -> SshAccess:
    return SshAccess(user="root", port=22, private_key=lab.key_path.read_text(),
                     host_keys={h.ip: h.host_key for h in lab.hosts()})


def give(lab, ip, store, image_ids) -> None:
    """sealer's distributor: each image's registry tree merged into the host's, and its flag."""
    path, _ = store
    dest = lab.host_path(ip, REG)
    dest.mkdir(parents=True, exist_ok=True)
    for image_id in image_ids:
        shutil.copytree(path / image_id / "docker", dest / "docker", dirs_exist_ok=True,
                        copy_function=shutil.copy2)
        flag = lab.host_path(ip, f"{CACHE}/{image_id}")
        flag.parent.mkdir(parents=True, exist_ok=True)
        flag.touch()


def reset(lab, ips) -> None:
    for ip in ips:
        lab.run(ip, f"rm -rf {REG} {ROOTFS}/cache")


def probe(lab, ips, lists=True) -> subprocess.CompletedProcess:
    access = access_of(lab)
    key = base64.b64encode(access.private_key.encode()).decode()
    run = script_run("probe-trees.sh", *(["--lists"] if lists else []), ROOTFS,
                     *probe_args(access, ips), data="".join(f"ssh {ip} {key}\n" for ip in ips))
    return subprocess.run(["/bin/sh", "-c", run.command], input=run.stdin, capture_output=True,
                          text=True, timeout=120)


def union_step(lab, ip, sources, generation) -> subprocess.Popen:
    """The HA data step as the program runs it: `bash -s` over SSH on ``ip`` as root."""
    access = access_of(lab)
    run = script_run("pull-data.sh", "--union", ROOTFS, "--data-generation", generation,
                     *access.pull_sources(sources), data=credential_lines(access.private_key, {}))
    proc = subprocess.Popen([*lab.ssh_argv(ip), "--", run.command], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdin.write(run.stdin)
    proc.stdin.close()
    proc.stdin = None  # communicate() must not flush it again
    return proc


def run_all(lab, ips, generation) -> dict[str, tuple[int, str, str]]:
    """Every master's union step at once (the engine runs them side by side)."""
    procs = {ip: union_step(lab, ip, [s for s in ips if s != ip], generation) for ip in ips}
    out = {}
    for ip, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=150)
        out[ip] = (proc.returncode, stdout, stderr)
    return out


def stamp(lab, ip) -> dict | None:
    done = lab.run(ip, f"cat {REG}/.sealer-replica", check=False)
    return json.loads(done.stdout) if done.returncode == 0 else None


def flags(lab, ip) -> set[str]:
    return set(lab.run(ip, f"ls {CACHE} 2>/dev/null || true").stdout.split())


def bad_blobs(lab, ip) -> int:
    out = lab.run(ip, f"cd {REG} && find . -path '*/blobs/sha256/*/data' -print0 | xargs -0 -r sha256sum | "
                      "awk '{n=split($2,p,\"/\"); if (p[n-1] != $1) bad++} END {print bad+0}'").stdout
    return int(out)


def test_every_master_ends_with_the_union_and_a_second_run_copies_nothing(lab, store):
    ips = [m.ip for m in lab.masters()]
    m0, m1, m2 = ips
    _, ids = store
    cluster, app0, app1 = ids
    reset(lab, ips)
    give(lab, m0, store, [cluster, app1])    # installed, then `sealer run app1`
    give(lab, m1, store, [cluster, app0])    # app0 reached only m1 (a push through the VIP)
    give(lab, m2, store, [cluster])          # added by scale-up: the cluster image only
    done = probe(lab, ips)
    assert done.returncode == 0, done.stderr
    hosts = parse(done.stdout, ips)
    assert hosts[m2].ids == (cluster,) and set(hosts[m0].ids) == {cluster, app1}
    assert all(h.stamp is None and h.generation is None for h in hosts.values())
    union = tree_digest(union_lines(list(hosts.values())))
    assert len({h.tree for h in hosts.values()} | {union}) == 4   # all differ

    began = time.monotonic()
    results = run_all(lab, ips, union)
    seconds = time.monotonic() - began
    print(f"union of 3 masters, side by side: {seconds:.1f} s")
    for ip, (code, stdout, stderr) in results.items():
        assert code == 0, (ip, stderr)
        assert stdout.strip() == f"tree {union}", (ip, stdout)
        got = stamp(lab, ip)
        assert got["source"] == "union" and got["tree"] == union, (ip, got)
        assert lab.run(ip, f"cat {REG}/.sealer-generation").stdout.strip() == union
        assert flags(lab, ip) == {cluster, app0, app1}, ip
        assert bad_blobs(lab, ip) == 0, ip

    again = parse(probe(lab, ips).stdout, ips)
    assert {h.tree for h in again.values()} == {union}
    assert tree_digest(union_lines(list(again.values()))) == union   # the next plan: no change
    assert all(h.data_generation == union for h in again.values())
    for ip, (code, _, stderr) in run_all(lab, ips, union).items():
        assert code == 0, (ip, stderr)
        assert stderr.count(" 0 paths received from ") == 2, (ip, stderr)

    # Side-by-side copies leave directory times in an order-dependent state (a CI run once saw
    # "4 paths received, 0 blobs" here): times of directories are not copied, so a directory
    # retouched on one master is no path to copy for the others.
    lab.run(m0, f"find {REG}/docker -type d -exec touch -d 2001-01-01 {{}} +")
    for ip, (code, _, stderr) in run_all(lab, ips, union).items():
        assert code == 0, (ip, stderr)
        assert stderr.count(" 0 paths received from ") == 2, (ip, stderr)


def test_a_master_without_data_is_a_source_of_nothing_and_receives_everything(lab, store):
    ips = [m.ip for m in lab.masters()][:2]
    m0, m1 = ips
    _, ids = store
    reset(lab, ips)
    give(lab, m0, store, [ids[0]])       # m1: no registry dir at all
    results = run_all(lab, ips, "g0")
    for ip, (code, _, stderr) in results.items():
        assert code == 0, (ip, stderr)
    assert stamp(lab, m0)["tree"] == stamp(lab, m1)["tree"] and stamp(lab, m1)["files"] > 0
    assert flags(lab, m1) == {ids[0]}


def test_a_tag_pushed_to_two_masters_ends_as_the_newest_push(lab, store):
    ips = [m.ip for m in lab.masters()][:2]
    m0, m1 = ips
    _, ids = store
    reset(lab, ips)
    for ip in ips:
        give(lab, ip, store, [ids[0]])
    link = f"{REG}/docker/registry/v2/repositories/library/conflict/_manifests/tags/v1/current/link"
    old, new = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    lab.run(m0, f"mkdir -p {Path(link).parent} && printf %s {old} > {link} && touch -d @1000000000 {link}")
    lab.run(m1, f"mkdir -p {Path(link).parent} && printf %s {new} > {link}")
    for ip, (code, _, stderr) in run_all(lab, ips, "g1").items():
        assert code == 0, (ip, stderr)
    for ip in ips:
        assert lab.run(ip, f"cat {link}").stdout == new, ip


def test_a_corrupt_blob_fails_the_union_with_no_stamp(lab, store):
    ips = [m.ip for m in lab.masters()][:2]
    m0, m1 = ips
    _, ids = store
    reset(lab, ips)
    give(lab, m0, store, [ids[0]])
    give(lab, m1, store, [ids[0], ids[1]])
    blob = lab.run(m1, f"find {REG} -path '*/blobs/sha256/*/data' -size +10k | head -1").stdout.strip()
    digest = blob.split("/")[-2]
    if not lab.run(m0, f"test -e {blob}", check=False).returncode:
        pytest.fail("the chosen blob must be one m0 lacks")
    lab.run(m1, f"printf corrupt | dd of={blob} bs=1 seek=100 conv=notrunc 2>/dev/null")
    proc = union_step(lab, m0, [m1], "g2")
    _, stderr = proc.communicate(timeout=150)
    assert proc.returncode != 0 and "does not match its digest" in stderr, stderr
    assert stamp(lab, m0) is None
    assert digest not in lab.run(m0, f"cat {REG}/.sealer-generation 2>/dev/null || true").stdout


def test_the_probe_names_a_master_that_does_not_answer(lab, store):
    ips = [m.ip for m in lab.masters()]
    dead = ips[2]
    lab.kill(dead)
    try:
        done = probe(lab, ips, lists=False)
    finally:
        lab.revive(dead)
    assert done.returncode == 0, done.stderr
    with pytest.raises(ProbeError) as err:
        parse(done.stdout, ips)
    assert dead in str(err.value) and "down_hosts" in str(err.value)
    assert ips[0] not in str(err.value)


def test_the_probe_reads_only_and_keeps_the_generation_while_the_stamped_tree_holds(lab, store):
    """--data-generation written after a verified step; the probe gives it back while the tree is
    the stamped one, and the new tree once something else changed it."""
    m0 = lab.masters()[0].ip
    _, ids = store
    reset(lab, [m0])
    give(lab, m0, store, [ids[0]])
    access = access_of(lab)
    run = script_run("pull-data.sh", "--master0", ROOTFS, "--data-generation", "gen-1",
                     data=credential_lines(access.private_key, {}))
    done = subprocess.run([*lab.ssh_argv(m0), "--", run.command], input=run.stdin,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    before = lab.run(m0, f"find {ROOTFS} -printf '%p %s %T@\\n' | sort").stdout
    host = parse(probe(lab, [m0], lists=False).stdout, [m0])[m0]
    assert lab.run(m0, f"find {ROOTFS} -printf '%p %s %T@\\n' | sort").stdout == before
    assert host.stamp == host.tree and host.data_generation == "gen-1"
    give(lab, m0, store, [ids[1]])          # `sealer run <app>` behind the program's back
    host = parse(probe(lab, [m0], lists=False).stdout, [m0])[m0]
    assert host.stamp != host.tree and host.data_generation == host.tree


def test_a_source_written_meanwhile_fails_no_union(lab, store):
    """The HA data steps run side by side: while one master copies FROM another, that master's
    own copy writes rsync temp files (".link.XXXXXX") and partial dirs into the same tree, which
    vanish between a listing and the read (CI saw "file has vanished", exit 24). Churn of such
    files on the source, bounded in count and time, during the copy: the union still completes
    and none of them is listed, copied or stamped."""
    ips = [m.ip for m in lab.masters()][:2]
    m0, m1 = ips
    _, ids = store
    reset(lab, ips)
    give(lab, m1, store, ids)
    give(lab, m0, store, [ids[0]])
    tags = f"{REG}/docker/registry/v2/repositories"
    churn = (f"cd {tags} && for i in $(seq 4000); do for d in */*/_manifests/tags/*/current; do "
             f"touch $d/.link.$i$RANDOM; mkdir -p $d/.~tmp~ && touch $d/.~tmp~/link; "
             f"rm -rf $d/.link.* $d/.~tmp~; done; done")
    holder = lab.holder_pid(lab.host(m1).name)
    writer = subprocess.Popen(["nsenter", "-t", str(holder), "-m", "--", "timeout", "60",
                               "bash", "-c", churn], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        for attempt in range(3):
            proc = union_step(lab, m0, [m1], f"g{attempt}")
            stdout, stderr = proc.communicate(timeout=150)
            assert proc.returncode == 0, (attempt, stderr)
            assert stamp(lab, m0)["source"] == "union"
    finally:
        writer.kill()
        writer.wait(timeout=10)
    assert lab.run(m0, f"find {REG}/docker -name '.*' | wc -l").stdout.strip() == "0"
    assert bad_blobs(lab, m0) == 0
