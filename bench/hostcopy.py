"""Host-to-host copies of one image's registry data, master0 -> a replica, in the same run:
our pull (scripts/pull-data.sh run on the replica exactly as the `data-<ip>` step runs it:
rsync over SSH from the source, --delay-updates, every received blob hashed, the source's tree
checked, the stamp written) against `tar | ssh` from the source straight to the replica (with
our cipher, aes128-gcm, and OpenSSH's default), then the incremental resync of the replica the
pull left. The operator's machine only starts each one."""

from __future__ import annotations

import os
import re
import subprocess
import time

from bench.copy import COPY_ROOT, CopyError, Source, clear, expect_complete
from components.access import SshAccess, credential_lines
from components.remote_scripts import script_run
from lab.hosts import Lab

ROOTFS = f"{COPY_ROOT}/h2h"            # the same rootfs path on both hosts, as in a cluster
TAR_DEST = f"{COPY_ROOT}/h2h-tar"
KEY_ON_SOURCE = "/root/.bench-h2h-key"  # the tar baseline's login from the source to the replica


def _timed(argv: list[str], stdin: str = "", what: str = "") -> tuple[float, str]:
    start = time.monotonic()
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=1200)
    seconds = time.monotonic() - start
    if done.returncode != 0:
        raise CopyError(f"{what} exited {done.returncode}: {done.stderr[-2000:]}")
    return seconds, done.stderr


def seed(lab: Lab, source: str, src: Source) -> None:
    """master0's state: the data in its rootfs, stamped "self" (the store push of its data step)."""
    h = lab.host(source)
    run = script_run("sync-data.sh", "--key-stdin", "--host-key", h.host_key, "--stamp-self",
                     f"root@{h.ip}", str(h.ssh_port), ROOTFS, str(src.store), src.hexid,
                     data=lab.key_path.read_text())
    _timed(["bash", "-c", run.command], run.stdin, "sync-data.sh (seeding the source)")


def pull(lab: Lab, source: str, replica: str) -> tuple[float, str]:
    s = lab.host(source)
    access = SshAccess(user="root", port=s.ssh_port, private_key=lab.key_path.read_text(),
                       host_keys={s.ip: s.host_key})
    run = script_run("pull-data.sh", "--replica", ROOTFS, *access.pull_sources([s.ip]),
                     data=credential_lines(access.private_key, {}))
    return _timed([*lab.ssh_argv(replica), "--", run.command], run.stdin, "pull-data.sh")


def tar_ssh(lab: Lab, source: str, replica: str, cipher: str | None) -> float:
    r = lab.host(replica)
    ssh = (f"ssh -i {KEY_ON_SOURCE} -p {r.ssh_port} -o BatchMode=yes -o StrictHostKeyChecking=no "
           f"-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR {'-c ' + cipher if cipher else ''} root@{r.ip}")
    command = (f"set -o pipefail; tar -C {ROOTFS}/registry -cf - docker | "
               f"{ssh} 'mkdir -p {TAR_DEST} && tar -C {TAR_DEST} -xf -'")
    return _timed([*lab.ssh_argv(source), "--", f"bash -c {_quote(command)}"], what="tar | ssh")[0]


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def measure(lab: Lab, source: str, replica: str, src: Source, repeat: int, log) -> dict:
    """Median seconds of each host-to-host copy over ``repeat`` rounds (order rotating), then
    the resync of the replica our pull left (files received, bytes on the wire to the replica)."""
    clear(lab, source)
    clear(lab, replica)
    seed(lab, source, src)
    lab.run(source, f"umask 077 && cat > {KEY_ON_SOURCE}", input=lab.key_path.read_text())
    methods = {
        "h2h_pull": lambda: pull(lab, source, replica)[0],
        "h2h_tar_ssh_gcm": lambda: tar_ssh(lab, source, replica, "aes128-gcm@openssh.com"),
        "h2h_tar_ssh": lambda: tar_ssh(lab, source, replica, None),
    }
    where = {"h2h_pull": f"{ROOTFS}/registry/docker", "h2h_tar_ssh_gcm": f"{TAR_DEST}/docker",
             "h2h_tar_ssh": f"{TAR_DEST}/docker"}
    samples: dict[str, list[float]] = {k: [] for k in methods}
    names = list(methods)
    try:
        for r in range(repeat):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                clear(lab, replica)
                seconds = methods[name]()
                expect_complete(lab, replica, where[name], src, name)
                samples[name].append(round(seconds, 3))
                log(f"  {name}: {seconds:.2f}s (round {r + 1})")
        result: dict = {f"{k}_samples": v for k, v in samples.items()}
        result.update({k: sorted(v)[len(v) // 2] for k, v in samples.items()})
        clear(lab, replica)
        pull(lab, source, replica)
        wire_before = lab.bytes_to(replica)
        seconds, stderr = pull(lab, source, replica)
        wire = lab.bytes_to(replica) - wire_before
        received = re.search(r"(\d+) paths received", stderr)
        result.update({"h2h_resync_s": round(seconds, 3),
                       "h2h_resync_files": int(received.group(1)) if received else None,
                       "h2h_resync_wire_bytes": wire})
        log(f"  h2h resync: {seconds:.2f}s, {result['h2h_resync_files']} paths received, "
            f"{wire} bytes on the wire to the replica")
        return result
    finally:
        lab.run(source, f"rm -f {KEY_ON_SOURCE}", check=False)
        clear(lab, replica)
        clear(lab, source)


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.hostcopy`: this measurement alone on a lab of two hosts (no engine, no
    fixed port), for when the whole bench cannot run; `python -m bench --only hostcopy` runs the
    same inside the bench and records it in results.json."""
    import argparse
    import json
    import sys
    import tempfile
    from pathlib import Path

    from lab import images as lab_images

    p = argparse.ArgumentParser(prog="python -m bench.hostcopy", description=main.__doc__.split("\n")[0])
    p.add_argument("--size", type=lab_images.parse_size, default=1 << 30)
    p.add_argument("--layers", type=int, default=190)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", help="write the figures as JSON here")
    a = p.parse_args(argv)

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-h2h-") as tmp:
        summary = lab_images.generate(Path(tmp) / "store", apps=0, layers=a.layers,
                                      cluster_size=a.size, seed=0, min_layer=1 << 10,
                                      max_layer=200 << 20)
        src = Source(Path(summary["store"]), summary["cluster_image_id"].split(":", 1)[1])
        src.warm()
        files = len(src.files())
        lab = Lab(Path(tmp) / "lab")
        lab.up(masters=1, nodes=1)
        try:
            log(f"{len(src.files())} files, {src.bytes() >> 20} MiB, {lab.masters()[0].ip} -> {lab.nodes()[0].ip}")
            result = measure(lab, lab.masters()[0].name, lab.nodes()[0].name, src, a.repeat, log)
        finally:
            lab.down()
    result.update(size_mib=a.size >> 20, files=files, repeat=a.repeat, load_after=round(os.getloadavg()[0], 2))
    text = json.dumps(result, indent=2)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
