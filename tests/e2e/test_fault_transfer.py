"""A host killed in the middle of a replica's data transfer during `pulumi up` (issue 7, `faults`).

The lab generates a large application image; `pulumi up` pushes it from the image store to
master0, then the standby deploy host pulls master0's tree host to host (its `data-` step runs
there). master0, the source, is killed (packets dropped, processes frozen) while rsync's partial
files are on the standby's disk: the standby's rsync gives up within its SSH keepalive bound and
the `up` fails on that host's `data-` step, with no stamp written. After master0 is revived, the
rerun converges; the replica holds no truncated or corrupt blob and is stamped; and the host, made
master0, serves every image of the boot history with matching digests to a node.

(The standby itself dying mid-step is not the case tested: the engine's own SSH session to it
has no keepalive, in the lab's stand-in provider even less than in the real one, and waits.)
"""

from __future__ import annotations

import json
import random
import subprocess
import time

import pytest

from lab import images as lab_images
from lab import store as lab_store
from lab.stack import PROJECT_DIR, SECRETS, ProgramStack, registry_running, stack_values
from tests.e2e.labstack import lab_env  # noqa: F401  (module-scoped lab of 3 masters + 2 nodes)
from tests.e2e.lifecycle import fetch_every_blob

pytestmark = pytest.mark.faults

BIG = 384 << 20  # six layers of 64 MiB: a transfer of a few seconds per host in the lab


@pytest.fixture(scope="module")
def stack(lab_env, toolchain_env):  # noqa: F811
    stack = ProgramStack("e2e-transfer", toolchain_env)
    stack.configure(stack_values(lab_env, master0=lab_env.masters[0],
                                 deploy_hosts=lab_env.masters[:2]),
                    {**SECRETS, "registry.tls.ca_key": lab_env.ca[1]})
    stack.up()
    yield stack
    stack.remove()


def add_big_app(lab_env, stack, tmp_path) -> list[str]:  # noqa: F811
    img = lab_images.build_image(lab_env.store, tmp_path, [("library/big", "v1", BIG, 6)], "big",
                                 random.Random(11), 32 << 20, 64 << 20)
    history = json.loads(lab_env.history_file.read_text())
    history["applications"].append({"name": "big", "image_id": img["image_id"], "type": "kube",
                                    "launch_cmd": "kubectl apply -f big.yaml", "version": "v1"})
    history["launch"]["app_names"].append("big")
    lab_env.history_file.write_text(json.dumps(history, indent=2) + "\n")
    # The operator pushes the new image to the store and pins its refs in the stack.
    stack.set("apps.image_store.images", lab_store.ensure(lab_env.lab, lab_env.store).images)
    return [f"{r['repository']}:{r['tag']}@{r['digest']}" for r in img["refs"]]


def partial_files(lab_env, ip) -> str:  # noqa: F811
    """rsync's in-flight files on the host: `.~tmp~` (--delay-updates) or `.name.XXXXXX`."""
    return lab_env.lab.run(ip, f"find {lab_env.rootfs}/registry -name '.~tmp~' -o -name '.data.*' "
                               "| head -1", check=False).stdout.strip()


def test_a_deploy_host_killed_mid_transfer_converges_and_serves_every_image(lab_env, stack,  # noqa: F811
                                                                          tmp_path):
    m0, target = lab_env.masters[0], lab_env.masters[1]
    refs = lab_env.refs + add_big_app(lab_env, stack, tmp_path)
    up = subprocess.Popen(["pulumi", "up", "--yes", "--skip-preview", "--non-interactive",
                           "--stack", stack.name], cwd=PROJECT_DIR, env=stack.env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and up.poll() is None and not partial_files(lab_env, target):
            time.sleep(0.02)
        assert up.poll() is None, "the up ended before the transfer to the host started"
        assert partial_files(lab_env, target), "no transfer to the host within 120 s"
        lab_env.lab.kill(m0)
        # No stamp while the replica is incomplete (watch and recover trust only a stamp).
        assert lab_env.lab.run(target, f"test -e {lab_env.rootfs}/registry/.sealer-replica",
                               check=False).returncode != 0
        out, _ = up.communicate(timeout=300)
    finally:
        if up.poll() is None:
            up.kill()
        lab_env.lab.revive(m0)
    assert up.returncode != 0, out[-3000:]
    assert f"data-{target}" in out, out[-3000:]
    assert lab_env.lab.run(target, f"test -e {lab_env.rootfs}/registry/.sealer-replica",
                           check=False).returncode != 0

    report = stack.up()
    assert report.changed().get(f"data-{target}") == "update", report.changed()
    assert stack.up().changed() == {}
    stamp = json.loads(lab_env.lab.run(target, f"cat {lab_env.rootfs}/registry/.sealer-replica").stdout)
    assert stamp["source"] == m0

    # The replica: no partial file left, every blob under its final name hashes to that name.
    assert partial_files(lab_env, target) == ""
    counted = lab_env.lab.run(target, (
        f"cd {lab_env.rootfs}/registry && find . -path '*/blobs/sha256/*/data' -print0 | "
        "xargs -0 sha256sum | awk '{n=split($2,p,\"/\"); if (p[n-1] != $1) bad++} "
        "END {print NR, bad+0}'")).stdout.split()
    assert int(counted[0]) >= len(refs) and counted[1] == "0", counted

    # The host, made master0 (the old one stays up: a planned move), serves every image of the
    # boot history to a node with matching manifest and blob digests.
    stack.set("master0", target)
    stack.up()
    assert registry_running(lab_env.lab, target) and not registry_running(lab_env.lab, m0)
    blobs = sum(fetch_every_blob(lab_env.lab, lab_env.nodes[0], ref) for ref in refs)
    assert blobs >= len(refs) * 2
