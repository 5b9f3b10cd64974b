"""The bench's copied data (one generated image's registry tree in a store) and what its copy
measurements share: `tar | ssh` of that tree into a lab host (the raw transfer floor), clearing
a host's copies, checking a copy is complete. The measurements: bench/fill.py (master0 filled
from the image store) and bench/hostcopy.py (master0 -> a replica)."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

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

def tar_ssh(lab: Lab, host: str, src: Source, dest: str, cipher: str | None = None) -> float:
    ssh = lab.ssh_argv(host)
    if cipher:
        ssh = [*ssh[:-1], "-c", cipher, ssh[-1]]
    script = 'tar -C "$1" -cf - docker | "${@:3}" "mkdir -p $2 && tar -C $2 -xf -"'
    return _run(["bash", "-o", "pipefail", "-c", script, "tar-ssh", str(src.tree), dest, *ssh],
                what="tar | ssh")
