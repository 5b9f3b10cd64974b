"""Full copies of one image's registry data to an empty lab host, and the resync of an unchanged
replica: our distribution (scripts/sync-data.sh, run exactly as the `data-<ip>` step runs it)
against `tar | ssh` and sealer's per-file SFTP with md5 checks. All through OpenSSH."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from components.access import SshAccess
from components.remote_scripts import script_run
from lab.hosts import Lab

COPY_ROOT = "/var/lib/sealer/bench-copy"


class CopyError(RuntimeError):
    pass


@dataclass
class Source:
    store: Path
    hexid: str

    @property
    def tree(self) -> Path:
        return self.store / self.hexid  # holds docker/registry/v2/...

    def files(self) -> list[str]:
        """Relative paths (from the image dir, i.e. starting with docker/) of every file, sorted."""
        out = []
        for dirpath, _dirs, names in os.walk(self.tree / "docker"):
            for name in names:
                out.append(os.path.relpath(os.path.join(dirpath, name), self.tree))
        return sorted(out)

    def bytes(self) -> int:
        return sum((self.tree / f).stat().st_size for f in self.files())

    def warm(self) -> None:
        """Read every file once so each method starts from the same (warm) page cache."""
        for f in self.files():
            with open(self.tree / f, "rb") as fh:
                while fh.read(8 << 20):
                    pass


def _run(argv, *, input=None, timeout=900, what="") -> float:
    start = time.monotonic()
    done = subprocess.run(argv, input=input, capture_output=True, timeout=timeout)
    seconds = time.monotonic() - start
    if done.returncode != 0:
        raise CopyError(f"{what or argv[0]} exited {done.returncode}: "
                        f"{done.stderr.decode(errors='replace')[-2000:]}")
    return seconds


def target_summary(lab: Lab, host: str, path: str) -> tuple[int, int]:
    """(files, bytes) under path on the host, counted without SSH."""
    out = lab.run(host, f"find {path} -type f -printf '%s\\n' 2>/dev/null | "
                        "awk '{n++; b+=$1} END {print n+0, b+0}'").stdout.split()
    return int(out[0]), int(out[1])


def clear(lab: Lab, host: str) -> None:
    lab.run(host, f"rm -rf {COPY_ROOT}", timeout=300)
    subprocess.run(["sync"], check=False)


def expect_complete(lab: Lab, host: str, path: str, src: Source, method: str) -> None:
    files, size = target_summary(lab, host, path)
    want = (len(src.files()), src.bytes())
    if (files, size) != want:
        raise CopyError(f"{method}: target holds {files} files / {size} bytes, source {want}")


# ---------------------------------------------------------------- methods

def sync_data(lab: Lab, host: str, src: Source, rootfs: str) -> tuple[float, str]:
    """scripts/sync-data.sh as components/deploy_host.py runs it: `bash -s -- FLAGS...` through
    /bin/sh (local.Command), the script then the private key on stdin, host key pinned."""
    h = lab.host(host)
    access = SshAccess(user="root", port=h.ssh_port, private_key="", host_keys={h.ip: h.host_key})
    run = script_run("sync-data.sh", *access.rsync_flags(h.ip), f"root@{h.ip}", str(h.ssh_port),
                     rootfs, str(src.store), src.hexid)
    key = Path(lab.key_path).read_text().rstrip("\n") + "\n"
    start = time.monotonic()
    done = subprocess.run(["/bin/sh", "-c", run.command], input=(run.stdin + key).encode(),
                          capture_output=True, timeout=900)
    seconds = time.monotonic() - start
    if done.returncode != 0:
        raise CopyError(f"sync-data.sh exited {done.returncode}: {done.stderr.decode()[-2000:]}")
    return seconds, done.stderr.decode(errors="replace")


def tar_ssh(lab: Lab, host: str, src: Source, dest: str, cipher: str | None = None) -> float:
    ssh = lab.ssh_argv(host)
    if cipher:
        ssh = [*ssh[:-1], "-c", cipher, ssh[-1]]
    script = 'tar -C "$1" -cf - docker | "${@:3}" "mkdir -p $2 && tar -C $2 -xf -"'
    return _run(["bash", "-o", "pipefail", "-c", script, "tar-ssh", str(src.tree), dest, *ssh],
                what="tar | ssh")


def sftp_md5(lab: Lab, host: str, src: Source, dest: str) -> float:
    """Sealer's way: one SFTP put per file (with the directories made first), then the md5 of
    every file on the host compared with the local one. One sftp session and one ssh session:
    the generous reading of 'per file'."""
    files = src.files()
    dirs = sorted({str(Path(f).parent) for f in files} | {"docker"})
    dirs = sorted({str(Path(*Path(d).parts[:i + 1])) for d in dirs
                   for i in range(len(Path(d).parts))}, key=lambda d: (d.count("/"), d))
    ssh = lab.ssh_argv(host)
    target = ssh[-1]
    opts = ssh[1:-1]  # -F none -i KEY -p PORT -o ... (sftp takes the same, -P for the port)
    opts = ["-P" if o == "-p" else o for o in opts]
    with tempfile.TemporaryDirectory(prefix="bench-sftp-") as tmp:
        batch = Path(tmp) / "batch"
        lines = [f"-mkdir {p}" for p in _parents(dest)]
        lines += [f"-mkdir {dest}/{d}" for d in dirs]
        lines += [f'put "{src.tree / f}" "{dest}/{f}"' for f in files]
        batch.write_text("\n".join(lines) + "\n")
        listing = ("\n".join(files) + "\n").encode()
        start = time.monotonic()
        _run(["sftp", *opts, "-b", str(batch), target], what="sftp -b")
        remote = subprocess.run([*ssh, f"cd {dest} && xargs -d '\\n' md5sum"], input=listing,
                                capture_output=True, timeout=900, check=True).stdout
        local = subprocess.run(["xargs", "-d", "\n", "md5sum"], input=listing, cwd=src.tree,
                               capture_output=True, timeout=900, check=True).stdout
        seconds = time.monotonic() - start
    if remote != local:
        raise CopyError("sftp: md5 of the copy differs from the source")
    return seconds


def _parents(path: str) -> list[str]:
    parts = Path(path).parts
    return [str(Path(*parts[:i])) for i in range(2, len(parts) + 1)]


# ---------------------------------------------------------------- the measurements

def blob_inodes(lab: Lab, host: str, path: str) -> dict[str, tuple[int, int]]:
    out = lab.run(host, f"find {path} -type f -printf '%i %s %p\\n'", timeout=300).stdout
    found = {}
    for line in out.splitlines():
        inode, size, name = line.split(" ", 2)
        found[name] = (int(inode), int(size))
    return found


def measure(lab: Lab, host: str, src: Source, repeat: int, log) -> dict:
    """Median seconds of each full copy over ``repeat`` rounds (the order rotates each round),
    then the resync of the replica sync-data.sh left."""
    methods = {
        "copy": lambda: sync_data(lab, host, src, f"{COPY_ROOT}/sync")[0],
        "copy_tar_ssh": lambda: tar_ssh(lab, host, src, f"{COPY_ROOT}/tar"),
        "copy_tar_ssh_gcm": lambda: tar_ssh(lab, host, src, f"{COPY_ROOT}/tar-gcm",
                                            "aes128-gcm@openssh.com"),
        "copy_sftp_md5": lambda: sftp_md5(lab, host, src, f"{COPY_ROOT}/sftp"),
    }
    where = {"copy": f"{COPY_ROOT}/sync/registry/docker", "copy_tar_ssh": f"{COPY_ROOT}/tar/docker",
             "copy_tar_ssh_gcm": f"{COPY_ROOT}/tar-gcm/docker",
             "copy_sftp_md5": f"{COPY_ROOT}/sftp/docker"}
    src.warm()
    samples: dict[str, list[float]] = {k: [] for k in methods}
    names = list(methods)
    for r in range(repeat):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            clear(lab, host)
            seconds = methods[name]()
            expect_complete(lab, host, where[name], src, name)
            samples[name].append(round(seconds, 3))
            log(f"  {name}: {seconds:.2f}s (round {r + 1})")
    result = {f"{k}_samples": v for k, v in samples.items()}
    result.update({k: sorted(v)[len(v) // 2] for k, v in samples.items()})

    # Resync: a fresh full copy by sync-data.sh, then the same call again with nothing changed.
    clear(lab, host)
    sync_data(lab, host, src, f"{COPY_ROOT}/sync")
    before = blob_inodes(lab, host, f"{COPY_ROOT}/sync/registry")
    wire_before = lab.bytes_to(host)
    resync_s, stderr = sync_data(lab, host, src, f"{COPY_ROOT}/sync")
    wire = lab.bytes_to(host) - wire_before
    after = blob_inodes(lab, host, f"{COPY_ROOT}/sync/registry")
    rewritten = [n for n, v in after.items() if before.get(n, (None,))[0] != v[0]]
    result.update({
        "resync_s": round(resync_s, 3),
        # Files the resync wrote anew (rsync writes a sent file under a temp name and renames it:
        # a new inode), summed by size; blobs are files under blobs/.
        "resync_bytes": sum(after[n][1] for n in rewritten if "/blobs/" in n),
        "resync_files_rewritten": len(rewritten),
        "resync_wire_bytes": wire,  # everything sent towards the host: SSH, file list, acks
        "resync_report": [line for line in stderr.splitlines() if "paths sent" in line],
    })
    log(f"  resync: {resync_s:.2f}s, {result['resync_bytes']} blob bytes, {wire} bytes on the wire")
    clear(lab, host)
    return result
